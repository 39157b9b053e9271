//! Durable consumers for workers: ack, retry with backoff (nak with delay), reject (term), and
//! dead-lettering once `max_deliver` is reached. One bad message never stops the loop.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, pull};
use bytes::Bytes;
use events::{EventEnvelope, StreamSeq};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::read::{StoredMessage, from_offset, header_pairs};
use crate::{Bus, BusError, BusErrorKind, StreamName};

/// A durable consumer's declaration.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub stream: StreamName,
    /// Durable name; also the DLQ subject suffix (`nebula.dlq.<durable>`).
    pub durable: String,
    pub filter_subject: Option<String>,
    /// Deliveries before a failing message is dead-lettered.
    pub max_deliver: i64,
    /// Delay before redelivery after the n-th failure (the last entry repeats).
    pub backoff: Vec<Duration>,
    /// How long a delivery may go unacknowledged before JetStream redelivers it.
    pub ack_wait: Duration,
    pub max_ack_pending: i64,
}

impl ConsumerSpec {
    pub fn new(stream: StreamName, durable: impl Into<String>) -> Self {
        Self {
            stream,
            durable: durable.into(),
            filter_subject: None,
            max_deliver: 5,
            backoff: vec![
                Duration::from_millis(200),
                Duration::from_secs(1),
                Duration::from_secs(5),
            ],
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1000,
        }
    }

    fn delay_after(&self, delivered: i64) -> Duration {
        let index = usize::try_from(delivered.saturating_sub(1)).unwrap_or(0);
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

/// What a handler decided about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; remove it.
    Ack,
    /// Failed for a reason that may pass; redeliver after the backoff, dead-letter after the last try.
    Retry(String),
    /// Will never succeed (malformed, unknown, invalid): dead-letter it now.
    Reject(String),
}

/// One delivery handed to a handler. Cheap to clone (a handler may move a clone into its
/// future, e.g. to send progress acks while it works).
#[derive(Clone)]
pub struct Delivery {
    pub message: StoredMessage,
    /// 1 on the first delivery.
    pub delivered: i64,
    acker: std::sync::Arc<async_nats::jetstream::message::Acker>,
}

impl Delivery {
    /// Tells JetStream the work is still going, so a long job is not redelivered.
    pub async fn in_progress(&self) -> Result<(), BusError> {
        self.acker
            .ack_with(AckKind::Progress)
            .await
            .map_err(|err| BusError::msg(BusErrorKind::Other, err.to_string()))
    }
}

/// A dead letter as stored on the DLQ stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub origin: String,
    pub origin_stream: StreamName,
    pub origin_subject: String,
    pub origin_seq: StreamSeq,
    pub reason: String,
    pub payload: Bytes,
}

impl Bus {
    /// Stores a poison message on the DLQ. Idempotent per origin and sequence.
    pub async fn dead_letter(&self, letter: DeadLetter) -> Result<(), BusError> {
        let subject = events::subjects::dlq(&letter.origin);
        let id = format!(
            "dlq-{}-{}-{}",
            letter.origin,
            letter.origin_stream.as_str(),
            letter.origin_seq
        );
        let reason: String = letter
            .reason
            .chars()
            .filter(|c| !c.is_control())
            .take(1000)
            .collect();
        let headers = vec![
            ("Nebula-Dlq-Reason".to_owned(), reason),
            (
                "Nebula-Origin-Stream".to_owned(),
                letter.origin_stream.as_str().to_owned(),
            ),
            ("Nebula-Origin-Subject".to_owned(), letter.origin_subject),
            (
                "Nebula-Origin-Seq".to_owned(),
                letter.origin_seq.to_string(),
            ),
        ];
        self.publish_raw(subject, id, headers, letter.payload)
            .await?;
        self.metrics.add(
            "nebula_dead_letters_total",
            &[("origin", &letter.origin)],
            1.0,
        );
        Ok(())
    }

    /// Like [`Bus::consume`], with each payload decoded as JSON into `T` first. A payload that is
    /// not a valid `T` never reaches the handler: it is dead-lettered with the decode error.
    pub async fn consume_json<T, F, Fut>(
        &self,
        spec: ConsumerSpec,
        cancel: CancellationToken,
        mut handler: F,
    ) -> Result<(), BusError>
    where
        T: serde::de::DeserializeOwned,
        F: FnMut(T, &Delivery) -> Fut,
        Fut: Future<Output = Outcome>,
    {
        self.consume(spec, cancel, move |delivery| {
            let decoded = serde_json::from_slice::<T>(&delivery.message.payload);
            let ready = decoded.map(|value| handler(value, delivery));
            async move {
                match ready {
                    Ok(handled) => handled.await,
                    Err(err) => Outcome::Reject(format!("malformed payload: {err}")),
                }
            }
        })
        .await
    }

