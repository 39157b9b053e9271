//! The node's Docker engine, through bollard: the agent carries out the container commands that
//! arrive on its node's WORK subject (each at most once: it starts the command through the
//! control plane before it asks Docker), records what the engine does on its own
//! (`container.state_changed`), and lists its containers with their use as telemetry.
//!
//! An engine that is absent or goes away is reported (`docker: unavailable: …` in the listing,
//! a clear error on every command) and reconnected to with backoff; it never stops the agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bollard::query_parameters::{
    EventsOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RestartContainerOptionsBuilder, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bus::Bus;
use bus::consumer::{ConsumerSpec, Delivery, Outcome};
use bus::remote::Remote;
use bus::store::CommandMeta;
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use domain::container::{
    ContainerCommand, ContainerCommandCommand, ContainerCommandError, NodeContainers,
    RecordStateChange,
};
use events::container::{
    ContainerAction, ContainerInfo, ContainerLogs, ContainerWork, ContainersSample, LogLine,
    LogsQuestion, StateChanged,
};
use events::{Actor, NodeId};

use crate::docker_message;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// How long one call to the engine may take, beyond a stop's own grace period.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a log an answer carries (NATS takes 1 MiB a message): older lines give way.
const MAX_LOG_BYTES: usize = 512 * 1024;
/// The most lines a question may ask for.
const MAX_LOG_LINES: u32 = 10_000;
/// Results this agent reported, kept to report again when a delivery comes back.
const REMEMBERED: usize = 1024;

/// What the agent does with its node's engine.
pub(crate) struct Engine {
    pub(crate) bus: Bus,
    pub(crate) node_id: NodeId,
    pub(crate) host: String,
    /// The agent's state directory (the build cache lives there).
    state_dir: std::path::PathBuf,
    commands: Remote<ContainerCommand>,
    changes: Remote<NodeContainers>,
    /// Outcomes reported, by command id (a redelivery is answered with the same).
    reported: Mutex<HashMap<String, Result<String, String>>>,
    /// Each container's last CPU reading: (its total, the system's total).
    cpu: Mutex<HashMap<String, (u64, u64)>>,
    /// When the agent started (Unix nanoseconds): the engine's events are recorded from then.
    since: i64,
}

impl Engine {
    pub(crate) fn new(
        bus: Bus,
        node_id: NodeId,
        host: String,
        state_dir: std::path::PathBuf,
    ) -> Self {
        Self {
            state_dir,
            commands: Remote::new(bus.clone(), node_id.as_str()),
            changes: Remote::new(bus.clone(), node_id.as_str()),
            bus,
            node_id,
            host,
            reported: Mutex::default(),
            cpu: Mutex::default(),
            since: Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        }
    }

    fn actor(&self) -> Actor {
        Actor::Node(self.node_id.to_string())
    }

    /// Takes the node's commands until `cancel` fires.
    pub(crate) async fn execute(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let node = self.node_id.as_str();
        let mut spec =
            ConsumerSpec::new(bus::StreamName::Work, events::subjects::node_consumer(node));
        spec.filter_subject = Some(events::subjects::node_work(node));
        spec.max_ack_pending = 1;
        spec.ack_wait = Duration::from_secs(60);
        let this = &*self;
        self.bus
            .consume_json::<ContainerWork, _, _>(spec, cancel, move |work, delivery| {
                this.handle(work, delivery.clone())
            })
            .await?;
        Ok(())
    }

