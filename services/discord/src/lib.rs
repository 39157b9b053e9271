//! Discord: a bot (serenity) that registers `/imagine`, `/status`, `/queue` and `/cancel` in
//! every guild it is in, acknowledges each interaction within Discord's three seconds (a
//! deferred response), hands the command to the chat intake, and then edits that response with
//! throttled progress and finally the image, attached.
//!
//! Each guild's settings (`chat_settings` aggregate, edited through REST and the dashboard)
//! decide which commands are registered there and the bot's nickname and avatar in it; a change
//! is applied as soon as it is recorded ([`guilds`]).
//!
//! Endpoints: the REST API goes to [`Config::api_url`] when it is set (serenity's proxy
//! mode, in which serenity's own rate limiter is off, so a 429 comes back to Nebula, which
//! retries), and the gateway URL comes from `GET /gateway` there, or from
//! [`Config::gateway_url`]. The same code path serves Discord, a proxy or a local fake.

mod guilds;
mod interaction;

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use bus::Bus;
use chat::{Replier, Reply, ReplyError};
use common::{Backoff, Secret};
use events::chat::{CommandReceived, Platform};
use serde::Deserialize;
use serenity::all::{
    ChannelId, CreateAllowedMentions, CreateAttachment, CreateMessage, EditInteractionResponse,
    GatewayIntents, Http, HttpBuilder, UserId,
};
use serenity::builder::Builder as _;

use crate::guilds::Guilds;
use crate::interaction::Handler;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The bot token (Developer Portal → Bot); the bot runs when it is set.
    pub token: Option<Secret>,
    /// Where the REST API is, when not `https://discord.com` (a proxy such as
    /// twilight-http-proxy, or a local fake): requests go to `<api_url>/api/v10/…`.
    pub api_url: Option<String>,
    /// The gateway websocket URL, when not the one `GET /gateway` names.
    pub gateway_url: Option<String>,
    /// At most one progress edit per job this often, in seconds (Discord allows about five
    /// edits per five seconds on one response).
    pub progress_every_secs: u64,
    /// What a Discord member may ask for.
    pub limits: chat::ChatLimits,
}

impl Config {
    /// Whether the bot runs (a token is set).
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self
            .token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            problems.push("token is empty".to_owned());
        }
        if let Some(url) = &self.api_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!("api_url must be an http(s) url, got {url:?}"));
        }
        if let Some(url) = &self.gateway_url
            && !(url.starts_with("ws://") || url.starts_with("wss://"))
        {
            problems.push(format!("gateway_url must be a ws(s) url, got {url:?}"));
        }
        problems.extend(self.limits.validate());
        problems
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            token: None,
            api_url: None,
            gateway_url: None,
            progress_every_secs: 3,
            limits: chat::ChatLimits::default(),
        }
    }
}

/// The Discord side of replies: edits the deferred response of an interaction.
pub struct Discord {
    http: Arc<Http>,
}

/// Starts the Discord bot: prepares the client (asks the API for the gateway URL), connects
/// and stays connected (serenity resumes or reconnects by itself), applies every guild settings
/// change as it is recorded, and replies through the chat platform's follower.
pub async fn start(
    ctx: &service::Context,
    config: Config,
    chat: &chat::Config,
) -> anyhow::Result<()> {
    let token = config
        .token
        .as_ref()
        .map(Secret::expose)
        .filter(|t| !t.trim().is_empty())
        .context("chat.discord.token is not set")?;
    let mut http = HttpBuilder::new(token);
    if let Some(api_url) = &config.api_url {
        // serenity sends to a proxy only with its rate limiter off.
        http = http
            .proxy(api_url.trim_end_matches('/'))
            .ratelimiter_disabled(true);
    }
    let guilds = Arc::new(Guilds::new(ctx.bus.clone()));
    let handler = Handler::new(ctx.bus.clone(), guilds.clone(), ctx.cancel.clone());
    let mut client =
        serenity::client::ClientBuilder::new_with_http(http.build(), GatewayIntents::GUILDS)
            .event_handler(handler)
            .await
            .context("failed to prepare the discord client")?;
    if let Some(gateway_url) = &config.gateway_url {
        *client.ws_url.lock().await = gateway_url.clone();
    }
    let discord = Arc::new(Discord {
        http: client.http.clone(),
    });
    let http = client.http.clone();
    ctx.spawn("discord-settings", move |cancel| {
        Arc::clone(&guilds).follow_settings(http.clone(), cancel)
    });
    let cancel = ctx.cancel.clone();
    ctx.spawn_once("discord", async move {
        let shards = client.shard_manager.clone();
        tokio::select! {
            () = cancel.cancelled() => {
                shards.shutdown_all().await;
                Ok(())
            }
            ended = client.start() => {
                // A refused token (close 4004) and the like: no restart mends them.
                ended.context("the discord connection ended")?;
                anyhow::bail!("the discord connection ended")
            }
        }
    });
    chat::start_platform(
        ctx,
        chat,
        &config.limits,
        discord,
        std::time::Duration::from_secs(config.progress_every_secs),
    )
    .await
}

