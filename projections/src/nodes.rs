//! `nodes`: the inventory of every node, from node lifecycle events.

use bus::{StoredMessage, StreamName};
use events::DomainEvent;
use events::node::NodeEvent;
use sqlx::PgConnection;
use sqlx::types::Json;

use crate::{Applied, ApplyFuture, Projection, Reads, Stored, Target, decode_known, events_of};

pub struct Nodes;

impl Projection for Nodes {
    fn name(&self) -> &'static str {
        "nodes"
    }

    fn stream(&self) -> StreamName {
        StreamName::Events
    }

    fn tables(&self) -> &'static [&'static str] {
        &["nodes"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: &'a Target,
        batch: &'a [StoredMessage],
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let mut applied = Applied::default();
            let table = target.table("nodes");
            for Stored { seq, envelope, .. } in
                events_of(batch, Reads::Aggregates(&[NodeEvent::AGGREGATE_TYPE]))?
            {
                let Some(event) = decode_known::<NodeEvent>(&envelope)? else {
                    applied.unknown_skipped += 1;
                    continue;
                };
                match event {
                    NodeEvent::Registered(node) => {
                        let sql = format!(
                            "INSERT INTO {table} (node_id, hostname, os, kernel, cpu_model, cpu_cores, memory_total_bytes, \
                                 disk_total_bytes, gpus, gpu_source, agent_version, agent_url, status, registered_at, updated_at, last_stream_seq) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'online', $13, $13, $14) \
                                 ON CONFLICT (node_id) DO UPDATE SET hostname = EXCLUDED.hostname, os = EXCLUDED.os, \
                                 kernel = EXCLUDED.kernel, cpu_model = EXCLUDED.cpu_model, cpu_cores = EXCLUDED.cpu_cores, \
                                 memory_total_bytes = EXCLUDED.memory_total_bytes, disk_total_bytes = EXCLUDED.disk_total_bytes, \
                                 gpus = EXCLUDED.gpus, gpu_source = EXCLUDED.gpu_source, agent_version = EXCLUDED.agent_version, \
                                 agent_url = EXCLUDED.agent_url, status = 'online', updated_at = EXCLUDED.updated_at, \
                                 last_stream_seq = EXCLUDED.last_stream_seq"
                        );
                        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                            .bind(&envelope.aggregate_id)
                            .bind(&node.hostname)
                            .bind(&node.os)
                            .bind(&node.kernel)
                            .bind(&node.cpu_model)
                            .bind(i32::try_from(node.cpu_cores).unwrap_or(i32::MAX))
                            .bind(i64::try_from(node.memory_total_bytes).unwrap_or(i64::MAX))
                            .bind(i64::try_from(node.disk_total_bytes).unwrap_or(i64::MAX))
                            .bind(Json(&node.gpus))
                            .bind(&node.gpu_source)
                            .bind(&node.agent_version)
                            .bind(&node.agent_url)
                            .bind(envelope.occurred_at)
                            .bind(seq)
                            .execute(&mut *conn)
                            .await?;
                    }
                    NodeEvent::Deregistered(_) => {
                        let sql = format!(
                            "UPDATE {table} SET status = 'offline', updated_at = $2, last_stream_seq = $3 WHERE node_id = $1"
                        );
                        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                            .bind(&envelope.aggregate_id)
                            .bind(envelope.occurred_at)
                            .bind(seq)
                            .execute(&mut *conn)
                            .await?;
                    }
                }
            }
            Ok(applied)
        })
    }
}
