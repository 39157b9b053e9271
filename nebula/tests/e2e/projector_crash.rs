//! (b) The projector, killed with SIGKILL again and again during a 20k-event load, leaves read
//! models equal to the fold of the stream: nothing lost, nothing applied twice.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use bus::{ExpectedSeq, StreamName};
use events::render::{
    Provenance, RenderCompleted, RenderJobEvent, RenderMode, RenderParams, RenderProgressed,
    RenderRequested, RenderStarted, Trigger,
};
use events::{Actor, CorrelationId, EventEnvelope, JobId};
use serde_json::Value;
use sqlx::PgPool;
use testkit::{NatsServer, wait_until};

fn spawn_projector(nats: &NatsServer, pool: &PgPool) -> common::KillOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_nebula"))
        .arg("projector")
        .env("NATS_URL", nats.url())
        .env("NATS_NKEY_FILE", nats.control_seed())
        .env("DATABASE_URL", common::database_url(pool))
        .env("NEBULA_PROJECTOR__BATCH_SIZE", "250")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("failed to start nebula projector");
    common::KillOnDrop(child)
}

/// A render job's life in four events: requested (its prompt is its id), started, half done,
/// completed with its id in the provenance.
fn job_events(job: &str, correlation: CorrelationId) -> Vec<EventEnvelope> {
    let trigger = Trigger {
        source: "crash-test".into(),
        reference: None,
    };
    let events = [
        RenderJobEvent::Requested(RenderRequested {
            mode: RenderMode::Txt2img,
            params: RenderParams {
                prompt: job.into(),
                ..RenderParams::default()
            },
            priority: 0,
            trigger: trigger.clone(),
            vram_mib: 1024,
            max_attempts: 1,
        }),
        RenderJobEvent::Started(RenderStarted {
            node_id: "gpu-crash".into(),
            attempt: 1,
            backend: "simulated".into(),
        }),
        RenderJobEvent::Progressed(RenderProgressed {
            attempt: 1,
            value: 1,
            max: 2,
        }),
        RenderJobEvent::Completed(RenderCompleted {
            attempt: 1,
            artifacts: Vec::new(),
            provenance: Provenance {
                workflow_hash: "crash-test".into(),
                model: "none".into(),
                seed: 0,
                node_id: "gpu-crash".into(),
                backend: "simulated".into(),
                trigger,
                correlation_id: job.into(),
            },
        }),
    ];
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            EventEnvelope::new(job, i as u64 + 1, event, correlation, None, Actor::system())
        })
        .collect()
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn sigkilled_projector_loses_nothing_and_applies_nothing_twice(pool: PgPool) {
    let nats = NatsServer::start();
    let bus = common::bus(&nats).await;
    const JOBS: usize = 5000; // 4 events each: 20,000 events
    let jobs: Vec<(String, CorrelationId)> = (0..JOBS)
        .map(|_| (JobId::new().to_string(), CorrelationId::new()))
        .collect();
    let mut published = HashSet::new();
    let publisher = {
        let bus = bus.clone();
        let jobs = jobs.clone();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for chunk in jobs.chunks(JOBS / 10) {
                let bus = bus.clone();
                let chunk = chunk.to_vec();
                tasks.push(tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for (job, correlation) in chunk {
                        for event in job_events(&job, correlation) {
                            ids.push(event.event_id);
                            let expected = if event.aggregate_seq == 1 {
                                ExpectedSeq::NoEvents
                            } else {
                                ExpectedSeq::Any
                            };
                            bus.append(&[event], expected).await.expect("append failed");
                        }
                    }
                    ids
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            all
        })
    };

    let mut projector = spawn_projector(&nats, &pool);
    let mut kills = 0;
    let applied = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COALESCE(min(last_seq), 0) FROM projection_checkpoints WHERE stream = 'EVENTS'",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or(0)
    };
    while kills < 6 {
        let before = applied().await;
        // Let it make some progress, then kill it mid-stride.
        wait_until(
            "the projector to make progress",
            Duration::from_secs(60),
            || async { (applied().await > before + 500).then_some(()) },
        )
        .await;
        projector.kill();
        kills += 1;
        projector = spawn_projector(&nats, &pool);
        if publisher.is_finished() && applied().await > 18_000 {
            break;
        }
    }
    published.extend(publisher.await.unwrap());
    assert_eq!(published.len(), JOBS * 4);
    let head = bus.last_seq(StreamName::Events).await.unwrap().0 as i64;
    wait_until(
        "the projector to catch up",
        Duration::from_secs(120),
        || async {
            let positions: Vec<i64> = sqlx::query_scalar(
                "SELECT last_seq FROM projection_checkpoints WHERE stream = 'EVENTS'",
            )
            .fetch_all(&pool)
            .await
            .ok()?;
            let expected = projections::all()
                .iter()
                .filter(|p| p.stream() == StreamName::Events)
                .count();
            (positions.len() == expected && positions.iter().all(|p| *p == head)).then_some(())
        },
    )
    .await;
    projector.kill();
    assert!(kills >= 3, "only {kills} kills happened during the load");

    // The event log holds every published event exactly once (its primary key would have
    // refused a second copy, so count and identity together prove it).
    let logged: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT event_id FROM event_log")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        logged.len(),
        JOBS * 4,
        "event_log has the wrong number of rows"
    );
    let logged: HashSet<_> = logged.into_iter().map(events::EventId).collect();
    assert_eq!(logged, published, "event_log differs from the stream");
    // The render jobs model equals the fold: every job completed, with its own prompt and
    // provenance, and its progress at the end.
    type Row = (String, String, Option<i32>, Value, Option<Value>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT job_id, status, progress_value, params, provenance FROM render_jobs",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), JOBS);
    let by_id: HashMap<_, _> = rows
        .into_iter()
        .map(|(id, status, progress, params, provenance)| {
            (id, (status, progress, params, provenance))
        })
        .collect();
    for (job, _) in &jobs {
        let (status, progress, params, provenance) = by_id
            .get(job)
            .unwrap_or_else(|| panic!("job {job} missing"));
        assert_eq!(status, "completed");
        assert_eq!(*progress, Some(2));
        assert_eq!(params["prompt"], job.as_str());
        assert_eq!(provenance.as_ref().unwrap()["correlation_id"], job.as_str());
    }
}
