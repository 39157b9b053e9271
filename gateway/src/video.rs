//! Script to video: personas — a character's look (style and negative prompts, LoRA,
//! embeddings, seed policy) and voice — listed and read by viewers, put and removed by
//! operators.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cqrs_es::AggregateError;
use domain::video::PersonaError;
use events::video::Persona;
use serde_json::{Value, json};

use crate::error::body;
use crate::{ApiError, AppState, Principal};

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("the event store is unavailable: {err}"))
}

fn persona_error(err: AggregateError<PersonaError>) -> ApiError {
    match err {
        AggregateError::UserError(PersonaError::Invalid(message)) => ApiError::BadRequest(message),
        AggregateError::UserError(PersonaError::NotFound) => ApiError::NotFound("no such persona".into()),
        other => unavailable(other),
    }
}

/// `GET /api/video/personas`: every persona, by name.
pub(crate) async fn list_personas(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let personas = sagas::video::list_personas(&state.bus).await.map_err(unavailable)?;
    Ok(Json(json!({ "personas": personas })))
}

/// `GET /api/video/personas/{name}`.
pub(crate) async fn get_persona(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !domain::video::valid_persona_name(&name) {
        return Err(ApiError::NotFound(format!("no persona {name}")));
    }
    let view = sagas::video::persona_view(&state.bus, &name)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::NotFound(format!("no persona {name}")))?;
    Ok(Json(json!(view)))
}

/// `PUT /api/video/personas/{name} {description?, style_prompt?, negative_prompt?, lora?,
/// embeddings?, seed?, voice?}` (operator): 201 when new, 200 when changed (or unchanged).
/// A `name` in the body must be the path's.
pub(crate) async fn put_persona(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // Checked before anything is read: the name is also a subject token.
    if let Some(problem) = domain::video::persona_name_problem(&name) {
        return Err(ApiError::BadRequest(problem));
    }
    let mut fields = body(payload)?;
    let Some(object) = fields.as_object_mut() else {
        return Err(ApiError::BadRequest("expected a JSON object".into()));
    };
    match object.get("name") {
        None => {
            object.insert("name".to_owned(), json!(name));
        }
        Some(given) if *given == json!(name) => {}
        Some(given) => {
            return Err(ApiError::BadRequest(format!("the body names {given}, the path {name:?}")));
        }
    }
    let persona: Persona =
        serde_json::from_value(fields).map_err(|err| ApiError::BadRequest(format!("invalid persona: {err}")))?;
    let created = sagas::video::put_persona(&state.personas, &state.persona_state, persona, principal.meta())
        .await
        .map_err(persona_error)?;
    tracing::info!(persona = %name, by = %principal.name, created, "persona put");
    let view = sagas::video::persona_view(&state.bus, &name).await.map_err(unavailable)?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!(view))))
}

/// `DELETE /api/video/personas/{name}` (operator): 204; projects already asked for keep the
/// persona they were given.
pub(crate) async fn remove_persona(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !domain::video::valid_persona_name(&name) {
        return Err(ApiError::NotFound(format!("no persona {name}")));
    }
    sagas::video::remove_persona(&state.personas, &name, principal.meta())
        .await
        .map_err(persona_error)?;
    tracing::info!(persona = %name, by = %principal.name, "persona removed");
    Ok(StatusCode::NO_CONTENT)
}
