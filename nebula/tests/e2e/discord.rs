//! The Discord bot end to end against the test kit's fake Discord (REST through serenity's
//! proxy mode, and the websocket gateway): slash commands registered per guild, `/imagine` →
//! deferred within three seconds → render job on the simulated GPU → progress edits → the
//! image attached, one correlation id throughout; duplicate deliveries, a 5xx and a 429 from
//! Discord, per-guild toggles and identity from the settings, and a dropped gateway session.

use crate::common;

use std::time::Duration;

use events::chat::{ChannelSettings, CommandRule, Platform};
use natsauth::Identity;
use nebula::{Config, Part, Parts};
use serde_json::json;
use sqlx::PgPool;
use testkit::discord::{Answer, FakeDiscord, FakeDiscordOptions, Interaction, Member, Route};
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};

const GUILD: u64 = 900_000_000_000_000_001;
const CHANNEL: u64 = 910_000_000_000_000_001;
const BOT_TOKEN: &str = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.fake.bot-token";

fn discord_config(
    nats: &NatsServer,
    pool: &PgPool,
    state: &std::path::Path,
    discord: &FakeDiscord,
) -> Config {
    let mut config = common::config(nats, pool, state);
    config.chat.shared.redis_prefix = format!("test:{}", uuid::Uuid::new_v4());
    config.chat.discord.token = Some(BOT_TOKEN.into());
    config.chat.discord.api_url = Some(discord.api_url());
    config.chat.discord.progress_every_secs = 0;
    config.render.node_id = Some("gpu-sim".into());
    config
}

/// The bot connected to the fake Discord, in a process of its own signed in as the chat role,
/// beside the control plane and a simulated render worker.
struct Bot {
    running: nebula::Running,
    chat: nebula::Running,
    discord: FakeDiscord,
    _nats: NatsServer,
    _state: tempfile::TempDir,
}

/// The stack a slash command needs (gateway, dispatcher, a simulated render worker, chat),
/// with the bot connected to a fresh fake Discord.
async fn start_bot(pool: &PgPool) -> Bot {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let discord = FakeDiscord::start(FakeDiscordOptions {
        token: BOT_TOKEN.into(),
        guilds: vec![GUILD],
    })
    .await;
    let config = discord_config(&nats, pool, state.path(), &discord);
    let parts = Parts::of(&[
        Part::Gateway,
        Part::Projector,
        Part::Dispatcher,
        Part::RenderWorker,
    ]);
    let running = nebula::start(&config, parts).await.unwrap();
    let mut bot = config.clone();
    common::sign_in_as(&mut bot, &nats, &Identity::Chat);
    bot.public_url = running.gateway_addr.map(|addr| format!("http://{addr}"));
    let chat = nebula::start(&bot, Parts::CHAT).await.unwrap();
    wait_until("the commands to be registered", DEFAULT_WAIT, || async {
        (discord.commands(GUILD).is_some() && discord.connected() > 0).then_some(())
    })
    .await;
    Bot {
        running,
        chat,
        discord,
        _nats: nats,
        _state: state,
    }
}

/// An edit of a response: its text, and the files attached (name, bytes).
type Edit = (String, Vec<(String, Vec<u8>)>);

/// The edits of `interaction`'s response, once `done` holds for them.
async fn edits(
    discord: &FakeDiscord,
    interaction: &Interaction,
    what: &str,
    done: impl Fn(&[(String, usize)]) -> bool,
) -> Vec<Edit> {
    wait_until(what, Duration::from_secs(40), || async {
        let edits: Vec<Edit> = discord
            .responses(interaction)
            .into_iter()
            .filter_map(|answer| match answer {
                Answer::Edit { content, files } => Some((content.unwrap_or_default(), files)),
                Answer::Callback { .. } => None,
            })
            .collect();
        let summary: Vec<(String, usize)> =
            edits.iter().map(|(c, f)| (c.clone(), f.len())).collect();
        done(&summary).then_some(edits)
    })
    .await
}

