//! Chat against `nebula up`: the Twitch bot in two channels of the test kit's fake Twitch (which
//! refuses a bot's message over Twitch's send limit, as Twitch does), on a Redis of its own; and
//! a tally of what became of each chat message, from the log. Used by chaos (R5, R6) and the
//! bench (P16).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bus::StreamName;
use events::chat::Platform;
use testkit::redis::RedisServer;
use testkit::twitch::{Chatter, FakeTwitch, FakeTwitchOptions};

use crate::gateway::GatewayProcess;
use crate::{Env, read_to_end};

pub const FLOOD: &str = "flood_tv";
pub const CALM: &str = "calm_tv";

/// `nebula up` with the Twitch bot in two channels of a fake Twitch, on a Redis of its own.
pub struct ChatStack {
    pub stack: GatewayProcess,
    pub twitch: FakeTwitch,
    pub redis: RedisServer,
    pub env: Env,
}

impl ChatStack {
    pub async fn start(name: &str, settings: serde_json::Value) -> Result<ChatStack> {
        let env = Env::new(name, "").await?;
        let redis = RedisServer::start();
        let twitch = FakeTwitch::start(FakeTwitchOptions {
            token: Some("s3cret".into()),
            moderator_in: vec![],
        })
        .await;
        let stack = GatewayProcess::start_with(
            &env,
            "up",
            &[
                ("REDIS_URL", redis.url()),
                ("NEBULA_CHAT__TWITCH__IRC_URL", twitch.url()),
                ("NEBULA_CHAT__TWITCH__LOGIN", "NebulaBot".to_owned()),
                ("NEBULA_CHAT__TWITCH__TOKEN", "s3cret".to_owned()),
                ("NEBULA_CHAT__TWITCH__CHANNELS", format!("{FLOOD},{CALM}")),
                ("NEBULA_CHAT__SUMMARY_EVERY_SECS", "5".to_owned()),
                ("NEBULA_AGENT__DISABLE_GPU_DETECTION", "true".to_owned()),
            ],
        )
        .await?;
        testkit::wait_until(
            "the bot in both channels",
            Duration::from_secs(30),
            || async { (twitch.joined(FLOOD) && twitch.joined(CALM)).then_some(()) },
        )
        .await;
        for channel in [FLOOD, CALM] {
            let (status, answer) = stack
                .call(
                    "PUT",
                    &format!("/api/chat/settings/twitch/{channel}"),
                    Some(&settings.to_string()),
                )
                .await?;
            if status != 202 {
                bail!("settings refused: {status} {answer}");
            }
        }
        let chat = ChatStack {
            stack,
            twitch,
            redis,
            env,
        };
        // The settings are in force once a command is decided by them.
        let probe = chat
            .twitch
            .say(FLOOD, &Chatter::new("probe", "1"), "!queue");
        chat.answered(&probe, Duration::from_secs(30)).await?;
        Ok(chat)
    }

    /// Waits for the first reply to message `id`; how long it took.
    pub async fn answered(&self, id: &str, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self
                .twitch
                .sent()
                .iter()
                .any(|s| s.reply_parent.as_deref() == Some(id))
            {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("no reply to {id} within {} s", limit.as_secs())
    }

    /// The reason message `id` was refused for ("" if it was not refused), once decided.
    pub async fn refusal_reason(&self, id: &str, limit: Duration) -> Result<String> {
        let subject = events::subjects::event(
            "chat_command",
            &events::chat::command_id(Platform::Twitch, id),
        );
        let started = Instant::now();
        while started.elapsed() < limit {
            let events: Vec<events::EventEnvelope> = self
                .env
                .bus
                .read_subject(&subject)
                .await?
                .iter()
                .flat_map(|m| m.decode_commit().unwrap_or_default())
                .collect();
            if let Some(rejected) = events
                .iter()
                .find(|e| e.event_type == "chat.command_rejected")
            {
                return Ok(rejected.data["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned());
            }
            if events.iter().any(|e| e.event_type == "chat.job_started") {
                return Ok(String::new());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{id} was not decided within {} s", limit.as_secs())
    }

    /// Waits until every message of `ids` is decided and closed (or `limit` passes), then
    /// counts what was lost and what was duplicated.
    pub async fn tally(&self, ids: &[String], limit: Duration) -> Result<Tally> {
        let started = Instant::now();
        loop {
            let tally = self.count(ids).await?;
            if tally.open == 0 || started.elapsed() > limit {
                return Ok(tally);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    pub async fn count(&self, ids: &[String]) -> Result<Tally> {
        let mut by_command: HashMap<String, Vec<String>> = HashMap::new();
        for message in read_to_end(&self.env.bus, StreamName::Events).await? {
            if !message.subject.contains(".chat_command.") {
                continue;
            }
            for envelope in message.decode_commit().unwrap_or_default() {
                by_command
                    .entry(envelope.aggregate_id)
                    .or_default()
                    .push(envelope.event_type);
            }
        }
        let dead = read_to_end(&self.env.bus, StreamName::Dlq)
            .await?
            .iter()
            .filter(|m| m.subject.ends_with("chat-intake-twitch"))
            .count() as u64;
        let mut tally = Tally {
            dead,
            ..Tally::default()
        };
        for id in ids {
            let events = by_command
                .get(&events::chat::command_id(Platform::Twitch, id))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let n = |kinds: &[&str]| {
                events
                    .iter()
                    .filter(|t| kinds.contains(&t.as_str()))
                    .count()
            };
            let received = n(&["chat.command_received"]);
            let decided = n(&[
                "chat.command_rejected",
                "chat.job_started",
                "chat.command_answered",
            ]);
            let refused = n(&["chat.command_rejected"]);
            let closed = n(&["chat.reply_sent", "chat.reply_withheld"]);
            let jobs = n(&["chat.job_started"]);
            if decided == 0 || (refused > 0 && closed == 0) {
                tally.open += 1;
            }
            tally.duplicated += [received, decided, closed]
                .iter()
                .map(|c| c.saturating_sub(1) as u64)
                .sum::<u64>();
            tally.jobs += jobs as u64;
            tally.refused += refused as u64;
            tally.withheld += n(&["chat.reply_withheld"]) as u64;
        }
        Ok(tally)
    }

    pub async fn finish(self) {
        drop(self.stack);
        drop(self.redis);
        self.env.drop_database().await;
    }
}

#[derive(Debug, Default)]
pub struct Tally {
    /// Messages not decided, or refused and never answered nor summarised.
    pub open: u64,
    pub duplicated: u64,
    pub dead: u64,
    pub jobs: u64,
    pub refused: u64,
    pub withheld: u64,
}
