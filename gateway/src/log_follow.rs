//! `GET /api/nodes/{id}/containers/{name}/logs/follow[?tail=]` (a websocket, viewer): a
//! container's new log lines as its node's agent sends them, while the socket is open. Each
//! viewer gets at most `gateway.log_follow_bytes_per_sec`; what a chattier container writes
//! beyond that (or beyond the agent's own cap) is counted in `skipped_bytes` and left out, so a
//! noisy log cannot crowd a viewer's connection or the gateway. Frames: `{"lines": [{stream,
//! text}], "skipped_bytes"?, "ended"?}`.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use events::NodeId;
use events::container::{ContainerAction, FOLLOW_QUERY, FollowQuestion, LogBatch};
use futures::{SinkExt, Stream, StreamExt};
use serde_json::json;

use crate::api::known_params;
use crate::containers::known_node;
use crate::{ApiError, AppState};

/// How long a lease the agent is given, and how often it is renewed.
const LEASE_SECS: u32 = 30;
const RENEW_EVERY: Duration = Duration::from_secs(10);
const ASK_WITHIN: Duration = Duration::from_secs(10);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn follow(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    known_params(&query, &["tail", "ticket"])?;
    let tail = match query.get("tail") {
        None => 100,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|tail| *tail <= 1000)
            .ok_or_else(|| ApiError::BadRequest(format!("tail must be 0..=1000, got {raw:?}")))?,
    };
    ContainerAction::validate_container(&name).map_err(ApiError::BadRequest)?;
    let node = known_node(&state, &id).await?;
    let follow_id = common::random_hex(16)
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("no randomness: {err}")))?;
    let question = FollowQuestion {
        container: name.clone(),
        follow_id: follow_id.clone(),
        tail,
        seconds: LEASE_SECS,
    };
    // Listening first, so the first lines are not missed.
    let lines = state
        .bus
        .follow_log::<LogBatch>(node.as_str(), &follow_id)
        .await
        .map_err(|err| ApiError::Unavailable(err.to_string()))?;
    ask(&state, &node, &question)
        .await
        .map_err(|err| match err.kind() {
            bus::BusErrorKind::Refused if err.to_string().contains("No such container") => {
                ApiError::NotFound(format!("no container {name} on node {node}"))
            }
            bus::BusErrorKind::Refused => ApiError::Rejected {
                status: axum::http::StatusCode::BAD_GATEWAY,
                message: err.to_string(),
            },
            _ => ApiError::Unavailable(err.to_string()),
        })?;
    Ok(upgrade.on_upgrade(move |socket| async move {
        serve(socket, state.clone(), node.clone(), question.clone(), lines).await;
        // Best effort: the lease would end on its own anyway.
        let stop = FollowQuestion {
            seconds: 0,
            ..question
        };
        let _ = ask(&state, &node, &stop).await;
    }))
}

async fn ask(
    state: &AppState,
    node: &NodeId,
    question: &FollowQuestion,
) -> Result<serde_json::Value, bus::BusError> {
    state
        .bus
        .ask(node.as_str(), FOLLOW_QUERY, question, ASK_WITHIN)
        .await
}

async fn serve(
    socket: WebSocket,
    state: AppState,
    node: NodeId,
    question: FollowQuestion,
    lines: impl Stream<Item = LogBatch> + Send,
) {
    let (mut sender, mut receiver) = socket.split();
    let mut lines = std::pin::pin!(lines);
    let mut bucket = common::Bucket::new(state.config.log_follow_bytes_per_sec);
    let mut renew = tokio::time::interval(RENEW_EVERY);
    renew.tick().await; // the first lease was just given
    loop {
        let frame = tokio::select! {
            incoming = receiver.next() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
            _ = renew.tick() => {
                if let Err(err) = ask(&state, &node, &question).await {
                    json!({ "lines": [], "ended": format!("the node stopped following: {err}") })
                } else {
                    continue;
                }
            }
            batch = lines.next() => {
                let Some(mut batch) = batch else { return };
                let mut skipped = batch.skipped_bytes;
                batch.lines.retain(|line| {
                    let size = line.text.len() as u64 + 1;
                    let keep = bucket.take(size);
                    if !keep {
                        skipped += size;
                    }
                    keep
                });
                if skipped > 0 {
                    state.bus.metrics().add("nebula_log_follow_skipped_bytes_total", &[], skipped as f64);
                }
                json!({ "lines": batch.lines, "skipped_bytes": skipped, "ended": batch.ended })
            }
        };
        let ended = !frame["ended"].is_null();
        let send = sender.send(Message::Text(frame.to_string().into()));
        if !matches!(tokio::time::timeout(SEND_TIMEOUT, send).await, Ok(Ok(()))) || ended {
            let _ = sender.close().await;
            return;
        }
    }
}
