//! The gateway end to end: REST, auth, bad input, and the websocket's snapshot/resume contract.

use crate::common;

use std::time::Duration;

use common::{TOKEN, config, http, publish};
use futures::{SinkExt, StreamExt};
use nebula::{Part, Parts};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};
use tokio_tungstenite::tungstenite::Message;

const SERVER: Parts = Parts::of(&[Part::Gateway, Part::Projector]);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn frame(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no websocket frame within 10s")
            .expect("websocket ended")
            .expect("websocket error");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(close) => panic!("closed: {close:?}"),
            _ => {}
        }
    }
}

/// The next event frame, skipping telemetry.
async fn event_frame(socket: &mut Socket) -> Value {
    loop {
        let frame = frame(socket).await;
        if frame["type"] == "events" {
            return frame;
        }
    }
}

/// `count` node registrations padded with `padding` bytes each, from eight publishers at once.
async fn publish_padded(bus: &bus::Bus, count: u64, padding: usize) {
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..count / 8 {
                let mut event = common::registered(&format!("n{worker}-{i}"));
                event.data["padding"] = json!("p".repeat(padding));
                bus.append(&[event], bus::ExpectedSeq::Any).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

async fn wait_projected(base: &str, seq: u64) {
    let client = http();
    wait_until(
        &format!("event {seq} to be projected"),
        DEFAULT_WAIT,
        || async {
            let body: Value = client
                .get(format!("{base}/api/projections"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let all_caught_up = body["projections"]
                .as_array()?
                .iter()
                .filter(|p| p["stream"] == "EVENTS")
                .all(|p| p["position"].as_u64().unwrap_or(0) >= seq);
            all_caught_up.then_some(())
        },
    )
    .await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn rest_endpoints_answer_and_refuse_bad_input_clearly(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let running = nebula::start(&config(&nats, &pool, state.path()), SERVER)
        .await
        .unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let bus = common::bus(&nats).await;
    let seq = publish(&bus, "node-a").await;
    wait_projected(&base, seq).await;
    let client = http();

    // Health needs no token and reports every dependency.
    let health = common::get_open_json(&client, format!("{base}/health")).await;
    assert_eq!(health["status"], "ok", "{health}");
    for dependency in ["nats", "postgres", "redis"] {
        assert_eq!(health["checks"][dependency]["status"], "ok", "{health}");
    }
    // Everything else does.
    for path in ["/api/nodes", "/api/events", "/metrics", "/ws"] {
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path} without a token");
        let response = client
            .get(format!("{base}{path}"))
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path} with a wrong token");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }

    let nodes = common::get_json(&client, format!("{base}/api/nodes")).await;
    assert_eq!(nodes["nodes"][0]["node_id"], "node-a");
    assert_eq!(
        nodes["nodes"][0]["gpus"][0]["memory_total_bytes"],
        24u64 << 30
    );
    let node = common::get_json(&client, format!("{base}/api/nodes/node-a")).await;
    assert_eq!(node["hostname"], "node-a.lan");
    let missing = client
        .get(format!("{base}/api/nodes/nobody"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // A render job submitted through REST is a command on the job aggregate; its events carry
    // the correlation id the response names.
    let accepted = client
        .post(format!("{base}/api/render/jobs"))
        .bearer_auth(TOKEN)
        .json(&json!({ "mode": "txt2img", "priority": 2, "params": { "prompt": "fox" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.unwrap();
    let correlation = accepted["correlation_id"].as_str().unwrap().to_owned();
    let job_id = accepted["job_id"].as_str().unwrap().to_owned();
    let cancel = client
        .post(format!("{base}/api/render/jobs/{job_id}/cancel"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let again = client
        .post(format!("{base}/api/render/jobs/{job_id}/cancel"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        409,
        "cancelling a cancelled job is a conflict"
    );
    let filtered = wait_until("the job's events in the event log", DEFAULT_WAIT, || {
        let (client, base, job_id) = (&client, &base, &job_id);
        async move {
            let found: Value = common::get_json(
                client,
                format!("{base}/api/events?aggregate_type=render_job&aggregate_id={job_id}&after=0&limit=10"),
            )
            .await;
            (found["events"].as_array().unwrap().len() >= 3).then_some(found)
        }
    })
    .await;
    let types: Vec<&str> = filtered["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "render.job_requested",
            "render.job_queued",
            "render.job_cancelled"
        ]
    );
    let by_correlation = common::get_json(
        &client,
        format!("{base}/api/events?correlation_id={correlation}"),
    )
    .await;
    let caused: Vec<&str> = by_correlation["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        caused.contains(&"render.queue_admitted") && caused.contains(&"render.job_requested"),
        "{caused:?}"
    );
    // Generic jobs had no worker: the surface that accepted them is gone.
    let gone = client
        .post(format!("{base}/api/jobs"))
        .bearer_auth(TOKEN)
        .json(&json!({ "kind": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let by_type =
        common::get_json(&client, format!("{base}/api/events?type=node.registered")).await;
    assert_eq!(by_type["events"].as_array().unwrap().len(), 1);

    // (e) Bad requests: a clear 4xx with a reason, and the server carries on.
    let bad: [(reqwest::RequestBuilder, u16, &str); 9] = [
        (
            client.get(format!("{base}/api/events?limit=abc")),
            400,
            "limit",
        ),
        (
            client.get(format!("{base}/api/events?limit=100000")),
            400,
            "limit",
        ),
        (
            client.get(format!("{base}/api/events?after=-1")),
            400,
            "after",
        ),
        (
            client.get(format!("{base}/api/events?correlation_id=nope")),
            400,
            "correlation_id",
        ),
        (
            client.get(format!("{base}/api/events?colour=blue")),
            400,
            "colour",
        ),
        (
            client.get(format!("{base}/api/nodes/bad.id")),
            400,
            "node id",
        ),
        (
            client
                .post(format!("{base}/api/render/jobs"))
                .header("content-type", "application/json")
                .body("{\"mode\": "),
            400,
            "invalid JSON",
        ),
        (
            client
                .post(format!("{base}/api/render/jobs"))
                .json(&json!({ "mode": "txt2img", "params": { "prompt": "x" }, "surprise": 1 })),
            400,
            "surprise",
        ),
        (
            client
                .post(format!("{base}/api/render/jobs"))
                .body("mode=x"),
            415,
            "application/json",
        ),
    ];
    for (request, status, needle) in bad {
        let response = request.bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            status,
            "expected {status} for a request about {needle}"
        );
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    }
    let huge = client
        .post(format!("{base}/api/render/jobs"))
        .bearer_auth(TOKEN)
        .json(&json!({ "mode": "txt2img", "params": { "prompt": "y".repeat(300 * 1024) } }))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let unknown_mode = client
        .post(format!("{base}/api/render/jobs"))
        .bearer_auth(TOKEN)
        .json(&json!({ "mode": "telepathy", "params": { "prompt": "x" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_mode.status(), 400);
    let unknown = client
        .get(format!("{base}/api/nope"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let bad_ws = client
        .get(format!("{base}/ws?since=abc"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_ws.status(), 400);

    let metrics = common::get_text(&client, format!("{base}/metrics")).await;
    assert!(
        metrics.contains("nebula_projection_lag_events{projection=\"event_log\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE nebula_projection_messages_applied_total counter"),
        "{metrics}"
    );
    let dashboard = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(dashboard.status(), 200);
    assert!(dashboard.text().await.unwrap().contains("Nebula Command"));
    running.shutdown().await;
}

/// (g) A snapshot states its sequence; deltas follow in order; a resume from a sequence gets
/// exactly the events missed, nothing twice.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn websocket_resume_delivers_exactly_the_missed_events(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let running = nebula::start(&config(&nats, &pool, state.path()), SERVER)
        .await
        .unwrap();
    let addr = running.gateway_addr.unwrap();
    let base = format!("http://{addr}");
    let bus = common::bus(&nats).await;
    for node in ["a", "b", "c"] {
        publish(&bus, node).await;
    }
    wait_projected(&base, 3).await;

    let mut socket = common::ws(addr, "").await;
    let snapshot = frame(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["seq"], 3);
    assert_eq!(snapshot["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(snapshot["events"].as_array().unwrap().len(), 3);
    assert_eq!(publish(&bus, "d").await, 4);
    assert_eq!(publish(&bus, "e").await, 5);
    let four = event_frame(&mut socket).await;
    assert_eq!(
        (
            four["seq"].as_u64(),
            four["events"][0]["aggregate_id"].as_str()
        ),
        (Some(4), Some("d"))
    );
    assert_eq!(event_frame(&mut socket).await["seq"], 5);
    socket.close(None).await.unwrap();

    for node in ["f", "g", "h"] {
        publish(&bus, node).await;
    }
    let mut resumed = common::ws(addr, "?since=5").await;
    assert_eq!(
        frame(&mut resumed).await,
        json!({ "type": "resumed", "seq": 5 })
    );
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(event_frame(&mut resumed).await["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, vec![6, 7, 8], "missed events, in order, once");
    assert_eq!(publish(&bus, "i").await, 9);
    assert_eq!(
        event_frame(&mut resumed).await["seq"],
        9,
        "live events follow the replay without a gap"
    );

    // A resume from far back replays from the log, not only from what the gateway saw live.
    let mut from_start = common::ws(addr, "?since=0").await;
    assert_eq!(frame(&mut from_start).await["type"], "resumed");
    let mut all = Vec::new();
    for _ in 0..9 {
        all.push(event_frame(&mut from_start).await["seq"].as_u64().unwrap());
    }
    assert_eq!(all, (1..=9).collect::<Vec<_>>());
    running.shutdown().await;
}

/// When the event log lags the nodes model, the snapshot's recent events come from the stream:
/// the feed has no hole below the snapshot's sequence.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_snapshot_fills_recent_events_the_log_has_not_projected(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = config(&nats, &pool, state.path());
    config.projector.only = vec!["nodes".to_owned()];
    let running = nebula::start(&config, SERVER).await.unwrap();
    let addr = running.gateway_addr.unwrap();
    let bus = common::bus(&nats).await;
    for node in ["a", "b", "c"] {
        publish(&bus, node).await;
    }
    let client = http();
    wait_until("nodes to be projected", DEFAULT_WAIT, || async {
        let body: Value = client
            .get(format!("http://{addr}/api/nodes"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["nodes"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let mut socket = common::ws(addr, "").await;
    let snapshot = frame(&mut socket).await;
    assert_eq!(snapshot["seq"], 3);
    let seqs: Vec<u64> = snapshot["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3], "{snapshot}");
    assert_eq!(snapshot["events"][2]["aggregate_id"], "c");
    running.shutdown().await;
}

/// A client that stops reading is disconnected; the others keep receiving everything.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_slow_websocket_client_is_disconnected_not_waited_for(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = config(&nats, &pool, state.path());
    config.gateway.ws_client_buffer = 16;
    let running = nebula::start(&config, Parts::GATEWAY).await.unwrap();
    let addr = running.gateway_addr.unwrap();
    let mut slow = common::ws(addr, "?since=0").await;
    let mut healthy = common::ws(addr, "?since=0").await;
    assert_eq!(frame(&mut slow).await["type"], "resumed");
    assert_eq!(frame(&mut healthy).await["type"], "resumed");

    // Big events, so the slow client's socket buffers fill and its queue overflows.
    let bus = common::bus(&nats).await;
    const EVENTS: u64 = 4000;
    let publisher = tokio::spawn(async move { publish_padded(&bus, EVENTS, 8 * 1024).await });
    let mut received = 0;
    let mut last = 0;
    while received < EVENTS {
        let frame = event_frame(&mut healthy).await;
        let seq = frame["seq"].as_u64().unwrap();
        assert_eq!(seq, last + 1, "the healthy client saw a gap or a repeat");
        last = seq;
        received += 1;
    }
    publisher.await.unwrap();
    // The slow one was cut off with the slow-consumer close code (after whatever was buffered).
    let close = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = slow.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the slow client was never disconnected");
    let close = close.expect("expected a close frame");
    assert_eq!(u16::from(close.code), gateway::CLOSE_SLOW_CONSUMER);
    assert!(
        close.reason.contains("since="),
        "the close reason tells the client where to resume: {}",
        close.reason
    );
    running.shutdown().await;
}

/// A client that closes politely in the middle of a long replay gets the server's close frame
/// at once, not after the replay (it would otherwise wait out its own close timeout).
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_client_closing_mid_replay_is_answered_at_once(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let running = nebula::start(&config(&nats, &pool, state.path()), Parts::GATEWAY)
        .await
        .unwrap();
    let addr = running.gateway_addr.unwrap();
    // 2,000 events of 16 KiB: a 32 MiB replay, more than the sockets between us buffer.
    let bus = common::bus(&nats).await;
    const EVENTS: u64 = 2000;
    publish_padded(&bus, EVENTS, 16 * 1024).await;
    let mut socket = common::ws(addr, "?since=0").await;
    assert_eq!(frame(&mut socket).await["type"], "resumed");
    assert_eq!(event_frame(&mut socket).await["seq"], 1);
    socket.send(Message::Close(None)).await.unwrap();
    let (frames_after, answer) = tokio::time::timeout(Duration::from_secs(30), async {
        let mut frames = 0u64;
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Close(frame)) => return (frames, Some(frame)),
                Ok(_) => frames += 1,
                Err(_) => return (frames, None),
            }
        }
        (frames, None)
    })
    .await
    .expect("the server never answered the close");
    assert!(
        answer.is_some(),
        "the server dropped the connection instead of answering the close frame"
    );
    assert!(
        frames_after < EVENTS - 1,
        "the whole replay ({frames_after} frames) was streamed before the close was answered"
    );
    running.shutdown().await;
}

/// The DLQ over REST: a real consumer gives up on a message; the letter is listed with its
/// reason and origin, shown whole, refused for replay where it cannot be sent back, and, once
/// the consumer is fixed, sent back and handled — once, recorded with who did it.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn dead_letters_are_listed_and_sent_back_once_fixed(pool: PgPool) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use bus::consumer::{ConsumerSpec, DeadLetter, Outcome};

    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let running = nebula::start(&config(&nats, &pool, state.path()), Parts::GATEWAY)
        .await
        .unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let client = http();
    let bus = common::bus(&nats).await;

    // A worker that cannot handle "needs-fix" until it is fixed.
    let fixed = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(Mutex::new(Vec::<String>::new()));
    let cancel = tokio_util::sync::CancellationToken::new();
    let worker = {
        let (bus, fixed, handled, cancel) =
            (bus.clone(), fixed.clone(), handled.clone(), cancel.clone());
        let mut spec = ConsumerSpec::new(bus::StreamName::Work, "e2e-worker");
        spec.filter_subject = Some("nebula.work.e2e".into());
        tokio::spawn(async move {
            bus.consume(spec, cancel, |delivery| {
                let body = String::from_utf8_lossy(&delivery.message.payload).into_owned();
                let outcome = if body == "needs-fix" && !fixed.load(Ordering::SeqCst) {
                    Outcome::Reject("cannot handle needs-fix yet".into())
                } else {
                    handled.lock().unwrap().push(body);
                    Outcome::Ack
                };
                async move { outcome }
            })
            .await
        })
    };
    bus.publish_raw(
        "nebula.work.e2e",
        "e2e-1",
        Vec::new(),
        bytes::Bytes::from_static(b"needs-fix"),
    )
    .await
    .unwrap();
    wait_until("the worker to give up on it", DEFAULT_WAIT, || async {
        (bus.bounds(bus::StreamName::Dlq).await.unwrap().messages == 1).then_some(())
    })
    .await;
    // And one from the event log, which is history and cannot be sent back.
    bus.dead_letter(DeadLetter {
        origin: "projection-nodes".into(),
        origin_stream: bus::StreamName::Events,
        origin_subject: "nebula.events.node.n9".into(),
        origin_seq: events::StreamSeq(9),
        reason: "poison event".into(),
        payload: bytes::Bytes::from_static(b"[{\"not\": \"an envelope\"}]"),
    })
    .await
    .unwrap();
    let list = wait_until("both dead letters", DEFAULT_WAIT, || async {
        let list = common::get_json(&client, format!("{base}/api/dlq")).await;
        (list["total"] == 2).then_some(list)
    })
    .await;
    let letters = list["letters"].as_array().unwrap();
    let (events_letter, work_letter) = (&letters[0], &letters[1]);
    assert_eq!(
        events_letter["origin"], "projection-nodes",
        "newest first: {list}"
    );
    assert_eq!(events_letter["replayable"], false);
    assert!(
        events_letter["not_replayable_because"]
            .as_str()
            .unwrap()
            .contains("history")
    );
    assert_eq!(events_letter["payload"], json!([{ "not": "an envelope" }]));
    assert_eq!(work_letter["origin"], "e2e-worker");
    assert_eq!(work_letter["origin_stream"], "WORK");
    assert_eq!(work_letter["origin_subject"], "nebula.work.e2e");
    assert!(
        work_letter["reason"]
            .as_str()
            .unwrap()
            .contains("cannot handle needs-fix yet")
    );
    assert_eq!(work_letter["payload"], "needs-fix");
    assert_eq!(work_letter["replayable"], true);
    let work_seq = work_letter["seq"].as_u64().unwrap();
    let events_seq = events_letter["seq"].as_u64().unwrap();
    let one = common::get_json(&client, format!("{base}/api/dlq/{work_seq}")).await;
    assert_eq!(one["payload"], "needs-fix");

    let post = |path: String| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
    };
    let refused = post(format!("/api/dlq/{events_seq}/replay")).await.unwrap();
    assert_eq!(refused.status(), 400);
    let refused: Value = refused.json().await.unwrap();
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rebuild its projection")
    );

    // Fixed: sent back, handled, gone from the DLQ, recorded with its actor.
    fixed.store(true, Ordering::SeqCst);
    let replayed = post(format!("/api/dlq/{work_seq}/replay")).await.unwrap();
    assert_eq!(replayed.status(), 202);
    let replayed: Value = replayed.json().await.unwrap();
    assert_eq!(replayed["replayed_to"], "nebula.work.e2e");
    wait_until(
        "the worker to handle the replayed message",
        DEFAULT_WAIT,
        || async { (handled.lock().unwrap().as_slice() == ["needs-fix"]).then_some(()) },
    )
    .await;
    let gone = post(format!("/api/dlq/{work_seq}/replay")).await.unwrap();
    assert_eq!(gone.status(), 404);
    let list = common::get_json(&client, format!("{base}/api/dlq")).await;
    assert_eq!(list["total"], 1);
    let id = events::dlq::dead_letter_id(
        "e2e-worker",
        "WORK",
        work_letter["origin_seq"].as_u64().unwrap(),
    );
    let records = common::envelopes(&bus, "dead_letter", &id).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].actor, events::Actor::User("admin".into()));
    assert_eq!(
        records[0].correlation_id.to_string(),
        replayed["correlation_id"].as_str().unwrap()
    );

    // The same message dead-lettered again later (a second copy on the DLQ) is not sent back
    // twice: its record says it was.
    let copy = bus
        .publish_raw(
            "nebula.dlq.e2e-worker",
            "dlq-copy",
            vec![
                ("Nebula-Dlq-Reason".into(), "again".into()),
                ("Nebula-Origin-Stream".into(), "WORK".into()),
                ("Nebula-Origin-Subject".into(), "nebula.work.e2e".into()),
                (
                    "Nebula-Origin-Seq".into(),
                    work_letter["origin_seq"].to_string(),
                ),
            ],
            bytes::Bytes::from_static(b"needs-fix"),
        )
        .await
        .unwrap();
    let twice = post(format!("/api/dlq/{}/replay", copy.stream_seq))
        .await
        .unwrap();
    assert_eq!(twice.status(), 409);
    assert_eq!(handled.lock().unwrap().len(), 1, "handled twice");

    for (path, status) in [
        ("/api/dlq/abc", 400),
        ("/api/dlq/9999", 404),
        ("/api/dlq?limit=0", 400),
    ] {
        let response = client
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
    }
    let unknown = post("/api/dlq/9999/replay".into()).await.unwrap();
    assert_eq!(unknown.status(), 404);
    cancel.cancel();
    worker.await.unwrap().unwrap();
    running.shutdown().await;
}

/// nats-server away: every viewer is told (`{"type":"bus","connected":false}`, the dashboard's
/// "reconnecting to NATS"), and told again when it is back; the feed then carries on.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn viewers_are_told_when_nats_goes_away_and_comes_back(pool: PgPool) {
    let mut nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let running = nebula::start(&config(&nats, &pool, state.path()), SERVER)
        .await
        .unwrap();
    let addr = running.gateway_addr.unwrap();
    let mut socket = common::ws(addr, "").await;
    assert_eq!(frame(&mut socket).await["type"], "snapshot");
    let bus_frame =
        |want: bool| move |frame: &Value| frame["type"] == "bus" && frame["connected"] == want;
    nats.kill();
    let away = bus_frame(false);
    loop {
        if away(&frame(&mut socket).await) {
            break;
        }
    }
    nats.spawn();
    let back = bus_frame(true);
    loop {
        if back(&frame(&mut socket).await) {
            break;
        }
    }
    // And the feed goes on, once the hub has reopened its reader (bounded).
    let bus = common::bus(&nats).await;
    publish(&bus, "after").await;
    let events = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let Some(Ok(Message::Text(text))) = socket.next().await else {
                panic!("the websocket ended");
            };
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "events" {
                return frame;
            }
        }
    })
    .await
    .expect("the feed went on within 60 s of NATS coming back");
    assert_eq!(events["events"][0]["aggregate_id"], "after");
    running.shutdown().await;
}
