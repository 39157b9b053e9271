//! Containers on the fleet's nodes: commands an actor asks a node's agent to carry out
//! (`container_command`, one aggregate per command), what each node's Docker engine did
//! (`node_containers`, one aggregate per node), and the latest listing each agent reports as
//! telemetry.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{CorrelationId, DomainEvent, EventId};

/// What a container command asks for. The container is named as Docker knows it (its name or
/// id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ContainerAction {
    Start {
        container: String,
    },
    /// SIGTERM, then SIGKILL after `timeout_secs`.
    Stop {
        container: String,
        timeout_secs: u32,
    },
    Restart {
        container: String,
        timeout_secs: u32,
    },
    /// `force` removes a running container (killing it first).
    Remove {
        container: String,
        force: bool,
    },
    /// Create `container` from `spec` and start it.
    Create {
        container: String,
        spec: Box<ContainerSpec>,
    },
    /// Build `image` on the node from `commit` of the git repository `repo`, with the
    /// Dockerfile at `dockerfile` (relative to the repository's root) — or, with `command`, by
    /// running that shell command in the commit's checkout, which must leave the image
    /// `$NEBULA_IMAGE` in the node's engine (buildpacks, nixpacks, a Makefile).
    Build {
        image: String,
        repo: String,
        commit: String,
        dockerfile: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<String>,
    },
}

/// What a container is made from. Environment values written `secret:NAME` are vault secrets:
/// the event holds the reference only, and the node's agent asks the control plane for the
/// value while it creates the container (nothing at rest holds it but Docker's own config).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// An image the node already has (no registry is asked).
    pub image: String,
    /// The command (the image's own when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// `[host_ip:]host_port:container_port[/tcp|udp]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// `host_path_or_volume:container_path[:ro]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// `no`, `always`, `unless-stopped`, `on-failure` or `on-failure:N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// CPUs it may use (e.g. 1.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    /// A Docker network mode (`bridge`, `host`, `none`, a network's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// Whether `command` can be a build command: 1 to 2000 bytes, not blank, one line.
pub fn validate_build_command(command: &str) -> Result<(), String> {
    if command.trim().is_empty() || command.len() > 2000 || command.contains(['\n', '\r', '\0']) {
        return Err("a build command is one line of 1-2000 bytes".to_owned());
    }
    Ok(())
}

/// The vault secret a value names (`secret:NAME`), if it names one.
pub fn secret_reference(value: &str) -> Option<&str> {
    value
        .strip_prefix("secret:")
        .filter(|name| !name.is_empty())
}

