//! Containers on the nodes over REST: each node's containers as its agent last listed them, and
//! commands (start, stop, restart, remove) recorded under the caller's name and carried out by
//! the node's agent at most once; a command nobody takes before its deadline expires with the
//! reason. `?wait=<secs>` waits for the outcome.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cqrs_es::{AggregateError, EventStore};
use domain::container::{CommandStatus, ContainerCommand, ContainerCommandError};
use events::NodeId;
use events::container::{ContainerAction, ContainerSpec};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{known_params, wait_param};
use crate::render::optional_body;
use crate::{ApiError, AppState, Principal};

fn node_id(raw: &str) -> Result<NodeId, ApiError> {
    raw.parse()
        .map_err(|err| ApiError::BadRequest(format!("invalid node id: {err}")))
}

/// The node, which must be known.
pub(crate) async fn known_node(state: &AppState, raw: &str) -> Result<NodeId, ApiError> {
    let node = node_id(raw)?;
    match state.read.node(node.as_str()).await? {
        Some(_) => Ok(node),
        None => Err(ApiError::NotFound(format!("no node {node}"))),
    }
}

/// `GET /api/nodes/{id}/containers`: `{node_id, docker, sampled_at, containers}`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node = known_node(&state, &id).await?;
    let listing = state.read.node_containers(node.as_str()).await?;
    Ok(Json(listing.unwrap_or_else(|| {
        json!({
            "node_id": node.as_str(),
            "docker": "unknown: its agent has not listed containers (is Docker enabled there?)",
            "sampled_at": null,
            "containers": [],
        })
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StopBody {
    /// Seconds between SIGTERM and SIGKILL (10 unless given).
    #[serde(default)]
    timeout_secs: Option<u32>,
}

/// `POST /api/nodes/{id}/containers/{name}/start`
pub(crate) async fn start(
    state: State<AppState>,
    principal: Extension<Principal>,
    Path((id, name)): Path<(String, String)>,
    query: Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let action = ContainerAction::Start { container: name };
    request(state, principal, id, action, query).await
}

/// `POST /api/nodes/{id}/containers/{name}/stop {"timeout_secs"?}`
pub(crate) async fn stop(
    state: State<AppState>,
    principal: Extension<Principal>,
    Path((id, name)): Path<(String, String)>,
    query: Query<HashMap<String, String>>,
    payload: Result<Json<StopBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let action = |container, timeout_secs| ContainerAction::Stop {
        container,
        timeout_secs,
    };
    request(state, principal, id, action(name, grace(payload)?), query).await
}

/// `POST /api/nodes/{id}/containers/{name}/restart {"timeout_secs"?}`
pub(crate) async fn restart(
    state: State<AppState>,
    principal: Extension<Principal>,
    Path((id, name)): Path<(String, String)>,
    query: Query<HashMap<String, String>>,
    payload: Result<Json<StopBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let action = |container, timeout_secs| ContainerAction::Restart {
        container,
        timeout_secs,
    };
    request(state, principal, id, action(name, grace(payload)?), query).await
}

/// `DELETE /api/nodes/{id}/containers/{name}[?force=true]` (admin).
pub(crate) async fn remove(
    state: State<AppState>,
    principal: Extension<Principal>,
    Path((id, name)): Path<(String, String)>,
    Query(mut query): Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let force = match query.remove("force").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "force must be true or false, got {other:?}"
            )));
        }
    };
    let action = ContainerAction::Remove {
        container: name,
        force,
    };
    request(state, principal, id, action, Query(query)).await
}

/// `POST /api/nodes/{id}/containers {"name", "image", "command"?, "env"?, "ports"?,
/// "volumes"?, "restart_policy"?, "labels"?, "memory_limit_bytes"?, "cpus"?, "network"?}`
/// (admin): created and started by the node's agent. Env values written `secret:NAME` are
/// vault secrets, given to the agent only while it creates the container.
pub(crate) async fn create(
    state: State<AppState>,
    principal: Extension<Principal>,
    Path(id): Path<String>,
    query: Query<HashMap<String, String>>,
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut body = crate::error::body(payload)?;
    let name = match body
        .as_object_mut()
        .and_then(|fields| fields.remove("name"))
    {
        Some(Value::String(name)) => name,
        _ => return Err(ApiError::BadRequest("name (a string) is needed".into())),
    };
    let spec: ContainerSpec = serde_json::from_value(body)
        .map_err(|err| ApiError::BadRequest(format!("invalid container spec: {err}")))?;
    let problems = spec.validate();
    if !problems.is_empty() {
        return Err(ApiError::BadRequest(problems.join("; ")));
    }
    let action = ContainerAction::Create {
        container: name,
        spec: Box::new(spec),
    };
    request(state, principal, id, action, query).await
}

/// Every secret a spec names must be in the vault (its value is asked for only later).
async fn known_secrets(state: &AppState, spec: &ContainerSpec) -> Result<(), ApiError> {
    for name in spec.secrets() {
        let known = state
            .vault
            .record(name)
            .await
            .map_err(|err| ApiError::Unavailable(format!("the vault is unavailable: {err}")))?
            .is_some();
        if !known {
            return Err(ApiError::BadRequest(format!(
                "env names secret:{name}, which the vault does not hold"
            )));
        }
    }
    Ok(())
}

fn grace(payload: Result<Json<StopBody>, JsonRejection>) -> Result<u32, ApiError> {
    let timeout_secs = optional_body(payload)?.timeout_secs.unwrap_or(10);
    if timeout_secs > 600 {
        return Err(ApiError::BadRequest(format!(
            "timeout_secs must be 0..=600, got {timeout_secs}"
        )));
    }
    Ok(timeout_secs)
}

