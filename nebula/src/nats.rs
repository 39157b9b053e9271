//! `nebula nats config`: the NATS credentials of every role and the nats-server authorization
//! that limits each to the subjects it needs (`natsauth`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use natsauth::Accounts;

use crate::Config;

#[derive(Debug, Subcommand)]
pub enum NatsCommand {
    /// Make (or keep) an nkey seed per role — control plane, chat bots, Stream Bot, and an
    /// agent and a render worker per node — and write the server's `authorization.conf`.
    /// Nodes named before are kept; run it again with a new node and reload nats-server.
    Config {
        /// The GPU nodes, by node id, comma-separated (`gpu-a,gpu-b`).
        #[arg(long, default_value = "")]
        nodes: String,
        /// Where the seeds (mode 0600) and `authorization.conf` go
        /// (`<state_dir>/nats-auth` when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The folder `nebula nats config` writes to by default.
pub fn default_dir(config: &Config) -> PathBuf {
    config.state_dir.join("nats-auth")
}

pub(crate) fn run(config: &Config, command: NatsCommand) -> anyhow::Result<()> {
    let NatsCommand::Config { nodes, out } = command;
    let dir = out.unwrap_or_else(|| default_dir(config));
    let accounts = Accounts::write(&dir, &natsauth::parse_nodes(&nodes)?)
        .with_context(|| format!("NATS credentials in {}", dir.display()))?;
    println!(
        "NATS credentials in {} (each seed is mode 0600; copy it only to the machine it names):",
        dir.display()
    );
    for credential in &accounts.credentials {
        println!(
            "  {:<28} {}",
            credential
                .seed_file
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            credential.identity.describe()
        );
    }
    println!(
        "\nnats-server: include {:?} in its configuration, then reload it \
         (nats-server --signal reload).\nEach process: NATS_NKEY_FILE=<its seed> \
         (nats.nkey_file).",
        dir.join(natsauth::AUTHORIZATION_FILE)
    );
    Ok(())
}
