//! `cargo xtask chaos`: full-size fault runs. Each prints how many events were lost and how many
//! applied twice; any non-zero count makes the whole run exit non-zero.
//!
//! - R1: the projector process is SIGKILLed 20 times during a 100k-event load.
//! - R2: nats-server is SIGKILLed and restarted 5 times under continuous publishing.
//! - R3: Postgres is crash-restarted (immediate stop) while the projections run.
//! - R4: 1% of the events are poison: each ends in the DLQ, every other event is applied.
//! - R5: a chat flood, 50 commands a second for a minute, against the fake Twitch (`chat`).
//! - R6: Redis away for two minutes under chat commands, then back empty (`chat`).
//! - R7: Postgres away for two minutes under `nebula up` (`postgres`).
//! - R8: the event log fills its limit; writes are refused; space is made (`disk`).

mod chat;
mod disk;
mod postgres;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::{Env, job_commits, preload, read_to_end, release_binary, spawn_event_projections};
use bus::{Bus, StreamName};
use events::{EventEnvelope, EventId};
use projections::runner::RunnerConfig;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub(crate) struct Outcome {
    pub(crate) name: &'static str,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) detail: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--projector") {
        return projector().await;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    let args: Vec<String> = std::env::args().collect();
    // `--only r3` (or `r5,r6`) runs only those scenarios (for iterating on them).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let wanted = |run: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|o| o == run))
    };
    let scale = if quick { 10 } else { 1 };
    let mut outcomes = Vec::new();
    if wanted("r1") {
        outcomes.push(r1_projector_kills(100_000 / scale, if quick { 5 } else { 20 }).await?);
    }
    if wanted("r2") {
        outcomes.push(r2_nats_restarts(50_000 / scale, 5).await?);
    }
    if wanted("r3") {
        outcomes.push(postgres::r3_postgres_restart(40_000 / scale, 3).await?);
    }
    if wanted("r4") {
        outcomes.push(r4_poison(100_000 / scale).await?);
    }
    if wanted("r5") {
        outcomes.push(chat::r5_flood(if quick { 10 } else { 60 }).await?);
    }
    if wanted("r6") {
        outcomes
            .push(chat::r6_redis_outage(Duration::from_secs(if quick { 10 } else { 120 })).await?);
    }
    if wanted("r7") {
        outcomes.push(
            postgres::r7_postgres_away(Duration::from_secs(if quick { 10 } else { 120 })).await?,
        );
    }
    if wanted("r8") {
        outcomes.push(disk::r8_disk_full().await?);
    }
    println!("\n| run | lost | duplicated | detail |\n|---|---|---|---|");
    let mut failed = false;
    for outcome in &outcomes {
        println!(
            "| {} | {} | {} | {} |",
            outcome.name, outcome.lost, outcome.duplicated, outcome.detail
        );
        failed |= outcome.lost > 0 || outcome.duplicated > 0;
    }
    if failed {
        bail!("events were lost or duplicated");
    }
    println!("\nall runs: nothing lost, nothing duplicated");
    Ok(())
}

/// `--projector`: every EVENTS projection, from `NATS_URL` into `DATABASE_URL`, until killed.
async fn projector() -> Result<()> {
    let bus = Bus::connect(bus::BusConfig {
        url: std::env::var("NATS_URL").context("NATS_URL is not set")?,
        auth: bus::NatsAuth::nkey(
            std::env::var_os("NATS_NKEY_FILE").context("NATS_NKEY_FILE is not set")?,
        ),
        ..Default::default()
    })
    .await?;
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL is not set")?;
    let pool = projections::connect(&url, 8).await?;
    let cancel = CancellationToken::new();
    let runners = spawn_event_projections(&pool, &bus, &RunnerConfig::default(), None, &cancel);
    for runner in runners {
        runner.await??;
    }
    Ok(())
}

/// What the read models say about `published`: (lost, duplicated).
pub(crate) async fn verify(pool: &PgPool, published: &[EventEnvelope]) -> Result<(u64, u64)> {
    let logged: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT event_id FROM event_log")
        .fetch_all(pool)
        .await?;
    let unique: HashSet<EventId> = logged.iter().copied().map(EventId).collect();
    let duplicated = (logged.len() - unique.len()) as u64;
    let mut lost = published
        .iter()
        .filter(|e| !unique.contains(&e.event_id))
        .count() as u64;
    // The jobs model must be the fold: each job in the state of its last event.
    let mut expected: HashMap<&str, &str> = HashMap::new();
    for event in published {
        let status = match event.event_type.as_str() {
            "job.requested" => "requested",
            "job.started" | "job.progressed" => "running",
            "job.completed" => "completed",
            "job.failed" => "failed",
            _ => "cancelled",
        };
        expected.insert(&event.aggregate_id, status);
    }
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT job_id, status FROM jobs")
        .fetch_all(pool)
        .await?;
    let actual: HashMap<String, String> = rows.into_iter().collect();
    lost += expected
        .iter()
        .filter(|(job, status)| actual.get(**job).map(String::as_str) != Some(**status))
        .count() as u64;
    Ok((lost, duplicated))
}