/// Records the request (after checking the node and the container are known), then answers 202
/// `{command_id, correlation_id, …}`, or with `?wait=<secs>` the outcome once there is one.
async fn request(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    id: String,
    action: ContainerAction,
    Query(query): Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    known_params(&query, &["wait"])?;
    let wait = wait_param(&query)?;
    ContainerAction::validate_container(action.container()).map_err(ApiError::BadRequest)?;
    let node = known_node(&state, &id).await?;
    let listed = state
        .read
        .node_containers(node.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "node {node} has not listed its containers (is its agent running, with Docker enabled?)"
            ))
        })?;
    if let Some(docker) = listed["docker"].as_str().filter(|d| *d != "available") {
        return Err(ApiError::Unavailable(format!(
            "docker on node {node} is {docker}"
        )));
    }
    let container = action.container();
    let known = listed["containers"].as_array().is_some_and(|containers| {
        containers.iter().any(|c| {
            c["name"] == container
                || (container.len() >= 12
                    && c["id"].as_str().is_some_and(|id| id.starts_with(container)))
        })
    });
    match (&action, known) {
        (ContainerAction::Create { spec, .. }, false) => known_secrets(&state, spec).await?,
        (ContainerAction::Create { .. }, true) => {
            return Err(ApiError::Conflict(format!(
                "node {node} already has a container {container}"
            )));
        }
        (_, true) => {}
        (_, false) => {
            return Err(ApiError::NotFound(format!(
                "no container {container} on node {node}"
            )));
        }
    }
    let meta = principal.meta();
    let correlation_id = meta.correlation_id;
    let verb = action.verb();
    let container = container.to_owned();
    let timeout = Duration::from_secs_f64(state.config.container_command_timeout_secs);
    let requested = sagas::containers::request_container_command(
        &state.container_commands,
        node.as_str(),
        action,
        timeout,
        meta,
    )
    .await
    .map_err(command_error)?;
    let mut answer = json!({
        "command_id": requested.command_id,
        "correlation_id": correlation_id,
        "node_id": node.as_str(),
        "container": container,
        "action": verb,
        "status": "requested",
        "expires_at": requested.expires_at,
    });
    let Some(wait) = wait else {
        return Ok((StatusCode::ACCEPTED, Json(answer)));
    };
    let command = sagas::containers::wait_container_command(
        &state.bus,
        &state.container_state,
        &requested.command_id,
        wait,
    )
    .await
    .map_err(command_error)?;
    let status = command.status.unwrap_or(CommandStatus::Requested);
    answer["status"] = json!(status.as_str());
    answer["outcome"] = json!(command.outcome);
    let code = if status.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(answer)))
}

async fn load(state: &AppState, command_id: &str) -> Result<ContainerCommand, ApiError> {
    Ok(state
        .container_state
        .load_aggregate(command_id)
        .await
        .map_err(|err| ApiError::Unavailable(format!("the event store is unavailable: {err}")))?
        .state()
        .clone())
}

fn command_error(err: AggregateError<ContainerCommandError>) -> ApiError {
    match err {
        AggregateError::UserError(ContainerCommandError::Invalid(message)) => {
            ApiError::BadRequest(message)
        }
        AggregateError::UserError(err) => ApiError::Conflict(err.to_string()),
        other => ApiError::Unavailable(format!("the event store is unavailable: {other}")),
    }
}

/// `GET /api/container-commands/{id}`: where a command stands, and its outcome.
pub(crate) async fn command(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::BadRequest("a command id is a uuid".into()));
    }
    let command = load(&state, &id).await?;
    let (Some(requested), Some(status)) = (command.requested, command.status) else {
        return Err(ApiError::NotFound("no such container command".into()));
    };
    Ok(Json(json!({
        "command_id": id,
        "node_id": requested.node_id,
        "container": requested.action.container(),
        "action": requested.action.verb(),
        "status": status.as_str(),
        "outcome": command.outcome,
        "expires_at": requested.expires_at,
    })))
}

/// How long a node has to answer for a container's log.
const LOGS_WITHIN: Duration = Duration::from_secs(15);

/// `GET /api/nodes/{id}/containers/{name}/logs?tail=200[&format=text]`: the last lines of its
/// log as the node's agent reads them (`{container, lines: [{stream, text}], truncated}`, or
/// plain text to download).
pub(crate) async fn logs(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    known_params(&query, &["tail", "format"])?;
    let tail = match query.get("tail") {
        None => 200,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|tail| (1..=10_000).contains(tail))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("tail must be 1..=10000 lines, got {raw:?}"))
            })?,
    };
    let text = match query.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format must be json or text, got {other:?}"
            )));
        }
    };
    ContainerAction::validate_container(&name).map_err(ApiError::BadRequest)?;
    let node = known_node(&state, &id).await?;
    let question = events::container::LogsQuestion {
        container: name.clone(),
        tail,
    };
    let logs: events::container::ContainerLogs = state
        .bus
        .ask(
            node.as_str(),
            events::container::LOGS_QUERY,
            &question,
            LOGS_WITHIN,
        )
        .await
        .map_err(|err| match err.kind() {
            bus::BusErrorKind::Refused if err.to_string().contains("No such container") => {
                ApiError::NotFound(format!("no container {name} on node {node}"))
            }
            bus::BusErrorKind::Refused => ApiError::Rejected {
                status: StatusCode::BAD_GATEWAY,
                message: err.to_string(),
            },
            _ => ApiError::Unavailable(err.to_string()),
        })?;
    if !text {
        return Ok(Json(json!(logs)).into_response());
    }
    let mut body = String::new();
    for line in &logs.lines {
        body.push_str(&line.text);
        body.push('\n');
    }
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_owned(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{node}-{name}.log\""),
            ),
        ],
        body,
    )
        .into_response())
}
