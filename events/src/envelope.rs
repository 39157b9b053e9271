use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{CorrelationId, EventId};

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    User(String),
    Service(String),
    Node(String),
}

impl Actor {
    pub fn system() -> Self {
        Actor::Service("nebula".to_owned())
    }
}

/// One stored fact, exactly as it travels on the bus and sits in the log.
///
/// The payload stays as JSON (`type` + `data`) here so that any reader can carry, store and show an
/// event it cannot interpret; typed access goes through [`EventEnvelope::decode`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub event_id: EventId,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// 1-based position of this event within its aggregate.
    pub aggregate_seq: u64,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: CorrelationId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<EventId>,
    pub actor: Actor,
    pub schema_version: u32,
    /// Stable wire name, e.g. `"node.registered"`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: Value,
}

/// A typed domain enum whose variants are stored under stable wire names.
///
/// Implementors serialize adjacently tagged as `{"type": "<wire name>", "data": {…}}`.
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The aggregate type these events belong to (`"node"`, `"job"`), also a subject token.
    const AGGREGATE_TYPE: &'static str;
    /// The schema version new events are written with.
    const SCHEMA_VERSION: u32;
    /// Every wire name this enum understands.
    const EVENT_TYPES: &'static [&'static str];

    /// Upcasters that lift older stored versions to [`Self::SCHEMA_VERSION`].
    fn upcasters() -> &'static [Upcaster] {
        &[]
    }

    fn event_type(&self) -> &'static str;
}

/// Lifts one event type's data from `from_version` to `from_version + 1`.
#[derive(Clone, Copy)]
pub struct Upcaster {
    pub event_type: &'static str,
    pub from_version: u32,
    pub upcast: fn(Value) -> Value,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed event json: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("a commit must hold at least one event")]
    EmptyCommit,
    #[error("event belongs to aggregate type {found:?}, expected {expected:?}")]
    WrongAggregate {
        expected: &'static str,
        found: String,
    },
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error(
        "event {event_type:?} has schema version {found}, newer than the supported {supported}"
    )]
    FutureVersion {
        event_type: String,
        found: u32,
        supported: u32,
    },
    #[error("no upcaster lifts {event_type:?} from schema version {version}")]
    MissingUpcaster { event_type: String, version: u32 },
    #[error("event {event_type:?} has invalid data: {source}")]
    InvalidData {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

impl DecodeError {
    /// Unknown types are skipped (and counted) by readers; everything else is a poison message.
    pub fn is_unknown_type(&self) -> bool {
        matches!(
            self,
            DecodeError::UnknownType(_) | DecodeError::WrongAggregate { .. }
        )
    }
}

impl EventEnvelope {
    /// Wraps a typed event for the given aggregate.
    pub fn new<E: DomainEvent>(
        aggregate_id: impl Into<String>,
        aggregate_seq: u64,
        event: &E,
        correlation_id: CorrelationId,
        causation_id: Option<EventId>,
        actor: Actor,
    ) -> Self {
        let (event_type, data) = split_tagged(event);
        Self {
            event_id: EventId::new(),
            aggregate_type: E::AGGREGATE_TYPE.to_owned(),
            aggregate_id: aggregate_id.into(),
            aggregate_seq,
            occurred_at: Utc::now(),
            correlation_id,
            causation_id,
            actor,
            schema_version: E::SCHEMA_VERSION,
            event_type,
            data,
        }
    }

    /// Typed view of this event, after upcasting older schema versions.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, DecodeError> {
        if self.aggregate_type != E::AGGREGATE_TYPE {
            return Err(DecodeError::WrongAggregate {
                expected: E::AGGREGATE_TYPE,
                found: self.aggregate_type.clone(),
            });
        }
        if !E::EVENT_TYPES.contains(&self.event_type.as_str()) {
            return Err(DecodeError::UnknownType(self.event_type.clone()));
        }
        if self.schema_version > E::SCHEMA_VERSION {
            return Err(DecodeError::FutureVersion {
                event_type: self.event_type.clone(),
                found: self.schema_version,
                supported: E::SCHEMA_VERSION,
            });
        }
        let mut data = self.data.clone();
        let mut version = self.schema_version;
        while version < E::SCHEMA_VERSION {
            let upcaster = E::upcasters()
                .iter()
                .find(|u| u.event_type == self.event_type && u.from_version == version)
                .ok_or_else(|| DecodeError::MissingUpcaster {
                    event_type: self.event_type.clone(),
                    version,
                })?;
            data = (upcaster.upcast)(data);
            version += 1;
        }
        let tagged = serde_json::json!({ "type": self.event_type, "data": data });
        serde_json::from_value(tagged).map_err(|source| DecodeError::InvalidData {
            event_type: self.event_type.clone(),
            source,
        })
    }

    /// The metadata cqrs-es carries for a command, read back from the envelope.
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut metadata = HashMap::new();
        metadata.insert("correlation_id".to_owned(), self.correlation_id.to_string());
        if let Some(causation_id) = self.causation_id {
            metadata.insert("causation_id".to_owned(), causation_id.to_string());
        }
        if let Ok(actor) = serde_json::to_string(&self.actor) {
            metadata.insert("actor".to_owned(), actor);
        }
        metadata
    }
}

fn split_tagged<E: Serialize>(event: &E) -> (String, Value) {
    match serde_json::to_value(event) {
        Ok(Value::Object(mut map)) => {
            let event_type = match map.remove("type") {
                Some(Value::String(t)) => t,
                _ => String::new(),
            };
            (event_type, map.remove("data").unwrap_or(Value::Null))
        }
        _ => (String::new(), Value::Null),
    }
}

/// Serializes one commit: every message on the EVENTS stream is a JSON array of the events one
/// command produced, so that a commit is written atomically or not at all.
pub fn encode_commit(events: &[EventEnvelope]) -> Vec<u8> {
    serde_json::to_vec(events).unwrap_or_default()
}

/// Parses one commit message.
pub fn decode_commit(bytes: &[u8]) -> Result<Vec<EventEnvelope>, DecodeError> {
    let events: Vec<EventEnvelope> =
        serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
    if events.is_empty() {
        return Err(DecodeError::EmptyCommit);
    }
    Ok(events)
}
