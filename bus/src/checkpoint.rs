//! Fold checkpoints: every process that folds part of the event log at start (the render
//! dispatcher, the video scheduler and worker, the AI developer, the deployer, the domains part,
//! the approvals' expiry, the container command router, the hosts executor) saves what it knows with the stream sequence it reflects, in the snapshot bucket
//! under `fold.<name>`, so its next start reads only what came after. A checkpoint that cannot
//! be read, is of another format, or lies past the log's head is ignored: the fold reads from
//! the start, as it would without one.

use std::time::{Duration, Instant};

use events::StreamSeq;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::SNAPSHOT_BUCKET;
use crate::{Bus, BusError, BusErrorKind, MessageStream, ReadFrom, StoredMessage, StreamName};

#[derive(Serialize, serde::Deserialize)]
struct Stored<T> {
    format: u32,
    seq: u64,
    state: T,
}

fn key(name: &str) -> String {
    format!("fold.{name}")
}

impl Bus {
    /// The state fold `name` saved (in `format`) and the EVENTS sequence it reflects, or
    /// `None` (no usable checkpoint: read from the start).
    pub async fn load_fold<T: DeserializeOwned>(
        &self,
        name: &str,
        format: u32,
    ) -> Option<(StreamSeq, T)> {
        let store = self.jetstream.get_key_value(SNAPSHOT_BUCKET).await.ok()?;
        let bytes = store.get(key(name)).await.ok()??;
        let stored: Stored<T> = match serde_json::from_slice(&bytes) {
            Ok(stored) => stored,
            Err(err) => {
                tracing::warn!(fold = name, error = %err, "a fold checkpoint does not decode: reading from the start");
                return None;
            }
        };
        let head = self.last_seq(StreamName::Events).await.ok()?;
        if stored.format != format || stored.seq > head.0 {
            tracing::warn!(
                fold = name,
                at = stored.seq,
                head = head.0,
                "a fold checkpoint of another format or past the log's head: reading from the start"
            );
            return None;
        }
        Some((StreamSeq(stored.seq), stored.state))
    }

    /// Saves fold `name`'s state as of EVENTS sequence `at`.
    pub async fn save_fold<T: Serialize>(
        &self,
        name: &str,
        format: u32,
        at: StreamSeq,
        state: &T,
    ) -> Result<(), BusError> {
        let store = self
            .jetstream
            .get_key_value(SNAPSHOT_BUCKET)
            .await
            .map_err(|err| BusError::msg(BusErrorKind::NotFound, err.to_string()))?;
        let bytes = serde_json::to_vec(&Stored {
            format,
            seq: at.0,
            state,
        })
        .map_err(|err| BusError::msg(BusErrorKind::Other, err.to_string()))?;
        store
            .put(key(name), bytes.into())
            .await
            .map_err(|err| BusError::msg(BusErrorKind::Other, err.to_string()))?;
        Ok(())
    }
}

/// Events folded between two checkpoints at most, however busy the log.
const SAVE_EVERY_EVENTS: u64 = 1_000;

/// A fold's reader of its part of the event log, opened where its checkpoint stands (at the
/// start without one, or with one that cannot be used). It knows when the fold has caught up
/// with the log and saves the fold's state now and then once it has, so a restart reads what
/// the fold missed since, not its whole history.
///
/// The state a fold checkpoints must be a function of the events it folded (and of side effects
/// already recorded on the log): what only the running process knows (tasks under way, what
/// it has sent) is not part of it.
pub struct FoldLog {
    bus: Bus,
    name: &'static str,
    /// The checkpoint's format; `None`: a fold kept by nobody (it reads from the start).
    format: Option<u32>,
    messages: MessageStream,
    /// The EVENTS sequence of the last message read (the checkpoint's, before any).
    position: u64,
    saved_at: u64,
    /// None until the first save, which is due as soon as the fold has caught up.
    last_save: Option<Instant>,
    save_every: Duration,
    /// The log's head when the reader opened: reaching it means caught up.
    head: u64,
    caught_up: bool,
    /// Nothing to read at the open: one `None` tells the fold to act on what it has.
    announce: bool,
}

