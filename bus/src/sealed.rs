//! The vault's store: a JetStream key-value bucket of sealed (already encrypted) values, one
//! key per secret name. The bus never sees a plain value; the `vault` crate seals and opens.

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::{Bus, BusError, BusErrorKind};

/// The bucket's name (its stream is `KV_nebula_vault`).
pub const BUCKET: &str = events::subjects::VAULT_BUCKET;

pub(crate) fn config(replicas: usize) -> kv::Config {
    kv::Config {
        bucket: BUCKET.to_owned(),
        description: "nebula secrets vault: sealed values by name".to_owned(),
        history: 1,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// The sealed values, by name.
#[derive(Clone)]
pub struct SealedStore {
    kv: kv::Store,
}

/// A change seen by [`SealedStore::watch`]: `name` now holds `value` (`None`: deleted).
#[derive(Debug, Clone)]
pub struct SealedChange {
    pub name: String,
    pub value: Option<Bytes>,
}

fn other(err: impl std::error::Error + Send + Sync + 'static) -> BusError {
    BusError::with_source(BusErrorKind::Other, err)
}

impl Bus {
    /// The vault's bucket (provisioned with the streams).
    pub async fn sealed_store(&self) -> Result<SealedStore, BusError> {
        let kv = self
            .jetstream
            .get_key_value(BUCKET)
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::NotFound, err))?;
        Ok(SealedStore { kv })
    }
}

impl SealedStore {
    pub async fn get(&self, name: &str) -> Result<Option<Bytes>, BusError> {
        self.kv.get(name).await.map_err(other)
    }

    pub async fn put(&self, name: &str, sealed: Bytes) -> Result<(), BusError> {
        self.kv.put(name, sealed).await.map(|_| ()).map_err(other)
    }

    /// Stores `sealed` only if `name` holds nothing yet; `false` if it does.
    pub async fn create(&self, name: &str, sealed: Bytes) -> Result<bool, BusError> {
        match self.kv.create(name, sealed).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(other(err)),
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), BusError> {
        self.kv.purge(name).await.map_err(other)
    }

    /// Every change from now on.
    pub async fn watch(
        &self,
    ) -> Result<impl Stream<Item = Result<SealedChange, BusError>> + Send + use<>, BusError> {
        let watch = self.kv.watch_all().await.map_err(other)?;
        Ok(watch.map(|entry| {
            let entry = entry.map_err(other)?;
            let value = matches!(entry.operation, kv::Operation::Put).then_some(entry.value);
            Ok(SealedChange {
                name: entry.key,
                value,
            })
        }))
    }
}
