//! Access tokens for the platforms, refreshed when a platform says 401 (YouTube's live an hour,
//! Twitch's a few hours). Twitch and Kick hand out a new refresh token with each refresh and
//! may retire the old one, so what was obtained is kept in a file in the state directory
//! (mode 0600) and used after a restart, as long as the configured refresh token is still the
//! one it came from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use common::Secret;
use events::post::Destination;
use serde::{Deserialize, Serialize};

use crate::PostFailure;
use crate::platforms::{RefreshSpec, body};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Entry {
    access_token: Option<String>,
    refresh_token: Option<String>,
    /// The configured refresh token this entry descends from.
    origin: Option<String>,
}

pub(crate) struct Tokens {
    file: Option<PathBuf>,
    entries: Mutex<BTreeMap<Destination, Entry>>,
}

impl Tokens {
    /// Starts from the configured tokens, then what the file kept for the same origins.
    pub(crate) fn load(
        configured: impl IntoIterator<Item = (Destination, Option<Secret>, Option<Secret>)>,
        file: Option<PathBuf>,
    ) -> Self {
        let kept: BTreeMap<Destination, Entry> = file
            .as_ref()
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let entries = configured
            .into_iter()
            .map(|(destination, access_token, refresh_token)| {
                let access_token = access_token.map(|t| t.expose().to_owned());
                let refresh_token = refresh_token.map(|t| t.expose().to_owned());
                let entry = match kept.get(&destination) {
                    Some(kept) if kept.origin.is_some() && kept.origin == refresh_token => {
                        kept.clone()
                    }
                    _ => Entry {
                        access_token,
                        origin: refresh_token.clone(),
                        refresh_token,
                    },
                };
                (destination, entry)
            })
            .collect();
        Self {
            file,
            entries: Mutex::new(entries),
        }
    }

    pub(crate) fn access(&self, destination: Destination) -> Option<String> {
        self.lock()
            .get(&destination)
            .and_then(|entry| entry.access_token.clone())
    }

    /// A new access token from the platform's token endpoint (the refresh-token grant).
    pub(crate) async fn refresh(
        &self,
        destination: Destination,
        http: &reqwest::Client,
        spec: &RefreshSpec,
    ) -> Result<(), PostFailure> {
        let refresh_token = self
            .lock()
            .get(&destination)
            .and_then(|entry| entry.refresh_token.clone())
            .unwrap_or_else(|| spec.refresh_token.expose().to_owned());
        let response = http
            .post(&spec.token_url)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.as_str()),
                ("client_id", spec.client_id.as_str()),
                ("client_secret", spec.client_secret.expose()),
            ])
            .send()
            .await
            .map_err(|err| {
                PostFailure::retryable(format!("{destination} token endpoint unreachable: {err}"))
            })?;
        let status = response.status();
        let body = body(response).await;
        let access = body["access_token"]
            .as_str()
            .filter(|_| status.is_success());
        let Some(access) = access else {
            let detail = body["error_description"]
                .as_str()
                .or(body["message"].as_str())
                .or(body["error"].as_str())
                .unwrap_or("no message");
            let message = format!("{destination} token refresh {}: {detail}", status.as_u16());
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                PostFailure::retryable(message)
            } else {
                PostFailure::permanent(message)
            });
        };
        let snapshot = {
            let mut entries = self.lock();
            let entry = entries.entry(destination).or_default();
            entry.access_token = Some(access.to_owned());
            if let Some(rotated) = body["refresh_token"].as_str() {
                entry.refresh_token = Some(rotated.to_owned());
            }
            if entry.origin.is_none() {
                entry.origin = Some(spec.refresh_token.expose().to_owned());
            }
            entries.clone()
        };
        tracing::info!(%destination, "access token refreshed");
        self.save(&snapshot);
        Ok(())
    }

    /// Written whole to a temporary file, then renamed over the old one, readable by the
    /// service's user only.
    fn save(&self, entries: &BTreeMap<Destination, Entry>) {
        let Some(path) = &self.file else { return };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let temporary = path.with_extension("json.tmp");
            {
                use std::io::Write as _;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&temporary)?;
                // `mode` applies only to a file it creates: a leftover one keeps its own.
                #[cfg(unix)]
                file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
                file.write_all(&serde_json::to_vec_pretty(entries)?)?;
                file.sync_all()?;
            }
            std::fs::rename(&temporary, path)
        };
        if let Err(err) = write() {
            tracing::warn!(path = %path.display(), error = %err, "refreshed tokens not kept on disk");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Destination, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_kept_file_is_private_even_over_a_leftover_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("post-tokens.json");
        let leftover = file.with_extension("json.tmp");
        std::fs::write(&leftover, b"{}").unwrap();
        std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o644)).unwrap();
        let tokens = Tokens::load(
            [(Destination::Kick, Some("access-0".into()), None)],
            Some(file.clone()),
        );
        tokens.save(&tokens.lock().clone());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn kept_tokens_count_only_while_the_configured_refresh_token_is_their_origin() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("post-tokens.json");
        let kept: BTreeMap<Destination, Entry> = [(
            Destination::Kick,
            Entry {
                access_token: Some("access-2".into()),
                refresh_token: Some("refresh-2".into()),
                origin: Some("refresh-0".into()),
            },
        )]
        .into_iter()
        .collect();
        std::fs::write(&file, serde_json::to_vec(&kept).unwrap()).unwrap();
        let same = Tokens::load(
            [(
                Destination::Kick,
                Some("access-0".into()),
                Some("refresh-0".into()),
            )],
            Some(file.clone()),
        );
        assert_eq!(same.access(Destination::Kick).as_deref(), Some("access-2"));
        // A new refresh token in the configuration: what was kept belongs to the old one.
        let changed = Tokens::load(
            [(
                Destination::Kick,
                Some("access-9".into()),
                Some("refresh-9".into()),
            )],
            Some(file),
        );
        assert_eq!(
            changed.access(Destination::Kick).as_deref(),
            Some("access-9")
        );
    }
}
