//! P8: a container command's round trip through Nebula — REST → `container.command_requested`
//! → the router → the node's WORK subject → its agent → Docker → the outcome on the log → the
//! waiting answer — against the same stop and start done directly with bollard, in the same run
//! on the same engine (the project's own dockerd, `NEBULA_DOCKER_HOST`). P10: the live feed's
//! latency while viewers follow a container that floods its log.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::Env;
use bollard::query_parameters::StopContainerOptionsBuilder;
use testkit::docker::TestContainer;

use bench::gateway::GatewayProcess;

pub(crate) const NODE: &str = "bench-node";

/// Each round's latency: a stop then a start, through Nebula and directly.
pub(crate) struct RoundTrips {
    pub(crate) nebula: Vec<Duration>,
    pub(crate) direct: Vec<Duration>,
}

pub(crate) async fn round_trips(rounds: usize) -> Result<RoundTrips> {
    let host = std::env::var("NEBULA_DOCKER_HOST")
        .ok()
        .filter(|host| !host.is_empty())
        .context("NEBULA_DOCKER_HOST is not set: run through `cargo xtask bench`")?;
    let env = Env::new("bench_p8", "").await?;
    let stack = node_stack(
        &env,
        &host,
        &[("NEBULA_AGENT__CONTAINERS_INTERVAL_SECS", "0.5")],
    )
    .await?;
    let container = TestContainer::run_on(&host, "bench-p8", &[], &["sleep", "1000000"]);
    wait_listed(&stack, &container.name).await;

    let path = host.trim_start_matches("unix://");
    let docker = bollard::Docker::connect_with_unix(path, 60, bollard::API_DEFAULT_VERSION)?
        .negotiate_version()
        .await?;
    // Alternated round by round, so drift on a shared machine lands on both.
    let mut nebula = Vec::with_capacity(rounds * 2);
    let mut direct = Vec::with_capacity(rounds * 2);
    for _ in 0..rounds {
        for (action, body) in [("stop", r#"{"timeout_secs":0}"#), ("start", "{}")] {
            let path = format!(
                "/api/nodes/{NODE}/containers/{}/{action}?wait=30",
                container.name
            );
            let started = Instant::now();
            let (status, answer) = stack.call("POST", &path, Some(body)).await?;
            nebula.push(started.elapsed());
            if status != 200 || answer["status"] != "completed" {
                bail!("{action} through nebula: {status} {answer}");
            }
        }
        let started = Instant::now();
        let options = StopContainerOptionsBuilder::new().t(0).build();
        docker
            .stop_container(&container.name, Some(options))
            .await?;
        direct.push(started.elapsed());
        let started = Instant::now();
        docker.start_container(&container.name, None).await?;
        direct.push(started.elapsed());
    }
    drop(container);
    drop(stack);
    env.drop_database().await;
    Ok(RoundTrips { nebula, direct })
}

/// `nebula up` with this node's agent on the engine at `host` (and `extra` settings).
pub(crate) async fn node_stack(
    env: &Env,
    host: &str,
    extra: &[(&str, &str)],
) -> Result<GatewayProcess> {
    let mut settings = vec![
        ("NEBULA_DOCKER_HOST", host.to_owned()),
        ("NEBULA_AGENT__NODE_ID", NODE.to_owned()),
        ("NEBULA_AGENT_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("NEBULA_AGENT__DISABLE_GPU_DETECTION", "true".to_owned()),
        ("REDIS_URL", testkit::redis_url()),
    ];
    settings.extend(extra.iter().map(|(key, value)| (*key, (*value).to_owned())));
    GatewayProcess::start_with(env, "up", &settings).await
}

/// Waits until the node's agent lists the container `name`.
async fn wait_listed(stack: &GatewayProcess, name: &str) {
    testkit::wait_until(
        "the node to list the benchmark's container",
        Duration::from_secs(30),
        || async {
            let (_, listing) = stack
                .call("GET", &format!("/api/nodes/{NODE}/containers"), None)
                .await
                .ok()?;
            listing["containers"]
                .as_array()?
                .iter()
                .any(|c| c["name"] == name)
                .then_some(())
        },
    )
    .await;
}

/// The `q`-quantile (0..=1) of `samples`, in microseconds.
pub(crate) fn quantile_us(samples: &[Duration], q: f64) -> f64 {
    let mut sorted: Vec<u128> = samples.iter().map(Duration::as_micros).collect();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64
}

/// P10: the websocket feed's latency (P3's measure) on a stack whose node runs a container
/// writing its log as fast as it can, first with nobody following that log, then with
/// `followers` viewers following it; and the log rate the followers saw (kept + left out).
pub(crate) struct Flood {
    pub(crate) quiet: serde_json::Value,
    pub(crate) flooded: serde_json::Value,
    /// Bytes a second the container wrote, as one follower saw them (sent + skipped).
    pub(crate) log_bytes_per_sec: f64,
    /// Bytes a second one follower was sent.
    pub(crate) kept_bytes_per_sec: f64,
}

pub(crate) async fn flood(
    clients: usize,
    per_second: u64,
    seconds: u64,
    followers: usize,
) -> Result<Flood> {
    let host = std::env::var("NEBULA_DOCKER_HOST")
        .ok()
        .filter(|host| !host.is_empty())
        .context("NEBULA_DOCKER_HOST is not set: run through `cargo xtask bench`")?;
    let env = Env::new("bench_p10", "").await?;
    let stack = node_stack(&env, &host, &[]).await?;
    let token = stack.issue_token("bench-viewer", "viewer").await?;
    // 1 KiB a line, as fast as busybox's sh writes.
    let line = "x".repeat(1023);
    let script = format!("while :; do echo {line}; done");
    let chatty = TestContainer::run_on(&host, "bench-p10", &[], &["sh", "-c", &script]);
    let name = chatty.name.clone();
    wait_listed(&stack, &name).await;
    let quiet =
        crate::live::measure(&env, stack.port, &token, clients, per_second, seconds).await?;

    let path = format!("/api/nodes/{NODE}/containers/{name}/logs/follow?tail=0");
    let mut readers = Vec::new();
    for _ in 0..followers {
        let mut socket = crate::live::RawWebSocket::connect(stack.port, &path, &token).await?;
        readers.push(tokio::spawn(async move {
            let (mut kept, mut skipped) = (0u64, 0u64);
            while let Ok(Some(frame)) = socket.next_text().await {
                let Ok(frame) = serde_json::from_slice::<serde_json::Value>(&frame) else {
                    continue;
                };
                kept += frame["lines"].as_array().map_or(0, |lines| {
                    lines
                        .iter()
                        .map(|l| l["text"].as_str().map_or(0, |t| t.len() as u64 + 1))
                        .sum()
                });
                skipped += frame["skipped_bytes"].as_u64().unwrap_or(0);
            }
            (kept, skipped)
        }));
    }
    let started = Instant::now();
    let flooded =
        crate::live::measure(&env, stack.port, &token, clients, per_second, seconds).await?;
    let elapsed = started.elapsed().as_secs_f64();
    drop(chatty); // the follows end with the container
    let mut totals = (0u64, 0u64);
    for reader in readers {
        let (kept, skipped) = tokio::time::timeout(Duration::from_secs(30), reader).await??;
        totals = (totals.0 + kept, totals.1 + skipped);
    }
    drop(stack);
    env.drop_database().await;
    let per_follower = |bytes: u64| bytes as f64 / followers.max(1) as f64 / elapsed;
    Ok(Flood {
        quiet,
        flooded,
        log_bytes_per_sec: per_follower(totals.0 + totals.1),
        kept_bytes_per_sec: per_follower(totals.0),
    })
}
