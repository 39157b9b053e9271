//! NATS with the generated per-role credentials, against a real nats-server: anonymous clients
//! are refused; a node's credentials cannot write the event log, read another node's work or
//! publish another node's telemetry (each refusal logged and counted); its agent registers
//! through the control plane's command relay, recorded as the node.

use std::time::Duration;

use bus::consumer::{ConsumerSpec, Outcome};
use bus::{Bus, BusConfig, ExpectedSeq, NatsAuth, ReadFrom, StreamName};
use futures::StreamExt;
use natsauth::Identity;
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};

const VIOLATIONS: &str = "nebula_nats_permission_violations_total";

fn as_role(nats: &NatsServer, seed: &std::path::Path) -> BusConfig {
    BusConfig {
        url: nats.url(),
        auth: NatsAuth::nkey(seed),
        publish_retry_for: Duration::from_secs(2),
        ..Default::default()
    }
}

#[tokio::test]
async fn each_role_may_do_only_what_its_credentials_allow() {
    let nats = NatsServer::start_with_nodes(&["gpu-a", "gpu-b"]);
    let gpu_a: events::NodeId = "gpu-a".parse().unwrap();
    let seed = |identity: Identity| nats.seed(&identity);

    // Anonymous: refused at once, with a clear error (the invented node.registered).
    let err = Bus::connect_only(BusConfig {
        url: nats.url(),
        ..Default::default()
    })
    .await
    .err()
    .expect("an anonymous client is refused");
    assert!(err.to_string().contains("refused"), "{err}");

    let control = Bus::connect(as_role(&nats, &seed(Identity::Control)))
        .await
        .unwrap();
    control
        .publish_raw(
            events::subjects::render_work("gpu-b"),
            "work-for-b",
            Vec::new(),
            b"{}".to_vec().into(),
        )
        .await
        .unwrap();

    let worker_a = Bus::connect_checked(as_role(&nats, &seed(Identity::Worker(gpu_a))))
        .await
        .expect("a node's credentials may check the streams");
    // The event log: refused, reported and counted.
    let appended = worker_a
        .append(&[crate::common::registered("invented")], ExpectedSeq::Any)
        .await;
    assert!(appended.is_err(), "a node appended to EVENTS");
    wait_until("the violation to be counted", DEFAULT_WAIT, || async {
        (worker_a.metrics().get(VIOLATIONS, &[]) >= 1.0).then_some(())
    })
    .await;
    // Another node's telemetry: refused.
    let before = worker_a.metrics().get(VIOLATIONS, &[]);
    let beat = worker_a
        .publish_raw(
            events::subjects::telemetry("gpu-b", "heartbeat"),
            "beat-b",
            Vec::new(),
            b"{}".to_vec().into(),
        )
        .await;
    assert!(beat.is_err(), "gpu-a published gpu-b's telemetry");
    // Another node's work: never delivered.
    let mut spec = ConsumerSpec::new(StreamName::Work, events::subjects::render_consumer("gpu-b"));
    spec.filter_subject = Some(events::subjects::render_work("gpu-b"));
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = delivered.clone();
    let cancel = tokio_util::sync::CancellationToken::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        worker_a.consume(spec, cancel.clone(), move |_| {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            async { Outcome::Ack }
        }),
    )
    .await;
    cancel.cancel();
    assert!(
        !delivered.load(std::sync::atomic::Ordering::SeqCst),
        "gpu-a read gpu-b's work"
    );
    assert!(worker_a.metrics().get(VIOLATIONS, &[]) > before);
    // What is its own still works: its own telemetry.
    worker_a
        .publish_raw(
            events::subjects::telemetry("gpu-a", "heartbeat"),
            "beat-a",
            Vec::new(),
            b"{}".to_vec().into(),
        )
        .await
        .expect("gpu-a publishes its own telemetry");
    // Nothing of the above reached the log.
    assert_eq!(control.last_seq(StreamName::Events).await.unwrap().0, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_node_registers_through_the_control_planes_relay(pool: sqlx::PgPool) {
    let nats = NatsServer::start_with_nodes(&["gpu-a"]);
    let state = tempfile::tempdir().unwrap();

    let control = crate::common::config(&nats, &pool, state.path());
    let plane = nebula::start(
        &control,
        nebula::Parts::of(&[nebula::Part::Projector, nebula::Part::Dispatcher]),
    )
    .await
    .unwrap();

    let mut agent = control.clone();
    crate::common::sign_in_as(
        &mut agent,
        &nats,
        &Identity::Agent("gpu-a".parse().unwrap()),
    );
    agent.agent.node_id = Some("gpu-a".into());
    let node_process = nebula::start(&agent, nebula::Parts::AGENT).await.unwrap();

    let mut reader = plane
        .bus
        .read(
            StreamName::Events,
            ReadFrom::Start,
            Some(events::subjects::event("node", "gpu-a")),
        )
        .await
        .unwrap();
    let message = tokio::time::timeout(DEFAULT_WAIT, reader.next())
        .await
        .expect("gpu-a registered")
        .unwrap()
        .unwrap();
    let commit = message.decode_commit().unwrap();
    assert_eq!(commit[0].event_type, "node.registered");
    assert_eq!(commit[0].actor, events::Actor::Node("gpu-a".into()));
    assert_eq!(
        node_process.bus.metrics().get(VIOLATIONS, &[]),
        0.0,
        "the agent needed nothing its credentials do not allow"
    );
    node_process.shutdown().await;
    plane.shutdown().await;
}
