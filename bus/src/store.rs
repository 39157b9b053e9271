//! A cqrs-es 0.5 event store on JetStream.
//!
//! Each aggregate has its own subject (`nebula.events.<type>.<id>`). Loading reads that subject
//! with direct gets; committing publishes the whole commit as one message with
//! `Nats-Expected-Last-Subject-Sequence` set to the last sequence seen at load, so of two writers
//! that loaded the same state exactly one wins and the other gets `AggregateConflict`.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Mutex, PoisonError};

use cqrs_es::{Aggregate, AggregateContext, AggregateError, CqrsFramework, EventStore};
use events::{Actor, CorrelationId, EventEnvelope, EventId, StreamSeq};

use async_nats::jetstream::kv;

use crate::{Bus, BusError, BusErrorKind, ExpectedSeq};

/// Who issued a command and why; becomes the envelope fields of every event it produces.
#[derive(Debug, Clone)]
pub struct CommandMeta {
    pub correlation_id: CorrelationId,
    pub causation_id: Option<EventId>,
    pub actor: Actor,
}

impl CommandMeta {
    /// A new correlation, started by `actor`.
    pub fn new(actor: Actor) -> Self {
        Self {
            correlation_id: CorrelationId::new(),
            causation_id: None,
            actor,
        }
    }

    /// A command caused by `event`: same correlation, caused by that event.
    pub fn caused_by(event: &EventEnvelope, actor: Actor) -> Self {
        Self {
            correlation_id: event.correlation_id,
            causation_id: Some(event.event_id),
            actor,
        }
    }

    pub fn into_metadata(self) -> HashMap<String, String> {
        let mut metadata = HashMap::new();
        metadata.insert("correlation_id".to_owned(), self.correlation_id.to_string());
        if let Some(causation_id) = self.causation_id {
            metadata.insert("causation_id".to_owned(), causation_id.to_string());
        }
        metadata.insert(
            "actor".to_owned(),
            serde_json::to_string(&self.actor).unwrap_or_default(),
        );
        metadata
    }

    fn from_metadata(metadata: &HashMap<String, String>) -> Self {
        let correlation_id = metadata
            .get("correlation_id")
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        let causation_id = metadata.get("causation_id").and_then(|v| v.parse().ok());
        let actor = metadata
            .get("actor")
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_else(Actor::system);
        Self {
            correlation_id,
            causation_id,
            actor,
        }
    }
}

/// The loaded state of one aggregate plus where its subject stood.
pub struct JetStreamContext<A: Aggregate> {
    aggregate: A,
    aggregate_id: String,
    last_aggregate_seq: u64,
    last_stream_seq: StreamSeq,
}

impl<A: Aggregate> AggregateContext<A> for JetStreamContext<A> {
    fn aggregate(&mut self) -> &mut A {
        &mut self.aggregate
    }
}

impl<A: Aggregate> JetStreamContext<A> {
    pub fn state(&self) -> &A {
        &self.aggregate
    }

    pub fn last_stream_seq(&self) -> StreamSeq {
        self.last_stream_seq
    }

    /// How many events the aggregate has (its last event's sequence).
    pub fn last_aggregate_seq(&self) -> u64 {
        self.last_aggregate_seq
    }
}

/// The store. It keeps the state of recently used aggregates after each commit, so a command
/// on a hot aggregate does not re-read its history: a cached entry is brought up to date with
/// whatever other processes appended since (one direct get when nothing was), so a command is
/// never decided — accepted or refused — on stale state. A write racing in between still meets
/// `AggregateConflict`, because every commit names the subject sequence it was decided on.
pub struct JetStreamStore<A> {
    bus: Bus,
    cache: Mutex<Lru<Cached<A>>>,
    /// The snapshot bucket, once looked up (`None`: this process may not use it).
    snapshots: tokio::sync::OnceCell<Option<kv::Store>>,
    _aggregate: PhantomData<fn() -> A>,
}

