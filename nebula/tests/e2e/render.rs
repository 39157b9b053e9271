//! The Creative Studio end to end: REST → render queue → dispatcher → worker → ComfyUI (the
//! test kit's faithful fake) or the simulated GPU → artifact store → read model, over a real
//! nats-server and Postgres.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bus::Bus;
use events::EventEnvelope;
use events::render::RenderJobEvent;
use natsauth::Identity;
use nebula::{Config, Part, Parts};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::comfyui::FakeComfy;
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};

use common::TOKEN;

/// A studio: gateway, projector and dispatcher, with quick timings.
fn studio_config(nats: &NatsServer, pool: &PgPool, state: &Path) -> Config {
    let mut config = common::config(nats, pool, state);
    config.render.dispatcher.node_timeout = Duration::from_secs(2);
    config.render.worker.ack_wait_secs = 2.0;
    config
}

const STUDIO: Parts = Parts::of(&[Part::Gateway, Part::Projector, Part::Dispatcher]);

async fn submit(client: &reqwest::Client, base: &str, body: Value) -> reqwest::Response {
    client
        .post(format!("{base}/api/render/jobs"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn submit_ok(client: &reqwest::Client, base: &str, body: Value) -> String {
    let response = submit(client, base, body).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let body: Value = response.json().await.unwrap();
    assert!(body["correlation_id"].is_string());
    body["job_id"].as_str().unwrap().to_owned()
}

fn txt2img(prompt: &str, seed: u64, priority: i32, steps: u32) -> Value {
    json!({
        "mode": "txt2img",
        "priority": priority,
        "params": { "prompt": prompt, "seed": seed, "steps": steps, "width": 64, "height": 64 },
    })
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> reqwest::StatusCode {
    client
        .post(url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn job(client: &reqwest::Client, base: &str, id: &str) -> Option<Value> {
    let response = client
        .get(format!("{base}/api/render/jobs/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    if response.status() == 404 {
        return None;
    }
    Some(response.json().await.unwrap())
}

async fn wait_status(client: &reqwest::Client, base: &str, id: &str, status: &str) -> Value {
    wait_until(
        &format!("render job {id} to be {status}"),
        Duration::from_secs(30),
        || async {
            job(client, base, id)
                .await
                .filter(|job| job["status"] == status)
        },
    )
    .await
}

/// Every event of every render job, in log order.
async fn render_log(bus: &Bus) -> Vec<EventEnvelope> {
    let mut reader = bus
        .read(
            bus::StreamName::Events,
            bus::ReadFrom::Start,
            Some("nebula.events.render_job.>".into()),
        )
        .await
        .unwrap();
    let last = bus.last_seq(bus::StreamName::Events).await.unwrap();
    let mut out = Vec::new();
    use futures::StreamExt;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(500), reader.next()).await
    {
        let done = message.stream_seq >= last;
        out.extend(message.decode_commit().unwrap());
        if done {
            break;
        }
    }
    out
}

fn of_type<'a>(log: &'a [EventEnvelope], job: &str, event_type: &str) -> Vec<&'a EventEnvelope> {
    log.iter()
        .filter(|e| e.aggregate_id == job && e.event_type == event_type)
        .collect()
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn the_queue_holds_100_jobs_and_refuses_the_101st_clearly(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = studio_config(&nats, &pool, state.path());
    // No worker anywhere: nothing leaves the queue by running.
    let running = nebula::start(&config, STUDIO).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let client = common::http();
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(submit_ok(&client, &base, txt2img("a queue", i, 0, 4)).await);
    }
    let refused = submit(&client, &base, txt2img("one too many", 100, 0, 4)).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rejected");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the render queue is full (100 jobs queued)"),
        "{body}"
    );
    let queue = wait_until("the queue read model", DEFAULT_WAIT, || async {
        let queue = common::get_json(&client, format!("{base}/api/render/queue")).await;
        (queue["queued"] == 100).then_some(queue)
    })
    .await;
    assert_eq!(queue["cap"], 100);
    // A cancelled job gives its place back.
    assert_eq!(
        post(
            &client,
            format!("{base}/api/render/jobs/{}/cancel", ids[0]),
            json!({}),
        )
        .await,
        202
    );
    wait_until("a place to free up", DEFAULT_WAIT, || async {
        let response = submit(&client, &base, txt2img("next in line", 101, 0, 4)).await;
        (response.status() == 202).then_some(())
    })
    .await;
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn bad_render_requests_get_clear_errors(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = studio_config(&nats, &pool, state.path());
    let running = nebula::start(&config, Parts::GATEWAY).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let client = common::http();
    let cases = [
        (json!({"mode": "sketch"}), "unknown variant"),
        (
            json!({"mode": "txt2img", "params": {}}),
            "txt2img needs a prompt",
        ),
        (
            json!({"mode": "txt2img", "params": {"prompt": "x", "steps": 0}}),
            "steps must be 1..=150",
        ),
        (
            json!({"mode": "txt2img", "params": {"prompt": "x", "width": 100}}),
            "width must be a multiple of 8",
        ),
        (
            json!({"mode": "txt2img", "params": {"prompt": "x", "sampler": "euler"}}),
            "unknown field",
        ),
        (
            json!({"mode": "img2img", "params": {"prompt": "x"}}),
            "img2img needs init_image",
        ),
        (
            json!({"mode": "img2img", "params": {"prompt": "x", "init_image": {"sha256": "ab".repeat(32)}}}),
            "is not in the artifact store",
        ),
        (
            json!({"mode": "upscale", "params": {"init_image": {"sha256": "ab".repeat(32)}}}),
            "upscale needs upscale_model",
        ),
    ];
    for (body, expected) in cases {
        let response = submit(&client, &base, body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    // Inputs must be images; artifacts need the token and a real hash.
    let upload = |bytes: &'static [u8], content_type: &'static str| {
        client
            .post(format!("{base}/api/render/inputs"))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(bytes)
            .send()
    };
    assert_eq!(
        upload(b"not a png", "image/png").await.unwrap().status(),
        400
    );
    assert_eq!(
        upload(b"\x89PNG\r\n\x1a\n", "text/plain")
            .await
            .unwrap()
            .status(),
        415
    );
    let stored: Value = upload(b"\x89PNG\r\n\x1a\nrest", "image/png")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sha = stored["sha256"].as_str().unwrap();
    let artifact = format!("{base}/api/render/artifacts/{sha}");
    assert_eq!(client.get(&artifact).send().await.unwrap().status(), 401);
    let served = client
        .get(&artifact)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "image/png");
    let bad = format!("{base}/api/render/artifacts/..%2f..%2fetc");
    assert_eq!(
        client
            .get(bad)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let missing = format!("{base}/api/render/artifacts/{}", "0".repeat(64));
    assert_eq!(
        client
            .get(missing)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let unknown = format!("{base}/api/render/jobs/{}", uuid::Uuid::now_v7());
    assert_eq!(
        client
            .get(unknown)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_node_runs_at_most_two_jobs_and_the_queue_goes_by_priority(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = studio_config(&nats, &pool, state.path());
    config.render.node_id = Some("gpu-sim".into());
    config.render.worker.slots = 4; // the dispatcher's limit (2) is the one under test
    let running = nebula::start(&config, STUDIO.with(Part::RenderWorker))
        .await
        .unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let client = common::http();
    assert_eq!(
        post(&client, format!("{base}/api/render/queue/pause"), json!({})).await,
        202
    );
    let mut ids = Vec::new();
    for (i, priority) in [0, 0, 5, 1, 5, 0].into_iter().enumerate() {
        ids.push(submit_ok(&client, &base, txt2img("order", i as u64, priority, 5)).await);
    }
    // Reordering: the last job jumps ahead of everything.
    assert_eq!(
        post(
            &client,
            format!("{base}/api/render/jobs/{}/priority", ids[5]),
            json!({"priority": 9}),
        )
        .await,
        202
    );
    assert_eq!(
        post(
            &client,
            format!("{base}/api/render/queue/resume"),
            json!({})
        )
        .await,
        202
    );
    for id in &ids {
        let done = wait_status(&client, &base, id, "completed").await;
        assert_eq!(done["backend"], "simulated");
        assert_eq!(done["node_id"], "gpu-sim");
        assert_eq!(done["artifacts"].as_array().unwrap().len(), 1);
    }
    let log = render_log(&running.bus).await;
    let assigned: Vec<&str> = log
        .iter()
        .filter(|e| e.event_type == "render.job_assigned")
        .map(|e| e.aggregate_id.as_str())
        .collect();
    let expected: Vec<&str> = [5, 2, 4, 3, 0, 1]
        .iter()
        .map(|&i| ids[i].as_str())
        .collect();
    assert_eq!(
        assigned, expected,
        "placement must follow priority, then submission"
    );
    // At no point in the log were more than two jobs assigned to or running on the node.
    let mut active: HashMap<&str, bool> = HashMap::new();
    let mut most = 0;
    for event in &log {
        match event.event_type.as_str() {
            "render.job_assigned" => {
                active.insert(&event.aggregate_id, true);
            }
            "render.job_completed" | "render.job_failed" | "render.job_cancelled" => {
                active.remove(event.aggregate_id.as_str());
            }
            _ => {}
        }
        most = most.max(active.len());
    }
    assert_eq!(most, 2, "the per-node limit is 2 and should be used");
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_running_job_is_cancelled_through_comfyui_interrupt(pool: PgPool) {
    let nats = NatsServer::start();
    let comfy = FakeComfy::start().await;
    comfy.set_hold(true);
    let state = tempfile::tempdir().unwrap();
    let mut config = studio_config(&nats, &pool, state.path());
    config.render.backend = render::BackendKind::Comfyui;
    config.render.comfyui_url = comfy.url();
    config.render.node_id = Some("gpu-comfy".into());
    let running = nebula::start(&config, STUDIO.with(Part::RenderWorker))
        .await
        .unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let client = common::http();
    let id = submit_ok(&client, &base, txt2img("a long render", 7, 0, 20)).await;
    // Begun (progress 0), then a sampler step.
    let started = wait_until("progress from ComfyUI", Duration::from_secs(30), || async {
        job(&client, &base, &id).await.filter(|job| {
            job["status"] == "running" && job["progress"]["value"].as_u64().unwrap_or(0) > 0
        })
    })
    .await;
    assert_eq!(started["progress"]["max"], 20);
    assert_eq!(started["backend"], "comfyui");
    assert_eq!(
        post(
            &client,
            format!("{base}/api/render/jobs/{id}/cancel"),
            json!({"reason": "changed my mind"}),
        )
        .await,
        202
    );
    let cancelled = wait_status(&client, &base, &id, "cancelled").await;
    assert_eq!(cancelled["error"], "changed my mind");
    wait_until("ComfyUI to be interrupted", DEFAULT_WAIT, || async {
        (comfy.interrupts() == 1 && comfy.running() == 0).then_some(())
    })
    .await;
    // Cancelling again is refused: it is over.
    assert_eq!(
        post(
            &client,
            format!("{base}/api/render/jobs/{id}/cancel"),
            json!({})
        )
        .await,
        409
    );
    let log = render_log(&running.bus).await;
    assert!(of_type(&log, &id, "render.job_completed").is_empty());
    let store = render::ArtifactStore::open(state.path().join("artifacts")).unwrap();
    assert_eq!(store.usage().unwrap().files, 0);
    running.shutdown().await;
}

fn spawn_worker(nats: &NatsServer, comfy: &FakeComfy, artifacts: &Path) -> common::KillOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_nebula"))
        .args(["worker", "render"])
        .env("NATS_URL", nats.url())
        .env(
            "NATS_NKEY_FILE",
            nats.seed(&Identity::Worker("gpu-crash".parse().unwrap())),
        )
        .env("NEBULA_RENDER__BACKEND", "comfyui")
        .env("NEBULA_RENDER__COMFYUI_URL", comfy.url())
        .env("NEBULA_RENDER__NODE_ID", "gpu-crash")
        .env("NEBULA_ARTIFACTS_DIR", artifacts)
        .env("NEBULA_RENDER__WORKER__ACK_WAIT_SECS", "2")
        .env("NEBULA_RENDER__WORKER__HEARTBEAT_SECS", "0.2")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("failed to start nebula worker render");
    common::KillOnDrop(child)
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_worker_killed_mid_job_leaves_it_completed_once_and_stored_once(pool: PgPool) {
    let nats = NatsServer::start_with_nodes(&["gpu-crash"]);
    let comfy = FakeComfy::start().await;
    comfy.set_hold(true);
    let state = tempfile::tempdir().unwrap();
    let artifacts = state.path().join("artifacts");
    let mut config = studio_config(&nats, &pool, state.path());
    // Long enough that the restarted worker takes its own job back.
    config.render.dispatcher.node_timeout = Duration::from_secs(20);
    let running = nebula::start(&config, STUDIO).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let client = common::http();
    let mut worker = spawn_worker(&nats, &comfy, &artifacts);
    let id = submit_ok(&client, &base, txt2img("survives a crash", 11, 0, 4)).await;
    wait_until(
        "the first run to reach ComfyUI",
        Duration::from_secs(30),
        || async { (comfy.running() == 1).then_some(()) },
    )
    .await;
    worker.kill();
    // The orphaned prompt finishes in ComfyUI with nobody listening.
    comfy.set_hold(false);
    let mut worker = spawn_worker(&nats, &comfy, &artifacts);
    let done = wait_status(&client, &base, &id, "completed").await;
    worker.kill();
    assert_eq!(
        done["attempt"], 1,
        "the same attempt ran again on the same node"
    );
    let log = render_log(&running.bus).await;
    assert_eq!(of_type(&log, &id, "render.job_completed").len(), 1);
    assert!(of_type(&log, &id, "render.job_started").len() >= 2);
    assert_eq!(comfy.accepted_prompts().len(), 2, "one prompt per run");
    let store = render::ArtifactStore::open(&artifacts).unwrap();
    assert_eq!(store.usage().unwrap().files, 1);
    let sha = done["artifacts"][0]["sha256"].as_str().unwrap();
    let linked = std::fs::read(artifacts.join("jobs").join(&id).join("0.png")).unwrap();
    assert_eq!(render::artifacts::sha256_hex(&linked), sha);
    let served = client
        .get(format!("{base}/api/render/artifacts/{sha}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&served[..], &linked[..]);
    assert_eq!(done["provenance"]["seed"], 11);
    assert_eq!(done["provenance"]["node_id"], "gpu-crash");
    assert_eq!(done["provenance"]["backend"], "comfyui");
    assert_eq!(
        done["provenance"]["workflow_hash"].as_str().unwrap().len(),
        64
    );
    running.shutdown().await;
}

/// A render worker of its own on node `node` (the simulated GPU), signed in as that node.
async fn simulated_worker(
    config: &nebula::Config,
    nats: &NatsServer,
    node: &str,
) -> nebula::Running {
    let mut worker = config.clone();
    worker.render.node_id = Some(node.into());
    common::sign_in_as(&mut worker, nats, &Identity::Worker(node.parse().unwrap()));
    nebula::start(&worker, Parts::RENDER_WORKER).await.unwrap()
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_job_on_a_lost_node_is_requeued_and_completes_exactly_once(pool: PgPool) {
    let nats = NatsServer::start_with_nodes(&["gpu-a", "gpu-b"]);
    let comfy = FakeComfy::start().await;
    comfy.set_hold(true); // node A never finishes
    let state = tempfile::tempdir().unwrap();
    let config = studio_config(&nats, &pool, state.path());
    let running = nebula::start(&config, STUDIO).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let client = common::http();

    let mut node_a = config.clone();
    node_a.render.node_id = Some("gpu-a".into());
    node_a.render.backend = render::BackendKind::Comfyui;
    node_a.render.comfyui_url = comfy.url();
    common::sign_in_as(
        &mut node_a,
        &nats,
        &Identity::Worker("gpu-a".parse().unwrap()),
    );
    let worker_a = nebula::start(&node_a, Parts::RENDER_WORKER).await.unwrap();
    let id = submit_ok(&client, &base, txt2img("moves house", 3, 0, 4)).await;
    let first = wait_status(&client, &base, &id, "running").await;
    assert_eq!(first["node_id"], "gpu-a");

    let worker_b = simulated_worker(&config, &nats, "gpu-b").await;
    // Node A goes dark: its worker stops, heartbeats and all.
    common::assert_no_permission_violations(&worker_a);
    worker_a.shutdown().await;
    let done = wait_status(&client, &base, &id, "completed").await;
    assert_eq!(done["node_id"], "gpu-b");
    assert_eq!(done["attempt"], 2);
    let log = render_log(&running.bus).await;
    let queued = of_type(&log, &id, "render.job_queued");
    assert_eq!(queued.len(), 2);
    let requeue = queued[1].decode::<RenderJobEvent>().unwrap();
    let RenderJobEvent::Queued(requeue) = requeue else {
        panic!("not a queued event")
    };
    assert!(
        requeue.reason.contains("node gpu-a lost"),
        "{}",
        requeue.reason
    );
    assert_eq!(of_type(&log, &id, "render.job_completed").len(), 1);
    common::assert_no_permission_violations(&worker_b);
    worker_b.shutdown().await;
    running.shutdown().await;
}

/// A node whose worker is alive (it heartbeats) but never takes its work: the job is not left
/// waiting on a work message until WORK's week drops it: after `assign_timeout` it goes back to
/// the queue, recorded with the reason — placed on that node again while it is the only one —
/// and once a working node is there, the job goes to it, though the stuck node still heartbeats
/// with more free memory.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_job_a_live_node_never_takes_is_requeued_saying_so(pool: PgPool) {
    let nats = NatsServer::start_with_nodes(&["gpu-b"]);
    let state = tempfile::tempdir().unwrap();
    let mut config = studio_config(&nats, &pool, state.path());
    config.render.dispatcher.node_timeout = Duration::from_secs(3);
    config.render.dispatcher.assign_timeout = Duration::from_secs(1);
    let running = nebula::start(&config, STUDIO).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let client = common::http();
    // "gpu-stuck" says it has free slots and a ready backend, and never consumes its work.
    let beats = running.bus.clone();
    let heartbeats = tokio::spawn(async move {
        loop {
            let beat = events::render::WorkerHeartbeat {
                node_id: "gpu-stuck".into(),
                backend: "simulated".into(),
                slots: 2,
                running: 0,
                vram_free_mib: Some(1_000_000),
                vram_total_mib: Some(1_000_000),
                ready: true,
            };
            let subject =
                events::subjects::telemetry("gpu-stuck", events::render::WorkerHeartbeat::KIND);
            let _ = beats
                .publish_raw(
                    subject,
                    uuid::Uuid::now_v7().to_string(),
                    Vec::new(),
                    serde_json::to_vec(&beat).unwrap().into(),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let id = submit_ok(&client, &base, txt2img("stuck", 4, 0, 2)).await;
    let assigned = wait_status(&client, &base, &id, "assigned").await;
    assert_eq!(assigned["node_id"], "gpu-stuck");
    wait_until(
        "the untaken job requeued and placed on the only node again",
        DEFAULT_WAIT,
        || async {
            let log = render_log(&running.bus).await;
            (of_type(&log, &id, "render.job_assigned").len() >= 2).then_some(())
        },
    )
    .await;
    let log = render_log(&running.bus).await;
    let RenderJobEvent::Queued(requeue) = of_type(&log, &id, "render.job_queued")[1]
        .decode::<RenderJobEvent>()
        .unwrap()
    else {
        panic!("not a queued event")
    };
    assert!(
        requeue
            .reason
            .contains("not started on node gpu-stuck within 1s")
            && requeue.reason.contains("work message was not taken"),
        "{}",
        requeue.reason
    );
    // A node that works takes it, the stuck one alive and roomier beside it.
    let worker_b = simulated_worker(&config, &nats, "gpu-b").await;
    let done = wait_status(&client, &base, &id, "completed").await;
    assert_eq!(done["node_id"], "gpu-b");
    assert!(
        !heartbeats.is_finished(),
        "the stuck node heartbeats throughout"
    );
    heartbeats.abort();
    let log = render_log(&running.bus).await;
    assert_eq!(of_type(&log, &id, "render.job_completed").len(), 1);
    let nodes: Vec<String> = of_type(&log, &id, "render.job_assigned")
        .iter()
        .map(|e| e.data["node_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(nodes[..2], ["gpu-stuck", "gpu-stuck"], "{nodes:?}");
    assert_eq!(nodes.last().map(String::as_str), Some("gpu-b"), "{nodes:?}");
    worker_b.shutdown().await;
    running.shutdown().await;
}

/// The dispatcher saves its fold with the position it reflects and a restart starts from it:
/// a checkpoint saying the queue is paused (written over the real one, which the log
/// contradicts) holds a new job back, which only reading from the checkpoint can do; the next
/// resume on the log lets it run.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_restarted_dispatcher_starts_from_its_checkpoint(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = studio_config(&nats, &pool, state.path());
    config.render.dispatcher.checkpoint_every = Duration::from_millis(200);
    let studio = STUDIO.with(Part::RenderWorker);
    let running = nebula::start(&config, studio).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let client = common::http();
    let first = submit_ok(&client, &base, txt2img("before", 1, 0, 2)).await;
    wait_status(&client, &base, &first, "completed").await;
    let head = running.bus.last_seq(bus::StreamName::Events).await.unwrap();
    wait_until("the dispatcher's checkpoint", DEFAULT_WAIT, || async {
        let (at, saved) = running
            .bus
            .load_fold::<Value>("render-dispatcher", 1)
            .await?;
        (at >= head && saved["paused"] == false).then_some(())
    })
    .await;
    running.shutdown().await;

    let bus = common::bus(&nats).await;
    let head = bus.last_seq(bus::StreamName::Events).await.unwrap();
    let paused = json!({"jobs": {}, "admitted": [], "paused": true});
    bus.save_fold("render-dispatcher", 1, head, &paused)
        .await
        .unwrap();
    let running = nebula::start(&config, studio).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let held = submit_ok(&client, &base, txt2img("after", 2, 0, 2)).await;
    wait_status(&client, &base, &held, "queued").await;
    // Held back while the dispatcher believes its checkpoint (nothing on the log pauses it):
    // the checkpoint it saves after a placement pass that has seen the new job says so.
    let submitted = running.bus.last_seq(bus::StreamName::Events).await.unwrap();
    wait_until(
        "a placement pass that holds the job",
        DEFAULT_WAIT,
        || async {
            let (at, saved) = running
                .bus
                .load_fold::<Value>("render-dispatcher", 1)
                .await?;
            (at >= submitted
                && saved["paused"] == true
                && saved["jobs"][&held]["status"] == "queued")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        job(&client, &base, &held).await.unwrap()["status"],
        "queued"
    );
    for action in ["pause", "resume"] {
        let url = format!("{base}/api/render/queue/{action}");
        assert!(post(&client, url, json!({})).await.is_success(), "{action}");
    }
    wait_status(&client, &base, &held, "completed").await;
    running.shutdown().await;
}

/// A studio whose node renders through a fake ComfyUI that holds its prompt (`tune` changes the
/// configuration), and a job that has reached ComfyUI: the fake, the state folder, the running
/// parts, the gateway's URL and the job's id.
async fn comfy_job_then_crash(
    nats: &NatsServer,
    pool: &PgPool,
    node: &str,
    tune: impl FnOnce(&mut nebula::Config),
) -> (
    FakeComfy,
    tempfile::TempDir,
    nebula::Running,
    String,
    String,
) {
    let comfy = FakeComfy::start().await;
    comfy.set_hold(true);
    let state = tempfile::tempdir().unwrap();
    let mut config = studio_config(nats, pool, state.path());
    config.render.backend = render::BackendKind::Comfyui;
    config.render.comfyui_url = comfy.url();
    config.render.node_id = Some(node.into());
    config.render.worker.retry_backoff_secs = 0.1;
    config.render.dispatcher.node_timeout = Duration::from_secs(30);
    tune(&mut config);
    let running = nebula::start(&config, STUDIO.with(Part::RenderWorker))
        .await
        .unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let id = submit_ok(&common::http(), &base, txt2img(node, 5, 0, 8)).await;
    wait_until(
        "the job to reach ComfyUI",
        Duration::from_secs(30),
        || async { (comfy.running() == 1).then_some(()) },
    )
    .await;
    (comfy, state, running, base, id)
}

/// ComfyUI killed mid-job, as a crash or a supervisor's restart does: the job waits for it
/// (burning no attempt while it is away); once ComfyUI answers again on its port the job runs
/// again as attempt 2 and completes; the requeue says why.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_comfyui_killed_mid_job_and_back_runs_the_job_again_as_a_new_attempt(pool: PgPool) {
    let nats = NatsServer::start();
    let (comfy, _state, running, base, id) =
        comfy_job_then_crash(&nats, &pool, "gpu-flaky", |config| {
            config.render.worker.heartbeat_secs = 0.2;
        })
        .await;
    let port = comfy.port();
    let client = common::http();
    comfy.kill().await;
    // Away for a while, as the worker itself reports it (its heartbeats say its backend is not
    // ready) for over a second: longer than the old retries took to give up.
    let subject = events::subjects::telemetry("gpu-flaky", events::render::WorkerHeartbeat::KIND);
    let first_down = std::cell::Cell::new(None);
    wait_until(
        "ComfyUI reported away for a second",
        DEFAULT_WAIT,
        || async {
            let beat = running
                .bus
                .last_on_subject(bus::StreamName::Telemetry, &subject)
                .await
                .ok()??;
            let ready: Value = serde_json::from_slice(&beat.payload).ok()?;
            if ready["ready"] != false {
                return None;
            }
            let since = *first_down.get().get_or_insert(beat.published);
            first_down.set(Some(since));
            (beat.published - since >= chrono::Duration::seconds(1)).then_some(())
        },
    )
    .await;
    let log = render_log(&running.bus).await;
    assert!(
        of_type(&log, &id, "render.job_failed").is_empty(),
        "an outage fails nothing"
    );
    assert_eq!(of_type(&log, &id, "render.job_started").len(), 1);
    let back = FakeComfy::start_on(port, Default::default()).await.unwrap();
    let done = wait_status(&client, &base, &id, "completed").await;
    assert_eq!(done["attempt"], 2, "{done}");
    let log = render_log(&running.bus).await;
    let queued = of_type(&log, &id, "render.job_queued");
    let why = queued.last().unwrap().data["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        why.contains("failed mid-job") && why.contains("runs again"),
        "{why}"
    );
    assert_eq!(back.completed(), 1);
    running.shutdown().await;
}

/// ComfyUI dies mid-job and stays away: after the outage wait the job fails, saying what first
/// went wrong and that ComfyUI did not come back; the work is not redelivered.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_comfyui_that_stays_away_fails_the_job_with_its_first_cause(pool: PgPool) {
    let nats = NatsServer::start();
    let (comfy, _state, running, base, id) =
        comfy_job_then_crash(&nats, &pool, "gpu-gone", |config| {
            config.render.worker.outage_wait_secs = 2.0;
        })
        .await;
    let client = common::http();
    comfy.kill().await;
    let failed = wait_status(&client, &base, &id, "failed").await;
    assert_eq!(failed["retryable"], true);
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("lost mid-job") && error.contains("did not come back within 2 s"),
        "the first cause, then the outage: {error}"
    );
    let log = render_log(&running.bus).await;
    assert_eq!(of_type(&log, &id, "render.job_started").len(), 1);
    assert_eq!(of_type(&log, &id, "render.job_failed").len(), 1);
    assert_eq!(
        running.bus.last_seq(bus::StreamName::Dlq).await.unwrap().0,
        0,
        "a failure recorded is not a dead letter"
    );
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_render_longer_than_the_ack_wait_is_kept_alive_not_redelivered(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = studio_config(&nats, &pool, state.path());
    config.render.node_id = Some("gpu-slow".into());
    config.render.simulated_step_ms = 150;
    config.render.worker.ack_wait_secs = 1.0;
    let running = nebula::start(&config, STUDIO.with(Part::RenderWorker))
        .await
        .unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let client = common::http();
    // 20 steps of 150 ms: three times the ack wait.
    let id = submit_ok(&client, &base, txt2img("patience", 1, 0, 20)).await;
    let done = wait_status(&client, &base, &id, "completed").await;
    assert_eq!(done["attempt"], 1);
    let log = render_log(&running.bus).await;
    assert_eq!(
        of_type(&log, &id, "render.job_started").len(),
        1,
        "no redelivery"
    );
    let progressed = of_type(&log, &id, "render.job_progressed");
    assert!(progressed.len() >= 5, "progress is reported as it goes");
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn jobs_go_to_a_node_whose_free_vram_fits_them(pool: PgPool) {
    let nats = NatsServer::start_with_nodes(&["gpu-small", "gpu-big"]);
    let state = tempfile::tempdir().unwrap();
    let config = studio_config(&nats, &pool, state.path());
    let running = nebula::start(&config, STUDIO).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let client = common::http();
    let mut workers = Vec::new();
    for (node, vram) in [("gpu-small", 4096), ("gpu-big", 24576)] {
        let mut worker = config.clone();
        worker.render.node_id = Some(node.into());
        worker.render.simulated_vram_mib = vram;
        common::sign_in_as(&mut worker, &nats, &Identity::Worker(node.parse().unwrap()));
        workers.push(nebula::start(&worker, Parts::RENDER_WORKER).await.unwrap());
    }
    let sdxl = |seed: u64, size: u32| {
        json!({
            "mode": "txt2img",
            "params": {
                "prompt": "large", "seed": seed, "steps": 2, "width": size, "height": size,
                "checkpoint": "sd_xl_base_1.0.safetensors",
            },
        })
    };
    // ~8.5 GiB: only the big node has room.
    for seed in 0..3 {
        let id = submit_ok(&client, &base, sdxl(seed, 1024)).await;
        let done = wait_status(&client, &base, &id, "completed").await;
        assert_eq!(done["node_id"], "gpu-big");
        assert!(done["vram_mib"].as_u64().unwrap() > 4096);
    }
    // Bigger than any node: it waits in the queue rather than failing somewhere, and does not
    // hold up a small job submitted after it.
    let huge = submit_ok(&client, &base, sdxl(7, 4096)).await;
    let small = submit_ok(&client, &base, txt2img("small", 9, 0, 2)).await;
    wait_status(&client, &base, &small, "completed").await;
    let queued = wait_status(&client, &base, &huge, "queued").await;
    assert!(queued["node_id"].is_null());
    let log = render_log(&running.bus).await;
    assert!(of_type(&log, &huge, "render.job_assigned").is_empty());
    for worker in workers {
        common::assert_no_permission_violations(&worker);
        worker.shutdown().await;
    }
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn the_queue_survives_a_restart_of_every_process(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = studio_config(&nats, &pool, state.path());
    config.render.node_id = Some("gpu-restart".into());
    let first = nebula::start(&config, STUDIO).await.unwrap();
    let base = format!("http://{}", first.gateway_addr.unwrap());
    let client = common::http();
    assert_eq!(
        post(&client, format!("{base}/api/render/queue/pause"), json!({})).await,
        202
    );
    let mut ids = Vec::new();
    for (seed, priority) in [(1, 0), (2, 3), (3, 1)] {
        ids.push(submit_ok(&client, &base, txt2img("outlives us", seed, priority, 3)).await);
    }
    // Everything stops: gateway, projector, dispatcher. Nothing is lost with them.
    first.shutdown().await;

    let second = nebula::start(&config, STUDIO.with(Part::RenderWorker))
        .await
        .unwrap();
    let base = format!("http://{}", second.gateway_addr.unwrap());
    // The read model catches up from its checkpoint: the queue is all there, still paused.
    wait_until("the queue after the restart", DEFAULT_WAIT, || async {
        let queue = common::get_json(&client, format!("{base}/api/render/queue")).await;
        (queue["paused"] == true && queue["queued"] == 3).then_some(())
    })
    .await;
    // Still paused: nothing runs until resumed.
    let log = render_log(&second.bus).await;
    assert!(log.iter().all(|e| e.event_type != "render.job_assigned"));
    assert_eq!(
        post(
            &client,
            format!("{base}/api/render/queue/resume"),
            json!({})
        )
        .await,
        202
    );
    for id in &ids {
        wait_status(&client, &base, id, "completed").await;
    }
    let log = render_log(&second.bus).await;
    let assigned: Vec<&str> = log
        .iter()
        .filter(|e| e.event_type == "render.job_assigned")
        .map(|e| e.aggregate_id.as_str())
        .collect();
    assert_eq!(assigned.len(), 3);
    assert_eq!(
        assigned[0], ids[1],
        "the highest priority first, as before the restart"
    );
    second.shutdown().await;
}
