//! The query side: what the gateway reads.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::ProjectionError;

/// The event type a snapshot's recent events leave out.
pub const PROGRESS_TICK: &str = "render.job_progressed";

/// A node as the API shows it: inventory plus its latest heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub node_id: String,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub cpu_model: Option<String>,
    pub cpu_cores: Option<i32>,
    pub memory_total_bytes: Option<i64>,
    pub disk_total_bytes: Option<i64>,
    pub gpus: Value,
    pub gpu_source: Option<String>,
    pub agent_version: Option<String>,
    pub agent_url: Option<String>,
    /// `online`, `offline`, or `unregistered` (heartbeats seen, no registration yet).
    pub status: String,
    pub registered_at: Option<DateTime<Utc>>,
    pub heartbeat: Option<Value>,
    /// When the last heartbeat arrived (the server's clock).
    pub received_at: Option<DateTime<Utc>>,
    /// How far the agent's clock was ahead (+) or behind (−) when it arrived, in milliseconds.
    pub clock_skew_ms: Option<i64>,
}

/// One row of the event log: the envelope as stored, plus where it sits in the stream.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub stream_seq: i64,
    pub idx: i32,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub aggregate_seq: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    pub actor: Value,
    pub schema_version: i32,
    pub data: Value,
}

/// Filters for `GET /api/events`; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub event_type: Option<String>,
    pub correlation_id: Option<Uuid>,
    /// Only events at stream sequences strictly greater than this.
    pub after_seq: Option<i64>,
    pub limit: i64,
}

/// The state a websocket client starts from.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The EVENTS stream sequence the node inventory reflects.
    pub seq: i64,
    pub nodes: Vec<NodeView>,
    /// The most recent events at or below `seq`, oldest first, as far as the event log has
    /// them: see `events_through`.
    pub events: Vec<EventRow>,
    /// The event log's own checkpoint; when below `seq`, events `(events_through, seq]` are
    /// missing from `events` and must be read from the stream.
    pub events_through: i64,
}

#[derive(Clone)]
pub struct ReadModels {
    pool: PgPool,
}

const NODE_SELECT: &str = "SELECT COALESCE(n.node_id, t.node_id) AS node_id, n.hostname, n.os, n.kernel, n.cpu_model, \
     n.cpu_cores, n.memory_total_bytes, n.disk_total_bytes, n.gpus, n.gpu_source, n.agent_version, n.agent_url, \
     COALESCE(n.status, 'unregistered') AS status, n.registered_at, t.heartbeat, t.received_at, t.clock_skew_ms \
     FROM nodes n FULL OUTER JOIN node_telemetry t ON t.node_id = n.node_id";

const EVENT_COLUMNS: &str = "stream_seq, idx, event_id, aggregate_type, aggregate_id, aggregate_seq, event_type, \
     occurred_at, correlation_id, causation_id, actor, schema_version, data";

impl ReadModels {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn ping(&self) -> Result<(), ProjectionError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ProjectionError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{NODE_SELECT} ORDER BY 1")))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(node_from_row).collect()
    }

    pub async fn node(&self, node_id: &str) -> Result<Option<NodeView>, ProjectionError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{NODE_SELECT} WHERE COALESCE(n.node_id, t.node_id) = $1"
        )))
        .bind(node_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(node_from_row).transpose()
    }

    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<EventRow>, ProjectionError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM event_log \
             WHERE ($1::text IS NULL OR aggregate_type = $1) AND ($2::text IS NULL OR aggregate_id = $2) \
             AND ($3::text IS NULL OR event_type = $3) AND ($4::uuid IS NULL OR correlation_id = $4) \
             AND ($5::int8 IS NULL OR stream_seq > $5) ORDER BY stream_seq, idx LIMIT $6"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(&filter.aggregate_type)
            .bind(&filter.aggregate_id)
            .bind(&filter.event_type)
            .bind(filter.correlation_id)
            .bind(filter.after_seq)
            .bind(filter.limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Checkpoints of every projection, by name.
    pub async fn checkpoints(&self) -> Result<Vec<(String, i64)>, ProjectionError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, last_seq FROM projection_checkpoints ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows)
    }

    /// Nodes and recent events as of the nodes projection's checkpoint, read in one consistent
    /// transaction. Progress ticks are left out of the recent events: they are state the render
    /// read model holds, and would crowd out the events a feed shows.
    pub async fn snapshot(&self, recent: i64) -> Result<Snapshot, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM projection_checkpoints WHERE name = 'nodes'")
                .fetch_optional(&mut *tx)
                .await?;
        let seq = seq.unwrap_or(0);
        let events_through: Option<i64> = sqlx::query_scalar(
            "SELECT last_seq FROM projection_checkpoints WHERE name = 'event_log'",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let node_rows = sqlx::query(sqlx::AssertSqlSafe(format!("{NODE_SELECT} ORDER BY 1")))
            .fetch_all(&mut *tx)
            .await?;
        let event_rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM (SELECT {EVENT_COLUMNS} FROM event_log WHERE stream_seq <= $1 \
             AND event_type <> '{PROGRESS_TICK}' ORDER BY stream_seq DESC, idx DESC LIMIT $2) recent \
             ORDER BY stream_seq, idx"
        )))
        .bind(seq)
        .bind(recent)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Snapshot {
            seq,
            nodes: node_rows
                .iter()
                .map(node_from_row)
                .collect::<Result<_, _>>()?,
            events: event_rows
                .iter()
                .map(event_from_row)
                .collect::<Result<_, _>>()?,
            events_through: events_through.unwrap_or(0),
        })
    }
}

fn node_from_row(row: &sqlx::postgres::PgRow) -> Result<NodeView, ProjectionError> {
    Ok(NodeView {
        node_id: row.try_get("node_id")?,
        hostname: row.try_get("hostname")?,
        os: row.try_get("os")?,
        kernel: row.try_get("kernel")?,
        cpu_model: row.try_get("cpu_model")?,
        cpu_cores: row.try_get("cpu_cores")?,
        memory_total_bytes: row.try_get("memory_total_bytes")?,
        disk_total_bytes: row.try_get("disk_total_bytes")?,
        gpus: row
            .try_get::<Option<Value>, _>("gpus")?
            .unwrap_or(Value::Array(Vec::new())),
        gpu_source: row.try_get("gpu_source")?,
        agent_version: row.try_get("agent_version")?,
        agent_url: row.try_get("agent_url")?,
        status: row.try_get("status")?,
        registered_at: row.try_get("registered_at")?,
        heartbeat: row.try_get("heartbeat")?,
        received_at: row.try_get("received_at")?,
        clock_skew_ms: row.try_get("clock_skew_ms")?,
    })
}

fn event_from_row(row: &sqlx::postgres::PgRow) -> Result<EventRow, ProjectionError> {
    Ok(EventRow {
        stream_seq: row.try_get("stream_seq")?,
        idx: row.try_get("idx")?,
        event_id: row.try_get("event_id")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        aggregate_seq: row.try_get("aggregate_seq")?,
        event_type: row.try_get("event_type")?,
        occurred_at: row.try_get("occurred_at")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        actor: row.try_get("actor")?,
        schema_version: row.try_get("schema_version")?,
        data: row.try_get("data")?,
    })
}