/// What `nebula up`'s event log read model says about `published`: (lost, duplicated).
pub(crate) async fn verify_log(pool: &PgPool, published: &[EventEnvelope]) -> Result<(u64, u64)> {
    let logged: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT event_id FROM event_log")
        .fetch_all(pool)
        .await?;
    let unique: HashSet<EventId> = logged.iter().copied().map(EventId).collect();
    let lost = published
        .iter()
        .filter(|e| !unique.contains(&e.event_id))
        .count() as u64;
    Ok((lost, (logged.len() - unique.len()) as u64))
}

/// Waits until the bench's projections (`--projector`, or spawned here) reach the log's end.
pub(crate) async fn wait_caught_up(pool: &PgPool, bus: &Bus, limit: Duration) -> Result<()> {
    wait_for_projections(pool, bus, limit, Some(bench::event_projections().len())).await
}

/// Waits until every projection of EVENTS in `pool` (`expected` of them, when known) has
/// reached the log's end.
pub(crate) async fn wait_for_projections(
    pool: &PgPool,
    bus: &Bus,
    limit: Duration,
    expected: Option<usize>,
) -> Result<()> {
    let head = bus.last_seq(StreamName::Events).await?.0 as i64;
    let deadline = Instant::now() + limit;
    loop {
        let query = sqlx::query_scalar(
            "SELECT last_seq FROM projection_checkpoints WHERE stream = 'EVENTS'",
        )
        .fetch_all(pool);
        // Bounded: a connection left dead by a Postgres crash must not hang the check.
        let positions: Vec<i64> = tokio::time::timeout(Duration::from_secs(5), query)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let counted = expected.map_or(!positions.is_empty(), |n| positions.len() == n);
        if counted && positions.iter().all(|p| *p >= head) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("projections did not catch up to {head} in {limit:?}: {positions:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn min_position(pool: &PgPool) -> i64 {
    let query = sqlx::query_scalar(
        "SELECT COALESCE(min(last_seq), 0) FROM projection_checkpoints WHERE stream = 'EVENTS'",
    )
    .fetch_one(pool);
    tokio::time::timeout(Duration::from_secs(5), query)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0)
}

/// A projector process to kill: this binary with `--projector`, running the same runners as
/// `nebula projector` plus the bench's `jobs` model.
fn spawn_projector(env: &Env) -> Result<Child> {
    let binary = release_binary("chaos");
    Command::new(&binary)
        .arg("--projector")
        .env("NATS_URL", env.nats.url())
        .env("NATS_NKEY_FILE", env.nats.control_seed())
        .env("DATABASE_URL", &env.database_url)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "failed to start {} (run through `cargo xtask chaos`)",
                binary.display()
            )
        })
}

async fn r1_projector_kills(events: u64, kills: usize) -> Result<Outcome> {
    println!("R1: SIGKILL the projector {kills} times during a {events}-event load");
    let env = Env::new("chaos_r1", "").await?;
    let commits = job_commits((events / 4) as usize);
    let load = {
        let (bus, commits) = (env.bus.clone(), commits.clone());
        tokio::spawn(async move { preload(&bus, commits, 4).await })
    };
    let mut projector = spawn_projector(&env)?;
    let mut done = 0;
    while done < kills {
        let before = min_position(&env.pool).await;
        let started = Instant::now();
        // Kill mid-stride: after some progress, or after a while if the load is slow.
        while min_position(&env.pool).await < before + 500
            && started.elapsed() < Duration::from_millis(400)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        projector.kill()?;
        projector.wait()?;
        done += 1;
        projector = spawn_projector(&env)?;
    }
    let load_time = load.await??;
    wait_caught_up(&env.pool, &env.bus, Duration::from_secs(300)).await?;
    projector.kill()?;
    projector.wait()?;
    let (lost, duplicated) = verify(&env.pool, &commits).await?;
    let detail = format!("{done} kills, load took {:.1} s", load_time.as_secs_f64());
    env.drop_database().await;
    Ok(Outcome {
        name: "R1 projector SIGKILL",
        lost,
        duplicated,
        detail,
    })
}

