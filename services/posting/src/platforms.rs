//! One call per platform, as each documents it: Twitch Helix "Send Chat Announcement", YouTube
//! Data API `liveChatMessages.insert` (after `liveBroadcasts.list` finds the live chat when none
//! is configured), Kick public API `POST /chat`.

use common::Secret;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::PostFailure;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HelixConfig {
    pub api_url: String,
    /// The application's client id (Twitch developer console).
    pub client_id: Option<String>,
    /// A user token with `moderator:manage:announcements`.
    pub token: Option<Secret>,
    /// The channel to announce in (its user id).
    #[serde(deserialize_with = "id_text")]
    pub broadcaster_id: Option<String>,
    /// The token's user id (a moderator of the channel, or the broadcaster; default).
    #[serde(deserialize_with = "id_text")]
    pub moderator_id: Option<String>,
    /// `primary`, `blue`, `green`, `orange` or `purple`.
    pub color: String,
    /// With `client_secret`: a 401 gets a new `token` from `token_url`, and the call is tried
    /// once more.
    pub refresh_token: Option<Secret>,
    pub client_secret: Option<Secret>,
    pub token_url: String,
}

/// A numeric id, whether written as a string or (from an environment variable) a number.
fn id_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Id>::deserialize(d)?.map(|id| match id {
        Id::Text(text) => text,
        Id::Number(number) => number.to_string(),
    }))
}

