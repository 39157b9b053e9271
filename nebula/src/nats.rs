//! `nebula nats config`: the NATS credentials of every role and the nats-server authorization
//! that limits each to the subjects it needs (`natsauth`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use natsauth::{Accounts, Identity};

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
    let accounts = write(&dir, &natsauth::parse_nodes(&nodes)?)?;
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
        dir.join("authorization.conf")
    );
    Ok(())
}

/// The credentials of every role for `nodes` and of every node named before (its seeds are in
/// `dir`), and `dir/authorization.conf` for them.
pub fn write(dir: &Path, nodes: &[events::NodeId]) -> anyhow::Result<Accounts> {
    let mut all: Vec<events::NodeId> = known_nodes(dir)?;
    for node in nodes {
        if !all.contains(node) {
            all.push(node.clone());
        }
    }
    all.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let accounts = Accounts::ensure(dir, &Identity::all(&all))?;
    let path = dir.join("authorization.conf");
    let partial = dir.join("authorization.conf.partial");
    std::fs::write(&partial, accounts.authorization())
        .and_then(|()| std::fs::rename(&partial, &path))
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(accounts)
}

/// The nodes whose agent seeds are already in `dir`.
fn known_nodes(dir: &Path) -> anyhow::Result<Vec<events::NodeId>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("failed to read {}", dir.display())),
    };
    let mut nodes = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(node) = name
            .strip_prefix("agent-")
            .and_then(|rest| rest.strip_suffix(".nk"))
            && let Ok(ids) = natsauth::parse_nodes(node)
        {
            nodes.extend(ids);
        }
    }
    Ok(nodes)
}
