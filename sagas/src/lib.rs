//! Commands that span aggregates, shared by every way in (the gateway's REST and the chat
//! intake), so each step and what undoes it is written once.

use bus::store::{CommandMeta, Commands, execute};
use cqrs_es::AggregateError;
use domain::render::{
    QUEUE_ID, QueueCommand, QueueError, RenderCommand, RenderError, RenderJob, RenderQueue,
};

/// Why a render job was not submitted.
#[derive(Debug)]
pub enum SubmitError {
    /// No place in the queue (`QueueError::Full` when it is full), or the queue's log is away.
    Queue(AggregateError<QueueError>),
    /// The job refused the submission, or its log is away; its place was given back.
    Job(AggregateError<RenderError>),
}

/// A place in the render queue (decided on the queue's own subject, so its cap holds), then
/// the job; when the job is not submitted, the place is given back. Every step may be taken
/// again with the same `job_id` (a retry after a crash finds what was done): admitting an
/// admitted job and submitting a submitted one change nothing.
pub async fn submit_render(
    queue: &Commands<RenderQueue>,
    jobs: &Commands<RenderJob>,
    job_id: &str,
    cap: usize,
    submit: RenderCommand,
    meta: CommandMeta,
) -> Result<(), SubmitError> {
    execute(
        queue,
        QUEUE_ID,
        QueueCommand::Admit {
            job_id: job_id.to_owned(),
            cap,
        },
        meta.clone(),
        10,
    )
    .await
    .map_err(SubmitError::Queue)?;
    match execute(jobs, job_id, submit, meta.clone(), 3).await {
        Ok(()) | Err(AggregateError::UserError(RenderError::AlreadySubmitted)) => Ok(()),
        Err(err) => {
            // Give the place back (the dispatcher would, after a while).
            let _ = execute(
                queue,
                QUEUE_ID,
                QueueCommand::Release {
                    job_id: job_id.to_owned(),
                },
                meta,
                10,
            )
            .await;
            Err(SubmitError::Job(err))
        }
    }
}
