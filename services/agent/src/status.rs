//! The agent's live status, shared between its loop and its HTTP endpoints.

use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use events::NodeId;
use events::node::NodeRegistered;
use events::telemetry::Heartbeat;
use serde_json::{Value, json};

#[derive(Default)]
struct State {
    inventory: Option<NodeRegistered>,
    registered: bool,
    last_heartbeat: Option<Heartbeat>,
    heartbeats_sent: u64,
    errors: u64,
    last_error: Option<(DateTime<Utc>, String)>,
}

#[derive(Clone)]
pub struct AgentStatus {
    node_id: NodeId,
    started_at: DateTime<Utc>,
    state: Arc<Mutex<State>>,
    supervised: crate::supervisor::Services,
}

impl AgentStatus {
    pub(crate) fn new(node_id: NodeId, supervised: crate::supervisor::Services) -> Self {
        Self {
            node_id,
            started_at: Utc::now(),
            state: Arc::default(),
            supervised,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn set_inventory(&self, inventory: NodeRegistered) {
        self.with(|s| s.inventory = Some(inventory));
    }

    pub(crate) fn set_registered(&self, registered: bool) {
        self.with(|s| s.registered = registered);
    }

    pub(crate) fn record_heartbeat(&self, heartbeat: Heartbeat) {
        self.with(|s| {
            s.heartbeats_sent += 1;
            s.last_heartbeat = Some(heartbeat);
        });
    }

    pub(crate) fn record_error(&self, error: String) {
        self.with(|s| {
            s.errors += 1;
            s.last_error = Some((Utc::now(), error));
        });
    }

    /// Healthy once registered and heartbeating.
    pub fn health(&self) -> (bool, Value) {
        self.with(|s| {
            let healthy = s.registered && s.last_heartbeat.is_some();
            let body = json!({
                "status": if healthy { "ok" } else { "starting" },
                "node_id": self.node_id,
                "registered": s.registered,
                "started_at": self.started_at,
                "last_heartbeat_at": s.last_heartbeat.as_ref().map(|h| h.sampled_at),
                "heartbeats_sent": s.heartbeats_sent,
                "last_error": s.last_error.as_ref().map(|(at, e)| json!({ "at": at, "error": e })),
            });
            (healthy, body)
        })
    }

    pub fn metrics(&self) -> String {
        self.with(|s| {
            let mut out = String::new();
            let node = self.node_id.as_str();
            let _ = writeln!(out, "# TYPE nebula_agent_heartbeats_sent_total counter");
            let _ = writeln!(out, "nebula_agent_heartbeats_sent_total{{node=\"{node}\"}} {}", s.heartbeats_sent);
            let _ = writeln!(out, "# TYPE nebula_agent_errors_total counter");
            let _ = writeln!(out, "nebula_agent_errors_total{{node=\"{node}\"}} {}", s.errors);
            let _ = writeln!(out, "# TYPE nebula_agent_registered gauge");
            let _ = writeln!(out, "nebula_agent_registered{{node=\"{node}\"}} {}", u8::from(s.registered));
            if let Some(h) = &s.last_heartbeat {
                let _ = writeln!(out, "# TYPE nebula_node_cpu_percent gauge");
                let _ = writeln!(out, "nebula_node_cpu_percent{{node=\"{node}\"}} {}", h.cpu_percent);
                let _ = writeln!(out, "# TYPE nebula_node_memory_used_bytes gauge");
                let _ = writeln!(out, "nebula_node_memory_used_bytes{{node=\"{node}\"}} {}", h.memory_used_bytes);
                let _ = writeln!(out, "# TYPE nebula_node_disk_used_bytes gauge");
                let _ = writeln!(out, "nebula_node_disk_used_bytes{{node=\"{node}\"}} {}", h.disk_used_bytes);
                if !h.gpus.is_empty() {
                    let _ = writeln!(out, "# TYPE nebula_gpu_memory_used_bytes gauge");
                    for gpu in &h.gpus {
                        let _ = writeln!(out, "nebula_gpu_memory_used_bytes{{node=\"{node}\",gpu=\"{}\"}} {}", gpu.index, gpu.memory_used_bytes);
                    }
                    let _ = writeln!(out, "# TYPE nebula_gpu_utilization_percent gauge");
                    for gpu in &h.gpus {
                        if let Some(util) = gpu.utilization_percent {
                            let _ = writeln!(out, "nebula_gpu_utilization_percent{{node=\"{node}\",gpu=\"{}\"}} {util}", gpu.index);
                        }
                    }
                }
            }
            out
        })
    }

    /// The agent itself and the services it supervises, as they stand now.
    pub fn services(&self) -> Value {
        let supervised = self.supervised.all();
        self.with(|s| {
            let mut services = vec![json!({
                "name": "agent",
                "kind": "agent",
                "state": if s.registered { "healthy" } else { "starting" },
                "since": self.started_at,
                "version": env!("CARGO_PKG_VERSION"),
            })];
            services.extend(supervised.iter().map(|service| json!(service)));
            json!({ "node_id": self.node_id, "services": services })
        })
    }

    /// Detected GPUs with their latest sample.
    pub fn gpu(&self) -> Value {
        self.with(|s| {
            let inventory = s.inventory.as_ref();
            json!({
                "node_id": self.node_id,
                "source": inventory.map(|i| i.gpu_source.as_str()),
                "gpus": inventory.map(|i| i.gpus.clone()).unwrap_or_default(),
                "samples": s.last_heartbeat.as_ref().map(|h| h.gpus.clone()).unwrap_or_default(),
            })
        })
    }
}
