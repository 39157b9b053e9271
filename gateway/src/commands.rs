//! REST commands: each becomes a command on an aggregate; the response carries the ids to follow
//! what it caused.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bus::store::{CommandMeta, execute};
use cqrs_es::AggregateError;
use domain::job::{JobCommand, JobError};
use events::{Actor, JobId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitJob {
    kind: String,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    params: Value,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelJob {
    #[serde(default)]
    reason: Option<String>,
}

/// Turns axum's body rejections into our error shape, with the reason spelled out.
pub(crate) fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload
        .map(|Json(value)| value)
        .map_err(|rejection| match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::Rejected {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: "expected a JSON body with content-type application/json".into(),
            },
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::Rejected {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: "request body is larger than 256 KiB".into(),
            },
            other => ApiError::BadRequest(format!("invalid JSON body: {}", other.body_text())),
        })
}

fn job_error(err: AggregateError<JobError>) -> ApiError {
    match err {
        AggregateError::UserError(JobError::NotFound) => ApiError::NotFound("no such job".into()),
        AggregateError::UserError(err) => ApiError::Conflict(err.to_string()),
        AggregateError::AggregateConflict => {
            ApiError::Conflict("the job changed concurrently; retry".into())
        }
        other => ApiError::Internal(anyhow::anyhow!("{other}")),
    }
}

/// `POST /api/jobs {"kind", "priority"?, "params"?}` → 202 `{job_id, correlation_id}`.
pub(crate) async fn submit_job(
    State(state): State<AppState>,
    payload: Result<Json<SubmitJob>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request = body(payload)?;
    if request.kind.trim().is_empty() || request.kind.len() > 128 {
        return Err(ApiError::BadRequest(
            "kind must be 1 to 128 characters".into(),
        ));
    }
    let command = JobCommand::Request {
        kind: request.kind,
        priority: request.priority,
        params: request.params,
    };
    accept(&state, JobId::new(), command).await
}

/// Runs `command` on the job as the admin, and answers 202 with the ids to follow it by.
async fn accept(
    state: &AppState,
    job_id: JobId,
    command: JobCommand,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let meta = CommandMeta::new(Actor::User("admin".into()));
    let correlation_id = meta.correlation_id;
    execute(&state.jobs, &job_id.to_string(), command, meta, 3)
        .await
        .map_err(job_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job_id, "correlation_id": correlation_id })),
    ))
}

/// `POST /api/jobs/{id}/cancel {"reason"?}` → 202.
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    payload: Result<Json<CancelJob>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let job_id: JobId = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid job id {id:?}: expected a uuid")))?;
    let request = match payload {
        Err(JsonRejection::MissingJsonContentType(_)) => CancelJob::default(),
        other => body(other)?,
    };
    let command = JobCommand::Cancel {
        reason: request.reason.unwrap_or_else(|| "cancelled by user".into()),
    };
    accept(&state, job_id, command).await
}
