//! The gateway side: guilds joined, and slash commands turned into chat commands after the
//! interaction is acknowledged (Discord waits three seconds for that, and then forgets it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::guilds::Guilds;
use crate::{classify, retry_until};

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

    /// A deferred response ("Nebula is thinking…"), retried within Discord's window (counted
    /// from the interaction's creation) when the failure may pass. `false`: the user sees "the
    /// application did not respond".
    async fn acknowledge(&self, http: &Http, interaction: &CommandInteraction) -> bool {
        // A snowflake holds its creation time: milliseconds since 2015 in its top 42 bits.
        let created = (interaction.id.get() >> 22) + 1_420_070_400_000;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // Counted up to half a second: a clock that disagrees with Discord's must not leave no
        // time at all.
        let age =
            Duration::from_millis(now.saturating_sub(created)).min(Duration::from_millis(500));
        let deadline = Instant::now() + ACKNOWLEDGE_WITHIN.saturating_sub(age);
        let deferred = retry_until(deadline, || async {
            match interaction.defer(http).await {
                // A second delivery of the same interaction: acknowledged already.
                Err(serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(
                    response,
                ))) if response.error.code == ALREADY_ACKNOWLEDGED => Ok(()),
                other => other,
            }
        })
        .await;
        match deferred {
            Ok(()) => true,
            Err(err) => {
                self.failed("acknowledge", &err.message);
                false
            }
        }
    }

    fn failed(&self, op: &'static str, error: &str) {
        crate::failed(&self.bus, op, error);
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
    let options = options(&interaction.data);
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
            args: args(&options),
            options,
            roles,
        },
        reply_token: Some(interaction.token.clone()),
    })
}

/// A slash command's options by name, as text.
fn options(data: &CommandData) -> BTreeMap<String, String> {
    data.options
        .iter()
        .filter_map(|option| {
            let value = match &option.value {
                CommandDataOptionValue::String(text) => text.clone(),
                CommandDataOptionValue::Integer(number) => number.to_string(),
                CommandDataOptionValue::Number(number) => number.to_string(),
                CommandDataOptionValue::Boolean(flag) => flag.to_string(),
                _ => return None,
            };
            Some((option.name.clone(), value))
        })
        .collect()
}

/// The options written as Twitch users type them (`prompt --seed 7 --no …`), for the log.
fn args(options: &BTreeMap<String, String>) -> String {
    let mut args = options.get("prompt").cloned().unwrap_or_default();
    for (name, value) in options {
        if name != "prompt" && name != "negative" {
            args.push_str(&format!(" --{name} {value}"));
        }
    }
    if let Some(negative) = options.get("negative") {
        args.push_str(" --no ");
        args.push_str(negative);
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
        assert_eq!(command.args, "a red fox --cfg 6.5 --seed 7 --no blurry");
        let params = chat::imagine(&command.options, 1).unwrap();
        assert_eq!((params.seed, params.cfg), (7, 6.5));
        assert_eq!(params.negative_prompt, "blurry");
    }
}
