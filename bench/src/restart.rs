//! P15: how long `nebula up` takes to be healthy and dispatching again after a restart, with
//! 0, then more, then many events already in the log. The log grows with render job
//! lifecycles — copies of a job the stack really ran — which is the dispatcher's own history
//! (and the render projection's): a dispatcher that replayed it at every start would take
//! longer with each size. Every projection is caught up and the dispatcher's checkpoint has
//! reached the grown log before each timed restart. "Dispatching": a render job submitted right
//! after `/health` answers is assigned to the simulated GPU's node. The figures at every size
//! should be within 2× of each other: a restart's cost must not grow with history.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::{Env, preload};
use events::{CorrelationId, EventEnvelope, EventId, JobId};
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
    // A job the stack ran, start to finish: what the log is grown with.
    let mut lifecycle: Option<Vec<EventEnvelope>> = None;
    let mut stack = Some(GatewayProcess::start_with(&env, "up", &settings()).await?);
    for &size in sizes {
        let current = env.bus.last_seq(bus::StreamName::Events).await?.0;
        if size > current {
            let lifecycle = lifecycle
                .as_ref()
                .context("the first size must be the empty log")?;
            // Written while the stack is down (the live dispatcher would try to place them),
            // then folded by one untimed start, which leaves the checkpoint at the new head.
            drop(stack.take());
            let copies = (size - current).div_ceil(lifecycle.len() as u64) as usize;
            preload(&env.bus, copies_of(lifecycle, copies), 64).await?;
            let grown = env.bus.last_seq(bus::StreamName::Events).await?;
            let started = GatewayProcess::start_with(&env, "up", &settings()).await?;
            checkpointed(&env.bus, grown.0).await;
            stack = Some(started);
        }
        let running = stack.take().context("a stack")?;
        caught_up(&running).await?;
        drop(running);
        let started = Instant::now();
        let restarted = GatewayProcess::start_with(&env, "up", &settings()).await?;
        let job = dispatching(&restarted).await?;
        let events = env.bus.last_seq(bus::StreamName::Events).await?.0;
        out.at.push((events, started.elapsed()));
        if lifecycle.is_none() {
            lifecycle = Some(completed(&restarted, &env.bus, &job).await?);
        }
        stack = Some(restarted);
    }
    drop(stack);
    env.drop_database().await;
    Ok(out)
}

/// `copies` render jobs with `lifecycle`'s events, each under its own id and correlation.
fn copies_of(lifecycle: &[EventEnvelope], copies: usize) -> Vec<EventEnvelope> {
    let mut out = Vec::with_capacity(copies * lifecycle.len());
    for _ in 0..copies {
        let job = JobId::new().to_string();
        let correlation = CorrelationId::new();
        for event in lifecycle {
            let mut event = event.clone();
            event.aggregate_id.clone_from(&job);
            event.event_id = EventId::new();
            event.correlation_id = correlation;
            event.causation_id = None;
            out.push(event);
        }
    }
    out
}

/// Waits until the dispatcher's checkpoint reflects the log up to `seq`.
async fn checkpointed(bus: &bus::Bus, seq: u64) {
    testkit::wait_until(
        "the dispatcher's checkpoint at the grown log's head",
        Duration::from_secs(900),
        || async {
            let (at, _) = bus
                .load_fold::<serde_json::Value>("render-dispatcher", 1)
                .await?;
            (at.0 >= seq).then_some(())
        },
    )
    .await;
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

/// Submits a render job and waits until the dispatcher has placed it: its id.
async fn dispatching(stack: &GatewayProcess) -> Result<String> {
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
    Ok(id)
}

/// Job `id`'s events once it has completed.
async fn completed(stack: &GatewayProcess, bus: &bus::Bus, id: &str) -> Result<Vec<EventEnvelope>> {
    testkit::wait_until("the job completed", Duration::from_secs(600), || async {
        let (_, job) = stack
            .call("GET", &format!("/api/render/jobs/{id}"), None)
            .await
            .ok()?;
        (job["status"] == "completed").then_some(())
    })
    .await;
    Ok(bus.aggregate_events("render_job", id).await?)
}
