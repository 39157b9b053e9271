//! `node_telemetry`: the latest heartbeat of each node, from the TELEMETRY stream. Part of the
//! nodes read model; a separate projection because it reads a separate stream.

use std::collections::HashMap;

use bus::{StoredMessage, StreamName};
use events::telemetry::Heartbeat;
use sqlx::PgConnection;
use sqlx::types::Json;

use crate::{Applied, ApplyFuture, Projection, Target, samples_of};

pub struct NodeTelemetry;

impl Projection for NodeTelemetry {
    fn name(&self) -> &'static str {
        "node_telemetry"
    }

    fn stream(&self) -> StreamName {
        StreamName::Telemetry
    }

    fn tables(&self) -> &'static [&'static str] {
        &["node_telemetry"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: &'a Target,
        batch: &'a [StoredMessage],
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            // Latest sample per node wins; older ones in the same batch are never written.
            let mut latest: HashMap<String, (Heartbeat, i64)> = HashMap::new();
            for (stream_seq, heartbeat) in samples_of::<Heartbeat>(batch, Heartbeat::KIND)? {
                let key = heartbeat.node_id.to_string();
                let newer = latest.get(&key).is_none_or(|(seen, _)| {
                    (heartbeat.sampled_at, heartbeat.sample_seq)
                        >= (seen.sampled_at, seen.sample_seq)
                });
                if newer {
                    latest.insert(key, (heartbeat, stream_seq));
                }
            }
            let table = target.table("node_telemetry");
            let sql = format!(
                "INSERT INTO {table} (node_id, sampled_at, sample_seq, heartbeat, received_seq) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (node_id) DO UPDATE SET sampled_at = EXCLUDED.sampled_at, sample_seq = EXCLUDED.sample_seq, \
                 heartbeat = EXCLUDED.heartbeat, received_seq = EXCLUDED.received_seq \
                 WHERE {table}.sampled_at <= EXCLUDED.sampled_at"
            );
            for (node_id, (heartbeat, stream_seq)) in latest {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(node_id)
                    .bind(heartbeat.sampled_at)
                    .bind(i64::try_from(heartbeat.sample_seq).unwrap_or(i64::MAX))
                    .bind(Json(&heartbeat))
                    .bind(stream_seq)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(Applied::default())
        })
    }
}
