//! Nebula's event vocabulary: the envelope every fact travels in, the typed domain enums, the ids,
//! and the subjects they are published under.
//!
//! This crate is plain data. It knows nothing of NATS, Postgres or tokio: it can be used by any
//! reader of the log, including ones written long after the event was stored.

pub mod access;
pub mod ai_dev;
pub mod approval;
pub mod artifacts;
pub mod chat;
pub mod container;
pub mod deploy;
pub mod dlq;
mod envelope;
pub mod host;
mod ids;
pub mod node;
pub mod post;
pub mod render;
pub mod service;
pub mod setup;
pub mod subjects;
pub mod telemetry;
pub mod video;
pub mod web;

pub use envelope::{
    Actor, DecodeError, DomainEvent, EventEnvelope, Upcaster, decode_commit, encode_commit,
};
pub use ids::{
    CorrelationId, EventId, IdError, JobId, NodeId, StreamSeq, sanitize_token, validate_token,
};
