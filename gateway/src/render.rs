//! The Creative Studio over REST: submit, follow, reorder, cancel, pause; input uploads and
//! artifacts from the artifact store (behind the same token as everything else).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::{Extension, Json};
use bus::store::{CommandMeta, execute};
use cqrs_es::AggregateError;
use domain::render::{QUEUE_ID, QueueCommand, QueueError, RenderCommand, RenderError};
use events::JobId;
use events::render::{RenderMode, RenderParams, RenderStatus, Trigger};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{known_params, limit_param};
use crate::error::body;
use crate::{ApiError, AppState, Principal};

/// Largest input image accepted by `POST /api/render/inputs`.
pub(crate) const MAX_INPUT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitRender {
    mode: RenderMode,
    #[serde(default)]
    params: Option<RenderParams>,
    #[serde(default)]
    priority: i32,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    /// Where the request came from (`dashboard`, `api`, …); `api` unless given.
    #[serde(default)]
    source: Option<String>,
}

fn default_attempts() -> u32 {
    3
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reason {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Priority {
    priority: i32,
}

pub(crate) fn job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid job id {raw:?}: expected a uuid")))
}

pub(crate) fn render_error(err: AggregateError<RenderError>) -> ApiError {
    match err {
        AggregateError::UserError(RenderError::NotFound) => {
            ApiError::NotFound("no such render job".into())
        }
        AggregateError::UserError(RenderError::InvalidParams(message)) => {
            ApiError::BadRequest(message)
        }
        AggregateError::UserError(err @ RenderError::NotAnOutput(_)) => {
            ApiError::BadRequest(err.to_string())
        }
        AggregateError::UserError(err) => ApiError::Conflict(err.to_string()),
        AggregateError::AggregateConflict => {
            ApiError::Conflict("the job changed concurrently; retry".into())
        }
        other => ApiError::Unavailable(format!("the event store is unavailable: {other}")),
    }
}

fn queue_error(err: AggregateError<QueueError>) -> ApiError {
    match err {
        AggregateError::UserError(err @ QueueError::Full { .. }) => ApiError::Rejected {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: err.to_string(),
        },
        AggregateError::UserError(err) => ApiError::Conflict(err.to_string()),
        AggregateError::AggregateConflict => {
            ApiError::Conflict("the queue changed concurrently; retry".into())
        }
        other => ApiError::Unavailable(format!("the event store is unavailable: {other}")),
    }
}

/// Optional JSON body: none at all is the default.
pub(crate) fn optional_body<T: Default + serde::de::DeserializeOwned>(
    payload: Result<Json<T>, JsonRejection>,
) -> Result<T, ApiError> {
    match payload {
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(T::default()),
        other => body(other),
    }
}

/// `POST /api/render/jobs {"mode", "params"?, "priority"?, "max_attempts"?, "source"?}` →
/// 202 `{job_id, correlation_id}`; 429 when the queue is full.
pub(crate) async fn submit(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    payload: Result<Json<SubmitRender>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request = body(payload)?;
    let params = request.params.unwrap_or_default();
    params
        .validate(request.mode)
        .map_err(ApiError::BadRequest)?;
    if !(1..=10).contains(&request.max_attempts) {
        return Err(ApiError::BadRequest("max_attempts must be 1..=10".into()));
    }
    for name in request.mode.required_images() {
        if let Some(image) = params.image(name)
            && state
                .artifacts
                .content_path(&image.sha256)
                .is_none_or(|p| !p.exists())
        {
            return Err(ApiError::BadRequest(format!(
                "{name} {} is not in the artifact store; upload it to /api/render/inputs first",
                image.sha256
            )));
        }
    }
    let source = request.source.unwrap_or_else(|| "api".into());
    if source.is_empty() || source.len() > 32 {
        return Err(ApiError::BadRequest(
            "source must be 1 to 32 characters".into(),
        ));
    }
    let job_id = JobId::new().to_string();
    let meta = principal.meta();
    let correlation_id = meta.correlation_id;
    sagas::submit_render(
        &state.render_queue,
        &state.render_jobs,
        &job_id,
        state.site.render_queue_cap,
        None,
        RenderCommand::Submit {
            mode: request.mode,
            params,
            priority: request.priority,
            trigger: Trigger {
                source,
                reference: None,
            },
            max_attempts: request.max_attempts,
        },
        meta,
    )
    .await
    .map_err(|err| match err {
        sagas::SubmitError::Queue(err) => queue_error(err),
        sagas::SubmitError::Job(err) => render_error(err),
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job_id, "correlation_id": correlation_id })),
    ))
}

/// `GET /api/render/jobs?status=&limit=`
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    known_params(&params, &["status", "limit"])?;
    let status = params.get("status").map(String::as_str);
    if let Some(status) = status {
        let known = [
            RenderStatus::Queued,
            RenderStatus::Assigned,
            RenderStatus::Running,
            RenderStatus::Completed,
            RenderStatus::Failed,
            RenderStatus::Cancelled,
        ];
        if !known.iter().any(|s| s.as_str() == status) {
            return Err(ApiError::BadRequest(format!(
                "unknown status {status:?}; expected queued, assigned, running, completed, failed or cancelled"
            )));
        }
    }
    let limit = limit_param(&params)?;
    let jobs: Vec<Value> = (state.read.render_jobs(status, limit).await?)
        .into_iter()
        .map(|job| with_links(&state, job))
        .collect();
    Ok(Json(json!({ "jobs": jobs })))
}