impl Default for HelixConfig {
    fn default() -> Self {
        Self {
            api_url: "https://api.twitch.tv/helix".into(),
            client_id: None,
            token: None,
            broadcaster_id: None,
            moderator_id: None,
            color: "primary".into(),
            refresh_token: None,
            client_secret: None,
            token_url: "https://id.twitch.tv/oauth2/token".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct YoutubeConfig {
    pub api_url: String,
    /// An OAuth access token with the `youtube.force-ssl` scope.
    pub token: Option<Secret>,
    /// The live chat to post in; unset: the live chat of the channel's active broadcast.
    pub live_chat_id: Option<String>,
    /// With `client_id` and `client_secret`: a 401 gets a new `token` from `token_url` (access
    /// tokens live an hour), and the call is tried once more.
    pub refresh_token: Option<Secret>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub token_url: String,
}

impl Default for YoutubeConfig {
    fn default() -> Self {
        Self {
            api_url: "https://www.googleapis.com/youtube/v3".into(),
            token: None,
            live_chat_id: None,
            refresh_token: None,
            client_id: None,
            client_secret: None,
            token_url: "https://oauth2.googleapis.com/token".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KickConfig {
    pub api_url: String,
    /// A user access token with the `chat:write` scope.
    pub token: Option<Secret>,
    /// The channel to post in.
    pub broadcaster_user_id: Option<u64>,
    /// With `client_id` and `client_secret`: a 401 gets a new `token` from `token_url`, and the
    /// call is tried once more.
    pub refresh_token: Option<Secret>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub token_url: String,
}

impl Default for KickConfig {
    fn default() -> Self {
        Self {
            api_url: "https://api.kick.com/public/v1".into(),
            token: None,
            broadcaster_user_id: None,
            refresh_token: None,
            client_id: None,
            client_secret: None,
            token_url: "https://id.kick.com/oauth/token".into(),
        }
    }
}

/// What refreshing a platform's access token takes (the OAuth refresh-token grant).
#[derive(Debug, Clone)]
pub(crate) struct RefreshSpec {
    pub(crate) token_url: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret,
    /// The refresh token configured (the one the token store starts from).
    pub(crate) refresh_token: Secret,
}

fn refresh_spec(
    token_url: &str,
    client_id: &Option<String>,
    client_secret: &Option<Secret>,
    refresh_token: &Option<Secret>,
) -> Option<RefreshSpec> {
    Some(RefreshSpec {
        token_url: token_url.to_owned(),
        client_id: client_id.clone()?,
        client_secret: client_secret.clone()?,
        refresh_token: refresh_token.clone()?,
    })
}

impl HelixConfig {
    pub(crate) fn refresh(&self) -> Option<RefreshSpec> {
        refresh_spec(
            &self.token_url,
            &self.client_id,
            &self.client_secret,
            &self.refresh_token,
        )
    }
}

impl YoutubeConfig {
    pub(crate) fn refresh(&self) -> Option<RefreshSpec> {
        refresh_spec(
            &self.token_url,
            &self.client_id,
            &self.client_secret,
            &self.refresh_token,
        )
    }
}

impl KickConfig {
    pub(crate) fn refresh(&self) -> Option<RefreshSpec> {
        refresh_spec(
            &self.token_url,
            &self.client_id,
            &self.client_secret,
            &self.refresh_token,
        )
    }
}

pub(crate) fn not_configured(what: &str) -> PostFailure {
    PostFailure::permanent(format!("{what} is not configured"))
}

/// A failed call: 429 and 5xx (and `retryable_reason`) may pass, the rest will not.
fn refused(
    platform: &str,
    status: StatusCode,
    detail: &str,
    retryable_reason: bool,
) -> PostFailure {
    let message = format!("{platform} {}: {detail}", status.as_u16());
    let mut failure = if status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
        || retryable_reason
    {
        PostFailure::retryable(message)
    } else {
        PostFailure::permanent(message)
    };
    failure.unauthorized = status == StatusCode::UNAUTHORIZED;
    failure
}

/// A call that did not complete. One that never connected is tried again; one that timed out
/// may have been posted, so it is not repeated (a double post in public is worse than none).
fn unreachable(platform: &str, err: &reqwest::Error) -> PostFailure {
    if err.is_timeout() && !err.is_connect() {
        PostFailure::permanent(format!(
            "{platform} did not answer in time; not repeated, as it may have been posted: {err}"
        ))
    } else {
        PostFailure::retryable(format!("{platform} unreachable: {err}"))
    }
}

pub(crate) async fn body(response: reqwest::Response) -> Value {
    response.json::<Value>().await.unwrap_or(Value::Null)
}

/// Helix: `POST /chat/announcements?broadcaster_id=&moderator_id=` → 204.
pub(crate) async fn twitch(
    http: &reqwest::Client,
    config: &HelixConfig,
    token: &str,
    text: &str,
) -> Result<Option<String>, PostFailure> {
    let (Some(client_id), Some(broadcaster)) = (&config.client_id, &config.broadcaster_id) else {
        return Err(not_configured(
            "twitch (post.twitch.client_id and broadcaster_id)",
        ));
    };
    let moderator = config.moderator_id.as_ref().unwrap_or(broadcaster);
    let response = http
        .post(format!(
            "{}/chat/announcements",
            config.api_url.trim_end_matches('/')
        ))
        .query(&[("broadcaster_id", broadcaster), ("moderator_id", moderator)])
        .bearer_auth(token)
        .header("Client-Id", client_id)
        .json(&json!({ "message": text, "color": config.color }))
        .send()
        .await
        .map_err(|err| unreachable("twitch", &err))?;
    let status = response.status();
    if status.is_success() {
        return Ok(None); // Helix answers 204 and no id
    }
    let body = body(response).await;
    let detail = body["message"].as_str().unwrap_or("no message");
    Err(refused("twitch", status, detail, false))
}

/// YouTube: `POST /liveChat/messages?part=snippet` → the `liveChatMessage` (its id).
pub(crate) async fn youtube(
    http: &reqwest::Client,
    config: &YoutubeConfig,
    token: &str,
    text: &str,
) -> Result<Option<String>, PostFailure> {
    let base = config.api_url.trim_end_matches('/');
    let live_chat_id = match &config.live_chat_id {
        Some(id) => id.clone(),
        None => active_live_chat(http, base, token).await?,
    };
    let response = http
        .post(format!("{base}/liveChat/messages"))
        .query(&[("part", "snippet")])
        .bearer_auth(token)
        .json(&json!({
            "snippet": {
                "liveChatId": live_chat_id,
                "type": "textMessageEvent",
                "textMessageDetails": { "messageText": text },
            }
        }))
        .send()
        .await
        .map_err(|err| unreachable("youtube", &err))?;
    let status = response.status();
    let body = body(response).await;
    if status.is_success() {
        return Ok(body["id"].as_str().map(str::to_owned));
    }
    Err(youtube_error(status, &body))
}

/// The live chat of the channel's active broadcast.
async fn active_live_chat(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> Result<String, PostFailure> {
    let response = http
        .get(format!("{base}/liveBroadcasts"))
        .query(&[
            ("part", "snippet"),
            ("broadcastStatus", "active"),
            ("broadcastType", "all"),
        ])
        .bearer_auth(token)
        .send()
        .await
        .map_err(|err| unreachable("youtube", &err))?;
    let status = response.status();
    let body = body(response).await;
    if !status.is_success() {
        return Err(youtube_error(status, &body));
    }
    body["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find_map(|item| item["snippet"]["liveChatId"].as_str())
        })
        .map(str::to_owned)
        .ok_or_else(|| PostFailure::permanent("youtube: no active broadcast with a live chat"))
}

/// Google's error body: `{"error": {"code", "message", "errors": [{"reason", …}]}}`.
fn youtube_error(status: StatusCode, body: &Value) -> PostFailure {
    let reason = body["error"]["errors"][0]["reason"]
        .as_str()
        .unwrap_or("unknown");
    let message = body["error"]["message"].as_str().unwrap_or("no message");
    let rate_limited = matches!(reason, "rateLimitExceeded" | "userRateLimitExceeded");
    refused(
        "youtube",
        status,
        &format!("{reason}: {message}"),
        rate_limited,
    )
}

/// Kick: `POST /chat {broadcaster_user_id, content, type: "user"}` → `{data: {is_sent, message_id}}`.
pub(crate) async fn kick(
    http: &reqwest::Client,
    config: &KickConfig,
    token: &str,
    text: &str,
) -> Result<Option<String>, PostFailure> {
    let Some(broadcaster) = config.broadcaster_user_id else {
        return Err(not_configured("kick (post.kick.broadcaster_user_id)"));
    };
    let response = http
        .post(format!("{}/chat", config.api_url.trim_end_matches('/')))
        .bearer_auth(token)
        .json(&json!({
            "broadcaster_user_id": broadcaster,
            "content": text,
            "type": "user",
        }))
        .send()
        .await
        .map_err(|err| unreachable("kick", &err))?;
    let status = response.status();
    let body = body(response).await;
    if !status.is_success() {
        let detail = body["message"].as_str().unwrap_or("no message");
        return Err(refused("kick", status, detail, false));
    }
    if body["data"]["is_sent"] != true {
        return Err(PostFailure::permanent(
            "kick accepted the message but did not send it",
        ));
    }
    Ok(body["data"]["message_id"].as_str().map(str::to_owned))
}