/// A Discord call, tried again while the failure may pass (a 429, a 5xx, a lost connection)
/// and there is time before `deadline`: waits of 100 ms, 200 ms, 400 ms … between tries, and
/// no try outlives the deadline.
pub(crate) async fn retry_until<T, F, Fut>(
    deadline: tokio::time::Instant,
    mut call: F,
) -> Result<T, ReplyError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = serenity::Result<T>>,
{
    // No cap: the deadline bounds the waits.
    let mut backoff = Backoff::new(
        std::time::Duration::from_millis(100),
        std::time::Duration::MAX,
    );
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let err = match tokio::time::timeout(left, call()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => classify(err),
            Err(_) => return Err(ReplyError::retryable("discord did not answer in time")),
        };
        if !err.retryable || tokio::time::Instant::now() + backoff.peek() >= deadline {
            return Err(err);
        }
        tracing::info!(error = %err, "trying discord again");
        backoff.sleep().await;
    }
}

/// Counts and logs a Discord call that failed (`nebula_discord_errors_total{op}`).
pub(crate) fn failed(bus: &Bus, op: &'static str, error: &str) {
    bus.metrics()
        .add("nebula_discord_errors_total", &[("op", op)], 1.0);
    tracing::warn!(op, error, "a discord call failed");
}

/// Whether a failed Discord call may work later: rate limits, server errors and lost
/// connections may; a bad request, an expired token or missing permissions will not.
pub(crate) fn classify(err: serenity::Error) -> ReplyError {
    use serenity::http::HttpError;
    match &err {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
            let status = response.status_code.as_u16();
            let message = format!(
                "discord {status} (code {}): {}",
                response.error.code, response.error.message
            );
            if status == 429 || status >= 500 {
                ReplyError::retryable(message)
            } else {
                ReplyError::permanent(message)
            }
        }
        serenity::Error::Model(_) | serenity::Error::Json(_) => {
            ReplyError::permanent(format!("discord: {err}"))
        }
        _ => ReplyError::retryable(format!("discord: {err}")),
    }
}

/// The largest image attached to a reply (Discord takes 10 MiB from bots by default); a larger
/// one is shared by its link only.
const MAX_ATTACHMENT: usize = 8 << 20;

/// Discord's limit on a message's content, in characters.
const MAX_CONTENT: usize = 2000;

/// The text of a reply on Discord (the response hangs under the user's command already, so it
/// does not name them), at most 2000 characters.
pub fn text(reply: &Reply) -> String {
    let text = chat::reply::describe(reply);
    if text.chars().count() <= MAX_CONTENT {
        return text;
    }
    let mut short: String = text.chars().take(MAX_CONTENT - 1).collect();
    short.push('…');
    short
}

/// Where a reply goes: the interaction's own response, or (once its token has expired, after
/// 15 minutes, or when the interaction could not be acknowledged) a message in the channel
/// that names the user.
enum Target<'a> {
    Original(&'a str),
    Channel(ChannelId, UserId),
}

/// Discord's codes for a response that cannot be edited: the token expired (50027) or is
/// unknown (10015), or there is no response because the interaction was never acknowledged
/// (10008).
fn response_gone(err: &serenity::Error) -> bool {
    matches!(
        err,
        serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(response))
            if matches!(response.error.code, 50027 | 10015 | 10008)
    )
}

