//! Node lifecycle: what a machine is, and whether it is part of the fleet.

use serde::{Deserialize, Serialize};

use crate::DomainEvent;

/// A GPU as the node agent found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    /// `"nvidia"`, `"amd"`, or `"simulated"`.
    pub vendor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    pub memory_total_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
}

/// A node's hardware inventory, as detected at agent start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistered {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpu_cores: u32,
    pub memory_total_bytes: u64,
    pub disk_total_bytes: u64,
    pub gpus: Vec<GpuInfo>,
    /// How GPUs were found: `"nvml"`, `"nvidia-smi"`, `"rocm-smi"` or `"none"`.
    pub gpu_source: String,
    pub agent_version: String,
    /// Where the agent's own HTTP endpoints listen, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_url: Option<String>,
    /// What else the node takes on beyond its agent's own work (`ai-dev`: AI developer jobs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// The capability of a node whose agent takes AI developer jobs.
pub const AI_DEV: &str = "ai-dev";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDeregistered {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum NodeEvent {
    #[serde(rename = "node.registered")]
    Registered(NodeRegistered),
    #[serde(rename = "node.deregistered")]
    Deregistered(NodeDeregistered),
}

impl DomainEvent for NodeEvent {
    const AGGREGATE_TYPE: &'static str = "node";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &["node.registered", "node.deregistered"];

    fn event_type(&self) -> &'static str {
        match self {
            NodeEvent::Registered(_) => "node.registered",
            NodeEvent::Deregistered(_) => "node.deregistered",
        }
    }
}

/// A node's tags (`prod`, `gpu`, `lab`), set by an admin on the control plane (aggregate
/// `node_tags`, id = the node id; a node cannot set its own): what approval rules match on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum NodeTagsEvent {
    #[serde(rename = "node.tags_set")]
    Set { tags: Vec<String> },
}

impl DomainEvent for NodeTagsEvent {
    const AGGREGATE_TYPE: &'static str = "node_tags";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &["node.tags_set"];

    fn event_type(&self) -> &'static str {
        "node.tags_set"
    }
}

/// Whether these tags may be set: at most 16, each 1-32 of `[a-z0-9-]`, none twice.
pub fn validate_tags(tags: &[String]) -> Result<(), String> {
    if tags.len() > 16 {
        return Err("a node has at most 16 tags".to_owned());
    }
    for (index, tag) in tags.iter().enumerate() {
        let valid = (1..=32).contains(&tag.len())
            && tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(format!("tag {tag:?} must be 1-32 of a-z, 0-9 and '-'"));
        }
        if tags[..index].contains(tag) {
            return Err(format!("tag {tag:?} is given twice"));
        }
    }
    Ok(())
}
