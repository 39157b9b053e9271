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

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, patch, post, put};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Interactions must be acknowledged within this long.
const ACKNOWLEDGE_WINDOW: Duration = Duration::from_secs(3);
/// Interaction tokens work this long.
const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

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

    fn snowflake(&self) -> u64 {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        // Discord snowflakes: milliseconds since 2015 << 22, plus a sequence.
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64
            - 1_420_070_400_000;
        (ms << 22) | (SEQ.fetch_add(1, Ordering::Relaxed) & 0x3f_ffff)
    }

    fn in_guild(&self, guild: u64) -> bool {
        self.options.guilds.contains(&guild) || self.lock().joined.contains(&guild)
    }

    /// A message the bot sent, as Discord answers with it: type 20 (a slash command's
    /// response, sent through the application's webhook) or 0 (a channel message).
    fn message(
        &self,
        channel: &str,
        kind: u8,
        content: &str,
        files: &[(String, Vec<u8>)],
    ) -> Value {
        let attachments: Vec<Value> = files
            .iter()
            .map(|(name, bytes)| {
                let id = self.snowflake();
                let url = format!("https://cdn.discordapp.com/attachments/{channel}/{id}/{name}");
                json!({"id": id.to_string(), "filename": name, "size": bytes.len(),
                       "url": url, "proxy_url": url, "content_type": "image/png"})
            })
            .collect();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
        let mut message = json!({
            "id": self.snowflake().to_string(),
            "type": kind,
            "channel_id": channel,
            "author": self.bot_user(),
            "content": content,
            "timestamp": now,
            "edited_timestamp": null,
            "tts": false,
            "mention_everyone": false,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": [],
            "pinned": false,
            "flags": 0,
        });
        if kind == 20 {
            message["edited_timestamp"] = now.into();
            message["webhook_id"] = self.application_id.to_string().into();
            message["application_id"] = self.application_id.to_string().into();
        }
        message
    }

    fn bot_user(&self) -> Value {
        json!({
            "id": self.application_id.to_string(),
            "username": "Nebula",
            "global_name": null,
            "discriminator": "0",
            "avatar": null,
            "bot": true,
        })
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
        let app = Router::new()
            .route("/", any(gateway))
            .route("/api/v10/gateway", get(gateway_url))
            .route(
                "/api/v10/applications/{app}/guilds/{guild}/commands",
                put(set_commands),
            )
            .route(
                "/api/v10/interactions/{id}/{token}/callback",
                post(callback),
            )
            .route(
                "/api/v10/webhooks/{app}/{token}/messages/@original",
                patch(edit_original),
            )
            .route("/api/v10/guilds/{guild}/members/@me", patch(member_me))
            .route(
                "/api/v10/channels/{channel}/messages",
                post(channel_message),
            )
            .fallback(|| async { discord_error(StatusCode::NOT_FOUND, 0, "404: Not Found") })
            .layer(DefaultBodyLimit::max(32 << 20))
            .layer(middleware::from_fn_with_state(shared.clone(), traffic))
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
        let id = self.shared.snowflake().to_string();
        let token = format!("aW50ZXJhY3Rpb24{}", uuid::Uuid::new_v4().simple());
        let options: Vec<Value> = options
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(name, value)| {
                        let kind = match value {
                            Value::String(_) => 3,
                            Value::Bool(_) => 5,
                            Value::Number(n) if n.is_i64() || n.is_u64() => 4,
                            _ => 10,
                        };
                        json!({"name": name, "type": kind, "value": value})
                    })
                    .collect()
            })
            .unwrap_or_default();
        let attachment_limit = self.shared.lock().attachment_limit.unwrap_or(10 << 20);
        let permissions: u64 = if member.administrator {
            8
        } else {
            0x0004_0000_0000
        };
        let payload = json!({
            "id": id,
            "application_id": self.shared.application_id.to_string(),
            "type": 2,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "guild_locale": "en-US",
            "guild_id": guild.to_string(),
            "channel_id": channel.to_string(),
            "channel": {"id": channel.to_string(), "type": 0, "name": "general",
                        "guild_id": guild.to_string(), "permissions": "2147483647"},
            "app_permissions": "2147483647",
            "entitlements": [],
            "authorizing_integration_owners": {"0": guild.to_string()},
            "context": 0,
            "attachment_size_limit": attachment_limit,
            "member": {
                "user": {"id": member.user_id.to_string(), "username": member.name.to_lowercase(),
                         "global_name": member.name, "discriminator": "0", "avatar": null},
                "nick": null,
                "avatar": null,
                "roles": member.roles.iter().map(u64::to_string).collect::<Vec<_>>(),
                "joined_at": "2026-01-01T00:00:00.000000+00:00",
                "premium_since": null,
                "deaf": false,
                "mute": false,
                "flags": 0,
                "pending": false,
                "permissions": permissions.to_string(),
            },
            "data": {
                "id": self.shared.snowflake().to_string(),
                "name": name,
                "type": 1,
                "guild_id": guild.to_string(),
                "options": options,
            },
        });
        self.shared.lock().interactions.insert(
            token.clone(),
            Issued {
                id: id.clone(),
                created: Instant::now(),
                acknowledged: false,
                expired: false,
                payload: payload.clone(),
            },
        );
        self.dispatch("INTERACTION_CREATE", payload);
        Interaction { id, token }
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
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
        let everyone = json!({
            "id": guild.to_string(), "name": "@everyone", "color": 0, "hoist": false,
            "icon": null, "unicode_emoji": null, "position": 0, "permissions": "2248473465835073",
            "managed": false, "mentionable": false, "flags": 0,
            "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null},
        });
        let channel = json!({
            "id": (guild + 1).to_string(), "type": 0, "guild_id": guild.to_string(),
            "name": "general", "position": 0, "permission_overwrites": [], "nsfw": false,
            "topic": null, "last_message_id": null, "parent_id": null, "rate_limit_per_user": 0,
            "flags": 0,
        });
        let mut data = json!({
            "id": guild.to_string(),
            "name": "A new server",
            "icon": null, "icon_hash": null, "splash": null, "discovery_splash": null,
            "owner_id": "4242",
            "afk_channel_id": null, "afk_timeout": 300,
            "widget_enabled": false, "widget_channel_id": null,
            "verification_level": 1, "default_message_notifications": 1,
            "explicit_content_filter": 2,
            "roles": [everyone], "emojis": [], "features": [], "mfa_level": 0,
            "application_id": null, "system_channel_id": (guild + 1).to_string(),
            "system_channel_flags": 0, "rules_channel_id": null,
        });
        let rest = json!({
            "max_presences": null, "max_members": 500_000, "vanity_url_code": null,
            "description": null, "banner": null, "premium_tier": 0,
            "premium_subscription_count": 0, "preferred_locale": "en-US",
            "public_updates_channel_id": null, "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50, "nsfw_level": 0, "stickers": [],
            "premium_progress_bar_enabled": false, "safety_alerts_channel_id": null,
        });
        // The fields only GUILD_CREATE carries.
        let create = json!({
            "joined_at": now, "large": false, "unavailable": false, "member_count": 2,
            "voice_states": [], "members": [], "channels": [channel], "threads": [],
            "presences": [], "stage_instances": [], "guild_scheduled_events": [],
            "soundboard_sounds": [], "lazy": true,
        });
        if let Some(object) = data.as_object_mut() {
            for part in [rest, create] {
                if let Value::Object(fields) = part {
                    object.extend(fields);
                }
            }
        }
        self.dispatch("GUILD_CREATE", data);
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

