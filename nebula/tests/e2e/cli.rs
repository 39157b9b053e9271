//! The `nebula` command line against real services: help, config errors, migrate, replay, tail,
//! projections list and rebuild, the DLQ; and a CLI that prints its answer, not its logs.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sqlx::PgPool;
use testkit::NatsServer;

fn nebula(nats: &NatsServer, database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nebula"))
        .args(args)
        .env("NATS_URL", nats.url())
        .env("NATS_NKEY_FILE", nats.control_seed())
        .env("DATABASE_URL", database_url)
        .env_remove("RUST_LOG")
        .output()
        .expect("failed to run nebula")
}

/// The command's answer. A one-shot command logs warnings only: nothing of its clients' INFO
/// chatter reaches the terminal.
fn stdout(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "nebula failed: {stderr}");
    assert!(
        !stderr.contains(" INFO ") && !stderr.contains(" DEBUG "),
        "a one-shot command logged more than warnings: {stderr}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["up", "--help"],
        vec!["agent", "--help"],
        vec!["events", "tail", "--help"],
        vec!["events", "replay", "--help"],
        vec!["projections", "rebuild", "--help"],
        vec!["dlq", "list", "--help"],
        vec!["dlq", "replay", "--help"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_nebula"))
            .args(&args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage:"),
            "{args:?}"
        );
    }
}

