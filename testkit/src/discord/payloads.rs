//! Discord's objects as it sends them (users, messages, interactions, guilds) and its
//! snowflake ids.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::{Interaction, Member};

/// A fresh Discord id.
pub(super) fn snowflake() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    // Discord snowflakes: milliseconds since 2015 << 22, plus a sequence.
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
        - 1_420_070_400_000;
    (ms << 22) | (SEQ.fetch_add(1, Ordering::Relaxed) & 0x3f_ffff)
}

/// The bot's user, `application_id` its id.
pub(super) fn bot_user(application_id: u64) -> Value {
    json!({
        "id": application_id.to_string(),
        "username": "Nebula",
        "global_name": null,
        "discriminator": "0",
        "avatar": null,
        "bot": true,
    })
}

/// A message the bot sent, as Discord answers with it: type 20 (a slash command's
/// response, sent through the application's webhook) or 0 (a channel message).
pub(super) fn message(
    application_id: u64,
    channel: &str,
    kind: u8,
    content: &str,
    files: &[(String, Vec<u8>)],
) -> Value {
    let attachments: Vec<Value> = files
        .iter()
        .map(|(name, bytes)| {
            let id = snowflake();
            let url = format!("https://cdn.discordapp.com/attachments/{channel}/{id}/{name}");
            json!({"id": id.to_string(), "filename": name, "size": bytes.len(),
                   "url": url, "proxy_url": url, "content_type": "image/png"})
        })
        .collect();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let mut message = json!({
        "id": snowflake().to_string(),
        "type": kind,
        "channel_id": channel,
        "author": bot_user(application_id),
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
        message["webhook_id"] = application_id.to_string().into();
        message["application_id"] = application_id.to_string().into();
    }
    message
}

/// A slash command `member` runs in `channel` of `guild` (an `INTERACTION_CREATE`'s data, type
/// 2): the interaction's id and token, and the payload.
pub(super) fn interaction(
    application_id: u64,
    guild: u64,
    channel: u64,
    member: &Member,
    name: &str,
    options: &Value,
    attachment_limit: u64,
) -> (Interaction, Value) {
    let id = snowflake().to_string();
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
    let permissions: u64 = if member.administrator {
        8
    } else {
        0x0004_0000_0000
    };
    let payload = json!({
        "id": id,
        "application_id": application_id.to_string(),
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
            "id": snowflake().to_string(),
            "name": name,
            "type": 1,
            "guild_id": guild.to_string(),
            "options": options,
        },
    });
    (Interaction { id, token }, payload)
}

/// The whole of `guild` as a `GUILD_CREATE` brings it to a bot that joins.
pub(super) fn guild_create(guild: u64) -> Value {
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
    data
}
