//! The bus over weeks of use: a full event log, readers of a few aggregate types, snapshots of
//! long-lived aggregates.

mod support;

use std::time::Duration;

use bus::store::{CommandMeta, JetStreamStore, commands};
use bus::{Bus, BusConfig, BusErrorKind, ExpectedSeq, NatsAuth, ReadFrom, StreamName};
use cqrs_es::EventStore;
use events::{Actor, CorrelationId, EventEnvelope};
use futures::StreamExt;
use support::{connect, read_all, registered};
use testkit::{DEFAULT_WAIT, NatsServer};

/// The event log at its limit: a write is refused as `Full` with the server's reason, nothing
/// already stored is lost or changed, the usage says how full it is, and once the limit is
/// raised (the next start with a larger `events_max_bytes`) writes go on.
#[tokio::test]
async fn a_full_event_log_refuses_writes_keeps_what_it_holds_and_recovers_when_raised() {
    let server = NatsServer::start();
    let small = |max: i64| BusConfig {
        url: server.url(),
        auth: NatsAuth::nkey(server.control_seed()),
        events_max_bytes: max,
        publish_retry_for: Duration::from_secs(1),
        ..Default::default()
    };
    let bus = Bus::connect(small(8 * 1024)).await.unwrap();
    let mut stored = 0u64;
    let refused = loop {
        match bus
            .append(&[registered(&format!("n{stored}"), 1)], ExpectedSeq::Any)
            .await
        {
            Ok(_) => stored += 1,
            Err(err) => break err,
        }
        assert!(stored < 1_000, "8 KiB never filled");
    };
    assert_eq!(refused.kind(), BusErrorKind::Full, "{refused:#}");
    assert!(stored > 3, "some events fit: {stored}");
    let usage = bus.storage().await.unwrap();
    let events = usage.iter().find(|u| u.stream == "EVENTS").unwrap();
    assert_eq!(events.messages, stored, "nothing stored was dropped");
    assert_eq!(events.max_bytes, Some(8 * 1024));
    assert!(
        events.bytes <= 8 * 1024 && events.bytes > 8 * 1024 / 2,
        "{events:?}"
    );
    let work = usage.iter().find(|u| u.stream == "WORK").unwrap();
    assert_eq!(work.max_bytes, None);
    // Every event that was acknowledged reads back.
    let all = read_all(&bus, StreamName::Events).await;
    assert_eq!(all.len() as u64, stored);
    // Room made by raising the limit: the same write goes through.
    let roomier = Bus::connect(small(1 << 20)).await.unwrap();
    roomier
        .append(&[registered("after", 1)], ExpectedSeq::Any)
        .await
        .unwrap();
    assert_eq!(
        read_all(&roomier, StreamName::Events).await.len() as u64,
        stored + 1
    );
}

/// A render job event of `job` (a reader of render jobs reads it).
fn queued(job: &str) -> EventEnvelope {
    EventEnvelope::new(
        job,
        1,
        &events::render::RenderJobEvent::PriorityChanged(events::render::RenderPriorityChanged {
            priority: 1,
        }),
        CorrelationId::new(),
        None,
        Actor::system(),
    )
}

