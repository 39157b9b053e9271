//! Services a node's agent supervises (a process it runs, a container, a systemd unit): every
//! change of state is recorded on the node's `node_services` aggregate (id = the node id), so
//! the log says when a service came up, stopped answering, was restarted, or was given up on.

use serde::{Deserialize, Serialize};

use crate::DomainEvent;

/// Where a supervised service stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Started (or found), not yet healthy.
    Starting,
    /// Its health check passes.
    Healthy,
    /// Its health check fails (it is restarted after a few failures in a row).
    Unhealthy,
    /// Not running (exited, killed, stopped); restarted per its policy.
    Down,
    /// Restarted too often without becoming healthy: left down until the agent restarts.
    GaveUp,
    /// The agent stopped it (shutting down).
    Stopped,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::Healthy => "healthy",
            ServiceState::Unhealthy => "unhealthy",
            ServiceState::Down => "down",
            ServiceState::GaveUp => "gave_up",
            ServiceState::Stopped => "stopped",
        }
    }
}

/// One change of a service's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStateChanged {
    pub service: String,
    /// `command`, `container` or `systemd`.
    pub kind: String,
    pub state: ServiceState,
    /// Restarts since the agent started supervising it.
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Why, in words (`exited: exit status: 3`, `GET /health answered 503`, …).
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum NodeServicesEvent {
    #[serde(rename = "service.state_changed")]
    StateChanged(ServiceStateChanged),
}

impl DomainEvent for NodeServicesEvent {
    const AGGREGATE_TYPE: &'static str = "node_services";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &["service.state_changed"];

    fn event_type(&self) -> &'static str {
        match self {
            NodeServicesEvent::StateChanged(_) => "service.state_changed",
        }
    }
}

/// The question kind the control plane asks a node's agent for its services' live state
/// (`nebula.query.<node>.services`).
pub const SERVICES_QUERY: &str = "services";

/// One supervised service as its agent sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub kind: String,
    pub state: ServiceState,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub reason: String,
    /// When it entered this state.
    pub since: chrono::DateTime<chrono::Utc>,
}