fn too_large(err: &serenity::Error) -> bool {
    matches!(
        err,
        serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(response))
            if response.status_code.as_u16() == 413 || response.error.code == 40005
    )
}

impl Discord {
    /// The image to attach, when the reply has one small enough.
    async fn attachment(&self, reply: &Reply) -> Result<Option<CreateAttachment>, ReplyError> {
        let Reply::Image { path, job_id, .. } = reply else {
            return Ok(None);
        };
        let unreadable = |err: std::io::Error| {
            ReplyError::permanent(format!("the image {} is unreadable: {err}", path.display()))
        };
        // Too large to attach: the link alone (it is in the text), and the file is not read.
        let length = tokio::fs::metadata(path).await.map_err(unreadable)?.len();
        if length > MAX_ATTACHMENT as u64 {
            return Ok(None);
        }
        let bytes = tokio::fs::read(path).await.map_err(unreadable)?;
        Ok(Some(CreateAttachment::bytes(
            bytes,
            format!("{job_id}.png"),
        )))
    }

    /// Sends `text` (and `file`) to `target`; when Discord refuses the file as too large for
    /// this server (413, code 40005), the text alone, which carries the link.
    async fn deliver(
        &self,
        target: &Target<'_>,
        text: &str,
        file: Option<CreateAttachment>,
    ) -> serenity::Result<()> {
        let sent = self.post(target, text, file.clone()).await;
        match sent {
            Err(err) if file.is_some() && too_large(&err) => self.post(target, text, None).await,
            other => other,
        }
    }

    async fn post(
        &self,
        target: &Target<'_>,
        text: &str,
        file: Option<CreateAttachment>,
    ) -> serenity::Result<()> {
        match target {
            Target::Original(token) => {
                let mut edit = EditInteractionResponse::new().content(text);
                if let Some(file) = file {
                    edit = edit.new_attachment(file);
                }
                edit.execute(&*self.http, token).await.map(|_| ())
            }
            Target::Channel(channel, user) => {
                let mut message = CreateMessage::new()
                    .content(text)
                    .allowed_mentions(CreateAllowedMentions::new().users([*user]));
                if let Some(file) = file {
                    message = message.add_file(file);
                }
                channel.send_message(&*self.http, message).await.map(|_| ())
            }
        }
    }

    /// The channel fallback for `command`, when the reply is worth a message there (progress
    /// is not: it would only be noise in the channel).
    fn channel_of(command: &CommandReceived, reply: &Reply) -> Result<Target<'static>, ReplyError> {
        if matches!(reply, Reply::Progress { .. }) {
            return Err(ReplyError::permanent(
                "the interaction's response cannot be edited; progress is not posted to the channel",
            ));
        }
        let channel = command.channel.parse::<u64>().ok().filter(|id| *id != 0);
        let user = command.user_id.parse::<u64>().ok().filter(|id| *id != 0);
        match (channel, user) {
            (Some(channel), Some(user)) => {
                Ok(Target::Channel(ChannelId::new(channel), UserId::new(user)))
            }
            _ => Err(ReplyError::permanent(
                "the interaction expired and its channel or user id is not a Discord id",
            )),
        }
    }
}

#[async_trait]
impl Replier for Discord {
    fn platform(&self) -> Platform {
        Platform::Discord
    }

    async fn send(
        &self,
        command: &CommandReceived,
        reply_token: Option<&str>,
        reply: &Reply,
    ) -> Result<String, ReplyError> {
        let text = text(reply);
        let file = self.attachment(reply).await?;
        if let Some(token) = reply_token {
            match self
                .deliver(&Target::Original(token), &text, file.clone())
                .await
            {
                Ok(()) => return Ok(text),
                Err(err) if response_gone(&err) => {} // on to the channel
                Err(err) => return Err(classify(err)),
            }
        }
        let target = Self::channel_of(command, reply)?;
        let text = format!("<@{}> {text}", command.user_id);
        self.deliver(&target, &text, file).await.map_err(classify)?;
        Ok(text)
    }
}
