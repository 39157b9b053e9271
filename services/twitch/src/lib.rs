//! Twitch chat: joins the configured channels over IRC (twitch-irc), turns `!imagine …`,
//! `!status`, `!queue` and `!cancel` into chat commands, and replies in thread
//! (`reply-parent-msg-id`) within Twitch's send limits.
//!
//! twitch-irc reconnects and rejoins by itself (on `RECONNECT`, a lost connection or a missed
//! `PONG`); the address it connects to comes from [`Config::irc_url`] through
//! [`transport::Endpoint`], the same path for Twitch itself, a proxy or a local fake.

pub mod limiter;
pub mod transport;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bus::Bus;
use chat::reply::text;
use chat::{Incoming, Replier, Reply, ReplyError, parse_prefixed};
use common::Secret;
use events::chat::{CommandReceived, Platform};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use twitch_irc::login::StaticLoginCredentials;
use twitch_irc::message::{IRCMessage, IRCTags, ServerMessage};
use twitch_irc::{ClientConfig, TwitchIRCClient};

use crate::limiter::SendLimiter;
use crate::transport::{Endpoint, Transport};

type Client = TwitchIRCClient<Transport, StaticLoginCredentials>;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `ircs://irc.chat.twitch.tv:6697` (TLS) or `irc://host:port` (plain).
    pub irc_url: String,
    /// The bot account's login; empty: anonymous (reads chat, cannot reply).
    pub login: String,
    /// The bot account's OAuth token (without the `oauth:` prefix).
    pub token: Option<Secret>,
    /// Channels to join (logins, `#` optional); a list, or one string separated by commas
    /// (`NEBULA_CHAT__TWITCH__CHANNELS=chan_a,chan_b`).
    #[serde(deserialize_with = "list_or_commas")]
    pub channels: Vec<String>,
    /// What starts a command (`!imagine`).
    pub prefix: String,
    /// At most one progress message per job this often, in seconds.
    pub progress_every_secs: u64,
    /// What a Twitch chatter may ask for.
    pub limits: chat::ChatLimits,
}

fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Channels {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match Channels::deserialize(d)? {
        Channels::List(list) => list,
        Channels::Commas(text) => text
            .split(',')
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect(),
    })
}

impl Config {
    /// Whether the bot runs (some channel is configured).
    pub fn enabled(&self) -> bool {
        !self.channels.is_empty()
    }

    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(err) = self.irc_url.parse::<Endpoint>() {
            problems.push(format!("irc_url {:?}: {err}", self.irc_url));
        }
        if self.prefix.trim().is_empty() {
            problems.push("prefix is empty".to_owned());
        }
        if self
            .token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            problems.push("token is empty".to_owned());
        }
        problems.extend(self.limits.validate());
        problems
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            irc_url: "ircs://irc.chat.twitch.tv:6697".to_owned(),
            login: String::new(),
            token: None,
            channels: Vec::new(),
            prefix: "!".to_owned(),
            progress_every_secs: 20,
            limits: chat::ChatLimits::default(),
        }
    }
}

/// The Twitch side: the IRC client and the send limiter. Implements [`Replier`].
pub struct Twitch {
    client: Client,
    limiter: SendLimiter,
    anonymous: bool,
}

/// The loop that reads chat.
struct Listener {
    incoming: tokio::sync::mpsc::UnboundedReceiver<ServerMessage>,
    twitch: Arc<Twitch>,
    bus: Bus,
    prefix: String,
}

/// Starts the Twitch bot: joins the configured channels, hands every command to the intake,
/// and replies through the chat platform's follower.
pub async fn start(
    ctx: &service::Context,
    config: Config,
    chat: &chat::Config,
) -> anyhow::Result<()> {
    let (twitch, listener) = connect(&config, ctx.bus.clone())?;
    let cancel = ctx.cancel.clone();
    ctx.spawn_once("twitch", listener.run(cancel));
    chat::start_platform(
        ctx,
        chat,
        &config.limits,
        twitch,
        Duration::from_secs(config.progress_every_secs),
    )
    .await
}

