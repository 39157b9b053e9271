//! Waiting for an aggregate to reach a final state: its stored state, then its own subject
//! followed from where that state ends, so an outcome is seen as soon as it is stored (no
//! polling, nothing missed in between).

use std::time::Duration;

use bus::store::JetStreamStore;
use bus::{Bus, ReadFrom, StreamName};
use cqrs_es::{Aggregate, AggregateError, EventStore};
use futures::StreamExt;

/// `id`'s state once `is_final` holds, or as it stands when `wait` has passed.
pub(crate) async fn until_final<A, E>(
    bus: &Bus,
    state: &JetStreamStore<A>,
    id: &str,
    wait: Duration,
    is_final: fn(&A) -> bool,
) -> Result<A, AggregateError<A::Error>>
where
    A: Aggregate<Event = domain::Event<E>> + Clone,
    E: events::DomainEvent + Clone + PartialEq + std::fmt::Debug + Send + Sync,
{
    let unexpected = |err: bus::BusError| AggregateError::UnexpectedError(Box::new(err));
    let deadline = tokio::time::Instant::now() + wait;
    let loaded = state.load_aggregate(id).await?;
    let mut aggregate = loaded.state().clone();
    if is_final(&aggregate) || wait.is_zero() {
        return Ok(aggregate);
    }
    let subject = events::subjects::event(E::AGGREGATE_TYPE, id);
    let mut updates = bus
        .read(
            StreamName::Events,
            ReadFrom::Seq(events::StreamSeq(loaded.last_stream_seq().0 + 1)),
            Some(subject),
        )
        .await
        .map_err(unexpected)?;
    loop {
        let next = match tokio::time::timeout_at(deadline, updates.next()).await {
            Err(_) | Ok(None) => return Ok(aggregate),
            Ok(Some(next)) => next.map_err(unexpected)?,
        };
        for envelope in next.decode_commit().unwrap_or_default() {
            if let Ok(event) = envelope.decode::<E>() {
                aggregate.apply(domain::Event(event));
            }
        }
        if is_final(&aggregate) {
            return Ok(aggregate);
        }
    }
}
