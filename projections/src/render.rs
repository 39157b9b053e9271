//! `render_jobs`, `render_queue` and `comfyui_instances`: the Creative Studio's read models.
//!
//! Render jobs are few (people and chat commands submit them) and each event is small, so this
//! projection writes one statement per event; the batch still commits in one transaction with
//! the checkpoint.

use bus::{StoredMessage, StreamName};
use events::render::{ComfyEvent, RenderJobEvent, RenderQueueEvent, RenderStatus};
use events::{DomainEvent, EventEnvelope};
use sqlx::PgConnection;
use sqlx::types::Json;

use crate::{Applied, ApplyError, ApplyFuture, Projection, Target};

pub struct Render;

impl Projection for Render {
    fn name(&self) -> &'static str {
        "render"
    }

    fn stream(&self) -> StreamName {
        StreamName::Events
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "render_jobs",
            "render_queue",
            "comfyui_instances",
            "render_shares",
        ]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: &'a Target,
        batch: &'a [StoredMessage],
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let mut applied = Applied::default();
            for crate::Stored { seq, envelope, .. } in crate::events_of(
                batch,
                crate::Reads::Aggregates(&[
                    RenderJobEvent::AGGREGATE_TYPE,
                    RenderQueueEvent::AGGREGATE_TYPE,
                    ComfyEvent::AGGREGATE_TYPE,
                ]),
            )? {
                let known = match envelope.aggregate_type.as_str() {
                    "render_job" => apply_job(conn, target, &envelope, seq).await?,
                    "render_queue" => apply_queue(conn, target, &envelope, seq).await?,
                    "comfyui" => apply_comfy(conn, target, &envelope, seq).await?,
                    _ => true,
                };
                if !known {
                    applied.unknown_skipped += 1;
                }
            }
            Ok(applied)
        })
    }
}

