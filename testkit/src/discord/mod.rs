//! A fake Discord: the REST API (v10, as serenity reaches it through `HttpBuilder::proxy`) and
//! the websocket gateway, speaking what discord.com speaks for a bot that uses slash commands.
//!
//! Gateway (`ws://…/?v=10`, JSON text frames): `HELLO` (op 10) on connect; `IDENTIFY` (op 2)
//! → `READY` with the configured guilds (unavailable, as Discord sends them) and the
//! application (and `GUILD_CREATE` for a guild joined later, [`FakeDiscord::join_guild`]), or
//! close code 4004 for a wrong token; heartbeat (op 1) → ACK (op 11); `RESUME`
//! (op 6) → the dispatches the session missed after its `seq`, then `RESUMED` (op 9 for a
//! session it does not know). Sessions outlive their connections; dispatches carry a growing
//! `s` per session. A test makes users run slash commands with [`FakeDiscord::interact`] (an
//! `INTERACTION_CREATE`, type 2).
//!
//! REST, under `/api/v10`: `GET /gateway`; `PUT /applications/{app}/guilds/{guild}/commands`
//! (bulk overwrite, validated names and descriptions); `POST /interactions/{id}/{token}/callback`
//! (204; 404 code 10062 "Unknown interaction" after three seconds or for a wrong token, 400 code
//! 40060 when already acknowledged); `PATCH /webhooks/{app}/{token}/messages/@original` (JSON or
//! multipart with `payload_json` and `files[n]`; 404 code 10008 before the interaction was
//! acknowledged, 10015 for a token it never issued, 401 code 50027 for one older than 15
//! minutes (see [`FakeDiscord::expire`]), 400 code 50035 for content over 2000 characters, 413
//! code 40005 for files over the interaction's `attachment_size_limit`);
//! `PATCH /guilds/{guild}/members/@me`; `POST /channels/{channel}/messages`. Bot routes want
//! `Authorization: Bot <token>` (401 otherwise); unknown guilds get 403 code 50001 "Missing
//! Access". [`FakeDiscord::fail_next`] makes the next calls to a route answer 429 (Discord's
//! rate-limit body and headers), a 5xx (a plain-text body, as from the edge) or another 4xx.
//!
//! Here: the fake, the types tests use, and the state both sides share; `rest` serves the REST
//! routes, `gateway` the websocket sessions, `payloads` builds Discord's objects.

mod gateway;
mod payloads;
mod rest;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::any;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeDiscordOptions {
    /// The bot token the fake accepts.
    pub token: String,
    /// The guilds the bot is in.
    pub guilds: Vec<u64>,
}

/// A REST route a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /interactions/{id}/{token}/callback`
    Callback,
    /// `PATCH /webhooks/{app}/{token}/messages/@original` with a JSON body (text only)
    EditOriginal,
    /// The same with a multipart body (files attached)
    EditWithFiles,
    /// `PUT /applications/{app}/guilds/{guild}/commands`
    Commands,
    /// `PATCH /guilds/{guild}/members/@me`
    MemberMe,
}

/// A guild member who runs a slash command.
#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: u64,
    pub name: String,
    /// Role ids.
    pub roles: Vec<u64>,
    pub administrator: bool,
}

impl Member {
    pub fn new(user_id: u64, name: &str) -> Self {
        Self {
            user_id,
            name: name.to_owned(),
            roles: Vec::new(),
            administrator: false,
        }
    }
}

/// An interaction the fake dispatched.
#[derive(Debug, Clone)]
pub struct Interaction {
    pub id: String,
    pub token: String,
}

/// What the bot did with an interaction's response, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The interaction callback (type 5 is "deferred", 4 a message), with its content if any.
    Callback { kind: u64, content: Option<String> },
    /// An edit of the original response: its content, and the files attached (name, bytes).
    Edit {
        content: Option<String>,
        files: Vec<(String, Vec<u8>)>,
    },
}