fn discord_error(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"message": message, "code": code})),
    )
        .into_response()
}

fn invalid_form(detail: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "message": "Invalid Form Body",
            "code": 50035,
            "errors": {"_errors": [{"code": "BASE_TYPE_INVALID", "message": detail}]},
        })),
    )
        .into_response()
}

/// Every REST call: recorded with the status it got, or answered by an injected fault.
async fn traffic(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let route = match method.as_str() {
        "POST" if path.ends_with("/callback") => Some(Route::Callback),
        "PATCH" if path.ends_with("/messages/@original") && multipart => Some(Route::EditWithFiles),
        "PATCH" if path.ends_with("/messages/@original") => Some(Route::EditOriginal),
        "PUT" if path.ends_with("/commands") => Some(Route::Commands),
        "PATCH" if path.ends_with("/members/@me") => Some(Route::MemberMe),
        _ => None,
    };
    let call = format!("{method} {path}");
    let fault = route.and_then(|route| {
        let mut inner = shared.lock();
        let at = inner.faults.iter().position(|(r, _)| *r == route)?;
        inner.faults.remove(at)
    });
    let response = match fault {
        Some((_, status)) => fault_response(status),
        None => next.run(request).await,
    };
    shared.lock().calls.push((call, response.status().as_u16()));
    response
}

