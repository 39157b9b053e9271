//! Script to video: personas — a character's look (style and negative prompts, LoRA,
//! embeddings, seed policy) and voice — listed and read by viewers, put and removed by
//! operators.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
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
        AggregateError::UserError(PersonaError::NotFound) => {
            ApiError::NotFound("no such persona".into())
        }
        other => unavailable(other),
    }
}

/// `GET /api/video/personas`: every persona, by name.
pub(crate) async fn list_personas(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let personas = sagas::video::list_personas(&state.bus)
        .await
        .map_err(unavailable)?;
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
            return Err(ApiError::BadRequest(format!(
                "the body names {given}, the path {name:?}"
            )));
        }
    }
    let persona: Persona = serde_json::from_value(fields)
        .map_err(|err| ApiError::BadRequest(format!("invalid persona: {err}")))?;
    let created = sagas::video::put_persona(
        &state.personas,
        &state.persona_state,
        persona,
        principal.meta(),
    )
    .await
    .map_err(persona_error)?;
    tracing::info!(persona = %name, by = %principal.name, created, "persona put");
    let view = sagas::video::persona_view(&state.bus, &name)
        .await
        .map_err(unavailable)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
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

fn project_error(err: AggregateError<domain::video::ProjectError>) -> ApiError {
    use domain::video::ProjectError;
    match err {
        AggregateError::UserError(ProjectError::Invalid(message)) => ApiError::BadRequest(message),
        AggregateError::UserError(ProjectError::NotFound) => {
            ApiError::NotFound("no such project".into())
        }
        AggregateError::UserError(err) => ApiError::Conflict(err.to_string()),
        other => unavailable(other),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProjectBody {
    title: String,
    #[serde(default)]
    script: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    /// A persona's name: its look and voice as they are now go with the project.
    #[serde(default)]
    persona: Option<String>,
    #[serde(default)]
    format: events::video::VideoFormat,
    /// `stills` (the default: pictures moved slowly) or `clips` (AnimateDiff).
    #[serde(default)]
    visuals: events::video::Visuals,
    #[serde(default)]
    target_secs: Option<u32>,
    /// Background music: an artifact's SHA-256 (uploaded to `POST /api/video/music`).
    #[serde(default)]
    music: Option<String>,
    #[serde(default)]
    priority: i32,
    /// Announced through the Stream Bot when done: `{"text", "destinations"}`.
    #[serde(default)]
    post: Option<events::video::AutoPost>,
}

/// `POST /api/video/projects {"title", "script" | "topic", "persona"?, "format"?, "visuals"?,
/// "target_secs"?, "music"?, "priority"?, "post"?}` (operator): 202 `{project_id}`; a topic's
/// script is written by the local LLM (`[video] ollama_url`, `script_model`).
pub(crate) async fn create_project(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    payload: Result<Json<ProjectBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let asked = body(payload)?;
    let persona = match &asked.persona {
        None => None,
        Some(name) => {
            let found = if domain::video::valid_persona_name(name) {
                sagas::video::persona_view(&state.bus, name)
                    .await
                    .map_err(unavailable)?
            } else {
                None
            };
            Some(
                found
                    .ok_or_else(|| ApiError::BadRequest(format!("there is no persona {name:?}")))?
                    .persona,
            )
        }
    };
    if let Some(sha) = &asked.music
        && state
            .artifacts
            .content_path(sha)
            .is_none_or(|path| !path.exists())
    {
        return Err(ApiError::BadRequest(format!(
            "music {sha:?} is not in the artifact store; upload it to /api/video/music first"
        )));
    }
    let requested = events::video::ProjectRequested {
        title: asked.title,
        script: asked.script,
        topic: asked.topic,
        persona,
        format: asked.format,
        visuals: asked.visuals,
        target_secs: asked.target_secs.unwrap_or(30),
        music: asked.music,
        priority: asked.priority,
        post: asked.post,
    };
    let project_id = sagas::video::request_project(
        &state.video_queue,
        &state.video_projects,
        state.config.video_queue_cap,
        requested,
        principal.meta(),
    )
    .await
    .map_err(|err| match err {
        sagas::video::RequestError::Queue(AggregateError::UserError(full)) => ApiError::Rejected {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: full.to_string(),
        },
        sagas::video::RequestError::Queue(other) => unavailable(other),
        sagas::video::RequestError::Project(err) => project_error(err),
    })?;
    tracing::info!(project = %project_id, by = %principal.name, "video project requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "project_id": project_id })),
    ))
}

fn project_json(id: &str, project: &domain::video::VideoProject) -> Value {
    let mut value = json!(project);
    value["project_id"] = json!(id);
    value["status"] = json!(project.status.map(domain::video::ProjectStatus::as_str));
    value
}

/// `GET /api/video/projects`: every project, newest first.
pub(crate) async fn list_projects(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let projects = sagas::video::list_projects(&state.bus, &state.video_project_state)
        .await
        .map_err(project_error)?;
    let projects: Vec<Value> = projects.iter().map(|(id, p)| project_json(id, p)).collect();
    Ok(Json(json!({ "projects": projects })))
}

/// `GET /api/video/projects/{id}[?wait=]`: the project with its steps; with `wait`, once it
/// has ended (200), else as it is (202).
pub(crate) async fn get_project(
    State(state): State<AppState>,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    crate::api::known_params(&query, &["wait"])?;
    let wait = crate::api::wait_param(&query)?.unwrap_or_default();
    uuid::Uuid::parse_str(&id).map_err(|_| ApiError::NotFound(format!("no project {id}")))?;
    let project = sagas::video::wait_project(&state.bus, &state.video_project_state, &id, wait)
        .await
        .map_err(project_error)?;
    let Some(status) = project.status else {
        return Err(ApiError::NotFound(format!("no project {id}")));
    };
    let code = if wait.is_zero() || status.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(project_json(&id, &project))))
}

