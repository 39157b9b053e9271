//! Each guild set up from its settings: which slash commands are registered there, and the
//! bot's nickname and avatar in it. Applied when the bot joins a guild (READY, GUILD_CREATE)
//! and whenever the guild's settings change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bus::store::JetStreamStore;
use bus::{Bus, ReadFrom, StreamName};
use cqrs_es::EventStore;
use domain::chat::ChatSettings;
use events::DomainEvent;
use events::chat::{COMMANDS, ChannelSettings, ChatSettingsEvent, Platform, settings_id};
use futures::StreamExt;
use serenity::all::{CommandOptionType, CreateCommand, CreateCommandOption, GuildId, Http};
use tokio_util::sync::CancellationToken;

use crate::retry_until;

pub(crate) struct Guilds {
    bus: Bus,
    settings: JetStreamStore<ChatSettings>,
    /// The guilds the bot is in, and what has been applied in each.
    applied: Mutex<HashMap<GuildId, Applied>>,
    /// One guild set up at a time (a join and a settings change may arrive together).
    turn: tokio::sync::Mutex<()>,
    /// For avatars given as URLs.
    web: reqwest::Client,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Applied {
    /// The registered commands; `None` until a registration succeeded.
    commands: Option<Vec<String>>,
    /// Nickname and avatar. Nothing is assumed set at first, so a guild whose settings name
    /// no identity keeps whatever a person gave the bot there.
    identity: (Option<String>, Option<String>),
}

impl Guilds {
    pub(crate) fn new(bus: Bus) -> Self {
        Self {
            settings: JetStreamStore::new(bus.clone()),
            bus,
            applied: Mutex::new(HashMap::new()),
            turn: tokio::sync::Mutex::new(()),
            web: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The bot is in `guild` (READY or GUILD_CREATE): set it up, unless that is done.
    pub(crate) async fn joined(&self, http: &Http, guild: GuildId) {
        self.lock().entry(guild).or_default();
        self.prepare(http, guild).await;
    }

    /// Applies the guild's current settings where they differ from what was applied.
    async fn prepare(&self, http: &Http, guild: GuildId) {
        let _turn = self.turn.lock().await;
        let id = settings_id(Platform::Discord, &guild.to_string());
        let settings = match self.settings.load_aggregate(&id).await {
            Ok(aggregate) => aggregate.state().current(),
            Err(err) => {
                self.failed("settings", &format!("{guild}: {err}"));
                return;
            }
        };
        let Some(applied) = self.lock().get(&guild).cloned() else {
            return; // not a guild the bot is in
        };
        let commands: Vec<String> = COMMANDS
            .iter()
            .filter(|name| settings.rule(name).enabled)
            .map(|name| (*name).to_owned())
            .collect();
        if applied.commands.as_ref() != Some(&commands) {
            let definitions: Vec<CreateCommand> =
                commands.iter().map(|name| definition(name)).collect();
            match retrying(|| guild.set_commands(http, definitions.clone())).await {
                Ok(_) => {
                    tracing::info!(%guild, ?commands, "slash commands registered");
                    self.record(guild, |a| a.commands = Some(commands.clone()));
                }
                Err(err) => self.failed("register", &format!("{guild}: {err}")),
            }
        }
        let identity = (settings.nickname.clone(), settings.avatar.clone());
        if applied.identity != identity {
            match self.apply_identity(http, guild, &settings).await {
                Ok(()) => {
                    tracing::info!(%guild, nickname = ?identity.0, "identity applied");
                    self.record(guild, |a| a.identity = identity.clone());
                }
                Err(err) => self.failed("identity", &format!("{guild}: {err}")),
            }
        }
    }

    /// Nickname and avatar in one `PATCH /guilds/{guild}/members/@me` (a missing one resets).
    async fn apply_identity(
        &self,
        http: &Http,
        guild: GuildId,
        settings: &ChannelSettings,
    ) -> Result<(), String> {
        let avatar = match settings.avatar.as_deref() {
            None => None,
            Some(data) if data.starts_with("data:") => Some(data.to_owned()),
            Some(url) => Some(fetch_avatar(&self.web, url, AVATAR_MAX_BYTES).await?),
        };
        let mut body = serde_json::Map::new();
        body.insert("nick".into(), settings.nickname.clone().into());
        body.insert("avatar".into(), avatar.into());
        retrying(|| http.edit_member_me(guild, &body, Some("Nebula chat settings")))
            .await
            .map(|_| ())
    }

    /// Follows every guild settings change from now on until `cancel` fires. The current
    /// settings were applied on joining each guild; a reopened feed (after a failure) applies
    /// them again for every guild known, so nothing changed during the gap is missed.
    pub(crate) async fn follow_settings(
        self: Arc<Self>,
        http: Arc<Http>,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut changes = self
            .bus
            .read(
                StreamName::Events,
                ReadFrom::New,
                Some(events::subjects::events_of_type(
                    ChatSettingsEvent::AGGREGATE_TYPE,
                )),
            )
            .await?;
        let known: Vec<GuildId> = self.lock().keys().copied().collect();
        for guild in known {
            self.prepare(&http, guild).await;
        }
        loop {
            let message = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                message = changes.next() => match message {
                    Some(message) => message?,
                    None => anyhow::bail!("the settings feed ended"),
                },
            };
            let Ok(commit) = message.decode_commit() else {
                continue; // counted where it was written; nothing to apply
            };
            for envelope in commit {
                let Ok(ChatSettingsEvent::Changed(changed)) = envelope.decode() else {
                    continue;
                };
                let Ok(guild) = changed.scope.parse::<u64>() else {
                    continue;
                };
                if changed.platform == Platform::Discord && guild != 0 {
                    self.prepare(&http, GuildId::new(guild)).await;
                }
            }
        }
    }

    fn record(&self, guild: GuildId, change: impl FnOnce(&mut Applied)) {
        if let Some(applied) = self.lock().get_mut(&guild) {
            change(applied);
        }
    }

    fn failed(&self, op: &'static str, error: &str) {
        // Tried again on the next settings change or reconnect.
        crate::failed(&self.bus, op, error);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GuildId, Applied>> {
        self.applied.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A guild setup call: tried again for up to ten seconds while the failure may pass.
async fn retrying<T, F, Fut>(call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = serenity::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    retry_until(deadline, call).await.map_err(|err| err.message)
}

/// The slash command `name` as Discord registers it.
pub(crate) fn definition(name: &str) -> CreateCommand {
    let command = CreateCommand::new(name).dm_permission(false);
    match name {
        "imagine" => command
            .description("Render an image from a prompt")
            .add_option(
                CreateCommandOption::new(CommandOptionType::String, "prompt", "What to imagine")
                    .required(true)
                    .max_length(1000),
            )
            .add_option(
                CreateCommandOption::new(
                    CommandOptionType::String,
                    "negative",
                    "What to keep out of the image",
                )
                .max_length(1000),
            )
            .add_option(
                CreateCommandOption::new(
                    CommandOptionType::Integer,
                    "seed",
                    "The same seed gives the same image",
                )
                .min_int_value(0),
            )
            .add_option(
                CreateCommandOption::new(CommandOptionType::Integer, "steps", "Sampling steps")
                    .min_int_value(1)
                    .max_int_value(150),
            )
            .add_option(CreateCommandOption::new(
                CommandOptionType::String,
                "size",
                "Width x height, e.g. 768x512",
            ))
            .add_option(
                CreateCommandOption::new(
                    CommandOptionType::Number,
                    "cfg",
                    "How closely to follow the prompt",
                )
                .min_number_value(0.0)
                .max_number_value(30.0),
            ),
        "status" => command.description("Where your last image is"),
        "queue" => command.description("How many images are waiting"),
        "cancel" => command.description("Cancel your last image"),
        other => command.description(format!("Nebula {other}")),
    }
}

/// The largest avatar Discord takes.
const AVATAR_MAX_BYTES: usize = 8 << 20;

/// An avatar URL as the data URI Discord takes: an image (PNG, JPEG, GIF or WebP) of at most
/// `max` bytes, read as it streams in (a body without a length cannot grow past the cap).
async fn fetch_avatar(web: &reqwest::Client, url: &str, max: usize) -> Result<String, String> {
    use base64::Engine as _;
    let fail = |why: String| format!("avatar {url}: {why}");
    let too_large = || fail(format!("is larger than {} MiB", max >> 20));
    let mut response = web
        .get(url)
        .send()
        .await
        .map_err(|err| fail(err.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("answered {}", response.status())));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    if !["image/png", "image/jpeg", "image/gif", "image/webp"].contains(&content_type.as_str()) {
        return Err(fail(format!("is {content_type:?}, not an image")));
    }
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| fail(err.to_string()))?
    {
        if bytes.len() + chunk.len() > max {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    Ok(format!("data:{content_type};base64,{encoded}"))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP answer on a loopback port: `head`, then `chunks` chunks of `chunk` bytes in
    /// chunked encoding (no length announced), as long as the client reads.
    async fn serve(head: &'static str, chunk: usize, chunks: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/avatar.png", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            socket.write_all(head.as_bytes()).await.unwrap();
            let body = vec![b'x'; chunk];
            for _ in 0..chunks {
                let framed = [format!("{chunk:x}\r\n").as_bytes(), &body, b"\r\n"].concat();
                if socket.write_all(&framed).await.is_err() {
                    return; // the client stopped reading: what a cap does
                }
            }
            let _ = socket.write_all(b"0\r\n\r\n").await;
        });
        url
    }

    const CHUNKED_PNG: &str =
        "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[tokio::test]
    async fn an_avatar_without_a_length_is_cut_off_at_the_cap() {
        let web = reqwest::Client::new();
        // 64 MiB offered, 1 MiB allowed: refused once past it, not after reading it all.
        let url = serve(CHUNKED_PNG, 64 << 10, 1024).await;
        let err = super::fetch_avatar(&web, &url, 1 << 20).await.unwrap_err();
        assert!(err.ends_with("is larger than 1 MiB"), "{err}");
        let url = serve(CHUNKED_PNG, 1000, 3).await;
        let data = super::fetch_avatar(&web, &url, 1 << 20).await.unwrap();
        assert!(data.starts_with("data:image/png;base64,eHh4"), "{data}");
        let url = serve(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n",
            10,
            1,
        )
        .await;
        let err = super::fetch_avatar(&web, &url, 1 << 20).await.unwrap_err();
        assert!(err.contains("not an image"), "{err}");
    }
}
