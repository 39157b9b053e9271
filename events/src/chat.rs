//! Chat triggers: commands typed in Discord or Twitch, what they caused, and the per-server
//! settings that decide who may use which command.
//!
//! A chat command is its own aggregate, keyed by platform and the platform's message id
//! ([`command_id`]): a message delivered twice (a reconnect, a redelivery) lands on the same
//! subject, where the second receipt is refused, so it can never start two jobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DomainEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Discord,
    Twitch,
}

impl Platform {
    pub const ALL: [Platform; 2] = [Platform::Discord, Platform::Twitch];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Discord => "discord",
            Platform::Twitch => "twitch",
        }
    }

    pub fn parse(raw: &str) -> Option<Platform> {
        match raw {
            "discord" => Some(Platform::Discord),
            "twitch" => Some(Platform::Twitch),
            _ => None,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The aggregate id of a chat message: `<platform>-<message id>`, with every character outside
/// the subject-token alphabet replaced (platform ids are snowflakes and UUIDs, so in practice
/// nothing is).
pub fn command_id(platform: Platform, message_id: &str) -> String {
    scoped_id(platform, message_id)
}

/// The aggregate id of a server's (Discord guild's, Twitch channel's) settings.
pub fn settings_id(platform: Platform, scope: &str) -> String {
    scoped_id(platform, scope)
}

fn scoped_id(platform: Platform, raw: &str) -> String {
    format!("{}-{}", platform.as_str(), crate::sanitize_token(raw, 100))
}

/// The commands the chat services understand.
pub const COMMANDS: &[&str] = &["imagine", "status", "queue", "cancel"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReceived {
    pub platform: Platform,
    /// Discord guild id, or the Twitch channel login (the scope settings are kept for).
    pub scope: String,
    /// Discord channel id, or the Twitch channel login.
    pub channel: String,
    pub user_id: String,
    pub user_name: String,
    /// The platform's id of the message (Discord interaction id, Twitch message id).
    pub message_id: String,
    /// One of [`COMMANDS`].
    pub command: String,
    /// Everything after the command word (for a slash command, its options written as text:
    /// what the log shows).
    pub args: String,
    /// A slash command's options by name, as given (Discord): what the command is decided on,
    /// so no option can be read into another. Empty for typed commands (Twitch).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Discord role ids, or Twitch badges (`broadcaster`, `moderator`, `vip`, `subscriber`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// Why a command did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The command is switched off for this server.
    Disabled,
    /// The user lacks a role the command requires.
    Forbidden,
    /// The user used a command too recently.
    Cooldown,
    /// The channel used up its commands for the window.
    Quota,
    /// The arguments do not make a valid request.
    Invalid,
    /// The render queue (or chat's share of it) is full.
    QueueFull,
    /// The user already has as many jobs queued as chat users may.
    UserLimit,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Disabled => "disabled",
            RejectReason::Forbidden => "forbidden",
            RejectReason::Cooldown => "cooldown",
            RejectReason::Quota => "quota",
            RejectReason::Invalid => "invalid",
            RejectReason::QueueFull => "queue_full",
            RejectReason::UserLimit => "user_limit",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRejected {
    pub reason: RejectReason,
    /// What the user was told.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatJobStarted {
    pub job_id: String,
}

/// A command that needed no job (`status`, `queue`, `cancel`) was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAnswered {
    pub text: String,
}

/// What a reply was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    /// The job's result: the image, or why there is none.
    Result,
    /// The polite no.
    Rejection,
    /// The answer to `status`, `queue` or `cancel`.
    Answer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplySent {
    pub kind: ReplyKind,
    pub text: String,
    /// The artifact the reply carried or linked, by SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyFailed {
    pub kind: ReplyKind,
    pub error: String,
}

/// Why a reply was not sent on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Withheld {
    /// Merged into the channel's next summary of refusals.
    Summary,
    /// Not answered at all, as the channel's settings ask.
    Silent,
}

impl Withheld {
    pub fn as_str(self) -> &'static str {
        match self {
            Withheld::Summary => "summary",
            Withheld::Silent => "silent",
        }
    }
}

/// A reply was not sent on its own (a refusal in a flood); nothing more is sent for the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyWithheld {
    pub kind: ReplyKind,
    pub why: Withheld,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ChatCommandEvent {
    #[serde(rename = "chat.command_received")]
    Received(CommandReceived),
    #[serde(rename = "chat.command_rejected")]
    Rejected(CommandRejected),
    #[serde(rename = "chat.job_started")]
    JobStarted(ChatJobStarted),
    #[serde(rename = "chat.command_answered")]
    Answered(CommandAnswered),
    #[serde(rename = "chat.reply_sent")]
    ReplySent(ReplySent),
    #[serde(rename = "chat.reply_failed")]
    ReplyFailed(ReplyFailed),
    #[serde(rename = "chat.reply_withheld")]
    ReplyWithheld(ReplyWithheld),
}

impl DomainEvent for ChatCommandEvent {
    const AGGREGATE_TYPE: &'static str = "chat_command";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "chat.command_received",
        "chat.command_rejected",
        "chat.job_started",
        "chat.command_answered",
        "chat.reply_sent",
        "chat.reply_failed",
        "chat.reply_withheld",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            ChatCommandEvent::Received(_) => "chat.command_received",
            ChatCommandEvent::Rejected(_) => "chat.command_rejected",
            ChatCommandEvent::JobStarted(_) => "chat.job_started",
            ChatCommandEvent::Answered(_) => "chat.command_answered",
            ChatCommandEvent::ReplySent(_) => "chat.reply_sent",
            ChatCommandEvent::ReplyFailed(_) => "chat.reply_failed",
            ChatCommandEvent::ReplyWithheld(_) => "chat.reply_withheld",
        }
    }
}

