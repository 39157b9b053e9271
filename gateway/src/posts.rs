//! The Stream Bot over REST: request a post, and see where each destination stands.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use bus::store::execute;
use cqrs_es::{AggregateError, EventStore};
use domain::post::{PostCommand, PostError};
use events::post::{Destination, PostRequested};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::body;
use crate::{ApiError, AppState, Principal};

/// The namespace of post ids derived from an `Idempotency-Key`.
const IDEMPOTENCY: uuid::Uuid = uuid::Uuid::from_u128(0x6e65_6275_6c61_706f_7374_6964_656d_706f);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    text: String,
    #[serde(default)]
    artifact: Option<String>,
    destinations: Vec<Destination>,
}

/// `POST /api/posts {"text", "artifact"?, "destinations": ["twitch", "youtube", "kick"]}` → 202
/// `{post_id, correlation_id}`; the Stream Bot posts it and records each outcome. An artifact
/// must be a finished job's output; the post carries its share link (shared now if it was not). With an
/// `Idempotency-Key` header, a retried request finds the post it made (200, same `post_id`)
/// instead of posting twice.
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let raw = body(payload)?;
    let body: PostBody = serde_json::from_value(raw)
        .map_err(|err| ApiError::BadRequest(format!("invalid post: {err}")))?;
    let key = match headers.get("idempotency-key") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|key| !key.is_empty() && key.len() <= 200)
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Idempotency-Key must be 1 to 200 visible characters".into(),
                    )
                })?,
        ),
        None => None,
    };
    let post_id = match key {
        Some(key) => uuid::Uuid::new_v5(&IDEMPOTENCY, key.as_bytes()).to_string(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    let meta = principal.meta();
    let correlation_id = meta.correlation_id;
    // The artifact's link: its job's share (made now, in this correlation, or the one it has).
    let share = match &body.artifact {
        Some(sha256) => {
            let job_id = state.read.job_of_output(sha256).await?.ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{sha256} is not an output of a finished render job: only those can be shared"
                ))
            })?;
            let token = sagas::share_output(
                &state.render_jobs,
                &state.render_state,
                &job_id,
                sha256,
                meta.clone(),
            )
            .await
            .map_err(crate::shares::share_error)?;
            Some(token)
        }
        None => None,
    };
    let requested = execute(
        &state.posts,
        &post_id,
        PostCommand::Request(PostRequested {
            text: body.text,
            artifact: body.artifact,
            destinations: body.destinations,
            share,
        }),
        meta,
        3,
    )
    .await;
    match requested {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "post_id": post_id, "correlation_id": correlation_id })),
        )),
        // The same Idempotency-Key again: the post it already made.
        Err(AggregateError::UserError(PostError::AlreadyRequested)) => Ok((
            StatusCode::OK,
            Json(json!({ "post_id": post_id, "duplicate": true })),
        )),
        Err(AggregateError::UserError(PostError::Invalid(message))) => {
            Err(ApiError::BadRequest(message))
        }
        Err(AggregateError::UserError(err)) => Err(ApiError::Conflict(err.to_string())),
        Err(other) => Err(ApiError::Unavailable(format!(
            "the event store is unavailable: {other}"
        ))),
    }
}

/// `GET /api/posts/{id}` — the post and each destination's outcome, from its events.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(post_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if uuid::Uuid::parse_str(&post_id).is_err() {
        return Err(ApiError::BadRequest("a post id is a uuid".into()));
    }
    let post = state
        .post_state
        .load_aggregate(&post_id)
        .await
        .map_err(|err| ApiError::Unavailable(format!("the event store is unavailable: {err}")))?;
    let post = post.state();
    let Some(requested) = &post.requested else {
        return Err(ApiError::NotFound("no such post".into()));
    };
    Ok(Json(json!({
        "post_id": post_id,
        "text": requested.text,
        "artifact": requested.artifact,
        "destinations": post.outcomes,
    })))
}
