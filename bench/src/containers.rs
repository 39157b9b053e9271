//! P8: a container command's round trip through Nebula — REST → `container.command_requested`
//! → the router → the node's WORK subject → its agent → Docker → the outcome on the log → the
//! waiting answer — against the same stop and start done directly with bollard, in the same run
//! on the same engine (the project's own dockerd, `NEBULA_DOCKER_HOST`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::Env;
use bollard::query_parameters::StopContainerOptionsBuilder;
use testkit::docker::TestContainer;

use crate::gateway::GatewayProcess;

const NODE: &str = "bench-node";

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
    let stack = GatewayProcess::start_with(
        &env,
        "up",
        &[
            ("NEBULA_DOCKER_HOST", host.clone()),
            ("NEBULA_AGENT__NODE_ID", NODE.to_owned()),
            ("NEBULA_AGENT_HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("NEBULA_AGENT__CONTAINERS_INTERVAL_SECS", "0.5".to_owned()),
            ("NEBULA_AGENT__DISABLE_GPU_DETECTION", "true".to_owned()),
            ("REDIS_URL", testkit::redis_url()),
        ],
    )
    .await?;
    let container = TestContainer::run_on(&host, "bench-p8", &[], &["sleep", "1000000"]);
    let name = container.name.clone();
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
                .any(|c| c["name"] == name.as_str())
                .then_some(())
        },
    )
    .await;

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
