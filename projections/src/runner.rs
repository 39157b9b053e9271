//! Feeds a projection from its stream: batches applied in one transaction together with the
//! checkpoint, transient failures retried forever, poison messages retried a few times and then
//! dead-lettered (the checkpoint moves past them, so later events still project).

use std::sync::Arc;
use std::time::Duration;

use bus::{Bus, ReadFrom, StoredMessage, consumer::DeadLetter};
use common::Backoff;
use events::StreamSeq;
use futures::{FutureExt, StreamExt};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{ApplyError, Projection, ProjectionError, Target};

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Most messages applied in one transaction.
    pub batch_size: usize,
    /// Attempts at a failing message before it is dead-lettered.
    pub max_attempts: u32,
    /// Waits between retries after a failure.
    pub backoff: Backoff,
    /// How long a batch may wait for more messages once it has one (fills batches while
    /// catching up; costs at most this much latency when live).
    pub linger: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            max_attempts: 5,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(2)),
            linger: Duration::from_millis(2),
        }
    }
}

/// How long a reader may stay silent before the runner checks whether it should not be.
const STALL_CHECK: Duration = Duration::from_secs(5);

/// The longest one batch transaction may take before it is abandoned and retried.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(30);

type Progress = Arc<dyn Fn(StreamSeq) + Send + Sync>;

/// One projection being kept up to date.
pub struct Runner {
    pool: PgPool,
    bus: Bus,
    projection: Arc<dyn Projection>,
    config: RunnerConfig,
    target: Target,
    progress: Option<Progress>,
}

enum Step {
    Applied(StreamSeq),
    /// Someone else moved the checkpoint (another runner, or a rebuild swap): start over from it.
    Moved,
}

impl Runner {
    /// The projection this runner feeds.
    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    pub fn new(
        pool: PgPool,
        bus: Bus,
        projection: Arc<dyn Projection>,
        config: RunnerConfig,
    ) -> Self {
        Self {
            pool,
            bus,
            projection,
            config,
            target: Target::LIVE,
            progress: None,
        }
    }

