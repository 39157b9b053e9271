//! The node agent through a real bus: registration, heartbeats, its own endpoints, goodbye.

use crate::common;

use std::time::Duration;

use bus::{ReadFrom, StreamName};
use futures::StreamExt;
use nebula::{Config, Parts};
use serde_json::Value;
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_registers_heartbeats_serves_its_endpoints_and_deregisters() {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = Config {
        nats_url: nats.url(),
        nats: bus::NatsAuth::nkey(nats.control_seed()),
        state_dir: state.path().to_path_buf(),
        ..Config::default()
    };
    config.agent.http_addr = "127.0.0.1:0".parse().unwrap();
    config.agent.node_id = Some("agent-test".into());
    config.agent.heartbeat_interval_secs = 0.1;
    // Docker is another test's: never the machine's engine.
    config.agent.docker_host = String::new();
    // The agent registers through the control plane's command relay (in the dispatcher part).
    let running = nebula::start(&config, Parts::AGENT.with(nebula::Part::Dispatcher))
        .await
        .unwrap();
    let base = format!("http://{}", running.agent_addr.unwrap());
    let client = common::http();

    let health: Value = wait_until("the agent to be healthy", DEFAULT_WAIT, || async {
        let response = client.get(format!("{base}/health")).send().await.ok()?;
        (response.status() == 200).then_some(())?;
        response.json().await.ok()
    })
    .await;
    assert_eq!(health["node_id"], "agent-test");
    assert_eq!(health["registered"], true);
    let gpu = common::get_open_json(&client, format!("{base}/gpu")).await;
    assert!(gpu["source"].is_string(), "{gpu}");
    assert!(gpu["gpus"].is_array(), "{gpu}");
    let services = common::get_open_json(&client, format!("{base}/services")).await;
    assert_eq!(services["services"][0]["name"], "agent");
    let metrics = common::get_open_text(&client, format!("{base}/metrics")).await;
    assert!(
        metrics.contains("nebula_agent_heartbeats_sent_total{node=\"agent-test\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nebula_node_memory_used_bytes"),
        "{metrics}"
    );

    let bus = common::bus(&nats).await;
    let mut events = bus
        .read(StreamName::Events, ReadFrom::Start, None)
        .await
        .unwrap();
    let first = events
        .next()
        .await
        .unwrap()
        .unwrap()
        .decode_commit()
        .unwrap()
        .remove(0);
    assert_eq!(
        (first.event_type.as_str(), first.aggregate_id.as_str()),
        ("node.registered", "agent-test")
    );
    assert_eq!(
        first.data["agent_url"],
        format!("{base}"),
        "the registration announces where the endpoints are"
    );
    assert!(first.data["memory_total_bytes"].as_u64().unwrap() > 0);

    let mut heartbeats = bus
        .read(StreamName::Telemetry, ReadFrom::Start, None)
        .await
        .unwrap();
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(10), heartbeats.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(message.subject, "nebula.telemetry.agent-test.heartbeat");
        let heartbeat: events::telemetry::Heartbeat =
            serde_json::from_slice(&message.payload).unwrap();
        assert!(heartbeat.memory_total_bytes > 0 && heartbeat.disk_total_bytes > 0);
        seqs.push(heartbeat.sample_seq);
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    running.shutdown().await;
    let goodbye = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let goodbye = goodbye.decode_commit().unwrap().remove(0);
    assert_eq!(
        (goodbye.event_type.as_str(), goodbye.aggregate_seq),
        ("node.deregistered", 2)
    );
}
