//! An AI developer job and its life: requested, running (steps, builds), a change proposed,
//! decided (a rule, or people through an approval), merged or rejected, perhaps rolled back;
//! or failed, or cancelled. And the auto-approval rules: data, decided by a pure function.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::ai_dev::{
    AgentStep, AiDevEvent, BuildChecked, ChangeProposed, JobRequested, JobStarted,
};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Requested,
    Running,
    /// A change is committed on the branch, not decided yet.
    Proposed,
    AwaitingApproval,
    /// People approved the change; its runner merges it.
    Approved,
    Merged,
    Rejected,
    RolledBack,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Requested => "requested",
            JobStatus::Running => "running",
            JobStatus::Proposed => "proposed",
            JobStatus::AwaitingApproval => "awaiting_approval",
            JobStatus::Approved => "approved",
            JobStatus::Merged => "merged",
            JobStatus::Rejected => "rejected",
            JobStatus::RolledBack => "rolled_back",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Nothing more happens to the job (a merged one may still be rolled back).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Merged
                | JobStatus::Rejected
                | JobStatus::RolledBack
                | JobStatus::Failed
                | JobStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AiDevCommand {
    Request(JobRequested),
    /// Offered to a node's agent until `until`.
    Offer {
        node: String,
        until: chrono::DateTime<chrono::Utc>,
    },
    /// Taken by whoever carries it out (once).
    Claim {
        runs_on: String,
        fallback: Option<String>,
    },
    Start(JobStarted),
    RecordStep(AgentStep),
    RecordBuild(BuildChecked),
    RecordCompression {
        turns_summarised: u32,
        tokens_before: u64,
        tokens_after: u64,
    },
    Propose(ChangeProposed),
    Decide {
        auto_rule: Option<String>,
        reason: String,
    },
    AskApproval {
        approval_id: String,
    },
    Approve {
        approval_id: String,
    },
    Merge {
        commit: String,
        fast_forward: bool,
    },
    Reject {
        reason: String,
        branch_deleted: bool,
    },
    RequestRollback,
    FailRollback {
        error: String,
    },
    RollBack {
        revert_commit: String,
    },
    Fail {
        reason: String,
        error: String,
    },
    RequestCancel,
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AiDevError {
    #[error("no such job")]
    NotFound,
    #[error("this job was already requested")]
    AlreadyRequested,
    #[error("the job is {0} and cannot {1}")]
    InvalidTransition(String, String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct AiDevJob {
    pub requested: Option<JobRequested>,
    pub started: Option<JobStarted>,
    pub status: Option<JobStatus>,
    pub steps: u32,
    pub proposed: Option<ChangeProposed>,
    pub approval_id: Option<String>,
    pub merged_commit: Option<String>,
    pub cancel_requested: bool,
    pub rollback_requested: bool,
    /// The node it was offered to, if any, and until when.
    pub offered_to: Option<String>,
    pub offered_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Who carries it out (`local`: the control plane), once claimed.
    pub runs_on: Option<String>,
    /// A repository rule approved the change.
    pub auto_approved: bool,
}

impl AiDevCommand {
    fn verb(&self) -> &'static str {
        match self {
            AiDevCommand::Request(_) => "request",
            AiDevCommand::Offer { .. } => "offer",
            AiDevCommand::Claim { .. } => "claim",
            AiDevCommand::Start(_) => "start",
            AiDevCommand::RecordStep(_) => "record a step of",
            AiDevCommand::RecordBuild(_) => "record a build of",
            AiDevCommand::RecordCompression { .. } => "compress",
            AiDevCommand::Propose(_) => "propose a change for",
            AiDevCommand::Decide { .. } => "decide",
            AiDevCommand::AskApproval { .. } => "ask an approval for",
            AiDevCommand::Approve { .. } => "approve",
            AiDevCommand::Merge { .. } => "merge",
            AiDevCommand::Reject { .. } => "reject",
            AiDevCommand::RequestRollback => "ask to roll back",
            AiDevCommand::FailRollback { .. } => "fail the rollback of",
            AiDevCommand::RollBack { .. } => "roll back",
            AiDevCommand::Fail { .. } => "fail",
            AiDevCommand::RequestCancel => "ask to cancel",
            AiDevCommand::Cancel => "cancel",
        }
    }
}

/// What a node may do to a job through the control plane's relay: take one offered to it, then
/// carry out the job it took (its steps, builds, change, the merge once approved, the revert);
/// never request, decide, approve or reject one.
pub fn job_node_may(
    state: &AiDevJob,
    node_id: &str,
    _job_id: &str,
    command: &AiDevCommand,
) -> Result<(), String> {
    let runs_here = state.runs_on.as_deref() == Some(node_id);
    let allowed = match command {
        AiDevCommand::Claim { runs_on, .. } => {
            runs_on == node_id && state.offered_to.as_deref() == Some(node_id)
        }
        AiDevCommand::Start(started) => runs_here && started.runs_on == node_id,
        AiDevCommand::RecordStep(_)
        | AiDevCommand::RecordBuild(_)
        | AiDevCommand::RecordCompression { .. }
        | AiDevCommand::Propose(_)
        | AiDevCommand::Merge { .. }
        | AiDevCommand::FailRollback { .. }
        | AiDevCommand::RollBack { .. }
        | AiDevCommand::Fail { .. }
        | AiDevCommand::Cancel => runs_here,
        AiDevCommand::Request(_)
        | AiDevCommand::Offer { .. }
        | AiDevCommand::Decide { .. }
        | AiDevCommand::AskApproval { .. }
        | AiDevCommand::Approve { .. }
        | AiDevCommand::Reject { .. }
        | AiDevCommand::RequestRollback
        | AiDevCommand::RequestCancel => {
            return Err(format!("a node may not {} a job", command.verb()));
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "node {node_id} may not {} a job it does not carry out",
            command.verb()
        ))
    }
}

impl AiDevJob {
    fn require(&self, allowed: &[JobStatus], action: &str) -> Result<(), AiDevError> {
        match self.status {
            None => Err(AiDevError::NotFound),
            Some(status) if allowed.contains(&status) => Ok(()),
            Some(status) => Err(AiDevError::InvalidTransition(
                status.as_str().to_owned(),
                action.to_owned(),
            )),
        }
    }
}

/// Whether `name` can be a branch name here (and in a ref path): `[A-Za-z0-9._/-]`, no `..`,
/// not starting with `-` or `/`.
pub fn valid_branch(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && !name.starts_with(['-', '/'])
        && !name.ends_with(['/', '.'])
        && !name.contains("..")
        && !name.contains("//")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
}

/// Every problem of a job request at once.
pub fn validate_request(request: &JobRequested) -> Vec<String> {
    let mut problems = Vec::new();
    let repo_ok = (1..=64).contains(&request.repo.len())
        && request
            .repo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !repo_ok {
        problems.push(format!("repo {:?} is not a repository name", request.repo));
    }
    if request.instruction.trim().is_empty() || request.instruction.len() > 16 * 1024 {
        problems.push("instruction must be 1-16384 bytes".to_owned());
    }
    if !valid_branch(&request.base) {
        problems.push(format!("base {:?} is not a branch name", request.base));
    }
    if let Some(model) = &request.model {
        let ok = (1..=128).contains(&model.len())
            && model.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-' | b':')
            });
        if !ok {
            problems.push(format!("model {model:?} is not a model name"));
        }
    }
    problems
}