/// A 429 as Discord's rate limiter sends it, a 5xx as the edge in front of it does, another
/// 4xx as Discord's JSON error.
fn fault_response(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        return (
            status,
            "upstream connect error or disconnect/reset before headers",
        )
            .into_response();
    }
    if status != StatusCode::TOO_MANY_REQUESTS {
        let message = format!(
            "{}: {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        );
        return discord_error(status, 0, &message);
    }
    (
        status,
        [
            ("retry-after", "1"),
            ("x-ratelimit-scope", "user"),
            ("x-ratelimit-global", "false"),
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "0.250"),
        ],
        axum::Json(json!({
            "message": "You are being rate limited.",
            "retry_after": 0.25,
            "global": false,
        })),
    )
        .into_response()
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let expected = format!("Bot {}", shared.options.token);
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|given| given == expected)
}

fn unauthorized() -> Response {
    discord_error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized")
}

async fn gateway_url(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    axum::Json(json!({"url": format!("ws://{}", shared.addr)})).into_response()
}

async fn set_commands(
    State(shared): State<Arc<Shared>>,
    Path((app, guild)): Path<(u64, u64)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    if app != shared.application_id || !shared.in_guild(guild) {
        return discord_error(StatusCode::FORBIDDEN, 50001, "Missing Access");
    }
    let Ok(Value::Array(commands)) = serde_json::from_slice::<Value>(&body) else {
        return invalid_form("body must be an array of commands");
    };
    let mut stored = Vec::new();
    for mut command in commands {
        let name = command["name"].as_str().unwrap_or_default();
        let description = command["description"].as_str().unwrap_or_default();
        let name_ok = (1..=32).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !name_ok || !(1..=100).contains(&description.chars().count()) {
            return invalid_form(&format!("invalid command {name:?}"));
        }
        let Some(object) = command.as_object_mut() else {
            return invalid_form("a command must be an object");
        };
        object.insert("id".into(), shared.snowflake().to_string().into());
        object.insert("application_id".into(), app.to_string().into());
        object.insert("guild_id".into(), guild.to_string().into());
        object.insert("version".into(), shared.snowflake().to_string().into());
        object.entry("type").or_insert(1.into());
        object.entry("options").or_insert(json!([]));
        object
            .entry("default_member_permissions")
            .or_insert(Value::Null);
        object.entry("nsfw").or_insert(false.into());
        stored.push(command);
    }
    shared.lock().commands.insert(guild, stored.clone());
    axum::Json(Value::Array(stored)).into_response()
}

async fn callback(
    State(shared): State<Arc<Shared>>,
    Path((id, token)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return invalid_form("body must be JSON");
    };
    let Some(kind) = body["type"].as_u64() else {
        return invalid_form("type is required");
    };
    let mut inner = shared.lock();
    let Some(issued) = inner.interactions.get_mut(&token).filter(|i| i.id == id) else {
        return discord_error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
    };
    if issued.acknowledged {
        return discord_error(
            StatusCode::BAD_REQUEST,
            40060,
            "Interaction has already been acknowledged.",
        );
    }
    if issued.created.elapsed() > ACKNOWLEDGE_WINDOW {
        return discord_error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
    }
    issued.acknowledged = true;
    let content = body["data"]["content"].as_str().map(str::to_owned);
    inner
        .responses
        .entry(token)
        .or_default()
        .push(Answer::Callback { kind, content });
    StatusCode::NO_CONTENT.into_response()
}

