//! Read models: Postgres tables kept up to date from the JetStream log. The only crate that
//! talks to Postgres.
//!
//! A [`Projection`] turns a batch of stored messages into SQL. The [`runner`] feeds it in stream
//! order and commits each batch in one transaction together with the projection's checkpoint,
//! so a crash at any point loses nothing and applies nothing twice. [`rebuild`] replays a
//! projection from sequence 1 into tables aside and swaps them in without taking the live model
//! offline. [`ReadModels`] is the query side used by the gateway.

mod approvals;
pub mod chat;
mod error;
mod event_log;
mod nodes;
pub mod projector;
mod read;
pub mod rebuild;
pub mod render;
pub mod runner;
mod telemetry;

use std::future::Future;
use std::pin::Pin;

use bus::{StoredMessage, StreamName};
use sqlx::PgConnection;

pub use approvals::Approvals;
pub use chat::Chat;
pub use error::{ApplyError, ProjectionError};
pub use event_log::EventLog;
pub use nodes::Nodes;
pub use read::{EventFilter, EventRow, NodeView, PROGRESS_TICK, ReadModels, Snapshot};
pub use render::{Render, Share};
pub use telemetry::NodeTelemetry;

pub use sqlx::PgPool;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects a pool to `database_url`.
///
/// Its sessions run with `synchronous_commit = off`: a Postgres crash may forget the last few
/// hundred milliseconds of commits, but each commit carries its checkpoint with it, so a
/// forgotten batch is simply applied again from the log. Read models stay exact; commits stop
/// waiting for the WAL flush.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, ProjectionError> {
    let options: sqlx::postgres::PgConnectOptions =
        database_url.parse().map_err(ProjectionError::Connect)?;
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(options.options([("synchronous_commit", "off")]))
        .await
        .map_err(ProjectionError::Connect)
}

/// Connects to `database_url` and applies pending migrations: what every part that uses the
/// read models does first.
pub async fn open(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    use anyhow::Context as _;
    let pool = connect(database_url, max_connections)
        .await
        .with_context(|| {
            format!(
                "failed to connect to postgres at {}",
                common::redact_url(database_url)
            )
        })?;
    migrate(&pool)
        .await
        .context("failed to migrate the database")?;
    Ok(pool)
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), ProjectionError> {
    MIGRATOR.run(pool).await.map_err(ProjectionError::Migrate)
}

/// Physical table names for one run: the live tables, or the tables aside during a rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    suffix: &'static str,
}

impl Target {
    pub const LIVE: Target = Target { suffix: "" };
    pub const REBUILD: Target = Target {
        suffix: "__rebuild",
    };

    pub fn table(&self, logical: &str) -> String {
        format!("{logical}{}", self.suffix)
    }

    /// The checkpoint row this run writes.
    pub fn checkpoint(&self, projection: &str) -> String {
        format!("{projection}{}", self.suffix)
    }
}

/// What applying a batch did beyond writing rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Events of this projection's domain whose type this version does not know (skipped).
    pub unknown_skipped: u64,
}

/// Which events of a batch a projection reads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reads<'a> {
    /// Every event, of any aggregate, known or not (the event log).
    Everything,
    /// The events of these aggregate types.
    Aggregates(&'a [&'a str]),
}

/// One event of a batch, and where it sits in the stream.
pub(crate) struct Stored {
    /// The stream sequence of its commit.
    pub(crate) seq: i64,
    /// Its place in the commit.
    pub(crate) idx: i32,
    pub(crate) envelope: events::EventEnvelope,
}

