//! Reading streams in order: for projections, replay, `events tail` and the gateway's live feed.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use events::{DecodeError, EventEnvelope, StreamSeq};
use futures::{Stream, StreamExt, TryStreamExt};

use crate::{Bus, BusError, BusErrorKind, StreamName};

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// From the first message.
    Start,
    /// From this stream sequence, inclusive.
    Seq(StreamSeq),
    /// From the first message stored at or after this time.
    Time(DateTime<Utc>),
    /// Only messages stored from now on.
    New,
}

/// One message as stored in a stream.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub stream_seq: StreamSeq,
    pub subject: String,
    pub published: DateTime<Utc>,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    /// Messages (matching the reader's filter) still stored after this one, when known.
    pub pending: Option<u64>,
}

impl StoredMessage {
    /// The commit this EVENTS message carries.
    pub fn decode_commit(&self) -> Result<Vec<EventEnvelope>, DecodeError> {
        events::decode_commit(&self.payload)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a stream holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamBounds {
    pub first: StreamSeq,
    pub last: StreamSeq,
    pub messages: u64,
}

type Inner = Pin<Box<dyn Stream<Item = Result<StoredMessage, BusError>> + Send>>;

/// An endless, ordered stream of stored messages (it waits for new ones at the end).
pub struct MessageStream {
    inner: Inner,
    backlog: u64,
}

impl MessageStream {
    /// How many stored messages (matching the filter) were waiting to be read when the reader
    /// opened: 0 means a fold over them is already caught up.
    pub fn backlog(&self) -> u64 {
        self.backlog
    }
}

impl Stream for MessageStream {
    type Item = Result<StoredMessage, BusError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Bus {
    /// Reads `stream` in order from `from`, optionally only the subjects matching `filter`.
    /// Backed by an ordered consumer: no acks, resumes by itself across reconnects.
    pub async fn read(
        &self,
        stream: StreamName,
        from: ReadFrom,
        filter: Option<String>,
    ) -> Result<MessageStream, BusError> {
        self.read_subjects(stream, from, filter.into_iter().collect())
            .await
    }

    /// Reads `stream` in order from `from`, only the subjects matching one of `filters` (all of
    /// them when empty): a fold that needs a few aggregate types reads only those, however
    /// long the rest of the log has grown.
    pub async fn read_subjects(
        &self,
        stream: StreamName,
        from: ReadFrom,
        filters: Vec<String>,
    ) -> Result<MessageStream, BusError> {
        let filter = (filters.len() == 1).then(|| filters[0].clone());
        // Every reader is pinned to a sequence so that a restarted ordered consumer (which
        // async-nats recreates from sequence 1 when nothing was delivered yet) cannot replay
        // the past into it: everything before `min_seq` or not after the last yielded message
        // is dropped here. A time is first resolved to the sequence it starts at.
        let from = match from {
            ReadFrom::Time(at) => self.sequence_at(stream, at, filter.clone()).await?,
            other => other,
        };
        let (deliver_policy, min_seq) = match from {
            ReadFrom::Start | ReadFrom::Seq(StreamSeq(0)) => (DeliverPolicy::All, 1),
            ReadFrom::Seq(seq) => (
                DeliverPolicy::ByStartSequence {
                    start_sequence: seq.0,
                },
                seq.0,
            ),
            ReadFrom::Time(at) => (
                DeliverPolicy::ByStartTime {
                    start_time: to_offset(at)?,
                },
                1,
            ),
            ReadFrom::New => {
                let next = self.last_seq(stream).await?.0 + 1;
                (
                    DeliverPolicy::ByStartSequence {
                        start_sequence: next,
                    },
                    next,
                )
            }
        };
        let handle = self.stream(stream).await?;
        let (filter_subject, filter_subjects) = match filter {
            Some(one) => (one, Vec::new()),
            None if filters.len() > 1 => (String::new(), filters),
            None => (String::new(), Vec::new()),
        };
        let consumer = handle
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy,
                filter_subject,
                filter_subjects,
                name: Some(reader_name()),
                ..Default::default()
            })
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Other, err))?;
        let backlog = consumer.cached_info().num_pending;
        let messages = consumer
            .messages()
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Other, err))?;
        let mut last_yielded = min_seq.saturating_sub(1);
        let inner = messages.filter_map(move |item| {
            let result = item
                .map_err(|err| BusError::with_source(BusErrorKind::Other, err))
                .and_then(stored);
            let keep = match &result {
                Ok(message) if message.stream_seq.0 <= last_yielded => false,
                Ok(message) => {
                    last_yielded = message.stream_seq.0;
                    true
                }
                Err(_) => true,
            };
            std::future::ready(keep.then_some(result))
        });
        Ok(MessageStream {
            inner: Box::pin(inner),
            backlog,
        })
    }

    /// `ReadFrom::Seq` of the first message (matching `filter`) stored at or after `at`; the
    /// next sequence to be written when there is none.
    async fn sequence_at(
        &self,
        stream: StreamName,
        at: DateTime<Utc>,
        filter: Option<String>,
    ) -> Result<ReadFrom, BusError> {
        let next = StreamSeq(self.last_seq(stream).await?.0 + 1);
        let consumer = self
            .stream(stream)
            .await?
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartTime {
                    start_time: to_offset(at)?,
                },
                filter_subject: filter.unwrap_or_default(),
                name: Some(reader_name()),
                ..Default::default()
            })
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Other, err))?;
        let mut probe = consumer
            .messages()
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Other, err))?;
        // Stored messages arrive at once; silence means none is that recent.
        match tokio::time::timeout(std::time::Duration::from_secs(2), probe.next()).await {
            Ok(Some(Ok(message))) => {
                let info = message
                    .info()
                    .map_err(|err| BusError::msg(BusErrorKind::Other, err.to_string()))?;
                Ok(ReadFrom::Seq(StreamSeq(info.stream_sequence.min(next.0))))
            }
            Ok(Some(Err(err))) => Err(BusError::with_source(BusErrorKind::Other, err)),
            Ok(None) | Err(_) => Ok(ReadFrom::Seq(next)),
        }
    }

    /// The first and last sequence of `stream`, and how many messages it holds.
    pub async fn bounds(&self, stream: StreamName) -> Result<StreamBounds, BusError> {
        let info = self.stream_info(stream).await?;
        Ok(StreamBounds {
            first: StreamSeq(info.state.first_sequence),
            last: StreamSeq(info.state.last_sequence),
            messages: info.state.messages,
        })
    }

    /// The ids of every aggregate of `aggregate_type` that has an event, sorted.
    pub async fn aggregate_ids(&self, aggregate_type: &str) -> Result<Vec<String>, BusError> {
        let prefix = events::subjects::event(aggregate_type, "");
        let subjects = self
            .event_subjects(&events::subjects::events_of_type(aggregate_type))
            .await?;
        Ok(subjects
            .into_iter()
            .filter_map(|subject| subject.strip_prefix(&prefix).map(str::to_owned))
            .collect())
    }

    /// Every event of one aggregate, in order, as stored (a commit that does not decode is
    /// skipped and counted in `nebula_bus_malformed_commits_skipped_total`).
    pub async fn aggregate_events(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope>, BusError> {
        let subject = events::subjects::event(aggregate_type, aggregate_id);
        let mut out = Vec::new();
        for message in self.read_subject(&subject).await? {
            match message.decode_commit() {
                Ok(envelopes) => out.extend(envelopes),
                Err(_) => self
                    .metrics()
                    .inc("nebula_bus_malformed_commits_skipped_total"),
            }
        }
        Ok(out)
    }

    /// The EVENTS subjects matching `filter` that hold a message, sorted.
    async fn event_subjects(&self, filter: &str) -> Result<Vec<String>, BusError> {
        let handle = self
            .jetstream
            .get_stream_no_info(StreamName::Events.as_str())
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::NotFound, err))?;
        let mut subjects: Vec<String> = handle
            .info_with_subjects(filter)
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Other, err))?
            .map(|item| item.map(|(subject, _count)| subject))
            .try_collect()
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Other, err))?;
        subjects.sort();
        Ok(subjects)
    }

    /// The last message on exactly `subject` of `stream` (the latest sample of a gauge), if
    /// the stream holds one.
    pub async fn last_on_subject(
        &self,
        stream: StreamName,
        subject: &str,
    ) -> Result<Option<StoredMessage>, BusError> {
        let handle = self
            .jetstream
            .get_stream_no_info(stream.as_str())
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::NotFound, err))?;
        match handle.direct_get_last_for_subject(subject).await {
            Ok(message) => Ok(Some(from_direct_get(message))),
            Err(err)
                if err.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(err) => Err(BusError::with_source(BusErrorKind::Other, err)),
        }
    }

    /// Every message on exactly one subject, in order (used to load an aggregate).
    pub async fn read_subject(&self, subject: &str) -> Result<Vec<StoredMessage>, BusError> {
        self.read_subject_after(subject, StreamSeq(0)).await
    }

    /// The messages on one subject stored after stream sequence `after`, in order (one request
    /// when there are none).
    pub async fn read_subject_after(
        &self,
        subject: &str,
        after: StreamSeq,
    ) -> Result<Vec<StoredMessage>, BusError> {
        // A handle without the stream-info round trip: every aggregate load comes through
        // here, and direct gets need only the stream's name.
        let handle = self
            .jetstream
            .get_stream_no_info(StreamName::Events.as_str())
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::NotFound, err))?;
        let mut out = Vec::new();
        let mut next_seq = (after.0 > 0).then_some(after.0 + 1);
        loop {
            match handle.direct_get_next_for_subject(subject, next_seq).await {
                Ok(message) => {
                    next_seq = Some(message.sequence + 1);
                    out.push(from_direct_get(message));
                }
                Err(err)
                    if err.kind()
                        == async_nats::jetstream::stream::DirectGetErrorKind::NotFound =>
                {
                    return Ok(out);
                }
                Err(err) => return Err(BusError::with_source(BusErrorKind::Other, err)),
            }
        }
    }
}

