//! Share links and artifact bytes. A share link (`GET /share/<token>.png`, no token needed)
//! opens one output of a finished job to whoever holds it: the token is random, recorded on the
//! job (`render.job_shared`) by an operator, a chat reply or a post, and revocable. An upload is
//! never shareable, and a content hash opens nothing without the caller's token. Artifacts are
//! streamed from the store, never read whole into memory.

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::{Extension, Json};
use bus::store::execute;
use cqrs_es::{AggregateError, EventStore};
use domain::render::{RenderCommand, RenderError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::render::{job_id, link, optional_body, render_error};
use crate::{ApiError, AppState, Principal};

/// How long a cache may keep a shared image: a revoked link stops within this.
const SHARED_MAX_AGE: &str = "public, max-age=300";
/// An artifact behind the token: its name is its hash, so it never changes.
const PRIVATE_IMMUTABLE: &str = "private, max-age=31536000, immutable";

/// `GET /share/{token}.png` (or `.jpg`, or the bare token): the shared output, without a token.
/// Anything but a live share link is 404, alike, so links cannot be probed.
pub(crate) async fn shared(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let token = file
        .strip_suffix(".png")
        .or_else(|| file.strip_suffix(".jpg"))
        .unwrap_or(&file);
    let not_found = || ApiError::NotFound("no such share link".into());
    if !domain::render::is_share_token(token) {
        return Err(not_found());
    }
    let share = state.read.share(token).await?.ok_or_else(not_found)?;
    stream(&state, &share.sha256, SHARED_MAX_AGE).await
}

/// `GET /api/render/artifacts/{sha256}`: the bytes, immutable (the name is their hash).
pub(crate) async fn artifact(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    if !artifacts::is_sha256(&sha256) {
        return Err(ApiError::BadRequest(
            "expected a lowercase hex sha256".into(),
        ));
    }
    stream(&state, &sha256, PRIVATE_IMMUTABLE).await
}

/// The content with this hash, streamed from its file.
async fn stream(state: &AppState, sha256: &str, cache: &str) -> Result<Response, ApiError> {
    let content = state
        .artifacts
        .open_content(sha256)
        .await
        .map_err(|err| ApiError::Internal(err.into()))?
        .ok_or_else(|| ApiError::NotFound("no such artifact".into()))?;
    Response::builder()
        .header(header::CONTENT_TYPE, content.content_type)
        .header(header::CONTENT_LENGTH, content.len)
        .header(header::CACHE_CONTROL, cache)
        .body(Body::from_stream(tokio_util::io::ReaderStream::new(
            content.file,
        )))
        .map_err(|err| ApiError::Internal(err.into()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShareBody {
    /// Which output (its SHA-256); the job's first when absent.
    #[serde(default)]
    sha256: Option<String>,
}

/// `POST /api/render/jobs/{id}/shares {"sha256"?}` → 200 `{job_id, sha256, token, url}`: the
/// output's share link, made now or the one it already has.
pub(crate) async fn share(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    payload: Result<Json<ShareBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let requested = optional_body(payload)?.sha256;
    let id = job_id(&id)?.to_string();
    let job = state
        .render_state
        .load_aggregate(&id)
        .await
        .map_err(render_error)?;
    let job = job.state();
    if job.status.is_none() {
        return Err(ApiError::NotFound("no such render job".into()));
    }
    let sha256 = match requested {
        Some(sha256) => sha256,
        None => job
            .outputs
            .first()
            .cloned()
            .ok_or_else(|| ApiError::Conflict("the job has no output to share (yet)".into()))?,
    };
    let token = sagas::share_output(
        &state.render_jobs,
        &state.render_state,
        &id,
        &sha256,
        principal.meta(),
    )
    .await
    .map_err(share_error)?;
    Ok(Json(json!({
        "job_id": id,
        "sha256": sha256,
        "token": token,
        "url": link(&state, &token),
    })))
}

/// `DELETE /api/render/jobs/{id}/shares/{sha256}` → 204: the output's link stops working.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, sha256)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = job_id(&id)?.to_string();
    execute(
        &state.render_jobs,
        &id,
        RenderCommand::RevokeShare { sha256 },
        principal.meta(),
        3,
    )
    .await
    .map_err(|err| match err {
        AggregateError::UserError(err @ RenderError::NotShared(_)) => {
            ApiError::NotFound(err.to_string())
        }
        other => render_error(other),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// How a refused share is answered.
pub(crate) fn share_error(err: sagas::ShareError) -> ApiError {
    match err {
        sagas::ShareError::Job(AggregateError::UserError(
            err @ (RenderError::NotAnOutput(_) | RenderError::InvalidShareToken),
        )) => ApiError::BadRequest(err.to_string()),
        sagas::ShareError::Job(err) => render_error(err),
        err @ sagas::ShareError::Random(_) => ApiError::Internal(anyhow::anyhow!("{err}")),
    }
}
