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
    for envelope in bus.aggregate_events(PersonaEvent::AGGREGATE_TYPE, name).await? {
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