#[test]
fn rebuild_names_every_projection() {
    let output = Command::new(env!("CARGO_BIN_EXE_nebula"))
        .args(["projections", "rebuild", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for projection in projections::all() {
        assert!(help.contains(projection.name()), "{help}");
    }
    let wrong = Command::new(env!("CARGO_BIN_EXE_nebula"))
        .args(["projections", "rebuild", "jobs"])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("invalid value 'jobs'"));
}

#[test]
fn bad_configuration_is_reported_all_at_once() {
    let output = Command::new(env!("CARGO_BIN_EXE_nebula"))
        .arg("migrate")
        .env("NATS_URL", "http://wrong")
        .env("NEBULA_PROJECTOR__BATCH_SIZE", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nats_url") && stderr.contains("batch_size"),
        "{stderr}"
    );
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn replay_tail_and_rebuild_work_on_a_real_log(pool: PgPool) {
    let nats = NatsServer::start();
    let database_url = common::database_url(&pool);
    stdout(&nebula(&nats, &database_url, &["migrate"]));
    let bus = common::bus(&nats).await;
    for node in ["alpha", "beta", "gamma"] {
        common::publish(&bus, node).await;
    }
    let goodbye = events::EventEnvelope::new(
        "gamma",
        2,
        &events::node::NodeEvent::Deregistered(events::node::NodeDeregistered {
            reason: "agent stopped".into(),
        }),
        events::CorrelationId::new(),
        None,
        events::Actor::system(),
    );
    bus.append(&[goodbye], bus::ExpectedSeq::Any).await.unwrap();

    let all = stdout(&nebula(
        &nats,
        &database_url,
        &["events", "replay", "--from", "1"],
    ));
    assert_eq!(all.lines().count(), 4, "{all}");
    assert!(
        all.lines().next().unwrap().contains("node.registered") && all.contains("node/alpha#1"),
        "{all}"
    );
    let range = stdout(&nebula(
        &nats,
        &database_url,
        &["events", "replay", "--from", "2", "--to", "3"],
    ));
    assert_eq!(
        range
            .lines()
            .map(|l| l.split_whitespace().next().unwrap())
            .collect::<Vec<_>>(),
        vec!["2", "3"]
    );
    let by_type = stdout(&nebula(
        &nats,
        &database_url,
        &["events", "replay", "--filter", "node.dereg"],
    ));
    assert_eq!(by_type.lines().count(), 1);
    let by_subject = stdout(&nebula(
        &nats,
        &database_url,
        &["events", "replay", "--filter", "nebula.events.node.beta"],
    ));
    assert_eq!(by_subject.lines().count(), 1);
    assert!(by_subject.contains("node/beta"));
    let json = stdout(&nebula(
        &nats,
        &database_url,
        &["events", "replay", "--from", "4", "--json"],
    ));
    let commit: Vec<events::EventEnvelope> = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(commit[0].event_type, "node.deregistered");

    // `tail --since 2` prints the past from sequence 2, then follows live.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_nebula"))
        .args(["events", "tail", "--since", "2"])
        .env("NATS_URL", nats.url())
        .env("NATS_NKEY_FILE", nats.control_seed())
        .env("DATABASE_URL", &database_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let stdout = tail.stdout.take().unwrap();
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                lines.lock().unwrap().push(line.unwrap());
            }
        })
    };
    testkit::wait_until(
        "tail to print the past",
        Duration::from_secs(20),
        || async { (lines.lock().unwrap().len() >= 3).then_some(()) },
    )
    .await;
    common::publish(&bus, "delta").await;
    testkit::wait_until(
        "tail to print a live event",
        Duration::from_secs(20),
        || async {
            lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("node/delta"))
                .then_some(())
        },
    )
    .await;
    tail.kill().unwrap();
    tail.wait().unwrap();
    reader.join().unwrap();
    assert!(
        lines.lock().unwrap()[0].trim_start().starts_with('2'),
        "{:?}",
        lines.lock().unwrap()
    );

    let rebuilt = stdout(&nebula(
        &nats,
        &database_url,
        &["projections", "rebuild", "nodes"],
    ));
    assert!(
        rebuilt.contains("rebuilt nodes up to stream sequence 5"),
        "{rebuilt}"
    );
    let nodes: i64 = sqlx::query_scalar("SELECT count(*) FROM nodes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(nodes, 4);
    let listed = stdout(&nebula(&nats, &database_url, &["projections", "list"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("nodes") && l.contains(" 5 ")),
        "{listed}"
    );
    let unknown = nebula(&nats, &database_url, &["projections", "rebuild", "gadgets"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("possible values: event_log, nodes"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}

/// `dlq list|show|replay`: what was dead-lettered and why, then sent back once.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn the_dlq_is_listed_shown_and_replayed_once(pool: PgPool) {
    let nats = NatsServer::start();
    let database_url = common::database_url(&pool);
    let bus = common::bus(&nats).await;
    let empty = stdout(&nebula(&nats, &database_url, &["dlq", "list"]));
    assert_eq!(empty.trim(), "the DLQ is empty");
    bus.dead_letter(bus::consumer::DeadLetter {
        origin: "render-gpu-9".into(),
        origin_stream: bus::StreamName::Work,
        origin_subject: "nebula.work.render.gpu-9".into(),
        origin_seq: events::StreamSeq(77),
        reason: "not a work item: expected value at line 1".into(),
        payload: bytes::Bytes::from_static(b"{\"job_id\": \"j-1\"}"),
    })
    .await
    .unwrap();
    let list = stdout(&nebula(&nats, &database_url, &["dlq", "list"]));
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(
        list.contains("render-gpu-9")
            && list.contains("nebula.work.render.gpu-9#77")
            && list.contains("not a work item"),
        "{list}"
    );
    let seq = list.split_whitespace().next().unwrap().to_owned();
    let shown = stdout(&nebula(&nats, &database_url, &["dlq", "show", &seq]));
    assert!(
        shown.contains("\"job_id\": \"j-1\"") && shown.contains("replayable     yes"),
        "{shown}"
    );
    let replayed = stdout(&nebula(&nats, &database_url, &["dlq", "replay", &seq]));
    assert!(
        replayed.contains("sent back to nebula.work.render.gpu-9"),
        "{replayed}"
    );
    // Back on WORK, once; off the DLQ; and the replay is on the log, with who did it.
    let work = bus.bounds(bus::StreamName::Work).await.unwrap();
    assert_eq!(work.messages, 1);
    let (got, cancel) = (
        std::sync::Arc::new(std::sync::Mutex::new(Vec::new())),
        tokio_util::sync::CancellationToken::new(),
    );
    let mut spec = bus::consumer::ConsumerSpec::new(bus::StreamName::Work, "cli-test");
    spec.filter_subject = Some("nebula.work.render.gpu-9".into());
    let consumer = {
        let (bus, got, cancel) = (bus.clone(), got.clone(), cancel.clone());
        tokio::spawn(async move {
            bus.consume(spec, cancel.clone(), |delivery| {
                got.lock().unwrap().push(delivery.message.payload.clone());
                cancel.cancel();
                async { bus::consumer::Outcome::Ack }
            })
            .await
        })
    };
    consumer.await.unwrap().unwrap();
    assert_eq!(&got.lock().unwrap()[0][..], b"{\"job_id\": \"j-1\"}");
    let again = nebula(&nats, &database_url, &["dlq", "replay", &seq]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no such dead letter"));
    let after = stdout(&nebula(&nats, &database_url, &["dlq", "list"]));
    assert_eq!(after.trim(), "the DLQ is empty");
    let records = common::envelopes(&bus, "dead_letter", "render-gpu-9-WORK-77").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].event_type, "dead_letter.replayed");
    assert!(
        matches!(&records[0].actor, events::Actor::User(name) if name.starts_with("cli:")),
        "{:?}",
        records[0].actor
    );
}