fn stored(message: async_nats::jetstream::Message) -> Result<StoredMessage, BusError> {
    let info = message
        .info()
        .map_err(|err| BusError::msg(BusErrorKind::Other, err.to_string()))?;
    let stream_seq = StreamSeq(info.stream_sequence);
    let published = from_offset(info.published);
    let headers = message
        .headers
        .as_ref()
        .map(header_pairs)
        .unwrap_or_default();
    let pending = Some(info.pending);
    Ok(StoredMessage {
        stream_seq,
        subject: message.subject.to_string(),
        published,
        headers,
        payload: message.payload.clone(),
        pending,
    })
}

/// A message read by sequence or subject (a direct get) as a [`StoredMessage`].
pub(crate) fn from_direct_get(
    message: async_nats::jetstream::message::StreamMessage,
) -> StoredMessage {
    StoredMessage {
        stream_seq: StreamSeq(message.sequence),
        subject: message.subject.to_string(),
        published: from_offset(message.time),
        headers: header_pairs(&message.headers),
        payload: message.payload,
        pending: None,
    }
}

pub(crate) fn header_pairs(headers: &async_nats::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.to_string()))
        })
        .collect()
}

pub(crate) fn from_offset(at: time::OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(at.unix_timestamp(), at.nanosecond()).unwrap_or_default()
}

fn to_offset(at: DateTime<Utc>) -> Result<time::OffsetDateTime, BusError> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
        at.timestamp_nanos_opt().unwrap_or_default(),
    ))
    .map_err(|err| BusError::with_source(BusErrorKind::Other, err))
}

/// A fresh name for an ordered consumer. Named, its create request goes to
/// `$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`, so NATS permissions can allow a role to
/// read only the subjects it may (an unnamed one would go to `…CREATE.<stream>`, filter unseen).
fn reader_name() -> String {
    format!("read-{}", uuid::Uuid::new_v4().simple())
}
