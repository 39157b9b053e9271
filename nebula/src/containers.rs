//! `nebula containers ls|start|stop|restart|rm`: a node's containers as its agent last listed
//! them, and commands recorded on the log as the user running the CLI, carried out by the
//! node's agent (the same path as the REST API), waited for and printed.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use bus::{Bus, StreamName};
use clap::Subcommand;
use domain::container::CommandStatus;
use events::container::{CONTAINERS_KIND, ContainerAction, ContainersSample};

use crate::Config;

#[derive(Debug, Subcommand)]
pub enum ContainersCommand {
    /// A node's containers: state, image, CPU and memory, as its agent last listed them.
    Ls { node: String },
    /// Start a container on a node.
    Start {
        node: String,
        container: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Stop a container (SIGTERM, then SIGKILL after --timeout-secs).
    Stop {
        node: String,
        container: String,
        #[arg(long, default_value_t = 10)]
        timeout_secs: u32,
        #[command(flatten)]
        wait: Wait,
    },
    /// Restart a container.
    Restart {
        node: String,
        container: String,
        #[arg(long, default_value_t = 10)]
        timeout_secs: u32,
        #[command(flatten)]
        wait: Wait,
    },
    /// The last lines of a container's log, as its node's agent reads them.
    Logs {
        node: String,
        container: String,
        #[arg(long, default_value_t = 100)]
        tail: u32,
    },
    /// Remove a container (--force kills a running one first).
    Rm {
        node: String,
        container: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, clap::Args)]
pub struct Wait {
    /// Seconds to wait for the node's answer (0: record it and return).
    #[arg(long, default_value_t = 30)]
    wait: u64,
}

/// The node's last listing, from the telemetry stream.
async fn listing(bus: &Bus, node: &str) -> anyhow::Result<Option<ContainersSample>> {
    let subject = events::subjects::telemetry(node, CONTAINERS_KIND);
    let Some(message) = bus.last_on_subject(StreamName::Telemetry, &subject).await? else {
        return Ok(None);
    };
    Ok(Some(
        serde_json::from_slice(&message.payload)
            .with_context(|| format!("the listing of node {node} does not read"))?,
    ))
}

pub(crate) async fn run(config: &Config, command: ContainersCommand) -> anyhow::Result<()> {
    let bus = Bus::connect_only(config.bus_config()).await?;
    let (node, action, wait) = match command {
        ContainersCommand::Ls { node } => return ls(&bus, &node).await,
        ContainersCommand::Logs {
            node,
            container,
            tail,
        } => return logs(&bus, &node, container, tail).await,
        ContainersCommand::Start {
            node,
            container,
            wait,
        } => (node, ContainerAction::Start { container }, wait),
        ContainersCommand::Stop {
            node,
            container,
            timeout_secs,
            wait,
        } => (
            node,
            ContainerAction::Stop {
                container,
                timeout_secs,
            },
            wait,
        ),
        ContainersCommand::Restart {
            node,
            container,
            timeout_secs,
            wait,
        } => (
            node,
            ContainerAction::Restart {
                container,
                timeout_secs,
            },
            wait,
        ),
        ContainersCommand::Rm {
            node,
            container,
            force,
            wait,
        } => (node, ContainerAction::Remove { container, force }, wait),
    };
    ContainerAction::validate_container(action.container()).map_err(anyhow::Error::msg)?;
    let known = listing(&bus, &node).await?.is_some_and(|sample| {
        sample
            .containers
            .iter()
            .any(|c| c.name == action.container() || c.id.starts_with(action.container()))
    });
    if !known {
        bail!(
            "no container {} on node {node} (as its agent last listed them)",
            action.container()
        );
    }
    let commands = bus::store::commands(bus.clone(), ());
    let verb = action.verb();
    let container = action.container().to_owned();
    let timeout = Duration::from_secs_f64(config.gateway.container_command_timeout_secs);
    let meta = bus::store::CommandMeta::new(crate::access::cli_actor());
    let requested =
        sagas::containers::request_container_command(&commands, &node, action, timeout, meta)
            .await
            .context("the command was not recorded")?;
    let state = bus::store::JetStreamStore::new(bus.clone());
    let command = sagas::containers::wait_container_command(
        &bus,
        &state,
        &requested.command_id,
        Duration::from_secs(wait.wait),
    )
    .await?;
    let status = command.status.unwrap_or(CommandStatus::Requested);
    let outcome = command.outcome.unwrap_or_default();
    println!(
        "{verb} {container} on {node}: {} {outcome} (command {})",
        status.as_str(),
        requested.command_id
    );
    match status {
        CommandStatus::Failed | CommandStatus::Expired => bail!("{verb} {container}: {outcome}"),
        _ => Ok(()),
    }
}

async fn ls(bus: &Bus, node: &str) -> anyhow::Result<()> {
    let Some(sample) = listing(bus, node).await? else {
        bail!("node {node} has not listed containers (is its agent running, with Docker enabled?)");
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "node {node}: docker {} (listed {})",
        sample.docker,
        sample.at.format("%Y-%m-%d %H:%M:%S UTC")
    )?;
    writeln!(
        out,
        "{:<28} {:<10} {:<32} {:>7} {:>10}  STATUS",
        "NAME", "STATE", "IMAGE", "CPU", "MEMORY"
    )?;
    for c in &sample.containers {
        writeln!(
            out,
            "{:<28} {:<10} {:<32} {:>7} {:>10}  {}",
            c.name,
            c.state,
            c.image,
            c.cpu_percent.map_or("-".to_owned(), |p| format!("{p:.1}%")),
            c.memory_used_bytes.map_or("-".to_owned(), |b| format!(
                "{:.1} MiB",
                b as f64 / 1_048_576.0
            )),
            c.status
        )?;
    }
    Ok(())
}

async fn logs(bus: &Bus, node: &str, container: String, tail: u32) -> anyhow::Result<()> {
    let question = events::container::LogsQuestion { container, tail };
    let logs: events::container::ContainerLogs = bus
        .ask(
            node,
            events::container::LOGS_QUERY,
            &question,
            Duration::from_secs(15),
        )
        .await
        .with_context(|| format!("the log of {} on node {node}", question.container))?;
    let mut out = std::io::stdout().lock();
    if logs.truncated {
        writeln!(out, "(older lines left out)")?;
    }
    for line in &logs.lines {
        writeln!(out, "{}", line.text)?;
    }
    Ok(())
}
