//! R8: the event log at its limit under `nebula up`. Writes are refused with a clear error (the
//! gateway's 503 says why), nothing acknowledged is lost, and once room is made (the stack
//! started again with a larger `events_max_bytes`) writes go on and the read models catch up.

use std::time::Duration;

use anyhow::{Result, bail};
use bench::gateway::GatewayProcess;
use bench::{Env, job_commits};
use bus::{BusErrorKind, ExpectedSeq};
use serde_json::json;

use crate::{Outcome, verify_log, wait_for_projections};

/// The event log's limit for the run: a few thousand bench events.
const SMALL: i64 = 2 << 20;

fn settings(max_bytes: i64) -> Vec<(&'static str, String)> {
    vec![
        ("NEBULA_EVENTS_MAX_BYTES", max_bytes.to_string()),
        ("REDIS_URL", testkit::redis_url()),
        ("NEBULA_AGENT__DISABLE_GPU_DETECTION", "true".to_owned()),
    ]
}

pub(crate) async fn r8_disk_full() -> Result<Outcome> {
    println!(
        "R8: the event log fills its {} MiB limit, then room is made",
        SMALL >> 20
    );
    let env = Env::new("chaos_r8", "").await?;
    let stack = GatewayProcess::start_with(&env, "up", &settings(SMALL)).await?;
    let commits = job_commits(20_000);
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    let mut reason = String::new();
    for commit in &commits {
        if !refused.is_empty() {
            refused.push(commit.clone());
            continue;
        }
        match env
            .bus
            .append(std::slice::from_ref(commit), ExpectedSeq::Any)
            .await
        {
            Ok(_) => acked.push(commit.clone()),
            Err(err) if err.kind() == BusErrorKind::Full => {
                reason = err.to_string();
                refused.push(commit.clone());
            }
            Err(err) => bail!("an append failed other than full: {err:#}"),
        }
    }
    if refused.is_empty() {
        bail!("{} events never filled {} bytes", commits.len(), SMALL);
    }
    let job = json!({ "mode": "txt2img", "params": { "prompt": "full", "steps": 1, "width": 64, "height": 64 } })
        .to_string();
    let (status, answer) = stack.call("POST", "/api/render/jobs", Some(&job)).await?;
    let said = answer["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if status != 503 || !said.contains("full") {
        bail!("a submit to a full log answered {status} {answer}");
    }
    let (_, storage) = stack.call("GET", "/api/storage", None).await?;
    let full = storage["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stream"] == "EVENTS"))
        .cloned()
        .unwrap_or_default();
    wait_for_projections(&env.pool, &env.bus, Duration::from_secs(300), None).await?;
    let (lost_before, duplicated_before) = verify_log(&env.pool, &acked).await?;

    // Room made: the stack starts again with a larger limit; the refused writes go through.
    drop(stack);
    let stack = GatewayProcess::start_with(&env, "up", &settings(SMALL * 64)).await?;
    for commit in &refused {
        env.bus
            .append(std::slice::from_ref(commit), ExpectedSeq::Any)
            .await?;
    }
    let (status, answer) = stack.call("POST", "/api/render/jobs", Some(&job)).await?;
    if status != 202 {
        bail!("a submit after room was made answered {status} {answer}");
    }
    wait_for_projections(&env.pool, &env.bus, Duration::from_secs(300), None).await?;
    let (lost, duplicated) = verify_log(&env.pool, &commits).await?;
    drop(stack);
    env.drop_database().await;
    Ok(Outcome {
        name: "R8 event log full",
        lost: lost + lost_before,
        duplicated: duplicated + duplicated_before,
        detail: format!(
            "{} of {} events fitted in {} MiB ({} bytes stored), the rest refused (\"{reason}\"; \
             the gateway: 503 \"{}…\"); all {} written once room was made",
            acked.len(),
            commits.len(),
            SMALL >> 20,
            full["bytes"],
            said.chars().take(50).collect::<String>(),
            commits.len(),
        ),
    })
}
