//! `nebula hosts add|ls|rm|accept-key|exec`: the SSH host registry and remote commands,
//! recorded on the log as the user running the CLI (the same commands the REST API records),
//! a command's output printed as its events arrive.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use bus::store::{CommandMeta, execute};
use bus::{Bus, ReadFrom, StreamName};
use clap::Subcommand;
use domain::host::{Host, HostCommand};
use events::DomainEvent;
use events::host::{ExecRequested, HostExecEvent, HostRegistered, OutputStream};
use futures::StreamExt;

use crate::Config;

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Register a host (its private key must be in the vault: `nebula secrets set NAME`).
    Add {
        name: String,
        #[arg(long)]
        address: String,
        #[arg(long, default_value_t = 22)]
        port: u16,
        #[arg(long)]
        user: String,
        /// The vault secret holding the private key (OpenSSH format).
        #[arg(long)]
        key_secret: String,
        /// A command operators may run (`*` for any plain words); repeat for more.
        #[arg(long = "allow")]
        allowlist: Vec<String>,
    },
    /// Every host: address, pinned key, load and memory as last read.
    Ls,
    /// Forget a host (and its pinned key).
    Rm { name: String },
    /// Pin the key a host was refused for (after checking it is really the host's new key).
    AcceptKey { name: String, fingerprint: String },
    /// Run a command on a host and print its output as it comes; exits with its status.
    Exec {
        name: String,
        /// The command (run by the host's shell).
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<String>,
        /// Seconds before the remote command is killed.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u32,
    },
}

pub(crate) async fn run(config: &Config, command: HostsCommand) -> anyhow::Result<()> {
    let bus = Bus::connect_only(config.bus_config()).await?;
    let meta = || CommandMeta::new(crate::access::cli_actor());
    let hosts = bus::store::commands::<Host>(bus.clone(), ());
    match command {
        HostsCommand::Add {
            name,
            address,
            port,
            user,
            key_secret,
            allowlist,
        } => {
            events::host::validate_host_name(&name).map_err(anyhow::Error::msg)?;
            let registered = HostRegistered {
                address,
                port,
                user,
                key_secret,
                allowlist,
            };
            execute(&hosts, &name, HostCommand::Register(registered), meta(), 3)
                .await
                .with_context(|| format!("host {name} was not added"))?;
            println!("host {name} added; its key is pinned on first contact");
            Ok(())
        }
        HostsCommand::Rm { name } => {
            execute(&hosts, &name, HostCommand::Remove, meta(), 3)
                .await
                .with_context(|| format!("host {name} was not removed"))?;
            println!("host {name} removed");
            Ok(())
        }
        HostsCommand::AcceptKey { name, fingerprint } => {
            let state = bus::store::JetStreamStore::<Host>::new(bus.clone());
            let host = sagas::hosts::load_host(&state, &name)
                .await?
                .with_context(|| format!("no host {name}"))?;
            let Some(presented) = host.last_mismatch.filter(|k| k.fingerprint == fingerprint)
            else {
                bail!("host {name} was not refused for key {fingerprint}");
            };
            execute(&hosts, &name, HostCommand::AcceptKey(presented), meta(), 3).await?;
            println!("host {name}: key {fingerprint} pinned");
            Ok(())
        }
        HostsCommand::Ls => ls(&bus).await,
        HostsCommand::Exec {
            name,
            command,
            timeout_secs,
        } => exec(&bus, name, command.join(" "), timeout_secs, meta()).await,
    }
}

async fn ls(bus: &Bus) -> anyhow::Result<()> {
    let state = bus::store::JetStreamStore::<Host>::new(bus.clone());
    let hosts = sagas::hosts::list_hosts(bus, &state).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<16} {:<28} {:<16} {:>6} {:>16}  HOST KEY",
        "NAME", "ADDRESS", "USER", "LOAD", "MEM AVAILABLE"
    )?;
    for host in hosts {
        let metrics = host.sample.as_ref().and_then(|s| s.metrics.as_ref());
        let key = match (&host.host_key, &host.key_mismatch) {
            (_, Some(refused)) => format!("REFUSED {} (accept-key?)", refused.fingerprint),
            (Some(pinned), None) => pinned.fingerprint.clone(),
            (None, None) => "not contacted yet".to_owned(),
        };
        writeln!(
            out,
            "{:<16} {:<28} {:<16} {:>6} {:>16}  {key}",
            host.name,
            format!("{}:{}", host.address, host.port),
            host.user,
            metrics.map_or("-".to_owned(), |m| format!("{:.2}", m.load_1m)),
            metrics.map_or_else(
                || {
                    host.sample
                        .as_ref()
                        .and_then(|s| s.error.as_ref())
                        .map_or("-".to_owned(), |e| e.reason.to_string())
                },
                |m| format!(
                    "{:.1} GiB",
                    m.memory_available_bytes as f64 / (1u64 << 30) as f64
                )
            ),
        )?;
    }
    Ok(())
}

async fn exec(
    bus: &Bus,
    host: String,
    command: String,
    timeout_secs: u32,
    meta: CommandMeta,
) -> anyhow::Result<()> {
    let state = bus::store::JetStreamStore::<Host>::new(bus.clone());
    if sagas::hosts::load_host(&state, &host).await?.is_none() {
        bail!("no host {host}");
    }
    let execs = bus::store::commands(bus.clone(), ());
    let requested = ExecRequested {
        host: host.clone(),
        command,
        timeout_secs,
        env_secrets: Default::default(),
    };
    let exec_id = sagas::hosts::request_exec(&execs, requested, meta)
        .await
        .context("the command was not recorded")?;
    let subject = events::subjects::event(HostExecEvent::AGGREGATE_TYPE, &exec_id);
    let mut events = bus
        .read(StreamName::Events, ReadFrom::Start, Some(subject))
        .await?;
    let deadline = Duration::from_secs(u64::from(timeout_secs) + 60);
    loop {
        let message = tokio::time::timeout(deadline, events.next())
            .await
            .with_context(|| format!("execution {exec_id} did not finish"))?
            .context("the event log closed")??;
        for envelope in message.decode_commit().unwrap_or_default() {
            match envelope.decode::<HostExecEvent>() {
                Ok(HostExecEvent::Output { stream, text }) => match stream {
                    OutputStream::Stdout => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(text.as_bytes())?;
                        out.flush()?;
                    }
                    OutputStream::Stderr => eprint!("{text}"),
                },
                Ok(HostExecEvent::Completed {
                    exit_status,
                    truncated,
                    output_bytes,
                    ..
                }) => {
                    if truncated {
                        eprintln!("(output cut: {output_bytes} bytes in all)");
                    }
                    if exit_status != 0 {
                        bail!("exited {exit_status} on {host} (execution {exec_id})");
                    }
                    return Ok(());
                }
                Ok(HostExecEvent::Failed { reason, error, .. }) => {
                    bail!("{reason}: {error} (execution {exec_id})")
                }
                _ => {}
            }
        }
    }
}