    /// Like [`Bus::consume`] over EVENTS, with each message decoded into its commit (the events
    /// of one append, in order) first. A message that is not a commit never reaches the handler:
    /// it is dead-lettered with the decode error.
    pub async fn consume_commits<F, Fut>(
        &self,
        spec: ConsumerSpec,
        cancel: CancellationToken,
        mut handler: F,
    ) -> Result<(), BusError>
    where
        F: FnMut(Vec<EventEnvelope>, &Delivery) -> Fut,
        Fut: Future<Output = Outcome>,
    {
        self.consume(spec, cancel, move |delivery| {
            let ready = delivery
                .message
                .decode_commit()
                .map(|commit| handler(commit, delivery));
            async move {
                match ready {
                    Ok(handled) => handled.await,
                    Err(err) => Outcome::Reject(format!("undecodable commit: {err}")),
                }
            }
        })
        .await
    }

    /// Runs `handler` over a durable consumer until `cancel` fires. Each delivery is acked,
    /// nak'ed with backoff, or dead-lettered and terminated, according to the handler's outcome.
    pub async fn consume<F, Fut>(
        &self,
        spec: ConsumerSpec,
        cancel: CancellationToken,
        mut handler: F,
    ) -> Result<(), BusError>
    where
        F: FnMut(&Delivery) -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let mut messages = self.open(&spec).await?;
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let Some(delivery) = delivery_of(&spec, next)? else {
                continue;
            };
            let outcome = if delivery.delivered > spec.max_deliver {
                // Its last try ended without a verdict (a crash or an ack timeout).
                Outcome::Retry("no outcome recorded for the last delivery".to_owned())
            } else {
                handler(&delivery).await
            };
            self.settle_or_warn(&spec, &delivery, outcome).await;
        }
    }

    /// Like [`Bus::consume`], with up to `lanes` deliveries handled at once. Deliveries with the
    /// same `key` go to the same lane and are handled in order (a user's commands, say);
    /// every delivery held — being handled or waiting for its lane — is kept alive with
    /// progress acks, so a backlog is never redelivered (nor dead-lettered) for being slow.
    /// At most `spec.max_ack_pending` are held; the rest wait on the server.
    pub async fn consume_lanes<K, F, Fut>(
        &self,
        spec: ConsumerSpec,
        cancel: CancellationToken,
        lanes: usize,
        key: K,
        handler: F,
    ) -> Result<(), BusError>
    where
        K: Fn(&Delivery) -> u64,
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let lanes = lanes.max(1);
        let mut messages = self.open(&spec).await?;
        let spec = std::sync::Arc::new(spec);
        let handler = std::sync::Arc::new(handler);
        let held: Held = Default::default();
        let mut tasks = tokio::task::JoinSet::new();
        let mut senders = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Delivery>();
            senders.push(sender);
            let (bus, spec, handler, held) =
                (self.clone(), spec.clone(), handler.clone(), held.clone());
            tasks.spawn(async move {
                while let Some(delivery) = receiver.recv().await {
                    let outcome = if delivery.delivered > spec.max_deliver {
                        Outcome::Retry("no outcome recorded for the last delivery".to_owned())
                    } else {
                        handler(delivery.clone()).await
                    };
                    bus.settle_or_warn(&spec, &delivery, outcome).await;
                    held.release(delivery.message.stream_seq, &bus, &spec.durable);
                }
            });
        }
        {
            // Progress acks for everything held, well within `ack_wait`.
            let (held, every) = (
                held.clone(),
                (spec.ack_wait / 3).max(Duration::from_millis(100)),
            );
            tasks.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    for delivery in held.all() {
                        let _ = delivery.in_progress().await;
                    }
                }
            });
        }
        let gauge = [("consumer", spec.durable.as_str())];
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                ended = tasks.join_next() => {
                    let why = match ended {
                        Some(Err(err)) if err.is_panic() => "a lane panicked",
                        _ => "a lane ended",
                    };
                    return Err(BusError::msg(BusErrorKind::Other, format!("consumer {}: {why}", spec.durable)));
                }
                next = messages.next() => next,
            };
            let Some(delivery) = delivery_of(&spec, next)? else {
                continue;
            };
            if let Some(pending) = delivery.message.pending {
                self.metrics
                    .set("nebula_consumer_pending", &gauge, pending as f64);
            }
            let lane = usize::try_from(key(&delivery) % lanes as u64).unwrap_or(0);
            held.hold(&delivery, self, &spec.durable);
            if senders[lane].send(delivery).is_err() {
                return Err(BusError::msg(
                    BusErrorKind::Other,
                    format!("consumer {}: a lane ended", spec.durable),
                ));
            }
        }
    }

    /// Opens the durable consumer `spec` declares (creating it when new) and its messages.
    async fn open(&self, spec: &ConsumerSpec) -> Result<pull::Stream, BusError> {
        let stream = self.stream(spec.stream).await?;
        let config = pull::Config {
            durable_name: Some(spec.durable.clone()),
            filter_subject: spec.filter_subject.clone().unwrap_or_default(),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: spec.ack_wait,
            // The cap is enforced here, not by the server: a message whose last delivery was
            // lost (crash, ack timeout, DLQ unreachable) must come back to be dead-lettered.
            max_deliver: -1,
            max_ack_pending: spec.max_ack_pending,
            ..Default::default()
        };
        let consumer: consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(&spec.durable, config)
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Provision, err))?;
        consumer
            .messages()
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Other, err))
    }

    async fn settle_or_warn(&self, spec: &ConsumerSpec, delivery: &Delivery, outcome: Outcome) {
        if let Err(err) = self.settle(spec, delivery, outcome).await {
            tracing::warn!(consumer = %spec.durable, stream_seq = %delivery.message.stream_seq, error = %err, "failed to settle delivery; it will be redelivered");
        }
    }
    async fn settle(
        &self,
        spec: &ConsumerSpec,
        delivery: &Delivery,
        outcome: Outcome,
    ) -> Result<(), BusError> {
        let ack = |kind| async move {
            delivery
                .acker
                .ack_with(kind)
                .await
                .map_err(|err| BusError::msg(BusErrorKind::Other, err.to_string()))
        };
        let reason = match outcome {
            Outcome::Ack => return ack(AckKind::Ack).await,
            Outcome::Retry(reason) if delivery.delivered < spec.max_deliver => {
                tracing::info!(consumer = %spec.durable, stream_seq = %delivery.message.stream_seq, delivered = delivery.delivered, reason = %reason, "retrying delivery");
                self.metrics.add(
                    "nebula_consumer_retries_total",
                    &[("consumer", &spec.durable)],
                    1.0,
                );
                return ack(AckKind::Nak(Some(spec.delay_after(delivery.delivered)))).await;
            }
            Outcome::Retry(reason) => {
                format!("gave up after {} deliveries: {reason}", delivery.delivered)
            }
            Outcome::Reject(reason) => reason,
        };
        tracing::warn!(consumer = %spec.durable, stream_seq = %delivery.message.stream_seq, reason = %reason, "dead-lettering message");
        let letter = DeadLetter {
            origin: spec.durable.clone(),
            origin_stream: spec.stream,
            origin_subject: delivery.message.subject.clone(),
            origin_seq: delivery.message.stream_seq,
            reason,
            payload: delivery.message.payload.clone(),
        };
        if let Err(err) = self.dead_letter(letter).await {
            // Not stored anywhere yet: have it redelivered, and try again then.
            ack(AckKind::Nak(Some(spec.delay_after(delivery.delivered)))).await?;
            return Err(err);
        }
        ack(AckKind::Term).await
    }
}

