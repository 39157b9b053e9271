//! Fakes of the APIs the Stream Bot posts through, on one local server, each under its real
//! path so only the base URL changes:
//!
//! - Twitch Helix, `/helix`: `POST /chat/announcements?broadcaster_id=&moderator_id=` with
//!   `Authorization: Bearer` and `Client-Id` → 204; 401 `{"error","status","message"}` for a
//!   wrong token ("Invalid OAuth token") or client id, 400 for a missing parameter or a message
//!   over 500 characters; 429 with `Ratelimit-*` headers on demand.
//! - YouTube Data API v3, `/youtube/v3`: `GET /liveBroadcasts?part=snippet&broadcastStatus=active`
//!   (the live broadcast and its `liveChatId`, or no items when off air) and
//!   `POST /liveChat/messages?part=snippet` → the `liveChatMessage`; Google's error body
//!   `{"error": {"code", "message", "errors": [{"reason"}], "status"}}` for `authError` (401),
//!   `liveChatEnded` / `liveChatNotFound` (403/404), `messageTextTooLong` past 200 characters
//!   (400), `backendError` (503 on demand).
//! - Kick public API, `/public/v1`: `POST /chat {broadcaster_user_id, content, type}` →
//!   `{"data": {"is_sent", "message_id"}, "message": "OK"}`; 401 `{"data": {}, "message":
//!   "Unauthorized"}`; 500 on demand.
//! - Their OAuth token endpoints (the refresh-token grant, form-encoded): Twitch
//!   `/id.twitch.tv/oauth2/token` and Kick `/id.kick.com/oauth/token` hand out a new refresh
//!   token each time and retire the old one; Google `/oauth2.googleapis.com/token` keeps it.
//!   [`FakeStream::expire_access_tokens`] makes every access token stale (the APIs answer 401).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Helix,
    Youtube,
    Kick,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Helix => "helix",
            Api::Youtube => "youtube",
            Api::Kick => "kick",
        }
    }
}

/// The credentials each fake accepts, and YouTube's broadcast state.
#[derive(Debug, Clone)]
pub struct FakeStreamOptions {
    pub helix_client_id: String,
    pub helix_token: String,
    pub youtube_token: String,
    /// `Some(live chat id)` while a broadcast is live.
    pub youtube_live_chat: Option<String>,
    pub kick_token: String,
    /// The client id YouTube's and Kick's token endpoints want (Twitch's is
    /// `helix_client_id`), and the secret all three want.
    pub client_id: String,
    pub client_secret: String,
}

impl Default for FakeStreamOptions {
    fn default() -> Self {
        Self {
            helix_client_id: "fake-client-id".into(),
            helix_token: "helix-token".into(),
            youtube_token: "ya29.fake-token".into(),
            youtube_live_chat: Some("Cg0KC2Zha2UtbGl2ZS1pZA".into()),
            kick_token: "kick-token".into(),
            client_id: "fake-client-id".into(),
            client_secret: "fake-client-secret".into(),
        }
    }
}

/// A message one of the fakes accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Posted {
    pub api: Api,
    /// Where it went: Helix's broadcaster id, YouTube's live chat id, Kick's broadcaster id.
    pub target: String,
    pub text: String,
}

#[derive(Default)]
struct Inner {
    posted: Vec<Posted>,
    calls: Vec<(Api, u16)>,
    faults: VecDeque<(Api, u16)>,
}

/// An API's tokens now: the access token it takes, the refresh token its endpoint takes.
#[derive(Debug, Clone)]
struct Credentials {
    access: String,
    refresh: String,
    refreshes: u32,
}

