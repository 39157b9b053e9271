//! Shared set-up for `cargo xtask bench` and `cargo xtask chaos`: a private nats-server, a private
//! database, event generators and the paths of the release binaries. A dev tool, never product.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bus::{Bus, BusConfig, ExpectedSeq};
use events::{Actor, CorrelationId, EventEnvelope, JobId};
use futures::StreamExt;
use sqlx::PgPool;
use testkit::NatsServer;

use crate::jobs::{JobCompleted, JobEvent, JobProgressed, JobRequested, JobStarted};

pub mod chat;
pub mod gateway;
pub mod jobs;

/// A nats-server and a database of our own for one run.
pub struct Env {
    pub nats: NatsServer,
    pub bus: Bus,
    pub pool: PgPool,
    pub database_url: String,
    admin: PgPool,
    database: String,
}

/// `DATABASE_URL` with its database name replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

impl Env {
    /// A fresh nats-server (extra `jetstream { … }` settings allowed) and a fresh, migrated
    /// database `nebula_<name>`.
    pub async fn new(name: &str, jetstream_settings: &str) -> Result<Env> {
        let nats = NatsServer::start_with(jetstream_settings);
        let bus = Bus::connect(BusConfig {
            url: nats.url(),
            auth: bus::NatsAuth::nkey(nats.control_seed()),
            ..Default::default()
        })
        .await?;
        let admin_url = testkit::database_url();
        let admin = projections::connect(&admin_url, 2)
            .await
            .context("failed to reach postgres (DATABASE_URL)")?;
        let database = format!("nebula_{name}");
        let database_url = with_database(&admin_url, &database);
        let pool = recreate(&admin, &database, &database_url).await?;
        Ok(Env {
            nats,
            bus,
            pool,
            database_url,
            admin,
            database,
        })
    }

    /// Drops and recreates the database (empty read models, no checkpoints).
    pub async fn reset_database(&mut self) -> Result<()> {
        self.pool.close().await;
        self.pool = recreate(&self.admin, &self.database, &self.database_url).await?;
        Ok(())
    }

    pub async fn drop_database(self) {
        self.pool.close().await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.database
        )))
        .execute(&self.admin)
        .await;
    }
}

async fn recreate(admin: &PgPool, database: &str, url: &str) -> Result<PgPool> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
    )))
    .execute(admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(admin)
        .await?;
    let pool = projections::connect(url, 8).await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// The commits of `jobs` complete job lifecycles: 4 events each, one commit per event.
pub fn job_commits(jobs: usize) -> Vec<EventEnvelope> {
    let mut out = Vec::with_capacity(jobs * 4);
    for _ in 0..jobs {
        let job = JobId::new().to_string();
        let correlation = CorrelationId::new();
        let lifecycle = [
            JobEvent::Requested(JobRequested {
                kind: "bench".into(),
                priority: 0,
                params: serde_json::json!({ "prompt": "a red fox in the snow" }),
            }),
            JobEvent::Started(JobStarted {
                worker: "bench-worker".into(),
                node_id: Some("bench-node".into()),
            }),
            JobEvent::Progressed(JobProgressed { value: 10, max: 20 }),
            JobEvent::Completed(JobCompleted {
                result: serde_json::json!({ "artifact": "sha256:00" }),
            }),
        ];
        for (i, event) in lifecycle.iter().enumerate() {
            out.push(EventEnvelope::new(
                job.as_str(),
                i as u64 + 1,
                event,
                correlation,
                None,
                Actor::Service("bench".into()),
            ));
        }
    }
    out
}

/// Appends every commit with `concurrency` appends in flight (per-aggregate order is kept by
/// giving each aggregate to one task). Returns the elapsed time.
pub async fn preload(
    bus: &Bus,
    commits: Vec<EventEnvelope>,
    concurrency: usize,
) -> Result<Duration> {
    let started = Instant::now();
    let mut lanes: Vec<Vec<EventEnvelope>> = (0..concurrency).map(|_| Vec::new()).collect();
    for commit in commits {
        let lane = fxhash(&commit.aggregate_id) % concurrency;
        lanes[lane].push(commit);
    }
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for commit in lane {
                    bus.append(std::slice::from_ref(&commit), ExpectedSeq::Any)
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

fn fxhash(text: &str) -> usize {
    text.bytes()
        .fold(0usize, |h, b| h.rotate_left(5) ^ usize::from(b))
        .wrapping_mul(0x9E37_79B9)
}

/// A release binary of this workspace (built by `cargo xtask bench`).
pub fn release_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| testkit::workspace_root().join("target"), PathBuf::from);
    target.join("release").join(name)
}

/// Reads a stream to its current end and returns every message.
pub async fn read_to_end(bus: &Bus, stream: bus::StreamName) -> Result<Vec<bus::StoredMessage>> {
    let last = bus.last_seq(stream).await?;
    let mut out = Vec::new();
    if last.0 == 0 {
        return Ok(out);
    }
    let mut reader = bus.read(stream, bus::ReadFrom::Start, None).await?;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(30), reader.next())
        .await
        .context("stream read stalled")?
    {
        let message = message?;
        let done = message.stream_seq >= last;
        out.push(message);
        if done {
            break;
        }
    }
    Ok(out)
}

/// The product's migrations, and the bench's own `jobs` table.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    projections::migrate(pool).await?;
    sqlx::query(jobs::CREATE_TABLE).execute(pool).await?;
    Ok(())
}

/// Every EVENTS projection `nebula projector` runs, and the bench's `jobs`.
pub fn event_projections() -> Vec<std::sync::Arc<dyn projections::Projection>> {
    let mut all: Vec<std::sync::Arc<dyn projections::Projection>> = projections::all()
        .into_iter()
        .filter(|p| p.stream() == bus::StreamName::Events)
        .collect();
    all.push(std::sync::Arc::new(jobs::Jobs));
    all
}

/// Runs every EVENTS projection in its own task, as `nebula projector` does, until `until` (if
/// given) or `cancel`. Each task returns the position it reached.
pub fn spawn_event_projections(
    pool: &PgPool,
    bus: &Bus,
    config: &projections::runner::RunnerConfig,
    until: Option<events::StreamSeq>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<Result<events::StreamSeq, projections::ProjectionError>>> {
    event_projections()
        .into_iter()
        .map(|projection| {
            let runner = projections::runner::Runner::new(
                pool.clone(),
                bus.clone(),
                projection,
                config.clone(),
            );
            let cancel = cancel.clone();
            tokio::spawn(async move { runner.run_until(until, cancel).await })
        })
        .collect()
}

/// Events per second, guarded against zero durations.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_urls_are_rewritten() {
        assert_eq!(
            super::with_database("postgres://u:p@h:5432/nebula", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://h", "x"), "postgres://h/x");
    }
}
