//! Telemetry: periodic samples from node agents. Not event-sourced history — it lives in the
//! bounded TELEMETRY stream, never in EVENTS.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::NodeId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    pub index: u32,
    pub utilization_percent: Option<f32>,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub temperature_c: Option<f32>,
    pub power_watts: Option<f32>,
}

/// One heartbeat: the node is alive, and this is how it is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: NodeId,
    pub sampled_at: DateTime<Utc>,
    /// Monotonic per agent run; lets readers drop out-of-order samples.
    pub sample_seq: u64,
    pub cpu_percent: f32,
    pub load_avg_1m: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub gpus: Vec<GpuSample>,
    pub uptime_secs: u64,
}

impl Heartbeat {
    pub const KIND: &'static str = "heartbeat";
}
