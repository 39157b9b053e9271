//! The gateway side: guilds joined, and slash commands turned into chat commands after the
//! interaction is acknowledged (Discord waits three seconds for that, and then forgets it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bus::Bus;
use chat::Incoming;
use events::chat::{CommandReceived, Platform};
use serenity::all::{
    CommandData, CommandDataOptionValue, CommandInteraction, Context, CreateInteractionResponse,
    CreateInteractionResponseMessage, EditInteractionResponse, EventHandler, Guild, Http,
    Interaction, Ready,
};
use serenity::builder::Builder as _;
use tokio_util::sync::CancellationToken;

use crate::classify;
use crate::guilds::Guilds;

/// Discord's error code for an interaction that was already acknowledged.
const ALREADY_ACKNOWLEDGED: isize = 40060;

/// How long acknowledging may keep trying: Discord's window is three seconds from creation.
const ACKNOWLEDGE_WITHIN: Duration = Duration::from_millis(2500);

pub(crate) struct Handler {
    bus: Bus,
    guilds: Arc<Guilds>,
    cancel: CancellationToken,
}

impl Handler {
    pub(crate) fn new(bus: Bus, guilds: Arc<Guilds>, cancel: CancellationToken) -> Self {
        Self {
            bus,
            guilds,
            cancel,
        }
    }

    async fn command(&self, http: &Http, interaction: &CommandInteraction) {
        let Some(incoming) = incoming(interaction) else {
            let answer = CreateInteractionResponse::Message(
                CreateInteractionResponseMessage::new()
                    .content("Nebula's commands work in servers, not in direct messages")
                    .ephemeral(true),
            );
            if let Err(err) = interaction.create_response(http, answer).await {
                self.failed("respond", &classify(err).message);
            }
            return;
        };
        let acknowledged = self.acknowledge(http, interaction).await;
        if !chat::hand_over(&self.bus, &incoming, &self.cancel).await && acknowledged {
            let sorry = EditInteractionResponse::new()
                .content("sorry, Nebula could not take your command just now; try again soon");
            if let Err(err) = sorry.execute(http, &interaction.token).await {
                self.failed("respond", &classify(err).message);
            }
        }
    }

    /// A deferred response ("Nebula is thinking…"), retried within Discord's window when the
    /// failure may pass. `false`: the user sees "the application did not respond".
    async fn acknowledge(&self, http: &Http, interaction: &CommandInteraction) -> bool {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let err = match interaction.defer(http).await {
                Ok(()) => return true,
                Err(err) => err,
            };
            if let serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(response)) =
                &err
                && response.error.code == ALREADY_ACKNOWLEDGED
            {
                return true; // a second delivery of the same interaction
            }
            let err = classify(err);
            if !err.retryable || started.elapsed() + delay > ACKNOWLEDGE_WITHIN {
                self.failed("acknowledge", &err.message);
                return false;
            }
            tracing::info!(interaction = %interaction.id, error = %err, "acknowledging again");
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    fn failed(&self, op: &'static str, error: &str) {
        self.bus
            .metrics()
            .add("nebula_discord_errors_total", &[("op", op)], 1.0);
        tracing::warn!(op, error, "a discord call failed");
    }
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        tracing::info!(user = %ready.user.name, guilds = ready.guilds.len(), "connected to discord");
        for guild in &ready.guilds {
            self.guilds.joined(&ctx.http, guild.id).await;
        }
    }

    async fn guild_create(&self, ctx: Context, guild: Guild, _is_new: Option<bool>) {
        self.guilds.joined(&ctx.http, guild.id).await;
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        if let Interaction::Command(command) = interaction {
            self.command(&ctx.http, &command).await;
        }
    }
}

