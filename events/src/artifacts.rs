//! Artifact sweeps: garbage collection of the artifact store. A sweep is its own aggregate: a
//! dry run first (`planned`: the files no read model references and nobody has written for the
//! retention period, each with its size and age), then, on someone's word, each file deleted
//! (`collected`) or kept with the reason (`kept`: referenced or written since the plan), and the
//! totals (`finished`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::DomainEvent;

/// The most files one plan names (the oldest first); the next sweep finds the rest.
pub const MAX_CANDIDATES: usize = 1000;

/// A file a sweep would delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepCandidate {
    pub sha256: String,
    pub bytes: u64,
    /// Since it was last written (or stored again), when the plan was made.
    pub age_secs: u64,
}

/// The dry run: what a sweep would delete, and what it leaves and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepPlanned {
    pub planned_at: DateTime<Utc>,
    /// A file younger than this is left alone, referenced or not (an upload not yet used).
    pub retention_secs: u64,
    /// At most [`MAX_CANDIDATES`], oldest first.
    pub candidates: Vec<SweepCandidate>,
    /// Their bytes.
    pub candidate_bytes: u64,
    /// Unreferenced and old enough, but past [`MAX_CANDIDATES`] (left for the next sweep).
    pub more: u64,
    /// Files a read model references (a render job, a share, a video project or schedule).
    pub referenced: u64,
    /// Unreferenced files younger than the retention period.
    pub young: u64,
}

/// A candidate deleted: its content and every job's link to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactCollected {
    pub sha256: String,
    pub bytes: u64,
    /// Job output links (`jobs/<job>/<n>.<ext>`) removed with it.
    pub links: u32,
}

/// A candidate not deleted, and why (referenced since the plan, written since, already gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactKept {
    pub sha256: String,
    pub why: String,
}

/// Every candidate of the plan collected or kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepFinished {
    pub collected: u64,
    pub bytes: u64,
    pub kept: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ArtifactSweepEvent {
    #[serde(rename = "artifact_sweep.planned")]
    Planned(SweepPlanned),
    #[serde(rename = "artifact_sweep.collected")]
    Collected(ArtifactCollected),
    #[serde(rename = "artifact_sweep.kept")]
    Kept(ArtifactKept),
    #[serde(rename = "artifact_sweep.finished")]
    Finished(SweepFinished),
}

impl DomainEvent for ArtifactSweepEvent {
    const AGGREGATE_TYPE: &'static str = "artifact_sweep";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "artifact_sweep.planned",
        "artifact_sweep.collected",
        "artifact_sweep.kept",
        "artifact_sweep.finished",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            ArtifactSweepEvent::Planned(_) => "artifact_sweep.planned",
            ArtifactSweepEvent::Collected(_) => "artifact_sweep.collected",
            ArtifactSweepEvent::Kept(_) => "artifact_sweep.kept",
            ArtifactSweepEvent::Finished(_) => "artifact_sweep.finished",
        }
    }
}
