//! The Deploy Center: apps (admins define, change and remove them), deploys and rollbacks (an
//! admin asks; the deployer carries the run out, its approval first when a rule asks for one),
//! and runs read back with their steps. A run's events reach every dashboard over `/ws`.

use std::collections::HashMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bus::store::execute;
use cqrs_es::AggregateError;
use domain::deploy::{AppCommand, AppError};
use events::deploy::{AppContainer, AppDefined, AppHealth, DeployTrigger, validate_app_name};
use sagas::deploys::DeployRequestError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{known_params, wait_param};
use crate::error::body;
use crate::{ApiError, AppState, Principal};

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("the event store is unavailable: {err}"))
}

fn app_error(err: AggregateError<AppError>) -> ApiError {
    match err {
        AggregateError::UserError(AppError::Invalid(message)) => ApiError::BadRequest(message),
        AggregateError::UserError(AppError::NotFound) => ApiError::NotFound("no such app".into()),
        AggregateError::UserError(err) => ApiError::Conflict(err.to_string()),
        other => unavailable(other),
    }
}

fn request_error(err: DeployRequestError) -> ApiError {
    match err {
        DeployRequestError::NoApp(name) => ApiError::NotFound(format!("no app {name}")),
        DeployRequestError::NoRelease(message) => ApiError::Conflict(message),
        DeployRequestError::App(err) => app_error(err),
        DeployRequestError::Run(err) => unavailable(err),
        // the repository answered nothing usable: the caller's source is what to fix
        DeployRequestError::Source(message) => ApiError::Rejected {
            status: StatusCode::BAD_GATEWAY,
            message,
        },
    }
}

/// `GET /api/apps`: every app with its releases and the live one.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let apps = sagas::deploys::list_apps(&state.bus, &state.app_state)
        .await
        .map_err(app_error)?;
    Ok(Json(json!({ "apps": apps })))
}

/// The app `name`, or 404 naming it.
async fn known_app(state: &AppState, name: &str) -> Result<domain::deploy::App, ApiError> {
    validate_app_name(name).map_err(ApiError::BadRequest)?;
    sagas::deploys::load_app(&state.app_state, name)
        .await
        .map_err(app_error)?
        .ok_or_else(|| ApiError::NotFound(format!("no app {name}")))
}

/// `GET /api/apps/{name}`: the app, its releases and its last 20 runs.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let app = known_app(&state, &name).await?;
    let runs = sagas::deploys::app_runs(&state.bus, &name, 20)
        .await
        .map_err(unavailable)?;
    let mut view = json!(sagas::deploys::app_view(&name, app));
    view["runs"] = json!(runs);
    Ok(Json(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    git: Option<events::deploy::GitSource>,
    containers: Vec<AppContainer>,
    #[serde(default)]
    health: AppHealth,
    nodes: Vec<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

impl AppBody {
    fn defined(self) -> AppDefined {
        AppDefined {
            git: self.git,
            containers: self.containers,
            health: self.health,
            nodes: self.nodes,
            labels: self.labels,
        }
    }
}

/// `POST /api/apps {"name", "containers": [{"name", "spec"}], "health"?, "nodes"}` (admin).
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    payload: Result<Json<AppBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let app = body(payload)?;
    let name = app
        .name
        .clone()
        .ok_or_else(|| ApiError::BadRequest("an app needs a name".into()))?;
    validate_app_name(&name).map_err(ApiError::BadRequest)?;
    if sagas::deploys::load_app(&state.app_state, &name)
        .await
        .map_err(app_error)?
        .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "app {name} exists (PUT /api/apps/{name} changes it)"
        )));
    }
    define(&state, &principal, &name, app.defined()).await?;
    Ok((StatusCode::CREATED, Json(json!({ "name": name }))))
}

/// `PUT /api/apps/{name} {"containers", "health"?, "nodes"}` (admin): the next deploy makes a
/// release of it.
pub(crate) async fn update(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    payload: Result<Json<AppBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let app = body(payload)?;
    if app.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::BadRequest("an app's name cannot change".into()));
    }
    known_app(&state, &name).await?;
    define(&state, &principal, &name, app.defined()).await?;
    Ok(Json(json!({ "name": name })))
}