struct Issued {
    id: String,
    created: Instant,
    acknowledged: bool,
    /// Aged past the token's 15 minutes by [`FakeDiscord::expire`].
    expired: bool,
    payload: Value,
}

/// A message the bot posted in a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelMessage {
    pub channel: u64,
    pub content: String,
    pub files: Vec<(String, Vec<u8>)>,
    /// `allowed_mentions.users`: whom it may ping.
    pub mentions: Vec<String>,
}

/// A gateway session: it outlives its connection, so a RESUME gets what was dispatched in
/// between (as Discord replays missed events).
struct Session {
    id: String,
    seq: u64,
    log: Vec<Value>,
    /// The connection it is attached to, while one is.
    tx: Option<mpsc::UnboundedSender<Value>>,
}

impl Session {
    /// Numbers, logs and (while connected) sends one dispatch.
    fn dispatch(&mut self, event: &str, data: Value) -> Value {
        self.seq += 1;
        let frame = json!({"op": 0, "s": self.seq, "t": event, "d": data});
        self.log.push(frame.clone());
        if let Some(tx) = &self.tx
            && tx.send(frame.clone()).is_err()
        {
            self.tx = None;
        }
        frame
    }

    fn connected(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| !tx.is_closed())
    }
}

#[derive(Default)]
struct Inner {
    interactions: HashMap<String, Issued>,
    responses: HashMap<String, Vec<Answer>>,
    channel_messages: Vec<ChannelMessage>,
    commands: HashMap<u64, Vec<Value>>,
    members: HashMap<u64, Value>,
    faults: VecDeque<(Route, u16)>,
    sessions: Vec<Session>,
    identified: u64,
    /// Guilds joined after READY ([`FakeDiscord::join_guild`]).
    joined: Vec<u64>,
    calls: Vec<(String, u16)>,
    /// `attachment_size_limit` of the interactions to come (Discord's default: 10 MiB).
    attachment_limit: Option<u64>,
}

struct Shared {
    options: FakeDiscordOptions,
    application_id: u64,
    addr: SocketAddr,
    inner: Mutex<Inner>,
    close: Mutex<Vec<CancellationToken>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn in_guild(&self, guild: u64) -> bool {
        self.options.guilds.contains(&guild) || self.lock().joined.contains(&guild)
    }
}

pub struct FakeDiscord {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl FakeDiscord {
    pub async fn start(options: FakeDiscordOptions) -> FakeDiscord {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake discord");
        let addr = listener.local_addr().expect("fake discord address");
        let shared = Arc::new(Shared {
            options,
            application_id: 1_100_000_000_000_000_001,
            addr,
            inner: Mutex::new(Inner::default()),
            close: Mutex::new(Vec::new()),
        });
        // Every call, the gateway's upgrade included, goes through `traffic` (recorded, or
        // answered by an injected fault).
        let app = rest::routes()
            .route("/", any(gateway::connect))
            .layer(DefaultBodyLimit::max(32 << 20))
            .layer(middleware::from_fn_with_state(
                shared.clone(),
                rest::traffic,
            ))
            .with_state(shared.clone());
        let shutdown = crate::serve(listener, app);
        FakeDiscord { shared, shutdown }
    }

    /// What `chat.discord.api_url` should be.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Gateway sessions attached to an open connection (they receive dispatches at once).
    pub fn connected(&self) -> usize {
        self.shared
            .lock()
            .sessions
            .iter()
            .filter(|session| session.connected())
            .count()
    }

    /// Sessions that identified and got `READY`.
    pub fn identified(&self) -> u64 {
        self.shared.lock().identified
    }

