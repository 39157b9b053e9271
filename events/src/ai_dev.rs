//! The AI developer (`ai_dev_job`, one aggregate per job): an instruction for one of the
//! configured repositories, carried out by a local LLM on a branch of its own
//! (`ai-dev/<job>-<timestamp>`, in a worktree of its own) through tools, each step recorded;
//! the build verified; the change proposed as one commit, then auto-approved by a rule or
//! approved by a person (the approval engine), merged into its base, and revertible.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::DomainEvent;

/// Every branch the AI developer makes starts with this.
pub const BRANCH_PREFIX: &str = "ai-dev/";

/// Most of a step's text (what the model said, a tool's arguments or result) kept on the log.
pub const STEP_TEXT_MAX_BYTES: usize = 4 * 1024;

/// Most of a build's output kept on the log (its tail).
pub const BUILD_OUTPUT_MAX_BYTES: usize = 16 * 1024;

/// Most of a change's diff kept on its event (the branch has all of it).
pub const DIFF_MAX_BYTES: usize = 64 * 1024;

/// `text` cut to at most `max` bytes (on a character boundary), saying how much was left out.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

/// The tail of `text`: at most `max` bytes of its end.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("({} bytes before) …{}", start, &text[start..])
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequested {
    /// A configured repository's name.
    pub repo: String,
    pub instruction: String,
    /// The branch the change is made from and merged into.
    pub base: String,
    /// The model asked for (else the repository's, else the tier's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStarted {
    pub branch: String,
    /// The commit of `base` the branch starts from.
    pub base_commit: String,
    pub provider: String,
    pub model: String,
    /// Which rule chose the model (asked for, the repository's, a VRAM tier, the default).
    pub model_rule: String,
    /// Whether the model is driven through tool calls or through JSON answers (a model without
    /// tools).
    pub tool_mode: String,
    /// The model's context, in tokens.
    pub context_tokens: u64,
    /// Where it runs (`local`: the control plane).
    pub runs_on: String,
}

/// One turn of the agent loop: what the model said or asked for, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStep {
    /// 1, 2, 3, … per job.
    pub n: u32,
    /// What the model said (bounded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub said: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The call's arguments as JSON text (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// What the tool gave back (bounded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub result: String,
    /// The call was refused (a path outside the worktree, a secret file, the deny list).
    #[serde(default)]
    pub refused: bool,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

/// A build verification: the detected toolchain's build then tests, in the worktree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildChecked {
    /// `cargo`, `npm`, `go`, `python`, or `none` (nothing detected).
    pub toolchain: String,
    pub commands: Vec<String>,
    pub ok: bool,
    /// The failing command's exit status (`None`: killed at its timeout, or did not start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    pub duration_ms: u64,
    /// The output's tail (both streams).
    pub output: String,
    /// The tests that failed, where the output names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing_tests: Vec<String>,
}