/// Applies one render job event; `false` if its type is unknown to this version.
async fn apply_job(
    conn: &mut PgConnection,
    target: &Target,
    envelope: &EventEnvelope,
    seq: i64,
) -> Result<bool, ApplyError> {
    let Some(event) = crate::decode_known::<RenderJobEvent>(envelope)? else {
        return Ok(false);
    };
    let table = target.table("render_jobs");
    let id = &envelope.aggregate_id;
    let at = envelope.occurred_at;
    let status = |s: RenderStatus| s.as_str();
    let query = match event {
        RenderJobEvent::Requested(requested) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (job_id, mode, status, priority, params, trigger, vram_mib, \
                 max_attempts, correlation_id, submitted_seq, requested_at, updated_at, last_stream_seq) \
                 VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9, $10, $10, $9) \
                 ON CONFLICT (job_id) DO NOTHING"
            )))
            .bind(id)
            .bind(requested.mode.as_str())
            .bind(requested.priority)
            .bind(Json(&requested.params))
            .bind(Json(&requested.trigger))
            .bind(i64::try_from(requested.vram_mib).unwrap_or(i64::MAX))
            .bind(i32::try_from(requested.max_attempts).unwrap_or(i32::MAX))
            .bind(envelope.correlation_id.0)
            .bind(seq)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            return Ok(true);
        }
        RenderJobEvent::Queued(queued) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET status = $2, priority = $3, node_id = NULL, progress_value = NULL, \
             progress_max = NULL, error = CASE WHEN $4 = 'submitted' THEN NULL ELSE $4 END, \
             updated_at = $5, last_stream_seq = $6 WHERE job_id = $1"
        )))
        .bind(id)
        .bind(status(RenderStatus::Queued))
        .bind(queued.priority)
        .bind(queued.reason)
        .bind(at)
        .bind(seq),
        RenderJobEvent::PriorityChanged(changed) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET priority = $2, updated_at = $3, last_stream_seq = $4 WHERE job_id = $1"
        )))
        .bind(id)
        .bind(changed.priority)
        .bind(at)
        .bind(seq),
        RenderJobEvent::Assigned(assigned) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET status = $2, node_id = $3, attempt = $4, updated_at = $5, \
             last_stream_seq = $6 WHERE job_id = $1"
        )))
        .bind(id)
        .bind(status(RenderStatus::Assigned))
        .bind(assigned.node_id)
        .bind(i32::try_from(assigned.attempt).unwrap_or(i32::MAX))
        .bind(at)
        .bind(seq),
        RenderJobEvent::Started(started) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET status = $2, node_id = $3, backend = $4, \
             started_at = COALESCE(started_at, $5), updated_at = $5, last_stream_seq = $6 \
             WHERE job_id = $1"
        )))
        .bind(id)
        .bind(status(RenderStatus::Running))
        .bind(started.node_id)
        .bind(started.backend)
        .bind(at)
        .bind(seq),
        RenderJobEvent::Progressed(progress) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET status = $2, progress_value = $3, progress_max = $4, \
             updated_at = $5, last_stream_seq = $6 WHERE job_id = $1"
        )))
        .bind(id)
        .bind(status(RenderStatus::Running))
        .bind(i32::try_from(progress.value).unwrap_or(i32::MAX))
        .bind(i32::try_from(progress.max).unwrap_or(i32::MAX))
        .bind(at)
        .bind(seq),
        RenderJobEvent::Completed(completed) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET status = $2, artifacts = $3, provenance = $4, \
             progress_value = progress_max, finished_at = $5, updated_at = $5, \
             last_stream_seq = $6 WHERE job_id = $1"
        )))
        .bind(id)
        .bind(status(RenderStatus::Completed))
        .bind(Json(completed.artifacts))
        .bind(Json(completed.provenance))
        .bind(at)
        .bind(seq),
        RenderJobEvent::Failed(failed) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET status = $2, error = $3, retryable = $4, finished_at = $5, \
             updated_at = $5, last_stream_seq = $6 WHERE job_id = $1"
        )))
        .bind(id)
        .bind(status(RenderStatus::Failed))
        .bind(failed.reason)
        .bind(failed.retryable)
        .bind(at)
        .bind(seq),
        RenderJobEvent::Shared(shared) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (token, job_id, sha256, shared_by, shared_at, last_stream_seq) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (token) DO NOTHING",
            target.table("render_shares")
        )))
        .bind(shared.token)
        .bind(id)
        .bind(shared.sha256)
        .bind(Json(&envelope.actor))
        .bind(at)
        .bind(seq),
        RenderJobEvent::ShareRevoked(revoked) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {} WHERE token = $1 AND job_id = $2",
            target.table("render_shares")
        )))
        .bind(revoked.token)
        .bind(id),
        RenderJobEvent::Deleted(_) => {
            // Out of the read models: its row, and its share links with it.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {} WHERE job_id = $1",
                target.table("render_shares")
            )))
            .bind(id)
            .execute(&mut *conn)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE job_id = $1"
            )))
            .bind(id)
        }
        RenderJobEvent::Cancelled(cancelled) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET status = $2, error = $3, finished_at = $4, updated_at = $4, \
             last_stream_seq = $5 WHERE job_id = $1"
        )))
        .bind(id)
        .bind(status(RenderStatus::Cancelled))
        .bind(cancelled.reason)
        .bind(at)
        .bind(seq),
    };
    query.execute(&mut *conn).await?;
    Ok(true)
}

