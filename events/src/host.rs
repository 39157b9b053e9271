//! Hosts reached over SSH: the registry (`host`, one aggregate per host name: where it is, who
//! logs in, which vault secret holds the key, which commands operators may run, the pinned host
//! key) and remote commands (`host_exec`, one aggregate per execution: asked, started, its
//! output in capped chunks, then completed with the exit status or failed with a distinct
//! reason). Metrics read over SSH are telemetry (`nebula.telemetry.<host>.host`), not events.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::DomainEvent;

/// Where a host is and how Nebula logs in. The key is never here: only the name of the vault
/// secret that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRegistered {
    pub address: String,
    pub port: u16,
    pub user: String,
    /// The vault secret holding the private key (OpenSSH format).
    pub key_secret: String,
    /// Commands operators may run (`*` matches any run of plain characters); admins may run
    /// any command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlist: Vec<String>,
}

/// A host key, as `ssh-keygen -lf` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, …
    pub algorithm: String,
    /// `SHA256:…`
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum HostEvent {
    #[serde(rename = "host.registered")]
    Registered(HostRegistered),
    /// The host is forgotten, its pinned key with it.
    #[serde(rename = "host.removed")]
    Removed {},
    /// The key this host must present from now on: the first one seen (trust on first use), or
    /// a new one an admin accepted.
    #[serde(rename = "host.key_pinned")]
    KeyPinned(HostKey),
    /// The host presented another key than the pinned one; nothing was sent to it.
    #[serde(rename = "host.key_mismatch")]
    KeyMismatch { pinned: HostKey, presented: HostKey },
}

impl DomainEvent for HostEvent {
    const AGGREGATE_TYPE: &'static str = "host";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "host.registered",
        "host.removed",
        "host.key_pinned",
        "host.key_mismatch",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            HostEvent::Registered(_) => "host.registered",
            HostEvent::Removed {} => "host.removed",
            HostEvent::KeyPinned(_) => "host.key_pinned",
            HostEvent::KeyMismatch { .. } => "host.key_mismatch",
        }
    }
}

/// Whether `name` may name a host: 1 to 64 of `[a-z0-9-]`, starting with a letter or digit (a
/// subject token, a URL segment and a file name alike).
pub fn validate_host_name(name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0] != b'-';
    if valid {
        Ok(())
    } else {
        Err(format!(
            "host name {name:?} must be 1-64 of a-z, 0-9 and '-', not starting with '-'"
        ))
    }
}

/// A remote command as asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequested {
    pub host: String,
    pub command: String,
    /// The remote command is killed after this long.
    pub timeout_secs: u32,
    /// Vault secrets the command reads on its standard input as `NAME=value` lines
    /// (variable name → secret name), in the manner of `docker run --env-file /dev/stdin`:
    /// resolved by the executor as it runs the command, never in the command, an event or a
    /// log line. Only the control plane's own services ask for them (the Deploy Center); the
    /// REST and CLI requests never carry any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_secrets: BTreeMap<String, String>,
}

/// Which of a command's streams a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Why a remote command did not run to its end. Each reason is its own, so a user (and a
/// test) can tell a wrong key from a host that is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecFailure {
    /// The host is not registered (or was removed).
    UnknownHost,
    /// The key could not be read from the vault (missing secret, no vault).
    KeyUnavailable,
    /// A secret the command reads on its input could not be read from the vault.
    SecretUnavailable,
    /// Nothing listens there (connection refused, no route, name not resolved).
    Unreachable,
    /// The connection or the login did not finish in time.
    ConnectTimeout,
    /// The host refused the key.
    AuthFailed,
    /// The host presented another key than the pinned one.
    HostKeyMismatch,
    /// The command ran past its timeout and was killed.
    CommandTimeout,
    /// The connection broke while the command ran.
    ConnectionLost,
    /// Nebula stopped while it ran; it is not run again.
    Interrupted,
}

impl ExecFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecFailure::UnknownHost => "unknown_host",
            ExecFailure::KeyUnavailable => "key_unavailable",
            ExecFailure::SecretUnavailable => "secret_unavailable",
            ExecFailure::Unreachable => "unreachable",
            ExecFailure::ConnectTimeout => "connect_timeout",
            ExecFailure::AuthFailed => "auth_failed",
            ExecFailure::HostKeyMismatch => "host_key_mismatch",
            ExecFailure::CommandTimeout => "command_timeout",
            ExecFailure::ConnectionLost => "connection_lost",
            ExecFailure::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for ExecFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum HostExecEvent {
    #[serde(rename = "host_exec.requested")]
    Requested(ExecRequested),
    /// The control plane took it; from here it runs at most once.
    #[serde(rename = "host_exec.started")]
    Started {},
    /// A piece of its output, in order (lossy UTF-8).
    #[serde(rename = "host_exec.output")]
    Output { stream: OutputStream, text: String },
    /// It ran to its end. `truncated`: output beyond the cap was not recorded.
    #[serde(rename = "host_exec.completed")]
    Completed {
        exit_status: u32,
        duration_ms: u64,
        output_bytes: u64,
        truncated: bool,
    },
    #[serde(rename = "host_exec.failed")]
    Failed {
        reason: ExecFailure,
        error: String,
        duration_ms: u64,
    },
}

impl DomainEvent for HostExecEvent {
    const AGGREGATE_TYPE: &'static str = "host_exec";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "host_exec.requested",
        "host_exec.started",
        "host_exec.output",
        "host_exec.completed",
        "host_exec.failed",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            HostExecEvent::Requested(_) => "host_exec.requested",
            HostExecEvent::Started {} => "host_exec.started",
            HostExecEvent::Output { .. } => "host_exec.output",
            HostExecEvent::Completed { .. } => "host_exec.completed",
            HostExecEvent::Failed { .. } => "host_exec.failed",
        }
    }
}

/// The telemetry kind of [`HostSample`].
pub const HOST_KIND: &str = "host";

/// One file system as `df -P` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskUsage {
    pub mount: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
}

/// A host's load, memory, disks and uptime read over SSH (`nebula.telemetry.<host>.host`), or
/// why they could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    pub host: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<HostMetrics>,
    /// The reason and the message, when the host could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<HostError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostError {
    pub reason: ExecFailure,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostMetrics {
    pub load_1m: f64,
    pub load_5m: f64,
    pub load_15m: f64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub uptime_secs: u64,
    pub disks: Vec<DiskUsage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_checked() {
        for good in ["nas", "pi-4", "0box"] {
            assert!(validate_host_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "Nas", "a.b", "a b", "a/b", &"x".repeat(65)] {
            assert!(validate_host_name(bad).is_err(), "{bad}");
        }
    }
}