/// The change, committed on the job's branch after a green build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeProposed {
    pub commit: String,
    pub summary: String,
    pub files: Vec<String>,
    pub lines_added: u32,
    pub lines_removed: u32,
    /// The unified diff against the base commit (bounded: [`DIFF_MAX_BYTES`]).
    pub diff: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AiDevEvent {
    #[serde(rename = "ai_dev.requested")]
    Requested(JobRequested),
    /// Offered to a node whose agent takes AI developer jobs, through its work queue; taken by
    /// it, or run here when it has not taken it by `until`.
    #[serde(rename = "ai_dev.offered")]
    Offered { node: String, until: DateTime<Utc> },
    /// Who carries the job out (`local`: the control plane), once; and why here, when a node it
    /// was offered to did not take it in time.
    #[serde(rename = "ai_dev.claimed")]
    Claimed {
        runs_on: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback: Option<String>,
    },
    #[serde(rename = "ai_dev.started")]
    Started(JobStarted),
    #[serde(rename = "ai_dev.step")]
    Step(AgentStep),
    #[serde(rename = "ai_dev.build_checked")]
    BuildChecked(BuildChecked),
    /// Older turns summarised so the conversation fits the model's context (the instruction,
    /// the plan and the last turns kept verbatim).
    #[serde(rename = "ai_dev.context_compressed")]
    ContextCompressed {
        turns_summarised: u32,
        tokens_before: u64,
        tokens_after: u64,
    },
    #[serde(rename = "ai_dev.change_proposed")]
    ChangeProposed(ChangeProposed),
    /// How the change is approved: by the rule named, or (none fired, `reason` says why) by
    /// people.
    #[serde(rename = "ai_dev.decided")]
    Decided {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auto_rule: Option<String>,
        reason: String,
    },
    #[serde(rename = "ai_dev.approval_asked")]
    ApprovalAsked { approval_id: String },
    /// People approved the change (the approval granted): the runner merges it.
    #[serde(rename = "ai_dev.approved")]
    Approved { approval_id: String },
    /// The change is in its base branch.
    #[serde(rename = "ai_dev.merged")]
    Merged { commit: String, fast_forward: bool },
    /// The change was refused; its branch is kept for inspection unless deleted.
    #[serde(rename = "ai_dev.rejected")]
    Rejected {
        reason: String,
        branch_deleted: bool,
    },
    /// Someone asked for a merged change to be reverted.
    #[serde(rename = "ai_dev.rollback_requested")]
    RollbackRequested {},
    /// The revert could not be made (a conflict with later commits, the repository away).
    #[serde(rename = "ai_dev.rollback_failed")]
    RollbackFailed { error: String },
    /// A merged change reverted on its base branch.
    #[serde(rename = "ai_dev.rolled_back")]
    RolledBack { revert_commit: String },
    #[serde(rename = "ai_dev.failed")]
    Failed { reason: String, error: String },
    #[serde(rename = "ai_dev.cancel_requested")]
    CancelRequested {},
    #[serde(rename = "ai_dev.cancelled")]
    Cancelled {},
}

impl DomainEvent for AiDevEvent {
    const AGGREGATE_TYPE: &'static str = "ai_dev_job";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "ai_dev.requested",
        "ai_dev.offered",
        "ai_dev.claimed",
        "ai_dev.started",
        "ai_dev.step",
        "ai_dev.build_checked",
        "ai_dev.context_compressed",
        "ai_dev.change_proposed",
        "ai_dev.decided",
        "ai_dev.approval_asked",
        "ai_dev.approved",
        "ai_dev.merged",
        "ai_dev.rejected",
        "ai_dev.rollback_requested",
        "ai_dev.rollback_failed",
        "ai_dev.rolled_back",
        "ai_dev.failed",
        "ai_dev.cancel_requested",
        "ai_dev.cancelled",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            AiDevEvent::Requested(_) => "ai_dev.requested",
            AiDevEvent::Offered { .. } => "ai_dev.offered",
            AiDevEvent::Claimed { .. } => "ai_dev.claimed",
            AiDevEvent::Started(_) => "ai_dev.started",
            AiDevEvent::Step(_) => "ai_dev.step",
            AiDevEvent::BuildChecked(_) => "ai_dev.build_checked",
            AiDevEvent::ContextCompressed { .. } => "ai_dev.context_compressed",
            AiDevEvent::ChangeProposed(_) => "ai_dev.change_proposed",
            AiDevEvent::Decided { .. } => "ai_dev.decided",
            AiDevEvent::ApprovalAsked { .. } => "ai_dev.approval_asked",
            AiDevEvent::Approved { .. } => "ai_dev.approved",
            AiDevEvent::Merged { .. } => "ai_dev.merged",
            AiDevEvent::Rejected { .. } => "ai_dev.rejected",
            AiDevEvent::RollbackRequested {} => "ai_dev.rollback_requested",
            AiDevEvent::RollbackFailed { .. } => "ai_dev.rollback_failed",
            AiDevEvent::RolledBack { .. } => "ai_dev.rolled_back",
            AiDevEvent::Failed { .. } => "ai_dev.failed",
            AiDevEvent::CancelRequested {} => "ai_dev.cancel_requested",
            AiDevEvent::Cancelled {} => "ai_dev.cancelled",
        }
    }
}