    async fn handle(&self, work: ContainerWork, delivery: Delivery) -> Outcome {
        let meta = CommandMeta {
            correlation_id: work.correlation_id,
            causation_id: Some(work.causation_id),
            actor: self.actor(),
        };
        let id = work.command_id.as_str();
        let started = self
            .commands
            .execute(id, ContainerCommandCommand::Start, meta.clone())
            .await;
        let outcome = match started {
            Ok(()) => {
                // Keep the delivery alive while Docker works (a stop may take its grace period).
                let keep_alive = async {
                    loop {
                        tokio::time::sleep(Duration::from_secs(15)).await;
                        let _ = delivery.in_progress().await;
                    }
                };
                let outcome = tokio::select! {
                    outcome = self.run(id, &work.action) => outcome,
                    () = keep_alive => unreachable!("the keep-alive loop never ends"),
                };
                self.remember(id, outcome.clone());
                outcome
            }
            Err(AggregateError::UserError(ContainerCommandError::Expired(at))) => {
                let reason = format!(
                    "the agent on node {} got it after its deadline ({at}); it was not run",
                    self.node_id
                );
                let expired = ContainerCommandCommand::Expire { reason };
                return match self.commands.execute(id, expired, meta).await {
                    Ok(()) | Err(AggregateError::UserError(_)) => Outcome::Ack,
                    Err(err) => Outcome::Retry(format!("could not record the expiry: {err}")),
                };
            }
            Err(AggregateError::UserError(ContainerCommandError::InvalidTransition(status, _)))
                if status == "started" =>
            {
                // Delivered again after it was started: the result this agent had, or a
                // failure that says it was not run again.
                self.recalled(id).unwrap_or_else(|| {
                    Err(format!(
                        "the agent on node {} stopped while carrying it out; it was not run again",
                        self.node_id
                    ))
                })
            }
            // Finished or expired already: nothing to do.
            Err(AggregateError::UserError(ContainerCommandError::InvalidTransition(..))) => {
                return Outcome::Ack;
            }
            Err(AggregateError::UserError(err)) => return Outcome::Reject(err.to_string()),
            Err(err) => return Outcome::Retry(format!("could not start it: {err}")),
        };
        let report = match outcome {
            Ok(summary) => ContainerCommandCommand::Complete { summary },
            Err(error) => ContainerCommandCommand::Fail { error },
        };
        match self.commands.execute(id, report, meta).await {
            Ok(()) | Err(AggregateError::UserError(_)) => Outcome::Ack,
            Err(err) => Outcome::Retry(format!("could not report the outcome: {err}")),
        }
    }

    fn remember(&self, id: &str, outcome: Result<String, String>) {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        if reported.len() >= REMEMBERED {
            reported.clear();
        }
        reported.insert(id.to_owned(), outcome);
    }