struct Shared {
    options: Mutex<FakeStreamOptions>,
    inner: Mutex<Inner>,
    credentials: Mutex<HashMap<Api, Credentials>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn options(&self) -> FakeStreamOptions {
        self.options
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A fault due for `api`, as that API would send it.
    fn fault(&self, api: Api) -> Option<Response> {
        let mut inner = self.lock();
        let at = inner.faults.iter().position(|(a, _)| *a == api)?;
        let (_, status) = inner.faults.remove(at)?;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Some(match api {
            Api::Helix => (
                status,
                [
                    ("ratelimit-limit", "800"),
                    ("ratelimit-remaining", "0"),
                    ("ratelimit-reset", "1767225600"),
                ],
                Json(json!({
                    "error": status.canonical_reason().unwrap_or("Error"),
                    "status": status.as_u16(),
                    "message": "",
                })),
            )
                .into_response(),
            Api::Youtube => google_error(
                status,
                "backendError",
                "The service is currently unavailable.",
            ),
            Api::Kick => (
                status,
                Json(json!({"data": {}, "message": "Internal Server Error"})),
            )
                .into_response(),
        })
    }

    fn credentials(&self) -> std::sync::MutexGuard<'_, HashMap<Api, Credentials>> {
        self.credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn access_ok(&self, api: Api, headers: &HeaderMap) -> bool {
        bearer(headers) == self.credentials().get(&api).map(|c| c.access.as_str())
    }

    fn record(&self, api: Api, status: StatusCode) {
        self.lock().calls.push((api, status.as_u16()));
    }
}

pub struct FakeStream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl FakeStream {
    pub async fn start(options: FakeStreamOptions) -> FakeStream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake stream apis");
        let addr = listener.local_addr().expect("fake stream apis address");
        let credentials = [
            (Api::Helix, options.helix_token.clone()),
            (Api::Youtube, options.youtube_token.clone()),
            (Api::Kick, options.kick_token.clone()),
        ]
        .into_iter()
        .map(|(api, access)| {
            let refresh = format!("{}-refresh-0", api.name());
            (
                api,
                Credentials {
                    access,
                    refresh,
                    refreshes: 0,
                },
            )
        })
        .collect();
        let shared = Arc::new(Shared {
            options: Mutex::new(options),
            inner: Mutex::new(Inner::default()),
            credentials: Mutex::new(credentials),
        });
        let app = Router::new()
            .route("/helix/chat/announcements", post(helix_announcement))
            .route("/youtube/v3/liveBroadcasts", get(youtube_broadcasts))
            .route("/youtube/v3/liveChat/messages", post(youtube_message))
            .route("/public/v1/chat", post(kick_chat))
            .route("/id.twitch.tv/oauth2/token", post(twitch_token))
            .route("/oauth2.googleapis.com/token", post(google_token))
            .route("/id.kick.com/oauth/token", post(kick_token))
            .with_state(shared.clone());
        let shutdown = crate::serve(listener, app);
        FakeStream {
            addr,
            shared,
            shutdown,
        }
    }

    /// `post.twitch.api_url`
    pub fn helix_url(&self) -> String {
        format!("http://{}/helix", self.addr)
    }

    /// `post.youtube.api_url`
    pub fn youtube_url(&self) -> String {
        format!("http://{}/youtube/v3", self.addr)
    }

    /// `post.kick.api_url`
    pub fn kick_url(&self) -> String {
        format!("http://{}/public/v1", self.addr)
    }

    /// The token endpoint of `api` (`post.<platform>.token_url`).
    pub fn token_url(&self, api: Api) -> String {
        let path = match api {
            Api::Helix => "id.twitch.tv/oauth2/token",
            Api::Youtube => "oauth2.googleapis.com/token",
            Api::Kick => "id.kick.com/oauth/token",
        };
        format!("http://{}/{path}", self.addr)
    }

    /// The refresh token `api`'s endpoint takes now (`<api>-refresh-0` at first).
    pub fn refresh_token(&self, api: Api) -> String {
        self.shared.credentials()[&api].refresh.clone()
    }

    /// Refreshes granted by `api`'s token endpoint.
    pub fn refreshes(&self, api: Api) -> u32 {
        self.shared.credentials()[&api].refreshes
    }

    /// Every access token goes stale (the hour is up): the APIs answer 401 until refreshed.
    pub fn expire_access_tokens(&self) {
        for (api, credentials) in self.shared.credentials().iter_mut() {
            credentials.access = format!("{}-access-{}", api.name(), uuid::Uuid::new_v4().simple());
        }
    }

    /// Every message accepted, in order.
    pub fn posted(&self) -> Vec<Posted> {
        self.shared.lock().posted.clone()
    }

    /// Every API call (announcement, broadcast list, live chat message, Kick chat) and its
    /// status.
    pub fn calls(&self) -> Vec<(Api, u16)> {
        self.shared.lock().calls.clone()
    }

    /// The next `times` calls to `api` answer `status` (429, or a 5xx).
    pub fn fail_next(&self, api: Api, status: u16, times: usize) {
        let mut inner = self.shared.lock();
        for _ in 0..times {
            inner.faults.push_back((api, status));
        }
    }

    /// Starts or ends the YouTube broadcast.
    pub fn set_youtube_live_chat(&self, live_chat: Option<&str>) {
        self.shared
            .options
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .youtube_live_chat = live_chat.map(str::to_owned);
    }
}

impl Drop for FakeStream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn helix_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "error": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "message": message,
        })),
    )
        .into_response()
}

async fn helix_announcement(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let response = helix(&shared, &query, &headers, &body);
    shared.record(Api::Helix, response.status());
    response
}