impl ContainerSpec {
    /// Every problem at once.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let plain = |value: &str| !value.is_empty() && !value.chars().any(char::is_whitespace);
        if !plain(&self.image) {
            problems.push(format!("image {:?} is not an image reference", self.image));
        }
        for name in self.env.keys() {
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                problems.push(format!("env: {name:?} is not a variable name"));
            }
        }
        for port in &self.ports {
            if parse_port(port).is_none() {
                problems.push(format!(
                    "ports: {port:?} is not [host_ip:]host_port:container_port[/tcp|udp]"
                ));
            }
        }
        for volume in &self.volumes {
            let parts: Vec<&str> = volume.split(':').collect();
            let valid = matches!(parts.len(), 2 | 3)
                && parts[..2].iter().all(|p| plain(p))
                && parts[1].starts_with('/')
                && parts.get(2).is_none_or(|mode| matches!(*mode, "ro" | "rw"));
            if !valid {
                problems.push(format!(
                    "volumes: {volume:?} is not source:/container/path[:ro|rw]"
                ));
            }
        }
        if let Some(policy) = &self.restart_policy {
            let valid = matches!(
                policy.as_str(),
                "no" | "always" | "unless-stopped" | "on-failure"
            ) || policy
                .strip_prefix("on-failure:")
                .is_some_and(|n| n.parse::<u32>().is_ok());
            if !valid {
                problems.push(format!(
                    "restart_policy must be no, always, unless-stopped or on-failure[:N], got {policy:?}"
                ));
            }
        }
        if let Some(cpus) = &self.cpus
            && !cpus
                .parse::<f64>()
                .is_ok_and(|n| n.is_finite() && (0.01..=1024.0).contains(&n))
        {
            problems.push(format!("cpus must be 0.01..=1024, got {cpus:?}"));
        }
        if self.memory_limit_bytes.is_some_and(|bytes| bytes < 6 << 20) {
            problems
                .push("memory_limit_bytes must be at least 6 MiB (Docker's minimum)".to_owned());
        }
        if let Some(network) = &self.network
            && !plain(network)
        {
            problems.push(format!("network {network:?} is not a network name"));
        }
        problems
    }

    /// The vault secrets its environment names, sorted.
    pub fn secrets(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .env
            .values()
            .filter_map(|v| secret_reference(v))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// A published port: (host ip, host port, container port, protocol).
pub fn parse_port(raw: &str) -> Option<(Option<String>, u16, u16, String)> {
    let (mapping, protocol) = match raw.rsplit_once('/') {
        Some((mapping, protocol)) if matches!(protocol, "tcp" | "udp") => (mapping, protocol),
        Some(_) => return None,
        None => (raw, "tcp"),
    };
    let parts: Vec<&str> = mapping.rsplitn(3, ':').collect();
    let (container, host, ip) = match parts[..] {
        [container, host] => (container, host, None),
        [container, host, ip] if !ip.is_empty() => (container, host, Some(ip.to_owned())),
        _ => return None,
    };
    Some((
        ip,
        host.parse().ok().filter(|p| *p > 0)?,
        container.parse().ok().filter(|p| *p > 0)?,
        protocol.to_owned(),
    ))
}

/// The question kind a node's agent asks the control plane for a create command's secrets
/// (`nebula.ask.<node>.container_secrets`).
pub const SECRETS_QUESTION: &str = "container_secrets";

/// "The values of the secrets container command `command_id` names" — answered only while the
/// command is started and only to the node it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsQuestion {
    pub command_id: String,
}

/// The values, by secret name. Never logged, never stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealedSecrets {
    pub values: BTreeMap<String, String>,
}

impl std::fmt::Debug for RevealedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevealedSecrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ContainerAction {
    pub fn container(&self) -> &str {
        match self {
            ContainerAction::Start { container }
            | ContainerAction::Stop { container, .. }
            | ContainerAction::Restart { container, .. }
            | ContainerAction::Remove { container, .. }
            | ContainerAction::Create { container, .. } => container,
            ContainerAction::Build { image, .. } => image,
        }
    }

