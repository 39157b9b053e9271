//! Writing to streams: every publish carries a `Nats-Msg-Id` and waits for JetStream's ack.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use common::Backoff;
use events::{EventEnvelope, StreamSeq};

use crate::{Bus, BusError, BusErrorKind};

/// What the aggregate's subject must look like for an append to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedSeq {
    /// No check (for facts that cannot conflict).
    Any,
    /// The aggregate must have no events yet.
    NoEvents,
    /// The last message on the aggregate's subject must be at this stream sequence.
    LastAt(StreamSeq),
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub stream_seq: StreamSeq,
    /// The same commit had already been stored (a retried publish); nothing was written twice.
    pub duplicate: bool,
}

impl Bus {
    /// Appends one commit (the events of one command, all of one aggregate) to the event log as a
    /// single message: it is stored whole or not at all. The `Nats-Msg-Id` is the first event's
    /// id, so retrying the same commit is idempotent.
    pub async fn append(
        &self,
        events: &[EventEnvelope],
        expected: ExpectedSeq,
    ) -> Result<Appended, BusError> {
        let first = events.first().ok_or_else(|| {
            BusError::msg(BusErrorKind::Other, "a commit needs at least one event")
        })?;
        if events.iter().any(|e| {
            e.aggregate_type != first.aggregate_type || e.aggregate_id != first.aggregate_id
        }) {
            return Err(BusError::msg(
                BusErrorKind::Other,
                "a commit may hold events of one aggregate only",
            ));
        }
        events::validate_token(&first.aggregate_type)
            .and_then(|()| events::validate_token(&first.aggregate_id))
            .map_err(|err| BusError::with_source(BusErrorKind::Other, err))?;
        let subject = events::subjects::event(&first.aggregate_type, &first.aggregate_id);
        let payload = Bytes::from(events::encode_commit(events));
        let payload_len = payload.len();
        let mut headers = HeaderMap::new();
        headers.insert("Nebula-Event-Type", first.event_type.as_str());
        headers.insert(
            "Nebula-Correlation-Id",
            first.correlation_id.to_string().as_str(),
        );
        let mut message = PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(first.event_id.to_string());
        match expected {
            ExpectedSeq::Any => {}
            ExpectedSeq::NoEvents => message = message.expected_last_subject_sequence(0),
            ExpectedSeq::LastAt(seq) => message = message.expected_last_subject_sequence(seq.0),
        }
        let result = self
            .publish_with_retry(subject, payload_len, message, self.config.publish_retry_for)
            .await;
        match &result {
            Ok(appended) if appended.duplicate => {
                self.metrics.inc("nebula_bus_publish_duplicates_total")
            }
            Ok(_) => self.metrics.inc("nebula_bus_events_appended_total"),
            Err(err) if err.kind() == BusErrorKind::Conflict => {
                self.metrics.inc("nebula_bus_append_conflicts_total")
            }
            Err(_) => self.metrics.inc("nebula_bus_publish_errors_total"),
        }
        result
    }

    /// Publishes a raw payload to any subject the streams capture but the event log's, with a
    /// caller-chosen `Nats-Msg-Id`, waiting for the ack (retrying while the server is away).
    /// `nebula.events.*` is refused: only [`Bus::append`] writes commits there.
    pub async fn publish_raw(
        &self,
        subject: impl Into<String>,
        message_id: impl AsRef<str>,
        headers: Vec<(String, String)>,
        payload: Bytes,
    ) -> Result<Appended, BusError> {
        let subject = subject.into();
        if events::subjects::is_event_log(&subject) {
            self.metrics.inc("nebula_bus_refused_publishes_total");
            return Err(BusError::msg(
                BusErrorKind::Refused,
                format!("{subject} is in the event log, which only Bus::append writes"),
            ));
        }
        let payload_len = payload.len();
        let mut header_map = HeaderMap::new();
        for (name, value) in &headers {
            header_map.insert(name.as_str(), value.as_str());
        }
        let message = PublishMessage::build()
            .payload(payload)
            .headers(header_map)
            .message_id(message_id);
        self.publish_with_retry(subject, payload_len, message, self.config.publish_retry_for)
            .await
    }

    /// Publishes a node heartbeat to TELEMETRY.
    pub async fn publish_heartbeat(
        &self,
        heartbeat: &events::telemetry::Heartbeat,
    ) -> Result<Appended, BusError> {
        let subject = events::subjects::telemetry(
            heartbeat.node_id.as_str(),
            events::telemetry::Heartbeat::KIND,
        );
        let payload = serde_json::to_vec(heartbeat)
            .map_err(|err| BusError::with_source(BusErrorKind::Other, err))?;
        let id = format!(
            "hb-{}-{}-{}",
            heartbeat.node_id,
            heartbeat.sampled_at.timestamp_micros(),
            heartbeat.sample_seq
        );
        // A heartbeat is a gauge: a late one is worth little, the next one replaces it. Retry
        // briefly, then let the caller move on to a fresh sample.
        let payload_len = payload.len();
        let message = PublishMessage::build()
            .payload(Bytes::from(payload))
            .message_id(id);
        self.publish_with_retry(subject, payload_len, message, Duration::from_secs(2))
            .await
    }

    async fn publish_with_retry(
        &self,
        subject: String,
        payload_len: usize,
        message: PublishMessage,
        retry_for: Duration,
    ) -> Result<Appended, BusError> {
        if payload_len > self.config.max_payload {
            return Err(BusError::msg(
                BusErrorKind::TooLarge,
                format!(
                    "{payload_len} bytes is over the limit of {} bytes",
                    self.config.max_payload
                ),
            ));
        }
        let deadline = Instant::now() + retry_for;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let attempt = async {
                let ack_future = self
                    .jetstream
                    .send_publish(subject.clone(), message.clone())
                    .await?;
                ack_future.await
            };
            match attempt.await {
                Ok(ack) => {
                    return Ok(Appended {
                        stream_seq: StreamSeq(ack.sequence),
                        duplicate: ack.duplicate,
                    });
                }
                Err(err) => {
                    let transient = matches!(
                        err.kind(),
                        PublishErrorKind::TimedOut
                            | PublishErrorKind::BrokenPipe
                            | PublishErrorKind::StreamNotFound
                    );
                    if !transient || Instant::now() + backoff.peek() > deadline {
                        return Err(classify(err));
                    }
                    tracing::debug!(subject = %subject, error = %err, "publish failed, retrying with the same message id");
                    self.metrics.inc("nebula_bus_publish_retries_total");
                    backoff.sleep().await;
                }
            }
        }
    }
}

fn classify(err: PublishError) -> BusError {
    let kind = match err.kind() {
        PublishErrorKind::WrongLastSequence => BusErrorKind::Conflict,
        PublishErrorKind::MaxPayloadExceeded => BusErrorKind::TooLarge,
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => BusErrorKind::Timeout,
        PublishErrorKind::StreamNotFound => BusErrorKind::NotFound,
        _ if is_full(&err.to_string()) => BusErrorKind::Full,
        _ => BusErrorKind::Other,
    };
    BusError::with_source(kind, err)
}

/// JetStream's refusals of a write for want of room: a stream at its `max_bytes` or
/// `max_msgs` with discard-new ("maximum bytes exceeded", "maximum messages exceeded"), or a
/// server whose store is full ("insufficient resources", "resource limits exceeded").
fn is_full(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "maximum bytes",
        "maximum messages",
        "insufficient resources",
        "resource limits",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}
