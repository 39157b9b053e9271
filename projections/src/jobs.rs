//! `jobs`: the generic lifecycle of every job.

use bus::{StoredMessage, StreamName};
use events::job::{JobEvent, JobStatus};
use sqlx::PgConnection;
use sqlx::types::Json;

use crate::event_log::seq_i64;
use crate::{Applied, ApplyError, ApplyFuture, Projection, Target};

pub struct Jobs;

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
            let table = target.table("jobs");
            for message in batch {
                if !message.subject.starts_with("nebula.events.job.") {
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
                    let id = &envelope.aggregate_id;
                    let at = envelope.occurred_at;
                    match event {
                        JobEvent::Requested(requested) => sqlx::query(sqlx::AssertSqlSafe(format!(
                            "INSERT INTO {table} (job_id, kind, status, priority, params, correlation_id, requested_at, updated_at, last_stream_seq) \
                             VALUES ($1, $2, 'requested', $3, $4, $5, $6, $6, $7)"
                        )))
                        .bind(id)
                        .bind(requested.kind)
                        .bind(requested.priority)
                        .bind(Json(requested.params))
                        .bind(envelope.correlation_id.0)
                        .bind(at)
                        .bind(seq)
                        .execute(&mut *conn)
                        .await?,
                        JobEvent::Started(started) => sqlx::query(sqlx::AssertSqlSafe(format!(
                            "UPDATE {table} SET status = $2, worker = $3, node_id = $4, updated_at = $5, last_stream_seq = $6 WHERE job_id = $1"
                        )))
                        .bind(id)
                        .bind(JobStatus::Running.as_str())
                        .bind(started.worker)
                        .bind(started.node_id)
                        .bind(at)
                        .bind(seq)
                        .execute(&mut *conn)
                        .await?,
                        JobEvent::Progressed(progress) => sqlx::query(sqlx::AssertSqlSafe(format!(
                            "UPDATE {table} SET status = $2, progress_value = $3, progress_max = $4, updated_at = $5, last_stream_seq = $6 WHERE job_id = $1"
                        )))
                        .bind(id)
                        .bind(JobStatus::Running.as_str())
                        .bind(i64::try_from(progress.value).unwrap_or(i64::MAX))
                        .bind(i64::try_from(progress.max).unwrap_or(i64::MAX))
                        .bind(at)
                        .bind(seq)
                        .execute(&mut *conn)
                        .await?,
                        JobEvent::Completed(completed) => sqlx::query(sqlx::AssertSqlSafe(format!(
                            "UPDATE {table} SET status = $2, result = $3, updated_at = $4, last_stream_seq = $5 WHERE job_id = $1"
                        )))
                        .bind(id)
                        .bind(JobStatus::Completed.as_str())
                        .bind(Json(completed.result))
                        .bind(at)
                        .bind(seq)
                        .execute(&mut *conn)
                        .await?,
                        JobEvent::Failed(failed) => sqlx::query(sqlx::AssertSqlSafe(format!(
                            "UPDATE {table} SET status = $2, error = $3, retryable = $4, updated_at = $5, last_stream_seq = $6 WHERE job_id = $1"
                        )))
                        .bind(id)
                        .bind(JobStatus::Failed.as_str())
                        .bind(failed.reason)
                        .bind(failed.retryable)
                        .bind(at)
                        .bind(seq)
                        .execute(&mut *conn)
                        .await?,
                        JobEvent::Cancelled(cancelled) => sqlx::query(sqlx::AssertSqlSafe(format!(
                            "UPDATE {table} SET status = $2, error = $3, updated_at = $4, last_stream_seq = $5 WHERE job_id = $1"
                        )))
                        .bind(id)
                        .bind(JobStatus::Cancelled.as_str())
                        .bind(cancelled.reason)
                        .bind(at)
                        .bind(seq)
                        .execute(&mut *conn)
                        .await?,
                    };
                }
            }
            Ok(applied)
        })
    }
}