/// `POST /api/video/projects/{id}/cancel {}` (operator): 202; its queued and running renders
/// are cancelled with it.
pub(crate) async fn cancel_project(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    uuid::Uuid::parse_str(&id).map_err(|_| ApiError::NotFound(format!("no project {id}")))?;
    sagas::video::cancel_project(&state.video_projects, &id, principal.meta())
        .await
        .map_err(project_error)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "project_id": id }))))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriorityBody {
    priority: i32,
}

/// `POST /api/video/projects/{id}/priority {"priority"}` (operator): 202; a waiting project of
/// a higher priority starts before the others.
pub(crate) async fn set_priority(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    payload: Result<Json<PriorityBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let asked = body(payload)?;
    uuid::Uuid::parse_str(&id).map_err(|_| ApiError::NotFound(format!("no project {id}")))?;
    sagas::video::change_priority(&state.video_projects, &id, asked.priority, principal.meta())
        .await
        .map_err(project_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "project_id": id, "priority": asked.priority })),
    ))
}

fn schedule_error(err: AggregateError<domain::schedule::ScheduleError>) -> ApiError {
    use domain::schedule::ScheduleError;
    match err {
        AggregateError::UserError(ScheduleError::Invalid(message)) => ApiError::BadRequest(message),
        AggregateError::UserError(ScheduleError::NotFound) => {
            ApiError::NotFound("no such schedule".into())
        }
        AggregateError::UserError(err) => ApiError::Conflict(err.to_string()),
        other => unavailable(other),
    }
}

fn schedule_json(name: &str, state: &domain::schedule::ScheduleState) -> Value {
    let mut value = json!(state.defined);
    value["name"] = json!(name);
    value["fired"] = json!(state.fired);
    value["last"] = json!(state.last);
    value["last_project"] = json!(state.last_project);
    // The next firings, as the schedule's zone reads them.
    let next = state
        .defined
        .as_ref()
        .and_then(|d| domain::schedule::Schedule::parse(&d.cron, &d.time_zone).ok())
        .map(|s| s.next_firings(chrono::Utc::now(), 3))
        .unwrap_or_default();
    value["next"] = json!(next);
    value
}

/// `GET /api/video/schedules`: every schedule with its next three firings.
pub(crate) async fn list_schedules(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let schedules = sagas::video::list_schedules(&state.bus, &state.schedule_state)
        .await
        .map_err(schedule_error)?;
    let schedules: Vec<Value> = schedules
        .iter()
        .map(|(name, s)| schedule_json(name, s))
        .collect();
    Ok(Json(json!({ "schedules": schedules })))
}