async fn apply_queue(
    conn: &mut PgConnection,
    target: &Target,
    envelope: &EventEnvelope,
    seq: i64,
) -> Result<bool, ApplyError> {
    let Some(event) = crate::decode_known::<RenderQueueEvent>(envelope)? else {
        return Ok(false);
    };
    let (paused, reason) = match event {
        RenderQueueEvent::Paused(paused) => (true, Some(paused.reason)),
        RenderQueueEvent::Resumed => (false, None),
        // Admission bookkeeping is the queue aggregate's own business.
        RenderQueueEvent::Admitted(_) | RenderQueueEvent::Released(_) => return Ok(true),
    };
    let table = target.table("render_queue");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (queue_id, paused, reason, updated_at, last_stream_seq) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (queue_id) DO UPDATE SET paused = $2, \
         reason = $3, updated_at = $4, last_stream_seq = $5"
    )))
    .bind(&envelope.aggregate_id)
    .bind(paused)
    .bind(reason)
    .bind(envelope.occurred_at)
    .bind(seq)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

async fn apply_comfy(
    conn: &mut PgConnection,
    target: &Target,
    envelope: &EventEnvelope,
    seq: i64,
) -> Result<bool, ApplyError> {
    let Some(ComfyEvent::StateChanged(changed)) = crate::decode_known::<ComfyEvent>(envelope)?
    else {
        return Ok(false);
    };
    let table = target.table("comfyui_instances");
    let state = serde_json::to_value(changed.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (node_id, state, pid, restarts, vram_mode, reason, updated_at, last_stream_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (node_id) DO UPDATE SET state = $2, \
         pid = $3, restarts = $4, vram_mode = $5, reason = $6, updated_at = $7, last_stream_seq = $8"
    )))
    .bind(&envelope.aggregate_id)
    .bind(state)
    .bind(changed.pid.map(|p| i32::try_from(p).unwrap_or(i32::MAX)))
    .bind(i32::try_from(changed.restarts).unwrap_or(i32::MAX))
    .bind(changed.vram_mode)
    .bind(changed.reason)
    .bind(envelope.occurred_at)
    .bind(seq)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Columns of a render job as the API shows it.
const JOB_JSON: &str = "jsonb_build_object('job_id', job_id, 'mode', mode, 'status', status, \
     'priority', priority, 'params', params, 'trigger', trigger, 'vram_mib', vram_mib, \
     'attempt', attempt, 'max_attempts', max_attempts, 'node_id', node_id, 'backend', backend, \
     'progress', CASE WHEN progress_max IS NULL THEN NULL ELSE jsonb_build_object('value', progress_value, 'max', progress_max) END, \
     'artifacts', COALESCE(artifacts, '[]'::jsonb), 'provenance', provenance, 'error', error, \
     'retryable', retryable, 'correlation_id', correlation_id, 'submitted_seq', submitted_seq, \
     'requested_at', requested_at, 'started_at', started_at, 'finished_at', finished_at, \
     'updated_at', updated_at, 'shares', COALESCE((SELECT jsonb_agg(jsonb_build_object('sha256', \
     s.sha256, 'token', s.token, 'shared_at', s.shared_at) ORDER BY s.shared_at) \
     FROM render_shares s WHERE s.job_id = render_jobs.job_id), '[]'::jsonb))";

/// A share link: which output of which job it opens.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Share {
    pub token: String,
    pub job_id: String,
    pub sha256: String,
}

