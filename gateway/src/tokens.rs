//! Who am I, websocket tickets, and the named tokens (admin): `GET|POST /api/tokens`,
//! `DELETE /api/tokens/{name}`. A new token's text is in the creation answer and nowhere else.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use domain::access::ApiTokenError;
use events::access::Role;
use sagas::access::{TokenError, expiry, issue_token, list_tokens, revoke_token};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::{Principal, TICKET_TTL};
use crate::error::body;
use crate::{ApiError, AppState};

/// `GET /api/whoami` → `{name, role}`.
pub(crate) async fn whoami(Extension(principal): Extension<Principal>) -> Json<Value> {
    Json(json!(principal))
}

/// `POST /api/ws-ticket` → `{ticket, expires_in_secs}`: opens one `/ws?ticket=` as the caller.
pub(crate) async fn ws_ticket(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let ticket = state.access.issue_ticket(principal)?;
    Ok(Json(
        json!({ "ticket": ticket, "expires_in_secs": TICKET_TTL.as_secs() }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    name: String,
    role: Role,
    /// When it stops working (RFC 3339); never when absent.
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    /// Or: days from now.
    #[serde(default)]
    expires_in_days: Option<u32>,
}

fn token_error(err: TokenError) -> ApiError {
    match err {
        TokenError::Invalid(why) => ApiError::BadRequest(why),
        TokenError::Refused(ApiTokenError::Exists) => ApiError::Conflict(err.to_string()),
        TokenError::Refused(ApiTokenError::NotFound) => ApiError::NotFound(err.to_string()),
        TokenError::Unavailable(_) => ApiError::Unavailable(err.to_string()),
    }
}

/// `GET /api/tokens` → `{tokens: [{name, role, status, issued_at, issued_by, expires_at?,
/// revoked_at?, revoked_by?}]}`.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let tokens = list_tokens(&state.bus)
        .await
        .map_err(|err| ApiError::Unavailable(format!("the event log is unavailable: {err}")))?;
    let tokens: Vec<Value> = tokens
        .into_iter()
        .map(|record| {
            let mut value = json!(record);
            value["status"] = json!(record.status(now));
            value
        })
        .collect();
    Ok(Json(json!({ "tokens": tokens })))
}

/// `POST /api/tokens {name, role, expires_at? | expires_in_days?}` → 201 `{name, role,
/// expires_at, token}`.
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    payload: Result<Json<CreateToken>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request = body(payload)?;
    let expires_at =
        expiry(request.expires_at, request.expires_in_days, Utc::now()).map_err(token_error)?;
    let token = issue_token(
        &state.api_tokens,
        &request.name,
        request.role,
        expires_at,
        principal.meta(),
    )
    .await
    .map_err(token_error)?;
    tracing::info!(name = %request.name, role = %request.role, by = %principal.name, "api token issued");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": request.name,
            "role": request.role,
            "expires_at": expires_at,
            "token": token,
        })),
    ))
}

/// `DELETE /api/tokens/{name}` → `{name, status: "revoked"}`; it stops working at once here.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    revoke_token(&state.api_tokens, &name, principal.meta())
        .await
        .map_err(token_error)?;
    state.access.forget(&name);
    tracing::info!(name = %name, by = %principal.name, "api token revoked");
    Ok(Json(json!({ "name": name, "status": "revoked" })))
}
