//! The secrets vault: named values sealed with XChaCha20-Poly1305 under one key, kept in the
//! bus's sealed store; every change is a command on the name's `secret` aggregate, so the log
//! says who set which version when, and never what.
//!
//! - The key is 32 random bytes, from `NEBULA_VAULT_KEY` (64 hex digits) or a key file (mode
//!   0600), created on first use only while the vault is empty.
//! - A sealed value is `NV1 | version (u64 BE) | nonce (24) | ciphertext`; the associated data
//!   binds it to its name and version, so a value cannot be moved to another name or passed off
//!   as another version.
//! - A check value sealed when the vault was created tells a wrong key at open, before any
//!   secret is read: a wrong key is an error, never a garbled value.

use std::path::{Path, PathBuf};

use bus::store::{CommandMeta, Commands, commands, execute};
use bus::{Bus, SealedStore};
use bytes::Bytes;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use common::Secret;
use cqrs_es::AggregateError;
use domain::access::{SecretCommand, SecretError};
use events::access::{SecretEvent, validate_name};
use events::{Actor, DomainEvent};
use futures::{Stream, StreamExt};
use serde::Serialize;

/// Largest value the vault keeps.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The environment variable that may hold the key (64 hex digits).
pub const KEY_ENV: &str = "NEBULA_VAULT_KEY";
/// `secret:NAME` in a configuration value names a vault secret.
pub const REFERENCE_PREFIX: &str = "secret:";

const MAGIC: &[u8; 3] = b"NV1";
const CHECK_NAME: &str = "_key_check";
const CHECK_VALUE: &[u8] = b"nebula vault key check";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    Invalid(String),
    #[error("no secret named {0:?} in the vault")]
    NotFound(String),
    #[error("the vault key {0}")]
    Key(String),
    #[error("secret {name:?} cannot be opened: {why}")]
    Corrupt { name: String, why: String },
    #[error("the vault is unavailable: {0}")]
    Unavailable(String),
}

fn unavailable(err: impl std::fmt::Display) -> VaultError {
    VaultError::Unavailable(err.to_string())
}

/// Where the key comes from.
#[derive(Debug, Clone)]
pub struct KeySource {
    /// `NEBULA_VAULT_KEY`'s value, when set (it wins over the file).
    pub env: Option<Secret>,
    /// The key file (`<state_dir>/vault.key` unless configured).
    pub file: PathBuf,
}

impl KeySource {
    /// The key file, and `NEBULA_VAULT_KEY` from the environment.
    pub fn new(file: PathBuf) -> Self {
        Self {
            env: std::env::var(KEY_ENV).ok().map(Secret::new),
            file,
        }
    }
}

/// The 32-byte key; never printed.
struct VaultKey(Key);

impl VaultKey {
    fn parse(hex: &str, from: &str) -> Result<VaultKey, VaultError> {
        let hex = hex.trim();
        let bytes = (hex.len() == 64).then(|| common::unhex(hex)).flatten();
        let bytes: [u8; 32] = bytes
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| VaultError::Key(format!("in {from} is not 64 hex digits")))?;
        Ok(VaultKey(Key::from(bytes)))
    }

    /// The key from the environment or the file; `None` when neither has one.
    fn read(source: &KeySource) -> Result<Option<VaultKey>, VaultError> {
        if let Some(env) = &source.env {
            return VaultKey::parse(env.expose(), KEY_ENV).map(Some);
        }
        match std::fs::read_to_string(&source.file) {
            Ok(text) => VaultKey::parse(&text, &source.file.display().to_string()).map(Some),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(VaultError::Key(format!(
                "file {} cannot be read: {err}",
                source.file.display()
            ))),
        }
    }

    /// A new key, written to `file` (mode 0600, never overwriting one).
    fn create(file: &Path) -> Result<VaultKey, VaultError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|err| VaultError::Key(format!("cannot be made: {err}")))?;
        let hex = common::hex(&bytes);
        let fail = |err: std::io::Error| {
            VaultError::Key(format!("file {} cannot be created: {err}", file.display()))
        };
        common::write_private(file, hex.as_bytes()).map_err(fail)?;
        Ok(VaultKey(Key::from(bytes)))
    }
}

fn aad(name: &str, version: u64) -> Vec<u8> {
    format!("nebula-vault/v1/{name}/{version}").into_bytes()
}

fn seal(key: &VaultKey, name: &str, version: u64, value: &[u8]) -> Result<Bytes, VaultError> {
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).map_err(unavailable)?;
    let nonce = XNonce::from(nonce);
    let ciphertext = XChaCha20Poly1305::new(&key.0)
        .encrypt(
            &nonce,
            Payload {
                msg: value,
                aad: &aad(name, version),
            },
        )
        .map_err(|_| VaultError::Invalid("the value could not be sealed".into()))?;
    let mut out = Vec::with_capacity(3 + 8 + 24 + ciphertext.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(Bytes::from(out))
}

