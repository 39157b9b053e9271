//! Render jobs and the render queue.
//!
//! A [`RenderJob`] goes queued → assigned (to a node, attempt n) → running → completed | failed |
//! cancelled; a node lost mid-job sends it back to queued, and its next assignment is attempt
//! n+1. Every report from a worker names its attempt, so a worker that comes back from the dead
//! cannot complete a job that has since moved on: a job completes exactly once.
//!
//! The [`RenderQueue`] (one aggregate, id [`QUEUE_ID`]) admits jobs under the cap and holds the
//! pause switch. Admission is decided on its own subject, so of two submissions racing for the
//! last place exactly one gets it.

use std::collections::BTreeMap;

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
pub use events::render::QUEUE_ID;
use events::render::{
    Artifact, ComfyEvent, ComfyState, ComfyStateChanged, Provenance, RenderAssigned,
    RenderCancelled, RenderCompleted, RenderDeleted, RenderFailed, RenderJobEvent, RenderMode,
    RenderParams, RenderPriorityChanged, RenderProgressed, RenderQueued, RenderRequested,
    RenderShareRevoked, RenderShared, RenderStarted, RenderStatus, Trigger,
};
use serde::{Deserialize, Serialize};

use crate::Event;

mod queue;
pub use queue::{ChatPlace, QueueCommand, QueueError, RenderQueue};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RenderCommand {
    Submit {
        mode: RenderMode,
        params: RenderParams,
        priority: i32,
        trigger: Trigger,
        max_attempts: u32,
    },
    ChangePriority {
        priority: i32,
    },
    Assign {
        node_id: String,
    },
    /// A worker begins (or, after its own crash, begins again) the attempt it was given.
    Start {
        node_id: String,
        attempt: u32,
        backend: String,
    },
    ReportProgress {
        attempt: u32,
        value: u32,
        max: u32,
    },
    Complete {
        attempt: u32,
        artifacts: Vec<Artifact>,
        provenance: Provenance,
    },
    Fail {
        attempt: u32,
        reason: String,
        retryable: bool,
    },
    /// Back to the queue (its node was lost); the next assignment is a new attempt.
    Requeue {
        reason: String,
    },
    /// Its node asks to run it again as a new attempt (its backend went away mid-job and is
    /// back): back to the queue while attempts are left, else failed saying why.
    Retry {
        attempt: u32,
        reason: String,
    },
    Cancel {
        reason: String,
    },
    /// Opens one output of the finished job to whoever holds the link of `token` (random,
    /// chosen by the caller). An output already shared keeps its link: nothing is recorded.
    Share {
        sha256: String,
        token: String,
    },
    /// Closes the share link of one output.
    RevokeShare {
        sha256: String,
    },
    /// Takes a finished job out of the read models, its outputs and share links with it.
    Delete {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RenderError {
    #[error("render job already exists")]
    AlreadySubmitted,
    #[error("render job does not exist")]
    NotFound,
    #[error("render job is {0} and cannot {1}")]
    InvalidTransition(String, String),
    #[error("attempt {given} is stale: the job is on attempt {current} (node {node})")]
    StaleAttempt {
        given: u32,
        current: u32,
        node: String,
    },
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    #[error("invalid progress {value}/{max}")]
    InvalidProgress { value: u32, max: u32 },
    #[error("max_attempts must be 1..=10")]
    InvalidAttempts,
    #[error("{0} is not an output of this job (only a finished job's outputs can be shared)")]
    NotAnOutput(String),
    #[error("{0} is not shared")]
    NotShared(String),
    #[error("a share token is 32 hex characters")]
    InvalidShareToken,
}

/// Whether `token` has the shape of a share token (128 random bits in lower-case hex), so it is
/// safe in a URL and a file name.
pub fn is_share_token(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RenderJob {
    pub status: Option<RenderStatus>,
    pub priority: i32,
    pub node_id: Option<String>,
    pub attempt: u32,
    pub max_attempts: u32,
    /// The SHA-256 of each output, once completed.
    pub outputs: Vec<String>,
    /// The share token of each shared output, by SHA-256.
    pub shares: BTreeMap<String, String>,
    /// Deleted: nothing more can be done to it (it is as if it did not exist).
    #[serde(default)]
    pub deleted: bool,
}

impl RenderJob {
    fn status(&self) -> Result<RenderStatus, RenderError> {
        self.status
            .filter(|_| !self.deleted)
            .ok_or(RenderError::NotFound)
    }

    fn require(&self, allowed: &[RenderStatus], action: &'static str) -> Result<(), RenderError> {
        let status = self.status()?;
        if allowed.contains(&status) {
            Ok(())
        } else {
            Err(RenderError::InvalidTransition(
                status.as_str().to_owned(),
                action.to_owned(),
            ))
        }
    }

    /// The report is about the current attempt (and so about the node that holds it).
    fn current(&self, attempt: u32) -> Result<(), RenderError> {
        if attempt == self.attempt {
            Ok(())
        } else {
            Err(RenderError::StaleAttempt {
                given: attempt,
                current: self.attempt,
                node: self.node_id.clone().unwrap_or_default(),
            })
        }
    }
}

/// What a node's render worker may do to a job (`bus::remote::NodePolicy`): start, report on,
/// complete or fail only a job placed on that node, and start it only as that node. Placing,
/// requeueing, cancelling and submitting are the control plane's.
pub fn job_node_may(
    state: &RenderJob,
    node_id: &str,
    job_id: &str,
    command: &RenderCommand,
) -> Result<(), String> {
    let placed_here = state.node_id.as_deref() == Some(node_id);
    let allowed = match command {
        RenderCommand::Start {
            node_id: starts_as, ..
        } => placed_here && starts_as == node_id,
        RenderCommand::ReportProgress { .. }
        | RenderCommand::Complete { .. }
        | RenderCommand::Fail { .. }
        | RenderCommand::Retry { .. } => placed_here,
        RenderCommand::Submit { .. }
        | RenderCommand::ChangePriority { .. }
        | RenderCommand::Assign { .. }
        | RenderCommand::Requeue { .. }
        | RenderCommand::Cancel { .. }
        | RenderCommand::Share { .. }
        | RenderCommand::RevokeShare { .. }
        | RenderCommand::Delete { .. } => {
            return Err(format!("a node may not {} a job", command.verb()));
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "job {job_id} is placed on {}, not on node {node_id}",
            state.node_id.as_deref().unwrap_or("no node")
        ))
    }
}

impl RenderCommand {
    fn verb(&self) -> &'static str {
        match self {
            RenderCommand::Submit { .. } => "submit",
            RenderCommand::ChangePriority { .. } => "reprioritise",
            RenderCommand::Assign { .. } => "assign",
            RenderCommand::Start { .. } => "start",
            RenderCommand::ReportProgress { .. } => "report on",
            RenderCommand::Complete { .. } => "complete",
            RenderCommand::Fail { .. } => "fail",
            RenderCommand::Requeue { .. } => "requeue",
            RenderCommand::Retry { .. } => "retry",
            RenderCommand::Cancel { .. } => "cancel",
            RenderCommand::Share { .. } => "share the outputs of",
            RenderCommand::RevokeShare { .. } => "revoke a share of",
            RenderCommand::Delete { .. } => "delete",
        }
    }
}

impl Aggregate for RenderJob {
    const TYPE: &'static str = "render_job";
    type Command = RenderCommand;
    type Event = Event<RenderJobEvent>;
    type Error = RenderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: RenderCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), RenderError> {
        use RenderStatus::{Assigned, Queued, Running};
        let events = match command {
            RenderCommand::Submit {
                mode,
                params,
                priority,
                trigger,
                max_attempts,
            } => {
                if self.status.is_some() {
                    return Err(RenderError::AlreadySubmitted);
                }
                // The stored request is complete: a clip without its own settings gets the
                // defaults it will run with.
                let mut params = params;
                if mode == events::render::RenderMode::AnimateDiff && params.animation.is_none() {
                    params.animation = Some(events::render::Animation::default());
                }
                params.validate(mode).map_err(RenderError::InvalidParams)?;
                if !(1..=10).contains(&max_attempts) {
                    return Err(RenderError::InvalidAttempts);
                }
                let vram_mib = params.vram_estimate_mib(mode);
                vec![
                    RenderJobEvent::Requested(RenderRequested {
                        mode,
                        params,
                        priority,
                        trigger,
                        vram_mib,
                        max_attempts,
                    }),
                    RenderJobEvent::Queued(RenderQueued {
                        priority,
                        reason: "submitted".to_owned(),
                    }),
                ]
            }
            RenderCommand::ChangePriority { priority } => {
                self.require(&[Queued], "change priority")?;
                vec![RenderJobEvent::PriorityChanged(RenderPriorityChanged {
                    priority,
                })]
            }
            RenderCommand::Assign { node_id } => {
                self.require(&[Queued], "be assigned")?;
                vec![RenderJobEvent::Assigned(RenderAssigned {
                    node_id,
                    attempt: self.attempt + 1,
                })]
            }
            RenderCommand::Start {
                node_id,
                attempt,
                backend,
            } => {
                self.require(&[Assigned, Running], "start")?;
                self.current(attempt)?;
                vec![RenderJobEvent::Started(RenderStarted {
                    node_id,
                    attempt,
                    backend,
                })]
            }
            RenderCommand::ReportProgress {
                attempt,
                value,
                max,
            } => {
                self.require(&[Running], "report progress")?;
                self.current(attempt)?;
                if max == 0 || value > max {
                    return Err(RenderError::InvalidProgress { value, max });
                }
                vec![RenderJobEvent::Progressed(RenderProgressed {
                    attempt,
                    value,
                    max,
                })]
            }
            RenderCommand::Complete {
                attempt,
                artifacts,
                provenance,
            } => {
                self.require(&[Running], "complete")?;
                self.current(attempt)?;
                vec![RenderJobEvent::Completed(RenderCompleted {
                    attempt,
                    artifacts,
                    provenance,
                })]
            }
            RenderCommand::Fail {
                attempt,
                reason,
                retryable,
            } => {
                self.require(&[Assigned, Running], "fail")?;
                self.current(attempt)?;
                vec![RenderJobEvent::Failed(RenderFailed {
                    attempt,
                    reason,
                    retryable,
                })]
            }
            RenderCommand::Requeue { reason } => {
                self.require(&[Assigned, Running], "be requeued")?;
                vec![RenderJobEvent::Queued(RenderQueued {
                    priority: self.priority,
                    reason,
                })]
            }
            RenderCommand::Retry { attempt, reason } => {
                self.require(&[Assigned, Running], "be retried")?;
                self.current(attempt)?;
                if attempt >= self.max_attempts {
                    vec![RenderJobEvent::Failed(RenderFailed {
                        attempt,
                        reason: format!(
                            "{reason}; no attempts left ({attempt} of {})",
                            self.max_attempts
                        ),
                        retryable: true,
                    })]
                } else {
                    vec![RenderJobEvent::Queued(RenderQueued {
                        priority: self.priority,
                        reason,
                    })]
                }
            }
            RenderCommand::Cancel { reason } => {
                let status = self.status()?;
                self.require(&[Queued, Assigned, Running], "be cancelled")?;
                vec![RenderJobEvent::Cancelled(RenderCancelled {
                    reason,
                    was_running: status != Queued,
                })]
            }
            RenderCommand::Share { sha256, token } => {
                self.require(&[RenderStatus::Completed], "share its outputs")?;
                if !self.outputs.contains(&sha256) {
                    return Err(RenderError::NotAnOutput(sha256));
                }
                if !is_share_token(&token) {
                    return Err(RenderError::InvalidShareToken);
                }
                if self.shares.contains_key(&sha256) {
                    return Ok(());
                }
                vec![RenderJobEvent::Shared(RenderShared { sha256, token })]
            }
            RenderCommand::Delete { reason } => {
                self.require(
                    &[
                        RenderStatus::Completed,
                        RenderStatus::Failed,
                        RenderStatus::Cancelled,
                    ],
                    "be deleted (only a finished job can)",
                )?;
                vec![RenderJobEvent::Deleted(RenderDeleted {
                    outputs: self.outputs.clone(),
                    reason,
                })]
            }
            RenderCommand::RevokeShare { sha256 } => {
                self.status()?;
                let token = self
                    .shares
                    .get(&sha256)
                    .cloned()
                    .ok_or(RenderError::NotShared(sha256.clone()))?;
                vec![RenderJobEvent::ShareRevoked(RenderShareRevoked {
                    sha256,
                    token,
                })]
            }
        };
        for event in events {
            sink.write(Event(event), self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Event<RenderJobEvent>) {
        let status = match event.0 {
            RenderJobEvent::Requested(requested) => {
                self.priority = requested.priority;
                self.max_attempts = requested.max_attempts;
                RenderStatus::Queued
            }
            RenderJobEvent::Queued(queued) => {
                self.priority = queued.priority;
                self.node_id = None;
                RenderStatus::Queued
            }
            RenderJobEvent::PriorityChanged(changed) => {
                self.priority = changed.priority;
                RenderStatus::Queued
            }
            RenderJobEvent::Assigned(assigned) => {
                self.node_id = Some(assigned.node_id);
                self.attempt = assigned.attempt;
                RenderStatus::Assigned
            }
            RenderJobEvent::Started(_) | RenderJobEvent::Progressed(_) => RenderStatus::Running,
            RenderJobEvent::Completed(completed) => {
                self.outputs = completed.artifacts.into_iter().map(|a| a.sha256).collect();
                RenderStatus::Completed
            }
            // Shares change no status.
            RenderJobEvent::Shared(shared) => {
                self.shares.insert(shared.sha256, shared.token);
                return;
            }
            RenderJobEvent::ShareRevoked(revoked) => {
                self.shares.remove(&revoked.sha256);
                return;
            }
            RenderJobEvent::Failed(_) => RenderStatus::Failed,
            RenderJobEvent::Cancelled(_) => RenderStatus::Cancelled,
            RenderJobEvent::Deleted(_) => {
                self.deleted = true;
                self.shares.clear();
                return;
            }
        };
        self.status = Some(status);
    }
}

/// A node's supervised ComfyUI process (aggregate id: the node id). Its supervisor is the only
/// writer; every change of state is recorded.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ComfyInstance {
    pub state: Option<ComfyState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordComfyState(pub ComfyStateChanged);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("unreachable")]
pub struct NeverFails;

/// A node's supervisor records the state of its own ComfyUI only (`bus::remote::NodePolicy`).
pub fn comfy_node_may(
    _state: &ComfyInstance,
    node_id: &str,
    aggregate_id: &str,
    _command: &RecordComfyState,
) -> Result<(), String> {
    crate::own_node(node_id, aggregate_id, "record the ComfyUI of node")
}

impl Aggregate for ComfyInstance {
    const TYPE: &'static str = "comfyui";
    type Command = RecordComfyState;
    type Event = Event<ComfyEvent>;
    type Error = NeverFails;
    type Services = ();

    async fn handle(
        &mut self,
        command: RecordComfyState,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), NeverFails> {
        sink.write(Event(ComfyEvent::StateChanged(command.0)), self)
            .await;
        Ok(())
    }

    fn apply(&mut self, event: Event<ComfyEvent>) {
        let ComfyEvent::StateChanged(changed) = event.0;
        self.state = Some(changed.state);
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn submit() -> RenderCommand {
        RenderCommand::Submit {
            mode: RenderMode::Txt2img,
            params: RenderParams {
                prompt: "a lighthouse".into(),
                ..RenderParams::default()
            },
            priority: 0,
            trigger: Trigger {
                source: "api".into(),
                reference: None,
            },
            max_attempts: 3,
        }
    }

    fn submitted() -> Vec<Event<RenderJobEvent>> {
        let mut job = RenderJob::default();
        let mut out = Vec::new();
        // Build the events the way handle would, to keep the tests honest about shapes.
        let RenderCommand::Submit {
            mode,
            params,
            priority,
            trigger,
            max_attempts,
        } = submit()
        else {
            unreachable!()
        };
        let vram_mib = params.vram_estimate_mib(mode);
        for event in [
            RenderJobEvent::Requested(RenderRequested {
                mode,
                params,
                priority,
                trigger,
                vram_mib,
                max_attempts,
            }),
            RenderJobEvent::Queued(RenderQueued {
                priority,
                reason: "submitted".into(),
            }),
        ] {
            job.apply(Event(event.clone()));
            out.push(Event(event));
        }
        out
    }

    fn provenance() -> Provenance {
        Provenance {
            workflow_hash: String::new(),
            model: String::new(),
            seed: 0,
            node_id: "gpu-1".into(),
            backend: "simulated".into(),
            trigger: Trigger {
                source: "api".into(),
                reference: None,
            },
            correlation_id: String::new(),
        }
    }

    fn assigned(node: &str, attempt: u32) -> Event<RenderJobEvent> {
        Event(RenderJobEvent::Assigned(RenderAssigned {
            node_id: node.into(),
            attempt,
        }))
    }

    fn started(node: &str, attempt: u32) -> Event<RenderJobEvent> {
        Event(RenderJobEvent::Started(RenderStarted {
            node_id: node.into(),
            attempt,
            backend: "simulated".into(),
        }))
    }

    #[test]
    fn submit_records_request_and_queueing() {
        TestFramework::<RenderJob>::with(())
            .given_no_previous_events()
            .when(submit())
            .then_expect_events(submitted());
    }

    #[test]
    fn invalid_params_are_refused_with_the_field() {
        let mut command = submit();
        if let RenderCommand::Submit { params, .. } = &mut command {
            params.steps = 0;
        }
        TestFramework::<RenderJob>::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(RenderError::InvalidParams(
                "steps must be 1..=150, got 0".into(),
            ));
    }

    #[test]
    fn assignments_count_attempts() {
        let mut given = submitted();
        given.push(assigned("gpu-1", 1));
        given.push(started("gpu-1", 1));
        given.push(Event(RenderJobEvent::Queued(RenderQueued {
            priority: 0,
            reason: "node gpu-1 lost".into(),
        })));
        TestFramework::<RenderJob>::with(())
            .given(given)
            .when(RenderCommand::Assign {
                node_id: "gpu-2".into(),
            })
            .then_expect_events(vec![assigned("gpu-2", 2)]);
    }

    #[test]
    fn a_stale_attempt_cannot_complete() {
        let mut given = submitted();
        given.extend([
            assigned("gpu-1", 1),
            started("gpu-1", 1),
            Event(RenderJobEvent::Queued(RenderQueued {
                priority: 0,
                reason: "node gpu-1 lost".into(),
            })),
            assigned("gpu-2", 2),
            started("gpu-2", 2),
        ]);
        TestFramework::<RenderJob>::with(())
            .given(given)
            .when(RenderCommand::Complete {
                attempt: 1,
                artifacts: vec![],
                provenance: provenance(),
            })
            .then_expect_error(RenderError::StaleAttempt {
                given: 1,
                current: 2,
                node: "gpu-2".into(),
            });
    }

    #[test]
    fn a_worker_restarting_its_attempt_may_start_again() {
        let mut given = submitted();
        given.extend([assigned("gpu-1", 1), started("gpu-1", 1)]);
        TestFramework::<RenderJob>::with(())
            .given(given)
            .when(RenderCommand::Start {
                node_id: "gpu-1".into(),
                attempt: 1,
                backend: "simulated".into(),
            })
            .then_expect_events(vec![started("gpu-1", 1)]);
    }

    #[test]
    fn cancelling_a_running_job_says_so() {
        let mut given = submitted();
        given.extend([assigned("gpu-1", 1), started("gpu-1", 1)]);
        TestFramework::<RenderJob>::with(())
            .given(given)
            .when(RenderCommand::Cancel {
                reason: "user".into(),
            })
            .then_expect_events(vec![Event(RenderJobEvent::Cancelled(RenderCancelled {
                reason: "user".into(),
                was_running: true,
            }))]);
    }

    #[test]
    fn priority_changes_only_while_queued() {
        let mut given = submitted();
        given.push(assigned("gpu-1", 1));
        TestFramework::<RenderJob>::with(())
            .given(given)
            .when(RenderCommand::ChangePriority { priority: 5 })
            .then_expect_error(RenderError::InvalidTransition(
                "assigned".to_owned(),
                "change priority".to_owned(),
            ));
    }

    fn completed_with(sha256: &str) -> Vec<Event<RenderJobEvent>> {
        let mut given = submitted();
        given.extend([
            assigned("gpu-1", 1),
            started("gpu-1", 1),
            Event(RenderJobEvent::Completed(RenderCompleted {
                attempt: 1,
                artifacts: vec![Artifact {
                    sha256: sha256.into(),
                    bytes: 3,
                    content_type: "image/png".into(),
                    width: 1,
                    height: 1,
                    filename: "out.png".into(),
                }],
                provenance: provenance(),
            })),
        ]);
        given
    }

    /// Only a finished job is deleted, naming its outputs; then nothing more can be done to it,
    /// as if it did not exist.
    #[test]
    fn a_finished_job_is_deleted_with_its_outputs_and_then_is_gone() {
        let output = "ab".repeat(32);
        let delete = || RenderCommand::Delete {
            reason: "deleted by admin".into(),
        };
        let deleted = Event(RenderJobEvent::Deleted(RenderDeleted {
            outputs: vec![output.clone()],
            reason: "deleted by admin".into(),
        }));
        TestFramework::<RenderJob>::with(())
            .given(completed_with(&output))
            .when(delete())
            .then_expect_events(vec![deleted.clone()]);
        TestFramework::<RenderJob>::with(())
            .given(submitted())
            .when(delete())
            .then_expect_error(RenderError::InvalidTransition(
                "queued".into(),
                "be deleted (only a finished job can)".into(),
            ));
        let mut gone = completed_with(&output);
        gone.push(deleted);
        for command in [
            delete(),
            RenderCommand::Share {
                sha256: output.clone(),
                token: "0f".repeat(16),
            },
            RenderCommand::RevokeShare {
                sha256: output.clone(),
            },
            RenderCommand::ChangePriority { priority: 1 },
        ] {
            TestFramework::<RenderJob>::with(())
                .given(gone.clone())
                .when(command)
                .then_expect_error(RenderError::NotFound);
        }
    }

    #[test]
    fn only_a_finished_jobs_outputs_are_shared_each_under_one_token() {
        let output = "ab".repeat(32);
        let token = "0f".repeat(16);
        let share = |sha256: &str, token: &str| RenderCommand::Share {
            sha256: sha256.into(),
            token: token.into(),
        };
        let shared = Event(RenderJobEvent::Shared(RenderShared {
            sha256: output.clone(),
            token: token.clone(),
        }));
        TestFramework::<RenderJob>::with(())
            .given(completed_with(&output))
            .when(share(&output, &token))
            .then_expect_events(vec![shared.clone()]);
        // Shared already: the link it has stays, nothing is recorded.
        let mut given = completed_with(&output);
        given.push(shared.clone());
        TestFramework::<RenderJob>::with(())
            .given(given.clone())
            .when(share(&output, &"1e".repeat(16)))
            .then_expect_events(vec![]);
        // An upload, or anything else that is not this job's output.
        TestFramework::<RenderJob>::with(())
            .given(completed_with(&output))
            .when(share(&"cd".repeat(32), &token))
            .then_expect_error(RenderError::NotAnOutput("cd".repeat(32)));
        TestFramework::<RenderJob>::with(())
            .given(submitted())
            .when(share(&output, &token))
            .then_expect_error(RenderError::InvalidTransition(
                "queued".into(),
                "share its outputs".into(),
            ));
        TestFramework::<RenderJob>::with(())
            .given(completed_with(&output))
            .when(share(&output, "guessable"))
            .then_expect_error(RenderError::InvalidShareToken);
        // Revoked: the token goes with it, and the output can be shared anew.
        TestFramework::<RenderJob>::with(())
            .given(given.clone())
            .when(RenderCommand::RevokeShare {
                sha256: output.clone(),
            })
            .then_expect_events(vec![Event(RenderJobEvent::ShareRevoked(
                RenderShareRevoked {
                    sha256: output.clone(),
                    token: token.clone(),
                },
            ))]);
        given.push(Event(RenderJobEvent::ShareRevoked(RenderShareRevoked {
            sha256: output.clone(),
            token,
        })));
        TestFramework::<RenderJob>::with(())
            .given(given.clone())
            .when(RenderCommand::RevokeShare {
                sha256: output.clone(),
            })
            .then_expect_error(RenderError::NotShared(output.clone()));
        let mut job = RenderJob::default();
        for event in given {
            job.apply(event);
        }
        assert_eq!(job.status, Some(RenderStatus::Completed));
        assert!(job.shares.is_empty());
        assert!(
            super::job_node_may(&job, "gpu-1", "j1", &share(&output, &"2d".repeat(16))).is_err()
        );
    }

    #[test]
    fn a_retry_is_a_new_attempt_while_attempts_are_left_then_fails_saying_why() {
        let on = |attempt: u32| {
            let mut events = submitted();
            for n in 1..=attempt {
                events.push(assigned("gpu-1", n));
                events.push(started("gpu-1", n));
            }
            events
        };
        let retry = |attempt: u32| RenderCommand::Retry {
            attempt,
            reason: "ComfyUI went away mid-job: connection reset".into(),
        };
        TestFramework::<RenderJob>::with(())
            .given(on(1))
            .when(retry(1))
            .then_expect_events(vec![Event(RenderJobEvent::Queued(RenderQueued {
                priority: 0,
                reason: "ComfyUI went away mid-job: connection reset".into(),
            }))]);
        // A stale attempt's retry changes nothing.
        TestFramework::<RenderJob>::with(())
            .given(on(2))
            .when(retry(1))
            .then_expect_error(RenderError::StaleAttempt {
                given: 1,
                current: 2,
                node: "gpu-1".into(),
            });
        // The last attempt: failed, with the original cause.
        TestFramework::<RenderJob>::with(())
            .given(on(3))
            .when(retry(3))
            .then_expect_events(vec![Event(RenderJobEvent::Failed(RenderFailed {
                attempt: 3,
                reason: "ComfyUI went away mid-job: connection reset; no attempts left (3 of 3)"
                    .into(),
                retryable: true,
            }))]);
        let mut job = RenderJob::default();
        for event in on(1) {
            job.apply(event);
        }
        assert!(super::job_node_may(&job, "gpu-1", "j1", &retry(1)).is_ok());
        assert!(super::job_node_may(&job, "gpu-2", "j1", &retry(1)).is_err());
    }

    #[test]
    fn a_node_may_work_only_on_the_jobs_placed_on_it() {
        let mut job = RenderJob::default();
        for event in submitted() {
            job.apply(event);
        }
        let start = |node: &str| RenderCommand::Start {
            node_id: node.into(),
            attempt: 1,
            backend: "simulated".into(),
        };
        let progress = RenderCommand::ReportProgress {
            attempt: 1,
            value: 1,
            max: 2,
        };
        assert!(super::job_node_may(&job, "gpu-1", "j1", &start("gpu-1")).is_err());
        job.apply(assigned("gpu-1", 1));
        assert!(super::job_node_may(&job, "gpu-1", "j1", &start("gpu-1")).is_ok());
        assert!(super::job_node_may(&job, "gpu-1", "j1", &progress).is_ok());
        // Another node: neither as itself nor in gpu-1's name.
        assert!(super::job_node_may(&job, "gpu-2", "j1", &start("gpu-2")).is_err());
        assert!(super::job_node_may(&job, "gpu-2", "j1", &start("gpu-1")).is_err());
        assert!(super::job_node_may(&job, "gpu-1", "j1", &start("gpu-2")).is_err());
        assert!(super::job_node_may(&job, "gpu-2", "j1", &progress).is_err());
        let cancel = RenderCommand::Cancel {
            reason: "mine now".into(),
        };
        let err = super::job_node_may(&job, "gpu-1", "j1", &cancel).unwrap_err();
        assert!(err.contains("may not cancel"), "{err}");
    }
}
