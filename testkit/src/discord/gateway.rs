//! The websocket gateway (`ws://…/?v=10`, JSON text frames): HELLO, IDENTIFY → READY (or close
//! 4004), heartbeats, RESUME → the missed dispatches and RESUMED (or op 9), and each session's
//! dispatches.

use std::sync::{Arc, PoisonError};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::payloads;
use super::{Session, Shared};

/// `GET /` with an upgrade: a gateway connection.
pub(super) async fn connect(
    State(shared): State<Arc<Shared>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade.on_upgrade(move |socket| session(socket, shared))
}

/// One gateway connection: HELLO, then IDENTIFY (a new session, READY) or RESUME (the session
/// named, its missed dispatches, RESUMED; op 9 for one it does not know), heartbeats, and the
/// session's dispatches.
async fn session(mut socket: WebSocket, shared: Arc<Shared>) {
    let close = CancellationToken::new();
    shared
        .close
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(close.clone());
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": 41250}});
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let close_with = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        tokio::select! {
            () = close.cancelled() => {
                let _ = socket.send(close_with(1001, "going away")).await;
                return;
            }
            frame = rx.recv() => {
                let Some(frame) = frame else { return };
                if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                    return;
                }
            }
            frame = socket.recv() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                };
                let Ok(payload) = serde_json::from_str::<Value>(&text) else {
                    let _ = socket.send(close_with(4002, "Error while decoding payload.")).await;
                    return;
                };
                let frames = match payload["op"].as_u64() {
                    Some(1) => vec![json!({"op": 11, "s": null, "t": null, "d": null})],
                    Some(op @ (2 | 6)) => {
                        let token = payload["d"]["token"].as_str().unwrap_or_default();
                        if token.trim_start_matches("Bot ") != shared.options.token {
                            let _ = socket.send(close_with(4004, "Authentication failed.")).await;
                            return;
                        }
                        if op == 2 {
                            vec![identify(&shared, tx.clone())]
                        } else {
                            resume(&shared, &payload["d"], tx.clone())
                        }
                    }
                    _ => Vec::new(),
                };
                for frame in frames {
                    if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// A new session attached to `tx`: its READY.
fn identify(shared: &Shared, tx: mpsc::UnboundedSender<Value>) -> Value {
    let guilds: Vec<Value> = shared
        .options
        .guilds
        .iter()
        .map(|g| json!({"id": g.to_string(), "unavailable": true}))
        .collect();
    let mut session = Session {
        id: uuid::Uuid::new_v4().simple().to_string(),
        seq: 0,
        log: Vec::new(),
        tx: None, // READY goes out on this connection first, then the rest
    };
    let ready = session.dispatch(
        "READY",
        json!({
            "v": 10,
            "user": payloads::bot_user(shared.application_id),
            "guilds": guilds,
            "session_id": session.id,
            "resume_gateway_url": format!("ws://{}", shared.addr),
            "shard": [0, 1],
            "application": {"id": shared.application_id.to_string(), "flags": 0},
            "private_channels": [],
            "presences": [],
            "relationships": [],
        }),
    );
    session.tx = Some(tx);
    let mut inner = shared.lock();
    inner.identified += 1;
    inner.sessions.push(session);
    ready
}

/// The session named in a RESUME, attached to `tx`: what it missed after `seq`, then RESUMED;
/// op 9 (not resumable) for a session it does not know.
fn resume(shared: &Shared, resume: &Value, tx: mpsc::UnboundedSender<Value>) -> Vec<Value> {
    let id = resume["session_id"].as_str().unwrap_or_default();
    let after = resume["seq"].as_u64().unwrap_or(0);
    let mut inner = shared.lock();
    let Some(session) = inner.sessions.iter_mut().find(|s| s.id == id) else {
        return vec![json!({"op": 9, "s": null, "t": null, "d": false})];
    };
    let mut frames: Vec<Value> = session
        .log
        .iter()
        .filter(|frame| frame["s"].as_u64().is_some_and(|s| s > after))
        .cloned()
        .collect();
    session.tx = None;
    frames.push(session.dispatch("RESUMED", json!({})));
    session.tx = Some(tx);
    frames
}
