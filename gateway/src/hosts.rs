//! Hosts over SSH: the registry (admins add, remove and accept a changed host key), each host's
//! latest metrics, and remote commands: operators may run what the host's allowlist names,
//! admins anything. A command is recorded under the caller's name and answered 202 with its
//! id; its output arrives as `host_exec.output` events over `/ws`, and
//! `GET /api/host-execs/{id}[?wait=]` reads it back.

use std::collections::HashMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bus::store::execute;
use cqrs_es::AggregateError;
use domain::host::{HostCommand, HostError, HostExecError, operator_may_run};
use events::access::Role;
use events::host::{ExecRequested, HostKey, HostRegistered, validate_host_name};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{known_params, wait_param};
use crate::error::body;
use crate::{ApiError, AppState, Principal};

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("the event store is unavailable: {err}"))
}

fn host_error(err: AggregateError<HostError>) -> ApiError {
    match err {
        AggregateError::UserError(HostError::Invalid(message)) => ApiError::BadRequest(message),
        AggregateError::UserError(HostError::NotFound) => {
            ApiError::NotFound("no such host".to_owned())
        }
        AggregateError::UserError(err) => ApiError::Conflict(err.to_string()),
        other => unavailable(other),
    }
}

fn exec_error(err: AggregateError<HostExecError>) -> ApiError {
    match err {
        AggregateError::UserError(HostExecError::Invalid(message)) => ApiError::BadRequest(message),
        AggregateError::UserError(err) => ApiError::Conflict(err.to_string()),
        other => unavailable(other),
    }
}

/// The registered host `name`, or 404 naming it.
async fn known_host(state: &AppState, name: &str) -> Result<domain::host::Host, ApiError> {
    validate_host_name(name).map_err(ApiError::BadRequest)?;
    sagas::hosts::load_host(&state.host_state, name)
        .await
        .map_err(host_error)?
        .ok_or_else(|| ApiError::NotFound(format!("no host {name}")))
}

/// `GET /api/hosts`: every host with its pinned key and latest metrics.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let hosts = sagas::hosts::list_hosts(&state.bus, &state.host_state)
        .await
        .map_err(host_error)?;
    Ok(Json(json!({ "hosts": hosts })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddBody {
    name: String,
    address: String,
    #[serde(default = "default_port")]
    port: u16,
    user: String,
    /// The vault secret that holds the private key.
    key_secret: String,
    #[serde(default)]
    allowlist: Vec<String>,
}

fn default_port() -> u16 {
    22
}

/// `POST /api/hosts {"name", "address", "port"?, "user", "key_secret", "allowlist"?}` (admin).
pub(crate) async fn add(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    payload: Result<Json<AddBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let add = body(payload)?;
    validate_host_name(&add.name).map_err(ApiError::BadRequest)?;
    let registered = HostRegistered {
        address: add.address,
        port: add.port,
        user: add.user,
        key_secret: add.key_secret,
        allowlist: add.allowlist,
    };
    domain::host::validate_registration(&registered).map_err(ApiError::BadRequest)?;
    // The key is the vault's: a name that is not there is a mistake to say now.
    let secret_known = state
        .vault
        .record(&registered.key_secret)
        .await
        .map_err(|err| ApiError::Unavailable(format!("the vault is unavailable: {err}")))?
        .is_some();
    if !secret_known {
        return Err(ApiError::BadRequest(format!(
            "the vault has no secret {} (PUT /api/secrets/{} with the private key first)",
            registered.key_secret, registered.key_secret
        )));
    }
    execute(
        &state.host_commands,
        &add.name,
        HostCommand::Register(registered),
        principal.meta(),
        3,
    )
    .await
    .map_err(|err| match err {
        AggregateError::UserError(HostError::AlreadyRegistered) => {
            ApiError::Conflict(format!("host {} is already registered", add.name))
        }
        other => host_error(other),
    })?;
    Ok((StatusCode::CREATED, Json(json!({ "name": add.name }))))
}

/// `DELETE /api/hosts/{name}` (admin): forgotten, its pinned key with it.
pub(crate) async fn remove(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    known_host(&state, &name).await?;
    execute(
        &state.host_commands,
        &name,
        HostCommand::Remove,
        principal.meta(),
        3,
    )
    .await
    .map_err(host_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcceptBody {
    /// The `SHA256:…` fingerprint the host presented, as the refusal recorded it.
    fingerprint: String,
}

/// `POST /api/hosts/{name}/accept-key {"fingerprint"}` (admin): pins the key the host was
/// refused for — only that exact one, so an admin accepts what they checked.
pub(crate) async fn accept_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    payload: Result<Json<AcceptBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let accept = body(payload)?;
    let host = known_host(&state, &name).await?;
    let presented: HostKey = match host.last_mismatch {
        Some(presented) if presented.fingerprint == accept.fingerprint => presented,
        Some(presented) => {
            return Err(ApiError::Conflict(format!(
                "host {name} last presented {}, not {}",
                presented.fingerprint, accept.fingerprint
            )));
        }
        None => {
            return Err(ApiError::Conflict(format!(
                "host {name} has presented no other key than the pinned one"
            )));
        }
    };
    execute(
        &state.host_commands,
        &name,
        HostCommand::AcceptKey(presented.clone()),
        principal.meta(),
        3,
    )
    .await
    .map_err(host_error)?;
    Ok(Json(json!({ "name": name, "host_key": presented })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecBody {
    command: String,
    /// Seconds before the remote command is killed (60 unless given).
    #[serde(default)]
    timeout_secs: Option<u32>,
}

/// `POST /api/hosts/{name}/exec {"command", "timeout_secs"?}` (operator: allowlisted plain
/// commands only; admin: any) → 202 `{exec_id, …}`.
pub(crate) async fn exec(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    payload: Result<Json<ExecBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let exec = body(payload)?;
    let host = known_host(&state, &name).await?;
    if !principal.role.allows(Role::Admin) {
        let allowlist = host
            .registered
            .as_ref()
            .map(|registered| registered.allowlist.as_slice())
            .unwrap_or_default();
        operator_may_run(allowlist, &exec.command).map_err(ApiError::Forbidden)?;
    }
    let meta = principal.meta();
    let correlation_id = meta.correlation_id;
    let requested = ExecRequested {
        host: name.clone(),
        command: exec.command.clone(),
        timeout_secs: exec.timeout_secs.unwrap_or(60),
        env_secrets: Default::default(),
    };
    let exec_id = sagas::hosts::request_exec(&state.exec_commands, requested, meta)
        .await
        .map_err(exec_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "exec_id": exec_id,
            "correlation_id": correlation_id,
            "host": name,
            "command": exec.command,
            "status": "requested",
        })),
    ))
}

/// `GET /api/host-execs/{id}[?wait=<secs>]`: an execution with its output; 200 once finished,
/// 202 while it runs.
pub(crate) async fn execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    known_params(&query, &["wait"])?;
    let wait = wait_param(&query)?;
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::BadRequest("an execution id is a uuid".into()));
    }
    if let Some(wait) = wait {
        sagas::hosts::wait_exec(&state.bus, &state.exec_state, &id, wait)
            .await
            .map_err(exec_error)?;
    }
    let view = sagas::hosts::exec_view(&state.bus, &id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::NotFound(format!("no execution {id}")))?;
    let code = if view.status.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(json!(view))))
}