    /// Writes into `target`'s tables and checkpoint instead of the live ones.
    pub fn with_target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// Calls `progress` with the new position after every committed batch.
    pub fn with_progress(mut self, progress: impl Fn(StreamSeq) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    fn checkpoint_name(&self) -> String {
        self.target.checkpoint(self.projection.name())
    }

    /// Runs until `cancel` fires.
    pub async fn run(&self, cancel: CancellationToken) -> Result<(), ProjectionError> {
        self.run_until(None, cancel).await.map(|_| ())
    }

    /// Runs until the checkpoint reaches `until` (if given) or `cancel` fires; returns the position.
    pub async fn run_until(
        &self,
        until: Option<StreamSeq>,
        cancel: CancellationToken,
    ) -> Result<StreamSeq, ProjectionError> {
        let name = self.projection.name();
        let mut backoff = self.config.backoff.clone();
        'resync: loop {
            let position = tokio::select! {
                () = cancel.cancelled() => return self.position().await,
                position = tokio::time::timeout(ATTEMPT_LIMIT, self.ensure_checkpoint()) => {
                    position.unwrap_or(Err(sqlx::Error::PoolTimedOut))
                }
            };
            let mut position = match position {
                Ok(position) => position,
                Err(err) => {
                    tracing::warn!(projection = name, error = %err, "failed to read checkpoint, retrying");
                    backoff.wait(&cancel).await;
                    continue 'resync;
                }
            };
            if let Some(until) = until {
                if position >= until {
                    return Ok(position);
                }
                // Nothing left to read up to `until` (expired by the stream's limits): the
                // position moves there without waiting for messages that will never come.
                match self.bus.bounds(self.projection.stream()).await {
                    Ok(bounds) if bounds.messages == 0 || bounds.first > until => {
                        match self.skip_to(position, until, &cancel).await {
                            Step::Applied(position) => return Ok(position),
                            Step::Moved => continue 'resync,
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(projection = name, error = %err, "failed to read stream bounds, retrying");
                        backoff.wait(&cancel).await;
                        continue 'resync;
                    }
                }
            }
            let mut messages = match self
                .bus
                .read(
                    self.projection.stream(),
                    ReadFrom::Seq(StreamSeq(position.0 + 1)),
                    None,
                )
                .await
            {
                Ok(messages) => messages,
                Err(err) => {
                    tracing::warn!(projection = name, error = %err, "failed to open stream, retrying");
                    backoff.wait(&cancel).await;
                    continue 'resync;
                }
            };
            backoff.reset();
            loop {
                let first = tokio::select! {
                    () = cancel.cancelled() => return Ok(position),
                    next = tokio::time::timeout(STALL_CHECK, messages.next()) => match next {
                        Ok(next) => next,
                        Err(_) => {
                            // Quiet is normal when caught up, but two things can hide behind it:
                            // - the committed checkpoint is not where we think: commits run with
                            //   synchronous_commit=off, so a Postgres crash can roll back the
                            //   last acknowledged batches (together with their checkpoint);
                            // - the stream holds more than we read (a reader that went unpolled
                            //   through a long Postgres outage).
                            // Either way, start over from the committed checkpoint.
                            let committed =
                                tokio::time::timeout(ATTEMPT_LIMIT, self.position()).await;
                            if let Ok(Ok(committed)) = committed
                                && committed != position
                            {
                                tracing::warn!(projection = name, position = %position, committed = %committed, "checkpoint is not where this runner left it (lost to a database crash, or moved), resyncing");
                                continue 'resync;
                            }
                            match self.bus.last_seq(self.projection.stream()).await {
                                Ok(last) if last > position => {
                                    tracing::warn!(projection = name, position = %position, last = %last, "reader stalled, reopening");
                                    continue 'resync;
                                }
                                _ => continue,
                            }
                        }
                    },
                };
                let mut batch = match first {
                    Some(Ok(message)) => vec![message],
                    Some(Err(err)) => {
                        tracing::warn!(projection = name, error = %err, "stream read failed, reopening");
                        backoff.wait(&cancel).await;
                        continue 'resync;
                    }
                    None => {
                        backoff.wait(&cancel).await;
                        continue 'resync;
                    }
                };
                let linger_until = tokio::time::Instant::now() + self.config.linger;
                while batch.len() < self.config.batch_size {
                    let next = match messages.next().now_or_never() {
                        Some(next) => next,
                        None => {
                            match tokio::time::timeout_at(linger_until, messages.next()).await {
                                Ok(next) => next,
                                Err(_) => break,
                            }
                        }
                    };
                    match next {
                        Some(Ok(message)) => batch.push(message),
                        _ => break,
                    }
                }
                let passed_until =
                    until.filter(|until| batch.iter().any(|m| m.stream_seq > *until));
                batch.retain(|m| {
                    m.stream_seq > position && until.is_none_or(|until| m.stream_seq <= until)
                });
                if !batch.is_empty() {
                    match self.commit(&batch, position, &cancel).await? {
                        Step::Applied(new_position) => position = new_position,
                        Step::Moved => continue 'resync,
                    }
                }
                if let Some(until) = passed_until.filter(|until| position < *until) {
                    // The stream skipped past `until` (expired messages): nothing more is coming.
                    match self.skip_to(position, until, &cancel).await {
                        Step::Applied(new_position) => position = new_position,
                        Step::Moved => continue 'resync,
                    }
                }
                if let Some(progress) = &self.progress {
                    progress(position);
                }
                if until.is_some_and(|until| position >= until) {
                    return Ok(position);
                }
                if cancel.is_cancelled() {
                    return Ok(position);
                }
            }
        }
    }

    /// The committed position of this runner's checkpoint.
    pub async fn position(&self) -> Result<StreamSeq, ProjectionError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM projection_checkpoints WHERE name = $1")
                .bind(self.checkpoint_name())
                .fetch_optional(&self.pool)
                .await?;
        Ok(StreamSeq(last.unwrap_or(0).max(0) as u64))
    }

    async fn ensure_checkpoint(&self) -> Result<StreamSeq, sqlx::Error> {
        sqlx::query("INSERT INTO projection_checkpoints (name, stream, last_seq) VALUES ($1, $2, 0) ON CONFLICT (name) DO NOTHING")
            .bind(self.checkpoint_name())
            .bind(self.projection.stream().as_str())
            .execute(&self.pool)
            .await?;
        let last: i64 =
            sqlx::query_scalar("SELECT last_seq FROM projection_checkpoints WHERE name = $1")
                .bind(self.checkpoint_name())
                .fetch_one(&self.pool)
                .await?;
        Ok(StreamSeq(last.max(0) as u64))
    }

