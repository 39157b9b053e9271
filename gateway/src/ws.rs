//! `GET /ws[?since=<seq>]`: a snapshot (or a resume point), then every event after it, in order,
//! each exactly once, plus live telemetry.

use std::collections::HashMap;
use std::time::Duration;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use bus::{ReadFrom, StreamName};
use events::StreamSeq;
use futures::SinkExt;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::hub::event_frame;
use crate::{ApiError, AppState, Principal};

/// Close code sent to a client that fell too far behind.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code sent when the token the socket was opened with is revoked or expires: signing in
/// again is the only way back.
pub const CLOSE_TOKEN_ENDED: u16 = 4001;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let since = params
        .get("since")
        .map(|raw| {
            raw.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!("since must be a stream sequence, got {raw:?}"))
            })
        })
        .transpose()?;
    // Clients only send the odd ping: a big message is a mistake or an attack.
    let limit = state.config.ws_max_message_bytes;
    let upgrade = upgrade.max_message_size(limit).max_frame_size(limit);
    Ok(upgrade.on_upgrade(move |socket| async move {
        let reason = serve_client(socket, state.clone(), principal, since.map(StreamSeq)).await;
        state
            .bus
            .metrics()
            .add("nebula_ws_disconnects_total", &[("reason", reason)], 1.0);
    }))
}

/// The next queued frame, if one is ready and the batch is not full yet.
fn try_next(
    receiver: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<crate::hub::Frame>>,
    batched: usize,
) -> Option<Result<std::sync::Arc<crate::hub::Frame>, RecvError>> {
    const MAX_BATCH: usize = 256;
    if batched >= MAX_BATCH {
        return None;
    }
    match receiver.try_recv() {
        Ok(frame) => Some(Ok(frame)),
        Err(TryRecvError::Lagged(missed)) => Some(Err(RecvError::Lagged(missed))),
        Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
        Err(TryRecvError::Empty) => None,
    }
}

/// Writes `messages` and flushes once, within the send timeout.
async fn send_batch(socket: &mut Sender, messages: Vec<Message>) -> Result<(), &'static str> {
    if messages.is_empty() {
        return Ok(());
    }
    let write = async {
        for message in messages {
            socket.feed(message).await?;
        }
        socket.flush().await
    };
    match tokio::time::timeout(SEND_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("closed"),
        Err(_) => {
            // Stuck: tell it so, if it still listens at all.
            let close = CloseFrame {
                code: CLOSE_SLOW_CONSUMER,
                reason: "slow consumer (send timed out)".into(),
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                socket.send(Message::Close(Some(close))),
            )
            .await;
            Err("send_timeout")
        }
    }
}

async fn send(socket: &mut Sender, message: Message) -> Result<(), &'static str> {
    send_batch(socket, vec![message]).await
}

/// The snapshot's recent events: the event log's rows, plus whatever the log has not projected
/// yet up to the snapshot's sequence, read from the stream, so the feed has no hole.
async fn recent_events(
    state: &AppState,
    snapshot: &projections::Snapshot,
) -> Result<Vec<Value>, bus::BusError> {
    let mut events: Vec<Value> = snapshot
        .events
        .iter()
        .filter_map(|row| serde_json::to_value(row).ok())
        .collect();
    if snapshot.events_through < snapshot.seq {
        let wanted = state.config.snapshot_events.max(1);
        let from = snapshot.events_through.max(snapshot.seq - wanted) + 1;
        let mut messages = state
            .bus
            .read(
                StreamName::Events,
                ReadFrom::Seq(StreamSeq(from as u64)),
                None,
            )
            .await?;
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        {
            let message = message?;
            if message.stream_seq.0 as i64 > snapshot.seq {
                break;
            }
            for event in message.decode_commit().unwrap_or_default() {
                if event.event_type == projections::PROGRESS_TICK {
                    continue;
                }
                if let Ok(mut value) = serde_json::to_value(&event) {
                    value["stream_seq"] = json!(message.stream_seq.0);
                    events.push(value);
                }
            }
            if message.stream_seq.0 as i64 >= snapshot.seq {
                break;
            }
        }
        let excess = events.len().saturating_sub(wanted as usize);
        events.drain(..excess);
    }
    Ok(events)
}

/// The writing half of a client's socket.
type Sender = futures::stream::SplitSink<WebSocket, Message>;

/// Aborts the wrapped task when dropped (the reader of a connection ends with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve_client(
    socket: WebSocket,
    state: AppState,
    principal: Principal,
    since: Option<StreamSeq>,
) -> &'static str {
    // Reads happen in their own task, woken only when the client sends something: polling the
    // read half on every outgoing frame costs a buffer clear each time (it was most of the
    // gateway's CPU under load).
    let (mut socket, mut incoming) = futures::StreamExt::split(socket);
    let client_gone = tokio_util::sync::CancellationToken::new();
    let _reader = {
        let client_gone = client_gone.clone();
        AbortOnDrop(tokio::spawn(async move {
            while let Some(Ok(message)) = incoming.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
            client_gone.cancel();
        }))
    };
    let reason = stream_to_client(&mut socket, &state, &principal, since, &client_gone).await;
    if client_gone.is_cancelled() {
        // The client closed (politely, or mid-replay, which makes the next send fail): answer
        // its close frame — tungstenite queued the reply when it read it — and close.
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.close()).await;
        return "client_closed";
    }
    reason
}

