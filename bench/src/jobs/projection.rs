//! `jobs`: the bench's read model of its job events, a batch folded in memory into one `UNNEST`
//! insert and one `UNNEST` patch — the shape a high-volume projection takes.
//!
//! A batch is folded in memory first: a job requested in this batch becomes one row inserted
//! with every later event of the batch already applied; a job requested earlier gets one patch
//! carrying the net effect of its events. Both are written with one `UNNEST` statement each,
//! so a batch costs two round trips however many events it holds.

use std::collections::HashMap;

use bus::{StoredMessage, StreamName};
use chrono::{DateTime, Utc};
use events::DomainEvent;

use super::events::{JobEvent, JobStatus};
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use projections::{Applied, ApplyError, ApplyFuture, Projection, Target};

pub struct Jobs;

/// The net effect of some events on one job. `None` leaves a column as it is.
#[derive(Default)]
struct Change {
    status: Option<JobStatus>,
    progress: Option<(i64, i64)>,
    worker: Option<(String, Option<String>)>,
    result: Option<Value>,
    error: Option<Option<String>>,
    retryable: Option<Option<bool>>,
    updated_at: DateTime<Utc>,
    last_stream_seq: i64,
}

/// A job first requested in this batch.
struct NewJob {
    kind: String,
    priority: i32,
    params: Value,
    correlation_id: Uuid,
    requested_at: DateTime<Utc>,
    change: Change,
}

enum Pending {
    New(Box<NewJob>),
    Existing(Change),
}

fn apply_event(change: &mut Change, event: JobEvent, at: DateTime<Utc>, seq: i64) {
    change.updated_at = at;
    change.last_stream_seq = seq;
    match event {
        JobEvent::Requested(_) => {}
        JobEvent::Started(started) => {
            change.status = Some(JobStatus::Running);
            change.worker = Some((started.worker, started.node_id));
        }
        JobEvent::Progressed(progress) => {
            change.status = Some(JobStatus::Running);
            change.progress = Some((
                i64::try_from(progress.value).unwrap_or(i64::MAX),
                i64::try_from(progress.max).unwrap_or(i64::MAX),
            ));
        }
        JobEvent::Completed(completed) => {
            change.status = Some(JobStatus::Completed);
            change.result = Some(completed.result);
        }
        JobEvent::Failed(failed) => {
            change.status = Some(JobStatus::Failed);
            change.error = Some(Some(failed.reason));
            change.retryable = Some(Some(failed.retryable));
        }
        JobEvent::Cancelled(cancelled) => {
            change.status = Some(JobStatus::Cancelled);
            change.error = Some(Some(cancelled.reason));
        }
    }
}

impl Projection for Jobs {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn stream(&self) -> StreamName {
        StreamName::Events
    }

