//! Dead letters sent back: the DLQ holds what a consumer gave up on; replaying one is an action
//! someone takes, so it is recorded, once, on the letter's own aggregate.

use serde::{Deserialize, Serialize};

use crate::DomainEvent;

/// A dead letter republished on the subject it came from. The aggregate id is the letter's
/// origin (`<consumer>-<stream>-<sequence>`), so the same message is never sent back twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterReplayed {
    /// The consumer that dead-lettered it.
    pub origin: String,
    pub origin_stream: String,
    pub origin_subject: String,
    pub origin_seq: u64,
    /// Why it had been dead-lettered.
    pub reason: String,
    /// Its sequence on the DLQ stream (it is removed from there).
    pub dlq_seq: u64,
    /// Its new sequence on the origin stream.
    pub replayed_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum DeadLetterEvent {
    #[serde(rename = "dead_letter.replayed")]
    Replayed(DeadLetterReplayed),
}

impl DomainEvent for DeadLetterEvent {
    const AGGREGATE_TYPE: &'static str = "dead_letter";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &["dead_letter.replayed"];

    fn event_type(&self) -> &'static str {
        match self {
            DeadLetterEvent::Replayed(_) => "dead_letter.replayed",
        }
    }
}

/// The aggregate id of a dead letter: where it came from, as one subject token.
pub fn dead_letter_id(origin: &str, origin_stream: &str, origin_seq: u64) -> String {
    crate::sanitize_token(&format!("{origin}-{origin_stream}-{origin_seq}"), 128)
}
