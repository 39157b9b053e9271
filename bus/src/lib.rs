//! The message bus: the only crate that talks to NATS.
//!
//! [`Bus`] connects to JetStream, provisions the streams the system needs, appends commits to the
//! event log with optimistic concurrency, publishes telemetry and work, reads streams in order
//! from any point, runs durable work consumers with retries and dead-lettering, and backs cqrs-es
//! aggregates with [`store::JetStreamStore`]. Nothing outside this crate sees an
//! `async_nats::Message`.

mod checkpoint;
mod connect;
pub mod consumer;
mod dlq;
mod error;
mod publish;
mod query;
mod read;
pub mod remote;
pub mod sealed;
pub mod store;
pub mod streams;

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use common::metrics::Registry;

pub use checkpoint::FoldLog;
pub use dlq::StoredDeadLetter;
pub use error::{BusError, BusErrorKind};
pub use publish::{Appended, ExpectedSeq};
pub use read::{MessageStream, ReadFrom, StoredMessage, StreamBounds};
pub use remote::Remote;
pub use sealed::{SealedChange, SealedStore};
pub use streams::StreamName;

/// How to reach NATS and how patient to be with it.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// One server, or a cluster's seeds separated by commas. Never carries credentials.
    pub url: String,
    /// Who this process is to NATS, and how the connection is secured.
    pub auth: NatsAuth,
    /// How long a publish keeps retrying (same `Nats-Msg-Id`) while the server is unreachable.
    pub publish_retry_for: Duration,
    /// Largest payload we accept to publish; bigger ones are refused before they are sent.
    pub max_payload: usize,
    /// Copies of every stream: 1 on a single server, 3 on a production cluster.
    pub stream_replicas: usize,
    /// The most bytes the event log may hold (0: no limit). At the limit a write is refused
    /// with [`BusErrorKind::Full`] and nothing stored is touched (the log never drops old
    /// events); raising the limit lets writes go on.
    pub events_max_bytes: i64,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4322".to_owned(),
            auth: NatsAuth::default(),
            publish_retry_for: Duration::from_secs(30),
            max_payload: 1024 * 1024,
            stream_replicas: 1,
            events_max_bytes: DEFAULT_EVENTS_MAX_BYTES,
        }
    }
}

/// The event log's default limit: 8 GiB of the dev stack's 10 GB JetStream store, leaving room
/// for telemetry, work and dead letters.
pub const DEFAULT_EVENTS_MAX_BYTES: i64 = 8 << 30;

/// Credentials and TLS: files, never values, and never in the URL (`[nats]` in the
/// configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsAuth {
    /// An nkey user seed (`SU…`, what `nebula nats config` writes, mode 0600):
    /// `control.nk` on the control plane, `agent-<node>.nk` / `worker-<node>.nk` on a GPU node.
    pub nkey_file: Option<PathBuf>,
    /// A `.creds` file (JWT and seed) for a server in operator mode.
    pub creds_file: Option<PathBuf>,
    /// The CA that signed the server's certificate (TLS is then required).
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and its key, for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl NatsAuth {
    /// Authenticates with the nkey seed in `file`.
    pub fn nkey(file: impl Into<PathBuf>) -> Self {
        Self {
            nkey_file: Some(file.into()),
            ..Self::default()
        }
    }
}

/// How long start-up waits for a server to accept us before giving up with an error.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// A cheap-to-clone handle on NATS and JetStream.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    config: BusConfig,
    metrics: Registry,
}

impl Bus {
    /// Connects (retrying in the background if the server goes away later) and provisions the
    /// streams, idempotently: what the control plane does, and nobody else.
    pub async fn connect(config: BusConfig) -> Result<Bus, BusError> {
        let bus = Self::connect_only(config).await?;
        streams::provision(
            &bus.jetstream,
            bus.config.stream_replicas,
            bus.config.events_max_bytes,
        )
        .await?;
        Ok(bus)
    }

