//! `/health` (no auth) and `/metrics` (Prometheus text).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::{ApiError, AppState};

fn check(result: Result<Duration, String>) -> serde_json::Value {
    match result {
        Ok(latency) => json!({ "status": "ok", "latency_ms": latency.as_secs_f64() * 1000.0 }),
        Err(error) => json!({ "status": "down", "error": error }),
    }
}

pub(crate) async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let (nats, postgres, redis) = tokio::join!(
        async { state.bus.ping().await.map_err(|err| err.to_string()) },
        async {
            let started = std::time::Instant::now();
            tokio::time::timeout(Duration::from_secs(2), state.read.ping())
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|r| r.map_err(|err| format!("{err:#}")))
                .map(|()| started.elapsed())
        },
        state.redis.ping(),
    );
    let healthy = nats.is_ok() && postgres.is_ok() && redis.is_ok();
    // Chat commands of this process waiting for a dependency to come back (none are lost).
    let registry = state.bus.metrics();
    let waiting = |on: &str| -> f64 {
        events::chat::Platform::ALL
            .iter()
            .map(|p| {
                registry.get(
                    "nebula_chat_waiting",
                    &[("platform", p.as_str()), ("on", on)],
                )
            })
            .sum()
    };
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "checks": { "nats": check(nats), "postgres": check(postgres), "redis": check(redis) },
        "chat": {
            "waiting_on_redis": waiting("redis"),
            "waiting_on_nats": waiting("nats"),
            // Commands taken from the stream and not yet settled (deciding, or queued behind
            // a waiting one of the same lane).
            "held": events::chat::Platform::ALL
                .iter()
                .map(|p| registry.get("nebula_consumer_held", &[("consumer", &format!("chat-intake-{p}"))]))
                .sum::<f64>(),
        },
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// The share of a stream's limit above which it is worth a warning.
pub(crate) const STORAGE_WARN_FRACTION: f64 = 0.8;

/// `GET /api/storage` (viewer): every stream's bytes, messages and limit, the artifact store's
/// files and bytes, and the share of a limit past which the dashboard warns.
pub(crate) async fn storage(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let streams =
        state.bus.storage().await.map_err(|err| {
            ApiError::Unavailable(format!("nats cannot say what it stores: {err}"))
        })?;
    let store = state.artifacts.clone();
    let artifacts = tokio::task::spawn_blocking(move || store.usage())
        .await
        .map_err(|err| ApiError::Unavailable(err.to_string()))?
        .map_err(|err| ApiError::Unavailable(format!("the artifact store: {err}")))?;
    Ok(Json(json!({
        "streams": streams,
        "artifacts": artifacts,
        "warn_fraction": STORAGE_WARN_FRACTION,
    })))
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let registry = state.bus.metrics();
    registry.set("nebula_ws_clients", &[], state.hub.clients() as f64);
    // What each stream holds and may hold, and the artifact store's size.
    if let Ok(streams) = state.bus.storage().await {
        for usage in streams {
            let labels = [("stream", usage.stream)];
            registry.set("nebula_stream_bytes", &labels, usage.bytes as f64);
            registry.set("nebula_stream_messages", &labels, usage.messages as f64);
            if let Some(max) = usage.max_bytes {
                registry.set("nebula_stream_max_bytes", &labels, max as f64);
            }
        }
    }
    let store = state.artifacts.clone();
    if let Ok(Ok(usage)) = tokio::task::spawn_blocking(move || store.usage()).await {
        registry.set("nebula_artifacts_bytes", &[], usage.bytes as f64);
        registry.set("nebula_artifacts_files", &[], usage.files as f64);
    }
    // Lag of every projection behind its stream, computed at scrape time.
    if let Ok(checkpoints) = state.read.checkpoints().await {
        for projection in projections::all() {
            if let Ok(head) = state.bus.last_seq(projection.stream()).await {
                let position = checkpoints
                    .iter()
                    .find(|(n, _)| n == projection.name())
                    .map_or(0, |(_, s)| *s);
                let lag = (head.0 as i64 - position).max(0);
                registry.set(
                    "nebula_projection_lag_events",
                    &[("projection", projection.name())],
                    lag as f64,
                );
            }
        }
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        registry.render(),
    ))
}