    fn tables(&self) -> &'static [&'static str] {
        &["jobs"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: &'a Target,
        batch: &'a [StoredMessage],
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let mut applied = Applied::default();
            let mut order: Vec<String> = Vec::new();
            let mut pending: HashMap<String, Pending> = HashMap::new();
            for message in batch {
                let subject = events::subjects::parse(&message.subject);
                if subject.and_then(|s| s.aggregate_type()) != Some(JobEvent::AGGREGATE_TYPE) {
                    continue;
                }
                let commit = message
                    .decode_commit()
                    .map_err(|err| ApplyError::Poison(err.to_string()))?;
                let seq = seq_i64(message.stream_seq.0)?;
                for envelope in commit {
                    let event = match envelope.decode::<JobEvent>() {
                        Ok(event) => event,
                        Err(err) if err.is_unknown_type() => {
                            applied.unknown_skipped += 1;
                            continue;
                        }
                        Err(err) => return Err(ApplyError::Poison(err.to_string())),
                    };
                    let id = envelope.aggregate_id;
                    let at = envelope.occurred_at;
                    if let JobEvent::Requested(requested) = &event {
                        if pending.contains_key(&id) {
                            return Err(ApplyError::Poison(format!("job {id} requested twice")));
                        }
                        let mut change = Change {
                            status: Some(JobStatus::Requested),
                            ..Change::default()
                        };
                        apply_event(&mut change, event.clone(), at, seq);
                        let job = NewJob {
                            kind: requested.kind.clone(),
                            priority: requested.priority,
                            params: requested.params.clone(),
                            correlation_id: envelope.correlation_id.0,
                            requested_at: at,
                            change,
                        };
                        order.push(id.clone());
                        pending.insert(id, Pending::New(Box::new(job)));
                        continue;
                    }
                    let entry = pending.entry(id.clone()).or_insert_with(|| {
                        order.push(id);
                        Pending::Existing(Change::default())
                    });
                    match entry {
                        Pending::New(job) => apply_event(&mut job.change, event, at, seq),
                        Pending::Existing(change) => apply_event(change, event, at, seq),
                    }
                }
            }
            let mut inserts = Inserts::default();
            let mut updates = Updates::default();
            for id in order {
                match pending.remove(&id) {
                    Some(Pending::New(job)) => inserts.push(id, *job),
                    Some(Pending::Existing(change)) => updates.push(id, change),
                    None => {}
                }
            }
            let table = target.table("jobs");
            if !inserts.job_id.is_empty() {
                inserts.execute(conn, &table).await?;
            }
            if !updates.job_id.is_empty() {
                updates.execute(conn, &table).await?;
            }
            Ok(applied)
        })
    }
}

#[derive(Default)]
struct Inserts {
    job_id: Vec<String>,
    kind: Vec<String>,
    status: Vec<String>,
    priority: Vec<i32>,
    params: Vec<Json<Value>>,
    progress_value: Vec<Option<i64>>,
    progress_max: Vec<Option<i64>>,
    worker: Vec<Option<String>>,
    node_id: Vec<Option<String>>,
    result: Vec<Option<Json<Value>>>,
    error: Vec<Option<String>>,
    retryable: Vec<Option<bool>>,
    correlation_id: Vec<Uuid>,
    requested_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    last_stream_seq: Vec<i64>,
}

impl Inserts {
    fn push(&mut self, id: String, job: NewJob) {
        let change = job.change;
        let (worker, node_id) = change.worker.map_or((None, None), |(w, n)| (Some(w), n));
        self.job_id.push(id);
        self.kind.push(job.kind);
        self.status.push(
            change
                .status
                .unwrap_or(JobStatus::Requested)
                .as_str()
                .to_owned(),
        );
        self.priority.push(job.priority);
        self.params.push(Json(job.params));
        self.progress_value.push(change.progress.map(|p| p.0));
        self.progress_max.push(change.progress.map(|p| p.1));
        self.worker.push(worker);
        self.node_id.push(node_id);
        self.result.push(change.result.map(Json));
        self.error.push(change.error.flatten());
        self.retryable.push(change.retryable.flatten());
        self.correlation_id.push(job.correlation_id);
        self.requested_at.push(job.requested_at);
        self.updated_at.push(change.updated_at);
        self.last_stream_seq.push(change.last_stream_seq);
    }