/// The bucket aggregate snapshots are kept in (its stream is `KV_nebula_snapshots`).
pub const SNAPSHOT_BUCKET: &str = events::subjects::SNAPSHOT_BUCKET;
/// An aggregate's state is snapshotted each time its history passes a multiple of this many
/// events, so loading it reads at most this many events, however long its history.
pub const SNAPSHOT_EVERY: u64 = 200;
/// Bump when an aggregate state's serialized shape changes: older snapshots are then ignored
/// (and replaced), never read into the new shape.
const SNAPSHOT_FORMAT: u32 = 1;

pub(crate) fn snapshot_bucket(replicas: usize) -> kv::Config {
    kv::Config {
        bucket: SNAPSHOT_BUCKET.to_owned(),
        description: "nebula aggregate snapshots: the state of long-lived aggregates".to_owned(),
        history: 1,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// A snapshot as stored: the state after `last_aggregate_seq` events, the last of them at
/// `last_stream_seq`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot<T> {
    format: u32,
    last_aggregate_seq: u64,
    last_stream_seq: u64,
    state: T,
}

/// The snapshot key of an aggregate (`<type>.<id>`), when its id fits a key.
fn snapshot_key(aggregate_type: &str, aggregate_id: &str) -> Option<String> {
    let fits = |s: &str| {
        !s.is_empty()
            && s.len() <= 200
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
    };
    (fits(aggregate_type) && fits(aggregate_id)).then(|| format!("{aggregate_type}.{aggregate_id}"))
}

/// At most `capacity` entries; when full, the least recently used tenth goes (one scan per
/// tenth of the capacity inserted, not one per insert), so a hot aggregate stays cached however
/// many cold ones pass through.
struct Lru<V> {
    entries: HashMap<String, (V, u64)>,
    capacity: usize,
    tick: u64,
}

impl<V> Lru<V> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
            tick: 0,
        }
    }

    fn get(&mut self, key: &str) -> Option<&V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|(value, used)| {
            *used = tick;
            &*value
        })
    }

    fn insert(&mut self, key: String, value: V) {
        if self.capacity == 0 {
            return;
        }
        self.tick += 1;
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let mut ticks: Vec<u64> = self.entries.values().map(|(_, used)| *used).collect();
            let drop = (self.capacity / 10).max(1).min(ticks.len());
            let (_, cutoff, _) = ticks.select_nth_unstable(drop - 1);
            let cutoff = *cutoff;
            self.entries.retain(|_, (_, used)| *used > cutoff);
        }
        self.entries.insert(key, (value, self.tick));
    }

    fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

struct Cached<A> {
    aggregate: A,
    last_aggregate_seq: u64,
    last_stream_seq: StreamSeq,
}

impl<A> JetStreamStore<A> {
    pub fn new(bus: Bus) -> Self {
        Self::with_capacity(bus, 10_000)
    }

    /// A store caching at most `capacity` aggregates, the least recently used leaving first
    /// (0 disables the cache).
    pub fn with_capacity(bus: Bus, capacity: usize) -> Self {
        Self {
            bus,
            cache: Mutex::new(Lru::new(capacity)),
            snapshots: tokio::sync::OnceCell::new(),
            _aggregate: PhantomData,
        }
    }

    async fn snapshot_store(&self) -> Option<&kv::Store> {
        self.snapshots
            .get_or_init(|| async {
                match self.bus.jetstream.get_key_value(SNAPSHOT_BUCKET).await {
                    Ok(store) => Some(store),
                    Err(err) => {
                        tracing::debug!(error = %err, "no snapshot bucket: aggregates load from their whole history");
                        None
                    }
                }
            })
            .await
            .as_ref()
    }

    fn forget(&self, aggregate_id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(aggregate_id);
    }
}

/// A cqrs-es framework whose store is JetStream. Read models are never built with cqrs-es
/// queries (they would be lost on a crash): they are JetStream consumers in `projections`.
pub type Commands<A> = CqrsFramework<A, JetStreamStore<A>>;

