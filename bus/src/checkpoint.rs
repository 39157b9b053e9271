//! Fold checkpoints: a process that folds part of the event log at start (the render
//! dispatcher) saves what it knows with the stream sequence it reflects, in the snapshot bucket
//! under `fold.<name>`, so its next start reads only what came after. A checkpoint that cannot
//! be read, is of another format, or lies past the log's head is ignored: the fold reads from
//! the start, as it would without one.

use events::StreamSeq;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::SNAPSHOT_BUCKET;
use crate::{Bus, BusError, BusErrorKind, StreamName};

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
