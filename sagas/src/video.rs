//! Script to video as every way in asks for and shows it: personas put, removed, read back
//! from their events and listed.

use bus::store::{CommandMeta, Commands, JetStreamStore, execute};
use bus::{Bus, BusError};
use chrono::{DateTime, Utc};
use cqrs_es::{AggregateError, EventStore};
use domain::video::{PersonaCommand, PersonaError, PersonaState};
use events::DomainEvent;
use events::video::{Persona, PersonaEvent};
use serde::Serialize;

/// Defines `persona` or changes it (nothing is recorded when it is unchanged); whether it was
/// new.
pub async fn put_persona(
    commands: &Commands<PersonaState>,
    state: &JetStreamStore<PersonaState>,
    persona: Persona,
    meta: CommandMeta,
) -> Result<bool, AggregateError<PersonaError>> {
    let name = persona.name.clone();
    let existed = state.load_aggregate(&name).await?.state().persona.is_some();
    execute(commands, &name, PersonaCommand::Put(persona), meta, 3).await?;
    Ok(!existed)
}

pub async fn remove_persona(
    commands: &Commands<PersonaState>,
    name: &str,
    meta: CommandMeta,
) -> Result<(), AggregateError<PersonaError>> {
    execute(commands, name, PersonaCommand::Remove, meta, 3).await
}

/// A persona as its events leave it, and who last put it when.
#[derive(Debug, Clone, Serialize)]
pub struct PersonaView {
    #[serde(flatten)]
    pub persona: Persona,
    pub updated_by: events::Actor,
    pub updated_at: DateTime<Utc>,
    /// How many times it was put.
    pub version: u32,
}

/// The persona `name`, unless there is none (or it was removed).
pub async fn persona_view(bus: &Bus, name: &str) -> Result<Option<PersonaView>, BusError> {
    let mut view: Option<PersonaView> = None;
    let mut version = 0;
    for envelope in bus
        .aggregate_events(PersonaEvent::AGGREGATE_TYPE, name)
        .await?
    {
        match envelope.decode::<PersonaEvent>() {
            Ok(PersonaEvent::Defined(persona) | PersonaEvent::Changed(persona)) => {
                version += 1;
                view = Some(PersonaView {
                    persona,
                    updated_by: envelope.actor.clone(),
                    updated_at: envelope.occurred_at,
                    version,
                });
            }
            Ok(PersonaEvent::Removed {}) => view = None,
            Err(_) => {}
        }
    }
    Ok(view)
}

/// Every persona, by name.
pub async fn list_personas(bus: &Bus) -> Result<Vec<PersonaView>, BusError> {
    let mut personas = Vec::new();
    for name in bus.aggregate_ids(PersonaEvent::AGGREGATE_TYPE).await? {
        if let Some(view) = persona_view(bus, &name).await? {
            personas.push(view);
        }
    }
    personas.sort_by(|a, b| a.persona.name.cmp(&b.persona.name));
    Ok(personas)
}

/// The render job `id` once it has ended, or as it is when `wait` has passed.
pub async fn wait_render(
    bus: &Bus,
    state: &JetStreamStore<domain::render::RenderJob>,
    id: &str,
    wait: std::time::Duration,
) -> Result<domain::render::RenderJob, AggregateError<domain::render::RenderError>> {
    crate::follow::until_final(bus, state, id, wait, |job| {
        job.status.is_some_and(|s| s.is_terminal())
    })
    .await
}

/// Why render job `id` failed, as its last failure says.
pub async fn render_failure(bus: &Bus, id: &str) -> Result<Option<String>, BusError> {
    let mut reason = None;
    for envelope in bus
        .aggregate_events(events::render::RenderJobEvent::AGGREGATE_TYPE, id)
        .await?
    {
        match envelope.decode::<events::render::RenderJobEvent>() {
            Ok(events::render::RenderJobEvent::Failed(failed)) => reason = Some(failed.reason),
            Ok(events::render::RenderJobEvent::Cancelled(_)) => {
                reason = Some("cancelled".to_owned())
            }
            _ => {}
        }
    }
    Ok(reason)
}

