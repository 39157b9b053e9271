//! Chat triggers end to end against the test kit's fake Twitch (IRC over TCP, as
//! irc.chat.twitch.tv speaks it): `!imagine` → render job on the simulated GPU → progress →
//! a threaded reply with the image link, one correlation id throughout; duplicates, cooldowns,
//! quotas, switched-off commands, and lost connections.

use crate::common;

use std::path::Path;
use std::time::Duration;

use events::chat::{ChannelSettings, CommandRule, Platform};
use natsauth::Identity;
use nebula::{Config, Part, Parts};
use sqlx::PgPool;
use testkit::twitch::{Chatter, FakeTwitch, FakeTwitchOptions, Sent};
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};

pub(crate) const CHANNEL: &str = "nebula_tv";

pub(crate) fn chat_config(
    nats: &NatsServer,
    pool: &PgPool,
    state: &Path,
    twitch: &FakeTwitch,
) -> Config {
    let mut config = common::config(nats, pool, state);
    config.chat.shared.redis_prefix = format!("test:{}", uuid::Uuid::new_v4());
    config.chat.twitch.irc_url = twitch.url();
    config.chat.twitch.login = "NebulaBot".into();
    config.chat.twitch.token = Some("s3cret".into());
    config.chat.twitch.channels = vec![format!("#{CHANNEL}")];
    config.chat.twitch.progress_every_secs = 0;
    config.render.node_id = Some("gpu-sim".into());
    config
}