/// Tells the client its token ended and why, then closes.
async fn close_token_ended(socket: &mut Sender, why: &str) -> &'static str {
    let close = CloseFrame {
        code: CLOSE_TOKEN_ENDED,
        reason: format!("{why}; sign in again").into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.send(Message::Close(Some(close))),
    )
    .await;
    "token_ended"
}

/// The snapshot or resume point, the gap filled from the log, then the live feed, until the
/// client goes (`client_gone`), falls behind, its token is revoked or expires, or the gateway
/// shuts down.
async fn stream_to_client(
    socket: &mut Sender,
    state: &AppState,
    principal: &Principal,
    since: Option<StreamSeq>,
    client_gone: &tokio_util::sync::CancellationToken,
) -> &'static str {
    // Subscribe first: everything after `head` will be in the receiver.
    let mut subscription = state.hub.subscribe();
    let start = match since {
        Some(since) => {
            let frame = json!({ "type": "resumed", "seq": since.0 }).to_string();
            if let Err(reason) = send(socket, Message::Text(frame.into())).await {
                return reason;
            }
            since
        }
        None => match state.read.snapshot(state.config.snapshot_events).await {
            Ok(snapshot) => {
                let seq = StreamSeq(snapshot.seq.max(0) as u64);
                let events = match recent_events(state, &snapshot).await {
                    Ok(events) => events,
                    Err(err) => {
                        tracing::warn!(error = %err, "failed to read recent events for a snapshot");
                        return "snapshot_failed";
                    }
                };
                let frame = json!({ "type": "snapshot", "seq": snapshot.seq, "nodes": snapshot.nodes, "events": events });
                if let Err(reason) = send(socket, Message::Text(frame.to_string().into())).await {
                    return reason;
                }
                seq
            }
            Err(err) => {
                tracing::error!(
                    error = format!("{err:#}"),
                    "failed to read websocket snapshot"
                );
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: 1011,
                        reason: "snapshot unavailable".into(),
                    })))
                    .await;
                return "snapshot_failed";
            }
        },
    };
    // Fill the gap (start, head] from the log itself.
    let mut last_sent = start;
    if subscription.head > start {
        match state
            .bus
            .read(
                StreamName::Events,
                ReadFrom::Seq(StreamSeq(start.0 + 1)),
                None,
            )
            .await
        {
            Ok(mut messages) => {
                while last_sent < subscription.head {
                    let next = tokio::select! {
                        // A client that closes mid-replay is answered at once, not after it.
                        () = client_gone.cancelled() => return "client_closed",
                        next = tokio::time::timeout(Duration::from_secs(10), messages.next()) => next,
                    };
                    let Ok(Some(Ok(message))) = next else {
                        let _ = socket
                            .send(Message::Close(Some(CloseFrame {
                                code: 1011,
                                reason: "replay failed".into(),
                            })))
                            .await;
                        return "replay_failed";
                    };
                    if message.stream_seq > subscription.head {
                        break;
                    }
                    last_sent = message.stream_seq;
                    if let Some(frame) = event_frame(&message) {
                        if let Err(reason) = send(socket, Message::Text(frame.text.clone())).await {
                            return reason;
                        }
                        if frame.revokes(principal) {
                            return close_token_ended(socket, "token revoked").await;
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "failed to replay events for a websocket client");
                return "replay_failed";
            }
        }
        last_sent = last_sent.max(subscription.head);
    }
    // A token that expires ends its socket then (far enough away: never).
    let expires_in = principal.expires_at.map_or(Duration::MAX, |at| {
        (at - chrono::Utc::now()).to_std().unwrap_or_default()
    });
    let expiry = tokio::time::sleep(expires_in.min(Duration::from_secs(100 * 365 * 86_400)));
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            received = subscription.receiver.recv() => {
                // Take whatever else is already queued too, and write it with one flush: under
                // load that is one syscall for many frames instead of one each.
                let mut next = Some(received);
                let mut batch = Vec::new();
                let mut revoked = false;
                while let Some(received) = next.take() {
                    match received {
                        Ok(frame) => {
                            if let Some(seq) = frame.seq {
                                if seq <= last_sent {
                                    next = try_next(&mut subscription.receiver, batch.len());
                                    continue;
                                }
                                last_sent = seq;
                            }
                            batch.push(Message::Text(frame.text.clone()));
                            if frame.revokes(principal) {
                                revoked = true;
                                break;
                            }
                        }
                        Err(RecvError::Lagged(missed)) => {
                            tracing::info!(missed, "disconnecting slow websocket client");
                            let close = CloseFrame { code: CLOSE_SLOW_CONSUMER, reason: format!("slow consumer; resume with since={last_sent}").into() };
                            let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(Some(close)))).await;
                            return "slow_consumer";
                        }
                        Err(RecvError::Closed) => return "shutdown",
                    }
                    next = try_next(&mut subscription.receiver, batch.len());
                }
                if let Err(reason) = send_batch(socket, batch).await {
                    return reason;
                }
                if revoked {
                    return close_token_ended(socket, "token revoked").await;
                }
            }
            () = &mut expiry => return close_token_ended(socket, "token expired").await,
            () = state.hub.shutting_down() => {
                let close = CloseFrame { code: 1001, reason: format!("gateway shutting down; resume with since={last_sent}").into() };
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(Some(close)))).await;
                return "shutdown";
            }
            () = client_gone.cancelled() => return "client_closed",
        }
    }
}