impl crate::ReadModels {
    /// The share link of `token`, if it is shared (and not revoked).
    pub async fn share(&self, token: &str) -> Result<Option<Share>, crate::ProjectionError> {
        Ok(
            sqlx::query_as("SELECT token, job_id, sha256 FROM render_shares WHERE token = $1")
                .bind(token)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// The finished job that made output `sha256` (the first, if several made the same bytes);
    /// `None` for an upload or an unknown hash.
    pub async fn job_of_output(
        &self,
        sha256: &str,
    ) -> Result<Option<String>, crate::ProjectionError> {
        Ok(sqlx::query_scalar(
            "SELECT job_id FROM render_jobs WHERE status = 'completed' AND \
             artifacts @> jsonb_build_array(jsonb_build_object('sha256', $1::text)) \
             ORDER BY finished_at, job_id LIMIT 1",
        )
        .bind(sha256)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Every artifact a render job names (its input images, its outputs) or a share link
    /// serves: any SHA-256 in a job's parameters or outputs, so an input kind added later is
    /// counted without a change here (a hash that names no file costs nothing).
    pub async fn render_artifact_references(
        &self,
    ) -> Result<std::collections::HashSet<String>, crate::ProjectionError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT m[1] FROM render_jobs, \
             regexp_matches(params::text || coalesce(artifacts::text, ''), '([0-9a-f]{64})', 'g') AS m \
             UNION SELECT sha256 FROM render_shares",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Up to `limit` finished jobs that ended before `before` and have no share link (an
    /// output someone published is kept), the oldest first.
    pub async fn unshared_jobs_finished_before(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> Result<Vec<String>, crate::ProjectionError> {
        Ok(sqlx::query_scalar(
            "SELECT job_id FROM render_jobs j WHERE status IN ('completed', 'failed', 'cancelled') \
             AND finished_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM render_shares s WHERE s.job_id = j.job_id) \
             ORDER BY finished_at, job_id LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// One render job, or `None` if the read model has not seen it (yet).
    pub async fn render_job(
        &self,
        job_id: &str,
    ) -> Result<Option<serde_json::Value>, crate::ProjectionError> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_JSON} FROM render_jobs WHERE job_id = $1"
        )))
        .bind(job_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// The queue: whether it is paused, and the unfinished jobs in the order they will run
    /// (running and assigned first, then queued by priority, then submission).
    pub async fn render_queue(&self) -> Result<serde_json::Value, crate::ProjectionError> {
        let mut tx = self.pool().begin().await?;
        let state: Option<(bool, Option<String>)> =
            sqlx::query_as("SELECT paused, reason FROM render_queue WHERE queue_id = $1")
                .bind(events::render::QUEUE_ID)
                .fetch_optional(&mut *tx)
                .await?;
        let jobs: Vec<serde_json::Value> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_JSON} FROM render_jobs WHERE status IN ('queued', 'assigned', 'running') \
             ORDER BY CASE status WHEN 'running' THEN 0 WHEN 'assigned' THEN 1 ELSE 2 END, \
             priority DESC, submitted_seq"
        )))
        .fetch_all(&mut *tx)
        .await?;
        let instances: Vec<serde_json::Value> =
            sqlx::query_scalar("SELECT to_jsonb(c) FROM comfyui_instances c ORDER BY node_id")
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        let (paused, reason) = state.unwrap_or((false, None));
        let queued = jobs.iter().filter(|j| j["status"] == "queued").count();
        Ok(serde_json::json!({
            "paused": paused,
            "reason": reason,
            "queued": queued,
            "jobs": jobs,
            "comfyui": instances,
        }))
    }

    /// The ComfyUI instance the render worker of `node_id` supervises, as a service row
    /// (`{name: "comfyui", kind, state, restarts, pid, reason, since}`, the states named as a
    /// supervised service's), or `None` when it supervises none.
    pub async fn comfyui_service(
        &self,
        node_id: &str,
    ) -> Result<Option<serde_json::Value>, crate::ProjectionError> {
        Ok(sqlx::query_scalar(
            "SELECT jsonb_build_object('name', 'comfyui', 'kind', 'comfyui', \
             'state', CASE state WHEN 'unresponsive' THEN 'unhealthy' ELSE state END, \
             'restarts', restarts, 'pid', pid, 'reason', reason || ' (' || vram_mode || ')', \
             'since', updated_at) FROM comfyui_instances WHERE node_id = $1",
        )
        .bind(node_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Render jobs, newest first, optionally only those in `status`.
    pub async fn render_jobs(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, crate::ProjectionError> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_JSON} FROM render_jobs WHERE $1::text IS NULL OR status = $1 \
             ORDER BY COALESCE(finished_at, updated_at) DESC, job_id LIMIT $2"
        )))
        .bind(status)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }
}