/// `GET /api/render/jobs/{id}`
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    state
        .read
        .render_job(&id.to_string())
        .await?
        .map(|job| Json(with_links(&state, job)))
        .ok_or_else(|| ApiError::NotFound("no such render job".into()))
}

/// `GET /api/render/queue`
pub(crate) async fn queue(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut queue = state.read.render_queue().await?;
    queue["cap"] = json!(state.site.render_queue_cap);
    Ok(Json(queue))
}

async fn job_command(
    state: &AppState,
    id: &str,
    command: RenderCommand,
    meta: CommandMeta,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = job_id(id)?.to_string();
    let correlation_id = meta.correlation_id;
    execute(&state.render_jobs, &id, command, meta, 3)
        .await
        .map_err(render_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": id, "correlation_id": correlation_id })),
    ))
}

/// The reason a body gives, else `default`'s.
fn reason_or(
    payload: Result<Json<Reason>, JsonRejection>,
    default: impl FnOnce() -> String,
) -> Result<String, ApiError> {
    Ok(optional_body(payload)?.reason.unwrap_or_else(default))
}

/// `POST /api/render/jobs/{id}/cancel {"reason"?}`: queued jobs leave the queue; running ones
/// are interrupted on their node.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    payload: Result<Json<Reason>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let reason = reason_or(payload, || format!("cancelled by {}", principal.name))?;
    job_command(
        &state,
        &id,
        RenderCommand::Cancel { reason },
        principal.meta(),
    )
    .await
}

/// `DELETE /api/render/jobs/{id} {"reason"?}`: a finished job taken out of the read models —
/// the gallery, the job list, its share links — so its outputs are collected by the next
/// artifact sweep once nothing else refers to them (`render.job_deleted` names them).
pub(crate) async fn delete_job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    payload: Result<Json<Reason>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let reason = reason_or(payload, || format!("deleted by {}", principal.name))?;
    job_command(
        &state,
        &id,
        RenderCommand::Delete { reason },
        principal.meta(),
    )
    .await
}

/// `POST /api/render/jobs/{id}/priority {"priority"}`: reorders a queued job.
pub(crate) async fn priority(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    payload: Result<Json<Priority>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let priority = body(payload)?.priority;
    job_command(
        &state,
        &id,
        RenderCommand::ChangePriority { priority },
        principal.meta(),
    )
    .await
}

async fn queue_command(
    state: &AppState,
    command: QueueCommand,
    meta: CommandMeta,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let correlation_id = meta.correlation_id;
    execute(&state.render_queue, QUEUE_ID, command, meta, 10)
        .await
        .map_err(queue_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "correlation_id": correlation_id })),
    ))
}

/// `POST /api/render/queue/pause {"reason"?}`: nothing new starts; running jobs finish.
pub(crate) async fn pause(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    payload: Result<Json<Reason>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let reason = optional_body(payload)?
        .reason
        .unwrap_or_else(|| format!("paused by {}", principal.name));
    queue_command(&state, QueueCommand::Pause { reason }, principal.meta()).await
}

/// `POST /api/render/queue/resume`
pub(crate) async fn resume(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    queue_command(&state, QueueCommand::Resume, principal.meta()).await
}

/// `POST /api/render/inputs` with a PNG or JPEG body → 201 `{sha256, bytes}`: an input image
/// for img2img, inpainting, ControlNet, upscaling or face swap.
pub(crate) async fn upload_input(
    State(state): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !matches!(content_type(&headers), "image/png" | "image/jpeg") {
        return Err(ApiError::Rejected {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "expected an image/png or image/jpeg body".into(),
        });
    }
    let is_png = bytes.starts_with(b"\x89PNG\r\n\x1a\n");
    let is_jpeg = bytes.starts_with(&[0xff, 0xd8, 0xff]);
    if !(is_png || is_jpeg) {
        return Err(ApiError::BadRequest(
            "the body is not a PNG or JPEG image".into(),
        ));
    }
    stored(&state, &bytes, json!({})).await
}

/// The request's content type ("" without one).
pub(crate) fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// An uploaded body into the artifact store: 201 `{sha256, bytes}` and what `more` adds.
pub(crate) async fn stored(
    state: &AppState,
    bytes: &[u8],
    more: Value,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (sha256, _) = state
        .artifacts
        .put(bytes)
        .await
        .map_err(|err| ApiError::Internal(err.into()))?;
    let mut answer = json!({ "sha256": sha256, "bytes": bytes.len() });
    if let (Some(answer), Value::Object(more)) = (answer.as_object_mut(), more) {
        answer.extend(more);
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

/// The link of a share token.
pub(crate) fn link(state: &AppState, token: &str) -> String {
    format!("{}/share/{token}.png", state.site.public_url)
}

/// A render job as the API shows it: each share with its link.
pub(crate) fn with_links(state: &AppState, mut job: Value) -> Value {
    if let Some(shares) = job["shares"].as_array_mut() {
        for share in shares {
            if let Some(token) = share["token"].as_str() {
                share["url"] = json!(link(state, token));
            }
        }
    }
    job
}
