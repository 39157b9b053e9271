//! The REST API under `/api/v10`, as serenity's proxy mode reaches it: the routes, Discord's
//! error bodies, and the faults a test injects with `FakeDiscord::fail_next`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use serde_json::{Value, json};

use super::payloads;
use super::{Answer, ChannelMessage, Route, Shared};

/// Interactions must be acknowledged within this long.
const ACKNOWLEDGE_WINDOW: Duration = Duration::from_secs(3);
/// Interaction tokens work this long.
const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The routes under `/api/v10`, and Discord's 404 for any other path.
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
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
pub(super) async fn traffic(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
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
        object.insert("id".into(), payloads::snowflake().to_string().into());
        object.insert("application_id".into(), app.to_string().into());
        object.insert("guild_id".into(), guild.to_string().into());
        object.insert("version".into(), payloads::snowflake().to_string().into());
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
    let message = payloads::message(
        shared.application_id,
        &channel,
        20,
        content.as_deref().unwrap_or_default(),
        &files,
    );
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
    let message = payloads::message(
        shared.application_id,
        &channel.to_string(),
        0,
        &content,
        &files,
    );
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
        "user": payloads::bot_user(shared.application_id),
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