async fn edit_original(
    State(shared): State<Arc<Shared>>,
    Path((app, token)): Path<(u64, String)>,
    request: Request,
) -> Response {
    let (payload, files) = match payload_and_files(request, &shared).await {
        Ok(parts) => parts,
        Err(response) => return response,
    };
    let mut inner = shared.lock();
    let issued = inner
        .interactions
        .get(&token)
        .filter(|_| app == shared.application_id);
    let Some(issued) = issued else {
        return discord_error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
    };
    if issued.expired || issued.created.elapsed() >= TOKEN_LIFETIME {
        return discord_error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
    }
    if !issued.acknowledged {
        return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
    }
    let channel = issued.payload["channel_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let limit = issued.payload["attachment_size_limit"]
        .as_u64()
        .unwrap_or(0);
    if files
        .iter()
        .map(|(_, bytes)| bytes.len() as u64)
        .sum::<u64>()
        > limit
    {
        return discord_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            40005,
            "Request entity too large",
        );
    }
    let content = payload["content"].as_str().map(str::to_owned);
    if content.as_ref().is_some_and(|c| c.chars().count() > 2000) {
        return invalid_form("content must be 2000 or fewer in length");
    }
    let message = shared.message(&channel, 20, content.as_deref().unwrap_or_default(), &files);
    inner
        .responses
        .entry(token)
        .or_default()
        .push(Answer::Edit { content, files });
    axum::Json(message).into_response()
}

/// A body as Discord takes it: JSON, or multipart with `payload_json` and `files[n]`.
async fn payload_and_files(
    request: Request,
    shared: &Arc<Shared>,
) -> Result<(Value, Vec<(String, Vec<u8>)>), Response> {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if multipart {
        return read_multipart(request, shared)
            .await
            .ok_or_else(|| invalid_form("bad multipart body"));
    }
    let Ok(body) = axum::body::to_bytes(request.into_body(), 1 << 20).await else {
        return Err(invalid_form("body too large"));
    };
    serde_json::from_slice::<Value>(&body)
        .map(|payload| (payload, Vec::new()))
        .map_err(|_| invalid_form("body must be JSON"))
}