async fn define(
    state: &AppState,
    principal: &Principal,
    name: &str,
    defined: AppDefined,
) -> Result<(), ApiError> {
    let problems = domain::deploy::validate_app(&defined);
    if !problems.is_empty() {
        return Err(ApiError::BadRequest(problems.join("; ")));
    }
    execute(
        &state.app_commands,
        name,
        AppCommand::Define(defined),
        principal.meta(),
        3,
    )
    .await
    .map_err(app_error)
}

/// `DELETE /api/apps/{name}[?remove_containers=true]` (admin): forgotten (its releases'
/// numbers are never reused). Its containers are left as they are, unless asked: then every
/// release's container is removed from every node (a container command each, answered with
/// their ids; one already gone fails harmlessly).
pub(crate) async fn remove(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    known_params(&query, &["remove_containers"])?;
    let remove_containers = match query.get("remove_containers").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "remove_containers must be true or false, got {other:?}"
            )));
        }
    };
    let app = known_app(&state, &name).await?;
    let nodes = app
        .defined
        .as_ref()
        .map(|d| d.nodes.clone())
        .unwrap_or_default();
    execute(
        &state.app_commands,
        &name,
        AppCommand::Remove,
        principal.meta(),
        3,
    )
    .await
    .map_err(app_error)?;
    let mut commands = Vec::new();
    if remove_containers {
        let timeout =
            std::time::Duration::from_secs_f64(state.config.container_command_timeout_secs);
        for node in &nodes {
            for release in &app.releases {
                for container in &release.containers {
                    let action = events::container::ContainerAction::Remove {
                        container: events::deploy::container_name(
                            &name,
                            &container.name,
                            release.number,
                        ),
                        force: true,
                    };
                    let requested = sagas::containers::request_container_command(
                        &state.container_commands,
                        node,
                        action,
                        timeout,
                        principal.meta(),
                    )
                    .await
                    .map_err(unavailable)?;
                    commands.push(requested.command_id);
                }
            }
        }
    }
    Ok(Json(
        json!({ "name": name, "removed": true, "container_commands": commands }),
    ))
}

/// `POST /api/apps/{name}/deploy[?wait=]` (admin): 202 `{run_id, release}`, or with `wait`
/// the run as it stands then.
pub(crate) async fn deploy(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    known_params(&query, &["wait"])?;
    let wait = wait_param(&query)?;
    known_app(&state, &name).await?;
    let requested = sagas::deploys::deploy(
        &state.app_commands,
        &state.app_state,
        &state.run_commands,
        &name,
        DeployTrigger::Manual,
        principal.meta(),
    )
    .await
    .map_err(request_error)?;
    answer_run(&state, &requested.run_id, wait).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackBody {
    #[serde(default)]
    release: Option<u32>,
}

/// `POST /api/apps/{name}/rollback {"release"?}[?wait=]` (admin): the release asked for, or the
/// last one that was live before the live one, rolled out as a run.
pub(crate) async fn rollback(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    payload: Result<Json<RollbackBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    known_params(&query, &["wait"])?;
    let wait = wait_param(&query)?;
    let rollback = body(payload)?;
    known_app(&state, &name).await?;
    let requested = sagas::deploys::rollback(
        &state.app_state,
        &state.run_commands,
        &name,
        rollback.release,
        principal.meta(),
    )
    .await
    .map_err(request_error)?;
    answer_run(&state, &requested.run_id, wait).await
}

/// `GET /api/deploys/{id}[?wait=]`: a run with its steps; 200 once finished, 202 while it runs.
pub(crate) async fn run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    known_params(&query, &["wait"])?;
    let wait = wait_param(&query)?;
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::BadRequest("a deploy run id is a uuid".into()));
    }
    answer_run(&state, &id, wait).await
}

async fn answer_run(
    state: &AppState,
    run_id: &str,
    wait: Option<std::time::Duration>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if let Some(wait) = wait {
        sagas::deploys::wait_run(&state.bus, &state.run_state, run_id, wait)
            .await
            .map_err(unavailable)?;
    }
    let view = sagas::deploys::run_view(&state.bus, run_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::NotFound(format!("no deploy run {run_id}")))?;
    let code = if view.finished_at.is_some() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(json!(view))))
}
