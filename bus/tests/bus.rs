//! The bus against a real nats-server (one per test, dynamic port, temporary store).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bus::consumer::{ConsumerSpec, Outcome};
use bus::store::{CommandMeta, JetStreamStore, commands};
use bus::{Bus, BusConfig, BusErrorKind, ExpectedSeq, NatsAuth, ReadFrom, StreamName};
use bytes::Bytes;
use cqrs_es::{AggregateError, EventStore};
use domain::node::{Node, NodeCommand, NodeError};
use events::node::{NodeDeregistered, NodeEvent};
use events::{Actor, EventEnvelope, StreamSeq};
use futures::StreamExt;
use support::{connect, inventory, read_all, registered};
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};
use tokio_util::sync::CancellationToken;

/// What a plain NATS client could write, bypassing the bus.
async fn foreign_publish(server: &NatsServer, subject: &str, payload: &'static [u8]) {
    let client = async_nats::ConnectOptions::with_nkey(server.control_nkey())
        .connect(server.url())
        .await
        .unwrap();
    async_nats::jetstream::new(client)
        .publish(subject.to_owned(), Bytes::from_static(payload))
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_is_idempotent_and_reads_are_ordered() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let again = connect(&server).await;
    for i in 1..=5u64 {
        let appended = again
            .append(&[registered(&format!("job-{i}"), 1)], ExpectedSeq::NoEvents)
            .await
            .unwrap();
        assert_eq!(appended.stream_seq, StreamSeq(i));
        assert!(!appended.duplicate);
    }
    let all = read_all(&bus, StreamName::Events).await;
    assert_eq!(
        all.iter().map(|m| m.stream_seq.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(all[2].subject, "nebula.events.node.job-3");

    let mut from_four = bus
        .read(StreamName::Events, ReadFrom::Seq(StreamSeq(4)), None)
        .await
        .unwrap();
    assert_eq!(
        from_four.next().await.unwrap().unwrap().stream_seq,
        StreamSeq(4)
    );

    let cutoff = all[3].published;
    let mut by_time = bus
        .read(StreamName::Events, ReadFrom::Time(cutoff), None)
        .await
        .unwrap();
    assert_eq!(
        by_time.next().await.unwrap().unwrap().stream_seq,
        StreamSeq(4)
    );

    // A time after the last message starts the reader at the next one written.
    let mut from_now = bus
        .read(StreamName::Events, ReadFrom::Time(chrono::Utc::now()), None)
        .await
        .unwrap();
    bus.append(&[registered("job-6", 1)], ExpectedSeq::NoEvents)
        .await
        .unwrap();
    assert_eq!(
        from_now.next().await.unwrap().unwrap().stream_seq,
        StreamSeq(6)
    );

    let mut filtered = bus
        .read(
            StreamName::Events,
            ReadFrom::Start,
            Some("nebula.events.node.job-2".into()),
        )
        .await
        .unwrap();
    let only = filtered.next().await.unwrap().unwrap();
    assert_eq!((only.stream_seq, only.pending), (StreamSeq(2), Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republishing_a_commit_is_deduplicated() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let commit = [registered("job-a", 1)];
    let first = bus.append(&commit, ExpectedSeq::Any).await.unwrap();
    let second = bus.append(&commit, ExpectedSeq::Any).await.unwrap();
    assert!(!first.duplicate);
    assert!(
        second.duplicate,
        "the same Nats-Msg-Id must not be stored twice"
    );
    assert_eq!(
        bus.last_seq(StreamName::Events).await.unwrap(),
        StreamSeq(1)
    );
}

/// (f) Two writers load the same version of one aggregate; exactly one commit wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_to_one_aggregate_exactly_one_wins() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let nodes = commands::<Node>(bus.clone(), ());
    let meta = || CommandMeta::new(Actor::User("test".into())).into_metadata();
    nodes
        .execute_with_metadata("node-1", NodeCommand::Register(inventory("one")), meta())
        .await
        .unwrap();

    let store = JetStreamStore::<Node>::new(bus.clone());
    let writer_a = store.load_aggregate("node-1").await.unwrap();
    let writer_b = store.load_aggregate("node-1").await.unwrap();
    let goodbye = |reason: &str| {
        domain::Event(NodeEvent::Deregistered(NodeDeregistered {
            reason: reason.into(),
        }))
    };
    let a = store.commit(vec![goodbye("a")], writer_a, meta()).await;
    let b = store.commit(vec![goodbye("b")], writer_b, meta()).await;
    assert!(a.is_ok(), "first writer should win: {a:?}");
    assert!(
        matches!(b, Err(AggregateError::AggregateConflict)),
        "second writer must conflict: {b:?}"
    );

    // Many writers racing through the framework: every success is one event, no gaps, no repeats.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let nodes = commands::<Node>(bus.clone(), ());
        tasks.push(tokio::spawn(async move {
            nodes
                .execute_with_metadata(
                    "node-1",
                    NodeCommand::Register(inventory(&format!("racer-{i}"))),
                    CommandMeta::new(Actor::system()).into_metadata(),
                )
                .await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => wins += 1,
            Err(AggregateError::AggregateConflict) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert!(wins >= 1);
    let events = store.load_events("node-1").await.unwrap();
    let seqs: Vec<usize> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        seqs,
        (1..=2 + wins).collect::<Vec<_>>(),
        "aggregate sequences must be gapless and unique"
    );

    // A rejected command writes nothing: the second goodbye finds the node gone.
    let deregister = || NodeCommand::Deregister {
        reason: "test".into(),
    };
    nodes
        .execute_with_metadata("node-1", deregister(), meta())
        .await
        .unwrap();
    let err = nodes
        .execute_with_metadata("node-1", deregister(), meta())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        AggregateError::UserError(NodeError::NotRegistered)
    ));
    assert_eq!(store.load_events("node-1").await.unwrap().len(), 3 + wins);
}

/// Two processes (two stores, two caches) on one aggregate: each decides on what the other
/// wrote, accepting and refusing alike — a cached state is never stale.
#[tokio::test]
async fn a_cached_aggregate_sees_what_another_writer_appended() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let here = commands::<Node>(bus.clone(), ());
    let there = commands::<Node>(bus.clone(), ());
    let meta = || CommandMeta::new(Actor::User("test".into())).into_metadata();
    let deregister = |reason: &str| NodeCommand::Deregister {
        reason: reason.into(),
    };
    here.execute_with_metadata("node-2", NodeCommand::Register(inventory("two")), meta())
        .await
        .unwrap();
    // `here` has it cached as online; `there` takes it offline.
    there
        .execute_with_metadata("node-2", deregister("elsewhere"), meta())
        .await
        .unwrap();
    // A goodbye decided on the cached (stale) state would be accepted; it must be refused.
    let refused = here
        .execute_with_metadata("node-2", deregister("here"), meta())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, AggregateError::UserError(NodeError::NotRegistered)),
        "{refused:?}"
    );
}

