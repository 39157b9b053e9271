//! `node_telemetry`: the latest heartbeat of each node, and `node_containers`: the latest
//! listing of each node's containers, from the TELEMETRY stream. Part of the nodes read model; a
//! separate projection because it reads a separate stream. The latest is the last to arrive
//! (the stream's sequence): an agent's clock is only data, kept with how far it was off from the
//! server's when the sample arrived, so a clock that ran ahead never freezes its node's readings.

use std::collections::HashMap;

use bus::{StoredMessage, StreamName};
use events::container::{CONTAINERS_KIND, ContainersSample};
use events::telemetry::Heartbeat;
use sqlx::PgConnection;
use sqlx::types::Json;

use crate::{Applied, ApplyFuture, Projection, Sample, Target, samples_of};

pub struct NodeTelemetry;

impl Projection for NodeTelemetry {
    fn name(&self) -> &'static str {
        "node_telemetry"
    }

    fn stream(&self) -> StreamName {
        StreamName::Telemetry
    }

    fn tables(&self) -> &'static [&'static str] {
        &["node_telemetry", "node_containers"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: &'a Target,
        batch: &'a [StoredMessage],
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            // The last sample of each node to arrive wins; earlier ones in the batch are never
            // written.
            let mut latest: HashMap<String, Sample<Heartbeat>> = HashMap::new();
            for sample in samples_of::<Heartbeat>(batch, Heartbeat::KIND)? {
                latest.insert(sample.sample.node_id.to_string(), sample);
            }
            let table = target.table("node_telemetry");
            let sql = format!(
                "INSERT INTO {table} (node_id, sampled_at, sample_seq, heartbeat, received_seq, received_at, clock_skew_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (node_id) DO UPDATE SET sampled_at = EXCLUDED.sampled_at, sample_seq = EXCLUDED.sample_seq, \
                 heartbeat = EXCLUDED.heartbeat, received_seq = EXCLUDED.received_seq, \
                 received_at = EXCLUDED.received_at, clock_skew_ms = EXCLUDED.clock_skew_ms \
                 WHERE {table}.received_seq < EXCLUDED.received_seq"
            );
            for (node_id, arrived) in latest {
                let heartbeat = &arrived.sample;
                let skew = (heartbeat.sampled_at - arrived.received_at).num_milliseconds();
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(node_id)
                    .bind(heartbeat.sampled_at)
                    .bind(i64::try_from(heartbeat.sample_seq).unwrap_or(i64::MAX))
                    .bind(Json(heartbeat))
                    .bind(arrived.stream_seq)
                    .bind(arrived.received_at)
                    .bind(skew)
                    .execute(&mut *conn)
                    .await?;
            }
            // Container listings: the last to arrive wins (an agent's clock is only data).
            let mut listings: HashMap<String, (ContainersSample, i64)> = HashMap::new();
            for arrived in samples_of::<ContainersSample>(batch, CONTAINERS_KIND)? {
                listings.insert(
                    arrived.sample.node_id.clone(),
                    (arrived.sample, arrived.stream_seq),
                );
            }
            let table = target.table("node_containers");
            let sql = format!(
                "INSERT INTO {table} (node_id, docker, containers, sampled_at, received_seq) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (node_id) DO UPDATE SET \
                 docker = EXCLUDED.docker, containers = EXCLUDED.containers, \
                 sampled_at = EXCLUDED.sampled_at, received_seq = EXCLUDED.received_seq \
                 WHERE {table}.received_seq < EXCLUDED.received_seq"
            );
            for (node_id, (sample, stream_seq)) in listings {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(node_id)
                    .bind(&sample.docker)
                    .bind(Json(&sample.containers))
                    .bind(sample.at)
                    .bind(stream_seq)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(Applied::default())
        })
    }
}

impl crate::ReadModels {
    /// The containers of `node_id` as its agent last listed them: `{node_id, docker,
    /// sampled_at, containers}`, or `None` when it never listed any.
    pub async fn node_containers(
        &self,
        node_id: &str,
    ) -> Result<Option<serde_json::Value>, crate::ProjectionError> {
        Ok(sqlx::query_scalar(
            "SELECT jsonb_build_object('node_id', node_id, 'docker', docker, \
             'sampled_at', sampled_at, 'containers', containers) FROM node_containers \
             WHERE node_id = $1",
        )
        .bind(node_id)
        .fetch_optional(self.pool())
        .await?)
    }
}