/// The project `id` once it has ended, or as it is when `wait` has passed.
pub async fn wait_project(
    bus: &Bus,
    state: &JetStreamStore<domain::video::VideoProject>,
    id: &str,
    wait: std::time::Duration,
) -> Result<domain::video::VideoProject, AggregateError<domain::video::ProjectError>> {
    crate::follow::until_final(bus, state, id, wait, |p| {
        p.status.is_some_and(|s| s.is_final())
    })
    .await
}

/// Why a video project was not recorded.
#[derive(Debug)]
pub enum RequestError {
    /// No place in the video queue (`Full` when it is full), or the queue's log is away.
    Queue(AggregateError<domain::video::VideoQueueError>),
    /// The project refused the request, or its log is away; its place was given back.
    Project(AggregateError<domain::video::ProjectError>),
}

/// A place in the video queue (at most `cap` projects waiting or running), then the project;
/// its id. When the project is not recorded, the place is given back.
pub async fn request_project(
    queue: &Commands<domain::video::VideoQueue>,
    commands: &Commands<domain::video::VideoProject>,
    cap: usize,
    requested: events::video::ProjectRequested,
    meta: CommandMeta,
) -> Result<String, RequestError> {
    let id = uuid::Uuid::now_v7().to_string();
    request_project_as(queue, commands, cap, &id, requested, meta).await?;
    Ok(id)
}

/// [`request_project`] under a chosen id (a scheduler's firing, recorded first): asking again
/// with the same id changes nothing.
pub async fn request_project_as(
    queue: &Commands<domain::video::VideoQueue>,
    commands: &Commands<domain::video::VideoProject>,
    cap: usize,
    id: &str,
    requested: events::video::ProjectRequested,
    meta: CommandMeta,
) -> Result<(), RequestError> {
    let problems = domain::video::validate_project(&requested);
    if !problems.is_empty() {
        let invalid = domain::video::ProjectError::Invalid(problems.join("; "));
        return Err(RequestError::Project(AggregateError::UserError(invalid)));
    }
    let admit = domain::video::VideoQueueCommand::Admit {
        project_id: id.to_owned(),
        cap,
    };
    execute(
        queue,
        events::video::VIDEO_QUEUE_ID,
        admit,
        meta.clone(),
        10,
    )
    .await
    .map_err(RequestError::Queue)?;
    match execute(
        commands,
        id,
        domain::video::ProjectCommand::Request(requested),
        meta.clone(),
        3,
    )
    .await
    {
        Ok(()) | Err(AggregateError::UserError(domain::video::ProjectError::AlreadyRequested)) => {
            Ok(())
        }
        Err(err) => {
            let _ = release(queue, id, meta).await;
            Err(RequestError::Project(err))
        }
    }
}

/// Gives project `id`'s place in the video queue back.
pub async fn release(
    queue: &Commands<domain::video::VideoQueue>,
    id: &str,
    meta: CommandMeta,
) -> Result<(), AggregateError<domain::video::VideoQueueError>> {
    let release = domain::video::VideoQueueCommand::Release {
        project_id: id.to_owned(),
    };
    execute(queue, events::video::VIDEO_QUEUE_ID, release, meta, 10).await
}

pub async fn change_priority(
    commands: &Commands<domain::video::VideoProject>,
    id: &str,
    priority: i32,
    meta: CommandMeta,
) -> Result<(), AggregateError<domain::video::ProjectError>> {
    execute(
        commands,
        id,
        domain::video::ProjectCommand::ChangePriority { priority },
        meta,
        3,
    )
    .await
}

pub async fn cancel_project(
    commands: &Commands<domain::video::VideoProject>,
    id: &str,
    meta: CommandMeta,
) -> Result<(), AggregateError<domain::video::ProjectError>> {
    execute(
        commands,
        id,
        domain::video::ProjectCommand::RequestCancel,
        meta,
        3,
    )
    .await
}