    async fn execute(self, conn: &mut PgConnection, table: &str) -> Result<(), ApplyError> {
        let sql = format!(
            "INSERT INTO {table} (job_id, kind, status, priority, params, progress_value, progress_max, worker, node_id, \
             result, error, retryable, correlation_id, requested_at, updated_at, last_stream_seq) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::jsonb[], $6::int8[], $7::int8[], \
             $8::text[], $9::text[], $10::jsonb[], $11::text[], $12::bool[], $13::uuid[], $14::timestamptz[], \
             $15::timestamptz[], $16::int8[])"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.job_id)
            .bind(self.kind)
            .bind(self.status)
            .bind(self.priority)
            .bind(self.params)
            .bind(self.progress_value)
            .bind(self.progress_max)
            .bind(self.worker)
            .bind(self.node_id)
            .bind(self.result)
            .bind(self.error)
            .bind(self.retryable)
            .bind(self.correlation_id)
            .bind(self.requested_at)
            .bind(self.updated_at)
            .bind(self.last_stream_seq)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

#[derive(Default)]
struct Updates {
    job_id: Vec<String>,
    status: Vec<Option<String>>,
    has_progress: Vec<bool>,
    progress_value: Vec<Option<i64>>,
    progress_max: Vec<Option<i64>>,
    has_worker: Vec<bool>,
    worker: Vec<Option<String>>,
    node_id: Vec<Option<String>>,
    has_result: Vec<bool>,
    result: Vec<Option<Json<Value>>>,
    has_error: Vec<bool>,
    error: Vec<Option<String>>,
    has_retryable: Vec<bool>,
    retryable: Vec<Option<bool>>,
    updated_at: Vec<DateTime<Utc>>,
    last_stream_seq: Vec<i64>,
}

impl Updates {
    fn push(&mut self, id: String, change: Change) {
        self.job_id.push(id);
        self.status
            .push(change.status.map(|s| s.as_str().to_owned()));
        self.has_progress.push(change.progress.is_some());
        self.progress_value.push(change.progress.map(|p| p.0));
        self.progress_max.push(change.progress.map(|p| p.1));
        self.has_worker.push(change.worker.is_some());
        let (worker, node_id) = change.worker.map_or((None, None), |(w, n)| (Some(w), n));
        self.worker.push(worker);
        self.node_id.push(node_id);
        self.has_result.push(change.result.is_some());
        self.result.push(change.result.map(Json));
        self.has_error.push(change.error.is_some());
        self.error.push(change.error.flatten());
        self.has_retryable.push(change.retryable.is_some());
        self.retryable.push(change.retryable.flatten());
        self.updated_at.push(change.updated_at);
        self.last_stream_seq.push(change.last_stream_seq);
    }

    async fn execute(self, conn: &mut PgConnection, table: &str) -> Result<(), ApplyError> {
        let sql = format!(
            "UPDATE {table} AS j SET \
               status = COALESCE(u.status, j.status), \
               progress_value = CASE WHEN u.has_progress THEN u.progress_value ELSE j.progress_value END, \
               progress_max = CASE WHEN u.has_progress THEN u.progress_max ELSE j.progress_max END, \
               worker = CASE WHEN u.has_worker THEN u.worker ELSE j.worker END, \
               node_id = CASE WHEN u.has_worker THEN u.node_id ELSE j.node_id END, \
               result = CASE WHEN u.has_result THEN u.result ELSE j.result END, \
               error = CASE WHEN u.has_error THEN u.error ELSE j.error END, \
               retryable = CASE WHEN u.has_retryable THEN u.retryable ELSE j.retryable END, \
               updated_at = u.updated_at, last_stream_seq = u.last_stream_seq \
             FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::int8[], $5::int8[], $6::bool[], $7::text[], $8::text[], \
               $9::bool[], $10::jsonb[], $11::bool[], $12::text[], $13::bool[], $14::bool[], $15::timestamptz[], $16::int8[]) \
               AS u(job_id, status, has_progress, progress_value, progress_max, has_worker, worker, node_id, has_result, \
               result, has_error, error, has_retryable, retryable, updated_at, last_stream_seq) \
             WHERE j.job_id = u.job_id"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.job_id)
            .bind(self.status)
            .bind(self.has_progress)
            .bind(self.progress_value)
            .bind(self.progress_max)
            .bind(self.has_worker)
            .bind(self.worker)
            .bind(self.node_id)
            .bind(self.has_result)
            .bind(self.result)
            .bind(self.has_error)
            .bind(self.error)
            .bind(self.has_retryable)
            .bind(self.retryable)
            .bind(self.updated_at)
            .bind(self.last_stream_seq)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

fn seq_i64(seq: u64) -> Result<i64, ApplyError> {
    i64::try_from(seq).map_err(|_| ApplyError::Poison(format!("sequence {seq} out of range")))
}