/// The chat command an interaction carries, with its token for the replies; `None` outside a
/// guild.
pub(crate) fn incoming(interaction: &CommandInteraction) -> Option<Incoming> {
    let guild = interaction.guild_id?;
    let member = interaction.member.as_deref();
    let user = &interaction.user;
    let user_name = member
        .and_then(|m| m.nick.clone())
        .or_else(|| user.global_name.clone())
        .unwrap_or_else(|| user.name.clone());
    let mut roles: Vec<String> = member
        .map(|m| m.roles.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    if member
        .and_then(|m| m.permissions)
        .is_some_and(|p| p.administrator())
    {
        roles.push("administrator".to_owned());
    }
    Some(Incoming {
        command: CommandReceived {
            platform: Platform::Discord,
            scope: guild.to_string(),
            channel: interaction.channel_id.to_string(),
            user_id: user.id.to_string(),
            user_name,
            message_id: interaction.id.to_string(),
            command: interaction.data.name.clone(),
            args: args(&interaction.data),
            roles,
        },
        reply_token: Some(interaction.token.clone()),
    })
}

/// Slash command options as the chat arguments Twitch users type: `prompt --seed 7 --no …`.
fn args(data: &CommandData) -> String {
    let mut prompt = String::new();
    let mut flags = Vec::new();
    let mut negative = None;
    for option in &data.options {
        let value = match &option.value {
            CommandDataOptionValue::String(text) => text.trim().to_owned(),
            CommandDataOptionValue::Integer(number) => number.to_string(),
            CommandDataOptionValue::Number(number) => number.to_string(),
            CommandDataOptionValue::Boolean(flag) => flag.to_string(),
            _ => continue,
        };
        match option.name.as_str() {
            "prompt" => prompt = value,
            "negative" => negative = Some(value),
            name => flags.push(format!("--{name} {value}")),
        }
    }
    let mut args = prompt;
    for flag in flags {
        args.push(' ');
        args.push_str(&flag);
    }
    if let Some(negative) = negative {
        args.push_str(" --no ");
        args.push_str(&negative);
    }
    args.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_imagine_interaction_becomes_a_chat_command() {
        let interaction: CommandInteraction = serde_json::from_value(serde_json::json!({
            "id": "1200000000000000001",
            "application_id": "1100000000000000001",
            "type": 2,
            "token": "interaction-token",
            "version": 1,
            "locale": "en-US",
            "guild_locale": "en-US",
            "guild_id": "900000000000000001",
            "channel_id": "910000000000000001",
            "entitlements": [],
            "attachment_size_limit": 26214400,
            "app_permissions": "2147483648",
            "member": {
                "user": {"id": "4242", "username": "viewer", "global_name": "Viewer",
                         "discriminator": "0", "avatar": null},
                "nick": null, "roles": ["777"], "joined_at": "2026-01-01T00:00:00.000000+00:00",
                "deaf": false, "mute": false, "flags": 0, "permissions": "8"
            },
            "data": {
                "id": "1300000000000000001", "name": "imagine", "type": 1,
                "options": [
                    {"name": "prompt", "type": 3, "value": "a red fox"},
                    {"name": "seed", "type": 4, "value": 7},
                    {"name": "negative", "type": 3, "value": "blurry"},
                    {"name": "cfg", "type": 10, "value": 6.5}
                ]
            }
        }))
        .unwrap();
        let incoming = incoming(&interaction).unwrap();
        assert_eq!(incoming.reply_token.as_deref(), Some("interaction-token"));
        let command = incoming.command;
        assert_eq!(command.scope, "900000000000000001");
        assert_eq!(command.channel, "910000000000000001");
        assert_eq!(command.message_id, "1200000000000000001");
        assert_eq!(command.user_name, "Viewer");
        assert_eq!(command.roles, ["777", "administrator"]);
        assert_eq!(command.args, "a red fox --seed 7 --cfg 6.5 --no blurry");
        let params = chat::parse_imagine(&command.args, 1).unwrap();
        assert_eq!((params.seed, params.cfg), (7, 6.5));
    }
}