/// Connects to chat and joins the configured channels.
fn connect(config: &Config, bus: Bus) -> anyhow::Result<(Arc<Twitch>, Listener)> {
    let endpoint: Endpoint = config
        .irc_url
        .parse()
        .map_err(|err| anyhow::anyhow!("twitch irc_url {:?}: {err}", config.irc_url))?;
    transport::set_endpoint(endpoint);
    let anonymous = config.login.is_empty() || config.token.is_none();
    let credentials = if anonymous {
        StaticLoginCredentials::anonymous()
    } else {
        StaticLoginCredentials::new(
            config.login.to_lowercase(),
            config.token.as_ref().map(|t| t.expose().to_owned()),
        )
    };
    let mut client_config = ClientConfig::new_simple(credentials);
    client_config.connect_timeout = Duration::from_secs(10);
    let (incoming, client) = Client::new(client_config);
    let channels: HashSet<String> = config
        .channels
        .iter()
        .map(|c| c.trim_start_matches('#').to_lowercase())
        .collect();
    client
        .set_wanted_channels(channels)
        .context("invalid twitch channel name")?;
    let twitch = Arc::new(Twitch {
        client,
        limiter: SendLimiter::twitch(),
        anonymous,
    });
    Ok((
        twitch.clone(),
        Listener {
            incoming,
            twitch,
            bus,
            prefix: config.prefix.clone(),
        },
    ))
}

impl Listener {
    /// Reads chat until `cancel` fires: commands go to the intake over the WORK stream.
    async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        loop {
            let message = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                message = self.incoming.recv() => match message {
                    Some(message) => message,
                    None => anyhow::bail!("the twitch client stopped"),
                },
            };
            match message {
                ServerMessage::Privmsg(privmsg) => {
                    let Some((command, args)) = parse_prefixed(&privmsg.message_text, &self.prefix)
                    else {
                        continue;
                    };
                    let roles = privmsg
                        .badges
                        .iter()
                        .map(|badge| badge.name.clone())
                        .filter(|name| {
                            ["broadcaster", "moderator", "vip", "subscriber"]
                                .contains(&name.as_str())
                        })
                        .collect();
                    let incoming = Incoming {
                        command: CommandReceived {
                            platform: Platform::Twitch,
                            scope: privmsg.channel_login.clone(),
                            channel: privmsg.channel_login.clone(),
                            user_id: privmsg.sender.id.clone(),
                            user_name: privmsg.sender.name.clone(),
                            message_id: privmsg.message_id.clone(),
                            command,
                            args,
                            options: Default::default(),
                            roles,
                        },
                        reply_token: None,
                    };
                    chat::hand_over(&self.bus, &incoming, &cancel).await;
                }
                ServerMessage::UserState(state) => {
                    let moderator = state
                        .badges
                        .iter()
                        .any(|b| b.name == "moderator" || b.name == "broadcaster");
                    self.twitch
                        .limiter
                        .set_moderator(&state.channel_login, moderator);
                }
                ServerMessage::Notice(notice) => {
                    tracing::warn!(channel = ?notice.channel_login, text = %notice.message_text, "twitch notice");
                }
                ServerMessage::Join(join) => {
                    tracing::info!(channel = %join.channel_login, "joined twitch channel");
                }
                _ => {}
            }
        }
    }
}

#[async_trait]
impl Replier for Twitch {
    fn platform(&self) -> Platform {
        Platform::Twitch
    }

    async fn send(
        &self,
        command: &CommandReceived,
        _reply_token: Option<&str>,
        reply: &Reply,
    ) -> Result<String, ReplyError> {
        if self.anonymous {
            return Err(ReplyError::permanent(
                "anonymous twitch login cannot send messages; set twitch.login and twitch.token",
            ));
        }
        let text = text(command, reply);
        // A reply in thread. Every reply starts with `@user`, so chat never reads it as a
        // command (twitch-irc's own `say_in_reply_to` guards with a leading ". " instead).
        let text = if text.starts_with('@') {
            text
        } else {
            format!("@{} {text}", command.user_name)
        };
        self.say(&command.channel, &text, Some(&command.message_id))
            .await?;
        Ok(text)
    }

    fn room(&self, channel: &str) -> Option<usize> {
        Some(self.limiter.room(channel))
    }

    fn can_post(&self) -> bool {
        !self.anonymous
    }

    async fn post(&self, channel: &str, text: &str) -> Result<(), ReplyError> {
        if self.anonymous {
            return Err(ReplyError::permanent(
                "anonymous twitch login cannot send messages",
            ));
        }
        self.say(channel, text, None).await
    }
}

impl Twitch {
    /// Sends `text` to `channel` within its send limit, in the thread of `parent` if given.
    async fn say(&self, channel: &str, text: &str, parent: Option<&str>) -> Result<(), ReplyError> {
        self.limiter.acquire(channel).await;
        let mut tags = IRCTags::new();
        if let Some(parent) = parent {
            tags.0
                .insert("reply-parent-msg-id".to_owned(), parent.to_owned());
        }
        let message = IRCMessage::new(
            tags,
            None,
            "PRIVMSG".to_owned(),
            vec![format!("#{channel}"), text.to_owned()],
        );
        self.client
            .send_message(message)
            .await
            .map_err(|err| ReplyError::retryable(format!("twitch: {err}")))
    }
}