/// twitch-irc takes its address from a process-wide slot (`twitch::transport`): one Twitch
/// client per process, so the tests of this binary take turns.
pub(crate) static ONE_BOT_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The chat bot joined to the fake Twitch, in a process of its own signed in to NATS as the
/// chat role (so every test here runs under that role's permissions), beside the control plane.
pub(crate) struct Bot {
    /// The control-plane parts the test asked for, signed in as the control plane.
    pub(crate) control: nebula::Running,
    /// The chat part alone.
    pub(crate) chat: nebula::Running,
    pub(crate) twitch: FakeTwitch,
    _nats: NatsServer,
    _state: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Bot {
    pub(crate) async fn shutdown(self) {
        common::assert_no_permission_violations(&self.chat);
        self.chat.shutdown().await;
        self.control.shutdown().await;
    }
}

async fn start_bot(pool: &PgPool, control: Parts) -> Bot {
    start_bot_with(pool, control, |_| {}).await
}

/// [`start_bot`], with the configuration changed by `tweak` first.
pub(crate) async fn start_bot_with(
    pool: &PgPool,
    control: Parts,
    tweak: impl FnOnce(&mut Config),
) -> Bot {
    let turn = ONE_BOT_AT_A_TIME.lock().await;
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let twitch = FakeTwitch::start(FakeTwitchOptions {
        token: Some("s3cret".into()),
        moderator_in: vec![],
    })
    .await;
    let mut config = chat_config(&nats, pool, state.path(), &twitch);
    tweak(&mut config);
    // The control plane provisions the streams the bot checks for.
    let control = nebula::start(&config, control).await.unwrap();
    let mut bot = config.clone();
    common::sign_in_as(&mut bot, &nats, &Identity::Chat);
    bot.public_url = control.gateway_addr.map(|addr| format!("http://{addr}"));
    let chat = nebula::start(&bot, Parts::CHAT).await.unwrap();
    joined(&twitch).await;
    Bot {
        control,
        chat,
        twitch,
        _nats: nats,
        _state: state,
        _turn: turn,
    }
}

pub(crate) async fn joined(twitch: &FakeTwitch) {
    wait_until("the bot to join the channel", DEFAULT_WAIT, || async {
        twitch.joined(CHANNEL).then_some(())
    })
    .await;
}

/// The replies to message `id`, once `done` holds for them.
pub(crate) async fn replies(
    twitch: &FakeTwitch,
    id: &str,
    what: &str,
    done: impl Fn(&[Sent]) -> bool,
) -> Vec<Sent> {
    wait_until(what, Duration::from_secs(30), || async {
        let replies: Vec<Sent> = twitch
            .sent()
            .into_iter()
            .filter(|s| s.reply_parent.as_deref() == Some(id))
            .collect();
        done(&replies).then_some(replies)
    })
    .await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn an_imagine_in_twitch_chat_comes_back_as_an_image_with_progress(pool: PgPool) {
    let bot = start_bot(
        &pool,
        Parts::of(&[
            Part::Gateway,
            Part::Projector,
            Part::Dispatcher,
            Part::RenderWorker,
        ]),
    )
    .await;
    let (running, twitch) = (&bot.control, &bot.twitch);

    let viewer = Chatter::new("viewer", "4242");
    let id = twitch.say(
        CHANNEL,
        &viewer,
        "!imagine a red fox in the snow --seed 7 --size 64x64 --steps 6",
    );
    let replies = replies(twitch, &id, "the image reply", |replies| {
        replies.iter().any(|r| r.text.contains("here it is"))
    })
    .await;
    let texts: Vec<&str> = replies.iter().map(|r| r.text.as_str()).collect();
    assert!(
        texts[0].starts_with("@Viewer queued your image"),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("rendering on gpu-sim")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.contains('%')), "{texts:?}");
    let last = texts.last().unwrap();
    assert!(last.contains("(seed 7)"), "{last}");
    assert!(replies.iter().all(|r| r.channel == CHANNEL));

    // The link works without a token, and is the image; its name is a random token, not the
    // image's hash (which opens nothing without a token).
    let url = last
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap();
    let token = url
        .rsplit('/')
        .next()
        .and_then(|file| file.strip_suffix(".png"))
        .unwrap();
    assert!(domain::render::is_share_token(token), "{url}");
    let response = wait_until("the share link to be served", DEFAULT_WAIT, || async {
        let response = reqwest::get(url).await.ok()?;
        (response.status() == 200).then_some(response)
    })
    .await;
    assert_eq!(response.headers()["content-type"], "image/png");
    let png = response.bytes().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));

    // One correlation id from the chat message through the job to the reply.
    let command_id = events::chat::command_id(Platform::Twitch, &id);
    let chat = common::envelopes(&running.bus, "chat_command", &command_id).await;
    let types: Vec<&str> = chat.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "chat.command_received",
            "chat.job_started",
            "chat.reply_sent"
        ]
    );
    let job_id = chat[1].data["job_id"].as_str().unwrap().to_owned();
    let job = common::envelopes(&running.bus, "render_job", &job_id).await;
    assert!(job.iter().any(|e| e.event_type == "render.job_completed"));
    let shared = job
        .iter()
        .find(|e| e.event_type == "render.job_shared")
        .unwrap();
    assert_eq!(shared.data["token"], token);
    let sha256 = shared.data["sha256"].as_str().unwrap();
    let by_hash = reqwest::get(url.replace(token, sha256)).await.unwrap();
    assert_eq!(by_hash.status(), 404, "a content hash is no share link");
    let correlation = chat[0].correlation_id;
    assert!(
        chat.iter()
            .chain(&job)
            .all(|e| e.correlation_id == correlation),
        "every event carries the chat message's correlation id"
    );
    assert_eq!(job[0].data["trigger"]["source"], "twitch");
    assert_eq!(job[0].data["trigger"]["reference"], command_id.as_str());

    // The same message again (a reconnect replays it): no second job, no second reply. The
    // intake decides in order, so once a later command is answered the repeat was handled.
    let before = twitch.sent().len();
    twitch.say_with_id(
        CHANNEL,
        &viewer,
        "!imagine a red fox in the snow --seed 7",
        &id,
    );
    assert!(
        reply_to(twitch, &viewer, "!queue")
            .await
            .contains("waiting")
    );
    assert_eq!(twitch.sent().len(), before + 1);
    // And delivered again past JetStream's dedupe window (another message id on WORK): the
    // chat command refuses the second receipt.
    let incoming = chat::Incoming {
        command: serde_json::from_value(chat[0].data.clone()).unwrap(),
        reply_token: None,
    };
    running
        .bus
        .publish_raw(
            chat::Incoming::subject(Platform::Twitch),
            "redelivered",
            Vec::new(),
            serde_json::to_vec(&incoming).unwrap().into(),
        )
        .await
        .unwrap();
    wait_until("the duplicate to be counted", DEFAULT_WAIT, || async {
        (bot.chat
            .bus
            .metrics()
            .get("nebula_chat_duplicates_total", &[("platform", "twitch")])
            >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(twitch.sent().len(), before + 1);
    assert_eq!(
        common::envelopes(&running.bus, "chat_command", &command_id)
            .await
            .len(),
        3
    );
    bot.shutdown().await;
}

/// Changes the channel's settings through REST, as the dashboard does.
pub(crate) async fn set_settings(base: &str, settings: &ChannelSettings) {
    let response = common::http()
        .put(format!("{base}/api/chat/settings/twitch/{CHANNEL}"))
        .bearer_auth(common::TOKEN)
        .json(settings)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
}

pub(crate) async fn reply_to(twitch: &FakeTwitch, chatter: &Chatter, text: &str) -> String {
    let id = twitch.say(CHANNEL, chatter, text);
    let replies = replies(twitch, &id, &format!("a reply to {text:?}"), |r| {
        !r.is_empty()
    })
    .await;
    replies[0].text.clone()
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn cooldowns_quotas_roles_and_switched_off_commands_get_polite_replies(pool: PgPool) {
    let bot = start_bot(&pool, Parts::of(&[Part::Gateway, Part::Projector])).await;
    let (running, twitch) = (&bot.control, &bot.twitch);
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

    let ann = Chatter::new("ann", "1");
    let bob = Chatter::new("bob", "2");
    let cat = Chatter::new("cat", "3");
    assert!(
        reply_to(twitch, &ann, "!imagine a cat")
            .await
            .contains("queued")
    );
    let cooldown = reply_to(twitch, &ann, "!imagine another cat").await;
    assert!(cooldown.starts_with("@Ann please wait "), "{cooldown}");
    assert!(
        reply_to(twitch, &bob, "!imagine a dog")
            .await
            .contains("queued")
    );
    let quota = reply_to(twitch, &cat, "!imagine a bird").await;
    assert!(quota.contains("has used its 2 images"), "{quota}");
    let invalid = reply_to(twitch, &cat, "!imagine --seed").await;
    assert!(invalid.contains("--seed needs a value"), "{invalid}");
    // Chat's own limits on what may be asked ([chat.twitch.limits]).
    let big = reply_to(twitch, &cat, "!imagine a bird --size 2048x2048").await;
    assert!(big.contains("at most 1024×1024"), "{big}");
    assert!(
        reply_to(twitch, &ann, "!queue")
            .await
            .contains("2 image(s) waiting")
    );
    assert!(
        reply_to(twitch, &ann, "!status")
            .await
            .contains("waiting in the queue")
    );
    assert!(
        reply_to(twitch, &ann, "!cancel")
            .await
            .contains("cancelled your last image")
    );

    // Only moderators may imagine now; then nobody may.
    let mut settings = ChannelSettings::default();
    settings.commands.insert(
        "imagine".into(),
        CommandRule {
            enabled: true,
            roles: vec!["moderator".into()],
        },
    );
    set_settings(&base, &settings).await;
    let dan = Chatter::new("dan", "4");
    assert!(
        reply_to(twitch, &dan, "!imagine a fish")
            .await
            .contains("only for some roles")
    );
    let mut moderator = Chatter::new("eve", "5");
    moderator.badges = vec!["moderator/1".into()];
    assert!(
        reply_to(twitch, &moderator, "!imagine a fish")
            .await
            .contains("queued")
    );
    settings.commands.insert(
        "imagine".into(),
        CommandRule {
            enabled: false,
            roles: vec![],
        },
    );
    set_settings(&base, &settings).await;
    assert!(
        reply_to(twitch, &moderator, "!imagine a fish")
            .await
            .contains("imagine is switched off here")
    );

    // A rejection is in the log with its reason, and its reply.
    let id = twitch.say(CHANNEL, &ann, "!imagine yet another cat");
    replies(twitch, &id, "the rejection", |r| !r.is_empty()).await;
    let command_id = events::chat::command_id(Platform::Twitch, &id);
    let recorded = wait_until("the reply to be recorded", DEFAULT_WAIT, || async {
        let events = common::envelopes(&running.bus, "chat_command", &command_id).await;
        (events.len() == 3).then_some(events)
    })
    .await;
    assert_eq!(recorded[1].event_type, "chat.command_rejected");
    assert_eq!(recorded[1].data["reason"], "disabled");
    assert_eq!(recorded[2].event_type, "chat.reply_sent");
    assert_eq!(recorded[2].data["kind"], "rejection");

    // The read side: the settings in force, and the command log with what each caused.
    let client = common::http();
    let settings = wait_until("the settings in the read model", DEFAULT_WAIT, || async {
        let settings = common::get_json(
            &client,
            format!("{base}/api/chat/settings/twitch/{CHANNEL}"),
        )
        .await;
        (settings["customized"] == true).then_some(settings)
    })
    .await;
    assert_eq!(settings["customized"], true);
    assert_eq!(
        settings["settings"]["commands"]["imagine"]["enabled"],
        false
    );
    let correlation = recorded[0].correlation_id;
    let log = wait_until("the command log", DEFAULT_WAIT, || async {
        let log = common::get_json(
            &client,
            format!("{base}/api/chat/commands?correlation_id={correlation}"),
        )
        .await;
        (log["commands"][0]["reply"].is_string()).then_some(log)
    })
    .await;
    let entry = &log["commands"][0];
    assert_eq!(entry["status"], "rejected");
    assert_eq!(entry["reason"], "disabled");
    assert_eq!(entry["user_name"], "Ann");
    let all = common::get_json(&client, format!("{base}/api/chat/commands?platform=twitch")).await;
    let jobs = all["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "job")
        .count();
    assert_eq!(jobs, 3, "{all}");

    // Bad settings are refused clearly.
    for (path, body, needle) in [
        (
            "twitch/nebula_tv",
            serde_json::json!({"cooldwn_secs": 5}),
            "unknown field",
        ),
        (
            "twitch/nebula_tv",
            serde_json::json!({"quota_window_secs": 0}),
            "quota_window_secs",
        ),
        (
            "twitch/nebula_tv",
            serde_json::json!({"commands": {"dance": {"enabled": true}}}),
            "dance",
        ),
        ("myspace/x", serde_json::json!({}), "unknown platform"),
    ] {
        let response = client
            .put(format!("{base}/api/chat/settings/{path}"))
            .bearer_auth(common::TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let text = response.text().await.unwrap();
        assert!(text.contains(needle), "{text}");
    }
    bot.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn the_bot_rejoins_after_a_lost_connection_and_a_reconnect_request(pool: PgPool) {
    let bot = start_bot(&pool, Parts::PROJECTOR).await;
    let twitch = &bot.twitch;
    let ann = Chatter::new("ann", "1");
    assert!(reply_to(twitch, &ann, "!queue").await.contains("waiting"));

    twitch.drop_connections();
    wait_until("a second login", Duration::from_secs(30), || async {
        (twitch.logins() >= 2 && twitch.joined(CHANNEL)).then_some(())
    })
    .await;
    assert!(reply_to(twitch, &ann, "!queue").await.contains("waiting"));

    twitch.reconnect();
    wait_until("a third login", Duration::from_secs(30), || async {
        (twitch.logins() >= 3 && twitch.joined(CHANNEL)).then_some(())
    })
    .await;
    assert!(reply_to(twitch, &ann, "!status").await.contains("no image"));
    bot.shutdown().await;
}
