//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::access::{self, SecretsCommand, TokensCommand};
use crate::containers::{self, ContainersCommand};
use crate::hosts::{self, HostsCommand};
use crate::nats::{self, NatsCommand};
use crate::tools::{self, ReplayArgs, TailArgs};
use crate::video_cli::{self, VideoCommand};
use crate::{Config, Parts};

#[derive(Debug, Parser)]
#[command(
    name = "nebula",
    version,
    about = "Nebula Command: an event-sourced control plane for homelabs and AI creators"
)]
pub struct Cli {
    /// Configuration file (TOML). Defaults to ./nebula.toml when present; environment overrides it.
    #[arg(long, global = true, env = "NEBULA_CONFIG")]
    pub config: Option<PathBuf>,
    /// More log lines on stderr: `-v` info, `-vv` debug (`RUST_LOG` overrides). One-shot commands
    /// log warnings only by default; the services log at info.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: gateway, projector, the local agent, the render
    /// dispatcher and a render worker (simulated GPU unless `render.backend = "comfyui"`).
    Up,
    /// Run the HTTP gateway (REST, websocket, dashboard).
    Gateway,
    /// Run the projections that keep the Postgres read models up to date.
    Projector,
    /// Run the node agent (hardware detection, registration, heartbeats).
    Agent,
    /// Place queued render jobs on GPU nodes (run one per system).
    Dispatcher,
    /// Run the chat bots that are configured (`chat.twitch.channels`, `chat.discord.token`).
    Chat,
    /// Run the Stream Bot (`post.*.token`): the Twitch, YouTube and Kick posts.
    Posting,
    /// Run a worker on this node.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Apply database migrations and provision the NATS streams, then exit.
    Migrate,
    /// Inspect the event log.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Manage read models.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// What the bus dead-lettered: list, show, and send back once fixed.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Named API tokens with a role: create (shown once), list, revoke.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The secrets vault: set (value from stdin), list, rm. Configuration values written
    /// `secret:NAME` are read from it.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// NATS credentials per role and the server's authorization (`nats config`).
    #[command(subcommand)]
    Nats(NatsCommand),
    /// The nodes' containers: ls, start, stop, restart, rm (carried out by each node's agent).
    #[command(subcommand)]
    Containers(ContainersCommand),
    /// Hosts over SSH: add, ls, rm, accept-key, exec (run by the control plane).
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Script to video: new, ls, show, cancel; the personas and schedules.
    #[command(subcommand)]
    Video(VideoCommand),
}