/// A commit of several events is one message: all or nothing, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_one_atomic_message() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let commit = vec![
        registered("job-x", 1),
        registered("job-x", 2),
        registered("job-x", 3),
    ];
    bus.append(&commit, ExpectedSeq::NoEvents).await.unwrap();
    let stored = read_all(&bus, StreamName::Events).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].decode_commit().unwrap(), commit);
    // Mixed aggregates in one commit are refused before anything is sent.
    let mixed = vec![registered("job-y", 1), registered("job-z", 1)];
    assert!(bus.append(&mixed, ExpectedSeq::Any).await.is_err());
    assert_eq!(
        bus.last_seq(StreamName::Events).await.unwrap(),
        StreamSeq(1)
    );
}

/// (c) nats-server killed and restarted while a publisher runs: nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_mid_publish_loses_and_duplicates_nothing() {
    let mut server = NatsServer::start();
    let bus = connect(&server).await;
    const TOTAL: usize = 3000;
    let commits: Vec<EventEnvelope> = (0..TOTAL)
        .map(|i| registered(&format!("job-{}", i % 50), i as u64))
        .collect();
    let publisher = {
        let bus = bus.clone();
        let commits = commits.clone();
        tokio::spawn(async move {
            for commit in &commits {
                bus.append(std::slice::from_ref(commit), ExpectedSeq::Any)
                    .await
                    .expect("publish gave up");
            }
        })
    };
    for _ in 0..3 {
        wait_until("publishing to progress", DEFAULT_WAIT, || async {
            let published = bus.metrics().get("nebula_bus_events_appended_total", &[]);
            (published > 0.0).then_some(())
        })
        .await;
        let before = bus.metrics().get("nebula_bus_events_appended_total", &[]);
        server.restart();
        wait_until(
            "publishing to resume after restart",
            DEFAULT_WAIT,
            || async {
                (bus.metrics().get("nebula_bus_events_appended_total", &[]) > before + 100.0)
                    .then_some(())
            },
        )
        .await;
    }
    publisher.await.unwrap();
    let stored = read_all(&bus, StreamName::Events).await;
    let ids: Vec<_> = stored
        .iter()
        .flat_map(|m| m.decode_commit().unwrap())
        .map(|e| e.event_id)
        .collect();
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an event was stored twice");
    assert_eq!(ids.len(), TOTAL, "an acknowledged event was lost");
    let expected: HashSet<_> = commits.iter().map(|e| e.event_id).collect();
    assert_eq!(unique, expected.iter().collect());
    assert!(
        bus.metrics().get("nebula_bus_publish_retries_total", &[]) > 0.0,
        "the restarts were never noticed"
    );
}

