//! The AI developer: operators ask for jobs on the configured repositories (`[[ai_dev.repos]]`,
//! the allowlist), follow them step by step, cancel them, and roll a merged change back; the
//! change itself is approved or rejected through `/api/approvals` (the job names its approval).

use std::collections::HashMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cqrs_es::AggregateError;
use domain::ai_dev::AiDevError;
use events::ai_dev::JobRequested;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{known_params, wait_param};
use crate::error::body;
use crate::{ApiError, AppState, Principal};

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("the event store is unavailable: {err}"))
}

fn job_error(err: AggregateError<AiDevError>) -> ApiError {
    match err {
        AggregateError::UserError(AiDevError::Invalid(message)) => ApiError::BadRequest(message),
        AggregateError::UserError(AiDevError::NotFound) => ApiError::NotFound("no such job".into()),
        AggregateError::UserError(err) => ApiError::Conflict(err.to_string()),
        other => unavailable(other),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobBody {
    repo: String,
    instruction: String,
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

/// `POST /api/ai-dev/jobs {"repo", "instruction", "base"?, "model"?}` (operator): 202
/// `{job_id}`; a repository that is not configured is 400 naming those that are.
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    payload: Result<Json<JobBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let asked = body(payload)?;
    let Some((_, base)) = state
        .config
        .ai_dev_repos
        .iter()
        .find(|(name, _)| *name == asked.repo)
    else {
        let known: Vec<&str> = state
            .config
            .ai_dev_repos
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        return Err(ApiError::BadRequest(format!(
            "repo {:?} is not one the AI developer may change; configured: {}",
            asked.repo,
            if known.is_empty() {
                "none ([[ai_dev.repos]])".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    let requested = JobRequested {
        repo: asked.repo.clone(),
        instruction: asked.instruction,
        base: asked.base.unwrap_or_else(|| base.clone()),
        model: asked.model,
    };
    let job_id = sagas::ai_dev::request_job(&state.ai_jobs, requested, principal.meta())
        .await
        .map_err(job_error)?;
    tracing::info!(job = %job_id, repo = %asked.repo, by = %principal.name, "AI developer job requested");
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job_id }))))
}

/// `GET /api/ai-dev/jobs`: every job, newest first (without steps and diffs), and the
/// repositories jobs may name.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let jobs = sagas::ai_dev::list_jobs(&state.bus)
        .await
        .map_err(unavailable)?;
    let repos: Vec<Value> = state
        .config
        .ai_dev_repos
        .iter()
        .map(|(name, base)| json!({ "name": name, "base": base }))
        .collect();
    Ok(Json(json!({ "jobs": jobs, "repos": repos })))
}

/// `GET /api/ai-dev/jobs/{id}[?wait=]`: the job whole; with `wait`, once it has ended or waits
/// for its approval (200), else as it is (202).
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    known_params(&query, &["wait"])?;
    let wait = wait_param(&query)?;
    uuid::Uuid::parse_str(&id).map_err(|_| ApiError::NotFound(format!("no job {id}")))?;
    let settled = match wait {
        Some(wait) => {
            let job = sagas::ai_dev::wait_job(&state.bus, &state.ai_job_state, &id, wait)
                .await
                .map_err(job_error)?;
            job.status
                .is_some_and(|s| s.is_final() || s == domain::ai_dev::JobStatus::AwaitingApproval)
                && !job.rollback_requested
        }
        None => true,
    };
    let view = sagas::ai_dev::job_view(&state.bus, &id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    let status = if settled {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(json!(view))))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Empty {}

/// `POST /api/ai-dev/jobs/{id}/cancel {}` (operator): the job stops at its next step, its build
/// killed; its branch is kept.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    payload: Result<Json<Empty>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    body(payload)?;
    sagas::ai_dev::cancel_job(&state.ai_jobs, &id, principal.meta())
        .await
        .map_err(job_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": id, "cancel_requested": true })),
    ))
}

/// `POST /api/ai-dev/jobs/{id}/rollback {}` (operator): a merged change reverted on its base
/// with a commit of its own.
pub(crate) async fn rollback(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    payload: Result<Json<Empty>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    body(payload)?;
    sagas::ai_dev::roll_back_job(&state.ai_jobs, &id, principal.meta())
        .await
        .map_err(job_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": id, "rollback_requested": true })),
    ))
}