    fn recalled(&self, id: &str) -> Option<Result<String, String>> {
        self.reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Asks the engine; Docker's own error text when it refuses.
    async fn run(&self, command_id: &str, action: &ContainerAction) -> Result<String, String> {
        let docker = crate::connect_docker(&self.host)
            .await
            .map_err(|err| format!("docker: {err}"))?;
        let container = action.container();
        if let ContainerAction::Build {
            image,
            repo,
            commit,
            dockerfile,
            command,
        } = action
        {
            let cache = self.state_dir.join("build-cache");
            let order = crate::build::BuildOrder {
                image,
                repo,
                commit,
                dockerfile,
                command: command.as_deref(),
            };
            return crate::build::build(&docker, &self.host, cache, order).await;
        }
        if let ContainerAction::Create { spec, .. } = action {
            let secrets =
                crate::create::secrets(&self.bus, self.node_id.as_str(), command_id, spec).await?;
            let body = crate::create::body(spec, &secrets)?;
            let created = crate::create::create_and_start(&docker, container, body);
            tokio::time::timeout(CALL_TIMEOUT, created)
                .await
                .map_err(|_| format!("docker: no answer to create {container} within 30 s"))??;
            return Ok(self.state_of(&docker, container).await);
        }
        let grace = match action {
            ContainerAction::Stop { timeout_secs, .. }
            | ContainerAction::Restart { timeout_secs, .. } => u64::from(*timeout_secs),
            _ => 0,
        };
        let call = async {
            match action {
                ContainerAction::Start { .. } => docker.start_container(container, None).await,
                ContainerAction::Stop { timeout_secs, .. } => {
                    let options = StopContainerOptionsBuilder::new()
                        .t(i32::try_from(*timeout_secs).unwrap_or(i32::MAX))
                        .build();
                    docker.stop_container(container, Some(options)).await
                }
                ContainerAction::Restart { timeout_secs, .. } => {
                    let options = RestartContainerOptionsBuilder::new()
                        .t(i32::try_from(*timeout_secs).unwrap_or(i32::MAX))
                        .build();
                    docker.restart_container(container, Some(options)).await
                }
                ContainerAction::Remove { force, .. } => {
                    let options = RemoveContainerOptionsBuilder::new().force(*force).build();
                    docker.remove_container(container, Some(options)).await
                }
                ContainerAction::Create { .. } | ContainerAction::Build { .. } => Ok(()), // carried out above
            }
        };
        let limit = CALL_TIMEOUT + Duration::from_secs(grace);
        match tokio::time::timeout(limit, call).await {
            Err(_) => Err(format!(
                "docker: no answer to {} {container} within {} s",
                action.verb(),
                limit.as_secs()
            )),
            Ok(Err(err)) => Err(format!("docker: {}", docker_message(&err))),
            Ok(Ok(())) => Ok(match action {
                ContainerAction::Remove { .. } => format!("{container} removed"),
                _ => self.state_of(&docker, container).await,
            }),
        }
    }

    /// `<container> <state>`, as the engine says now.
    async fn state_of(&self, docker: &bollard::Docker, container: &str) -> String {
        match docker.inspect_container(container, None).await {
            Ok(inspected) => format!(
                "{container} {}",
                inspected
                    .state
                    .and_then(|state| state.status)
                    .map_or_else(|| "?".to_owned(), |status| status.to_string())
            ),
            Err(_) => format!("{container}: done"),
        }
    }

    /// Answers the control plane's questions for the last lines of a container's log until
    /// `cancel` fires.
    pub(crate) async fn serve_logs(
        self: Arc<Self>,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let this = &*self;
        self.bus
            .answer(
                self.node_id.as_str(),
                events::container::LOGS_QUERY,
                cancel,
                |question: LogsQuestion| this.logs(question),
            )
            .await?;
        Ok(())
    }

    /// The last `tail` lines of a container's log (both streams, a TTY's console too), within
    /// [`MAX_LOG_BYTES`].
    async fn logs(&self, question: LogsQuestion) -> Result<ContainerLogs, String> {
        ContainerAction::validate_container(&question.container)?;
        let tail = question.tail.clamp(1, MAX_LOG_LINES);
        let docker = crate::connect_docker(&self.host)
            .await
            .map_err(|err| format!("docker: {err}"))?;
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let mut stream = docker.logs(&question.container, Some(options));
        let mut lines = std::collections::VecDeque::new();
        let mut bytes = 0;
        let mut truncated = false;
        let read = async {
            while let Some(output) = stream.next().await {
                let output = output.map_err(|err| format!("docker: {}", docker_message(&err)))?;
                let Some((kind, message)) = crate::log_text(output) else {
                    continue;
                };
                for text in message.lines() {
                    bytes += text.len();
                    lines.push_back(LogLine {
                        stream: kind.to_owned(),
                        text: text.to_owned(),
                    });
                }
                while bytes > MAX_LOG_BYTES {
                    let Some(old) = lines.pop_front() else { break };
                    bytes -= old.text.len();
                    truncated = true;
                }
            }
            Ok::<(), String>(())
        };
        tokio::time::timeout(CALL_TIMEOUT, read)
            .await
            .map_err(|_| "docker: the log was not read within 30 s".to_owned())??;
        Ok(ContainerLogs {
            container: question.container,
            lines: lines.into(),
            truncated,
        })
    }

    /// Follows the engine's container events and records each, until `cancel` fires. An engine
    /// that goes away is looked for again every second (an outage is a state of the node, not a
    /// failure of the agent), and the stream is taken up from the last event seen, so what the
    /// engine did meanwhile is recorded too (once: an event is recorded only if it is newer than
    /// the last one).
    pub(crate) async fn watch(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut last_seen = self.since;
        let mut away: Option<String> = None;
        loop {
            match self.follow(&cancel, &mut last_seen).await {
                Ok(()) => return Ok(()),
                Err(why) => {
                    if away.as_deref() != Some(why.as_str()) {
                        tracing::warn!(node = %self.node_id, reason = %why, "not following the docker engine's events; looking again every second");
                        away = Some(why);
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One connection's worth of events; `Ok` only when cancelled.
    async fn follow(&self, cancel: &CancellationToken, last_seen: &mut i64) -> Result<(), String> {
        let docker = crate::connect_docker(&self.host).await?;
        let since = format!(
            "{}.{:09}",
            last_seen.div_euclid(1_000_000_000),
            last_seen.rem_euclid(1_000_000_000)
        );
        let filters = HashMap::from([("type", vec!["container"])]);
        let options = EventsOptionsBuilder::new()
            .since(&since)
            .filters(&filters)
            .build();
        let mut stream = docker.events(Some(options));
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                next = stream.next() => next,
            };
            let message = match next {
                None => return Err("the event stream ended".to_owned()),
                Some(Err(err)) => return Err(format!("the event stream failed: {err}")),
                Some(Ok(message)) => message,
            };
            let at = message.time_nano.unwrap_or_default();
            if at <= *last_seen {
                continue; // taken up again from here: recorded before
            }
            *last_seen = at;
            let Some(change) = state_change(&message) else {
                continue;
            };
            let meta = CommandMeta::new(self.actor());
            if let Err(err) = self
                .changes
                .execute(self.node_id.as_str(), RecordStateChange(change), meta)
                .await
            {
                tracing::warn!(node = %self.node_id, error = %err, "a container state change was not recorded");
            }
        }
    }

    /// Lists the containers every `interval` as telemetry until `cancel` fires; an absent
    /// engine is reported in the listing.
    pub(crate) async fn report(
        self: Arc<Self>,
        interval: Duration,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            let sample = self.sample().await;
            let subject = events::subjects::telemetry(
                self.node_id.as_str(),
                events::container::CONTAINERS_KIND,
            );
            let id = format!(
                "containers-{}-{}",
                self.node_id,
                sample.at.timestamp_nanos_opt().unwrap_or_default()
            );
            let payload = serde_json::to_vec(&sample)?;
            if let Err(err) = self
                .bus
                .publish_raw(subject, id, Vec::new(), payload.into())
                .await
            {
                tracing::warn!(node = %self.node_id, error = %err, "the container listing was not published");
            }
        }
    }

    /// The node's containers now, with their use.
    pub(crate) async fn sample(&self) -> ContainersSample {
        let at = Utc::now();
        let node_id = self.node_id.to_string();
        let listed = match crate::connect_docker(&self.host).await {
            Ok(docker) => {
                let options = ListContainersOptionsBuilder::new().all(true).build();
                match docker.list_containers(Some(options)).await {
                    Ok(list) => Ok((docker, list)),
                    Err(err) => Err(format!("unavailable: {}", docker_message(&err))),
                }
            }
            Err(err) => Err(err),
        };
        let (docker, list) = match listed {
            Ok(listed) => listed,
            Err(docker) => {
                return ContainersSample {
                    node_id,
                    at,
                    docker,
                    containers: Vec::new(),
                };
            }
        };
        let mut containers = Vec::with_capacity(list.len());
        for summary in list {
            let mut info = container_info(summary);
            if info.state == "running" {
                self.add_use(&docker, &mut info).await;
            }
            containers.push(info);
        }
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        ContainersSample {
            node_id,
            at,
            docker: "available".to_owned(),
            containers,
        }
    }

    /// CPU (since the last listing), memory and network of a running container.
    async fn add_use(&self, docker: &bollard::Docker, info: &mut ContainerInfo) {
        let options = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            docker.stats(&info.id, Some(options)).next(),
        )
        .await;
        let Ok(Some(Ok(stats))) = read else {
            return;
        };
        if let Some(memory) = &stats.memory_stats {
            info.memory_used_bytes = memory.usage;
            info.memory_limit_bytes = memory.limit;
        }
        if let Some(networks) = &stats.networks {
            info.network_rx_bytes = Some(networks.values().filter_map(|n| n.rx_bytes).sum());
            info.network_tx_bytes = Some(networks.values().filter_map(|n| n.tx_bytes).sum());
        }
        let cpu = stats.cpu_stats.as_ref();
        let total = cpu
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage);
        let system = cpu.and_then(|c| c.system_cpu_usage);
        let cores = cpu.and_then(|c| c.online_cpus).unwrap_or(1).max(1);
        if let (Some(total), Some(system)) = (total, system) {
            let previous = self
                .cpu
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(info.id.clone(), (total, system));
            info.cpu_percent = previous.and_then(|(last_total, last_system)| {
                cpu_percent(
                    total - last_total.min(total),
                    system.saturating_sub(last_system),
                    cores,
                )
            });
        }
    }
}

/// Percent of one core: the container's share of the system's CPU time, times its cores.
fn cpu_percent(container_delta: u64, system_delta: u64, cores: u32) -> Option<f64> {
    (system_delta > 0).then(|| {
        (container_delta as f64 / system_delta as f64 * f64::from(cores) * 1000.0).round() / 10.0
    })
}

/// Docker's own words for an error (its JSON `message`), without bollard's wrapping.
fn container_info(summary: bollard::models::ContainerSummary) -> ContainerInfo {
    let labels = summary.labels.unwrap_or_default();
    let status = summary.status.unwrap_or_default();
    let health = ["healthy", "unhealthy", "health: starting"]
        .into_iter()
        .find(|word| status.contains(&format!("({word})")))
        .map(|word| word.trim_start_matches("health: ").to_owned());
    let ports = summary
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|port| {
            let kind = port.typ.map(|t| t.to_string()).unwrap_or_default();
            match port.public_port {
                Some(public) => format!(
                    "{}:{public}->{}/{kind}",
                    port.ip.unwrap_or_default(),
                    port.private_port
                ),
                None => format!("{}/{kind}", port.private_port),
            }
        })
        .collect();
    ContainerInfo {
        id: summary.id.unwrap_or_default(),
        name: summary
            .names
            .and_then(|names| names.into_iter().next())
            .map(|name| name.trim_start_matches('/').to_owned())
            .unwrap_or_default(),
        image: summary.image.unwrap_or_default(),
        state: summary.state.map(|s| s.to_string()).unwrap_or_default(),
        status,
        health,
        ports,
        compose_project: labels.get("com.docker.compose.project").cloned(),
        compose_service: labels.get("com.docker.compose.service").cloned(),
        created: summary
            .created
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .unwrap_or_default(),
        cpu_percent: None,
        memory_used_bytes: None,
        memory_limit_bytes: None,
        network_rx_bytes: None,
        network_tx_bytes: None,
    }
}

