//! P16: a chat flood decided by `nebula up`'s intake, against the raw work each decision needs.
//!
//! A burst of commands from 300 chatters lands in one channel of the fake Twitch at once (a
//! cooldown of 30 s, so most are refused and merged into summaries, as in a real flood). The
//! figure is how many commands the intake decides a second, from the first message sent to the
//! last decision recorded. The ceiling, measured on the same Redis and nats-server: per
//! command, the intake's own Redis script (cooldown and quota taken atomically) and two acked
//! JetStream publishes (the listener's hand-over, the decision's commit), eight at once as the
//! intake's lanes work.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, stream};
use bench::chat::{ChatStack, FLOOD};
use bytes::Bytes;
use events::chat::{ChannelSettings, Platform};
use futures::StreamExt;
use serde_json::json;
use testkit::twitch::Chatter;

/// The intake's lanes (`[chat] lanes`, its default).
const LANES: usize = 8;

pub(crate) struct Measured {
    pub commands: usize,
    /// Commands decided a second by the intake.
    pub decided_per_sec: f64,
    /// The raw work of as many decisions, a second.
    pub raw_per_sec: f64,
    pub jobs: u64,
    pub refused: u64,
    pub lost: u64,
    pub duplicated: u64,
}

pub(crate) async fn burst(commands: usize) -> Result<Measured> {
    let chat = ChatStack::start(
        "bench_p16",
        json!({ "cooldown_secs": 30, "quota": 100_000, "quota_window_secs": 3600 }),
    )
    .await?;
    let raw_per_sec = raw_decisions(&chat, commands).await?;
    let started = chrono::Utc::now();
    let ids: Vec<String> = (0..commands)
        .map(|n| {
            let chatter =
                Chatter::new(&format!("fan{}", n % 300), &format!("{}", 30_000 + n % 300));
            chat.twitch.say(
                FLOOD,
                &chatter,
                &format!("!imagine burst {n} --size 64x64 --steps 2"),
            )
        })
        .collect();
    let tally = chat.tally(&ids, Duration::from_secs(600)).await?;
    if tally.open > 0 {
        bail!(
            "{} of {commands} commands were not decided in 10 minutes",
            tally.open
        );
    }
    let last = last_decision(&chat, &ids).await?;
    let took = (last - started)
        .to_std()
        .context("the last decision is before the burst")?;
    chat.finish().await;
    Ok(Measured {
        commands,
        decided_per_sec: commands as f64 / took.as_secs_f64().max(1e-6),
        raw_per_sec,
        jobs: tally.jobs,
        refused: tally.refused,
        lost: tally.open + tally.dead,
        duplicated: tally.duplicated,
    })
}

/// When the last of `ids` was decided, as recorded on the log.
async fn last_decision(chat: &ChatStack, ids: &[String]) -> Result<chrono::DateTime<chrono::Utc>> {
    let wanted: std::collections::HashSet<String> = ids
        .iter()
        .map(|id| events::chat::command_id(Platform::Twitch, id))
        .collect();
    let mut last = None;
    for message in bench::read_to_end(&chat.env.bus, bus::StreamName::Events).await? {
        if !message.subject.contains(".chat_command.") {
            continue;
        }
        for envelope in message.decode_commit().unwrap_or_default() {
            let decision = matches!(
                envelope.event_type.as_str(),
                "chat.command_rejected" | "chat.job_started" | "chat.command_answered"
            );
            if decision && wanted.contains(&envelope.aggregate_id) {
                last = last.max(Some(envelope.occurred_at));
            }
        }
    }
    last.context("no decisions recorded")
}

/// `commands` decisions' raw work, `LANES` at once: the rate.
async fn raw_decisions(chat: &ChatStack, commands: usize) -> Result<f64> {
    let client = async_nats::ConnectOptions::with_nkey(chat.env.nats.control_nkey())
        .connect(chat.env.nats.url())
        .await?;
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "CHATCEIL".to_owned(),
        subjects: vec!["chatceil.>".to_owned()],
        ..Default::default()
    })
    .await?;
    let limits = chat::Limits::connect(&chat.redis.url(), "ceiling").await?;
    // The script decides only once the platform's counts are marked present.
    limits
        .restore(Platform::Twitch, &chat::limits::Restored::default())
        .await?;
    let settings = ChannelSettings {
        cooldown_secs: 30,
        quota: 100_000,
        quota_window_secs: 3600,
        ..ChannelSettings::default()
    };
    let payload = Bytes::from(vec![b'x'; 256]);
    let started = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..commands)
        .map(|n| {
            let (js, limits, settings, payload) = (
                js.clone(),
                limits.clone(),
                settings.clone(),
                payload.clone(),
            );
            async move {
                js.publish(format!("chatceil.work.{}", n % 16), payload.clone())
                    .await?
                    .await?;
                limits
                    .take(
                        Platform::Twitch,
                        "ceiling",
                        &format!("fan{}", n % 300),
                        &settings,
                    )
                    .await?;
                js.publish(format!("chatceil.events.{n}"), payload)
                    .await?
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(LANES)
        .collect()
        .await;
    let took = started.elapsed();
    for result in results {
        result?;
    }
    Ok(commands as f64 / took.as_secs_f64().max(1e-6))
}
