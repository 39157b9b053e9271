//! The dead-letter queue over REST: what the bus dead-lettered, why and from where, and sending
//! a letter back once its cause is fixed.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bus::StoredDeadLetter;
use events::StreamSeq;
use sagas::ReplayError;
use serde_json::{Value, json};

use crate::api::{known_params, limit_param};
use crate::{ApiError, AppState, Principal};

/// How much of a payload the list shows; `GET /api/dlq/{seq}` shows it whole.
const PREVIEW_BYTES: usize = 4096;

/// A letter as the API shows it: the payload as JSON when it is JSON, else as text.
fn letter_json(letter: &StoredDeadLetter, preview: bool) -> Value {
    let bytes = if preview && letter.payload.len() > PREVIEW_BYTES {
        &letter.payload[..PREVIEW_BYTES]
    } else {
        &letter.payload[..]
    };
    let payload = serde_json::from_slice::<Value>(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()));
    let replayable = letter.replayable();
    json!({
        "seq": letter.seq.0,
        "subject": letter.subject,
        "origin": letter.origin,
        "origin_stream": letter.origin_stream.map(|s| s.as_str()),
        "origin_subject": letter.origin_subject,
        "origin_seq": letter.origin_seq,
        "reason": letter.reason,
        "dead_lettered_at": letter.dead_lettered_at,
        "size": letter.payload.len(),
        "payload": payload,
        "truncated": preview && letter.payload.len() > PREVIEW_BYTES,
        "replayable": replayable.is_ok(),
        "not_replayable_because": replayable.err(),
    })
}

fn seq_param(raw: &str) -> Result<StreamSeq, ApiError> {
    raw.parse::<u64>()
        .ok()
        .filter(|seq| *seq > 0)
        .map(StreamSeq)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "a dead letter is named by its DLQ sequence, got {raw:?}"
            ))
        })
}

/// `GET /api/dlq?limit=`: the newest dead letters first, and how many there are.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    known_params(&params, &["limit"])?;
    let limit = limit_param(&params)?;
    let (letters, total) = state
        .bus
        .dead_letters(usize::try_from(limit).unwrap_or(50))
        .await
        .map_err(|err| ApiError::Unavailable(format!("the DLQ cannot be read: {err}")))?;
    let letters: Vec<Value> = letters.iter().map(|l| letter_json(l, true)).collect();
    Ok(Json(json!({ "letters": letters, "total": total })))
}

/// `GET /api/dlq/{seq}`: one letter, its payload whole.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(seq): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let seq = seq_param(&seq)?;
    let letter = state
        .bus
        .dead_letter_at(seq)
        .await
        .map_err(|err| ApiError::Unavailable(format!("the DLQ cannot be read: {err}")))?
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {seq}")))?;
    Ok(Json(letter_json(&letter, false)))
}

/// `POST /api/dlq/{seq}/replay` → 202 `{seq, replayed_to, replayed_seq}`: sent back once.
pub(crate) async fn replay(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(seq): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let seq = seq_param(&seq)?;
    let meta = principal.meta();
    let correlation_id = meta.correlation_id;
    match sagas::replay_dead_letter(&state.bus, &state.dead_letters, seq, meta).await {
        Ok(replayed) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "seq": seq.0,
                "replayed_to": replayed.letter.origin_subject,
                "replayed_seq": replayed.replayed_seq.0,
                "correlation_id": correlation_id,
            })),
        )),
        Err(err) => {
            let message = format!("dead letter {seq}: {err}");
            Err(match err {
                ReplayError::NotFound => ApiError::NotFound(message),
                ReplayError::NotReplayable(_) => ApiError::BadRequest(message),
                ReplayError::AlreadyReplayed(_) => ApiError::Conflict(message),
                ReplayError::Unavailable(_) => ApiError::Unavailable(message),
            })
        }
    }
}
