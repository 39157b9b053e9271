//! A supervised service, as configured (an agent's `[[agent.services]]`, a render worker's
//! ComfyUI): what runs (a command started by the supervisor itself, a container on the node's
//! Docker, or a systemd unit), how its health is checked, and how it is restarted.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Its name on the log and in the API (a-z, 0-9, `-`, `_`).
    pub name: String,
    /// A program and its arguments the agent runs (in a process group of its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// A container on the node's Docker (started when it is not running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// A systemd unit (`systemctl start` when it is not active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// Environment set for a command (nothing of the agent's own environment is passed beyond
    /// the system's basics and `pass_env`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pass_env: Vec<String>,
    /// A command's stdout and stderr are appended to this file (discarded when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub restart: RestartConfig,
}

/// How health is told. Without `http` or `tcp` a service is healthy while it runs (the process
/// is alive, the container running, the unit active; a container's own Docker health check
/// counts when it has one).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// `GET` this URL: healthy on `expect_status` (any 2xx when unset).
    pub http: Option<String>,
    pub expect_status: Option<u16>,
    /// With `http`: the JSON answer's value at this pointer (`/status`) must equal
    /// `json_equals`.
    pub json_pointer: Option<String>,
    pub json_equals: Option<serde_json::Value>,
    /// Connect to `host:port`.
    pub tcp: Option<String>,
    pub interval_secs: f64,
    pub timeout_secs: f64,
    /// Failed checks in a row (once healthy) before it is restarted as hung.
    pub unhealthy_after: u32,
    /// How long a fresh start may take to pass its first check.
    pub startup_grace_secs: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            http: None,
            expect_status: None,
            json_pointer: None,
            json_equals: None,
            tcp: None,
            interval_secs: 5.0,
            timeout_secs: 3.0,
            unhealthy_after: 3,
            startup_grace_secs: 60.0,
        }
    }
}

/// When a service is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Whenever it is down or hung.
    Always,
    /// Unless it exited with status 0.
    OnFailure,
    /// Never: it is watched and reported only.
    Never,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartConfig {
    pub policy: RestartPolicy,
    pub backoff_initial_secs: f64,
    pub backoff_max_secs: f64,
    /// Restarts in a row without once becoming healthy before the supervisor gives up (0: never).
    pub give_up_after: u32,
    /// How long a stopped command may take to exit after SIGTERM before its group is killed.
    pub stop_grace_secs: f64,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::Always,
            backoff_initial_secs: 1.0,
            backoff_max_secs: 60.0,
            give_up_after: 5,
            stop_grace_secs: 10.0,
        }
    }
}

impl ServiceConfig {
    /// `command`, `container` or `systemd`.
    pub fn kind(&self) -> &'static str {
        if !self.command.is_empty() {
            "command"
        } else if self.container.is_some() {
            "container"
        } else {
            "systemd"
        }
    }

    /// Every problem, prefixed with the service's place (`services[0] (web): …`).
    pub fn validate(&self, index: usize) -> Vec<String> {
        let mut problems = Vec::new();
        let valid_name = (1..=64).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            problems.push("name must be 1-64 of a-z, 0-9, '-' and '_'".to_owned());
        }
        let kinds = usize::from(!self.command.is_empty())
            + usize::from(self.container.is_some())
            + usize::from(self.systemd_unit.is_some());
        if kinds != 1 {
            problems.push("set exactly one of command, container and systemd_unit".to_owned());
        }
        if self.log_file.is_some() && self.command.is_empty() {
            problems.push(
                "log_file is for a command (a container's or unit's output is theirs)".to_owned(),
            );
        }
        let health = &self.health;
        if let Some(url) = &health.http
            && !url.starts_with("http://")
            && !url.starts_with("https://")
        {
            problems.push(format!("health.http must be an http:// URL, got {url:?}"));
        }
        if let Some(addr) = &health.tcp
            && addr
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            problems.push(format!("health.tcp must be host:port, got {addr:?}"));
        }
        if health.json_pointer.is_some() != health.json_equals.is_some()
            || (health.json_pointer.is_some() && health.http.is_none())
        {
            problems.push(
                "health.json_pointer and health.json_equals go together, with health.http"
                    .to_owned(),
            );
        }
        for (field, value, min) in [
            ("health.interval_secs", health.interval_secs, 0.05),
            ("health.timeout_secs", health.timeout_secs, 0.05),
            ("health.startup_grace_secs", health.startup_grace_secs, 0.0),
            (
                "restart.backoff_initial_secs",
                self.restart.backoff_initial_secs,
                0.01,
            ),
            (
                "restart.backoff_max_secs",
                self.restart.backoff_max_secs,
                0.01,
            ),
            ("restart.stop_grace_secs", self.restart.stop_grace_secs, 0.0),
        ] {
            if !(value.is_finite() && value >= min && value <= 86_400.0) {
                problems.push(format!("{field} must be {min}..=86400, got {value}"));
            }
        }
        if health.unhealthy_after == 0 {
            problems.push("health.unhealthy_after must be at least 1".to_owned());
        }
        for name in &self.pass_env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                problems.push(format!("pass_env: {name:?} is not a variable name"));
            }
        }
        problems
            .into_iter()
            .map(|problem| format!("services[{index}] ({}): {problem}", self.name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(raw: &str) -> ServiceConfig {
        toml::from_str(raw).unwrap()
    }

    #[test]
    fn a_service_is_one_thing_with_sound_checks() {
        let ok = service(
            "name = \"ollama\"\ncommand = [\"ollama\", \"serve\"]\n[health]\nhttp = \"http://127.0.0.1:11434/api/tags\"\n",
        );
        assert!(ok.validate(0).is_empty(), "{:?}", ok.validate(0));
        assert_eq!(ok.kind(), "command");
        assert_eq!(ok.restart.policy, RestartPolicy::Always);
        let both = service(
            "name = \"x\"\ncommand = [\"a\"]\ncontainer = \"b\"\n[health]\ntcp = \"nowhere\"\njson_pointer = \"/a\"\n",
        );
        let problems = both.validate(2);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("services[2] (x): set exactly one"));
        let unit = service(
            "name = \"caddy\"\nsystemd_unit = \"caddy.service\"\n[restart]\npolicy = \"on_failure\"\n",
        );
        assert_eq!(unit.kind(), "systemd");
        assert!(unit.validate(0).is_empty());
    }
}