fn helix(
    shared: &Shared,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Some(fault) = shared.fault(Api::Helix) {
        return fault;
    }
    let options = shared.options();
    if !shared.access_ok(Api::Helix, headers) {
        return helix_error(StatusCode::UNAUTHORIZED, "Invalid OAuth token");
    }
    let client_id = headers.get("client-id").and_then(|v| v.to_str().ok());
    if client_id != Some(options.helix_client_id.as_str()) {
        return helix_error(
            StatusCode::UNAUTHORIZED,
            "Client ID and OAuth token do not match",
        );
    }
    for parameter in ["broadcaster_id", "moderator_id"] {
        if query.get(parameter).is_none_or(|v| v.is_empty()) {
            return helix_error(
                StatusCode::BAD_REQUEST,
                &format!("Missing required parameter \"{parameter}\""),
            );
        }
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return helix_error(StatusCode::BAD_REQUEST, "Malformed request body");
    };
    let message = body["message"].as_str().unwrap_or_default();
    if message.is_empty() || message.chars().count() > 500 {
        return helix_error(
            StatusCode::BAD_REQUEST,
            "The message field must be 1 to 500 characters",
        );
    }
    let color = body["color"].as_str().unwrap_or("primary");
    if !["blue", "green", "orange", "purple", "primary"].contains(&color) {
        return helix_error(StatusCode::BAD_REQUEST, "The color field is not valid");
    }
    shared.lock().posted.push(Posted {
        api: Api::Helix,
        target: query["broadcaster_id"].clone(),
        text: message.to_owned(),
    });
    StatusCode::NO_CONTENT.into_response()
}

fn google_error(status: StatusCode, reason: &str, message: &str) -> Response {
    let domain = if reason == "authError" || reason == "backendError" {
        "global"
    } else {
        "youtube.liveChat"
    };
    let state = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        _ => "UNAVAILABLE",
    };
    (
        status,
        Json(json!({
            "error": {
                "code": status.as_u16(),
                "message": message,
                "errors": [{"message": message, "domain": domain, "reason": reason}],
                "status": state,
            }
        })),
    )
        .into_response()
}

fn youtube_authorized(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    (!shared.access_ok(Api::Youtube, headers)).then(|| {
        google_error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "Request had invalid authentication credentials.",
        )
    })
}

async fn youtube_broadcasts(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let response = broadcasts(&shared, &query, &headers);
    shared.record(Api::Youtube, response.status());
    response
}

fn broadcasts(shared: &Shared, query: &HashMap<String, String>, headers: &HeaderMap) -> Response {
    if let Some(denied) = youtube_authorized(shared, headers) {
        return denied;
    }
    if query.get("part").map(String::as_str) != Some("snippet") {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalidPart",
            "The part parameter is required",
        );
    }
    let items: Vec<Value> = match shared.options().youtube_live_chat {
        Some(chat) if query.get("broadcastStatus").map(String::as_str) == Some("active") => {
            vec![json!({
                "kind": "youtube#liveBroadcast",
                "etag": "fake-etag",
                "id": "fake-broadcast",
                "snippet": {
                    "title": "Nebula live",
                    "liveChatId": chat,
                    "actualStartTime": "2026-12-01T00:00:00Z",
                },
            })]
        }
        _ => Vec::new(),
    };
    Json(json!({
        "kind": "youtube#liveBroadcastListResponse",
        "etag": "fake-etag",
        "pageInfo": {"totalResults": items.len(), "resultsPerPage": 5},
        "items": items,
    }))
    .into_response()
}

async fn youtube_message(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let response = youtube(&shared, &headers, &body);
    shared.record(Api::Youtube, response.status());
    response
}

fn youtube(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(fault) = shared.fault(Api::Youtube) {
        return fault;
    }
    if let Some(denied) = youtube_authorized(shared, headers) {
        return denied;
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return google_error(StatusCode::BAD_REQUEST, "parseError", "Parse Error");
    };
    let snippet = &body["snippet"];
    let chat = snippet["liveChatId"].as_str().unwrap_or_default();
    match shared.options().youtube_live_chat {
        Some(live) if live == chat => {}
        Some(_) | None if !chat.is_empty() => {
            return google_error(
                StatusCode::FORBIDDEN,
                "liveChatEnded",
                "The specified live chat is no longer live.",
            );
        }
        _ => {
            return google_error(
                StatusCode::NOT_FOUND,
                "liveChatNotFound",
                "The live chat that you are trying to retrieve cannot be found.",
            );
        }
    }
    let text = snippet["textMessageDetails"]["messageText"]
        .as_str()
        .unwrap_or_default();
    if snippet["type"] != "textMessageEvent" || text.is_empty() {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalidValue",
            "The message must be a textMessageEvent with text",
        );
    }
    if text.chars().count() > 200 {
        return google_error(
            StatusCode::BAD_REQUEST,
            "messageTextTooLong",
            "The message text is too long.",
        );
    }
    let id = format!("LCC.{}", uuid::Uuid::new_v4().simple());
    shared.lock().posted.push(Posted {
        api: Api::Youtube,
        target: chat.to_owned(),
        text: text.to_owned(),
    });
    Json(json!({
        "kind": "youtube#liveChatMessage",
        "etag": "fake-etag",
        "id": id,
        "snippet": {
            "type": "textMessageEvent",
            "liveChatId": chat,
            "authorChannelId": "UCfakeNebulaChannel",
            "publishedAt": chrono::Utc::now().to_rfc3339(),
            "hasDisplayContent": true,
            "displayMessage": text,
            "textMessageDetails": {"messageText": text},
        },
    }))
    .into_response()
}