pub fn commands<A>(bus: Bus, services: A::Services) -> Commands<A>
where
    A: Aggregate + Clone,
    A::Event: events::DomainEvent,
{
    CqrsFramework::new(JetStreamStore::new(bus), Vec::new(), services)
}

/// Executes `command`, deciding again on fresh state when another writer got there first
/// (up to `attempts` times). Every other error is returned as is.
pub async fn execute<A>(
    commands: &Commands<A>,
    aggregate_id: &str,
    command: A::Command,
    meta: CommandMeta,
    attempts: usize,
) -> Result<(), AggregateError<A::Error>>
where
    A: Aggregate + Clone,
    A::Command: Clone,
    A::Event: events::DomainEvent,
{
    let mut attempt = 1;
    loop {
        match commands
            .execute_with_metadata(aggregate_id, command.clone(), meta.clone().into_metadata())
            .await
        {
            Err(AggregateError::AggregateConflict) if attempt < attempts => attempt += 1,
            other => return other,
        }
    }
}

fn to_aggregate_error<E: std::error::Error>(err: BusError) -> AggregateError<E> {
    match err.kind() {
        BusErrorKind::Conflict => AggregateError::AggregateConflict,
        BusErrorKind::Connect | BusErrorKind::Timeout => {
            AggregateError::DatabaseConnectionError(Box::new(err))
        }
        BusErrorKind::Decode => AggregateError::DeserializationError(Box::new(err)),
        _ => AggregateError::UnexpectedError(Box::new(err)),
    }
}