    /// Its name, as the API and the log say it (`start`, `stop`, …).
    pub fn verb(&self) -> &'static str {
        match self {
            ContainerAction::Start { .. } => "start",
            ContainerAction::Stop { .. } => "stop",
            ContainerAction::Restart { .. } => "restart",
            ContainerAction::Remove { .. } => "remove",
            ContainerAction::Create { .. } => "create",
            ContainerAction::Build { .. } => "build",
        }
    }

    /// Every problem of the action's own fields (a container's name; a build's image, repository,
    /// commit and Dockerfile path).
    pub fn validate(&self) -> Result<(), String> {
        let ContainerAction::Build {
            image,
            repo,
            commit,
            dockerfile,
            command,
        } = self
        else {
            return ContainerAction::validate_container(self.container());
        };
        let image_ok = (1..=200).contains(&image.len())
            && image.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'/' | b'.' | b'_' | b':' | b'-')
            });
        if !image_ok {
            return Err(format!("image {image:?} is not an image name"));
        }
        if repo.is_empty()
            || repo.len() > 1024
            || repo.chars().any(char::is_whitespace)
            || repo.starts_with('-')
        {
            return Err(format!("repo {repo:?} is not a repository URL or path"));
        }
        if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("commit {commit:?} is not a full commit id"));
        }
        if dockerfile.is_empty()
            || dockerfile.starts_with('/')
            || dockerfile
                .split('/')
                .any(|part| part == ".." || part.is_empty())
        {
            return Err(format!(
                "dockerfile {dockerfile:?} must be a path inside the repository"
            ));
        }
        if let Some(command) = command
            && let Err(err) = validate_build_command(command)
        {
            return Err(err);
        }
        Ok(())
    }

    /// Whether `container` is a name or id Docker could hold: 1 to 128 of `[a-zA-Z0-9_.-]`,
    /// not starting with `.` or `-` (so it is also safe in a URL path and a log line).
    pub fn validate_container(container: &str) -> Result<(), String> {
        let valid = (1..=128).contains(&container.len())
            && container
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            && container.as_bytes()[0].is_ascii_alphanumeric();
        if valid {
            Ok(())
        } else {
            Err(format!(
                "container {container:?} is not a Docker container name or id"
            ))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequested {
    pub node_id: String,
    #[serde(flatten)]
    pub action: ContainerAction,
    /// Not started by then, it is not started at all (`container.command_expired`).
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ContainerCommandEvent {
    #[serde(rename = "container.command_requested")]
    Requested(CommandRequested),
    /// The node's agent took it; from here it runs at most once.
    #[serde(rename = "container.command_started")]
    Started {},
    /// Docker did it; `summary` says what came of it (e.g. the state it left).
    #[serde(rename = "container.command_completed")]
    Completed { summary: String },
    /// Docker's error text, or why it could not be asked.
    #[serde(rename = "container.command_failed")]
    Failed { error: String },
    /// Nobody took it in time; it will not run.
    #[serde(rename = "container.command_expired")]
    Expired { reason: String },
}

impl DomainEvent for ContainerCommandEvent {
    const AGGREGATE_TYPE: &'static str = "container_command";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "container.command_requested",
        "container.command_started",
        "container.command_completed",
        "container.command_failed",
        "container.command_expired",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            ContainerCommandEvent::Requested(_) => "container.command_requested",
            ContainerCommandEvent::Started {} => "container.command_started",
            ContainerCommandEvent::Completed { .. } => "container.command_completed",
            ContainerCommandEvent::Failed { .. } => "container.command_failed",
            ContainerCommandEvent::Expired { .. } => "container.command_expired",
        }
    }
}

/// Something a node's Docker engine did to a container, asked for or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChanged {
    /// The container's name (without Docker's leading `/`).
    pub container: String,
    pub container_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Docker's event: `create`, `start`, `die`, `stop`, `kill`, `oom`, `destroy`, `pause`,
    /// `unpause`, `health_status`.
    pub change: String,
    /// The exit code of a container that died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// `healthy`, `unhealthy` or `starting`, for a health change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// When Docker says it happened.
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum NodeContainersEvent {
    #[serde(rename = "container.state_changed")]
    StateChanged(StateChanged),
}

impl DomainEvent for NodeContainersEvent {
    const AGGREGATE_TYPE: &'static str = "node_containers";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &["container.state_changed"];

    fn event_type(&self) -> &'static str {
        match self {
            NodeContainersEvent::StateChanged(_) => "container.state_changed",
        }
    }
}

/// A container command as the control plane sends it to the node's agent
/// (`nebula.work.node.<node>`): the command's id is the idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerWork {
    pub command_id: String,
    pub action: ContainerAction,
    pub correlation_id: CorrelationId,
    /// The `container.command_requested` event.
    pub causation_id: EventId,
}

/// One container as a node's agent lists it (telemetry: latest wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    /// Docker's state: `created`, `running`, `paused`, `restarting`, `removing`, `exited`,
    /// `dead`.
    pub state: String,
    /// Docker's words, e.g. `Up 5 minutes (healthy)`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Published ports, `host_ip:public->private/type`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// `com.docker.compose.project` / `.service`, when compose made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_service: Option<String>,
    pub created: DateTime<Utc>,
    /// CPU use since the last listing, in percent of one core (running containers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_rx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_tx_bytes: Option<u64>,
}

/// A node's containers at one moment (`nebula.telemetry.<node>.containers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainersSample {
    pub node_id: String,
    pub at: DateTime<Utc>,
    /// `available`, or `unavailable: <why>` (no engine, socket refused, …).
    pub docker: String,
    pub containers: Vec<ContainerInfo>,
}

/// The telemetry kind of [`ContainersSample`].
pub const CONTAINERS_KIND: &str = "containers";

/// The question kind of [`LogsQuestion`] (`nebula.query.<node>.container_logs`).
pub const LOGS_QUERY: &str = "container_logs";

/// The last lines of a container's log, asked of its node's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsQuestion {
    pub container: String,
    /// How many of the last lines.
    pub tail: u32,
}

