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

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::chat::{CALM, ChatStack, FLOOD};
use serde_json::json;
use testkit::twitch::Chatter;

use crate::Outcome;

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