type Next = Option<
    Result<
        async_nats::jetstream::Message,
        async_nats::error::Error<consumer::pull::MessagesErrorKind>,
    >,
>;

/// The delivery in what the consumer's stream gave next; `Ok(None)` for a transient error or a
/// message without metadata (skipped, and redelivered by the server), an error when the
/// consumer ended.
fn delivery_of(spec: &ConsumerSpec, next: Next) -> Result<Option<Delivery>, BusError> {
    let message = match next {
        None => {
            return Err(BusError::msg(
                BusErrorKind::NotFound,
                format!("consumer {} ended (deleted?)", spec.durable),
            ));
        }
        Some(Err(err)) => {
            tracing::warn!(consumer = %spec.durable, error = %err, "consumer stream error");
            return Ok(None);
        }
        Some(Ok(message)) => message,
    };
    let (delivered, stream_seq, published, pending) = match message.info() {
        Ok(info) => (
            info.delivered,
            StreamSeq(info.stream_sequence),
            from_offset(info.published),
            info.pending,
        ),
        Err(err) => {
            tracing::warn!(consumer = %spec.durable, error = %err, "delivery without metadata");
            return Ok(None);
        }
    };
    let (message, acker) = message.split();
    let stored = StoredMessage {
        stream_seq,
        subject: message.subject.to_string(),
        published,
        headers: message
            .headers
            .as_ref()
            .map(header_pairs)
            .unwrap_or_default(),
        payload: message.payload,
        pending: Some(pending),
    };
    Ok(Some(Delivery {
        message: stored,
        delivered,
        acker: std::sync::Arc::new(acker),
    }))
}

/// The deliveries a lane consumer holds, kept alive by progress acks until settled.
#[derive(Clone, Default)]
struct Held(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<StreamSeq, Delivery>>>);

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<StreamSeq, Delivery>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hold(&self, delivery: &Delivery, bus: &Bus, consumer: &str) {
        let count = {
            let mut held = self.lock();
            held.insert(delivery.message.stream_seq, delivery.clone());
            held.len()
        };
        bus.metrics.set(
            "nebula_consumer_held",
            &[("consumer", consumer)],
            count as f64,
        );
    }

    fn release(&self, seq: StreamSeq, bus: &Bus, consumer: &str) {
        let count = {
            let mut held = self.lock();
            held.remove(&seq);
            held.len()
        };
        bus.metrics.set(
            "nebula_consumer_held",
            &[("consumer", consumer)],
            count as f64,
        );
    }

    fn all(&self) -> Vec<Delivery> {
        self.lock().values().cloned().collect()
    }
}