/// Who may use a command, and whether it is on at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRule {
    pub enabled: bool,
    /// Roles (Discord role ids, Twitch badges) of which the user needs one; empty: everyone.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Default for CommandRule {
    fn default() -> Self {
        Self {
            enabled: true,
            roles: Vec::new(),
        }
    }
}

/// What becomes of a refusal's reply (cooldown, quota, a full queue …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReplies {
    /// Each is answered while the channel's send budget has room; in a flood they are merged
    /// into a periodic summary (where the platform can post one) so replies to accepted
    /// commands keep their place.
    #[default]
    Auto,
    /// Always merged into the periodic summary.
    Summary,
    /// Never answered (the refusal is still recorded).
    Silent,
}

/// One Discord guild's or Twitch channel's settings. Every change records the whole of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelSettings {
    /// Rules by command name; a command not named here follows [`CommandRule::default`].
    pub commands: BTreeMap<String, CommandRule>,
    /// The bot's nickname in this Discord guild.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    /// The bot's avatar in this Discord guild, as an http(s) URL or a data URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Seconds a user waits between two job-starting commands.
    pub cooldown_secs: u32,
    /// Job-starting commands a channel may run per quota window.
    pub quota: u32,
    pub quota_window_secs: u32,
    /// What becomes of the replies to refused commands.
    pub refusals: RefusalReplies,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            commands: BTreeMap::new(),
            nickname: None,
            avatar: None,
            cooldown_secs: 30,
            quota: 20,
            quota_window_secs: 3600,
            refusals: RefusalReplies::Auto,
        }
    }
}

impl ChannelSettings {
    pub fn rule(&self, command: &str) -> CommandRule {
        self.commands.get(command).cloned().unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), String> {
        if let Some(unknown) = self
            .commands
            .keys()
            .find(|c| !COMMANDS.contains(&c.as_str()))
        {
            return Err(format!(
                "unknown command {unknown:?}: expected one of {}",
                COMMANDS.join(", ")
            ));
        }
        if let Some(nickname) = &self.nickname
            && !(1..=32).contains(&nickname.chars().count())
        {
            return Err("nickname must be 1 to 32 characters".into());
        }
        if let Some(avatar) = &self.avatar
            && !(avatar.starts_with("https://")
                || avatar.starts_with("http://")
                || avatar.starts_with("data:image/"))
        {
            return Err("avatar must be an http(s) URL or a data:image/ URI".into());
        }
        if self.cooldown_secs > 86_400 {
            return Err("cooldown_secs must be at most 86400".into());
        }
        if self.quota_window_secs == 0 || self.quota_window_secs > 86_400 {
            return Err("quota_window_secs must be 1..=86400".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChanged {
    pub platform: Platform,
    pub scope: String,
    pub settings: ChannelSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ChatSettingsEvent {
    #[serde(rename = "chat.settings_changed")]
    Changed(SettingsChanged),
}

impl DomainEvent for ChatSettingsEvent {
    const AGGREGATE_TYPE: &'static str = "chat_settings";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &["chat.settings_changed"];

    fn event_type(&self) -> &'static str {
        match self {
            ChatSettingsEvent::Changed(_) => "chat.settings_changed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_subject_tokens() {
        assert_eq!(
            command_id(Platform::Twitch, "b34ccfc7-4977-403a-8a94-33c6bac34fb8"),
            "twitch-b34ccfc7-4977-403a-8a94-33c6bac34fb8"
        );
        assert_eq!(settings_id(Platform::Discord, "a.b c"), "discord-a_b_c");
        crate::validate_token(&command_id(Platform::Discord, &"9".repeat(300))).unwrap();
    }

    #[test]
    fn settings_are_checked() {
        let mut settings = ChannelSettings::default();
        settings.validate().unwrap();
        settings
            .commands
            .insert("dance".into(), CommandRule::default());
        assert!(settings.validate().unwrap_err().contains("dance"));
        let settings = ChannelSettings {
            avatar: Some("file:///etc/passwd".into()),
            ..ChannelSettings::default()
        };
        assert!(settings.validate().is_err());
    }
}
