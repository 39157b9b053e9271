//! P11: a deploy through the Deploy Center end to end — REST → `deploy.requested` → the
//! deployer → the node's agent (stop the old release, remove a leftover, create and start the
//! new one) → the check answering → the run finished on the log, read back with `?wait=` — and
//! a rollback the same way, each against the same container operations and the same HTTP check
//! done directly with bollard in the same run on the same engine.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::Env;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use serde_json::json;

use crate::containers::{NODE, node_stack};
use bench::gateway::GatewayProcess;

pub(crate) struct Deploys {
    pub(crate) deploy: Vec<Duration>,
    pub(crate) rollback: Vec<Duration>,
    pub(crate) direct: Vec<Duration>,
}

fn command(port: u16, version: &str) -> String {
    // sh stays PID 1 and exits on SIGTERM, so a stop is not Docker's 10 s wait for a process
    // that ignores it (httpd as PID 1 would): what is measured is the work, not the grace
    format!(
        "echo {version} > /index.html; trap 'exit 0' TERM; httpd -f -p 127.0.0.1:{port} -h / & wait"
    )
}

/// One run asked for at `path`, followed until it finished: how long, request to outcome.
async fn timed_run(stack: &GatewayProcess, path: &str, body: &str) -> Result<Duration> {
    let started = Instant::now();
    let (status, answer) = stack.call("POST", path, Some(body)).await?;
    if status != 202 {
        bail!("{path}: {status} {answer}");
    }
    let run_id = answer["run_id"].as_str().context("no run id")?.to_owned();
    loop {
        let (status, run) = stack
            .call("GET", &format!("/api/deploys/{run_id}?wait=30"), None)
            .await?;
        if status == 200 {
            if run["status"] != "succeeded" {
                bail!("run {run_id} ended {run}");
            }
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("run {run_id} did not finish in 120 s");
        }
    }
}

/// How often the check is tried while a release comes up: the deployer's
/// `deploy.health_interval_secs` in this run, and the direct path's polling alike.
const CHECK_INTERVAL: Duration = Duration::from_millis(50);

async fn healthy(client: &reqwest::Client, url: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{url} did not answer in 30 s");
        }
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}

pub(crate) async fn deploys(rounds: usize) -> Result<Deploys> {
    let host = std::env::var("NEBULA_DOCKER_HOST")
        .ok()
        .filter(|host| !host.is_empty())
        .context("NEBULA_DOCKER_HOST is not set: run through `cargo xtask bench`")?;
    let env = Env::new("bench_p11", "").await?;
    let stack = node_stack(
        &env,
        &host,
        &[(
            "NEBULA_DEPLOY__HEALTH_INTERVAL_SECS",
            &CHECK_INTERVAL.as_secs_f64().to_string(),
        )],
    )
    .await?;
    let port = testkit::free_port();
    let url = format!("http://127.0.0.1:{port}/index.html");
    let define = |version: &str| {
        json!({
            "name": "bench-web",
            "containers": [{ "name": "web", "spec": {
                "image": testkit::docker::TEST_IMAGE, "command": ["sh", "-c", command(port, version)], "network": "host",
            }}],
            "health": { "http": url, "timeout_secs": 30 },
            "nodes": [NODE],
        })
        .to_string()
    };
    // the node's agent must be there before the first run
    testkit::wait_until(
        "the bench node's agent",
        Duration::from_secs(30),
        || async {
            let (_, listing) = stack
                .call("GET", &format!("/api/nodes/{NODE}/containers"), None)
                .await
                .ok()?;
            (listing["docker"] == "available").then_some(())
        },
    )
    .await;
    let (status, answer) = stack.call("POST", "/api/apps", Some(&define("v0"))).await?;
    if status != 201 {
        bail!("defining the app: {status} {answer}");
    }
    timed_run(&stack, "/api/apps/bench-web/deploy", "{}").await?;

    let path = host.trim_start_matches("unix://");
    let docker = bollard::Docker::connect_with_unix(path, 60, bollard::API_DEFAULT_VERSION)?
        .negotiate_version()
        .await?;
    let client = reqwest::Client::new();
    let direct_port = testkit::free_port();
    let direct_url = format!("http://127.0.0.1:{direct_port}/index.html");
    let mut deploy = Vec::with_capacity(rounds);
    let mut rollback = Vec::with_capacity(rounds);
    let mut direct = Vec::with_capacity(rounds);
    let mut previous: Option<String> = None;
    for round in 0..rounds {
        // Through Nebula: a new release, then back to the one before.
        let version = format!("v{}", round + 1);
        let (status, answer) = stack
            .call("PUT", "/api/apps/bench-web", Some(&define(&version)))
            .await?;
        if status != 200 {
            bail!("redefining the app: {status} {answer}");
        }
        deploy.push(timed_run(&stack, "/api/apps/bench-web/deploy", "{}").await?);
        rollback.push(timed_run(&stack, "/api/apps/bench-web/rollback", "{}").await?);

        // Directly: stop the old container, remove a leftover, create and start the new one,
        // poll the same check.
        let started = Instant::now();
        if let Some(old) = &previous {
            docker
                .stop_container(old, Some(StopContainerOptionsBuilder::new().t(10).build()))
                .await?;
        }
        let name = format!("bench-p11-direct-{round}");
        let _ = docker
            .remove_container(
                &name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
        let body = ContainerCreateBody {
            image: Some(testkit::docker::TEST_IMAGE.to_owned()),
            cmd: Some(vec![
                "sh".into(),
                "-c".into(),
                command(direct_port, &version),
            ]),
            host_config: Some(HostConfig {
                network_mode: Some("host".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await?;
        docker.start_container(&name, None).await?;
        healthy(&client, &direct_url).await?;
        direct.push(started.elapsed());
        if let Some(old) = previous.replace(name) {
            let _ = docker
                .remove_container(
                    &old,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await;
        }
    }
    if let Some(old) = previous {
        let _ = docker
            .remove_container(
                &old,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
    }
    let names = testkit::docker::docker_on(
        &host,
        &[
            "ps",
            "-a",
            "--filter",
            "label=nebula.app=bench-web",
            "--format",
            "{{.Names}}",
        ],
    );
    for name in names.lines() {
        let _ = docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
    }
    drop(stack);
    env.drop_database().await;
    Ok(Deploys {
        deploy,
        rollback,
        direct,
    })
}