/// The version and plain value of a sealed value stored under `name`.
fn open(key: &VaultKey, name: &str, sealed: &[u8]) -> Result<(u64, Vec<u8>), VaultError> {
    let corrupt = |why: &str| VaultError::Corrupt {
        name: name.to_owned(),
        why: why.to_owned(),
    };
    if sealed.len() < 3 + 8 + 24 + 16 || &sealed[..3] != MAGIC {
        return Err(corrupt("not a sealed vault value"));
    }
    let version = u64::from_be_bytes(sealed[3..11].try_into().expect("8 bytes"));
    let nonce: [u8; 24] = sealed[11..35].try_into().expect("24 bytes");
    let value = XChaCha20Poly1305::new(&key.0)
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &sealed[35..],
                aad: &aad(name, version),
            },
        )
        .map_err(|_| corrupt("it does not open with this key (a wrong key, or tampered with)"))?;
    Ok((version, value))
}

/// A secret's value and the version it is.
#[derive(Debug, Clone)]
pub struct Revealed {
    pub value: Secret,
    pub version: u64,
}

/// What the log says about one secret: never its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretRecord {
    pub name: String,
    pub version: u64,
    pub set_at: DateTime<Utc>,
    pub set_by: Actor,
}

/// An open vault: the key checked against the store.
pub struct Vault {
    bus: Bus,
    store: SealedStore,
    key: VaultKey,
    secrets: Commands<domain::access::Secret>,
}

impl Vault {
    /// Opens the vault with the key from `source`. Without a key, one is created in the key
    /// file when `may_create` and the vault is empty; a key that does not open the vault's
    /// check value is refused.
    pub async fn open(
        bus: &Bus,
        source: &KeySource,
        may_create: bool,
    ) -> Result<Vault, VaultError> {
        let store = bus.sealed_store().await.map_err(unavailable)?;
        let check = store.get(CHECK_NAME).await.map_err(unavailable)?;
        let key = match (VaultKey::read(source)?, &check) {
            (Some(key), _) => key,
            (None, None) if may_create => {
                let key = VaultKey::create(&source.file)?;
                tracing::info!(file = %source.file.display(), "created the vault key");
                key
            }
            (None, _) => {
                return Err(VaultError::Key(format!(
                    "is missing: set {KEY_ENV} or put the key file at {} (copy it from the machine that created the vault)",
                    source.file.display()
                )));
            }
        };
        match check {
            Some(sealed) => {
                let opened = open(&key, CHECK_NAME, &sealed).ok();
                if opened.is_none_or(|(_, value)| value != CHECK_VALUE) {
                    return Err(VaultError::Key(format!(
                        "does not open this vault: it is not the key the vault was created with (from {})",
                        source.env.as_ref().map_or_else(
                            || source.file.display().to_string(),
                            |_| KEY_ENV.to_owned()
                        )
                    )));
                }
            }
            None => {
                // Two processes racing here: the second finds the first's check and tests it.
                let sealed = seal(&key, CHECK_NAME, 1, CHECK_VALUE)?;
                if !store
                    .create(CHECK_NAME, sealed)
                    .await
                    .map_err(unavailable)?
                {
                    return Box::pin(Vault::open(bus, source, false)).await;
                }
            }
        }
        Ok(Vault {
            bus: bus.clone(),
            store,
            key,
            secrets: commands(bus.clone(), ()),
        })
    }

    /// Stores a new version of `name` (the value first, then the version on the log) and
    /// returns the version.
    pub async fn set(
        &self,
        name: &str,
        value: &Secret,
        meta: CommandMeta,
    ) -> Result<u64, VaultError> {
        validate_name("secret", name).map_err(VaultError::Invalid)?;
        let bytes = value.expose().as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_VALUE_BYTES {
            return Err(VaultError::Invalid(format!(
                "a secret's value must be 1 to {MAX_VALUE_BYTES} bytes, got {}",
                bytes.len()
            )));
        }
        for _ in 0..10 {
            let version = self.history(name).await?.0 + 1;
            let sealed = seal(&self.key, name, version, bytes)?;
            self.store.put(name, sealed).await.map_err(unavailable)?;
            match execute(
                &self.secrets,
                name,
                SecretCommand::Set { version },
                meta.clone(),
                1,
            )
            .await
            {
                Ok(()) => return Ok(version),
                // Someone else set it meanwhile: seal again under the next version.
                Err(AggregateError::UserError(SecretError::VersionTaken))
                | Err(AggregateError::AggregateConflict) => continue,
                Err(err) => return Err(unavailable(err)),
            }
        }
        Err(VaultError::Unavailable(format!(
            "secret {name:?} kept changing; try again"
        )))
    }

    /// The current value of `name`, if it has one.
    pub async fn get(&self, name: &str) -> Result<Option<Revealed>, VaultError> {
        if validate_name("secret", name).is_err() {
            return Ok(None);
        }
        let Some(sealed) = self.store.get(name).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let (version, value) = open(&self.key, name, &sealed)?;
        let value = String::from_utf8(value).map_err(|_| VaultError::Corrupt {
            name: name.to_owned(),
            why: "its value is not UTF-8".into(),
        })?;
        Ok(Some(Revealed {
            value: Secret::new(value),
            version,
        }))
    }

