//! Chat settings and the chat command log over REST.

use std::collections::HashMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bus::store::execute;
use cqrs_es::AggregateError;
use domain::chat::{ChangeSettings, ChatError};
use events::chat::{ChannelSettings, Platform};
use serde_json::{Value, json};

use crate::api::{known_params, limit_param};
use crate::error::body;
use crate::{ApiError, AppState, Principal};

/// The fields a settings body may have (anything else is a typo worth reporting).
const SETTINGS_FIELDS: &[&str] = &[
    "commands",
    "nickname",
    "avatar",
    "cooldown_secs",
    "quota",
    "quota_window_secs",
    "refusals",
];

fn platform(raw: &str) -> Result<Platform, ApiError> {
    Platform::parse(raw).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown platform {raw:?}: expected discord or twitch"
        ))
    })
}

fn scope(raw: &str) -> Result<String, ApiError> {
    if raw.is_empty() || raw.len() > 100 {
        return Err(ApiError::BadRequest(
            "scope (guild id or channel) must be 1 to 100 characters".into(),
        ));
    }
    Ok(raw.trim_start_matches('#').to_lowercase())
}

/// `GET /api/chat/settings` — every server whose settings were changed.
pub(crate) async fn list_settings(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "settings": state.read.chat_settings_all().await? }),
    ))
}

/// `GET /api/chat/settings/{platform}/{scope}` — the settings in force (the defaults until
/// changed).
pub(crate) async fn get_settings(
    State(state): State<AppState>,
    Path((raw_platform, raw_scope)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let platform = platform(&raw_platform)?;
    let scope = scope(&raw_scope)?;
    let stored = state.read.chat_settings(platform.as_str(), &scope).await?;
    let customized = stored.is_some();
    let settings = match stored {
        Some(settings) => settings,
        None => serde_json::to_value(ChannelSettings::default())
            .map_err(|err| ApiError::Internal(err.into()))?,
    };
    Ok(Json(json!({
        "platform": platform,
        "scope": scope,
        "customized": customized,
        "settings": settings,
    })))
}

/// `PUT /api/chat/settings/{platform}/{scope}` with the whole settings object → 202.
pub(crate) async fn put_settings(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((raw_platform, raw_scope)): Path<(String, String)>,
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let platform = platform(&raw_platform)?;
    let scope = scope(&raw_scope)?;
    let raw = body(payload)?;
    let Some(object) = raw.as_object() else {
        return Err(ApiError::BadRequest("expected a JSON object".into()));
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !SETTINGS_FIELDS.contains(&k.as_str()))
    {
        return Err(ApiError::BadRequest(format!(
            "unknown field {unknown:?}: expected {}",
            SETTINGS_FIELDS.join(", ")
        )));
    }
    let settings: ChannelSettings = serde_json::from_value(raw)
        .map_err(|err| ApiError::BadRequest(format!("invalid settings: {err}")))?;
    let meta = principal.meta();
    let correlation_id = meta.correlation_id;
    execute(
        &state.chat_settings,
        &events::chat::settings_id(platform, &scope),
        ChangeSettings {
            platform,
            scope: scope.clone(),
            settings,
        },
        meta,
        5,
    )
    .await
    .map_err(|err| match err {
        AggregateError::UserError(ChatError::InvalidSettings(message)) => {
            ApiError::BadRequest(message)
        }
        AggregateError::UserError(err) => ApiError::Conflict(err.to_string()),
        AggregateError::AggregateConflict => {
            ApiError::Conflict("the settings changed concurrently; retry".into())
        }
        other => ApiError::Unavailable(format!("the event store is unavailable: {other}")),
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "platform": platform, "scope": scope, "correlation_id": correlation_id })),
    ))
}

/// `GET /api/chat/commands?platform=&correlation_id=&limit=` — the chat command log, newest
/// first, each with what it caused.
pub(crate) async fn list_commands(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    known_params(&params, &["platform", "correlation_id", "limit"])?;
    let platform = params.get("platform").map(|p| platform(p)).transpose()?;
    let correlation = params
        .get("correlation_id")
        .map(|c| {
            c.parse::<uuid::Uuid>()
                .map_err(|_| ApiError::BadRequest("correlation_id must be a uuid".into()))
        })
        .transpose()?;
    let limit = limit_param(&params)?;
    let commands = state
        .read
        .chat_commands(platform.map(Platform::as_str), correlation, limit)
        .await?;
    Ok(Json(json!({ "commands": commands })))
}
