//! The bench's job aggregate (requested → running → completed | failed | cancelled): what P2
//! drives through cqrs-es on the JetStream store.

use super::events::{
    JobCancelled, JobCompleted, JobEvent, JobFailed, JobProgressed, JobRequested, JobStarted,
    JobStatus,
};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use domain::Event;

#[derive(Debug, Clone)]
pub enum JobCommand {
    Request {
        kind: String,
        priority: i32,
        params: Value,
    },
    Start {
        worker: String,
        node_id: Option<String>,
    },
    ReportProgress {
        value: u64,
        max: u64,
    },
    Complete {
        result: Value,
    },
    Fail {
        reason: String,
        retryable: bool,
    },
    Cancel {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("job was already requested")]
    AlreadyRequested,
    #[error("job does not exist")]
    NotFound,
    #[error("job is {0:?} and cannot {1}")]
    InvalidTransition(JobStatus, &'static str),
    #[error("invalid progress {value}/{max}")]
    InvalidProgress { value: u64, max: u64 },
    #[error("job kind must not be empty")]
    EmptyKind,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Job {
    pub status: Option<JobStatus>,
    pub kind: String,
}

impl Job {
    fn require(&self, allowed: &[JobStatus], action: &'static str) -> Result<(), JobError> {
        let status = self.status.ok_or(JobError::NotFound)?;
        if allowed.contains(&status) {
            Ok(())
        } else {
            Err(JobError::InvalidTransition(status, action))
        }
    }
}

impl Aggregate for Job {
    const TYPE: &'static str = "job";
    type Command = JobCommand;
    type Event = Event<JobEvent>;
    type Error = JobError;
    type Services = ();

    async fn handle(
        &mut self,
        command: JobCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), JobError> {
        use JobStatus::{Requested, Running};
        let event = match command {
            JobCommand::Request {
                kind,
                priority,
                params,
            } => {
                if self.status.is_some() {
                    return Err(JobError::AlreadyRequested);
                }
                if kind.trim().is_empty() {
                    return Err(JobError::EmptyKind);
                }
                JobEvent::Requested(JobRequested {
                    kind,
                    priority,
                    params,
                })
            }
            JobCommand::Start { worker, node_id } => {
                self.require(&[Requested], "start")?;
                JobEvent::Started(JobStarted { worker, node_id })
            }
            JobCommand::ReportProgress { value, max } => {
                self.require(&[Running], "report progress")?;
                if max == 0 || value > max {
                    return Err(JobError::InvalidProgress { value, max });
                }
                JobEvent::Progressed(JobProgressed { value, max })
            }
            JobCommand::Complete { result } => {
                self.require(&[Running], "complete")?;
                JobEvent::Completed(JobCompleted { result })
            }
            JobCommand::Fail { reason, retryable } => {
                self.require(&[Requested, Running], "fail")?;
                JobEvent::Failed(JobFailed { reason, retryable })
            }
            JobCommand::Cancel { reason } => {
                self.require(&[Requested, Running], "be cancelled")?;
                JobEvent::Cancelled(JobCancelled { reason })
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<JobEvent>) {
        self.status = Some(match event.0 {
            JobEvent::Requested(requested) => {
                self.kind = requested.kind;
                JobStatus::Requested
            }
            JobEvent::Started(_) | JobEvent::Progressed(_) => JobStatus::Running,
            JobEvent::Completed(_) => JobStatus::Completed,
            JobEvent::Failed(_) => JobStatus::Failed,
            JobEvent::Cancelled(_) => JobStatus::Cancelled,
        });
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type JobTest = TestFramework<Job>;

    #[test]
    fn a_job_runs_to_completion() {
        JobTest::with(())
            .given(vec![
                Event(JobEvent::Requested(JobRequested {
                    kind: "render.txt2img".into(),
                    priority: 0,
                    params: Value::Null,
                })),
                Event(JobEvent::Started(JobStarted {
                    worker: "w1".into(),
                    node_id: None,
                })),
            ])
            .when(JobCommand::Complete {
                result: serde_json::json!({"ok": true}),
            })
            .then_expect_events(vec![Event(JobEvent::Completed(JobCompleted {
                result: serde_json::json!({"ok": true}),
            }))]);
    }

    #[test]
    fn a_finished_job_cannot_be_cancelled() {
        JobTest::with(())
            .given(vec![
                Event(JobEvent::Requested(JobRequested {
                    kind: "k".into(),
                    priority: 0,
                    params: Value::Null,
                })),
                Event(JobEvent::Cancelled(JobCancelled {
                    reason: "user".into(),
                })),
            ])
            .when(JobCommand::Cancel {
                reason: "again".into(),
            })
            .then_expect_error(JobError::InvalidTransition(
                JobStatus::Cancelled,
                "be cancelled",
            ));
    }

    #[test]
    fn progress_must_be_within_bounds() {
        JobTest::with(())
            .given(vec![
                Event(JobEvent::Requested(JobRequested {
                    kind: "k".into(),
                    priority: 0,
                    params: Value::Null,
                })),
                Event(JobEvent::Started(JobStarted {
                    worker: "w".into(),
                    node_id: None,
                })),
            ])
            .when(JobCommand::ReportProgress { value: 5, max: 4 })
            .then_expect_error(JobError::InvalidProgress { value: 5, max: 4 });
    }

    #[test]
    fn a_job_is_requested_once() {
        JobTest::with(())
            .given(vec![Event(JobEvent::Requested(JobRequested {
                kind: "k".into(),
                priority: 0,
                params: Value::Null,
            }))])
            .when(JobCommand::Request {
                kind: "k".into(),
                priority: 0,
                params: Value::Null,
            })
            .then_expect_error(JobError::AlreadyRequested);
    }
}
