//! Commands that span aggregates (or an aggregate and a stream), shared by every way in (the
//! gateway's REST, the chat intake, the CLI), so each step and what undoes it is written once.

pub mod access;
pub mod ai_dev;
pub mod approvals;
pub mod containers;
pub mod deploys;
pub mod domains;
mod follow;
pub mod hosts;
pub mod video;

use bus::store::{CommandMeta, Commands, JetStreamStore, execute};
use bus::{Bus, StoredDeadLetter};
use cqrs_es::{AggregateError, EventStore};
use domain::dlq::{DeadLetter, DeadLetterCommand, DeadLetterError};
use domain::render::{
    ChatPlace, QUEUE_ID, QueueCommand, QueueError, RenderCommand, RenderError, RenderJob,
    RenderQueue,
};
use events::dlq::{DeadLetterReplayed, dead_letter_id};

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
    chat: Option<ChatPlace>,
    submit: RenderCommand,
    meta: CommandMeta,
) -> Result<(), SubmitError> {
    execute(
        queue,
        QUEUE_ID,
        QueueCommand::Admit {
            job_id: job_id.to_owned(),
            cap,
            chat,
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

/// Why an output was not shared.
#[derive(Debug)]
pub enum ShareError {
    /// The job refused (not finished, not its output), or its log is away.
    Job(AggregateError<RenderError>),
    /// No randomness for the token.
    Random(String),
}

impl std::fmt::Display for ShareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShareError::Job(AggregateError::UserError(err)) => write!(f, "{err}"),
            ShareError::Job(err) => write!(f, "the event log is unavailable: {err}"),
            ShareError::Random(err) => write!(f, "no randomness for a share token: {err}"),
        }
    }
}

impl std::error::Error for ShareError {}

/// The share token of output `sha256` of `job_id`: a new random one, recorded on the job under
/// `meta`'s actor, or the one it was shared under before (sharing twice, or racing, gives one
/// link). `state` reads the job after the decision, so the answer is what the log holds.
pub async fn share_output(
    jobs: &Commands<RenderJob>,
    state: &JetStreamStore<RenderJob>,
    job_id: &str,
    sha256: &str,
    meta: CommandMeta,
) -> Result<String, ShareError> {
    let token = common::random_hex(16).map_err(|err| ShareError::Random(err.to_string()))?;
    let share = RenderCommand::Share {
        sha256: sha256.to_owned(),
        token,
    };
    execute(jobs, job_id, share, meta, 3)
        .await
        .map_err(ShareError::Job)?;
    let job = state
        .load_aggregate(job_id)
        .await
        .map_err(ShareError::Job)?;
    job.state().shares.get(sha256).cloned().ok_or_else(|| {
        ShareError::Job(AggregateError::UserError(RenderError::NotShared(
            sha256.to_owned(),
        )))
    })
}

/// Why a dead letter was not sent back.
#[derive(Debug)]
pub enum ReplayError {
    /// Nothing at that sequence on the DLQ (never, or already taken off it).
    NotFound,
    /// Its kind of message cannot be sent back (see `StoredDeadLetter::replayable`).
    NotReplayable(String),
    /// It was sent back before, as this sequence of its stream.
    AlreadyReplayed(u64),
    /// The bus or the letter's log is away.
    Unavailable(String),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::NotFound => f.write_str("no such dead letter on the DLQ"),
            ReplayError::NotReplayable(why) => write!(f, "it cannot be replayed: {why}"),
            ReplayError::AlreadyReplayed(at) => {
                write!(
                    f,
                    "it was already replayed (as sequence {at} of its stream)"
                )
            }
            ReplayError::Unavailable(why) => write!(f, "it was not replayed: {why}"),
        }
    }
}

impl std::error::Error for ReplayError {}

/// What a replay did.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub letter: StoredDeadLetter,
    /// Where it is now: its new sequence on the origin stream.
    pub replayed_seq: events::StreamSeq,
}

/// Sends the dead letter at `seq` back where it came from, once: republished on its origin
/// subject (a message id derived from the letter makes racing replays store it once), recorded
/// on its `dead_letter` aggregate under `meta`'s actor (which refuses a second record), then
/// taken off the DLQ. A letter found recorded already is taken off and refused.
pub async fn replay_dead_letter(
    bus: &Bus,
    letters: &Commands<DeadLetter>,
    seq: events::StreamSeq,
    meta: CommandMeta,
) -> Result<Replayed, ReplayError> {
    let unavailable = |err: &dyn std::fmt::Display| ReplayError::Unavailable(err.to_string());
    let letter = bus
        .dead_letter_at(seq)
        .await
        .map_err(|err| unavailable(&err))?
        .ok_or(ReplayError::NotFound)?;
    letter.replayable().map_err(ReplayError::NotReplayable)?;
    let origin_stream = letter
        .origin_stream
        .map(|stream| stream.as_str())
        .unwrap_or_default();
    let id = dead_letter_id(&letter.origin, origin_stream, letter.origin_seq);
    let state = JetStreamStore::<DeadLetter>::new(bus.clone())
        .load_aggregate(&id)
        .await
        .map_err(|err| unavailable(&err))?;
    if let Some(replayed_seq) = state.state().replayed_seq {
        bus.remove_dead_letter(seq)
            .await
            .map_err(|err| unavailable(&err))?;
        return Err(ReplayError::AlreadyReplayed(replayed_seq));
    }
    let appended = bus
        .republish_dead_letter(&letter)
        .await
        .map_err(|err| unavailable(&err))?;
    let record = DeadLetterCommand::RecordReplay(DeadLetterReplayed {
        origin: letter.origin.clone(),
        origin_stream: origin_stream.to_owned(),
        origin_subject: letter.origin_subject.clone(),
        origin_seq: letter.origin_seq,
        reason: letter.reason.clone(),
        dlq_seq: seq.0,
        replayed_seq: appended.stream_seq.0,
    });
    match execute(letters, &id, record, meta, 3).await {
        Ok(()) => {}
        Err(AggregateError::UserError(DeadLetterError::AlreadyReplayed(replayed_seq))) => {
            return Err(ReplayError::AlreadyReplayed(replayed_seq));
        }
        Err(err) => return Err(unavailable(&err)),
    }
    // Sent back and recorded: that is the replay. A letter left on the DLQ by a failed delete
    // is taken off by the next try, which finds the record.
    if let Err(err) = bus.remove_dead_letter(seq).await {
        tracing::warn!(dlq_seq = %seq, error = %err, "replayed, but could not take the letter off the DLQ");
    }
    Ok(Replayed {
        letter,
        replayed_seq: appended.stream_seq,
    })
}
