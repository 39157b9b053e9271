//! P15: how long `nebula up` takes to be healthy and dispatching again after a restart, with
//! 0, then more, then many events already in the log (the log grown with bench job lifecycles
//! and every projection caught up before each restart). "Dispatching": a render job submitted
//! right after `/health` answers is assigned to the simulated GPU's node. The figures at every
//! size should be within 2× of each other: a restart's cost must not grow with history.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::{Env, job_commits, preload};
use serde_json::json;

use bench::gateway::GatewayProcess;

pub(crate) struct Restarts {
    /// (events in the log, time to healthy and dispatching)
    pub(crate) at: Vec<(u64, Duration)>,
}

fn settings() -> Vec<(&'static str, String)> {
    vec![
        ("NEBULA_RENDER__NODE_ID", "bench-gpu".to_owned()),
        ("NEBULA_RENDER__SIMULATED_STEP_MS", "1".to_owned()),
        ("NEBULA_AGENT__DISABLE_GPU_DETECTION", "true".to_owned()),
        ("REDIS_URL", testkit::redis_url()),
    ]
}

/// Restarts after the log holds each of `sizes` events.
pub(crate) async fn restarts(sizes: &[u64]) -> Result<Restarts> {
    let env = Env::new("bench_p15", "").await?;
    let mut out = Restarts { at: Vec::new() };
    let mut stack = Some(GatewayProcess::start_with(&env, "up", &settings()).await?);
    for &size in sizes {
        let current = env.bus.last_seq(bus::StreamName::Events).await?.0;
        if size > current {
            preload(
                &env.bus,
                job_commits((size - current).div_ceil(4) as usize),
                64,
            )
            .await?;
        }
        let running = stack.take().context("a stack")?;
        caught_up(&running).await?;
        drop(running);
        let started = Instant::now();
        let restarted = GatewayProcess::start_with(&env, "up", &settings()).await?;
        dispatching(&restarted).await?;
        let events = env.bus.last_seq(bus::StreamName::Events).await?.0;
        out.at.push((events, started.elapsed()));
        stack = Some(restarted);
    }
    drop(stack);
    env.drop_database().await;
    Ok(out)
}

/// Waits until every projection has reached its stream's end.
async fn caught_up(stack: &GatewayProcess) -> Result<()> {
    testkit::wait_until(
        "every projection at its stream's end",
        Duration::from_secs(900),
        || async {
            let (_, answer) = stack.call("GET", "/api/projections", None).await.ok()?;
            let behind: i64 = answer["projections"]
                .as_array()?
                .iter()
                .filter_map(|p| p["lag"].as_i64())
                .sum();
            (behind == 0).then_some(())
        },
    )
    .await;
    Ok(())
}

/// Submits a render job and waits until the dispatcher has placed it.
async fn dispatching(stack: &GatewayProcess) -> Result<()> {
    let body = json!({ "mode": "txt2img", "params": { "prompt": "restart", "steps": 1, "width": 64, "height": 64 } })
        .to_string();
    let (status, answer) = stack.call("POST", "/api/render/jobs", Some(&body)).await?;
    if status != 202 {
        bail!("the job was refused: {status} {answer}");
    }
    let id = answer["job_id"].as_str().context("no job id")?.to_owned();
    testkit::wait_until("the job placed", Duration::from_secs(600), || async {
        let (_, job) = stack
            .call("GET", &format!("/api/render/jobs/{id}"), None)
            .await
            .ok()?;
        job["node_id"].is_string().then_some(())
    })
    .await;
    Ok(())
}