/// (e) on the bus: oversized payloads are refused with a clear error and the bus keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payloads_are_refused_clearly() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let mut big = registered("job-big", 1);
    big.data["hostname"] = serde_json::json!("x".repeat(2 * 1024 * 1024));
    let err = bus.append(&[big], ExpectedSeq::Any).await.unwrap_err();
    assert_eq!(err.kind(), BusErrorKind::TooLarge);
    assert!(err.to_string().contains("over the limit"), "{err}");
    // The server's own limit is enforced too, for a client configured with a larger one.
    let lax = Bus::connect(BusConfig {
        url: server.url(),
        auth: NatsAuth::nkey(server.control_seed()),
        max_payload: 8 * 1024 * 1024,
        ..Default::default()
    })
    .await
    .unwrap();
    let err = lax
        .publish_raw(
            "nebula.work.test",
            "big-1",
            Vec::new(),
            Bytes::from(vec![b'x'; 2 * 1024 * 1024]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BusErrorKind::TooLarge, "{err}");
    bus.append(&[registered("job-small", 1)], ExpectedSeq::Any)
        .await
        .unwrap();
}

/// Only `Bus::append` writes the event log: a raw publish there is refused before it is sent.
#[tokio::test]
async fn raw_publishes_never_reach_the_event_log() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    for subject in ["nebula.events.node.intruder", "nebula.events"] {
        let err = bus
            .publish_raw(subject, "raw-1", Vec::new(), Bytes::from_static(b"[]"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), BusErrorKind::Refused, "{err}");
        assert!(err.to_string().contains("only Bus::append"), "{err}");
    }
    assert_eq!(
        bus.last_seq(StreamName::Events).await.unwrap(),
        StreamSeq(0)
    );
    assert_eq!(
        bus.metrics().get("nebula_bus_refused_publishes_total", &[]),
        2.0
    );
    bus.publish_raw(
        "nebula.work.fine",
        "raw-2",
        Vec::new(),
        Bytes::from_static(b"x"),
    )
    .await
    .unwrap();
}

/// Work consumers: good messages are acked, failing ones retried then dead-lettered with their
/// reason, rejected ones dead-lettered at once; the loop survives all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_retry_then_dead_letter_and_keep_going() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    for (i, body) in ["ok-1", "flaky", "poison", "{not json", "ok-2"]
        .iter()
        .enumerate()
    {
        bus.publish_raw(
            "nebula.work.test",
            format!("m{i}"),
            Vec::new(),
            Bytes::from(body.to_string()),
        )
        .await
        .unwrap();
    }
    let cancel = CancellationToken::new();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, i64)>::new()));
    let spec = ConsumerSpec {
        max_deliver: 3,
        backoff: vec![Duration::from_millis(20)],
        ..ConsumerSpec::new(StreamName::Work, "test-worker")
    };
    let consumer = {
        let bus = bus.clone();
        let cancel = cancel.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            bus.consume(spec, cancel, |delivery| {
                let body = String::from_utf8_lossy(&delivery.message.payload).to_string();
                seen.lock()
                    .unwrap()
                    .push((body.clone(), delivery.delivered));
                let outcome = match body.as_str() {
                    "flaky" if delivery.delivered < 2 => Outcome::Retry("try again".into()),
                    "poison" => Outcome::Retry("always fails".into()),
                    b if b.starts_with('{') => Outcome::Reject("malformed json".into()),
                    _ => Outcome::Ack,
                };
                async move { outcome }
            })
            .await
        })
    };
    let dead = wait_until("two dead letters", DEFAULT_WAIT, || async {
        let letters = read_all(&bus, StreamName::Dlq).await;
        (letters.len() == 2).then_some(letters)
    })
    .await;
    wait_until("work queue drained", DEFAULT_WAIT, || async {
        let seen = seen.lock().unwrap();
        (seen.iter().any(|(b, _)| b == "ok-2") && seen.iter().any(|(b, d)| b == "flaky" && *d == 2))
            .then_some(())
    })
    .await;
    cancel.cancel();
    consumer.await.unwrap().unwrap();
    let poison = dead
        .iter()
        .find(|m| m.payload.as_ref() == b"poison")
        .expect("poison not dead-lettered");
    assert!(
        poison
            .header("Nebula-Dlq-Reason")
            .unwrap()
            .contains("gave up after 3 deliveries"),
        "{:?}",
        poison.headers
    );
    assert_eq!(poison.header("Nebula-Origin-Stream"), Some("WORK"));
    assert_eq!(poison.subject, "nebula.dlq.test-worker");
    let malformed = dead
        .iter()
        .find(|m| m.payload.as_ref() == b"{not json")
        .expect("malformed not dead-lettered");
    assert_eq!(
        malformed.header("Nebula-Dlq-Reason"),
        Some("malformed json")
    );
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter().filter(|(b, _)| b == "poison").count(),
        3,
        "poison must be tried max_deliver times"
    );
    assert_eq!(seen.iter().filter(|(b, _)| b == "ok-1").count(), 1);
}