/// The first answer to a command that starts no job.
async fn answer(
    discord: &FakeDiscord,
    member: &Member,
    name: &str,
    options: serde_json::Value,
) -> String {
    let interaction = discord.interact(GUILD, CHANNEL, member, name, options);
    let edits = edits(
        discord,
        &interaction,
        &format!("an answer to /{name}"),
        |e| !e.is_empty(),
    )
    .await;
    assert_eq!(
        discord.responses(&interaction)[0],
        Answer::Callback {
            kind: 5,
            content: None
        },
        "deferred first"
    );
    edits[0].0.clone()
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn an_imagine_in_discord_comes_back_as_an_attached_image_with_progress(pool: PgPool) {
    let bot = start_bot(&pool).await;
    let (running, discord) = (&bot.running, &bot.discord);
    assert_eq!(
        discord.commands(GUILD).unwrap(),
        ["imagine", "status", "queue", "cancel"]
    );
    let imagine = discord.command(GUILD, "imagine").unwrap();
    assert_eq!(imagine["options"][0]["name"], "prompt");
    assert_eq!(imagine["options"][0]["required"], true);

    let viewer = Member::new(4242, "Viewer");
    let interaction = discord.interact(
        GUILD,
        CHANNEL,
        &viewer,
        "imagine",
        // A prompt may say anything, `--no` included: options are taken whole.
        json!({"prompt": "a red fox in the snow --no filter", "seed": 7, "size": "64x64", "steps": 6}),
    );
    let edits = edits(discord, &interaction, "the image", |edits| {
        edits.iter().any(|(_, files)| *files > 0)
    })
    .await;
    assert_eq!(
        discord.responses(&interaction)[0],
        Answer::Callback {
            kind: 5,
            content: None
        }
    );
    let texts: Vec<&str> = edits.iter().map(|(c, _)| c.as_str()).collect();
    assert!(
        texts[0].contains("queued your image (position"),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("rendering on gpu-sim")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.contains('%')), "{texts:?}");
    let (last, files) = edits.last().unwrap();
    assert!(
        last.starts_with("here it is: http") && last.ends_with("(seed 7)"),
        "{last}"
    );
    assert_eq!(files.len(), 1);
    let (name, png) = &files[0];
    assert!(png.starts_with(b"\x89PNG"), "the attachment is a PNG");

    // The attachment is the artifact the job made (the share link serves the same bytes).
    let command_id = events::chat::command_id(Platform::Discord, &interaction.id);
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
    assert_eq!(chat[0].data["scope"], GUILD.to_string());
    assert_eq!(chat[0].data["user_name"], "Viewer");
    let job_id = chat[1].data["job_id"].as_str().unwrap().to_owned();
    assert_eq!(name, &format!("{job_id}.png"));
    let url = last
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap();
    let shared = wait_until("the share link to be served", DEFAULT_WAIT, || async {
        let response = reqwest::get(url).await.ok()?;
        (response.status() == 200).then_some(response)
    })
    .await
    .bytes()
    .await
    .unwrap();
    assert_eq!(&shared[..], &png[..]);
    let token = url.rsplit('/').next().unwrap().trim_end_matches(".png");
    let job = common::envelopes(&running.bus, "render_job", &job_id).await;
    assert!(job.iter().any(|e| e.event_type == "render.job_completed"));
    let share = job
        .iter()
        .find(|e| e.event_type == "render.job_shared")
        .unwrap();
    assert_eq!(share.data["token"], token);
    assert_eq!(share.data["sha256"], chat[2].data["artifact"]);
    assert_eq!(job[0].data["trigger"]["source"], "discord");
    assert_eq!(
        job[0].data["params"]["prompt"],
        "a red fox in the snow --no filter"
    );
    assert_eq!(job[0].data["params"]["seed"], 7);
    let correlation = chat[0].correlation_id;
    assert!(
        chat.iter()
            .chain(&job)
            .all(|e| e.correlation_id == correlation),
        "every event carries the interaction's correlation id"
    );

    // The gateway delivers the same interaction again: acknowledged already (Discord says
    // 40060), and no second job or reply. Commands are decided in order, so once a later one
    // is answered the repeat was handled.
    let before = discord.responses(&interaction).len();
    discord.redeliver(&interaction);
    let queue = answer(discord, &viewer, "queue", json!({})).await;
    assert!(queue.contains("waiting in the queue"), "{queue}");
    assert_eq!(discord.responses(&interaction).len(), before);
    assert!(
        discord.calls().iter().any(|(call, status)| call
            .contains(&format!("/interactions/{}/", interaction.id))
            && *status == 400),
        "the repeat was refused by Discord as already acknowledged"
    );
    assert_eq!(
        common::envelopes(&running.bus, "chat_command", &command_id)
            .await
            .len(),
        3
    );

    // Discord answers the deferral with a 503 once: acknowledged on the retry, in time.
    discord.fail_next(Route::Callback, 503, 1);
    let status = answer(discord, &viewer, "status", json!({})).await;
    assert!(status.contains("your last image is done"), "{status}");
    assert!(
        discord
            .calls()
            .iter()
            .any(|(call, status)| call.ends_with("/callback") && *status == 503)
    );

    // A result that comes after the interaction's 15 minutes: its response can no longer be
    // edited (401, code 50027), so the image goes to the channel, naming the user.
    let late = discord.interact(
        GUILD,
        CHANNEL,
        &Member::new(7373, "Late"),
        "imagine",
        json!({"prompt": "a slow sunrise", "size": "64x64", "steps": 30}),
    );
    wait_until("the deferral", DEFAULT_WAIT, || async {
        (!discord.responses(&late).is_empty()).then_some(())
    })
    .await;
    discord.expire(&late);
    let message = wait_until(
        "the image in the channel",
        Duration::from_secs(40),
        || async {
            discord
                .channel_messages()
                .into_iter()
                .find(|m| m.content.starts_with("<@7373> here it is"))
        },
    )
    .await;
    assert_eq!(message.channel, CHANNEL);
    assert_eq!(message.mentions, ["7373"]);
    assert_eq!(message.files.len(), 1);
    assert!(message.files[0].1.starts_with(b"\x89PNG"));
    assert!(
        discord
            .calls()
            .iter()
            .any(|(call, status)| call.ends_with("/messages/@original") && *status == 401)
    );

    // Discord refuses the acknowledgement outright (a 400 is not worth retrying): the user saw
    // "the application did not respond", but the image still comes, in the channel.
    discord.fail_next(Route::Callback, 400, 1);
    discord.interact(
        GUILD,
        CHANNEL,
        &Member::new(8484, "Unanswered"),
        "imagine",
        json!({"prompt": "a quiet harbour", "size": "64x64", "steps": 4}),
    );
    let message = wait_until(
        "the unacknowledged image in the channel",
        Duration::from_secs(40),
        || async {
            discord
                .channel_messages()
                .into_iter()
                .find(|m| m.content.starts_with("<@8484> here it is"))
        },
    )
    .await;
    assert_eq!(message.files.len(), 1);
    assert!(
        bot.chat
            .bus
            .metrics()
            .get("nebula_discord_errors_total", &[("op", "acknowledge")])
            >= 1.0
    );
    common::assert_no_permission_violations(&bot.chat);
    bot.chat.shutdown().await;
    bot.running.shutdown().await;
}