/// The events of `batch` that `reads` asks for, in stream order: the one decode path of every
/// EVENTS projection. Subjects of other aggregates are skipped unread; an undecodable commit
/// among the wanted ones is poison.
pub(crate) fn events_of(
    batch: &[StoredMessage],
    reads: Reads<'_>,
) -> Result<Vec<Stored>, ApplyError> {
    let mut out = Vec::new();
    for message in batch {
        let wanted = match reads {
            Reads::Everything => true,
            Reads::Aggregates(types) => events::subjects::parse(&message.subject)
                .and_then(|subject| subject.aggregate_type())
                .is_some_and(|aggregate| types.contains(&aggregate)),
        };
        if !wanted {
            continue;
        }
        let seq = seq_i64(message.stream_seq.0)?;
        let commit = message
            .decode_commit()
            .map_err(|err| ApplyError::Poison(err.to_string()))?;
        for (idx, envelope) in commit.into_iter().enumerate() {
            let idx =
                i32::try_from(idx).map_err(|_| ApplyError::Poison("commit too long".into()))?;
            out.push(Stored { seq, idx, envelope });
        }
    }
    Ok(out)
}

/// The telemetry samples of `kind` in `batch`, decoded, with their stream sequences: the one
/// decode path of TELEMETRY projections. A sample that does not decode is poison.
pub(crate) fn samples_of<T: serde::de::DeserializeOwned>(
    batch: &[StoredMessage],
    kind: &str,
) -> Result<Vec<Sample<T>>, ApplyError> {
    let mut out = Vec::new();
    for message in batch {
        let ours = matches!(
            events::subjects::parse(&message.subject),
            Some(events::subjects::Subject::Telemetry { kind: found, .. }) if found == kind
        );
        if !ours {
            continue;
        }
        let sample = serde_json::from_slice(&message.payload)
            .map_err(|err| ApplyError::Poison(format!("malformed {kind}: {err}")))?;
        out.push(Sample {
            stream_seq: seq_i64(message.stream_seq.0)?,
            received_at: message.published,
            sample,
        });
    }
    Ok(out)
}

/// A telemetry sample as it arrived: where it sits in the stream and when the server stored it.
pub(crate) struct Sample<T> {
    pub(crate) stream_seq: i64,
    pub(crate) received_at: chrono::DateTime<chrono::Utc>,
    pub(crate) sample: T,
}

/// A stream sequence as Postgres stores it.
pub(crate) fn seq_i64(seq: u64) -> Result<i64, ApplyError> {
    i64::try_from(seq).map_err(|_| ApplyError::Poison(format!("sequence {seq} out of range")))
}

/// An event of a known aggregate: `None` when its type is newer than this version (skipped and
/// counted), poison when it does not decode.
pub(crate) fn decode_known<E: events::DomainEvent + serde::de::DeserializeOwned>(
    envelope: &events::EventEnvelope,
) -> Result<Option<E>, ApplyError> {
    match envelope.decode::<E>() {
        Ok(event) => Ok(Some(event)),
        Err(err) if err.is_unknown_type() => Ok(None),
        Err(err) => Err(ApplyError::Poison(err.to_string())),
    }
}

pub type ApplyFuture<'a> = Pin<Box<dyn Future<Output = Result<Applied, ApplyError>> + Send + 'a>>;

/// One read model.
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the checkpoint key and the `projections rebuild` argument.
    fn name(&self) -> &'static str;
    fn stream(&self) -> StreamName;
    /// The tables this projection owns (rebuilt aside, then swapped in).
    fn tables(&self) -> &'static [&'static str];
    /// Applies `batch` (in stream order) inside the caller's transaction. Must be deterministic:
    /// the same batch on the same state gives the same result.
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        target: &'a Target,
        batch: &'a [StoredMessage],
    ) -> ApplyFuture<'a>;
}

/// Every projection of the backbone.
pub fn all() -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(EventLog),
        std::sync::Arc::new(Nodes),
        std::sync::Arc::new(NodeTelemetry),
        std::sync::Arc::new(Render),
        std::sync::Arc::new(Chat),
        std::sync::Arc::new(Approvals),
    ]
}

/// Looks a projection up by name.
pub fn by_name(name: &str) -> Option<std::sync::Arc<dyn Projection>> {
    all().into_iter().find(|p| p.name() == name)
}