/// Typed consumers: a payload that is not the expected type is dead-lettered, never handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_consumers_dead_letter_what_does_not_decode() {
    #[derive(serde::Deserialize)]
    struct Work {
        n: u32,
    }
    let server = NatsServer::start();
    let bus = connect(&server).await;
    for (i, body) in [r#"{"n":1}"#, "not json", r#"{"n":"two"}"#, r#"{"n":3}"#]
        .iter()
        .enumerate()
    {
        bus.publish_raw(
            "nebula.work.typed",
            format!("t{i}"),
            Vec::new(),
            Bytes::from(body.to_string()),
        )
        .await
        .unwrap();
    }
    let cancel = CancellationToken::new();
    let handled = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let consumer = {
        let (bus, cancel, handled) = (bus.clone(), cancel.clone(), handled.clone());
        tokio::spawn(async move {
            bus.consume_json(
                ConsumerSpec::new(StreamName::Work, "typed"),
                cancel,
                |work: Work, _delivery| {
                    handled.lock().unwrap().push(work.n);
                    async { Outcome::Ack }
                },
            )
            .await
        })
    };
    let letters = wait_until("two dead letters", DEFAULT_WAIT, || async {
        let letters = read_all(&bus, StreamName::Dlq).await;
        (letters.len() == 2 && handled.lock().unwrap().len() == 2).then_some(letters)
    })
    .await;
    cancel.cancel();
    consumer.await.unwrap().unwrap();
    assert_eq!(*handled.lock().unwrap(), vec![1, 3]);
    for letter in &letters {
        assert!(
            letter
                .header("Nebula-Dlq-Reason")
                .unwrap()
                .starts_with("malformed payload"),
            "{:?}",
            letter.headers
        );
    }
}

/// A worker that dies during a message's last allowed delivery does not lose it: it comes back
/// once more and is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_on_the_last_delivery_still_dead_letters() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    bus.publish_raw(
        "nebula.work.crash",
        "c1",
        Vec::new(),
        Bytes::from_static(b"job"),
    )
    .await
    .unwrap();
    let spec = ConsumerSpec {
        max_deliver: 2,
        ack_wait: Duration::from_millis(500),
        backoff: vec![Duration::from_millis(10)],
        ..ConsumerSpec::new(StreamName::Work, "crashy")
    };
    let (reached_last, mut last_reached) = tokio::sync::mpsc::channel::<()>(1);
    let crashing = {
        let (bus, spec) = (bus.clone(), spec.clone());
        tokio::spawn(async move {
            bus.consume(spec, CancellationToken::new(), |delivery| {
                let last = delivery.delivered >= 2;
                let reached_last = reached_last.clone();
                async move {
                    if last {
                        let _ = reached_last.send(()).await;
                        std::future::pending::<()>().await; // the worker hangs, then dies
                    }
                    Outcome::Retry("transient".into())
                }
            })
            .await
        })
    };
    tokio::time::timeout(DEFAULT_WAIT, last_reached.recv())
        .await
        .unwrap();
    crashing.abort();
    let cancel = CancellationToken::new();
    let restarted = {
        let (bus, cancel) = (bus.clone(), cancel.clone());
        tokio::spawn(async move { bus.consume(spec, cancel, |_| async { Outcome::Ack }).await })
    };
    let letters = wait_until("the dead letter", DEFAULT_WAIT, || async {
        let letters = read_all(&bus, StreamName::Dlq).await;
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    cancel.cancel();
    restarted.await.unwrap().unwrap();
    let reason = letters[0].header("Nebula-Dlq-Reason").unwrap();
    assert!(
        reason.contains("gave up after 3 deliveries") && reason.contains("no outcome"),
        "{reason}"
    );
}

/// Asking for more stream replicas than the deployment has fails at start, clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_beyond_a_single_server_are_refused_at_start() {
    let server = NatsServer::start();
    let config = BusConfig {
        url: server.url(),
        auth: NatsAuth::nkey(server.control_seed()),
        stream_replicas: 3,
        ..Default::default()
    };
    match Bus::connect(config).await {
        Ok(_) => panic!("R3 streams cannot exist on one server"),
        Err(err) => {
            assert_eq!(err.kind(), BusErrorKind::Provision);
            let chain = format!(
                "{err}: {}",
                std::error::Error::source(&err)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            );
            assert!(chain.contains("replicas"), "{chain}");
        }
    }
}

