//! The bench's own events: a generic job lifecycle (requested, started, progressed, completed),
//! four events an aggregate, used to load the log with many small aggregates. No product part
//! writes or reads them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use events::DomainEvent;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequested {
    /// What kind of work, e.g. `"render.txt2img"`.
    pub kind: String,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub params: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStarted {
    pub worker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgressed {
    pub value: u64,
    pub max: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCompleted {
    #[serde(default)]
    pub result: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailed {
    pub reason: String,
    pub retryable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCancelled {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum JobEvent {
    #[serde(rename = "job.requested")]
    Requested(JobRequested),
    #[serde(rename = "job.started")]
    Started(JobStarted),
    #[serde(rename = "job.progressed")]
    Progressed(JobProgressed),
    #[serde(rename = "job.completed")]
    Completed(JobCompleted),
    #[serde(rename = "job.failed")]
    Failed(JobFailed),
    #[serde(rename = "job.cancelled")]
    Cancelled(JobCancelled),
}

impl DomainEvent for JobEvent {
    const AGGREGATE_TYPE: &'static str = "job";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "job.requested",
        "job.started",
        "job.progressed",
        "job.completed",
        "job.failed",
        "job.cancelled",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            JobEvent::Requested(_) => "job.requested",
            JobEvent::Started(_) => "job.started",
            JobEvent::Progressed(_) => "job.progressed",
            JobEvent::Completed(_) => "job.completed",
            JobEvent::Failed(_) => "job.failed",
            JobEvent::Cancelled(_) => "job.cancelled",
        }
    }
}

/// The states a job moves through; `status` column of the jobs read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Requested,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Requested => "requested",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}