async fn kick_chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let response = kick(&shared, &headers, &body);
    shared.record(Api::Kick, response.status());
    response
}

fn kick(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(fault) = shared.fault(Api::Kick) {
        return fault;
    }
    if !shared.access_ok(Api::Kick, headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"data": {}, "message": "Unauthorized"})),
        )
            .into_response();
    }
    let invalid = |message: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"data": {}, "message": message})),
        )
            .into_response()
    };
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return invalid("invalid request body");
    };
    let content = body["content"].as_str().unwrap_or_default();
    if content.is_empty() || content.chars().count() > 500 {
        return invalid("content must be 1 to 500 characters");
    }
    let target = match body["type"].as_str() {
        Some("user") => match body["broadcaster_user_id"].as_u64() {
            Some(id) => id.to_string(),
            None => return invalid("broadcaster_user_id is required for type user"),
        },
        Some("bot") => "bot".to_owned(),
        _ => return invalid("type must be user or bot"),
    };
    shared.lock().posted.push(Posted {
        api: Api::Kick,
        target,
        text: content.to_owned(),
    });
    Json(json!({
        "data": {"is_sent": true, "message_id": uuid::Uuid::new_v4().to_string()},
        "message": "OK",
    }))
    .into_response()
}

/// The refresh-token grant as `api`'s endpoint runs it: the new credentials, or why not.
fn grant(
    shared: &Shared,
    api: Api,
    form: &HashMap<String, String>,
    client_id: &str,
    rotates: bool,
) -> Result<Credentials, &'static str> {
    let options = shared.options();
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return Err("unsupported_grant_type");
    }
    if form.get("client_id").map(String::as_str) != Some(client_id)
        || form.get("client_secret") != Some(&options.client_secret)
    {
        return Err("invalid_client");
    }
    let mut all = shared.credentials();
    let credentials = all.get_mut(&api).expect("every api has credentials");
    if form.get("refresh_token") != Some(&credentials.refresh) {
        return Err("invalid_grant");
    }
    credentials.refreshes += 1;
    credentials.access = format!("{}-access-{}", api.name(), uuid::Uuid::new_v4().simple());
    if rotates {
        credentials.refresh = format!("{}-refresh-{}", api.name(), credentials.refreshes);
    }
    Ok(credentials.clone())
}

async fn twitch_token(
    State(shared): State<Arc<Shared>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let client_id = shared.options().helix_client_id;
    match grant(&shared, Api::Helix, &form, &client_id, true) {
        Ok(credentials) => Json(json!({
            "access_token": credentials.access,
            "refresh_token": credentials.refresh,
            "expires_in": 14_124,
            "scope": ["moderator:manage:announcements"],
            "token_type": "bearer",
        }))
        .into_response(),
        Err("invalid_client") => helix_error(StatusCode::FORBIDDEN, "invalid client secret"),
        Err(_) => helix_error(StatusCode::BAD_REQUEST, "Invalid refresh token"),
    }
}

fn oauth_error(error: &str, description: &str) -> Response {
    let status = if error == "invalid_client" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn google_token(
    State(shared): State<Arc<Shared>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let client_id = shared.options().client_id;
    match grant(&shared, Api::Youtube, &form, &client_id, false) {
        Ok(credentials) => Json(json!({
            "access_token": credentials.access,
            "expires_in": 3599,
            "scope": "https://www.googleapis.com/auth/youtube.force-ssl",
            "token_type": "Bearer",
        }))
        .into_response(),
        Err(error) => oauth_error(error, "Token has been expired or revoked."),
    }
}

async fn kick_token(
    State(shared): State<Arc<Shared>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let client_id = shared.options().client_id;
    match grant(&shared, Api::Kick, &form, &client_id, true) {
        Ok(credentials) => Json(json!({
            "access_token": credentials.access,
            "refresh_token": credentials.refresh,
            "expires_in": 7200,
            "scope": "chat:write",
            "token_type": "Bearer",
        }))
        .into_response(),
        Err(error) => oauth_error(error, "the refresh token is invalid or was already used"),
    }
}
