//! `event_log`: every event, one row each, written with one `INSERT … UNNEST` per batch.

use bus::{StoredMessage, StreamName};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::{Applied, ApplyFuture, Projection, Reads, Stored, Target, events_of, seq_i64};

pub struct EventLog;

#[derive(Default)]
struct Columns {
    stream_seq: Vec<i64>,
    idx: Vec<i32>,
    event_id: Vec<Uuid>,
    aggregate_type: Vec<String>,
    aggregate_id: Vec<String>,
    aggregate_seq: Vec<i64>,
    event_type: Vec<String>,
    occurred_at: Vec<DateTime<Utc>>,
    correlation_id: Vec<Uuid>,
    causation_id: Vec<Option<Uuid>>,
    actor: Vec<Json<serde_json::Value>>,
    schema_version: Vec<i32>,
    data: Vec<Json<serde_json::Value>>,
}

impl Projection for EventLog {
    fn name(&self) -> &'static str {
        "event_log"
    }

    fn stream(&self) -> StreamName {
        StreamName::Events
    }

    fn tables(&self) -> &'static [&'static str] {
        &["event_log"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: &'a Target,
        batch: &'a [StoredMessage],
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let mut columns = Columns::default();
            // Unknown event types are kept too: the log is schema-agnostic.
            for Stored {
                seq,
                idx,
                envelope: event,
            } in events_of(batch, Reads::Everything)?
            {
                columns.stream_seq.push(seq);
                columns.idx.push(idx);
                columns.event_id.push(event.event_id.0);
                columns.aggregate_type.push(event.aggregate_type);
                columns.aggregate_id.push(event.aggregate_id);
                columns.aggregate_seq.push(seq_i64(event.aggregate_seq)?);
                columns.event_type.push(event.event_type);
                columns.occurred_at.push(event.occurred_at);
                columns.correlation_id.push(event.correlation_id.0);
                columns.causation_id.push(event.causation_id.map(|id| id.0));
                columns
                    .actor
                    .push(Json(serde_json::to_value(&event.actor).unwrap_or_default()));
                columns
                    .schema_version
                    .push(i32::try_from(event.schema_version).unwrap_or(i32::MAX));
                columns.data.push(Json(event.data));
            }
            if columns.stream_seq.is_empty() {
                return Ok(Applied::default());
            }
            let sql = format!(
                "INSERT INTO {} (stream_seq, idx, event_id, aggregate_type, aggregate_id, aggregate_seq, event_type, \
                 occurred_at, correlation_id, causation_id, actor, schema_version, data) \
                 SELECT * FROM UNNEST($1::int8[], $2::int4[], $3::uuid[], $4::text[], $5::text[], $6::int8[], $7::text[], \
                 $8::timestamptz[], $9::uuid[], $10::uuid[], $11::jsonb[], $12::int4[], $13::jsonb[])",
                target.table("event_log")
            );
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(columns.stream_seq)
                .bind(columns.idx)
                .bind(columns.event_id)
                .bind(columns.aggregate_type)
                .bind(columns.aggregate_id)
                .bind(columns.aggregate_seq)
                .bind(columns.event_type)
                .bind(columns.occurred_at)
                .bind(columns.correlation_id)
                .bind(columns.causation_id)
                .bind(columns.actor)
                .bind(columns.schema_version)
                .bind(columns.data)
                .execute(&mut *conn)
                .await?;
            Ok(Applied::default())
        })
    }
}