impl Bus {
    /// Opens fold `name` (its state in `format`) over the EVENTS subjects matching `filters`:
    /// the state of its last checkpoint (`T::default()` without one) and the reader of what
    /// came after it.
    pub async fn open_fold<T: DeserializeOwned + Default>(
        &self,
        name: &'static str,
        format: u32,
        filters: Vec<String>,
    ) -> Result<(T, FoldLog), BusError> {
        let (state, at) = match self.load_fold::<T>(name, format).await {
            Some((at, state)) => {
                tracing::info!(fold = name, at = at.0, "a fold starts from its checkpoint");
                (state, at.0)
            }
            None => (T::default(), 0),
        };
        let head = self.last_seq(StreamName::Events).await?.0;
        let messages = self
            .read_subjects(
                StreamName::Events,
                ReadFrom::Seq(StreamSeq(at + 1)),
                filters,
            )
            .await?;
        Ok((
            state,
            FoldLog::new(self, name, Some(format), messages, at, head),
        ))
    }

    /// Opens fold `name` over the EVENTS subjects matching `filters` from the start, without a
    /// checkpoint: for a reader that may not keep one (a node's, whose credentials reach
    /// only its own part of the log).
    pub async fn open_fold_from_start(
        &self,
        name: &'static str,
        filters: Vec<String>,
    ) -> Result<FoldLog, BusError> {
        let messages = self
            .read_subjects(StreamName::Events, ReadFrom::Start, filters)
            .await?;
        Ok(FoldLog::new(self, name, None, messages, 0, u64::MAX))
    }
}

impl FoldLog {
    fn new(
        bus: &Bus,
        name: &'static str,
        format: Option<u32>,
        messages: MessageStream,
        at: u64,
        head: u64,
    ) -> Self {
        let caught_up = head <= at || messages.backlog() == 0;
        Self {
            bus: bus.clone(),
            name,
            format,
            messages,
            position: at,
            saved_at: at,
            last_save: None,
            save_every: Duration::from_secs(5),
            head,
            caught_up,
            announce: caught_up,
        }
    }

    /// Saves at most every `every` (5 s unless told), or every 1,000 events.
    #[must_use]
    pub fn save_every(mut self, every: Duration) -> Self {
        self.save_every = every;
        self
    }

    /// The next message to fold; or `None`, once, right after the open when there is nothing
    /// to read: the fold is caught up and acts on its state as it would after its last message.
    /// An error when the reader fails or ends (the fold's service restarts it). Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<StoredMessage>, BusError> {
        if std::mem::take(&mut self.announce) {
            return Ok(None);
        }
        let message = self.messages.next().await.ok_or_else(|| {
            BusError::msg(
                BusErrorKind::Other,
                format!("the {} fold's reader ended", self.name),
            )
        })??;
        self.position = self.position.max(message.stream_seq.0);
        if message.stream_seq.0 >= self.head || message.pending == Some(0) {
            self.caught_up = true;
        }
        Ok(Some(message))
    }

    /// Whether the fold has read everything stored when it opened.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// Whether the fold should act now: caught up, and `message` (the one just folded) is the
    /// last one waiting (a backlog is folded whole first).
    pub fn settled(&self, message: Option<&StoredMessage>) -> bool {
        self.caught_up && message.is_none_or(|m| m.pending.unwrap_or(0) == 0)
    }

    /// Whether a checkpoint is due: caught up, something new folded, and 1,000 events or the
    /// save interval since the last one (or none saved yet by this reader).
    pub fn due(&self) -> bool {
        self.format.is_some()
            && self.caught_up
            && self.unsaved()
            && (self.position - self.saved_at >= SAVE_EVERY_EVENTS
                || self
                    .last_save
                    .is_none_or(|at| at.elapsed() >= self.save_every))
    }

    /// Whether the fold has folded anything its checkpoint does not hold yet.
    pub fn unsaved(&self) -> bool {
        self.position > self.saved_at
    }

    /// Saves `state` — the fold's state with every message read so far folded in — when a
    /// checkpoint is [due](Self::due). A failed save is logged and tried again later.
    pub async fn save<T: Serialize>(&mut self, state: &T) {
        let Some(format) = self.format.filter(|_| self.due()) else {
            return;
        };
        self.last_save = Some(Instant::now());
        match self
            .bus
            .save_fold(self.name, format, StreamSeq(self.position), state)
            .await
        {
            Ok(()) => self.saved_at = self.position,
            Err(err) => {
                tracing::debug!(fold = self.name, error = %err, "a fold's checkpoint was not saved")
            }
        }
    }
}
