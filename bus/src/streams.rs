//! The streams, declared in code and provisioned idempotently at start.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::{BusError, BusErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamName {
    /// The event log: domain facts, kept forever, never deleted or purged.
    Events,
    /// Heartbeats and samples: bounded.
    Telemetry,
    /// Jobs for workers: each message is removed once a worker acks it.
    Work,
    /// Poison messages, with the reason and where they came from.
    Dlq,
}

impl StreamName {
    pub const ALL: [StreamName; 4] = [
        StreamName::Events,
        StreamName::Telemetry,
        StreamName::Work,
        StreamName::Dlq,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamName::Events => "EVENTS",
            StreamName::Telemetry => "TELEMETRY",
            StreamName::Work => "WORK",
            StreamName::Dlq => "DLQ",
        }
    }

    pub fn subjects(self) -> &'static str {
        match self {
            StreamName::Events => events::subjects::EVENTS_ALL,
            StreamName::Telemetry => events::subjects::TELEMETRY_ALL,
            StreamName::Work => events::subjects::WORK_ALL,
            StreamName::Dlq => events::subjects::DLQ_ALL,
        }
    }

    /// The declared configuration, with `replicas` copies of every message (3 on a cluster).
    pub fn config(self, replicas: usize) -> stream::Config {
        let base = stream::Config {
            name: self.as_str().to_owned(),
            subjects: vec![self.subjects().to_owned()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            allow_direct: true,
            ..Default::default()
        };
        match self {
            StreamName::Events => stream::Config {
                description: Some("nebula event log: one subject per aggregate".to_owned()),
                retention: stream::RetentionPolicy::Limits,
                deny_delete: true,
                deny_purge: true,
                duplicate_window: Duration::from_secs(120),
                ..base
            },
            StreamName::Telemetry => stream::Config {
                description: Some("node heartbeats and samples (bounded)".to_owned()),
                retention: stream::RetentionPolicy::Limits,
                max_age: Duration::from_secs(24 * 3600),
                max_messages_per_subject: 1000,
                duplicate_window: Duration::from_secs(60),
                ..base
            },
            StreamName::Work => stream::Config {
                description: Some("work queue for workers".to_owned()),
                retention: stream::RetentionPolicy::WorkQueue,
                duplicate_window: Duration::from_secs(120),
                ..base
            },
            StreamName::Dlq => stream::Config {
                description: Some(
                    "dead letters: poison messages with reason and origin".to_owned(),
                ),
                retention: stream::RetentionPolicy::Limits,
                max_age: Duration::from_secs(30 * 24 * 3600),
                duplicate_window: Duration::from_secs(120),
                ..base
            },
        }
    }
}

/// Creates every stream, or updates it to the declared configuration.
pub(crate) async fn provision(
    jetstream: &jetstream::Context,
    replicas: usize,
) -> Result<(), BusError> {
    for name in StreamName::ALL {
        jetstream
            .create_or_update_stream(name.config(replicas))
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Provision, err))?;
    }
    jetstream
        .create_or_update_key_value(crate::sealed::config(replicas))
        .await
        .map_err(|err| BusError::with_source(BusErrorKind::Provision, err))?;
    Ok(())
}

/// Checks that every stream (and the vault's bucket) exists, changing nothing. A process
/// outside the control plane never provisions: its credentials may not, and a process started
/// with other defaults must not turn R3 streams into R1.
pub(crate) async fn check(bus: &crate::Bus) -> Result<(), BusError> {
    let mut names: Vec<String> = StreamName::ALL
        .iter()
        .map(|name| name.as_str().to_owned())
        .collect();
    names.push(format!("KV_{}", crate::sealed::BUCKET));
    for name in names {
        bus.jetstream.get_stream(&name).await.map_err(|err| {
            BusError::msg(
                BusErrorKind::NotFound,
                format!(
                    "stream {name} cannot be read ({err}): the control plane provisions the \
                     streams (start `nebula up`, or run `nebula migrate`) before other parts \
                     connect"
                ),
            )
        })?;
    }
    Ok(())
}
