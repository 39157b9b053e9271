use std::error::Error as StdError;
use std::fmt;

/// What went wrong, small enough to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusErrorKind {
    /// The server could not be reached.
    Connect,
    /// Stream or consumer configuration was refused.
    Provision,
    /// Optimistic concurrency: the aggregate moved on since it was loaded.
    Conflict,
    /// The payload is larger than the server accepts.
    TooLarge,
    /// No answer in time (after retries, for publishes).
    Timeout,
    /// A stream, consumer or message does not exist.
    NotFound,
    /// A stored message could not be decoded.
    Decode,
    /// Not allowed: e.g. a raw publish into the event log, which only `Bus::append` writes.
    Refused,
    /// The stream (or the server's store) is at its limit: nothing more is stored until room
    /// is made.
    Full,
    /// Anything else the server or client reported.
    Other,
}

impl fmt::Display for BusErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BusErrorKind::Connect => "failed to reach nats",
            BusErrorKind::Provision => "failed to provision streams",
            BusErrorKind::Conflict => "aggregate was changed concurrently",
            BusErrorKind::TooLarge => "payload too large",
            BusErrorKind::Timeout => "timed out",
            BusErrorKind::NotFound => "not found",
            BusErrorKind::Decode => "failed to decode message",
            BusErrorKind::Refused => "refused",
            BusErrorKind::Full => "the stream is full (at its max_bytes: for the event log, raise events_max_bytes or make room)",
            BusErrorKind::Other => "nats operation failed",
        })
    }
}

/// A bus failure: a kind to match on, and the underlying cause as `source()`.
#[derive(Debug)]
pub struct BusError {
    kind: BusErrorKind,
    detail: Option<String>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl BusError {
    pub fn new(kind: BusErrorKind) -> Self {
        Self {
            kind,
            detail: None,
            source: None,
        }
    }

    pub fn msg(kind: BusErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: Some(detail.into()),
            source: None,
        }
    }

    pub fn with_source(
        kind: BusErrorKind,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            detail: None,
            source: Some(source.into()),
        }
    }

    pub fn kind(&self) -> BusErrorKind {
        self.kind
    }
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{}: {detail}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl StdError for BusError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}