/// `POST /channels/{channel}/messages` — the bot posts in a guild channel.
async fn channel_message(
    State(shared): State<Arc<Shared>>,
    Path(channel): Path<u64>,
    request: Request,
) -> Response {
    if !authorized(&shared, request.headers()) {
        return unauthorized();
    }
    let (payload, files) = match payload_and_files(request, &shared).await {
        Ok(parts) => parts,
        Err(response) => return response,
    };
    let content = payload["content"].as_str().unwrap_or_default().to_owned();
    if content.is_empty() && files.is_empty() {
        return discord_error(
            StatusCode::BAD_REQUEST,
            50006,
            "Cannot send an empty message",
        );
    }
    if content.chars().count() > 2000 {
        return invalid_form("content must be 2000 or fewer in length");
    }
    if files.iter().map(|(_, bytes)| bytes.len()).sum::<usize>() > 10 << 20 {
        return discord_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            40005,
            "Request entity too large",
        );
    }
    let mentions = payload["allowed_mentions"]["users"]
        .as_array()
        .map(|users| {
            users
                .iter()
                .filter_map(|u| {
                    u.as_str()
                        .map(str::to_owned)
                        .or_else(|| u.as_u64().map(|n| n.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    let message = shared.message(&channel.to_string(), 0, &content, &files);
    shared.lock().channel_messages.push(ChannelMessage {
        channel,
        content,
        files,
        mentions,
    });
    axum::Json(message).into_response()
}

/// `payload_json` and the `files[n]` parts (name, bytes) of a multipart body.
async fn read_multipart(
    request: Request,
    shared: &Arc<Shared>,
) -> Option<(Value, Vec<(String, Vec<u8>)>)> {
    let mut multipart = Multipart::from_request(request, shared).await.ok()?;
    let mut payload = Value::Null;
    let mut files = Vec::new();
    while let Some(field) = multipart.next_field().await.ok()? {
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let bytes = field.bytes().await.ok()?;
        if name == "payload_json" {
            payload = serde_json::from_slice(&bytes).ok()?;
        } else if name.starts_with("files[") {
            files.push((filename.unwrap_or(name), bytes.to_vec()));
        }
    }
    Some((payload, files))
}

async fn member_me(
    State(shared): State<Arc<Shared>>,
    Path(guild): Path<u64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    if !shared.in_guild(guild) {
        return discord_error(StatusCode::FORBIDDEN, 50001, "Missing Access");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return invalid_form("body must be JSON");
    };
    if let Some(nick) = body["nick"].as_str()
        && !(1..=32).contains(&nick.chars().count())
    {
        return invalid_form("nick must be 1 to 32 characters");
    }
    if let Some(avatar) = body["avatar"].as_str()
        && !avatar.starts_with("data:image/")
    {
        return invalid_form("avatar must be image data");
    }
    shared.lock().members.insert(guild, body.clone());
    let avatar_hash = body["avatar"]
        .as_str()
        .map(|data| format!("{:032x}", crc32fast::hash(data.as_bytes())));
    axum::Json(json!({
        "user": shared.bot_user(),
        "nick": body["nick"],
        "avatar": avatar_hash,
        "roles": [],
        "joined_at": "2026-01-01T00:00:00.000000+00:00",
        "deaf": false,
        "mute": false,
        "flags": 0,
    }))
    .into_response()
}

async fn gateway(State(shared): State<Arc<Shared>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| session(socket, shared))
}

/// One gateway connection: HELLO, then IDENTIFY (a new session, READY) or RESUME (the session
/// named, its missed dispatches, RESUMED; op 9 for one it does not know), heartbeats, and the
/// session's dispatches.
async fn session(mut socket: WebSocket, shared: Arc<Shared>) {
    let close = CancellationToken::new();
    shared
        .close
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(close.clone());
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": 41250}});
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let close_with = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        tokio::select! {
            () = close.cancelled() => {
                let _ = socket.send(close_with(1001, "going away")).await;
                return;
            }
            frame = rx.recv() => {
                let Some(frame) = frame else { return };
                if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                    return;
                }
            }
            frame = socket.recv() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                };
                let Ok(payload) = serde_json::from_str::<Value>(&text) else {
                    let _ = socket.send(close_with(4002, "Error while decoding payload.")).await;
                    return;
                };
                let frames = match payload["op"].as_u64() {
                    Some(1) => vec![json!({"op": 11, "s": null, "t": null, "d": null})],
                    Some(op @ (2 | 6)) => {
                        let token = payload["d"]["token"].as_str().unwrap_or_default();
                        if token.trim_start_matches("Bot ") != shared.options.token {
                            let _ = socket.send(close_with(4004, "Authentication failed.")).await;
                            return;
                        }
                        if op == 2 {
                            vec![identify(&shared, tx.clone())]
                        } else {
                            resume(&shared, &payload["d"], tx.clone())
                        }
                    }
                    _ => Vec::new(),
                };
                for frame in frames {
                    if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// A new session attached to `tx`: its READY.
fn identify(shared: &Shared, tx: mpsc::UnboundedSender<Value>) -> Value {
    let guilds: Vec<Value> = shared
        .options
        .guilds
        .iter()
        .map(|g| json!({"id": g.to_string(), "unavailable": true}))
        .collect();
    let mut session = Session {
        id: uuid::Uuid::new_v4().simple().to_string(),
        seq: 0,
        log: Vec::new(),
        tx: None, // READY goes out on this connection first, then the rest
    };
    let ready = session.dispatch(
        "READY",
        json!({
            "v": 10,
            "user": shared.bot_user(),
            "guilds": guilds,
            "session_id": session.id,
            "resume_gateway_url": format!("ws://{}", shared.addr),
            "shard": [0, 1],
            "application": {"id": shared.application_id.to_string(), "flags": 0},
            "private_channels": [],
            "presences": [],
            "relationships": [],
        }),
    );
    session.tx = Some(tx);
    let mut inner = shared.lock();
    inner.identified += 1;
    inner.sessions.push(session);
    ready
}

/// The session named in a RESUME, attached to `tx`: what it missed after `seq`, then RESUMED;
/// op 9 (not resumable) for a session it does not know.
fn resume(shared: &Shared, resume: &Value, tx: mpsc::UnboundedSender<Value>) -> Vec<Value> {
    let id = resume["session_id"].as_str().unwrap_or_default();
    let after = resume["seq"].as_u64().unwrap_or(0);
    let mut inner = shared.lock();
    let Some(session) = inner.sessions.iter_mut().find(|s| s.id == id) else {
        return vec![json!({"op": 9, "s": null, "t": null, "d": false})];
    };
    let mut frames: Vec<Value> = session
        .log
        .iter()
        .filter(|frame| frame["s"].as_u64().is_some_and(|s| s > after))
        .cloned()
        .collect();
    session.tx = None;
    frames.push(session.dispatch("RESUMED", json!({})));
    session.tx = Some(tx);
    frames
}
