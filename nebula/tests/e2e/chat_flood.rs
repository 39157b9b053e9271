//! Chat under load and through outages, against the fake Twitch (which, like Twitch, refuses a
//! bot's message over 20 per 30 s in a channel): a flood in one channel is decided whole, its
//! refusals merged into summaries, while another channel keeps its replies; a Redis outage
//! makes commands wait (shown on `/health`) instead of dead-lettering them, and a Redis that
//! comes back empty gets its cooldowns and quotas back from the log.

use crate::chat::{
    CHANNEL, ONE_BOT_AT_A_TIME, chat_config, joined, replies, reply_to, set_settings,
    start_bot_with,
};
use crate::common;

use std::time::Duration;

use events::chat::{ChannelSettings, Platform};
use nebula::{Part, Parts};
use sqlx::PgPool;
use testkit::redis::RedisServer;
use testkit::twitch::{Chatter, FakeTwitch, FakeTwitchOptions};
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};

const CALM: &str = "calm_tv";

/// The last event type of every chat command in `ids`.
async fn closing_events(bus: &bus::Bus, ids: &[String]) -> Vec<String> {
    let mut closing = Vec::new();
    for id in ids {
        let command_id = events::chat::command_id(Platform::Twitch, id);
        let events = common::envelopes(bus, "chat_command", &command_id).await;
        closing.push(
            events
                .last()
                .map(|e| e.event_type.clone())
                .unwrap_or_default(),
        );
    }
    closing
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_flood_in_one_channel_is_decided_whole_and_summarised_while_another_keeps_its_replies(
    pool: PgPool,
) {
    let bot = start_bot_with(
        &pool,
        Parts::of(&[Part::Gateway, Part::Projector]),
        |config| {
            config.chat.twitch.channels = vec![CHANNEL.into(), CALM.into()];
            config.chat.shared.summary_every_secs = 2;
        },
    )
    .await;
    let (running, twitch) = (&bot.control, &bot.twitch);
    wait_until("the bot to join the calm channel", DEFAULT_WAIT, || async {
        twitch.joined(CALM).then_some(())
    })
    .await;
    let base = format!("http://{}", running.gateway_addr.unwrap());
    set_settings(
        &base,
        &ChannelSettings {
            cooldown_secs: 600,
            quota: 4,
            ..ChannelSettings::default()
        },
    )
    .await;
    // The settings are in force once a command is decided by them.
    let probe = Chatter::new("probe", "999");
    assert!(
        reply_to(twitch, &probe, "!imagine a probe")
            .await
            .contains("queued")
    );

    // 40 chatters, 5 commands each, 50 a second.
    let mut flood = Vec::new();
    for round in 0..5 {
        for n in 0..40 {
            let chatter = Chatter::new(&format!("fan{n}"), &format!("{}", 1000 + n));
            flood.push(twitch.say(CHANNEL, &chatter, &format!("!imagine fan art {round}")));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if round == 2 {
            // Mid-flood, the other channel is answered as usual.
            let calm = Chatter::new("calmfan", "77");
            let id = twitch.say(CALM, &calm, "!imagine a quiet lake");
            let answer = replies(twitch, &id, "the calm channel's reply", |r| !r.is_empty()).await;
            assert!(answer[0].text.contains("queued"), "{answer:?}");
            assert_eq!(answer[0].channel, CALM);
        }
    }
    let chat = bot.chat.bus.metrics();
    let decided = |outcome: &str| {
        chat.get(
            "nebula_chat_commands_total",
            &[("platform", "twitch"), ("outcome", outcome)],
        )
    };
    wait_until(
        "every command of the flood to be decided",
        Duration::from_secs(60),
        || async { (decided("job") + decided("rejected") >= 202.0).then_some(()) },
    )
    .await;
    // Quota 4: the probe and three fans (each fan's first command is in the first round), and
    // the calm channel's own.
    assert_eq!(decided("job"), 4.0 + 1.0);
    assert_eq!(decided("rejected"), 197.0);

    // Every refusal is closed: answered on its own, or merged into a summary.
    let closing = wait_until(
        "every refusal to be closed",
        Duration::from_secs(60),
        || async {
            let closing = closing_events(&running.bus, &flood).await;
            // The accepted ones end with their job (the follower reports the rest).
            closing
                .iter()
                .all(|t| {
                    t == "chat.reply_sent" || t == "chat.reply_withheld" || t == "chat.job_started"
                })
                .then_some(closing)
        },
    )
    .await;
    let count = |kind: &str| closing.iter().filter(|t| *t == kind).count();
    assert_eq!(count("chat.job_started"), 3);
    let withheld = count("chat.reply_withheld");
    assert!(withheld > 150, "{withheld} of 200 merged into summaries");
    let summarised = wait_until(
        "the summaries to cover every merged refusal",
        Duration::from_secs(60),
        || async {
            let total: usize = twitch
                .sent()
                .iter()
                .filter(|s| s.channel == CHANNEL && s.reply_parent.is_none())
                .filter_map(|s| s.text.split_whitespace().next()?.parse::<usize>().ok())
                .sum();
            (total == withheld).then_some(total)
        },
    )
    .await;
    assert_eq!(summarised, withheld);
    let summary = twitch
        .sent()
        .into_iter()
        .find(|s| s.reply_parent.is_none())
        .unwrap();
    assert!(
        summary.text.contains("refused in the last 2 s (") && summary.text.contains("@Fan"),
        "{summary:?}"
    );
    // The fans whose commands were accepted heard so, in thread.
    wait_until("the accepted fans' notices", DEFAULT_WAIT, || async {
        let queued = twitch
            .sent()
            .iter()
            .filter(|s| s.channel == CHANNEL && s.text.contains("queued your image"))
            .count();
        (queued == 4).then_some(())
    })
    .await;

    // Within Twitch's limits, nothing redelivered, nothing dead-lettered; the metrics saw it.
    assert_eq!(twitch.over_limit(), 0);
    let consumer = [("consumer", "chat-intake-twitch")];
    assert_eq!(chat.get("nebula_consumer_retries_total", &consumer), 0.0);
    assert_eq!(
        chat.get(
            "nebula_dead_letters_total",
            &[("origin", "chat-intake-twitch")]
        ),
        0.0
    );
    assert_eq!(
        chat.get(
            "nebula_chat_replies_withheld_total",
            &[("platform", "twitch"), ("why", "summary")]
        ),
        withheld as f64
    );
    assert!(chat.get("nebula_chat_summaries_total", &[("platform", "twitch")]) >= 1.0);
    // The three accepted fans are cooling down for their next four; everyone else finds the
    // channel's quota used up.
    let refused = |reason: &str| {
        chat.get(
            "nebula_chat_rejections_total",
            &[("platform", "twitch"), ("reason", reason)],
        )
    };
    assert_eq!((refused("cooldown"), refused("quota")), (12.0, 185.0));
    bot.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn commands_wait_out_a_redis_outage_and_a_restarted_redis_gets_its_counts_back(pool: PgPool) {
    let _turn = ONE_BOT_AT_A_TIME.lock().await;
    let mut redis = RedisServer::start();
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let twitch = FakeTwitch::start(FakeTwitchOptions {
        token: Some("s3cret".into()),
        moderator_in: vec![],
    })
    .await;
    let mut config = chat_config(&nats, &pool, state.path(), &twitch);
    config.redis_url = redis.url().as_str().into();
    // One process with the gateway and the bot: its /health counts the bot's waiting commands.
    let running = nebula::start(
        &config,
        Parts::of(&[Part::Gateway, Part::Projector, Part::Chat]),
    )
    .await
    .unwrap();
    joined(&twitch).await;
    let base = format!("http://{}", running.gateway_addr.unwrap());
    set_settings(
        &base,
        &ChannelSettings {
            cooldown_secs: 600,
            quota: 2,
            ..ChannelSettings::default()
        },
    )
    .await;
    let (ann, bob, cat) = (
        Chatter::new("ann", "1"),
        Chatter::new("bob", "2"),
        Chatter::new("cat", "3"),
    );
    assert!(
        reply_to(&twitch, &ann, "!imagine a cat")
            .await
            .contains("queued")
    );

    redis.stop();
    let again = twitch.say(CHANNEL, &ann, "!imagine another cat");
    let dog = twitch.say(CHANNEL, &bob, "!imagine a dog");
    let client = common::http();
    let health = wait_until(
        "/health to count two waiting commands",
        DEFAULT_WAIT,
        || async {
            let response = client.get(format!("{base}/health")).send().await.ok()?;
            let status = response.status();
            let body: serde_json::Value = response.json().await.ok()?;
            (body["chat"]["waiting_on_redis"] == 2.0).then_some((status, body))
        },
    )
    .await;
    assert_eq!(health.0, 503);
    assert_eq!(health.1["checks"]["redis"]["status"], "down");
    // Waiting, not failing: no reply, no retry spent, for as long as Redis is away.
    wait_until(
        "the commands to have waited a while",
        DEFAULT_WAIT,
        || async {
            (running.bus.metrics().get(
                "nebula_chat_outage_waits_total",
                &[("platform", "twitch"), ("on", "redis")],
            ) >= 2.0)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        twitch
            .sent()
            .iter()
            .all(|s| s.reply_parent.as_deref() != Some(&again)
                && s.reply_parent.as_deref() != Some(&dog))
    );

    // Redis comes back empty: ann is still cooling down, the quota still counts her image.
    redis.up();
    let wait = replies(&twitch, &again, "ann's answer", |r| !r.is_empty()).await;
    assert!(wait[0].text.starts_with("@Ann please wait "), "{wait:?}");
    let queued = replies(&twitch, &dog, "bob's answer", |r| !r.is_empty()).await;
    assert!(queued[0].text.contains("queued"), "{queued:?}");
    let quota = reply_to(&twitch, &cat, "!imagine a bird").await;
    assert!(quota.contains("has used its 2 images"), "{quota}");
    // Her last job is remembered too.
    assert!(
        reply_to(&twitch, &ann, "!status")
            .await
            .contains("waiting in the queue")
    );
    let metrics = running.bus.metrics();
    assert_eq!(
        metrics.get(
            "nebula_consumer_retries_total",
            &[("consumer", "chat-intake-twitch")]
        ),
        0.0
    );
    assert_eq!(
        metrics.get(
            "nebula_dead_letters_total",
            &[("origin", "chat-intake-twitch")]
        ),
        0.0
    );
    assert!(metrics.get("nebula_chat_restores_total", &[("platform", "twitch")]) >= 2.0);
    let health = common::get_json(&client, format!("{base}/health")).await;
    assert_eq!(health["chat"]["waiting_on_redis"], 0.0);
    running.shutdown().await;
}