/// Changes the guild's settings through REST, as the dashboard does.
async fn set_settings(base: &str, settings: &ChannelSettings) {
    let response = common::http()
        .put(format!("{base}/api/chat/settings/discord/{GUILD}"))
        .bearer_auth(common::TOKEN)
        .json(settings)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn guild_settings_shape_the_bot_and_discord_errors_are_retried(pool: PgPool) {
    let bot = start_bot(&pool).await;
    let (running, discord) = (&bot.running, &bot.discord);
    let base = format!("http://{}", running.gateway_addr.unwrap());
    assert!(
        discord.member(GUILD).is_none(),
        "no identity set, none applied"
    );

    // A nickname and an avatar for this guild, and /imagine switched off: the bot renames
    // itself there and withdraws the command.
    let avatar = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    let mut settings = ChannelSettings {
        nickname: Some("Nebula Art".into()),
        avatar: Some(avatar.into()),
        ..ChannelSettings::default()
    };
    settings.commands.insert(
        "imagine".into(),
        CommandRule {
            enabled: false,
            roles: vec![],
        },
    );
    set_settings(&base, &settings).await;
    wait_until("the guild identity and commands", DEFAULT_WAIT, || async {
        let member = discord.member(GUILD)?;
        let commands = discord.commands(GUILD)?;
        (member["nick"] == "Nebula Art" && commands == ["status", "queue", "cancel"])
            .then_some(member)
    })
    .await;
    assert_eq!(discord.member(GUILD).unwrap()["avatar"], avatar);

    // A client that still shows /imagine: a polite refusal, recorded.
    let viewer = Member::new(4242, "Viewer");
    let off = answer(discord, &viewer, "imagine", json!({"prompt": "a fox"})).await;
    assert_eq!(off, "imagine is switched off here");

    // Back on, only for one role; a member without it is refused.
    settings.commands.insert(
        "imagine".into(),
        CommandRule {
            enabled: true,
            roles: vec!["777".into()],
        },
    );
    set_settings(&base, &settings).await;
    wait_until("/imagine registered again", DEFAULT_WAIT, || async {
        (discord.commands(GUILD)? == ["imagine", "status", "queue", "cancel"]).then_some(())
    })
    .await;
    let forbidden = answer(discord, &viewer, "imagine", json!({"prompt": "a fox"})).await;
    assert!(forbidden.contains("only for some roles"), "{forbidden}");

    // A member with the role: the image upload meets a 429 and then a 502 from Discord, and
    // arrives on the third try; each failure is recorded on the command.
    let artist = Member {
        roles: vec![777],
        ..Member::new(5151, "Artist")
    };
    discord.fail_next(Route::EditWithFiles, 429, 1);
    discord.fail_next(Route::EditWithFiles, 502, 1);
    let interaction = discord.interact(
        GUILD,
        CHANNEL,
        &artist,
        "imagine",
        json!({"prompt": "a lighthouse", "size": "64x64", "steps": 4}),
    );
    let delivered = edits(
        discord,
        &interaction,
        "the image after two failures",
        |edits| edits.iter().any(|(_, files)| *files > 0),
    )
    .await;
    assert!(delivered.last().unwrap().0.starts_with("here it is"));
    let command_id = events::chat::command_id(Platform::Discord, &interaction.id);
    let chat = common::envelopes(&running.bus, "chat_command", &command_id).await;
    let types: Vec<&str> = chat.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "chat.command_received",
            "chat.job_started",
            "chat.reply_failed",
            "chat.reply_failed",
            "chat.reply_sent"
        ]
    );
    assert!(chat[2].data["error"].as_str().unwrap().contains("429"));
    assert!(chat[3].data["error"].as_str().unwrap().contains("502"));

    // The same member again at once: the guild's cooldown.
    let cooldown = answer(discord, &artist, "imagine", json!({"prompt": "another"})).await;
    assert!(cooldown.starts_with("please wait "), "{cooldown}");

    // The rendered image as the bot's avatar in this guild, by the share link its reply made
    // (recorded on the job, in the command's correlation): fetched, and sent to Discord as
    // image data.
    let job_id = chat[1].data["job_id"].as_str().unwrap();
    let job = common::envelopes(&running.bus, "render_job", job_id).await;
    let shared = job
        .iter()
        .find(|e| e.event_type == "render.job_shared")
        .expect("the reply shared the image");
    assert_eq!(shared.data["sha256"], chat[4].data["artifact"]);
    assert_eq!(shared.correlation_id, chat[0].correlation_id);
    assert_eq!(shared.actor, events::Actor::Service("chat-discord".into()));
    let token = shared.data["token"].as_str().unwrap();
    let link = format!("{base}/share/{token}.png");
    wait_until("the share link to be served", DEFAULT_WAIT, || async {
        let response = common::http().get(&link).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    settings.avatar = Some(link);
    set_settings(&base, &settings).await;
    wait_until("the avatar from a URL", DEFAULT_WAIT, || async {
        let member = discord.member(GUILD)?;
        member["avatar"]
            .as_str()?
            .starts_with("data:image/png;base64,iVBOR")
            .then_some(())
    })
    .await;

    // The bot is invited to another server while it runs: the commands are registered there.
    let joined = GUILD + 1;
    discord.join_guild(joined);
    wait_until("commands in the new guild", DEFAULT_WAIT, || async {
        (discord.commands(joined)? == ["imagine", "status", "queue", "cancel"]).then_some(())
    })
    .await;

    // Discord drops the gateway connection, and a command is run before the bot is back: the
    // bot resumes its session (no new IDENTIFY), gets the missed interaction replayed, and
    // answers it.
    discord.drop_sessions();
    let queue = answer(discord, &viewer, "queue", json!({})).await;
    assert!(queue.contains("waiting in the queue"), "{queue}");
    assert_eq!(discord.identified(), 1, "resumed, not identified again");
    assert_eq!(discord.connected(), 1);

    // A server that takes smaller uploads than the image: Discord answers 413, and the reply
    // carries the link instead.
    discord.set_attachment_size_limit(100);
    let painter = Member {
        roles: vec![777],
        ..Member::new(6161, "Painter")
    };
    let small = discord.interact(
        GUILD,
        CHANNEL,
        &painter,
        "imagine",
        json!({"prompt": "a small boat", "size": "64x64", "steps": 2}),
    );
    let edits = edits(discord, &small, "the link-only image reply", |edits| {
        edits.iter().any(|(text, _)| text.starts_with("here it is"))
    })
    .await;
    let (text, files) = edits.last().unwrap();
    assert!(files.is_empty() && text.contains("/share/"), "{text}");
    assert!(
        discord
            .calls()
            .iter()
            .any(|(call, status)| call.ends_with("/messages/@original") && *status == 413)
    );
    common::assert_no_permission_violations(&bot.chat);
    bot.chat.shutdown().await;
    bot.running.shutdown().await;
}