    /// Applies `batch` on top of `position`; on a non-transient failure, isolates the poison
    /// message by splitting the batch in halves.
    async fn commit(
        &self,
        batch: &[StoredMessage],
        position: StreamSeq,
        cancel: &CancellationToken,
    ) -> Result<Step, ProjectionError> {
        let name = self.projection.name();
        let mut backoff = self.config.backoff.clone();
        loop {
            match self.try_apply(batch, position).await {
                Ok(step) => return Ok(step),
                Err(err) if err.is_transient() => {
                    self.bus.metrics().add(
                        "nebula_projection_retries_total",
                        &[("projection", name)],
                        1.0,
                    );
                    tracing::warn!(projection = name, error = %err, "transient failure, retrying batch");
                    if cancel.is_cancelled() {
                        return Ok(Step::Moved);
                    }
                    backoff.wait(cancel).await;
                }
                Err(err) if batch.len() == 1 => {
                    return self.handle_poison(&batch[0], position, err, cancel).await;
                }
                Err(err) => {
                    // Bisect: the halves without the poison commit whole, so a batch with one bad
                    // message costs about 2·log2(n) transactions rather than n.
                    tracing::debug!(projection = name, error = %err, size = batch.len(), "batch failed, splitting it");
                    let (left, right) = batch.split_at(batch.len() / 2);
                    let position = match Box::pin(self.commit(left, position, cancel)).await? {
                        Step::Applied(next) => next,
                        Step::Moved => return Ok(Step::Moved),
                    };
                    return Box::pin(self.commit(right, position, cancel)).await;
                }
            }
        }
    }

    async fn handle_poison(
        &self,
        message: &StoredMessage,
        position: StreamSeq,
        first_error: ApplyError,
        cancel: &CancellationToken,
    ) -> Result<Step, ProjectionError> {
        let name = self.projection.name();
        let mut error = first_error;
        let mut attempts = 1;
        let mut backoff = self.config.backoff.clone();
        // A database refusal may pass (a constraint fixed by a later migration, a lock); a
        // malformed message never will.
        while matches!(error, ApplyError::Database(_)) && attempts < self.config.max_attempts {
            backoff.wait(cancel).await;
            if cancel.is_cancelled() {
                return Ok(Step::Moved);
            }
            match self
                .try_apply(std::slice::from_ref(message), position)
                .await
            {
                Ok(step) => return Ok(step),
                // Postgres went away meanwhile: that says nothing about this message.
                Err(err) if err.is_transient() => {}
                Err(err) => {
                    attempts += 1;
                    error = err;
                }
            }
        }
        let reason = format!("projection {name} failed {attempts} time(s): {error}");
        tracing::warn!(projection = name, stream_seq = %message.stream_seq, subject = %message.subject, reason = %reason, "dead-lettering event");
        let letter = DeadLetter {
            origin: format!("projection-{name}"),
            origin_stream: self.projection.stream(),
            origin_subject: message.subject.clone(),
            origin_seq: message.stream_seq,
            reason,
            payload: message.payload.clone(),
        };
        let mut backoff = self.config.backoff.clone();
        while let Err(err) = self.bus.dead_letter(letter.clone()).await {
            tracing::warn!(projection = name, error = %err, "failed to dead-letter, retrying");
            backoff.wait(cancel).await;
            if cancel.is_cancelled() {
                return Ok(Step::Moved);
            }
        }
        self.bus.metrics().add(
            "nebula_projection_dead_letters_total",
            &[("projection", name)],
            1.0,
        );
        // Move the checkpoint past it, with nothing applied.
        let mut backoff = self.config.backoff.clone();
        loop {
            match self.advance(position, message.stream_seq).await {
                Ok(step) => return Ok(step),
                Err(err) => {
                    tracing::warn!(projection = name, error = %err, "failed to advance checkpoint past a dead letter, retrying");
                    backoff.wait(cancel).await;
                    if cancel.is_cancelled() {
                        return Ok(Step::Moved);
                    }
                }
            }
        }
    }

    /// Moves the checkpoint to `to` with nothing applied, retrying while Postgres is away.
    async fn skip_to(
        &self,
        position: StreamSeq,
        to: StreamSeq,
        cancel: &CancellationToken,
    ) -> Step {
        let mut backoff = self.config.backoff.clone();
        loop {
            match self.advance(position, to).await {
                Ok(step) => return step,
                Err(err) => {
                    tracing::warn!(projection = self.projection.name(), error = %err, "failed to move the checkpoint, retrying");
                    backoff.wait(cancel).await;
                    if cancel.is_cancelled() {
                        return Step::Moved;
                    }
                }
            }
        }
    }

