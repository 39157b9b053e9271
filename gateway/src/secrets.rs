//! The secrets vault over REST (admin): `GET /api/secrets` (names, versions, who set them and
//! when), `PUT /api/secrets/{name} {"value"}`, `DELETE /api/secrets/{name}`. A value goes in and
//! never comes out: no answer, event or log line carries it.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use common::Secret;
use serde::Deserialize;
use serde_json::{Value, json};
use vault::VaultError;

use crate::error::body;
use crate::{ApiError, AppState, Principal};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetSecret {
    value: Secret,
}

fn vault_error(err: VaultError) -> ApiError {
    match err {
        VaultError::Invalid(why) => ApiError::BadRequest(why),
        VaultError::NotFound(_) => ApiError::NotFound(err.to_string()),
        other => ApiError::Unavailable(other.to_string()),
    }
}

/// `GET /api/secrets` → `{secrets: [{name, version, set_at, set_by}]}`.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let secrets = state.vault.list().await.map_err(vault_error)?;
    Ok(Json(json!({ "secrets": secrets })))
}

/// `PUT /api/secrets/{name} {"value"}` → `{name, version}`.
pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    payload: Result<Json<SetSecret>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let request = body(payload)?;
    let version = state
        .vault
        .set(&name, &request.value, principal.meta())
        .await
        .map_err(vault_error)?;
    tracing::info!(name = %name, version, by = %principal.name, "secret set");
    Ok(Json(json!({ "name": name, "version": version })))
}

/// `DELETE /api/secrets/{name}` → `{name, version, status: "removed"}`.
pub(crate) async fn remove(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let version = state
        .vault
        .remove(&name, principal.meta())
        .await
        .map_err(vault_error)?;
    tracing::info!(name = %name, version, by = %principal.name, "secret removed");
    Ok(Json(
        json!({ "name": name, "version": version, "status": "removed" }),
    ))
}
