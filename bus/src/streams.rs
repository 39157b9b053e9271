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

    /// The declared configuration, with `replicas` copies of every message (3 on a cluster),
    /// the event log holding at most `events_max_bytes` (0: no limit).
    pub fn config(self, replicas: usize, events_max_bytes: i64) -> stream::Config {
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
                // Full means full: a new write is refused, no old event is dropped.
                max_bytes: if events_max_bytes > 0 {
                    events_max_bytes
                } else {
                    -1
                },
                discard: stream::DiscardPolicy::New,
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
                // Work nobody took in a week (its node retired; its job was requeued to another
                // long since) goes rather than staying forever.
                max_age: WORK_MAX_AGE,
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

/// How long a work message waits for its worker before it expires.
pub const WORK_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Creates every stream, or updates it to the declared configuration.
pub(crate) async fn provision(
    jetstream: &jetstream::Context,
    replicas: usize,
    events_max_bytes: i64,
) -> Result<(), BusError> {
    for name in StreamName::ALL {
        jetstream
            .create_or_update_stream(name.config(replicas, events_max_bytes))
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Provision, err))?;
    }
    for bucket in [
        crate::sealed::config(replicas),
        crate::store::snapshot_bucket(replicas),
    ] {
        jetstream
            .create_or_update_key_value(bucket)
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Provision, err))?;
    }
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

/// What one stream holds, and its limit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamUsage {
    pub stream: &'static str,
    pub bytes: u64,
    pub messages: u64,
    /// `None`: no limit of its own (the server's store is the limit).
    pub max_bytes: Option<u64>,
}

impl crate::Bus {
    /// Every stream's size and limit, as the server reports them now.
    pub async fn storage(&self) -> Result<Vec<StreamUsage>, BusError> {
        let mut out = Vec::new();
        for name in StreamName::ALL {
            let mut handle = self
                .jetstream
                .get_stream(name.as_str())
                .await
                .map_err(|err| BusError::with_source(BusErrorKind::NotFound, err))?;
            let info = handle
                .info()
                .await
                .map_err(|err| BusError::with_source(BusErrorKind::Other, err))?;
            out.push(StreamUsage {
                stream: name.as_str(),
                bytes: info.state.bytes,
                messages: info.state.messages,
                max_bytes: u64::try_from(info.config.max_bytes).ok().filter(|m| *m > 0),
            });
        }
        Ok(out)
    }
}