impl Command {
    /// Whether this command runs services until stopped (and logs what they do).
    fn serves(&self) -> bool {
        matches!(
            self,
            Command::Up
                | Command::Gateway
                | Command::Projector
                | Command::Agent
                | Command::Dispatcher
                | Command::Chat
                | Command::Posting
                | Command::Worker(_)
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The newest dead letters: where each came from and why.
    List {
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One dead letter, its payload whole.
    Show {
        /// Its sequence on the DLQ (the first column of `dlq list`).
        seq: u64,
    },
    /// Send a dead letter back to the subject it came from, once (work messages only); the
    /// replay is recorded on the event log.
    Replay {
        /// Its sequence on the DLQ.
        seq: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Run render jobs placed on this node, through ComfyUI (`render.backend = "comfyui"`,
    /// `render.comfyui_url`) or the simulated GPU; supervises ComfyUI when `render.supervise`
    /// is set.
    Render,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Follow the event log live, optionally starting in the past.
    Tail(TailArgs),
    /// Print a range of the event log in order, then exit.
    Replay(ReplayArgs),
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Show each projection's position and lag.
    List,
    /// Rebuild a read model from sequence 1 aside, then swap it in (the live model stays online).
    Rebuild {
        /// The projection.
        #[arg(value_parser = projection_names())]
        name: String,
    },
}

/// Every projection's name, for `projections rebuild`.
fn projection_names() -> clap::builder::PossibleValuesParser {
    let names: Vec<&'static str> = projections::all().iter().map(|p| p.name()).collect();
    clap::builder::PossibleValuesParser::new(names)
}

/// Logs go to stderr: at info for the services, at warn for one-shot commands (their answer is
/// on stdout), more with `-v`; `RUST_LOG` overrides.
pub fn init_tracing(cli: &Cli) {
    let base = if cli.command.serves() { 1 } else { 0 };
    let level = match base + cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Up => serve(&config, Parts::ALL).await,
        Command::Gateway => serve(&config, Parts::GATEWAY).await,
        Command::Projector => serve(&config, Parts::PROJECTOR).await,
        Command::Agent => serve(&config, Parts::AGENT).await,
        Command::Dispatcher => serve(&config, Parts::DISPATCHER).await,
        Command::Chat => serve(&config, Parts::CHAT).await,
        Command::Posting => serve(&config, Parts::POSTING).await,
        Command::Worker(WorkerCommand::Render) => serve(&config, Parts::RENDER_WORKER).await,
        Command::Migrate => tools::migrate(&config).await,
        Command::Events(EventsCommand::Tail(args)) => tools::tail(&config, args).await,
        Command::Events(EventsCommand::Replay(args)) => tools::replay(&config, args).await,
        Command::Projections(ProjectionsCommand::List) => tools::list_projections(&config).await,
        Command::Projections(ProjectionsCommand::Rebuild { name }) => {
            tools::rebuild(&config, &name).await
        }
        Command::Dlq(DlqCommand::List { limit }) => tools::dlq_list(&config, limit).await,
        Command::Dlq(DlqCommand::Show { seq }) => tools::dlq_show(&config, seq).await,
        Command::Dlq(DlqCommand::Replay { seq }) => tools::dlq_replay(&config, seq).await,
        Command::Tokens(command) => access::tokens(&config, command).await,
        Command::Secrets(command) => access::secrets(&config, command).await,
        Command::Nats(command) => nats::run(&config, command),
        Command::Containers(command) => containers::run(&config, command).await,
        Command::Hosts(command) => hosts::run(&config, command).await,
        Command::Video(command) => video_cli::run(&config, command).await,
    }
}

async fn serve(config: &Config, parts: Parts) -> anyhow::Result<()> {
    let running = crate::start(config, parts).await?;
    if let Some(addr) = running.gateway_addr {
        announce(addr, running.admin.as_ref());
    }
    let cancel = running.cancel_token();
    tokio::select! {
        () = shutdown_signal() => tracing::info!("shutting down"),
        () = cancel.cancelled() => tracing::error!("a service failed; shutting down"),
    }
    let failed = cancel.is_cancelled();
    running.shutdown().await;
    if failed {
        anyhow::bail!("stopped because a service failed (see the log above)")
    } else {
        Ok(())
    }
}

/// Where the dashboard is. The bootstrap admin token is shown only the first time, and only to
/// a person at a terminal (never into a journal or a log file); otherwise its file is named.
fn announce(addr: std::net::SocketAddr, admin: Option<&crate::stack::AdminAccess>) {
    use std::io::IsTerminal;
    match admin {
        Some(admin) if admin.created && std::io::stdout().is_terminal() => println!(
            "\n  Nebula Command is up.\n  Dashboard: http://{addr}/#token={}\n  Admin token (shown once; kept in {}): {}\n",
            admin.token.expose(),
            admin
                .file
                .as_deref()
                .map_or("the configuration".into(), |p| p.display().to_string()),
            admin.token.expose()
        ),
        Some(crate::stack::AdminAccess {
            file: Some(file), ..
        }) => {
            tracing::info!(file = %file.display(), "the bootstrap admin token is in this file");
            println!(
                "\n  Nebula Command is up.\n  Dashboard: http://{addr}/\n  Admin token: in {}\n",
                file.display()
            );
        }
        _ => println!("\n  Nebula Command is up.\n  Dashboard: http://{addr}/\n"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
