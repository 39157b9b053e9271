//! Approvals: one `approval` aggregate (id: a v7 uuid) for everything that waits for people to
//! say yes — a deploy, a code change, a costly job. It names what it is about (`subject`: a kind
//! and an id), shows what would happen (`summary` and a `preview`: a diff, a deploy plan), and
//! carries the policy it is decided by (which role, how many approvals, until when). Each
//! decision is recorded with who made it; the outcome (granted, rejected, expired, withdrawn)
//! is an event of its own, which is what the waiting party follows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::access::Role;
use crate::{Actor, DomainEvent};

/// The most a preview may hold (a diff, a plan); a longer one is cut and says so.
pub const PREVIEW_MAX_BYTES: usize = 256 * 1024;

/// What an approval is about: `deploy` + a deploy run id, `code_change` + a change id, …
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalSubject {
    pub kind: String,
    pub id: String,
}

/// How a preview is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreviewFormat {
    Text,
    /// A unified diff.
    Diff,
    /// A plan as JSON text (the steps a deploy will take).
    Plan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    pub format: PreviewFormat,
    pub body: String,
    /// The body was cut at [`PREVIEW_MAX_BYTES`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl Preview {
    /// A preview of `body`, cut (at a character boundary) when it is too long.
    pub fn new(format: PreviewFormat, mut body: String) -> Preview {
        let truncated = body.len() > PREVIEW_MAX_BYTES;
        if truncated {
            let mut end = PREVIEW_MAX_BYTES;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
        }
        Preview {
            format,
            body,
            truncated,
        }
    }
}

/// What it takes to decide: who may, how many must approve, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalPolicy {
    /// The least role that may approve or reject.
    pub role: Role,
    /// Approvals needed (by distinct people); one rejection decides.
    pub approvals: u32,
    /// Undecided by then, it is expired.
    pub expires_at: DateTime<Utc>,
    /// Whether the one who asked may approve it too (false: four eyes).
    #[serde(default)]
    pub requester_may_approve: bool,
    /// The rule that asked for it (by name), for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequested {
    pub subject: ApprovalSubject,
    pub summary: String,
    pub preview: Preview,
    pub policy: ApprovalPolicy,
    /// Who asked (also the envelope's actor; kept here for the requester rule).
    pub requested_by: Actor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
}

/// One person's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionMade {
    pub decision: Decision,
    pub by: Actor,
    /// Their role when they decided.
    pub role: Role,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// How an approval ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Granted,
    Rejected,
    Expired,
    /// The one who asked no longer needs it (the deploy was cancelled, superseded).
    Withdrawn,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Granted => "granted",
            Outcome::Rejected => "rejected",
            Outcome::Expired => "expired",
            Outcome::Withdrawn => "withdrawn",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ApprovalEvent {
    #[serde(rename = "approval.requested")]
    Requested(ApprovalRequested),
    #[serde(rename = "approval.decided")]
    Decided(DecisionMade),
    /// The outcome; nothing is decided after it.
    #[serde(rename = "approval.closed")]
    Closed { outcome: Outcome, reason: String },
}

impl DomainEvent for ApprovalEvent {
    const AGGREGATE_TYPE: &'static str = "approval";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] =
        &["approval.requested", "approval.decided", "approval.closed"];

    fn event_type(&self) -> &'static str {
        match self {
            ApprovalEvent::Requested(_) => "approval.requested",
            ApprovalEvent::Decided(_) => "approval.decided",
            ApprovalEvent::Closed { .. } => "approval.closed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_preview_is_cut_at_a_character_boundary() {
        let body = "é".repeat(PREVIEW_MAX_BYTES); // two bytes each
        let preview = Preview::new(PreviewFormat::Diff, body);
        assert!(preview.truncated);
        assert!(preview.body.len() <= PREVIEW_MAX_BYTES);
        assert!(preview.body.chars().all(|c| c == 'é'));
        let short = Preview::new(PreviewFormat::Text, "ok".into());
        assert!(!short.truncated);
    }
}