    /// The slash commands registered in `guild`, by name.
    pub fn commands(&self, guild: u64) -> Option<Vec<String>> {
        self.shared.lock().commands.get(&guild).map(|commands| {
            commands
                .iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
    }

    /// The registered definition of `name` in `guild`.
    pub fn command(&self, guild: u64, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .commands
            .get(&guild)?
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
    }

    /// The bot's member in `guild` as last changed (`nick`, `avatar`).
    pub fn member(&self, guild: u64) -> Option<Value> {
        self.shared.lock().members.get(&guild).cloned()
    }

    /// Every REST call so far: `METHOD /path` and the status it got.
    pub fn calls(&self) -> Vec<(String, u16)> {
        self.shared.lock().calls.clone()
    }

    /// The largest upload the interactions to come allow (a server with a lower boost tier).
    pub fn set_attachment_size_limit(&self, bytes: u64) {
        self.shared.lock().attachment_limit = Some(bytes);
    }

    /// The next `times` calls to `route` answer `status` (429, or a 5xx).
    pub fn fail_next(&self, route: Route, status: u16, times: usize) {
        let mut inner = self.shared.lock();
        for _ in 0..times {
            inner.faults.push_back((route, status));
        }
    }

    /// `member` runs `/name` with `options` (`{"prompt": "…", "seed": 7}`) in `channel` of
    /// `guild`: an `INTERACTION_CREATE` to every identified session.
    pub fn interact(
        &self,
        guild: u64,
        channel: u64,
        member: &Member,
        name: &str,
        options: Value,
    ) -> Interaction {
        let attachment_limit = self.shared.lock().attachment_limit.unwrap_or(10 << 20);
        let (interaction, payload) = payloads::interaction(
            self.shared.application_id,
            guild,
            channel,
            member,
            name,
            &options,
            attachment_limit,
        );
        self.shared.lock().interactions.insert(
            interaction.token.clone(),
            Issued {
                id: interaction.id.clone(),
                created: Instant::now(),
                acknowledged: false,
                expired: false,
                payload: payload.clone(),
            },
        );
        self.dispatch("INTERACTION_CREATE", payload);
        interaction
    }

    /// Ages `interaction` past its token's 15 minutes: edits of its response now get 401
    /// code 50027, as from Discord.
    pub fn expire(&self, interaction: &Interaction) {
        if let Some(issued) = self.shared.lock().interactions.get_mut(&interaction.token) {
            issued.expired = true;
        }
    }

    /// The bot is added to `guild` while it runs: a `GUILD_CREATE` (the whole guild, as Discord
    /// sends it to a bot that joins) to every session.
    pub fn join_guild(&self, guild: u64) {
        self.shared.lock().joined.push(guild);
        self.dispatch("GUILD_CREATE", payloads::guild_create(guild));
    }

    /// Messages the bot posted in channels, in order.
    pub fn channel_messages(&self) -> Vec<ChannelMessage> {
        self.shared.lock().channel_messages.clone()
    }

    /// Sends `interaction` again (a gateway that replays after a resume).
    pub fn redeliver(&self, interaction: &Interaction) {
        let payload = self.shared.lock().interactions[&interaction.token]
            .payload
            .clone();
        self.dispatch("INTERACTION_CREATE", payload);
    }

    /// What the bot did with `interaction`'s response, in order.
    pub fn responses(&self, interaction: &Interaction) -> Vec<Answer> {
        self.shared
            .lock()
            .responses
            .get(&interaction.token)
            .cloned()
            .unwrap_or_default()
    }

    /// Closes every gateway connection (code 1001, as Discord does when it moves a session).
    /// The sessions stay resumable: what is dispatched until a RESUME is replayed then.
    pub fn drop_sessions(&self) {
        for session in &mut self.shared.lock().sessions {
            session.tx = None;
        }
        for close in self
            .shared
            .close
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            close.cancel();
        }
    }

    fn dispatch(&self, event: &str, data: Value) {
        for session in &mut self.shared.lock().sessions {
            session.dispatch(event, data.clone());
        }
    }
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self.drop_sessions();
        self.shutdown.cancel();
    }
}
