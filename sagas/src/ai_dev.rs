//! AI developer jobs as every way in asks for and shows them: a job requested, cancelled or
//! rolled back; one job read back whole from its events (its steps, builds, change and
//! decision); the jobs listed.

use std::time::Duration;

use bus::store::{CommandMeta, Commands, JetStreamStore, execute};
use bus::{Bus, BusError};
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use domain::ai_dev::{AiDevCommand, AiDevError, AiDevJob, JobStatus};
use events::DomainEvent;
use events::ai_dev::{
    AgentStep, AiDevEvent, BuildChecked, ChangeProposed, JobRequested, JobStarted,
};
use serde::Serialize;

/// Records a job; its id.
pub async fn request_job(
    commands: &Commands<AiDevJob>,
    requested: JobRequested,
    meta: CommandMeta,
) -> Result<String, AggregateError<AiDevError>> {
    let id = uuid::Uuid::now_v7().to_string();
    execute(commands, &id, AiDevCommand::Request(requested), meta, 3).await?;
    Ok(id)
}

pub async fn cancel_job(
    commands: &Commands<AiDevJob>,
    id: &str,
    meta: CommandMeta,
) -> Result<(), AggregateError<AiDevError>> {
    execute(commands, id, AiDevCommand::RequestCancel, meta, 3).await
}

pub async fn roll_back_job(
    commands: &Commands<AiDevJob>,
    id: &str,
    meta: CommandMeta,
) -> Result<(), AggregateError<AiDevError>> {
    execute(commands, id, AiDevCommand::RequestRollback, meta, 3).await
}

/// Whether a person has something to do or see: the job ended, or waits for its approval.
fn settled(job: &AiDevJob) -> bool {
    job.status
        .is_some_and(|s| s.is_final() || s == JobStatus::AwaitingApproval)
        && !job.rollback_requested
}

/// The job once it has settled (ended, or waiting for its approval), or as it is when `wait`
/// has passed.
pub async fn wait_job(
    bus: &Bus,
    state: &JetStreamStore<AiDevJob>,
    id: &str,
    wait: Duration,
) -> Result<AiDevJob, AggregateError<AiDevError>> {
    crate::follow::until_final(bus, state, id, wait, settled).await
}

/// How the change was decided.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    pub auto_rule: Option<String>,
    pub reason: String,
}

/// A job read from its events.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub job_id: String,
    #[serde(flatten)]
    pub requested: JobRequested,
    pub status: &'static str,
    pub requested_by: events::Actor,
    pub requested_at: DateTime<Utc>,
    /// The node it was offered to, if any.
    pub offered_to: Option<String>,
    /// Why it runs on the control plane after all (the node did not take it in time).
    pub fallback: Option<String>,
    pub started: Option<JobStarted>,
    pub steps: Vec<AgentStep>,
    pub builds: Vec<BuildChecked>,
    pub compressions: u32,
    pub change: Option<ChangeProposed>,
    pub decision: Option<DecisionView>,
    pub approval_id: Option<String>,
    pub merged_commit: Option<String>,
    pub fast_forward: Option<bool>,
    pub revert_commit: Option<String>,
    pub rollback_error: Option<String>,
    pub cancel_requested: bool,
    pub failure: Option<String>,
    pub error: Option<String>,
    pub tokens: u64,
    pub updated_at: DateTime<Utc>,
}

/// The job `id`, or `None` when there is none.
pub async fn job_view(bus: &Bus, id: &str) -> Result<Option<JobView>, BusError> {
    let mut view: Option<JobView> = None;
    for envelope in bus.aggregate_events(AiDevEvent::AGGREGATE_TYPE, id).await? {
        let Ok(event) = envelope.decode::<AiDevEvent>() else {
            continue;
        };
        if let AiDevEvent::Requested(requested) = event {
            view = Some(JobView {
                job_id: id.to_owned(),
                requested,
                status: JobStatus::Requested.as_str(),
                requested_by: envelope.actor.clone(),
                requested_at: envelope.occurred_at,
                offered_to: None,
                fallback: None,
                started: None,
                steps: Vec::new(),
                builds: Vec::new(),
                compressions: 0,
                change: None,
                decision: None,
                approval_id: None,
                merged_commit: None,
                fast_forward: None,
                revert_commit: None,
                rollback_error: None,
                cancel_requested: false,
                failure: None,
                error: None,
                tokens: 0,
                updated_at: envelope.occurred_at,
            });
            continue;
        }
        let Some(view) = view.as_mut() else {
            continue;
        };
        view.updated_at = envelope.occurred_at;
        match event {
            AiDevEvent::Requested(_) => {}
            AiDevEvent::Offered { node, .. } => view.offered_to = Some(node),
            AiDevEvent::Claimed { fallback, .. } => view.fallback = fallback,
            AiDevEvent::Started(started) => {
                view.started = Some(started);
                view.status = JobStatus::Running.as_str();
            }
            AiDevEvent::Step(step) => {
                view.tokens += step.tokens_in + step.tokens_out;
                view.steps.push(step);
            }
            AiDevEvent::BuildChecked(build) => view.builds.push(build),
            AiDevEvent::ContextCompressed { .. } => view.compressions += 1,
            AiDevEvent::ChangeProposed(change) => {
                view.change = Some(change);
                view.status = JobStatus::Proposed.as_str();
            }
            AiDevEvent::Decided { auto_rule, reason } => {
                view.decision = Some(DecisionView { auto_rule, reason });
            }
            AiDevEvent::ApprovalAsked { approval_id } => {
                view.approval_id = Some(approval_id);
                view.status = JobStatus::AwaitingApproval.as_str();
            }
            AiDevEvent::Approved { .. } => view.status = JobStatus::Approved.as_str(),
            AiDevEvent::Merged {
                commit,
                fast_forward,
            } => {
                view.merged_commit = Some(commit);
                view.fast_forward = Some(fast_forward);
                view.status = JobStatus::Merged.as_str();
            }
            AiDevEvent::Rejected { reason, .. } => {
                view.error = Some(reason);
                view.status = JobStatus::Rejected.as_str();
            }
            AiDevEvent::RollbackRequested {} => view.rollback_error = None,
            AiDevEvent::RollbackFailed { error } => view.rollback_error = Some(error),
            AiDevEvent::RolledBack { revert_commit } => {
                view.revert_commit = Some(revert_commit);
                view.status = JobStatus::RolledBack.as_str();
            }
            AiDevEvent::Failed { reason, error } => {
                view.failure = Some(reason);
                view.error = Some(error);
                view.status = JobStatus::Failed.as_str();
            }
            AiDevEvent::CancelRequested {} => view.cancel_requested = true,
            AiDevEvent::Cancelled {} => view.status = JobStatus::Cancelled.as_str(),
        }
    }
    Ok(view)
}

/// Every job, newest first, without their steps, builds and diffs (`GET` one for those).
pub async fn list_jobs(bus: &Bus) -> Result<Vec<JobView>, BusError> {
    let mut jobs = Vec::new();
    for id in bus.aggregate_ids(AiDevEvent::AGGREGATE_TYPE).await? {
        if let Some(mut view) = job_view(bus, &id).await? {
            view.steps.clear();
            view.builds.clear();
            if let Some(change) = view.change.as_mut() {
                change.diff.clear();
            }
            jobs.push(view);
        }
    }
    jobs.sort_by(|a, b| b.requested_at.cmp(&a.requested_at));
    Ok(jobs)
}