impl<A> JetStreamStore<A>
where
    A: Aggregate,
    A::Event: events::DomainEvent,
{
    /// The events of `aggregate_id` stored after `after`, each with its stream sequence.
    async fn load_after(
        &self,
        aggregate_id: &str,
        after: StreamSeq,
    ) -> Result<Vec<(StreamSeq, EventEnvelope, A::Event)>, BusError> {
        let subject = events::subjects::event(
            <A::Event as events::DomainEvent>::AGGREGATE_TYPE,
            aggregate_id,
        );
        let mut out = Vec::new();
        for message in self.bus.read_subject_after(&subject, after).await? {
            let commit = message
                .decode_commit()
                .map_err(|err| BusError::with_source(BusErrorKind::Decode, err))?;
            for envelope in commit {
                let event = envelope
                    .decode::<A::Event>()
                    .map_err(|err| BusError::with_source(BusErrorKind::Decode, err))?;
                out.push((message.stream_seq, envelope, event));
            }
        }
        Ok(out)
    }

    async fn load(
        &self,
        aggregate_id: &str,
    ) -> Result<(Vec<(EventEnvelope, A::Event)>, StreamSeq), BusError> {
        let events = self.load_after(aggregate_id, StreamSeq(0)).await?;
        let last_stream_seq = events.last().map_or(StreamSeq(0), |(seq, _, _)| *seq);
        Ok((
            events
                .into_iter()
                .map(|(_, envelope, event)| (envelope, event))
                .collect(),
            last_stream_seq,
        ))
    }

    /// The aggregate from its snapshot and the events after it, when a snapshot exists and
    /// agrees with the log (the next event is the one after it); otherwise `None`, and the
    /// caller folds the whole history.
    async fn from_snapshot(&self, aggregate_id: &str) -> Option<JetStreamContext<A>> {
        let key = snapshot_key(
            <A::Event as events::DomainEvent>::AGGREGATE_TYPE,
            aggregate_id,
        )?;
        let bytes = self.snapshot_store().await?.get(&key).await.ok()??;
        let snapshot: Snapshot<A> = match serde_json::from_slice(&bytes) {
            Ok(snapshot) => snapshot,
            Err(err) => {
                tracing::warn!(key = %key, error = %err, "an unreadable snapshot is ignored");
                return None;
            }
        };
        if snapshot.format != SNAPSHOT_FORMAT {
            return None;
        }
        let newer = self
            .load_after(aggregate_id, StreamSeq(snapshot.last_stream_seq))
            .await
            .ok()?;
        if newer.is_empty() {
            // Nothing since: the aggregate's last stored commit must be the snapshot's.
            let subject = events::subjects::event(
                <A::Event as events::DomainEvent>::AGGREGATE_TYPE,
                aggregate_id,
            );
            let last = self
                .bus
                .last_on_subject(crate::StreamName::Events, &subject)
                .await
                .ok()??;
            let last_seq = last.decode_commit().ok()?.last()?.aggregate_seq;
            if last.stream_seq.0 != snapshot.last_stream_seq
                || last_seq != snapshot.last_aggregate_seq
            {
                tracing::warn!(key = %key, "a snapshot that disagrees with the log is ignored");
                return None;
            }
        }
        let mut aggregate = snapshot.state;
        let mut last_aggregate_seq = snapshot.last_aggregate_seq;
        let mut last_stream_seq = StreamSeq(snapshot.last_stream_seq);
        for (stream_seq, envelope, event) in newer {
            if envelope.aggregate_seq != last_aggregate_seq + 1 {
                tracing::warn!(key = %key, snapshot = last_aggregate_seq, next = envelope.aggregate_seq, "a snapshot that disagrees with the log is ignored");
                return None;
            }
            last_aggregate_seq = envelope.aggregate_seq;
            last_stream_seq = stream_seq;
            aggregate.apply(event);
        }
        Some(JetStreamContext {
            aggregate,
            aggregate_id: aggregate_id.to_owned(),
            last_aggregate_seq,
            last_stream_seq,
        })
    }

    /// Keeps `aggregate` (after `last_aggregate_seq` events, the last at `last_stream_seq`) as
    /// its snapshot. A snapshot that cannot be written only costs the next load time.
    async fn save_snapshot(
        &self,
        aggregate_id: &str,
        aggregate: &A,
        last_aggregate_seq: u64,
        last_stream_seq: StreamSeq,
    ) {
        let Some(key) = snapshot_key(
            <A::Event as events::DomainEvent>::AGGREGATE_TYPE,
            aggregate_id,
        ) else {
            return;
        };
        let Some(store) = self.snapshot_store().await else {
            return;
        };
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            last_aggregate_seq,
            last_stream_seq: last_stream_seq.0,
            state: aggregate,
        };
        let bytes = match serde_json::to_vec(&snapshot) {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(key = %key, error = %err, "an aggregate that cannot be snapshotted");
                return;
            }
        };
        if let Err(err) = store.put(&key, bytes.into()).await {
            tracing::debug!(key = %key, error = %err, "a snapshot was not kept");
        }
    }
}