    /// Connects and checks that the control plane provisioned every stream, changing none: what
    /// every process outside the control plane does.
    pub async fn connect_checked(config: BusConfig) -> Result<Bus, BusError> {
        let bus = Self::connect_only(config).await?;
        streams::check(&bus).await?;
        Ok(bus)
    }

    /// Connects without touching or checking stream configuration (for read-only tools).
    pub async fn connect_only(config: BusConfig) -> Result<Bus, BusError> {
        if config.url.contains('@') {
            return Err(BusError::msg(
                BusErrorKind::Connect,
                "the NATS url carries credentials; they belong in a file (nats.nkey_file or \
                 nats.creds_file), never in the url",
            ));
        }
        // `nats://a:4222,nats://b:4222,…`: every seed of a cluster, so start-up works while
        // any one of them is down.
        let servers = config
            .url
            .split(',')
            .map(|url| url.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| BusError::with_source(BusErrorKind::Connect, err))?;
        let metrics = Registry::default();
        let identity = connect::Identity::load(&config.auth).await?;
        let deadline = tokio::time::Instant::now() + CONNECT_WITHIN;
        let mut retry = common::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let client = loop {
            let options = connect::options(&config.auth, &identity, &metrics).await?;
            match options.connect(servers.as_slice()).await {
                Ok(client) => break client,
                Err(err) if connect::is_refusal(&err) => {
                    return Err(BusError::msg(
                        BusErrorKind::Connect,
                        format!(
                            "nats at {} refused {} ({err}); `nebula nats config` makes the \
                             credentials and the server's authorization",
                            config.url,
                            identity.describe()
                        ),
                    ));
                }
                Err(err) if tokio::time::Instant::now() >= deadline => {
                    return Err(BusError::msg(
                        BusErrorKind::Connect,
                        format!(
                            "no nats server accepted us at {} within {}s: {err}",
                            config.url,
                            CONNECT_WITHIN.as_secs()
                        ),
                    ));
                }
                Err(err) => {
                    tracing::debug!(error = %err, retry_in = ?retry.peek(), "nats not reachable yet; retrying");
                    retry.sleep().await;
                }
            }
        };
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .max_ack_inflight(1024)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Bus {
            client,
            jetstream,
            config,
            metrics,
        })
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// Whether the connection to NATS is up now (it reconnects by itself when it is not).
    pub fn connected(&self) -> bool {
        matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        )
    }

    /// The process-wide metrics registry this bus reports into.
    pub fn metrics(&self) -> &Registry {
        &self.metrics
    }

    /// Round-trips to the server; used by health checks.
    pub async fn ping(&self) -> Result<Duration, BusError> {
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(2), self.client.flush())
            .await
            .map_err(|_| BusError::msg(BusErrorKind::Timeout, "nats did not answer within 2s"))?
            .map_err(|err| BusError::with_source(BusErrorKind::Connect, err))?;
        Ok(started.elapsed())
    }

    /// The sequence of the last message in `stream` (0 when empty).
    pub async fn last_seq(&self, stream: StreamName) -> Result<events::StreamSeq, BusError> {
        let info = self.stream_info(stream).await?;
        Ok(events::StreamSeq(info.state.last_sequence))
    }

    pub(crate) async fn stream_info(
        &self,
        stream: StreamName,
    ) -> Result<jetstream::stream::Info, BusError> {
        let mut handle = self
            .jetstream
            .get_stream(stream.as_str())
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::NotFound, err))?;
        handle
            .info()
            .await
            .cloned()
            .map_err(|err| BusError::with_source(BusErrorKind::Other, err))
    }

    pub(crate) async fn stream(
        &self,
        stream: StreamName,
    ) -> Result<jetstream::stream::Stream, BusError> {
        self.jetstream
            .get_stream(stream.as_str())
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::NotFound, err))
    }
}
