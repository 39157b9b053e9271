//! The `nebula` command line against real services: help, config errors, migrate, replay, tail,
//! projections list and rebuild.

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
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("failed to run nebula")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "nebula failed: {}",
        String::from_utf8_lossy(&output.stderr)
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
        String::from_utf8_lossy(&unknown.stderr).contains("known: event_log, nodes"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}
