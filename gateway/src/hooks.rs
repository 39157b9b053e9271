//! `POST /api/apps/{name}/hooks/git`: a git host's push webhook (GitHub, Gitea and Forgejo send
//! the same shape). Not behind a token: the body's HMAC-SHA256 under the app's webhook secret
//! (`X-Hub-Signature-256: sha256=<hex>`, compared in constant time) is what lets it in. A bad
//! or missing signature is 401 and recorded (`app.webhook_refused`); a delivery seen before
//! (`X-GitHub-Delivery`) changes nothing; a push to the app's branch deploys it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use bus::store::{CommandMeta, execute};
use cqrs_es::AggregateError;
use domain::deploy::{AppCommand, AppError};
use events::Actor;
use events::deploy::{DeployTrigger, validate_app_name};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// The most a webhook body may be (GitHub caps pushes at 25 MB; their commits list is what grows).
pub(crate) const MAX_BODY: usize = 5 * 1024 * 1024;

fn meta() -> CommandMeta {
    CommandMeta::new(Actor::Service("git-webhook".to_owned()))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) async fn git(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_app_name(&name).map_err(|_| ApiError::NotFound(format!("no app {name}")))?;
    let app = sagas::deploys::load_app(&state.app_state, &name)
        .await
        .map_err(|err| ApiError::Unavailable(format!("the event store is unavailable: {err}")))?
        .ok_or_else(|| ApiError::NotFound(format!("no app {name}")))?;
    let git = app
        .defined
        .as_ref()
        .and_then(|d| d.git.clone())
        .ok_or_else(|| ApiError::NotFound(format!("app {name} has no git source")))?;
    let secret_name = git.webhook_secret.clone().ok_or_else(|| {
        ApiError::NotFound(format!(
            "app {name} takes no webhooks (git.webhook_secret is not set)"
        ))
    })?;
    let delivery = header(&headers, "x-github-delivery")
        .or_else(|| header(&headers, "x-gitea-delivery"))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("sha256:{}", common::sha256_hex(&body)));
    let refuse = |reason: String| {
        let (state, name, delivery) = (state.clone(), name.clone(), delivery.clone());
        async move {
            tracing::warn!(app = %name, delivery = %delivery, reason = %reason, "a git webhook was refused");
            let command = AppCommand::RefuseWebhook {
                delivery,
                reason: reason.clone(),
            };
            if let Err(err) = execute(&state.app_commands, &name, command, meta(), 3).await {
                tracing::warn!(app = %name, error = %err, "a refused webhook was not recorded");
            }
            ApiError::Rejected {
                status: StatusCode::UNAUTHORIZED,
                message: reason,
            }
        }
    };
    let key = match state.vault.get(&secret_name).await {
        Ok(Some(revealed)) => revealed.value,
        Ok(None) => {
            return Err(refuse(format!(
                "the webhook secret {secret_name} is not in the vault"
            ))
            .await);
        }
        Err(err) => {
            return Err(ApiError::Unavailable(format!(
                "the vault is unavailable: {err}"
            )));
        }
    };
    let Some(signature) = header(&headers, "x-hub-signature-256") else {
        return Err(refuse("no X-Hub-Signature-256 header".to_owned()).await);
    };
    let valid = signature
        .strip_prefix("sha256=")
        .and_then(common::unhex)
        .is_some_and(|signature| {
            hmac::Hmac::<sha2::Sha256>::new_from_slice(key.expose().as_bytes())
                .map(|mut mac| {
                    mac.update(&body);
                    mac.verify_slice(&signature).is_ok()
                })
                .unwrap_or(false)
        });
    if !valid {
        return Err(refuse("the signature does not match".to_owned()).await);
    }
    match header(&headers, "x-github-event").or_else(|| header(&headers, "x-gitea-event")) {
        Some("ping") => return Ok((StatusCode::OK, Json(json!({ "pong": true })))),
        Some("push") | None => {}
        Some(other) => {
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "ignored": format!("{other} events do not deploy") })),
            ));
        }
    }
    let push: Value = serde_json::from_slice(&body)
        .map_err(|err| ApiError::BadRequest(format!("a push webhook is JSON: {err}")))?;
    let reference = push["ref"].as_str().unwrap_or_default().to_owned();
    let commit = push["after"].as_str().unwrap_or_default().to_owned();
    let recorded = execute(
        &state.app_commands,
        &name,
        AppCommand::RecordWebhook {
            delivery: delivery.clone(),
            reference: reference.clone(),
            commit,
        },
        meta(),
        3,
    )
    .await;
    match recorded {
        Ok(()) => {}
        Err(AggregateError::UserError(AppError::DuplicateDelivery(_))) => {
            return Ok((
                StatusCode::OK,
                Json(json!({ "duplicate": true, "delivery": delivery })),
            ));
        }
        Err(err) => {
            return Err(ApiError::Unavailable(format!(
                "the event store is unavailable: {err}"
            )));
        }
    }
    let wanted = format!("refs/heads/{}", git.branch);
    if reference != wanted {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "ignored": format!("a push to {reference}, not {wanted}") })),
        ));
    }
    let requested = sagas::deploys::deploy(
        &state.app_commands,
        &state.app_state,
        &state.run_commands,
        &name,
        DeployTrigger::Git,
        meta(),
    )
    .await
    .map_err(|err| ApiError::Unavailable(err.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({ "run_id": requested.run_id, "release": requested.release, "delivery": delivery }),
        ),
    ))
}