/// `PUT /api/video/schedules/{name} {"cron", "time_zone", "template": {"title", "scripts" |
/// "topics", "persona"?, "format"?, "visuals"?, "target_secs"?, "priority"?, "post"?},
/// "overlap"?, "missed"?, "enabled"?}`
/// (operator): 201 when new, 200 when changed.
pub(crate) async fn put_schedule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    payload: Result<Json<events::video::ScheduleDefined>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !domain::video::valid_persona_name(&name) {
        return Err(ApiError::BadRequest(format!(
            "name {name:?}: 1-64 of a-z, 0-9, '-' and '_', starting with a letter or digit"
        )));
    }
    let defined = body(payload)?;
    let created = sagas::video::put_schedule(
        &state.schedules,
        &state.schedule_state,
        &name,
        defined,
        principal.meta(),
    )
    .await
    .map_err(schedule_error)?;
    tracing::info!(schedule = %name, by = %principal.name, created, "schedule put");
    let loaded = cqrs_es::EventStore::load_aggregate(&*state.schedule_state, &name)
        .await
        .map_err(unavailable)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(schedule_json(&name, loaded.state()))))
}

/// `DELETE /api/video/schedules/{name}` (operator): 204; projects it made are left as they are.
pub(crate) async fn remove_schedule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !domain::video::valid_persona_name(&name) {
        return Err(ApiError::NotFound(format!("no schedule {name}")));
    }
    sagas::video::remove_schedule(&state.schedules, &name, principal.meta())
        .await
        .map_err(schedule_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Largest music file accepted by `POST /api/video/music`.
pub(crate) const MAX_MUSIC_BYTES: usize = 64 * 1024 * 1024;

/// The audio container `bytes` begin with, of those the assembly's FFmpeg reads: MP3 (an ID3
/// tag or a frame), WAV, Ogg (Vorbis, Opus), FLAC, or MP4 audio (M4A).
fn audio_container(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"ID3") || (bytes.len() > 1 && bytes[0] == 0xff && bytes[1] & 0xe0 == 0xe0)
    {
        Some("mp3")
    } else if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WAVE") {
        Some("wav")
    } else if bytes.starts_with(b"OggS") {
        Some("ogg")
    } else if bytes.starts_with(b"fLaC") {
        Some("flac")
    } else if bytes.get(4..8) == Some(b"ftyp") {
        Some("m4a")
    } else {
        None
    }
}

/// `POST /api/video/music` with an `audio/*` body (MP3, WAV, Ogg, FLAC or M4A) → 201 `{sha256,
/// bytes, container}` (operator): a project's background music, into the artifact store.
pub(crate) async fn upload_music(
    State(state): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let content_type = crate::render::content_type(&headers);
    if !content_type.starts_with("audio/") {
        return Err(ApiError::Rejected {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!("expected an audio/* body, not {content_type:?}"),
        });
    }
    let Some(container) = audio_container(&bytes) else {
        return Err(ApiError::BadRequest(
            "the body is not MP3, WAV, Ogg, FLAC or M4A audio".into(),
        ));
    };
    crate::render::stored(&state, &bytes, json!({ "container": container })).await
}

#[cfg(test)]
mod tests {
    use super::audio_container;

    #[test]
    fn audio_is_known_by_its_first_bytes() {
        let mut wav = b"RIFF\x24\0\0\0WAVEfmt ".to_vec();
        wav.extend([0; 16]);
        assert_eq!(audio_container(&wav), Some("wav"));
        assert_eq!(audio_container(b"ID3\x04\0"), Some("mp3"));
        assert_eq!(audio_container(&[0xff, 0xfb, 0x90, 0x64]), Some("mp3"));
        assert_eq!(audio_container(b"OggS\0\x02"), Some("ogg"));
        assert_eq!(audio_container(b"fLaC\0\0\0\x22"), Some("flac"));
        assert_eq!(audio_container(b"\0\0\0\x20ftypM4A "), Some("m4a"));
        assert_eq!(audio_container(b"\x89PNG\r\n\x1a\n"), None);
        assert_eq!(audio_container(b"RIFF\0\0\0\0AVI "), None);
        assert_eq!(audio_container(b""), None);
    }
}
