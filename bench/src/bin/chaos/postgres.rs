//! Postgres faults: crash-restarts under the projections (R3), and two minutes away under
//! `nebula up` (R7): the projections pause and resume, the gateway answers 503 with the reason.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::gateway::GatewayProcess;
use bench::{Env, job_commits, preload, spawn_event_projections};
use bus::{Bus, StreamName};
use projections::runner::RunnerConfig;
use tokio_util::sync::CancellationToken;

use crate::{Outcome, min_position, verify, verify_log, wait_caught_up, wait_for_projections};

/// A Postgres cluster of our own (so it can be crashed), run as the `postgres` user.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> Result<PrivatePostgres> {
        let root = PathBuf::from("/usr/lib/postgresql");
        let version = std::fs::read_dir(&root)
            .context("Postgres server binaries not found under /usr/lib/postgresql")?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|v| v.parse::<u32>().ok()))
            .max()
            .context("no Postgres version installed")?;
        let bin = root.join(version.to_string()).join("bin");
        let dir = tempfile::Builder::new()
            .prefix("nebula-chaos-pg-")
            .tempdir()?;
        run(Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path()))?;
        let data = dir.path().join("data");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-A", "trust", "-U", "nebula", "--no-sync", "-D"])
            .arg(&data))?;
        let postgres = PrivatePostgres {
            dir,
            bin,
            port: testkit::free_port(),
        };
        postgres.up()?;
        Ok(postgres)
    }

    fn pg_ctl(&self) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"));
        command
    }

    fn up(&self) -> Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        run(self
            .pg_ctl()
            .args(["-w", "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-o", &options, "start"]))
    }

    /// Like a crash: no shutdown checkpoint, connections cut.
    fn crash_restart(&self) -> Result<()> {
        self.stop()?;
        self.up()
    }

    /// Stops it the way a crash would (immediate: no checkpoint, connections cut).
    fn stop(&self) -> Result<()> {
        run(self.pg_ctl().args(["-m", "immediate", "-w", "stop"]))
    }

    /// Creates the `nebula` database, migrated, and a pool of `connections` to it.
    async fn nebula_database(&self, connections: u32) -> Result<sqlx::PgPool> {
        let admin = projections::connect(&self.url("postgres"), 2).await?;
        sqlx::query("CREATE DATABASE nebula")
            .execute(&admin)
            .await?;
        admin.close().await;
        let pool = projections::connect(&self.url("nebula"), connections).await?;
        bench::migrate(&pool).await?;
        Ok(pool)
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://nebula@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl()
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run(command: &mut Command) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

pub(crate) async fn r3_postgres_restart(events: u64, restarts: usize) -> Result<Outcome> {
    println!(
        "R3: crash-restart Postgres {restarts} times while the projections run ({events} events)"
    );
    let postgres = PrivatePostgres::start()?;
    let pool = postgres.nebula_database(8).await?;
    let nats = testkit::NatsServer::start();
    let bus = Bus::connect(bus::BusConfig {
        url: nats.url(),
        auth: bus::NatsAuth::nkey(nats.control_seed()),
        ..Default::default()
    })
    .await?;
    let commits = job_commits((events / 4) as usize);
    preload(&bus, commits.clone(), 32).await?;
    let cancel = CancellationToken::new();
    let config = RunnerConfig {
        batch_size: 200,
        ..RunnerConfig::default()
    };
    let runners = spawn_event_projections(&pool, &bus, &config, None, &cancel);
    let head = bus.last_seq(StreamName::Events).await?.0 as i64;
    let mut done = 0;
    while done < restarts {
        let before = min_position(&pool).await;
        if before >= head {
            break;
        }
        let started = Instant::now();
        while min_position(&pool).await < before + 1_000
            && started.elapsed() < Duration::from_secs(2)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        postgres.crash_restart()?;
        done += 1;
    }
    wait_caught_up(&pool, &bus, Duration::from_secs(300)).await?;
    cancel.cancel();
    for runner in runners {
        runner.await??;
    }
    if done == 0 {
        bail!("the projections finished before Postgres could be restarted; use a larger load");
    }
    let (lost, duplicated) = verify(&pool, &commits).await?;
    let retries: f64 = ["event_log", "nodes", "jobs", "render"]
        .iter()
        .map(|p| {
            bus.metrics()
                .get("nebula_projection_retries_total", &[("projection", p)])
        })
        .sum();
    pool.close().await;
    Ok(Outcome {
        name: "R3 Postgres crash-restart",
        lost,
        duplicated,
        detail: format!("{done} restarts, {retries} batch retries"),
    })
}

pub(crate) async fn r7_postgres_away(outage: Duration) -> Result<Outcome> {
    println!(
        "R7: Postgres away for {} s under `nebula up`, events published all along",
        outage.as_secs()
    );
    let postgres = PrivatePostgres::start()?;
    let pool = postgres.nebula_database(4).await?;
    let env = Env::new("chaos_r7", "").await?;
    let stack = GatewayProcess::start_with(
        &env,
        "up",
        &[
            ("DATABASE_URL", postgres.url("nebula")),
            ("REDIS_URL", testkit::redis_url()),
            ("NEBULA_AGENT__DISABLE_GPU_DETECTION", "true".to_owned()),
        ],
    )
    .await?;
    let commits = job_commits(3_000);
    let thirds: Vec<Vec<_>> = commits.chunks(4_000).map(<[_]>::to_vec).collect();
    preload(&env.bus, thirds[0].clone(), 8).await?;
    postgres.stop()?;
    let down = Instant::now();
    let during = {
        let (bus, commits) = (env.bus.clone(), thirds[1].clone());
        tokio::spawn(async move { preload(&bus, commits, 8).await })
    };
    let (mut unavailable, mut other, mut reason) = (0u32, Vec::new(), String::new());
    while down.elapsed() < outage {
        match stack.call("GET", "/api/render/jobs", None).await {
            Ok((503, answer)) => {
                unavailable += 1;
                reason = answer["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
            Ok((status, _)) => other.push(status),
            Err(err) => bail!("the gateway did not answer while Postgres was away: {err:#}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    during.await??;
    postgres.up()?;
    let back = Instant::now();
    preload(&env.bus, thirds[2].clone(), 8).await?;
    wait_for_projections(&pool, &env.bus, Duration::from_secs(300), None).await?;
    let caught_up = back.elapsed();
    let (status, _) = stack.call("GET", "/api/render/jobs", None).await?;
    let (lost, duplicated) = verify_log(&pool, &commits).await?;
    drop(stack);
    pool.close().await;
    env.drop_database().await;
    if !other.is_empty() || unavailable == 0 || !reason.contains("Postgres") || status != 200 {
        bail!(
            "while Postgres was away the gateway answered {unavailable} × 503 ({reason:?}) and \
             {other:?}; after, {status}"
        );
    }
    Ok(Outcome {
        name: "R7 Postgres away",
        lost,
        duplicated,
        detail: format!(
            "away {} s, {} events; the gateway answered 503 to all {unavailable} reads meanwhile \
             (\"{}…\"); the projections caught up {:.1} s after it came back",
            outage.as_secs(),
            commits.len(),
            reason.chars().take(60).collect::<String>(),
            caught_up.as_secs_f64()
        ),
    })
}