/// The production shape: a 3-node cluster with R3 streams keeps accepting and serving events
/// when a node dies, and loses none of the acknowledged ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_cluster_survives_losing_a_node() {
    let mut cluster = testkit::NatsCluster::start(3);
    let config = BusConfig {
        url: cluster.url(),
        auth: NatsAuth::nkey(cluster.control_seed()),
        stream_replicas: 3,
        ..Default::default()
    };
    // The cluster needs a moment to elect its JetStream leader.
    let bus = wait_until(
        "the cluster to accept R3 streams",
        Duration::from_secs(60),
        || {
            let config = config.clone();
            async move { Bus::connect(config).await.ok() }
        },
    )
    .await;
    let mut published = Vec::new();
    for i in 0..200 {
        let event = registered(&format!("job-{i}"), 1);
        published.push(event.event_id);
        bus.append(&[event], ExpectedSeq::NoEvents).await.unwrap();
    }
    cluster.servers[0].kill();
    for i in 200..400 {
        let event = registered(&format!("job-{i}"), 1);
        published.push(event.event_id);
        bus.append(&[event], ExpectedSeq::NoEvents).await.unwrap();
    }
    // Reading needs a consumer, which waits for the stream's new leader like any client would.
    let ids = wait_until(
        "events to be readable after the failover",
        Duration::from_secs(60),
        || async {
            let mut messages = bus
                .read(StreamName::Events, ReadFrom::Start, None)
                .await
                .ok()?;
            let mut ids = Vec::new();
            while ids.len() < published.len() {
                let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
                    .await
                    .ok()??
                    .ok()?;
                ids.extend(
                    message
                        .decode_commit()
                        .ok()?
                        .into_iter()
                        .map(|e| e.event_id),
                );
            }
            Some(ids)
        },
    )
    .await;
    assert_eq!(ids, published, "every acknowledged event, once, in order");
}

/// Commit consumers: each commit arrives whole and in order; a message that is not a commit is
/// dead-lettered, never handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_consumers_dead_letter_what_is_not_a_commit() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    bus.append(
        &[registered("job-c1", 1), registered("job-c1", 2)],
        ExpectedSeq::NoEvents,
    )
    .await
    .unwrap();
    // Not a commit, written by a foreign client (the bus itself refuses to).
    foreign_publish(&server, "nebula.events.node.garbage", b"not a commit").await;
    bus.append(&[registered("job-c2", 1)], ExpectedSeq::NoEvents)
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let handled = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let consumer = {
        let (bus, cancel, handled) = (bus.clone(), cancel.clone(), handled.clone());
        tokio::spawn(async move {
            bus.consume_commits(
                ConsumerSpec::new(StreamName::Events, "commits"),
                cancel,
                |commit, _delivery| {
                    let ids: Vec<(String, u64)> = commit
                        .iter()
                        .map(|e| (e.aggregate_id.clone(), e.aggregate_seq))
                        .collect();
                    handled.lock().unwrap().push(ids);
                    async { Outcome::Ack }
                },
            )
            .await
        })
    };
    let letters = wait_until("the dead letter", DEFAULT_WAIT, || async {
        let letters = read_all(&bus, StreamName::Dlq).await;
        (letters.len() == 1 && handled.lock().unwrap().len() == 2).then_some(letters)
    })
    .await;
    cancel.cancel();
    consumer.await.unwrap().unwrap();
    assert_eq!(
        *handled.lock().unwrap(),
        vec![
            vec![("job-c1".to_owned(), 1), ("job-c1".to_owned(), 2)],
            vec![("job-c2".to_owned(), 1)],
        ]
    );
    let reason = letters[0].header("Nebula-Dlq-Reason").unwrap();
    assert!(reason.starts_with("undecodable commit"), "{reason}");
}