    /// Deletes `name`; returns the version it was at.
    pub async fn remove(&self, name: &str, meta: CommandMeta) -> Result<u64, VaultError> {
        let version = match self.record(name).await? {
            Some(record) => record.version,
            None => return Err(VaultError::NotFound(name.to_owned())),
        };
        self.store.delete(name).await.map_err(unavailable)?;
        match execute(&self.secrets, name, SecretCommand::Remove, meta, 3).await {
            Ok(()) => Ok(version),
            Err(AggregateError::UserError(SecretError::NotFound)) => {
                Err(VaultError::NotFound(name.to_owned()))
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    /// The last version `name` was given (0: never; kept after a removal, so versions never
    /// repeat) and, while it is set, what the log says of it.
    async fn history(&self, name: &str) -> Result<(u64, Option<SecretRecord>), VaultError> {
        let mut version = 0;
        let mut record = None;
        let envelopes = self
            .bus
            .aggregate_events(SecretEvent::AGGREGATE_TYPE, name)
            .await
            .map_err(unavailable)?;
        for envelope in envelopes {
            match envelope.decode::<SecretEvent>() {
                Ok(SecretEvent::Set { version: set }) => {
                    version = set;
                    record = Some(SecretRecord {
                        name: name.to_owned(),
                        version: set,
                        set_at: envelope.occurred_at,
                        set_by: envelope.actor.clone(),
                    });
                }
                Ok(SecretEvent::Removed { .. }) => record = None,
                Err(_) => {}
            }
        }
        Ok((version, record))
    }

    /// What the log says of `name` now: `None` when it was never set or was removed.
    pub async fn record(&self, name: &str) -> Result<Option<SecretRecord>, VaultError> {
        if validate_name("secret", name).is_err() {
            return Ok(None);
        }
        Ok(self.history(name).await?.1)
    }

    /// Every secret the vault holds, by name.
    pub async fn list(&self) -> Result<Vec<SecretRecord>, VaultError> {
        let names = self
            .bus
            .aggregate_ids(SecretEvent::AGGREGATE_TYPE)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for name in names {
            if let Some(record) = self.record(&name).await? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// The names whose value changes from now on (set or deleted), one item per change.
    pub async fn changes(&self) -> Result<impl Stream<Item = String> + Send + use<>, VaultError> {
        let watch = self.store.watch().await.map_err(unavailable)?;
        Ok(watch.filter_map(|change| {
            std::future::ready(match change {
                Ok(change) if change.name != CHECK_NAME => Some(change.name),
                Ok(_) => None,
                Err(err) => {
                    tracing::warn!(error = %err, "the vault's change feed failed");
                    None
                }
            })
        }))
    }
}

/// The vault secret a configuration value names (`secret:NAME`), if it names one.
pub fn reference(value: &Secret) -> Option<&str> {
    value.expose().strip_prefix(REFERENCE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> VaultKey {
        VaultKey(Key::from([byte; 32]))
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_name_and_version() {
        let sealed = seal(&key(1), "discord", 3, b"hunter2").unwrap();
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "ciphertext differs from the value"
        );
        assert_eq!(
            open(&key(1), "discord", &sealed).unwrap(),
            (3, b"hunter2".to_vec())
        );
        assert!(matches!(
            open(&key(2), "discord", &sealed),
            Err(VaultError::Corrupt { .. })
        ));
        assert!(matches!(
            open(&key(1), "twitch", &sealed),
            Err(VaultError::Corrupt { .. })
        ));
        let mut bumped = sealed.to_vec();
        bumped[10] = 4; // claims version 4
        assert!(open(&key(1), "discord", &bumped).is_err());
        let mut flipped = sealed.to_vec();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(open(&key(1), "discord", &flipped).is_err());
        assert!(open(&key(1), "discord", b"NV1short").is_err());
        assert_ne!(
            seal(&key(1), "discord", 3, b"hunter2").unwrap(),
            sealed,
            "fresh nonce"
        );
    }

    #[test]
    fn keys_are_64_hex_digits() {
        assert!(VaultKey::parse(&"ab".repeat(32), "test").is_ok());
        assert!(VaultKey::parse(&format!("{}\n", "ab".repeat(32)), "test").is_ok());
        for bad in ["", "abc", &"zz".repeat(32), &"ab".repeat(33)] {
            let err = VaultKey::parse(bad, "NEBULA_VAULT_KEY").err().unwrap();
            assert!(
                err.to_string()
                    .contains("NEBULA_VAULT_KEY is not 64 hex digits"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_new_key_file_is_private_and_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("vault-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = dir.join("vault.key");
        VaultKey::create(&file).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(VaultKey::create(&file).is_err());
        let source = KeySource {
            env: None,
            file: file.clone(),
        };
        assert!(VaultKey::read(&source).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn references_name_a_secret() {
        assert_eq!(reference(&Secret::new("secret:discord")), Some("discord"));
        assert_eq!(reference(&Secret::new("plain-token")), None);
    }
}