/// A container event worth recording, as a state change.
fn state_change(message: &bollard::models::EventMessage) -> Option<StateChanged> {
    let action = message.action.as_deref()?;
    // `health_status: healthy`, `exec_start: …` and the like: the verb is before the colon.
    let (change, detail) = match action.split_once(':') {
        Some((verb, rest)) => (verb.trim(), Some(rest.trim())),
        None => (action, None),
    };
    const RECORDED: [&str; 10] = [
        "create",
        "start",
        "die",
        "stop",
        "kill",
        "oom",
        "destroy",
        "pause",
        "unpause",
        "health_status",
    ];
    if !RECORDED.contains(&change) {
        return None;
    }
    let actor = message.actor.as_ref()?;
    let attributes = actor.attributes.clone().unwrap_or_default();
    let at = message
        .time_nano
        .map(DateTime::from_timestamp_nanos)
        .or_else(|| {
            message
                .time
                .and_then(|secs| DateTime::from_timestamp(secs, 0))
        })
        .unwrap_or_else(Utc::now);
    Some(StateChanged {
        container: attributes.get("name").cloned().unwrap_or_default(),
        container_id: actor.id.clone().unwrap_or_default(),
        image: attributes.get("image").cloned().unwrap_or_default(),
        change: change.to_owned(),
        exit_code: (change == "die")
            .then(|| attributes.get("exitCode")?.parse().ok())
            .flatten(),
        health: (change == "health_status")
            .then(|| detail.map(str::to_owned))
            .flatten(),
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_a_share_of_the_systems_time_in_cores() {
        assert_eq!(cpu_percent(50, 100, 2), Some(100.0));
        assert_eq!(cpu_percent(1, 3, 1), Some(33.3));
        assert_eq!(cpu_percent(5, 0, 4), None);
    }

    #[test]
    fn docker_events_become_state_changes() {
        let event = |action: &str, attributes: &[(&str, &str)]| bollard::models::EventMessage {
            action: Some(action.to_owned()),
            actor: Some(bollard::models::EventActor {
                id: Some("4c7d".to_owned()),
                attributes: Some(
                    attributes
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
            }),
            time: Some(1_700_000_000),
            ..Default::default()
        };
        let died = state_change(&event("die", &[("name", "web"), ("exitCode", "137")])).unwrap();
        assert_eq!(
            (
                died.container.as_str(),
                died.change.as_str(),
                died.exit_code
            ),
            ("web", "die", Some(137))
        );
        let health = state_change(&event("health_status: unhealthy", &[("name", "web")])).unwrap();
        assert_eq!(health.change, "health_status");
        assert_eq!(health.health.as_deref(), Some("unhealthy"));
        assert!(state_change(&event("exec_start: sh", &[("name", "web")])).is_none());
        assert!(state_change(&event("attach", &[])).is_none());
    }
}