    /// One attempt, bounded in time: a connection that stopped answering (a Postgres crash can
    /// leave one) must not hold the runner forever. Dropping the attempt drops its connection.
    async fn try_apply(
        &self,
        batch: &[StoredMessage],
        position: StreamSeq,
    ) -> Result<Step, ApplyError> {
        match tokio::time::timeout(ATTEMPT_LIMIT, self.apply_once(batch, position)).await {
            Ok(result) => result,
            Err(_) => Err(ApplyError::Checkpoint(sqlx::Error::PoolTimedOut)),
        }
    }

    async fn apply_once(
        &self,
        batch: &[StoredMessage],
        position: StreamSeq,
    ) -> Result<Step, ApplyError> {
        let Some(last) = batch.last() else {
            return Ok(Step::Applied(position));
        };
        let started = std::time::Instant::now();
        // Failures outside the projection's own statements say nothing about the messages.
        let mut tx = self.pool.begin().await.map_err(ApplyError::Checkpoint)?;
        if !self
            .lock_checkpoint(&mut tx, position)
            .await
            .map_err(ApplyError::Checkpoint)?
        {
            return Ok(Step::Moved);
        }
        let applied = self.projection.apply(&mut tx, &self.target, batch).await?;
        self.write_checkpoint(&mut tx, last.stream_seq)
            .await
            .map_err(ApplyError::Checkpoint)?;
        tx.commit().await.map_err(ApplyError::Checkpoint)?;
        let name = self.projection.name();
        let metrics = self.bus.metrics();
        metrics.add(
            "nebula_projection_apply_seconds_total",
            &[("projection", name)],
            started.elapsed().as_secs_f64(),
        );
        if applied.unknown_skipped > 0 {
            metrics.add(
                "nebula_projection_unknown_events_skipped_total",
                &[("projection", name)],
                applied.unknown_skipped as f64,
            );
        }
        metrics.add(
            "nebula_projection_messages_applied_total",
            &[("projection", name)],
            batch.len() as f64,
        );
        metrics.add(
            "nebula_projection_batches_total",
            &[("projection", name)],
            1.0,
        );
        metrics.set(
            "nebula_projection_position",
            &[("projection", name)],
            last.stream_seq.0 as f64,
        );
        Ok(Step::Applied(last.stream_seq))
    }

    async fn advance(&self, position: StreamSeq, to: StreamSeq) -> Result<Step, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !self.lock_checkpoint(&mut tx, position).await? {
            return Ok(Step::Moved);
        }
        self.write_checkpoint(&mut tx, to).await?;
        tx.commit().await?;
        Ok(Step::Applied(to))
    }

    /// Locks the checkpoint row for this transaction and checks nobody moved it.
    async fn lock_checkpoint(
        &self,
        conn: &mut sqlx::PgConnection,
        expected: StreamSeq,
    ) -> Result<bool, sqlx::Error> {
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT last_seq FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
        )
        .bind(self.checkpoint_name())
        .fetch_optional(&mut *conn)
        .await?;
        Ok(last == Some(expected.0 as i64))
    }

    async fn write_checkpoint(
        &self,
        conn: &mut sqlx::PgConnection,
        to: StreamSeq,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE projection_checkpoints SET last_seq = $2, updated_at = now() WHERE name = $1",
        )
        .bind(self.checkpoint_name())
        .bind(to.0 as i64)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Applies `(from, to]` of the projection's stream inside the caller's transaction (used by the
/// rebuild swap, which holds the live checkpoint's lock meanwhile).
pub(crate) async fn apply_range_in(
    conn: &mut sqlx::PgConnection,
    bus: &Bus,
    projection: &dyn Projection,
    target: &Target,
    from: StreamSeq,
    to: StreamSeq,
) -> Result<(), ProjectionError> {
    if to <= from {
        return Ok(());
    }
    let mut messages = bus
        .read(
            projection.stream(),
            ReadFrom::Seq(StreamSeq(from.0 + 1)),
            None,
        )
        .await?;
    let mut batch = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .map_err(|_| {
            ProjectionError::Other("timed out reading the stream during swap".to_owned())
        })?
    {
        let message = message?;
        if message.stream_seq > to {
            break;
        }
        let reached = message.stream_seq >= to;
        batch.push(message);
        if reached {
            break;
        }
    }
    projection
        .apply(conn, target, &batch)
        .await
        .map(|_| ())
        .map_err(|err| ProjectionError::Other(format!("failed to apply during swap: {err}")))
}
