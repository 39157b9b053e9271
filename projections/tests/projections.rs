//! Projections against real Postgres (`#[sqlx::test]`: a fresh database per test) and a real
//! nats-server per test.

use std::sync::Arc;
use std::time::Duration;

use bus::store::{CommandMeta, commands};
use bus::{Bus, BusConfig, ExpectedSeq, ReadFrom, StreamName};
use bytes::Bytes;
use domain::node::{Node, NodeCommand};
use domain::render::{RenderCommand, RenderJob};
use events::node::NodeRegistered;
use events::render::{Provenance, RenderMode, RenderParams, Trigger};
use events::{Actor, CorrelationId, EventEnvelope, StreamSeq};
use futures::StreamExt;
use projections::runner::{Runner, RunnerConfig};
use projections::{Projection, ReadModels};
use serde_json::json;
use sqlx::PgPool;
use testkit::NatsServer;
use tokio_util::sync::CancellationToken;

async fn connect(server: &NatsServer) -> Bus {
    Bus::connect(BusConfig {
        url: server.url(),
        auth: bus::NatsAuth::nkey(server.control_seed()),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn inventory(hostname: &str) -> NodeRegistered {
    NodeRegistered {
        hostname: hostname.to_owned(),
        os: "Debian GNU/Linux 12".into(),
        kernel: "6.1".into(),
        cpu_model: "test cpu".into(),
        cpu_cores: 8,
        memory_total_bytes: 32 << 30,
        disk_total_bytes: 1 << 40,
        gpus: vec![],
        gpu_source: "none".into(),
        agent_version: "0.0.0".into(),
        agent_url: None,
        capabilities: Vec::new(),
    }
}

fn quick() -> RunnerConfig {
    RunnerConfig {
        batch_size: 100,
        max_attempts: 3,
        backoff: common::Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
        ..RunnerConfig::default()
    }
}

/// Runs `projection` until it has consumed everything currently in its stream.
async fn catch_up(pool: &PgPool, bus: &Bus, projection: Arc<dyn Projection>) -> StreamSeq {
    let head = bus.last_seq(projection.stream()).await.unwrap();
    let runner = Runner::new(pool.clone(), bus.clone(), projection, quick());
    tokio::time::timeout(
        Duration::from_secs(30),
        runner.run_until(Some(head), CancellationToken::new()),
    )
    .await
    .expect("projection did not catch up")
    .unwrap()
}

async fn catch_up_all(pool: &PgPool, bus: &Bus) {
    for projection in projections::all() {
        catch_up(pool, bus, projection).await;
    }
}

async fn register(bus: &Bus, node: &str, hostname: &str) {
    commands::<Node>(bus.clone(), ())
        .execute_with_metadata(
            node,
            NodeCommand::Register(inventory(hostname)),
            CommandMeta::new(Actor::Node(node.into())).into_metadata(),
        )
        .await
        .unwrap();
}

async fn job(bus: &Bus, id: &str, command: RenderCommand) {
    commands::<RenderJob>(bus.clone(), ())
        .execute_with_metadata(
            id,
            command,
            CommandMeta::new(Actor::User("tester".into())).into_metadata(),
        )
        .await
        .unwrap();
}

/// A render job submitted, placed on `node` and started there (attempt 1): four commands,
/// five events.
async fn started_job(bus: &Bus, id: &str, priority: i32, node: &str) {
    job(
        bus,
        id,
        RenderCommand::Submit {
            mode: RenderMode::Txt2img,
            params: RenderParams {
                prompt: format!("prompt of {id}"),
                ..RenderParams::default()
            },
            priority,
            trigger: Trigger {
                source: "test".into(),
                reference: None,
            },
            max_attempts: 1,
        },
    )
    .await;
    job(
        bus,
        id,
        RenderCommand::Assign {
            node_id: node.into(),
        },
    )
    .await;
    job(
        bus,
        id,
        RenderCommand::Start {
            node_id: node.into(),
            attempt: 1,
            backend: "simulated".into(),
        },
    )
    .await;
}

fn provenance(node: &str) -> Provenance {
    Provenance {
        workflow_hash: "abc".into(),
        model: "sd".into(),
        seed: 7,
        node_id: node.into(),
        backend: "simulated".into(),
        trigger: Trigger {
            source: "test".into(),
            reference: None,
        },
        correlation_id: "c".into(),
    }
}

async fn dead_letters(bus: &Bus) -> Vec<bus::StoredMessage> {
    let last = bus.last_seq(StreamName::Dlq).await.unwrap();
    if last.0 == 0 {
        return Vec::new();
    }
    let mut reader = bus
        .read(StreamName::Dlq, ReadFrom::Start, None)
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(Ok(message)) = reader.next().await {
        let done = message.stream_seq >= last;
        out.push(message);
        if done {
            break;
        }
    }
    out
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn read_models_equal_the_fold_of_the_stream(pool: PgPool) {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    register(&bus, "n1", "alpha").await;
    register(&bus, "n2", "beta").await;
    register(&bus, "n1", "alpha-renamed").await;
    commands::<Node>(bus.clone(), ())
        .execute_with_metadata(
            "n2",
            NodeCommand::Deregister {
                reason: "maintenance".into(),
            },
            CommandMeta::new(Actor::system()).into_metadata(),
        )
        .await
        .unwrap();
    started_job(&bus, "j1", 3, "n1").await;
    job(
        &bus,
        "j1",
        RenderCommand::ReportProgress {
            attempt: 1,
            value: 5,
            max: 10,
        },
    )
    .await;
    job(
        &bus,
        "j1",
        RenderCommand::Complete {
            attempt: 1,
            artifacts: Vec::new(),
            provenance: provenance("n1"),
        },
    )
    .await;
    started_job(&bus, "j2", 1, "n2").await;
    job(
        &bus,
        "j2",
        RenderCommand::Fail {
            attempt: 1,
            reason: "no gpu".into(),
            retryable: false,
        },
    )
    .await;
    // An event type this version does not know: kept in the log, skipped by typed models.
    let mut unknown = EventEnvelope::new(
        "n1",
        3,
        &events::node::NodeEvent::Deregistered(events::node::NodeDeregistered {
            reason: "x".into(),
        }),
        CorrelationId::new(),
        None,
        Actor::system(),
    );
    unknown.event_type = "node.teleported".into();
    bus.append(&[unknown], ExpectedSeq::Any).await.unwrap();
    // And a heartbeat.
    let heartbeat = events::telemetry::Heartbeat {
        node_id: "n1".parse().unwrap(),
        sampled_at: chrono::Utc::now(),
        sample_seq: 1,
        cpu_percent: 50.0,
        load_avg_1m: 1.0,
        memory_used_bytes: 1 << 30,
        memory_total_bytes: 32 << 30,
        disk_used_bytes: 1,
        disk_total_bytes: 2,
        gpus: vec![],
        uptime_secs: 10,
    };
    bus.publish_heartbeat(&heartbeat).await.unwrap();

    catch_up_all(&pool, &bus).await;
    let read = ReadModels::new(pool.clone());
    let nodes = read.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].hostname.as_deref(), Some("alpha-renamed"));
    assert_eq!(nodes[0].status, "online");
    assert_eq!(nodes[0].heartbeat.as_ref().unwrap()["cpu_percent"], 50.0);
    assert_eq!(nodes[1].status, "offline");
    let j1 = read.render_job("j1").await.unwrap().unwrap();
    assert_eq!(
        (&j1["status"], &j1["progress"]["value"], &j1["node_id"]),
        (&json!("completed"), &json!(10), &json!("n1"))
    );
    assert_eq!(j1["params"]["prompt"], "prompt of j1");
    let j2 = read.render_job("j2").await.unwrap().unwrap();
    assert_eq!(
        (&j2["status"], &j2["error"]),
        (&json!("failed"), &json!("no gpu"))
    );
    let all = read
        .events(&projections::EventFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    // 4 node events, 6 of j1 (submitted: requested and queued), 5 of j2, the unknown one.
    assert_eq!(all.len(), 16);
    assert!(
        all.windows(2)
            .all(|w| (w[0].stream_seq, w[0].idx) < (w[1].stream_seq, w[1].idx))
    );
    let by_type = read
        .events(&projections::EventFilter {
            event_type: Some("node.teleported".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_type.len(), 1);
    let j1_events = read
        .events(&projections::EventFilter {
            aggregate_type: Some("render_job".into()),
            aggregate_id: Some("j1".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        j1_events
            .iter()
            .map(|e| e.aggregate_seq)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let correlated = read
        .events(&projections::EventFilter {
            correlation_id: Some(j1_events[0].correlation_id),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        correlated.len(),
        2,
        "the submission's commit: requested and queued"
    );
    let after = read
        .events(&projections::EventFilter {
            after_seq: Some(12),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|e| e.stream_seq).collect::<Vec<_>>(),
        vec![13, 14]
    );

    assert_eq!(
        bus.metrics().get(
            "nebula_projection_unknown_events_skipped_total",
            &[("projection", "nodes")]
        ),
        1.0
    );
    // A job whose events arrive in separate batches ends as the fold of all of them.
    started_job(&bus, "j3", 0, "n1").await;
    catch_up(&pool, &bus, Arc::new(projections::Render)).await;
    job(
        &bus,
        "j3",
        RenderCommand::ReportProgress {
            attempt: 1,
            value: 2,
            max: 4,
        },
    )
    .await;
    catch_up(&pool, &bus, Arc::new(projections::Render)).await;
    job(
        &bus,
        "j3",
        RenderCommand::Fail {
            attempt: 1,
            reason: "oom".into(),
            retryable: true,
        },
    )
    .await;
    catch_up(&pool, &bus, Arc::new(projections::Render)).await;
    let j3 = read.render_job("j3").await.unwrap().unwrap();
    assert_eq!(
        (&j3["status"], &j3["node_id"], &j3["progress"], &j3["error"]),
        (
            &json!("failed"),
            &json!("n1"),
            &json!({ "value": 2, "max": 4 }),
            &json!("oom")
        )
    );
    // Running again applies nothing twice: the checkpoint holds.
    catch_up_all(&pool, &bus).await;
    assert_eq!(
        read.events(&projections::EventFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        22
    );
}

/// (d) A poison event is retried, then dead-lettered; the events after it still project.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn poison_events_go_to_the_dlq_and_later_events_still_project(pool: PgPool) {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    register(&bus, "n1", "before").await;
    // Valid JSON and a valid event, but Postgres cannot store a NUL character: a real poison.
    register(&bus, "n2", "bad\u{0000}host").await;
    // Not even JSON.
    // Not even JSON, written by a foreign client (the bus refuses raw writes to the log).
    let client = async_nats::ConnectOptions::with_nkey(server.control_nkey())
        .connect(server.url())
        .await
        .unwrap();
    async_nats::jetstream::new(client)
        .publish(
            "nebula.events.node.n3",
            Bytes::from_static(b"{this is not json"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    register(&bus, "n4", "after").await;

    catch_up_all(&pool, &bus).await;
    let nodes = ReadModels::new(pool.clone()).nodes().await.unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, vec!["n1", "n4"]);
    let log = ReadModels::new(pool.clone())
        .events(&projections::EventFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        log.iter()
            .map(|e| e.aggregate_id.as_str())
            .collect::<Vec<_>>(),
        vec!["n1", "n4"]
    );

    let letters = dead_letters(&bus).await;
    let origins: Vec<(&str, &str)> = letters
        .iter()
        .map(|m| (m.subject.as_str(), m.header("Nebula-Origin-Seq").unwrap()))
        .collect();
    // Both EVENTS projections that read node events dead-letter both poison messages; the render
    // and chat projections skip node subjects without reading them.
    for expected in [
        ("nebula.dlq.projection-event_log", "2"),
        ("nebula.dlq.projection-event_log", "3"),
        ("nebula.dlq.projection-nodes", "2"),
        ("nebula.dlq.projection-nodes", "3"),
    ] {
        assert!(
            origins.contains(&expected),
            "missing dead letter {expected:?} in {origins:?}"
        );
    }
    let nul = letters
        .iter()
        .find(|m| {
            m.subject.ends_with("projection-nodes") && m.header("Nebula-Origin-Seq") == Some("2")
        })
        .unwrap();
    let reason = nul.header("Nebula-Dlq-Reason").unwrap();
    assert!(
        reason.contains("failed 3 time(s)"),
        "database refusals are retried max_attempts times: {reason}"
    );
    let garbage = letters
        .iter()
        .find(|m| {
            m.subject.ends_with("projection-nodes") && m.header("Nebula-Origin-Seq") == Some("3")
        })
        .unwrap();
    assert!(
        garbage
            .header("Nebula-Dlq-Reason")
            .unwrap()
            .contains("malformed"),
        "{:?}",
        garbage.headers
    );
    assert_eq!(garbage.payload.as_ref(), b"{this is not json");
    assert!(
        bus.metrics().get(
            "nebula_projection_dead_letters_total",
            &[("projection", "nodes")]
        ) >= 2.0
    );
}

/// Rebuild replays from sequence 1 aside and swaps in while the live model keeps serving and
/// the live runner keeps applying.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn rebuild_swaps_in_without_taking_the_live_model_offline(pool: PgPool) {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    for i in 0..300 {
        register(&bus, &format!("n{i}"), &format!("host-{i}")).await;
    }
    let cancel = CancellationToken::new();
    let live = Runner::new(
        pool.clone(),
        bus.clone(),
        Arc::new(projections::Nodes),
        quick(),
    );
    let live_task = {
        let cancel = cancel.clone();
        tokio::spawn(async move { live.run(cancel).await })
    };
    let read = ReadModels::new(pool.clone());
    testkit::wait_until("live model to catch up", testkit::DEFAULT_WAIT, || async {
        (read.nodes().await.unwrap().len() == 300).then_some(())
    })
    .await;
    // Corrupt the live model by hand: the rebuild must repair it from the log.
    sqlx::query("UPDATE nodes SET hostname = 'corrupted'")
        .execute(&pool)
        .await
        .unwrap();

    let writer = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for i in 300..400 {
                register(&bus, &format!("n{i}"), &format!("host-{i}")).await;
            }
        })
    };
    let rebuilding = CancellationToken::new();
    let reader = {
        let (read, rebuilding) = (read.clone(), rebuilding.clone());
        tokio::spawn(async move {
            // The live model answers throughout the rebuild.
            let mut reads = 0;
            while !rebuilding.is_cancelled() || reads == 0 {
                assert!(read.nodes().await.unwrap().len() >= 300);
                reads += 1;
            }
            reads
        })
    };
    let progress = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = progress.clone();
    let rebuilt = projections::rebuild::rebuild(
        &pool,
        &bus,
        Arc::new(projections::Nodes),
        quick(),
        move |position, head| seen.lock().unwrap().push((position, head)),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    rebuilding.cancel();
    assert!(reader.await.unwrap() > 0);
    writer.await.unwrap();
    assert!(
        !progress.lock().unwrap().is_empty(),
        "progress was never reported"
    );
    assert!(rebuilt.position.0 >= 300);

    testkit::wait_until(
        "live runner to apply the rest",
        testkit::DEFAULT_WAIT,
        || async { (read.nodes().await.unwrap().len() == 400).then_some(()) },
    )
    .await;
    cancel.cancel();
    live_task.await.unwrap().unwrap();
    let nodes = read.nodes().await.unwrap();
    assert!(
        nodes
            .iter()
            .all(|n| n.hostname.as_deref() != Some("corrupted")),
        "rebuild did not replace the corrupted rows"
    );
    let position: i64 =
        sqlx::query_scalar("SELECT last_seq FROM projection_checkpoints WHERE name = 'nodes'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(position, 400);
    let leftovers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'nodes\\_\\_%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(leftovers, 0, "tables aside must be gone after the swap");
    // The swapped-in table has the live table's indexes under their own names, primary key too.
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE tablename = 'nodes' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(indexes, vec!["nodes_pkey"]);
    let primary: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'nodes'::regclass AND contype = 'p'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(primary, 1);
}

/// A projection over a stream whose messages are gone (expired, or consumed from a work queue)
/// still reaches the stream's end instead of waiting forever.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn catching_up_past_expired_messages_does_not_hang(pool: PgPool) {
    struct Counter;
    impl Projection for Counter {
        fn name(&self) -> &'static str {
            "work_counter"
        }
        fn stream(&self) -> StreamName {
            StreamName::Work
        }
        fn tables(&self) -> &'static [&'static str] {
            &[]
        }
        fn apply<'a>(
            &'a self,
            _conn: &'a mut sqlx::PgConnection,
            _target: &'a projections::Target,
            _batch: &'a [bus::StoredMessage],
        ) -> projections::ApplyFuture<'a> {
            Box::pin(async { Ok(projections::Applied::default()) })
        }
    }
    let server = NatsServer::start();
    let bus = connect(&server).await;
    for i in 0..3 {
        bus.publish_raw(
            "nebula.work.gone",
            format!("w{i}"),
            Vec::new(),
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap();
    }
    // A worker takes them all: the work queue removes them.
    let cancel = CancellationToken::new();
    let worker = {
        let (bus, cancel) = (bus.clone(), cancel.clone());
        tokio::spawn(async move {
            bus.consume(
                bus::consumer::ConsumerSpec::new(StreamName::Work, "taker"),
                cancel,
                |_| async { bus::consumer::Outcome::Ack },
            )
            .await
        })
    };
    testkit::wait_until("the queue to drain", testkit::DEFAULT_WAIT, || async {
        (bus.bounds(StreamName::Work).await.unwrap().messages == 0).then_some(())
    })
    .await;
    cancel.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(catch_up(&pool, &bus, Arc::new(Counter)).await, StreamSeq(3));
}

/// Commits run with synchronous_commit=off, so a Postgres crash can roll back the last
/// acknowledged batches together with their checkpoint. An idle runner must notice that its
/// checkpoint went back and apply those events again.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn an_idle_runner_reapplies_batches_a_database_crash_rolled_back(pool: PgPool) {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    for node in ["n1", "n2", "n3"] {
        register(&bus, node, node).await;
    }
    let cancel = CancellationToken::new();
    let runner = {
        let runner = Runner::new(
            pool.clone(),
            bus.clone(),
            Arc::new(projections::EventLog),
            quick(),
        );
        let cancel = cancel.clone();
        tokio::spawn(async move { runner.run(cancel).await })
    };
    let rows = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM event_log")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    testkit::wait_until("the log to be projected", testkit::DEFAULT_WAIT, || async {
        (rows(pool.clone()).await == 3).then_some(())
    })
    .await;
    // What a crash that lost the last two commits leaves behind: rows and checkpoint, rolled
    // back together.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("DELETE FROM event_log WHERE stream_seq > 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE projection_checkpoints SET last_seq = 1 WHERE name = 'event_log'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // No new event arrives; the runner finds out by itself.
    testkit::wait_until(
        "the rolled-back events again",
        testkit::DEFAULT_WAIT,
        || async { (rows(pool.clone()).await == 3).then_some(()) },
    )
    .await;
    cancel.cancel();
    runner.await.unwrap().unwrap();
    let position: i64 =
        sqlx::query_scalar("SELECT last_seq FROM projection_checkpoints WHERE name = 'event_log'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(position, 3);
}

