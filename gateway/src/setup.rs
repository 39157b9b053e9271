//! The first-run wizard's side on the server (admins): its progress (`GET /api/setup`), a step
//! recorded as done, put away and reopened — the steps' own work goes through the routes that
//! do it (tags, secrets, domains, render jobs) — and the one step only the server can do: a new
//! node's NATS credentials and the exact command that joins it (`POST /api/setup/join`).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use bus::store::execute;
use cqrs_es::{AggregateError, EventStore};
use domain::setup::{SetupCommand, SetupError};
use events::setup::{SETUP_ID, SETUP_STEPS};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::body;
use crate::{ApiError, AppState, Principal};

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("the event store is unavailable: {err}"))
}

/// `GET /api/setup`: `{steps: [{step, done, detail}], next, dismissed, node_id}`.
pub(crate) async fn get(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let setup = state
        .setup_state
        .load_aggregate(SETUP_ID)
        .await
        .map_err(unavailable)?
        .state()
        .clone();
    let steps: Vec<Value> = SETUP_STEPS
        .iter()
        .map(|step| {
            json!({ "step": step, "done": setup.done.contains_key(*step), "detail": setup.done.get(*step) })
        })
        .collect();
    Ok(Json(json!({
        "steps": steps,
        "next": setup.next(),
        "dismissed": setup.dismissed,
        "node_id": state.site.node_id.as_str(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepBody {
    #[serde(default)]
    detail: String,
}

async fn record(
    state: &AppState,
    principal: &Principal,
    command: SetupCommand,
) -> Result<(), ApiError> {
    execute(
        &state.setup_commands,
        SETUP_ID,
        command,
        principal.meta(),
        3,
    )
    .await
    .map_err(|err| match err {
        AggregateError::UserError(SetupError::Invalid(message)) => ApiError::BadRequest(message),
        other => unavailable(other),
    })
}

/// `POST /api/setup/steps/{step} {"detail"?}`: the step is done.
pub(crate) async fn step(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(step): Path<String>,
    payload: Result<Json<StepBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let asked = body(payload)?;
    record(
        &state,
        &principal,
        SetupCommand::CompleteStep {
            step: step.clone(),
            detail: asked.detail,
        },
    )
    .await?;
    Ok(Json(json!({ "step": step, "done": true })))
}

/// No fields: `{}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Empty {}

/// `POST /api/setup/dismiss {}`: put away (the dashboard stops leading to it).
pub(crate) async fn dismiss(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    payload: Result<Json<Empty>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    body(payload)?;
    record(&state, &principal, SetupCommand::Dismiss).await?;
    Ok(Json(json!({ "dismissed": true })))
}

/// `POST /api/setup/reopen {}`.
pub(crate) async fn reopen(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    payload: Result<Json<Empty>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    body(payload)?;
    record(&state, &principal, SetupCommand::Reopen).await?;
    Ok(Json(json!({ "dismissed": false })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinBody {
    node_id: String,
}

/// `POST /api/setup/join {"node_id"}`: the node's agent credentials (an nkey seed made in
/// `<state_dir>/nats-auth/`, kept when made before) and the server's `authorization.conf`
/// updated, and the stack's own nats-server told to reload it (else the admin is told how);
/// answered with the exact commands — reload nats-server when not done, then start the node's
/// agent with its seed. The seed is in this answer only (like a new API token), never on the log.
pub(crate) async fn join(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    payload: Result<Json<JoinBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let asked = body(payload)?;
    let node: events::NodeId = asked
        .node_id
        .parse()
        .map_err(|err| ApiError::BadRequest(format!("invalid node id: {err}")))?;
    let dir = state.site.state_dir.join("nats-auth");
    let accounts = natsauth::Accounts::write(&dir, std::slice::from_ref(&node)).map_err(|err| {
        ApiError::Unavailable(format!("the NATS credentials could not be written: {err}"))
    })?;
    let identity = natsauth::Identity::Agent(node.clone());
    let seed_file = accounts
        .seed_file(&identity)
        .ok_or_else(|| ApiError::Unavailable("the agent's seed was not made".to_owned()))?
        .to_path_buf();
    let seed = std::fs::read_to_string(&seed_file)
        .map_err(|err| ApiError::Unavailable(format!("the agent's seed cannot be read: {err}")))?;
    let file_name = format!("agent-{}.nk", node.as_str());
    let nats_url = &state.config.join_nats_url;
    let command = format!(
        "umask 077 && cat > {file_name} <<'SEED'\n{}\nSEED\nNATS_URL={nats_url} NATS_NKEY_FILE=$PWD/{file_name} NEBULA_AGENT__NODE_ID={} nebula agent",
        seed.trim(),
        node.as_str()
    );
    // The stack's own nats-server (`<state_dir>/nats.pid`, as `cargo xtask up` runs it) is
    // reloaded here; any other is the admin's one command.
    let pid_file = state.site.state_dir.join("nats.pid");
    let reloaded = common::process::reload(&pid_file, "nats-server").map_err(|err| {
        ApiError::Unavailable(format!("nats-server could not be reloaded: {err}"))
    })?;
    let reload = match reloaded {
        Some(pid) => format!(
            "# done: nats-server (pid {pid}) reloaded {}",
            dir.join(natsauth::AUTHORIZATION_FILE).display()
        ),
        None => format!(
            "nats-server --signal reload    # it reads {}",
            dir.join(natsauth::AUTHORIZATION_FILE).display()
        ),
    };
    record(
        &state,
        &principal,
        SetupCommand::CompleteStep {
            step: "add_node".to_owned(),
            detail: format!("credentials for {}", node.as_str()),
        },
    )
    .await?;
    tracing::info!(node = %node, by = %principal.name, "join credentials made for a node");
    Ok(Json(json!({
        "node_id": node.as_str(),
        "reload": reload,
        "reloaded": reloaded.is_some(),
        "command": command,
    })))
}