/// Every project's id and state, newest first.
pub async fn list_projects(
    bus: &Bus,
    state: &JetStreamStore<domain::video::VideoProject>,
) -> Result<Vec<(String, domain::video::VideoProject)>, AggregateError<domain::video::ProjectError>>
{
    let ids = bus
        .aggregate_ids(events::video::VideoProjectEvent::AGGREGATE_TYPE)
        .await
        .map_err(|err| AggregateError::UnexpectedError(Box::new(err)))?;
    let mut projects = Vec::new();
    for id in ids {
        let loaded = state.load_aggregate(&id).await?;
        projects.push((id, loaded.state().clone()));
    }
    // Ids are UUID v7: newest sorts last.
    projects.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(projects)
}

pub async fn put_schedule(
    commands: &Commands<domain::schedule::ScheduleState>,
    state: &JetStreamStore<domain::schedule::ScheduleState>,
    name: &str,
    defined: events::video::ScheduleDefined,
    meta: CommandMeta,
) -> Result<bool, AggregateError<domain::schedule::ScheduleError>> {
    let existed = state.load_aggregate(name).await?.state().defined.is_some();
    execute(
        commands,
        name,
        domain::schedule::ScheduleCommand::Define(defined),
        meta,
        3,
    )
    .await?;
    Ok(!existed)
}

pub async fn remove_schedule(
    commands: &Commands<domain::schedule::ScheduleState>,
    name: &str,
    meta: CommandMeta,
) -> Result<(), AggregateError<domain::schedule::ScheduleError>> {
    execute(
        commands,
        name,
        domain::schedule::ScheduleCommand::Remove,
        meta,
        3,
    )
    .await
}

/// Every schedule's name and state, by name.
pub async fn list_schedules(
    bus: &Bus,
    state: &JetStreamStore<domain::schedule::ScheduleState>,
) -> Result<
    Vec<(String, domain::schedule::ScheduleState)>,
    AggregateError<domain::schedule::ScheduleError>,
> {
    let ids = bus
        .aggregate_ids(events::video::ScheduleEvent::AGGREGATE_TYPE)
        .await
        .map_err(|err| AggregateError::UnexpectedError(Box::new(err)))?;
    let mut schedules = Vec::new();
    for id in ids {
        let loaded = state.load_aggregate(&id).await?;
        if loaded.state().defined.is_some() {
            schedules.push((id, loaded.state().clone()));
        }
    }
    schedules.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(schedules)
}

/// Every artifact a video project or schedule names (music, each scene's picture, clip and
/// narration, the video, its thumbnail): any SHA-256 in their state, so a field added later is
/// counted without a change here.
pub async fn artifact_references(bus: &Bus) -> Result<std::collections::HashSet<String>, BusError> {
    let unexpected =
        |err: &dyn std::fmt::Display| BusError::msg(bus::BusErrorKind::Other, err.to_string());
    let mut found = std::collections::HashSet::new();
    let projects = JetStreamStore::<domain::video::VideoProject>::new(bus.clone());
    for (_, project) in list_projects(bus, &projects)
        .await
        .map_err(|err| unexpected(&err))?
    {
        sha256_strings(
            &serde_json::to_value(project).unwrap_or_default(),
            &mut found,
        );
    }
    let schedules = JetStreamStore::<domain::schedule::ScheduleState>::new(bus.clone());
    for (_, schedule) in list_schedules(bus, &schedules)
        .await
        .map_err(|err| unexpected(&err))?
    {
        sha256_strings(
            &serde_json::to_value(schedule).unwrap_or_default(),
            &mut found,
        );
    }
    Ok(found)
}

/// Every string in `value` that is a SHA-256 (lower-case hex), into `out`.
fn sha256_strings(value: &serde_json::Value, out: &mut std::collections::HashSet<String>) {
    match value {
        serde_json::Value::String(s) if common::is_sha256(s) => {
            out.insert(s.clone());
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| sha256_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| sha256_strings(v, out)),
        _ => {}
    }
}