/// One line of a container's log: `stdout`, `stderr`, or `console` for a TTY container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub stream: String,
    pub text: String,
}

/// What a node's agent answers to a [`LogsQuestion`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerLogs {
    pub container: String,
    pub lines: Vec<LogLine>,
    /// Whether older lines were left out to keep the answer within its size.
    pub truncated: bool,
}

/// The question kind that starts (or keeps going) a followed log
/// (`nebula.query.<node>.container_logs_follow`).
pub const FOLLOW_QUERY: &str = "container_logs_follow";

/// "Send `container`'s log lines to `nebula.logs.<node>.<follow_id>` for the next `seconds`"
/// (0 stops it); asked again before the lease ends to keep it going.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowQuestion {
    pub container: String,
    /// 1 to 64 of `[a-z0-9]` (a subject token).
    pub follow_id: String,
    /// The last lines to send first (only when the follow starts).
    pub tail: u32,
    pub seconds: u32,
}

impl FollowQuestion {
    pub fn validate(&self) -> Result<(), String> {
        ContainerAction::validate_container(&self.container)?;
        let valid = (1..=64).contains(&self.follow_id.len())
            && self
                .follow_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(format!(
                "follow id {:?} is not 1-64 of a-z0-9",
                self.follow_id
            ));
        }
        if self.seconds > 300 || self.tail > 1000 {
            return Err("a follow lease is at most 300 s, its tail at most 1000 lines".to_owned());
        }
        Ok(())
    }
}

/// Lines of a followed log, as one message on `nebula.logs.<node>.<follow_id>`. `skipped_bytes`:
/// what the node left out to stay within its rate (the container wrote faster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBatch {
    pub lines: Vec<LogLine>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_bytes: u64,
    /// The follow ended (the container stopped, or the engine went away): why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_are_checked() {
        for good in ["web", "my_app.1", "0f3c9a", "a-b"] {
            assert!(ContainerAction::validate_container(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a/b", "a b", "../etc", &"x".repeat(129)] {
            assert!(ContainerAction::validate_container(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_spec_is_checked_and_names_its_secrets() {
        let mut spec = ContainerSpec {
            image: "nebula-test/busybox:1".into(),
            env: [
                ("A".to_owned(), "secret:db".to_owned()),
                ("B".to_owned(), "plain".to_owned()),
                ("C".to_owned(), "secret:db".to_owned()),
            ]
            .into(),
            ports: vec!["8080:80".into(), "127.0.0.1:53:53/udp".into()],
            volumes: vec!["data:/data:ro".into()],
            restart_policy: Some("on-failure:3".into()),
            cpus: Some("1.5".into()),
            ..ContainerSpec::default()
        };
        assert_eq!(spec.validate(), Vec::<String>::new());
        assert_eq!(spec.secrets(), ["db"]);
        assert_eq!(
            parse_port("127.0.0.1:53:53/udp"),
            Some((Some("127.0.0.1".into()), 53, 53, "udp".into()))
        );
        spec.image = "a b".into();
        spec.env.insert("1X".into(), "v".into());
        spec.ports.push("80".into());
        spec.volumes.push("relative".into());
        spec.restart_policy = Some("sometimes".into());
        spec.cpus = Some("-1".into());
        assert_eq!(spec.validate().len(), 6, "{:?}", spec.validate());
        let revealed = RevealedSecrets {
            values: [("db".to_owned(), "hunter2".to_owned())].into(),
        };
        assert!(!format!("{revealed:?}").contains("hunter2"));
    }

    #[test]
    fn an_action_is_flat_in_its_request() {
        let requested = CommandRequested {
            node_id: "gpu-1".into(),
            action: ContainerAction::Stop {
                container: "web".into(),
                timeout_secs: 10,
            },
            expires_at: "2026-12-06T10:00:00Z".parse().unwrap(),
        };
        let value = serde_json::to_value(&requested).unwrap();
        assert_eq!(value["action"], "stop");
        assert_eq!(value["container"], "web");
        assert_eq!(value["timeout_secs"], 10);
        assert_eq!(
            serde_json::from_value::<CommandRequested>(value).unwrap(),
            requested
        );
    }
}
