//! What every golden-file test shares: a fixed envelope around each event, the stored JSON
//! compared (or rewritten with `UPDATE_GOLDEN=1`), and the stored bytes read back.
#![allow(dead_code)] // each test file uses some of it

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use events::{Actor, CorrelationId, DomainEvent, EventEnvelope, EventId};
use serde_json::Value;
use uuid::Uuid;

pub(crate) fn at() -> DateTime<Utc> {
    "2026-11-24T10:00:00.123456Z".parse().unwrap()
}

pub(crate) fn envelope<E: DomainEvent>(aggregate_id: &str, seq: u64, event: &E) -> EventEnvelope {
    let mut envelope = EventEnvelope::new(
        aggregate_id,
        seq,
        event,
        CorrelationId(Uuid::parse_str("0192f0c0-0000-7000-8000-00000000c0de").unwrap()),
        Some(EventId(
            Uuid::parse_str("0192f0c0-0000-7000-8000-0000000ca05e").unwrap(),
        )),
        Actor::Service("golden".to_owned()),
    );
    envelope.event_id = EventId(Uuid::parse_str("0192f0c0-0000-7000-8000-000000000001").unwrap());
    envelope.occurred_at = at();
    envelope
}

pub(crate) fn check(name: &str, value: Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let rendered = serde_json::to_string_pretty(&value).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing golden file {}", path.display()));
    assert_eq!(rendered, expected, "wire format of {name} changed");
}

pub(crate) fn golden<E: DomainEvent + PartialEq + std::fmt::Debug>(aggregate_id: &str, event: E) {
    let envelope = envelope(aggregate_id, 3, &event);
    check(event.event_type(), serde_json::to_value(&envelope).unwrap());
    // And the stored bytes read back as the same typed event.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{}.json", event.event_type()));
    let stored: EventEnvelope =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(stored.decode::<E>().unwrap(), event);
}
