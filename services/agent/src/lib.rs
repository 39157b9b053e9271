//! The node agent: runs on every machine of the fleet. It detects the hardware, registers the
//! node (a `node.registered` event through the node aggregate), then publishes telemetry
//! heartbeats on an interval, and deregisters on shutdown. Its own status (for the `/health`,
//! `/metrics`, `/services` and `/gpu` endpoints the binary serves) is an [`AgentStatus`].

mod build;
mod create;
mod docker;
mod follow;
pub mod hardware;
mod status;
mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use bus::remote::Remote;
use bus::store::CommandMeta;
use common::Backoff;
use cqrs_es::AggregateError;
use domain::node::{Node, NodeCommand, NodeError};
use events::{Actor, NodeId};
use serde::Deserialize;
use service::Context;
use supervise::target::{Target, connect_docker, docker_message};

pub use status::AgentStatus;

use crate::hardware::{DetectOptions, GpuBackend, Sampler};

/// The agent's configuration (`[agent]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The node's id; the hostname (sanitized) when absent. It becomes the site's node id, which
    /// every part on this machine uses.
    pub node_id: Option<String>,
    /// Where the agent's own endpoints listen (`/health`, `/metrics`, `/services`, `/gpu`;
    /// `NEBULA_AGENT_HTTP_ADDR`).
    pub http_addr: std::net::SocketAddr,
    /// Seconds between heartbeats.
    pub heartbeat_interval_secs: f64,
    /// Skip NVML and the GPU tools (for machines where probing them is unwanted).
    pub disable_gpu_detection: bool,
    /// Where the agent's HTTP endpoints will be reachable, announced in the registration.
    pub advertise_url: Option<String>,
    /// The node's Docker engine (`NEBULA_DOCKER_HOST`); empty: the agent leaves Docker alone.
    /// An engine that is not there is reported, not fatal.
    pub docker_host: String,
    /// Seconds between listings of the node's containers (telemetry).
    pub containers_interval_secs: f64,
    /// The most of one followed log the agent sends a second; the rest is counted and left out.
    pub log_follow_bytes_per_sec: u64,
    /// The services this agent supervises (`[[agent.services]]`).
    pub services: Vec<supervise::ServiceConfig>,
    /// The `systemctl` that systemd services are started and checked with.
    pub systemctl: String,
    /// What else this node takes on, announced in its registration (set by whoever composes
    /// the process: `ai-dev` when this node runs AI developer jobs).
    #[serde(skip)]
    pub capabilities: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: None,
            http_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 8081)),
            heartbeat_interval_secs: 5.0,
            disable_gpu_detection: false,
            advertise_url: None,
            docker_host: "unix:///var/run/docker.sock".to_owned(),
            containers_interval_secs: 5.0,
            log_follow_bytes_per_sec: 1 << 20,
            services: Vec::new(),
            systemctl: "systemctl".to_owned(),
            capabilities: Vec::new(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.heartbeat_interval_secs.is_finite() && self.heartbeat_interval_secs >= 0.05) {
            problems.push(format!(
                "heartbeat_interval_secs must be at least 0.05, got {}",
                self.heartbeat_interval_secs
            ));
        }
        if let Some(id) = &self.node_id
            && let Err(err) = id.parse::<NodeId>()
        {
            problems.push(format!("node_id {id:?} is invalid: {err}"));
        }
        if !self.docker_host.is_empty() && !self.docker_host.starts_with("unix://") {
            problems.push(format!(
                "docker_host must be a unix:// socket (or empty to leave Docker alone), got {:?}",
                self.docker_host
            ));
        }
        if !(self.containers_interval_secs.is_finite() && self.containers_interval_secs >= 0.1) {
            problems.push(format!(
                "containers_interval_secs must be at least 0.1, got {}",
                self.containers_interval_secs
            ));
        }
        if !(1024..=1 << 30).contains(&self.log_follow_bytes_per_sec) {
            problems.push(format!(
                "log_follow_bytes_per_sec must be 1024..=1073741824, got {}",
                self.log_follow_bytes_per_sec
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (index, service) in self.services.iter().enumerate() {
            problems.extend(service.validate(index));
            if !names.insert(service.name.as_str()) {
                problems.push(format!(
                    "services[{index}]: the name {} is used twice",
                    service.name
                ));
            }
            if service.container.is_some() && self.docker_host.is_empty() {
                problems.push(format!(
                    "services[{index}] ({}): a container service needs docker_host",
                    service.name
                ));
            }
        }
        problems
    }
}

struct Agent {
    config: Config,
    ctx: Context,
    node_id: NodeId,
    hostname: String,
    status: AgentStatus,
}

/// The node id used when none is configured: the hostname, with anything a subject token cannot
/// hold replaced by `-`.
pub fn default_node_id(hostname: &str) -> NodeId {
    let cleaned: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let cleaned = if cleaned.is_empty() {
        "node".to_owned()
    } else {
        cleaned
    };
    // Only ASCII letters, digits, '-' and '_' remain, at most 64 of them: always a valid id.
    NodeId::try_from(cleaned).expect("a sanitized hostname is a valid node id")
}

/// This machine's host name (`localhost` when it cannot be read).
pub fn host_name() -> String {
    sysinfo::System::host_name().unwrap_or_else(|| "localhost".to_owned())
}

/// Starts the agent of the site's node: it detects the hardware, registers the node (announcing
/// `config.advertise_url`), heartbeats until the context is cancelled, then deregisters. The
/// returned status feeds the agent's own endpoints.
pub fn start(ctx: &Context, config: Config) -> anyhow::Result<AgentStatus> {
    let node_id = ctx.site.node_id.clone();
    let services = supervisor::Services::default();
    let status = AgentStatus::new(node_id.clone(), services.clone());
    supervise(ctx, &config, &services)?;
    if !config.docker_host.is_empty() {
        let engine = Arc::new(docker::Engine::new(
            ctx.bus.clone(),
            node_id.clone(),
            config.docker_host.clone(),
            ctx.site.state_dir.clone(),
        ));
        let interval = Duration::from_secs_f64(config.containers_interval_secs);
        let executor = Arc::clone(&engine);
        ctx.spawn("containers-commands", move |cancel| {
            Arc::clone(&executor).execute(cancel)
        });
        let logs = Arc::clone(&engine);
        ctx.spawn("containers-logs", move |cancel| {
            Arc::clone(&logs).serve_logs(cancel)
        });
        let follows = Arc::new(follow::Follows::new(
            ctx.bus.clone(),
            node_id.clone(),
            config.docker_host.clone(),
            config.log_follow_bytes_per_sec,
        ));
        ctx.spawn("containers-follow", move |cancel| {
            Arc::clone(&follows).serve(cancel)
        });
        let watcher = Arc::clone(&engine);
        ctx.spawn("containers-watch", move |cancel| {
            Arc::clone(&watcher).watch(cancel)
        });
        ctx.spawn("containers-listing", move |cancel| {
            Arc::clone(&engine).report(interval, cancel)
        });
    }
    let agent = Arc::new(Agent {
        config,
        ctx: ctx.clone(),
        node_id,
        hostname: host_name(),
        status: status.clone(),
    });
    ctx.spawn("agent", move |_| Arc::clone(&agent).run());
    Ok(status)
}

/// Starts a supervisor per configured service, and answers the control plane's questions for
/// their live state.
fn supervise(
    ctx: &Context,
    config: &Config,
    services: &supervisor::Services,
) -> anyhow::Result<()> {
    let node_id = ctx.site.node_id.clone();
    let http = reqwest::Client::builder().build()?;
    for service in &config.services {
        let recorder = supervisor::Recorder {
            name: service.name.clone(),
            kind: service.kind(),
            node_id: node_id.clone(),
            events: Remote::new(ctx.bus.clone(), node_id.as_str()),
            services: services.clone(),
        };
        let supervisor = Arc::new(supervise::Supervisor::new(
            service.clone(),
            Target::of(service, &config.docker_host, &config.systemctl),
            recorder,
            http.clone(),
        ));
        // One part name for every supervisor (a metric label stays low-cardinality); each
        // logs its service's name.
        ctx.spawn("service-supervisor", move |cancel| {
            Arc::clone(&supervisor).run(cancel)
        });
    }
    let bus = ctx.bus.clone();
    let services = services.clone();
    ctx.spawn("services-answers", move |cancel| {
        let (bus, services, node_id) = (bus.clone(), services.clone(), node_id.clone());
        async move {
            bus.answer(
                node_id.as_str(),
                events::service::SERVICES_QUERY,
                cancel,
                |_: serde_json::Value| {
                    let all = services.all();
                    async move { Ok::<_, String>(all) }
                },
            )
            .await?;
            Ok(())
        }
    });
    Ok(())
}

impl Agent {
    /// Registers, then heartbeats until the shutdown token fires; then deregisters.
    async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        let Agent {
            config,
            ctx,
            node_id,
            hostname,
            status,
        } = &*self;
        let disable = config.disable_gpu_detection;
        let mut sampler = tokio::task::spawn_blocking(move || {
            let backend = if disable {
                GpuBackend::None
            } else {
                GpuBackend::detect_with(&DetectOptions::default())
            };
            Sampler::new(backend)
        })
        .await?;
        let inventory = {
            let hostname = hostname.clone();
            let advertise = config.advertise_url.clone();
            let capabilities = config.capabilities.clone();
            let (returned, inventory) = tokio::task::spawn_blocking(move || {
                let mut inventory = hardware::inventory(
                    sampler.gpu(),
                    &hostname,
                    env!("CARGO_PKG_VERSION"),
                    advertise,
                );
                inventory.capabilities = capabilities;
                (sampler, inventory)
            })
            .await?;
            sampler = returned;
            inventory
        };
        status.set_inventory(inventory.clone());
        tracing::info!(node_id = %node_id, gpus = inventory.gpus.len(), gpu_source = %inventory.gpu_source, "hardware detected");

        // The control plane decides; this node never writes the event log itself.
        let node_commands = Remote::<Node>::new(ctx.bus.clone(), node_id.as_str());
        let actor = Actor::Node(node_id.to_string());
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let register = node_commands.execute(
                node_id.as_str(),
                NodeCommand::Register(inventory.clone()),
                CommandMeta::new(actor.clone()),
            );
            // Never hold up shutdown on an unreachable bus.
            let result = tokio::select! {
                () = ctx.cancel.cancelled() => return Ok(()),
                result = register => result,
            };
            match result {
                Ok(()) => break,
                Err(AggregateError::UserError(err)) => {
                    return Err(service::fatal(format!("node registration refused: {err}")));
                }
                Err(err) => {
                    status.record_error(format!("registration failed: {err}"));
                    tracing::warn!(node_id = %node_id, error = %err, "registration failed, retrying");
                    if !backoff.wait(&ctx.cancel).await {
                        return Ok(());
                    }
                }
            }
        }
        status.set_registered(true);
        tracing::info!(node_id = %node_id, "node registered");

        let mut interval =
            tokio::time::interval(Duration::from_secs_f64(config.heartbeat_interval_secs));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sample_seq = 0u64;
        loop {
            tokio::select! {
                () = ctx.cancel.cancelled() => break,
                _ = interval.tick() => {}
            }
            sample_seq += 1;
            let id = node_id.clone();
            let (returned, heartbeat) = tokio::task::spawn_blocking(move || {
                let heartbeat = sampler.sample(&id, sample_seq);
                (sampler, heartbeat)
            })
            .await?;
            sampler = returned;
            let published = tokio::select! {
                () = ctx.cancel.cancelled() => break,
                published = ctx.bus.publish_heartbeat(&heartbeat) => published,
            };
            match published {
                Ok(_) => status.record_heartbeat(heartbeat),
                Err(err) => {
                    status.record_error(format!("heartbeat failed: {err}"));
                    tracing::warn!(node_id = %node_id, error = %err, "failed to publish heartbeat");
                }
            }
        }

        // Best effort: say goodbye, but never hang shutdown on it.
        let goodbye = node_commands.execute(
            node_id.as_str(),
            NodeCommand::Deregister {
                reason: "agent stopped".to_owned(),
            },
            CommandMeta::new(actor),
        );
        match tokio::time::timeout(Duration::from_secs(3), goodbye).await {
            Ok(Ok(())) => tracing::info!(node_id = %node_id, "node deregistered"),
            Ok(Err(AggregateError::UserError(NodeError::NotRegistered))) => {}
            Ok(Err(err)) => {
                tracing::warn!(node_id = %node_id, error = %err, "failed to deregister")
            }
            Err(_) => tracing::warn!(node_id = %node_id, "deregistration timed out"),
        }
        Ok(())
    }
}

/// A chunk of a container's log: its stream's name (`stdout`, `stderr`, `console` for a TTY
/// container) and its text; `None` for what was written to its stdin.
fn log_text(output: bollard::container::LogOutput) -> Option<(&'static str, String)> {
    let (kind, message) = match output {
        bollard::container::LogOutput::StdOut { message } => ("stdout", message),
        bollard::container::LogOutput::StdErr { message } => ("stderr", message),
        bollard::container::LogOutput::Console { message } => ("console", message),
        bollard::container::LogOutput::StdIn { .. } => return None,
    };
    Some((kind, String::from_utf8_lossy(&message).into_owned()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostnames_become_valid_node_ids() {
        assert_eq!(
            super::default_node_id("gpu-box.lan").as_str(),
            "gpu-box-lan"
        );
        assert_eq!(super::default_node_id("").as_str(), "node");
        assert_eq!(super::default_node_id(&"x".repeat(300)).as_str().len(), 64);
    }
}
