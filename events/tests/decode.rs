//! Reading events: unknown types, bad data, future versions, upcasting, and commits.

use events::chat::ChatSettingsEvent;
use events::node::{NodeDeregistered, NodeEvent};
use events::{
    Actor, CorrelationId, DecodeError, DomainEvent, EventEnvelope, Upcaster, decode_commit,
    encode_commit,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

fn deregistered() -> EventEnvelope {
    EventEnvelope::new(
        "n1",
        1,
        &NodeEvent::Deregistered(NodeDeregistered {
            reason: "bye".to_owned(),
        }),
        CorrelationId::new(),
        None,
        Actor::system(),
    )
}

#[test]
fn unknown_types_are_reported_as_unknown() {
    let mut envelope = deregistered();
    envelope.event_type = "node.teleported".to_owned();
    let err = envelope.decode::<NodeEvent>().unwrap_err();
    assert!(err.is_unknown_type(), "{err}");
    assert!(err.to_string().contains("node.teleported"));
    // Another domain's reader skips it too.
    assert!(
        deregistered()
            .decode::<ChatSettingsEvent>()
            .unwrap_err()
            .is_unknown_type()
    );
}

#[test]
fn invalid_data_is_poison_not_unknown() {
    let mut envelope = deregistered();
    envelope.data = json!({ "reason": 42 });
    let err = envelope.decode::<NodeEvent>().unwrap_err();
    assert!(matches!(err, DecodeError::InvalidData { .. }), "{err}");
    assert!(!err.is_unknown_type());
}

#[test]
fn events_from_the_future_are_refused() {
    let mut envelope = deregistered();
    envelope.schema_version = 99;
    assert!(matches!(
        envelope.decode::<NodeEvent>().unwrap_err(),
        DecodeError::FutureVersion { found: 99, .. }
    ));
}

/// A v2 event whose v1 stored a field under another name, lifted by an upcaster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum Renamed {
    #[serde(rename = "demo.happened")]
    Happened { title: String },
}

fn rename_name_to_title(mut data: serde_json::Value) -> serde_json::Value {
    if let Some(object) = data.as_object_mut()
        && let Some(name) = object.remove("name")
    {
        object.insert("title".to_owned(), name);
    }
    data
}

impl DomainEvent for Renamed {
    const AGGREGATE_TYPE: &'static str = "demo";
    const SCHEMA_VERSION: u32 = 2;
    const EVENT_TYPES: &'static [&'static str] = &["demo.happened"];
    fn upcasters() -> &'static [Upcaster] {
        const UPCASTERS: &[Upcaster] = &[Upcaster {
            event_type: "demo.happened",
            from_version: 1,
            upcast: rename_name_to_title,
        }];
        UPCASTERS
    }
    fn event_type(&self) -> &'static str {
        "demo.happened"
    }
}

#[test]
fn upcasters_lift_old_versions() {
    let mut envelope = EventEnvelope::new(
        "d1",
        1,
        &Renamed::Happened { title: "x".into() },
        CorrelationId::new(),
        None,
        Actor::system(),
    );
    envelope.schema_version = 1;
    envelope.data = json!({ "name": "old" });
    assert_eq!(
        envelope.decode::<Renamed>().unwrap(),
        Renamed::Happened {
            title: "old".into()
        }
    );
    envelope.schema_version = 0;
    assert!(matches!(
        envelope.decode::<Renamed>().unwrap_err(),
        DecodeError::MissingUpcaster { version: 0, .. }
    ));
}

#[test]
fn commits_round_trip_and_reject_garbage() {
    let commit = vec![deregistered(), deregistered()];
    assert_eq!(decode_commit(&encode_commit(&commit)).unwrap(), commit);
    assert!(matches!(
        decode_commit(b"{not json").unwrap_err(),
        DecodeError::Malformed(_)
    ));
    assert!(matches!(
        decode_commit(b"[]").unwrap_err(),
        DecodeError::EmptyCommit
    ));
    assert!(matches!(
        decode_commit(br#"[{"event_id": 1}]"#).unwrap_err(),
        DecodeError::Malformed(_)
    ));
}