impl Aggregate for AiDevJob {
    const TYPE: &'static str = "ai_dev_job";
    type Command = AiDevCommand;
    type Event = Event<AiDevEvent>;
    type Error = AiDevError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AiDevCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AiDevError> {
        use JobStatus::*;
        let event = match command {
            AiDevCommand::Request(request) => {
                if self.status.is_some() {
                    return Err(AiDevError::AlreadyRequested);
                }
                let problems = validate_request(&request);
                if !problems.is_empty() {
                    return Err(AiDevError::Invalid(problems.join("; ")));
                }
                AiDevEvent::Requested(request)
            }
            AiDevCommand::Offer { node, until } => {
                self.require(&[Requested], "be offered")?;
                if self.offered_to.is_some() || self.runs_on.is_some() {
                    return Err(AiDevError::Invalid(
                        "it was offered or taken already".to_owned(),
                    ));
                }
                AiDevEvent::Offered { node, until }
            }
            AiDevCommand::Claim { runs_on, fallback } => {
                self.require(&[Requested], "be taken")?;
                if let Some(taker) = &self.runs_on {
                    return Err(AiDevError::Invalid(format!("{taker} took it already")));
                }
                if runs_on != "local" && self.offered_to.as_deref() != Some(runs_on.as_str()) {
                    return Err(AiDevError::Invalid(format!(
                        "it was not offered to {runs_on}"
                    )));
                }
                AiDevEvent::Claimed { runs_on, fallback }
            }
            AiDevCommand::Start(started) => {
                self.require(&[Requested], "start")?;
                if let Some(taker) = &self.runs_on
                    && *taker != started.runs_on
                {
                    return Err(AiDevError::Invalid(format!(
                        "{taker} took it, not {}",
                        started.runs_on
                    )));
                }
                AiDevEvent::Started(started)
            }
            AiDevCommand::RecordStep(step) => {
                self.require(&[Running], "record a step")?;
                AiDevEvent::Step(step)
            }
            AiDevCommand::RecordBuild(build) => {
                self.require(&[Running], "record a build")?;
                AiDevEvent::BuildChecked(build)
            }
            AiDevCommand::RecordCompression {
                turns_summarised,
                tokens_before,
                tokens_after,
            } => {
                self.require(&[Running], "compress its context")?;
                AiDevEvent::ContextCompressed {
                    turns_summarised,
                    tokens_before,
                    tokens_after,
                }
            }
            AiDevCommand::Propose(change) => {
                self.require(&[Running], "propose a change")?;
                AiDevEvent::ChangeProposed(change)
            }
            AiDevCommand::Decide { auto_rule, reason } => {
                self.require(&[Proposed], "be decided")?;
                AiDevEvent::Decided { auto_rule, reason }
            }
            AiDevCommand::AskApproval { approval_id } => {
                self.require(&[Proposed], "ask for approval")?;
                AiDevEvent::ApprovalAsked { approval_id }
            }
            AiDevCommand::Approve { approval_id } => {
                self.require(&[AwaitingApproval], "be approved")?;
                if self.approval_id.as_deref() != Some(approval_id.as_str()) {
                    return Err(AiDevError::Invalid(format!(
                        "approval {approval_id} is not the one it waits for"
                    )));
                }
                AiDevEvent::Approved { approval_id }
            }
            AiDevCommand::Merge {
                commit,
                fast_forward,
            } => {
                // The base changes only after a rule or people approved.
                if !(self.status == Some(Proposed) && self.auto_approved) {
                    self.require(&[Approved], "be merged without an approval")?;
                }
                AiDevEvent::Merged {
                    commit,
                    fast_forward,
                }
            }
            AiDevCommand::Reject {
                reason,
                branch_deleted,
            } => {
                self.require(&[Proposed, AwaitingApproval], "be rejected")?;
                AiDevEvent::Rejected {
                    reason,
                    branch_deleted,
                }
            }
            AiDevCommand::RequestRollback => {
                self.require(&[Merged], "be rolled back")?;
                if self.rollback_requested {
                    return Err(AiDevError::Invalid(
                        "its rollback was already asked for".to_owned(),
                    ));
                }
                AiDevEvent::RollbackRequested {}
            }
            AiDevCommand::FailRollback { error } => {
                self.require(&[Merged], "fail its rollback")?;
                AiDevEvent::RollbackFailed { error }
            }
            AiDevCommand::RollBack { revert_commit } => {
                self.require(&[Merged], "be rolled back")?;
                AiDevEvent::RolledBack { revert_commit }
            }
            AiDevCommand::Fail { reason, error } => {
                self.require(
                    &[Requested, Running, Proposed, AwaitingApproval, Approved],
                    "fail",
                )?;
                AiDevEvent::Failed { reason, error }
            }
            AiDevCommand::RequestCancel => {
                self.require(
                    &[Requested, Running, Proposed, AwaitingApproval, Approved],
                    "be cancelled",
                )?;
                if self.cancel_requested {
                    return Err(AiDevError::Invalid(
                        "its cancellation was already asked for".to_owned(),
                    ));
                }
                AiDevEvent::CancelRequested {}
            }
            AiDevCommand::Cancel => {
                self.require(
                    &[Requested, Running, Proposed, AwaitingApproval, Approved],
                    "be cancelled",
                )?;
                AiDevEvent::Cancelled {}
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<AiDevEvent>) {
        match event.0 {
            AiDevEvent::Requested(request) => {
                self.requested = Some(request);
                self.status = Some(JobStatus::Requested);
            }
            AiDevEvent::Offered { node, until } => {
                self.offered_to = Some(node);
                self.offered_until = Some(until);
            }
            AiDevEvent::Claimed { runs_on, .. } => self.runs_on = Some(runs_on),
            AiDevEvent::Started(started) => {
                self.runs_on = Some(started.runs_on.clone());
                self.started = Some(started);
                self.status = Some(JobStatus::Running);
            }
            AiDevEvent::Step(step) => self.steps = step.n,
            AiDevEvent::BuildChecked(_) | AiDevEvent::ContextCompressed { .. } => {}
            AiDevEvent::ChangeProposed(change) => {
                self.proposed = Some(change);
                self.status = Some(JobStatus::Proposed);
            }
            AiDevEvent::Decided { auto_rule, .. } => self.auto_approved = auto_rule.is_some(),
            AiDevEvent::ApprovalAsked { approval_id } => {
                self.approval_id = Some(approval_id);
                self.status = Some(JobStatus::AwaitingApproval);
            }
            AiDevEvent::Approved { .. } => self.status = Some(JobStatus::Approved),
            AiDevEvent::Merged { commit, .. } => {
                self.merged_commit = Some(commit);
                self.status = Some(JobStatus::Merged);
            }
            AiDevEvent::Rejected { .. } => self.status = Some(JobStatus::Rejected),
            AiDevEvent::RollbackRequested {} => self.rollback_requested = true,
            AiDevEvent::RollbackFailed { .. } => self.rollback_requested = false,
            AiDevEvent::RolledBack { .. } => {
                self.rollback_requested = false;
                self.status = Some(JobStatus::RolledBack);
            }
            AiDevEvent::Failed { .. } => self.status = Some(JobStatus::Failed),
            AiDevEvent::CancelRequested {} => self.cancel_requested = true,
            AiDevEvent::Cancelled {} => self.status = Some(JobStatus::Cancelled),
        }
    }
}

/// Which changes merge without a person, per repository; each rule switched on by itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoApprove {
    /// Only Markdown files and files under `docs/`.
    pub docs_only: bool,
    /// Only test files (`tests/`, `test/`, `*_test.go`, `test_*.py`, `*.test.js`, …).
    pub test_only: bool,
    /// At most this many lines and files, with a green build, touching nothing protected.
    pub small_change: Option<SmallChange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmallChange {
    pub max_lines: u32,
    pub max_files: u32,
}

/// What a rule looks at.
#[derive(Debug, Clone)]
pub struct ChangeFacts {
    pub files: Vec<String>,
    /// Lines added plus lines removed.
    pub lines: u32,
    pub build_green: bool,
    /// The files the repository's deny list matches.
    pub denied: Vec<String>,
}

/// The rule that approves a change, or why none did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoDecision {
    pub rule: Option<&'static str>,
    pub reason: String,
}

fn is_doc(path: &str) -> bool {
    path.ends_with(".md") || path.starts_with("docs/")
}

/// A test file by the usual conventions of Rust, Go, Python and JavaScript.
pub fn is_test(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path.starts_with("tests/")
        || path.starts_with("test/")
        || path.contains("/tests/")
        || path.contains("/test/")
        || path.contains("__tests__/")
        || name.ends_with("_test.go")
        || (name.starts_with("test_") && name.ends_with(".py"))
        || name.ends_with("_test.py")
        || [".test.js", ".spec.js", ".test.ts", ".spec.ts", ".test.mjs"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

/// Paths no small change may touch, whatever its size: CI, deployment, database migrations.
pub fn is_protected(path: &str) -> bool {
    path.starts_with(".ci/")
        || path.starts_with("deploy/")
        || path.starts_with("migrations/")
        || path.contains("/migrations/")
        || path.contains("/deploy/")
}

/// The first rule on (docs only, tests only, small change) that approves the change, or why
/// none did. A change with a denied file or a red build is never approved here.
pub fn auto_decide(rules: &AutoApprove, change: &ChangeFacts) -> AutoDecision {
    let none = |reason: String| AutoDecision { rule: None, reason };
    if change.files.is_empty() {
        return none("the change is empty".to_owned());
    }
    if !change.denied.is_empty() {
        return none(format!(
            "it touches denied paths: {}",
            change.denied.join(", ")
        ));
    }
    if !change.build_green {
        return none("its build is not green".to_owned());
    }
    let mut why = Vec::new();
    if rules.docs_only {
        if change.files.iter().all(|f| is_doc(f)) {
            return AutoDecision {
                rule: Some("docs_only"),
                reason: format!("only documentation ({} files)", change.files.len()),
            };
        }
        why.push("docs_only: it changes more than documentation".to_owned());
    }
    if rules.test_only {
        if change.files.iter().all(|f| is_test(f)) {
            return AutoDecision {
                rule: Some("test_only"),
                reason: format!("only tests ({} files)", change.files.len()),
            };
        }
        why.push("test_only: it changes more than tests".to_owned());
    }
    if let Some(small) = rules.small_change {
        let protected: Vec<&String> = change.files.iter().filter(|f| is_protected(f)).collect();
        let files = u32::try_from(change.files.len()).unwrap_or(u32::MAX);
        if !protected.is_empty() {
            why.push(format!(
                "small_change: it touches protected paths ({})",
                protected
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        } else if change.lines > small.max_lines || files > small.max_files {
            why.push(format!(
                "small_change: {} lines in {files} files is over {} lines or {} files",
                change.lines, small.max_lines, small.max_files
            ));
        } else {
            return AutoDecision {
                rule: Some("small_change"),
                reason: format!(
                    "{} lines in {files} files, build green (limits {} lines, {} files)",
                    change.lines, small.max_lines, small.max_files
                ),
            };
        }
    }
    if why.is_empty() {
        return none("no auto-approval rule is on for this repository".to_owned());
    }
    none(why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn facts(files: &[&str], lines: u32) -> ChangeFacts {
        ChangeFacts {
            files: files.iter().map(|f| (*f).to_owned()).collect(),
            lines,
            build_green: true,
            denied: Vec::new(),
        }
    }

    fn all_on() -> AutoApprove {
        AutoApprove {
            docs_only: true,
            test_only: true,
            small_change: Some(SmallChange {
                max_lines: 20,
                max_files: 2,
            }),
        }
    }

    #[test]
    fn each_rule_names_itself_or_says_why_not() {
        assert_eq!(
            auto_decide(&all_on(), &facts(&["README.md", "docs/a.txt"], 400)).rule,
            Some("docs_only")
        );
        assert_eq!(
            auto_decide(&all_on(), &facts(&["tests/it.rs", "pkg/x_test.go"], 400)).rule,
            Some("test_only")
        );
        assert_eq!(
            auto_decide(&all_on(), &facts(&["src/lib.rs"], 3)).rule,
            Some("small_change")
        );
        let protected = auto_decide(&all_on(), &facts(&["deploy/prod.toml"], 1));
        assert_eq!(protected.rule, None);
        assert!(
            protected
                .reason
                .contains("protected paths (deploy/prod.toml)")
        );
        let off = auto_decide(&AutoApprove::default(), &facts(&["README.md"], 1));
        assert_eq!(
            off.reason,
            "no auto-approval rule is on for this repository"
        );
        let big = auto_decide(&all_on(), &facts(&["src/a.rs", "src/b.rs", "src/c.rs"], 3));
        assert!(big.reason.contains("3 files is over"), "{}", big.reason);
    }

    #[test]
    fn a_request_is_checked_whole() {
        let bad = JobRequested {
            repo: "../etc".to_owned(),
            instruction: " ".to_owned(),
            base: "-main".to_owned(),
            model: Some("a b".to_owned()),
        };
        assert_eq!(validate_request(&bad).len(), 4);
        assert!(valid_branch("ai-dev/0190-20261207T101010"));
        assert!(!valid_branch("a..b"));
    }

    fn path() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "README.md",
            "docs/guide.txt",
            "src/lib.rs",
            "tests/it.rs",
            "deploy/x.yml",
            ".ci/run",
            "migrations/0001.sql",
            "app/test_x.py",
            "web/a.test.js",
            "go/x_test.go",
            "src/deploy/mod.rs",
            "db/migrations/2.sql",
        ])
        .prop_map(str::to_owned)
    }

    proptest! {
        /// Whatever the rules and the change: a red build, a denied path or an empty change is
        /// never approved; a protected path never passes as a small change; an approval always
        /// names a rule that is on.
        #[test]
        fn no_rule_approves_what_it_must_not(
            files in prop::collection::vec(path(), 0..6),
            lines in 0u32..200,
            green in any::<bool>(),
            denied in any::<bool>(),
            docs in any::<bool>(), tests in any::<bool>(), small in any::<bool>(),
            max_lines in 0u32..100, max_files in 0u32..6,
        ) {
            let rules = AutoApprove {
                docs_only: docs,
                test_only: tests,
                small_change: small.then_some(SmallChange { max_lines, max_files }),
            };
            let change = ChangeFacts {
                denied: if denied { files.iter().take(1).cloned().collect() } else { Vec::new() },
                files: files.clone(),
                lines,
                build_green: green,
            };
            let decision = auto_decide(&rules, &change);
            match decision.rule {
                None => prop_assert!(!decision.reason.is_empty()),
                Some(rule) => {
                    prop_assert!(green && !files.is_empty() && change.denied.is_empty());
                    match rule {
                        "docs_only" => prop_assert!(docs && files.iter().all(|f| is_doc(f))),
                        "test_only" => prop_assert!(tests && files.iter().all(|f| is_test(f))),
                        "small_change" => {
                            prop_assert!(small);
                            prop_assert!(files.iter().all(|f| !is_protected(f)));
                            prop_assert!(lines <= max_lines && files.len() as u32 <= max_files);
                        }
                        other => prop_assert!(false, "unknown rule {}", other),
                    }
                }
            }
        }
    }

    fn history(events: &[AiDevEvent]) -> Vec<Event<AiDevEvent>> {
        let mut all = vec![Event(AiDevEvent::Requested(JobRequested {
            repo: "calc".to_owned(),
            instruction: "fix it".to_owned(),
            base: "main".to_owned(),
            model: None,
        }))];
        all.extend(events.iter().cloned().map(Event));
        all
    }

    fn offered(node: &str) -> AiDevEvent {
        AiDevEvent::Offered {
            node: node.to_owned(),
            until: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn claimed(runs_on: &str) -> AiDevEvent {
        AiDevEvent::Claimed {
            runs_on: runs_on.to_owned(),
            fallback: None,
        }
    }

    fn claim(runs_on: &str) -> AiDevCommand {
        AiDevCommand::Claim {
            runs_on: runs_on.to_owned(),
            fallback: None,
        }
    }

    fn state(events: &[AiDevEvent]) -> AiDevJob {
        let mut job = AiDevJob::default();
        for event in history(events) {
            job.apply(event);
        }
        job
    }

    fn change() -> ChangeProposed {
        ChangeProposed {
            commit: "c".to_owned(),
            summary: "s".to_owned(),
            files: vec!["src/lib.rs".to_owned()],
            lines_added: 1,
            lines_removed: 1,
            diff: String::new(),
        }
    }

    #[test]
    fn a_job_is_taken_once_by_the_node_it_was_offered_to_or_here() {
        use cqrs_es::test::TestFramework;
        TestFramework::<AiDevJob>::with(())
            .given(history(&[offered("gpu")]))
            .when(claim("gpu"))
            .then_expect_events(vec![Event(claimed("gpu"))]);
        TestFramework::<AiDevJob>::with(())
            .given(history(&[offered("gpu")]))
            .when(claim("other"))
            .then_expect_error(AiDevError::Invalid(
                "it was not offered to other".to_owned(),
            ));
        TestFramework::<AiDevJob>::with(())
            .given(history(&[offered("gpu"), claimed("gpu")]))
            .when(claim("local"))
            .then_expect_error(AiDevError::Invalid("gpu took it already".to_owned()));
        TestFramework::<AiDevJob>::with(())
            .given(history(&[offered("gpu"), claimed("local")]))
            .when(claim("gpu"))
            .then_expect_error(AiDevError::Invalid("local took it already".to_owned()));
    }

    #[test]
    fn the_base_moves_only_after_a_rule_or_people_approved() {
        use cqrs_es::test::TestFramework;
        let merge = AiDevCommand::Merge {
            commit: "m".to_owned(),
            fast_forward: true,
        };
        let proposed = AiDevEvent::ChangeProposed(change());
        let asked = AiDevEvent::ApprovalAsked {
            approval_id: "a1".to_owned(),
        };
        let decided = |rule: Option<&str>| AiDevEvent::Decided {
            auto_rule: rule.map(str::to_owned),
            reason: "r".to_owned(),
        };
        let merged = Event(AiDevEvent::Merged {
            commit: "m".to_owned(),
            fast_forward: true,
        });
        TestFramework::<AiDevJob>::with(())
            .given(history(&[proposed.clone(), decided(Some("small_change"))]))
            .when(merge.clone())
            .then_expect_events(vec![merged.clone()]);
        TestFramework::<AiDevJob>::with(())
            .given(history(&[proposed.clone(), decided(None)]))
            .when(merge.clone())
            .then_expect_error(AiDevError::InvalidTransition(
                "proposed".to_owned(),
                "be merged without an approval".to_owned(),
            ));
        TestFramework::<AiDevJob>::with(())
            .given(history(&[proposed.clone(), decided(None), asked.clone()]))
            .when(merge.clone())
            .then_expect_error(AiDevError::InvalidTransition(
                "awaiting_approval".to_owned(),
                "be merged without an approval".to_owned(),
            ));
        TestFramework::<AiDevJob>::with(())
            .given(history(&[proposed.clone(), decided(None), asked.clone()]))
            .when(AiDevCommand::Approve {
                approval_id: "other".to_owned(),
            })
            .then_expect_error(AiDevError::Invalid(
                "approval other is not the one it waits for".to_owned(),
            ));
        TestFramework::<AiDevJob>::with(())
            .given(history(&[
                proposed,
                decided(None),
                asked,
                AiDevEvent::Approved {
                    approval_id: "a1".to_owned(),
                },
            ]))
            .when(merge)
            .then_expect_events(vec![merged]);
    }

    #[test]
    fn a_node_carries_out_only_the_job_it_took_and_decides_nothing() {
        let took = state(&[offered("gpu"), claimed("gpu")]);
        assert_eq!(
            job_node_may(&state(&[offered("gpu")]), "gpu", "j", &claim("gpu")),
            Ok(())
        );
        assert!(job_node_may(&state(&[offered("gpu")]), "evil", "j", &claim("evil")).is_err());
        assert!(job_node_may(&state(&[]), "gpu", "j", &claim("gpu")).is_err());
        let step = AiDevCommand::Propose(change());
        assert_eq!(job_node_may(&took, "gpu", "j", &step), Ok(()));
        assert!(job_node_may(&took, "other", "j", &step).is_err());
        assert!(job_node_may(&state(&[claimed("local")]), "gpu", "j", &step).is_err());
        for forbidden in [
            AiDevCommand::Decide {
                auto_rule: Some("docs_only".to_owned()),
                reason: "r".to_owned(),
            },
            AiDevCommand::Approve {
                approval_id: "a".to_owned(),
            },
            AiDevCommand::Reject {
                reason: "r".to_owned(),
                branch_deleted: true,
            },
            AiDevCommand::RequestRollback,
            AiDevCommand::Offer {
                node: "gpu".to_owned(),
                until: chrono::DateTime::UNIX_EPOCH,
            },
        ] {
            let refused = job_node_may(&took, "gpu", "j", &forbidden).unwrap_err();
            assert!(refused.starts_with("a node may not"), "{refused}");
        }
    }
}
