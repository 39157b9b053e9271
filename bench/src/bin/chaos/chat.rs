//! Chat faults against `nebula up` and the test kit's fake Twitch (which refuses a bot's message
//! over Twitch's send limit, as Twitch does):
//!
//! - R5: one channel floods the bot with 50 commands a second; another channel says one thing.
//! - R6: Redis is killed for two minutes under a steady stream of commands, then started again
//!   empty.
//!
//! Lost: a chat message with no decision, a refusal with neither a reply nor a place in a
//! summary, or a dead-lettered command. Duplicated: a message received, decided or answered
//! twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::gateway::GatewayProcess;
use bench::{Env, read_to_end};
use bus::StreamName;
use events::chat::Platform;
use serde_json::json;
use testkit::redis::RedisServer;
use testkit::twitch::{Chatter, FakeTwitch, FakeTwitchOptions};

use crate::Outcome;

const FLOOD: &str = "flood_tv";
const CALM: &str = "calm_tv";

/// `nebula up` with the Twitch bot in two channels of a fake Twitch, on a Redis of its own.
struct ChatStack {
    stack: GatewayProcess,
    twitch: FakeTwitch,
    redis: RedisServer,
    env: Env,
}

impl ChatStack {
    async fn start(name: &str, settings: serde_json::Value) -> Result<ChatStack> {
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
    async fn answered(&self, id: &str, limit: Duration) -> Result<Duration> {
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
    async fn refusal_reason(&self, id: &str, limit: Duration) -> Result<String> {
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
    async fn tally(&self, ids: &[String], limit: Duration) -> Result<Tally> {
        let started = Instant::now();
        loop {
            let tally = self.count(ids).await?;
            if tally.open == 0 || started.elapsed() > limit {
                return Ok(tally);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn count(&self, ids: &[String]) -> Result<Tally> {
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

    async fn finish(self) {
        drop(self.stack);
        drop(self.redis);
        self.env.drop_database().await;
    }
}

#[derive(Debug, Default)]
struct Tally {
    /// Messages not decided, or refused and never answered nor summarised.
    open: u64,
    duplicated: u64,
    dead: u64,
    jobs: u64,
    refused: u64,
    withheld: u64,
}

pub(crate) async fn r5_flood(seconds: u64) -> Result<Outcome> {
    println!("R5: a chat flood of 50 commands a second for {seconds} s in one channel");
    let chat = ChatStack::start(
        "chaos_r5",
        json!({ "cooldown_secs": 30, "quota": 100_000, "quota_window_secs": 3600 }),
    )
    .await?;
    let started = Instant::now();
    let mut ids = Vec::new();
    let mut calm = None;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for n in 0..seconds * 50 {
        tick.tick().await;
        let chatter = Chatter::new(&format!("fan{}", n % 300), &format!("{}", 10_000 + n % 300));
        let text = format!("!imagine fan art {n} --size 64x64 --steps 2");
        ids.push(chat.twitch.say(FLOOD, &chatter, &text));
        if n == seconds * 25 {
            let id = chat.twitch.say(
                CALM,
                &Chatter::new("calmfan", "77"),
                "!imagine a quiet lake",
            );
            calm = Some(id);
        }
    }
    let flood_took = started.elapsed();
    let calm_id = calm.context("the calm channel's command")?;
    let calm_took = chat.answered(&calm_id, Duration::from_secs(120)).await?;
    ids.push(calm_id);
    let tally = chat.tally(&ids, Duration::from_secs(600)).await?;
    let drained = started.elapsed();
    // The summaries go out as the channel's budget allows: wait until they cover every merged
    // refusal (each says how many it covers).
    let summarised = |chat: &ChatStack| {
        let posts: Vec<usize> = chat
            .twitch
            .sent()
            .iter()
            .filter(|s| s.channel == FLOOD && s.reply_parent.is_none())
            .filter_map(|s| s.text.split_whitespace().next()?.parse().ok())
            .collect();
        (posts.len(), posts.iter().sum::<usize>() as u64)
    };
    let covering = Instant::now();
    while summarised(&chat).1 < tally.withheld && covering.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (summaries, covered) = summarised(&chat);
    let summaries_took = drained + covering.elapsed();
    let over_limit = chat.twitch.over_limit();
    chat.finish().await;
    if over_limit > 0 {
        bail!("{over_limit} messages went over Twitch's send limit");
    }
    if covered != tally.withheld {
        bail!(
            "summaries covered {covered} of {} merged refusals",
            tally.withheld
        );
    }
    Ok(Outcome {
        name: "R5 chat flood",
        lost: tally.open + tally.dead,
        duplicated: tally.duplicated,
        detail: format!(
            "{} commands in {:.0} s, all decided {:.0} s after the start; {} jobs, {} refused \
             ({} merged into {summaries} summaries covering {covered}, the last posted {:.0} s \
             after the start); the other channel answered in {:.1} s; {} dead letters; 0 over \
             Twitch's limit",
            ids.len(),
            flood_took.as_secs_f64(),
            drained.as_secs_f64(),
            tally.jobs,
            tally.refused,
            tally.withheld,
            summaries_took.as_secs_f64(),
            calm_took.as_secs_f64(),
            tally.dead,
        ),
    })
}

pub(crate) async fn r6_redis_outage(outage: Duration) -> Result<Outcome> {
    println!(
        "R6: Redis killed for {} s under a steady stream of chat commands, then started empty",
        outage.as_secs()
    );
    let mut chat = ChatStack::start(
        "chaos_r6",
        json!({ "cooldown_secs": 3600, "quota": 100_000, "quota_window_secs": 3600 }),
    )
    .await?;
    let early = Chatter::new("early", "5");
    let first = chat.twitch.say(FLOOD, &early, "!imagine before the outage");
    chat.answered(&first, Duration::from_secs(30)).await?;
    let mut ids = vec![first];
    let say = |chat: &ChatStack, n: usize| {
        let chatter = Chatter::new(
            &format!("viewer{}", n % 40),
            &format!("{}", 20_000 + n % 40),
        );
        chat.twitch.say(
            FLOOD,
            &chatter,
            &format!("!imagine steady {n} --size 64x64"),
        )
    };
    let mut n = 0;
    for _ in 0..20 {
        ids.push(say(&chat, n));
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    chat.redis.stop();
    let down = Instant::now();
    let (mut waiting_max, mut held_max) = (0.0f64, 0.0f64);
    while down.elapsed() < outage {
        ids.push(say(&chat, n));
        n += 1;
        if n % 5 == 0
            && let Ok((_, health)) = chat.stack.call("GET", "/health", None).await
        {
            let chat = &health["chat"];
            waiting_max = waiting_max.max(chat["waiting_on_redis"].as_f64().unwrap_or(0.0));
            held_max = held_max.max(chat["held"].as_f64().unwrap_or(0.0));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    chat.redis.up();
    for _ in 0..20 {
        ids.push(say(&chat, n));
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Redis came back empty: the cooldown of the first command must still hold (the refusal
    // may be answered on its own or merged into a summary: the log says which reason).
    let again = chat.twitch.say(FLOOD, &early, "!imagine after the outage");
    let reason = chat
        .refusal_reason(&again, Duration::from_secs(300))
        .await?;
    let kept = reason == "cooldown";
    ids.push(again);
    let tally = chat.tally(&ids, Duration::from_secs(300)).await?;
    chat.finish().await;
    if !kept {
        bail!(
            "the cooldown taken before the outage was forgotten when Redis restarted: {reason:?}"
        );
    }
    Ok(Outcome {
        name: "R6 Redis outage",
        lost: tally.open + tally.dead,
        duplicated: tally.duplicated,
        detail: format!(
            "Redis away {} s; {} commands, up to {held_max} held and {waiting_max} waiting on \
             Redis at once (on /health); \
             {} jobs, {} refused; the cooldown taken before it held after; {} dead letters",
            outage.as_secs(),
            ids.len(),
            tally.jobs,
            tally.refused,
            tally.dead,
        ),
    })
}