/// A reader of a few aggregate types reads only those, says how many wait when it opens, and
/// marks the last of them (`pending == 0`): how a fold knows it has caught up without reading
/// the rest of the log.
#[tokio::test]
async fn a_reader_of_some_aggregate_types_reads_only_those_and_knows_its_backlog() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    for n in 0..3 {
        bus.append(&[registered(&format!("n{n}"), 1)], ExpectedSeq::Any)
            .await
            .unwrap();
        bus.append(&[queued(&format!("j{n}"))], ExpectedSeq::Any)
            .await
            .unwrap();
    }
    let mut jobs = bus
        .read_subjects(
            StreamName::Events,
            ReadFrom::Start,
            vec![
                events::subjects::events_of_type("render_job"),
                events::subjects::events_of_type("no_such_type"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(jobs.backlog(), 3);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let message = tokio::time::timeout(DEFAULT_WAIT, jobs.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            message.subject.contains(".render_job."),
            "{}",
            message.subject
        );
        seen.push(message.pending);
    }
    assert_eq!(seen.last(), Some(&Some(0)), "the last one says so");
    let nothing = bus
        .read_subjects(
            StreamName::Events,
            ReadFrom::Start,
            vec![events::subjects::events_of_type("no_such_type")],
        )
        .await
        .unwrap();
    assert_eq!(nothing.backlog(), 0, "caught up at once");
}

/// A fold kept with a checkpoint reads its own aggregate types from the start the first time,
/// saves its state once caught up, and the next open starts from that state and reads only what
/// came after — told at once that it is caught up when nothing did. A checkpoint of another
/// format is ignored, and a fold opened from the start keeps none.
#[tokio::test]
async fn a_checkpointed_fold_resumes_from_its_state_and_reads_only_what_came_after() {
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let append = |envelope: EventEnvelope| {
        let bus = bus.clone();
        async move { bus.append(&[envelope], ExpectedSeq::Any).await.unwrap() }
    };
    for n in 0..3 {
        append(registered(&format!("n{n}"), 1)).await;
        append(queued(&format!("j{n}"))).await;
    }
    let filters = || vec![events::subjects::events_of_type("render_job")];
    let fold = |seen: &mut Vec<String>, message: &bus::StoredMessage| {
        for envelope in message.decode_commit().unwrap() {
            seen.push(envelope.aggregate_id);
        }
    };
    async fn next(log: &mut bus::FoldLog) -> Option<bus::StoredMessage> {
        tokio::time::timeout(DEFAULT_WAIT, log.next())
            .await
            .expect("the fold's reader answers")
            .unwrap()
    }

    let (mut seen, mut log) = bus
        .open_fold::<Vec<String>>("test", 1, filters())
        .await
        .unwrap();
    assert!(seen.is_empty() && !log.caught_up(), "no checkpoint yet");
    while !log.caught_up() {
        let message = next(&mut log).await.expect("a message while behind");
        fold(&mut seen, &message);
    }
    assert_eq!(seen, ["j0", "j1", "j2"], "only its own aggregate type");
    assert!(log.due(), "the first checkpoint is due once caught up");
    log.save(&seen).await;
    assert!(!log.due() && !log.unsaved());
    drop(log);

    append(queued("j3")).await;
    append(registered("n3", 1)).await;
    let (mut seen, mut log) = bus
        .open_fold::<Vec<String>>("test", 1, filters())
        .await
        .unwrap();
    assert_eq!(seen, ["j0", "j1", "j2"], "the checkpoint's state");
    let message = next(&mut log).await.expect("what came after it");
    fold(&mut seen, &message);
    assert_eq!(seen, ["j0", "j1", "j2", "j3"]);
    assert!(log.settled(Some(&message)), "the last one waiting");
    log.save(&seen).await;
    drop(log);

    let (seen, mut log) = bus
        .open_fold::<Vec<String>>("test", 1, filters())
        .await
        .unwrap();
    assert_eq!(seen, ["j0", "j1", "j2", "j3"]);
    assert!(log.caught_up());
    assert!(
        next(&mut log).await.is_none(),
        "nothing to read: told so at once, to act on the checkpoint"
    );
    assert!(!log.unsaved());

    let (seen, mut log) = bus
        .open_fold::<Vec<String>>("test", 2, filters())
        .await
        .unwrap();
    assert!(seen.is_empty(), "another format: from the start");
    let message = next(&mut log).await.expect("the first job again");
    assert!(message.subject.ends_with(".j0"), "{}", message.subject);

    let mut log = bus.open_fold_from_start("unkept", filters()).await.unwrap();
    let mut seen = Vec::new();
    while !log.caught_up() {
        let message = next(&mut log).await.expect("a message while behind");
        fold(&mut seen, &message);
    }
    assert_eq!(seen.len(), 4);
    assert!(!log.due());
    log.save(&seen).await;
    assert!(bus.load_fold::<Vec<String>>("unkept", 1).await.is_none());
}

/// A long-lived aggregate (the render queue: every admission and release is an event) is
/// snapshotted every `SNAPSHOT_EVERY` events; a store that has never seen it loads it from the
/// snapshot and the events after it to the same state as folding its whole history; a snapshot
/// that disagrees with the log is ignored, never believed.
#[tokio::test]
async fn a_long_lived_aggregate_loads_from_its_snapshot_to_the_same_state() {
    use domain::render::{QueueCommand, RenderQueue};
    let server = NatsServer::start();
    let bus = connect(&server).await;
    let queue = commands::<RenderQueue>(bus.clone(), ());
    let meta = || CommandMeta::new(Actor::system());
    for n in 0..250 {
        let job_id = format!("job-{n}");
        bus::store::execute(
            &queue,
            "render",
            QueueCommand::Admit {
                job_id: job_id.clone(),
                cap: 100,
                chat: None,
            },
            meta(),
            3,
        )
        .await
        .unwrap();
        if n % 5 != 0 {
            bus::store::execute(
                &queue,
                "render",
                QueueCommand::Release { job_id },
                meta(),
                3,
            )
            .await
            .unwrap();
        }
    }
    // The whole history, folded by hand.
    let mut folded = RenderQueue::default();
    let history = bus
        .aggregate_events("render_queue", "render")
        .await
        .unwrap();
    for envelope in &history {
        cqrs_es::Aggregate::apply(
            &mut folded,
            envelope
                .decode::<domain::Event<events::render::RenderQueueEvent>>()
                .unwrap(),
        );
    }
    let events = history.len() as u64;
    assert!(events > bus::store::SNAPSHOT_EVERY * 2, "{events} events");
    let snapshots = async_nats::jetstream::new(
        async_nats::ConnectOptions::with_nkey(server.control_nkey())
            .connect(server.url())
            .await
            .unwrap(),
    )
    .get_key_value(bus::store::SNAPSHOT_BUCKET)
    .await
    .unwrap();
    let kept: serde_json::Value =
        serde_json::from_slice(&snapshots.get("render_queue.render").await.unwrap().unwrap())
            .unwrap();
    let at = kept["last_aggregate_seq"].as_u64().unwrap();
    assert!(
        at >= events - bus::store::SNAPSHOT_EVERY && at <= events,
        "{at} of {events}"
    );

    async fn state(store: &JetStreamStore<RenderQueue>) -> (serde_json::Value, u64) {
        let loaded = store.load_aggregate("render").await.unwrap();
        (
            serde_json::to_value(loaded.state()).unwrap(),
            loaded.last_aggregate_seq(),
        )
    }
    let fresh = JetStreamStore::<RenderQueue>::with_capacity(bus.clone(), 0);
    assert_eq!(
        state(&fresh).await,
        (serde_json::to_value(&folded).unwrap(), events)
    );
    // It is the snapshot that is read (not the history): a snapshot whose state was changed by
    // hand, where it stands agreeing with the log, comes back changed.
    let mut marked = kept.clone();
    marked["state"]["paused"] = serde_json::json!(true);
    snapshots
        .put(
            "render_queue.render",
            serde_json::to_vec(&marked).unwrap().into(),
        )
        .await
        .unwrap();
    let fresh = JetStreamStore::<RenderQueue>::with_capacity(bus.clone(), 0);
    let (read, _) = state(&fresh).await;
    assert_eq!(read["paused"], true, "{read}");
    // A snapshot that lies about where it stands is ignored: the state is the history's.
    let mut lie = kept.clone();
    lie["last_aggregate_seq"] = serde_json::json!(events);
    lie["last_stream_seq"] = serde_json::json!(kept["last_stream_seq"]);
    lie["state"] = serde_json::to_value(RenderQueue::default()).unwrap();
    snapshots
        .put(
            "render_queue.render",
            serde_json::to_vec(&lie).unwrap().into(),
        )
        .await
        .unwrap();
    let fresh = JetStreamStore::<RenderQueue>::with_capacity(bus.clone(), 0);
    assert_eq!(
        state(&fresh).await,
        (serde_json::to_value(&folded).unwrap(), events)
    );
}

/// A lane consumer works several deliveries at once, keeps one key's deliveries in order, and
/// keeps a slow delivery (and those queued behind it) alive past `ack_wait`: nothing is
/// redelivered for waiting.
#[tokio::test]
async fn lanes_work_at_once_keep_each_keys_order_and_hold_slow_deliveries_alive() {
    use bus::consumer::{ConsumerSpec, Outcome};
    use std::sync::{Arc, Mutex};
    use tokio_util::sync::CancellationToken;

    let server = NatsServer::start();
    let bus = connect(&server).await;
    // Four users, five messages each; user 0's first message takes three ack waits.
    for n in 0..5 {
        for user in 0..4 {
            bus.publish_raw(
                "nebula.work.lanes",
                format!("u{user}-{n}"),
                Vec::new(),
                bytes::Bytes::from(format!("{user}:{n}")),
            )
            .await
            .unwrap();
        }
    }
    let spec = ConsumerSpec {
        ack_wait: Duration::from_millis(600),
        ..ConsumerSpec::new(StreamName::Work, "test-lanes")
    };
    let seen = Arc::new(Mutex::new(Vec::<(u64, u64, i64)>::new()));
    let cancel = CancellationToken::new();
    let consumer = {
        let (bus, seen, cancel) = (bus.clone(), seen.clone(), cancel.clone());
        tokio::spawn(async move {
            let parse = |payload: &[u8]| -> (u64, u64) {
                let text = String::from_utf8_lossy(payload).to_string();
                let (user, n) = text.split_once(':').unwrap();
                (user.parse().unwrap(), n.parse().unwrap())
            };
            bus.consume_lanes(
                spec,
                cancel,
                4,
                move |delivery| parse(&delivery.message.payload).0,
                move |delivery| {
                    let seen = seen.clone();
                    async move {
                        let (user, n) = parse(&delivery.message.payload);
                        if (user, n) == (0, 0) {
                            tokio::time::sleep(Duration::from_millis(1_800)).await;
                        }
                        seen.lock().unwrap().push((user, n, delivery.delivered));
                        Outcome::Ack
                    }
                },
            )
            .await
        })
    };
    let seen = testkit::wait_until("every message handled", DEFAULT_WAIT, || async {
        let seen = seen.lock().unwrap().clone();
        (seen.len() >= 20).then_some(seen)
    })
    .await;
    // Let a redelivery, if any, arrive before looking.
    tokio::time::sleep(Duration::from_millis(800)).await;
    cancel.cancel();
    consumer.await.unwrap().unwrap();
    assert_eq!(seen.len(), 20, "handled once each: {seen:?}");
    assert!(
        seen.iter().all(|(_, _, delivered)| *delivered == 1),
        "{seen:?}"
    );
    for user in 0..4 {
        let order: Vec<u64> = seen
            .iter()
            .filter(|(u, _, _)| *u == user)
            .map(|(_, n, _)| *n)
            .collect();
        assert_eq!(order, [0, 1, 2, 3, 4], "user {user}");
    }
    // The other users did not wait for user 0's slow first message.
    let first_of_zero = seen
        .iter()
        .position(|(u, n, _)| (*u, *n) == (0, 0))
        .unwrap();
    assert!(first_of_zero >= 15, "{seen:?}");
}