impl<A> EventStore<A> for JetStreamStore<A>
where
    A: Aggregate + Clone,
    A::Event: events::DomainEvent,
{
    type AC = JetStreamContext<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<cqrs_es::EventEnvelope<A>>, AggregateError<A::Error>> {
        let (events, _) = self.load(aggregate_id).await.map_err(to_aggregate_error)?;
        Ok(events
            .into_iter()
            .map(|(envelope, payload)| cqrs_es::EventEnvelope {
                aggregate_id: aggregate_id.to_owned(),
                sequence: envelope.aggregate_seq as usize,
                metadata: envelope.metadata(),
                payload,
            })
            .collect())
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<JetStreamContext<A>, AggregateError<A::Error>> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(aggregate_id)
            .map(|c| (c.aggregate.clone(), c.last_aggregate_seq, c.last_stream_seq));
        if let Some((mut aggregate, mut last_aggregate_seq, mut last_stream_seq)) = cached {
            // Another process may have written since: catch up with what it wrote (usually
            // nothing, one request), so a command is never refused on stale state.
            let newer = self
                .load_after(aggregate_id, last_stream_seq)
                .await
                .map_err(to_aggregate_error)?;
            for (stream_seq, envelope, event) in newer {
                last_stream_seq = stream_seq;
                last_aggregate_seq = envelope.aggregate_seq;
                aggregate.apply(event);
            }
            return Ok(JetStreamContext {
                aggregate,
                aggregate_id: aggregate_id.to_owned(),
                last_aggregate_seq,
                last_stream_seq,
            });
        }
        if let Some(context) = self.from_snapshot(aggregate_id).await {
            return Ok(context);
        }
        let (events, last_stream_seq) =
            self.load(aggregate_id).await.map_err(to_aggregate_error)?;
        let mut aggregate = A::default();
        let mut last_aggregate_seq = 0;
        for (envelope, event) in events {
            last_aggregate_seq = envelope.aggregate_seq;
            aggregate.apply(event);
        }
        Ok(JetStreamContext {
            aggregate,
            aggregate_id: aggregate_id.to_owned(),
            last_aggregate_seq,
            last_stream_seq,
        })
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: JetStreamContext<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<cqrs_es::EventEnvelope<A>>, AggregateError<A::Error>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let meta = CommandMeta::from_metadata(&metadata);
        let envelopes: Vec<EventEnvelope> = events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                EventEnvelope::new(
                    context.aggregate_id.clone(),
                    context.last_aggregate_seq + 1 + i as u64,
                    event,
                    meta.correlation_id,
                    meta.causation_id,
                    meta.actor.clone(),
                )
            })
            .collect();
        let expected = if context.last_stream_seq.0 == 0 {
            ExpectedSeq::NoEvents
        } else {
            ExpectedSeq::LastAt(context.last_stream_seq)
        };
        let appended = match self.bus.append(&envelopes, expected).await {
            Ok(appended) => appended,
            Err(err) => {
                self.forget(&context.aggregate_id);
                return Err(to_aggregate_error(err));
            }
        };
        let last_aggregate_seq = context.last_aggregate_seq + envelopes.len() as u64;
        if last_aggregate_seq / SNAPSHOT_EVERY > context.last_aggregate_seq / SNAPSHOT_EVERY {
            self.save_snapshot(
                &context.aggregate_id,
                &context.aggregate,
                last_aggregate_seq,
                appended.stream_seq,
            )
            .await;
        }
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                context.aggregate_id.clone(),
                Cached {
                    aggregate: context.aggregate.clone(),
                    last_aggregate_seq,
                    last_stream_seq: appended.stream_seq,
                },
            );
        Ok(envelopes
            .into_iter()
            .zip(events)
            .map(|(envelope, payload)| cqrs_es::EventEnvelope {
                aggregate_id: envelope.aggregate_id,
                sequence: envelope.aggregate_seq as usize,
                metadata: metadata.clone(),
                payload,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn the_least_recently_used_leave_first_and_a_hot_entry_stays() {
        let mut lru = Lru::new(10);
        for n in 0..10 {
            lru.insert(format!("a{n}"), n);
        }
        // a0 is used all along; a new one pushes out the least recently used (a1), not a0.
        for n in 10..30 {
            assert_eq!(lru.get("a0"), Some(&0));
            lru.insert(format!("a{n}"), n);
            assert!(lru.entries.len() <= 10);
        }
        assert_eq!(lru.get("a0"), Some(&0));
        assert_eq!(lru.get("a1"), None);
        assert_eq!(lru.get("a29"), Some(&29));
        // Replacing an entry never evicts another.
        let before = lru.entries.len();
        lru.insert("a29".into(), 290);
        assert_eq!((lru.entries.len(), lru.get("a29")), (before, Some(&290)));
        lru.remove("a29");
        assert_eq!(lru.get("a29"), None);
        // Capacity 0 keeps nothing.
        let mut none = Lru::new(0);
        none.insert("x".into(), 1);
        assert_eq!(none.get("x"), None);
    }
}
