//! The marketplace: the built-in templates and those of the configured catalogs (each read when
//! the marketplace is listed; a catalog that cannot be read, or a template in one that is not
//! valid, is reported by name — never silently dropped), and installs: a template's secret
//! inputs into the vault, the app defined (or redefined: an upgrade) and deployed through the
//! Deploy Center, so it has releases and rollback like any app.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bus::store::execute;
use common::Secret;
use domain::deploy::AppCommand;
use events::deploy::{DeployTrigger, validate_app_name};
use marketplace::{Broken, Listed};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::body;
use crate::{ApiError, AppState, Principal};

/// Every template (built in, then each catalog's) and what could not be used.
async fn catalog(state: &AppState) -> (Vec<Listed>, Vec<Broken>) {
    let (mut listed, mut broken) = marketplace::builtin();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    for url in &state.config.marketplace_catalogs {
        let fetched = match client.get(url).send().await {
            Ok(response) if response.status().is_success() => {
                response.bytes().await.map_err(|err| err.to_string())
            }
            Ok(response) => Err(format!("answered {}", response.status().as_u16())),
            Err(err) => Err(format!("unreachable: {err}")),
        };
        match fetched {
            Ok(bytes) => {
                let (more, bad) = marketplace::parse_catalog(url, &bytes);
                // A built-in id wins over a catalog's (a catalog cannot replace one).
                for template in more {
                    if listed.iter().any(|l| l.id == template.id) {
                        broken.push(Broken {
                            catalog: url.clone(),
                            template: Some(template.id.clone()),
                            error: "its id is taken by an earlier catalog".to_owned(),
                        });
                    } else {
                        listed.push(template);
                    }
                }
                broken.extend(bad);
            }
            Err(error) => {
                tracing::warn!(catalog = %url, error = %error, "a marketplace catalog could not be read");
                broken.push(Broken {
                    catalog: url.clone(),
                    template: None,
                    error,
                });
            }
        }
    }
    (listed, broken)
}

/// `GET /api/marketplace`: `{templates: [...], broken: [{catalog, template?, error}]}`.
pub(crate) async fn list(State(state): State<AppState>) -> Json<Value> {
    let (templates, broken) = catalog(&state).await;
    Json(json!({ "templates": templates, "broken": broken }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstallBody {
    /// The app's name (the template's id when absent).
    #[serde(default)]
    name: Option<String>,
    nodes: Vec<String>,
    #[serde(default)]
    inputs: BTreeMap<String, String>,
}

/// `POST /api/marketplace/{id}/install {"name"?, "nodes", "inputs"?}` (admin): 202 `{app,
/// run_id, release}`. Installing over an app of the same name upgrades it (a new release).
pub(crate) async fn install(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    payload: Result<Json<InstallBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let install = body(payload)?;
    let (templates, _) = catalog(&state).await;
    let listed = templates
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no template {id} in the marketplace")))?;
    let name = install.name.unwrap_or_else(|| id.clone());
    validate_app_name(&name).map_err(ApiError::BadRequest)?;
    let mut rendered = listed
        .template
        .render(&name, install.nodes, &install.inputs)
        .map_err(ApiError::BadRequest)?;
    rendered.app.labels = [
        ("marketplace.template".to_owned(), id.clone()),
        ("marketplace.catalog".to_owned(), listed.catalog.clone()),
        (
            "marketplace.version".to_owned(),
            listed.template.version.to_string(),
        ),
    ]
    .into_iter()
    .collect::<BTreeMap<_, _>>();
    let problems = domain::deploy::validate_app(&rendered.app);
    if !problems.is_empty() {
        return Err(ApiError::BadRequest(problems.join("; ")));
    }
    for (secret, value) in rendered.secrets {
        state
            .vault
            .set(&secret, &Secret::from(value), principal.meta())
            .await
            .map_err(|err| ApiError::Unavailable(format!("the vault refused {secret}: {err}")))?;
    }
    execute(
        &state.app_commands,
        &name,
        AppCommand::Define(rendered.app),
        principal.meta(),
        3,
    )
    .await
    .map_err(|err| ApiError::Unavailable(format!("the event store is unavailable: {err}")))?;
    let requested = sagas::deploys::deploy(
        &state.app_commands,
        &state.app_state,
        &state.run_commands,
        &name,
        DeployTrigger::Manual,
        principal.meta(),
    )
    .await
    .map_err(|err| ApiError::Unavailable(err.to_string()))?;
    tracing::info!(template = %id, app = %name, run_id = %requested.run_id, by = %principal.name, "marketplace install");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "app": name, "run_id": requested.run_id, "release": requested.release })),
    ))
}
