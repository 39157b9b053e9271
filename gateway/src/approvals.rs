//! Approvals: the inbox (`GET /api/approvals?state=`, one by id) and the decisions (`POST
//! /api/approvals/{id}/approve|reject {"comment"?}`, operator at least; the approval's own
//! policy says which role decides it). Each decision is recorded under the caller's name;
//! `approval.*` events reach every dashboard over `/ws`.

use std::collections::HashMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use cqrs_es::AggregateError;
use domain::approval::ApprovalError;
use events::approval::Decision;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{known_params, limit_param};
use crate::{ApiError, AppState, Principal};

const STATES: [&str; 5] = ["pending", "granted", "rejected", "expired", "withdrawn"];

/// `GET /api/approvals?state=&limit=`: newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    known_params(&params, &["state", "limit"])?;
    let wanted = params.get("state").map(String::as_str);
    if let Some(wanted) = wanted
        && !STATES.contains(&wanted)
    {
        return Err(ApiError::BadRequest(format!(
            "state must be one of {}, got {wanted:?}",
            STATES.join(", ")
        )));
    }
    let approvals = state.read.approvals(wanted, limit_param(&params)?).await?;
    Ok(Json(json!({ "approvals": approvals })))
}

/// `GET /api/approvals/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .read
        .approval(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no approval {id}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecideBody {
    #[serde(default)]
    comment: String,
}

pub(crate) async fn approve(
    state: State<AppState>,
    principal: Extension<Principal>,
    id: Path<String>,
    payload: Result<Json<DecideBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(state, principal, id, payload, Decision::Approve).await
}

pub(crate) async fn reject(
    state: State<AppState>,
    principal: Extension<Principal>,
    id: Path<String>,
    payload: Result<Json<DecideBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(state, principal, id, payload, Decision::Reject).await
}

/// One decision; the approval as it stands after it (`outcome` once it is decided).
async fn decide(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    payload: Result<Json<DecideBody>, JsonRejection>,
    decision: Decision,
) -> Result<Json<Value>, ApiError> {
    let body = crate::error::body(payload)?;
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::NotFound(format!("no approval {id}")));
    }
    sagas::approvals::decide(
        &state.approval_commands,
        &id,
        decision,
        principal.role,
        body.comment,
        principal.meta(),
    )
    .await
    .map_err(|err| approval_error(&id, err))?;
    let approval = sagas::approvals::wait_outcome(
        &state.bus,
        &state.approval_state,
        &id,
        std::time::Duration::ZERO,
    )
    .await
    .map_err(|err| approval_error(&id, err))?;
    Ok(Json(json!({
        "approval_id": id,
        "state": approval.outcome.map_or("pending", |o| o.as_str()),
        "decisions": approval.decisions,
    })))
}

fn approval_error(id: &str, err: AggregateError<ApprovalError>) -> ApiError {
    match err {
        AggregateError::UserError(ApprovalError::NotFound) => {
            ApiError::NotFound(format!("no approval {id}"))
        }
        AggregateError::UserError(ApprovalError::Forbidden(message)) => {
            ApiError::Forbidden(message)
        }
        AggregateError::UserError(ApprovalError::Invalid(message)) => ApiError::BadRequest(message),
        AggregateError::UserError(err) => ApiError::Conflict(err.to_string()),
        other => ApiError::Unavailable(format!("the event store is unavailable: {other}")),
    }
}
