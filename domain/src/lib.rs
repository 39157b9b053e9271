//! Aggregates: the decisions. A command is checked against an aggregate's state and either
//! produces events or is rejected; nothing here does I/O (the event store lives in `bus`).
//!
//! cqrs-es wants its own `DomainEvent` trait on an aggregate's event type; [`Event`] wraps an
//! `events` enum to carry both traits without teaching `events` about cqrs-es.

pub mod access;
pub mod ai_dev;
pub mod approval;
pub mod artifacts;
pub mod chat;
pub mod container;
pub mod deploy;
pub mod dlq;
pub mod host;
pub mod node;
pub mod post;
pub mod render;
pub mod schedule;
pub mod service;
pub mod setup;
pub mod video;
pub mod web;

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node policy's rule for aggregates keyed by node id: a node may act on its own only.
fn own_node(node_id: &str, aggregate_id: &str, what: &str) -> Result<(), String> {
    if aggregate_id == node_id {
        Ok(())
    } else {
        Err(format!("node {node_id} cannot {what} {aggregate_id}"))
    }
}

/// An `events` domain enum, usable as a cqrs-es aggregate event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Event<E>(pub E);

impl<E> cqrs_es::DomainEvent for Event<E>
where
    E: events::DomainEvent + Clone + PartialEq + fmt::Debug + Send + Sync,
{
    fn event_type(&self) -> String {
        self.0.event_type().to_owned()
    }

    fn event_version(&self) -> String {
        E::SCHEMA_VERSION.to_string()
    }
}

impl<E: events::DomainEvent> events::DomainEvent for Event<E> {
    const AGGREGATE_TYPE: &'static str = E::AGGREGATE_TYPE;
    const SCHEMA_VERSION: u32 = E::SCHEMA_VERSION;
    const EVENT_TYPES: &'static [&'static str] = E::EVENT_TYPES;

    fn upcasters() -> &'static [events::Upcaster] {
        E::upcasters()
    }

    fn event_type(&self) -> &'static str {
        self.0.event_type()
    }
}
