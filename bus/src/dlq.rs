//! Reading the DLQ back: what was dead-lettered, why, from where; sending a letter back to the
//! subject it came from; and taking it off the DLQ.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::stream::{DeleteMessageErrorKind, DirectGetErrorKind};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use events::StreamSeq;

use crate::read::from_direct_get;
use crate::{Appended, Bus, BusError, BusErrorKind, StreamName};

/// A dead letter as stored on the DLQ (see [`crate::consumer::DeadLetter`] for how it got
/// there).
#[derive(Debug, Clone)]
pub struct StoredDeadLetter {
    /// Its sequence on the DLQ stream.
    pub seq: StreamSeq,
    pub subject: String,
    /// The consumer (or projection) that gave up on it.
    pub origin: String,
    pub origin_stream: Option<StreamName>,
    pub origin_subject: String,
    pub origin_seq: u64,
    pub reason: String,
    pub dead_lettered_at: DateTime<Utc>,
    pub payload: Bytes,
}

impl StoredDeadLetter {
    /// Whether it can be sent back, and why not: only work messages can. The event log is
    /// history (its reader is fixed and its projection rebuilt, not the event sent again), and
    /// telemetry is a gauge that the next sample replaces.
    pub fn replayable(&self) -> Result<(), String> {
        match self.origin_stream {
            Some(StreamName::Work) => Ok(()),
            Some(StreamName::Events) => Err(
                "events are history: fix the reader, then rebuild its projection \
                 (`nebula projections rebuild <name>`)"
                    .to_owned(),
            ),
            Some(StreamName::Telemetry) => {
                Err("telemetry is a gauge: the next sample replaces it".to_owned())
            }
            Some(StreamName::Dlq) | None => Err(format!(
                "it came from no stream that can take it back ({:?})",
                self.origin_subject
            )),
        }
    }
}

impl Bus {
    /// The newest `limit` dead letters, newest first, and how many the DLQ holds.
    pub async fn dead_letters(
        &self,
        limit: usize,
    ) -> Result<(Vec<StoredDeadLetter>, u64), BusError> {
        let bounds = self.bounds(StreamName::Dlq).await?;
        let mut out = Vec::new();
        let mut seq = bounds.last.0;
        // Replayed letters leave holes; stop at the first sequence still stored.
        while seq >= bounds.first.0.max(1) && out.len() < limit && bounds.messages > 0 {
            if let Some(letter) = self.dead_letter_at(StreamSeq(seq)).await? {
                out.push(letter);
            }
            seq -= 1;
        }
        Ok((out, bounds.messages))
    }

    /// The dead letter at `seq` on the DLQ, if it is (still) there.
    pub async fn dead_letter_at(
        &self,
        seq: StreamSeq,
    ) -> Result<Option<StoredDeadLetter>, BusError> {
        let stream = self
            .jetstream
            .get_stream_no_info(StreamName::Dlq.as_str())
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::NotFound, err))?;
        let message = match stream.direct_get(seq.0).await {
            Ok(message) => message,
            Err(err) if err.kind() == DirectGetErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(BusError::with_source(BusErrorKind::Other, err)),
        };
        let message = from_direct_get(message);
        let header = |name: &str| message.header(name).unwrap_or_default().to_owned();
        let origin = match events::subjects::parse(&message.subject) {
            Some(events::subjects::Subject::Dlq { origin }) => origin.to_owned(),
            _ => String::new(),
        };
        let origin_stream = header("Nebula-Origin-Stream");
        Ok(Some(StoredDeadLetter {
            seq,
            origin,
            origin_stream: StreamName::ALL
                .into_iter()
                .find(|s| s.as_str() == origin_stream),
            origin_subject: header("Nebula-Origin-Subject"),
            origin_seq: header("Nebula-Origin-Seq").parse().unwrap_or(0),
            reason: header("Nebula-Dlq-Reason"),
            dead_lettered_at: message.published,
            subject: message.subject,
            payload: message.payload,
        }))
    }

    /// Publishes a dead letter's payload again on the subject it came from. Its `Nats-Msg-Id`
    /// is derived from the letter, so two replays racing each other store it once. Refused for
    /// letters that cannot be sent back ([`StoredDeadLetter::replayable`]).
    pub async fn republish_dead_letter(
        &self,
        letter: &StoredDeadLetter,
    ) -> Result<Appended, BusError> {
        letter
            .replayable()
            .map_err(|why| BusError::msg(BusErrorKind::Refused, why))?;
        let id = format!("dlq-replay-{}-{}", letter.origin, letter.origin_seq);
        self.publish_raw(
            letter.origin_subject.clone(),
            id,
            vec![(
                "Nebula-Replayed-From-Dlq".to_owned(),
                letter.seq.to_string(),
            )],
            letter.payload.clone(),
        )
        .await
    }

    /// Takes the dead letter at `seq` off the DLQ (after it was sent back); gone already is fine.
    pub async fn remove_dead_letter(&self, seq: StreamSeq) -> Result<(), BusError> {
        let stream = self.stream(StreamName::Dlq).await?;
        match stream.delete_message(seq.0).await {
            Ok(_) => Ok(()),
            Err(err)
                if matches!(
                    err.kind(),
                    DeleteMessageErrorKind::JetStream(ref js)
                        if js.error_code() == ErrorCode::NO_MESSAGE_FOUND
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(BusError::with_source(BusErrorKind::Other, err)),
        }
    }
}