async fn r2_nats_restarts(events: u64, restarts: usize) -> Result<Outcome> {
    println!(
        "R2: restart nats-server {restarts} times under continuous publishing ({events} events)"
    );
    let mut env = Env::new("chaos_r2", "").await?;
    let commits = job_commits((events / 4) as usize);
    let load = {
        let (bus, commits) = (env.bus.clone(), commits.clone());
        tokio::spawn(async move { preload(&bus, commits, 8).await })
    };
    // Spread the restarts over the load: each waits for this many new events first.
    let between = (events / (restarts as u64 * 5)).max(100) as f64;
    let mut done = 0;
    while done < restarts && !load.is_finished() {
        let before = env
            .bus
            .metrics()
            .get("nebula_bus_events_appended_total", &[]);
        let started = Instant::now();
        while env
            .bus
            .metrics()
            .get("nebula_bus_events_appended_total", &[])
            < before + between
            && started.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        env.nats.restart();
        done += 1;
    }
    let load_time = load.await??;
    if done < restarts {
        bail!("the load finished after only {done} restarts; use a larger load");
    }
    let stored = read_to_end(&env.bus, StreamName::Events).await?;
    let ids: Vec<EventId> = stored
        .iter()
        .flat_map(|m| m.decode_commit().unwrap_or_default())
        .map(|e| e.event_id)
        .collect();
    let unique: HashSet<EventId> = ids.iter().copied().collect();
    let lost = commits
        .iter()
        .filter(|e| !unique.contains(&e.event_id))
        .count() as u64;
    let duplicated = (ids.len() - unique.len()) as u64;
    let retries = env
        .bus
        .metrics()
        .get("nebula_bus_publish_retries_total", &[]);
    let detail = format!(
        "{done} restarts, {retries} publish retries, {} duplicate acks, load took {:.1} s",
        env.bus
            .metrics()
            .get("nebula_bus_publish_duplicates_total", &[]),
        load_time.as_secs_f64()
    );
    env.reset_database().await?;
    env.drop_database().await;
    Ok(Outcome {
        name: "R2 nats-server restarts",
        lost,
        duplicated,
        detail,
    })
}

async fn r4_poison(events: u64) -> Result<Outcome> {
    println!("R4: 1% poison among {events} events");
    let env = Env::new("chaos_r4", "").await?;
    // Poison: valid events whose data Postgres cannot store (a NUL character in JSON text).
    let mut published = Vec::new();
    let mut poison = HashSet::new();
    let jobs = (events / 4) as usize;
    let mut commits = job_commits(jobs);
    for (i, chunk) in commits.chunks_mut(4).enumerate() {
        if i % 25 == 0 {
            // 1 in 100 events: this job's first event carries the poison; the job stops there.
            chunk[0].data["params"]["prompt"] = serde_json::json!("bad\u{0000}prompt");
            poison.insert(chunk[0].event_id);
            published.push(chunk[0].clone());
        } else {
            published.extend_from_slice(chunk);
        }
    }
    commits = published.clone();
    preload(&env.bus, commits, 32).await?;
    let started = Instant::now();
    let cancel = CancellationToken::new();
    let config = RunnerConfig {
        backoff: common::Backoff::new(Duration::from_millis(1), Duration::from_millis(5)),
        ..RunnerConfig::default()
    };
    let runners = spawn_event_projections(&env.pool, &env.bus, &config, None, &cancel);
    wait_caught_up(&env.pool, &env.bus, Duration::from_secs(600)).await?;
    let elapsed = started.elapsed();
    cancel.cancel();
    for runner in runners {
        runner.await??;
    }
    // Every poison event is in the DLQ, once per projection that reads it.
    let letters = read_to_end(&env.bus, StreamName::Dlq).await?;
    let mut dead: HashMap<&str, HashSet<EventId>> = HashMap::new();
    let by_seq: HashMap<u64, EventId> = read_to_end(&env.bus, StreamName::Events)
        .await?
        .iter()
        .filter_map(|m| {
            m.decode_commit()
                .ok()
                .map(|c| (m.stream_seq.0, c[0].event_id))
        })
        .collect();
    for letter in &letters {
        let origin: u64 = letter
            .header("Nebula-Origin-Seq")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if let Some(id) = by_seq.get(&origin) {
            dead.entry(letter.subject.rsplit('.').next().unwrap_or(""))
                .or_default()
                .insert(*id);
        }
    }
    let mut lost = 0;
    for projection in ["projection-event_log", "projection-jobs"] {
        let caught = dead.get(projection).cloned().unwrap_or_default();
        lost += poison.difference(&caught).count() as u64;
        lost += caught.difference(&poison).count() as u64; // a good event dead-lettered is lost too
    }
    let healthy: Vec<EventEnvelope> = published
        .iter()
        .filter(|e| !poison.contains(&e.event_id))
        .cloned()
        .collect();
    let (healthy_lost, duplicated) = verify(&env.pool, &healthy).await?;
    let applied_poison: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE params::text LIKE '%bad%'")
            .fetch_one(&env.pool)
            .await?;
    let detail = format!(
        "{} poison events, {} dead letters, applied in {:.1} s",
        poison.len(),
        letters.len(),
        elapsed.as_secs_f64()
    );
    env.drop_database().await;
    Ok(Outcome {
        name: "R4 1% poison",
        lost: lost + healthy_lost + applied_poison as u64,
        duplicated,
        detail,
    })
}