/// Telemetry goes by arrival: an agent whose clock ran an hour ahead, then was set right (its
/// samples now "older"), still has its latest readings shown, each with how far its clock was
/// off when the sample arrived.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn telemetry_goes_by_arrival_and_keeps_the_clock_skew(pool: PgPool) {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let beat = |seq: u64, sampled_at: chrono::DateTime<chrono::Utc>, cpu: f32| {
        events::telemetry::Heartbeat {
            node_id: "skewed".parse().unwrap(),
            sampled_at,
            sample_seq: seq,
            cpu_percent: cpu,
            load_avg_1m: 0.5,
            memory_used_bytes: 1 << 30,
            memory_total_bytes: 8 << 30,
            disk_used_bytes: 1,
            disk_total_bytes: 2,
            gpus: vec![],
            uptime_secs: 10,
        }
    };
    let now = chrono::Utc::now();
    bus.publish_heartbeat(&beat(7, now + chrono::Duration::hours(1), 10.0))
        .await
        .unwrap();
    catch_up_all(&pool, &bus).await;
    let read = ReadModels::new(pool.clone());
    let node = read.node("skewed").await.unwrap().unwrap();
    let skew = node.clock_skew_ms.unwrap();
    assert!(
        (3_590_000..=3_610_000).contains(&skew),
        "an hour ahead: {skew} ms"
    );
    // The clock set right (and the agent restarted: its sample sequence from 1 again).
    bus.publish_heartbeat(&beat(1, chrono::Utc::now(), 55.0))
        .await
        .unwrap();
    catch_up_all(&pool, &bus).await;
    let node = read.node("skewed").await.unwrap().unwrap();
    assert_eq!(node.heartbeat.as_ref().unwrap()["cpu_percent"], 55.0);
    assert!(node.clock_skew_ms.unwrap().abs() < 10_000, "{node:?}");
    assert!(node.received_at.is_some());
}
