//! (a) An agent heartbeat reaches the dashboard in a real headless Chromium, live; the overview
//! (its home) shows each node with its GPUs; the left navigation and back/forward move between
//! rooms; and the page reconnects and resumes after the gateway restarts.
//! (b) The Creative Studio: an image submitted from the page runs with live progress and lands
//! in the gallery with its provenance.
//! (c) Chat: a Discord guild's settings edited on the page reach the bot (the fake Discord sees
//! the nickname); bad values are refused with the reason; a slash command appears in the live
//! command log and opens to everything it caused; its image, shared from the gallery through
//! the Stream Bot room, reaches every platform. A deep link (`#/chat`) opens its room on load.
//!
//! Each test works in a room as a user does: it opens the room from the navigation (or a deep
//! link) first and checks that room is the one shown.

use crate::common;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use common::{TOKEN, config};
use nebula::{Part, Parts};
use serde_json::Value;
use sqlx::PgPool;
use testkit::comfyui::{FakeComfy, FakeComfyOptions};
use testkit::discord::{FakeDiscord, FakeDiscordOptions, Member as DiscordMember};
use testkit::stream::{FakeStream, FakeStreamOptions};
use testkit::webdriver::Browser;
use testkit::{NatsServer, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// JS: the room the page shows, when exactly one room is shown and the navigation marks that
/// same one as current; else null.
pub(crate) const SHOWN_ROOM: &str = "const shown = [...document.querySelectorAll('#rooms > section.room')]
        .filter(s => !s.hidden && s.getBoundingClientRect().width > 0);
    const current = [...document.querySelectorAll('#nav a.nav-link[aria-current=page]')];
    return shown.length === 1 && current.length === 1 && current[0].dataset.room === shown[0].dataset.room
        ? shown[0].dataset.room : null;";

/// The room the page shows (see [`SHOWN_ROOM`]).
async fn shown_room(browser: &Browser) -> Option<String> {
    browser.eval(SHOWN_ROOM).await.as_str().map(str::to_owned)
}

/// Opens `room` as a user does, by its entry in the left navigation, and waits until it is the
/// room shown.
pub(crate) async fn open_room(browser: &Browser, room: &str) {
    wait_until(
        &format!("the {room} room to open from the navigation"),
        WAIT,
        || async {
            let shown = browser
                .eval(&format!(
                    "const link = document.querySelector('#nav a.nav-link[data-room=\"{room}\"]');
                     if (!link) return null;
                     if (link.getAttribute('aria-current') !== 'page') link.click();
                     {SHOWN_ROOM}"
                ))
                .await;
            (shown == room).then_some(())
        },
    )
    .await;
}

/// Waits until `room` is the room shown (after a click that should lead there, or back/forward).
pub(crate) async fn wait_for_room(browser: &Browser, room: &str) {
    wait_until(&format!("the {room} room to be shown"), WAIT, || async {
        (shown_room(browser).await.as_deref() == Some(room)).then_some(())
    })
    .await;
}

async fn sample_seq(browser: &Browser, node: &str) -> Option<u64> {
    let value = browser
        .eval(&format!("const row = document.querySelector('#nodes tr[data-node-id=\"{node}\"]'); return row ? (row.dataset.sampleSeq || null) : null;"))
        .await;
    value.as_str().and_then(|s| s.parse().ok())
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn agent_heartbeats_reach_the_dashboard_live(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = config(&nats, &pool, state.path());
    let stack = nebula::start(&config, Parts::ALL).await.unwrap();
    let addr = stack.gateway_addr.unwrap();

    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/#token={TOKEN}")).await;
    let first = wait_until("the agent's row with a heartbeat", WAIT, || async {
        sample_seq(&browser, "test-node").await
    })
    .await;
    // Later heartbeats update the same page without a reload.
    let later = wait_until("a newer heartbeat on the page", WAIT, || async {
        sample_seq(&browser, "test-node")
            .await
            .filter(|seq| *seq >= first + 3)
    })
    .await;
    assert!(later > first);
    // The page opens on its home, the overview, with the token out of the address bar.
    let home = browser
        .eval(&format!(
            "return {{ room: (() => {{ {SHOWN_ROOM} }})(), hash: location.hash,
                      token_in_url: location.hash.includes('token') }};"
        ))
        .await;
    assert_eq!(home["room"], "overview", "{home}");
    assert_eq!(home["hash"], "#/", "{home}");
    assert_eq!(
        home["token_in_url"], false,
        "the token must be moved out of the address bar"
    );

    // The overview shows every node, each with its GPUs and their VRAM.
    let bus = common::bus(&nats).await;
    common::publish(&bus, "gpu-node").await;
    let overview = wait_until("the overview to show both nodes and the GPU", WAIT, || async {
        let cards = browser
            .eval(
                "const card = (id) => document.querySelector('#overview-nodes [data-node-id=\"' + id + '\"]');
                 const gpu = card('gpu-node'), agent = card('test-node');
                 if (!gpu || !agent || !gpu.querySelector('.gpu-name')) return null;
                 return { gpu: gpu.querySelector('.gpu-name').textContent,
                          vram: gpu.querySelector('.gpu-vram').textContent,
                          sim: !!gpu.querySelector('.tag-sim'),
                          agent: agent.textContent,
                          link: agent.getAttribute('href') };",
            )
            .await;
        (!cards.is_null()).then_some(cards)
    })
    .await;
    assert_eq!(overview["gpu"], "Simulated GPU", "{overview}");
    assert!(
        overview["vram"].as_str().unwrap().ends_with("/ 24.0 GiB"),
        "the GPU's VRAM (used / total): {overview}"
    );
    assert_eq!(overview["sim"], true, "{overview}");
    let agent = overview["agent"].as_str().unwrap();
    assert!(
        agent.contains("online") && agent.contains("no GPU"),
        "{overview}"
    );
    assert_eq!(overview["link"], "#/nodes?node=test-node", "{overview}");
    let png = browser.screenshot_png().await;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
    let _ = std::fs::write(std::env::temp_dir().join("nebula-dashboard.png"), &png);

    // The Nodes room: the agent's row, live.
    open_room(&browser, "nodes").await;
    let row: Value = browser
        .eval(
            "const row = document.querySelector('#nodes tr[data-node-id=\"test-node\"]');
             return { cpu: row.querySelector('.cpu').textContent, ram: row.querySelector('.ram').textContent,
                      disk: row.querySelector('.disk').textContent, gpus: row.querySelector('.gpus').textContent,
                      status: row.querySelector('.status').textContent,
                      conn: document.querySelector('#conn-status').textContent.trim(),
                      token_in_url: location.hash.includes('token') };",
        )
        .await;
    assert!(row["cpu"].as_str().unwrap().contains('%'), "{row}");
    assert!(row["ram"].as_str().unwrap().contains("GiB"), "{row}");
    assert!(row["status"].as_str().unwrap().contains("online"), "{row}");
    assert_eq!(row["conn"], "live", "{row}");
    assert_eq!(
        row["token_in_url"], false,
        "the token must be moved out of the address bar"
    );

    // The Events room: the live feed.
    open_room(&browser, "events").await;
    let feed: Value = browser
        .eval("return [...document.querySelectorAll('#events li')].map(li => li.dataset.type);")
        .await;
    assert!(
        feed.as_array()
            .unwrap()
            .iter()
            .any(|t| t == "node.registered"),
        "{feed}"
    );

    // Back and forward move between the rooms visited.
    browser.eval("history.back(); return null;").await;
    wait_for_room(&browser, "nodes").await;
    browser.eval("history.forward(); return null;").await;
    wait_for_room(&browser, "events").await;

    // Restart the gateway on the same port; the page reconnects and resumes by itself.
    stack.shutdown().await;
    wait_until("the page to notice the gateway is gone", WAIT, || async {
        let conn = browser
            .eval("return document.querySelector('#conn-status').textContent.trim();")
            .await;
        (conn != "live").then_some(())
    })
    .await;
    config.gateway.http_addr = addr;
    config.agent.node_id = Some("second-node".to_owned());
    let restarted = start_on(&config, addr).await;
    wait_until(
        "the second agent's heartbeat after the restart",
        WAIT,
        || async { sample_seq(&browser, "second-node").await },
    )
    .await;
    let feed: Value = browser.eval("return [...document.querySelectorAll('#events li')].map(li => Number(li.dataset.seq));").await;
    let seqs: Vec<u64> = feed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let unique: std::collections::HashSet<_> = seqs.iter().collect();
    assert_eq!(
        unique.len(),
        seqs.len(),
        "the resumed feed shows an event twice: {seqs:?}"
    );
    restarted.shutdown().await;
}

/// Starts the stack on `addr`, retrying while the old listener's port is still being released.
async fn start_on(config: &nebula::Config, addr: SocketAddr) -> nebula::Running {
    wait_until(
        &format!("the stack to start again on {addr}"),
        WAIT,
        || async { nebula::start(config, Parts::ALL).await.ok() },
    )
    .await
}

/// The studio's progress bar for `job` as `(value, max, status, simulated badge shown)`, once the
/// queue lists the job with a progress value.
async fn queue_progress(browser: &Browser, job: &str) -> Option<(u64, u64, String, bool)> {
    let value = browser
        .eval(&format!(
            "const row = document.querySelector('#studio-queue [data-job-id=\"{job}\"]');
             if (!row) return null;
             const bar = row.querySelector('.progress');
             return {{ value: bar ? bar.dataset.value : '', max: bar ? bar.dataset.max : '',
                      status: row.dataset.status, sim: !!row.querySelector('.badge-simulated') }};"
        ))
        .await;
    let value_of = |key: &str| value[key].as_str().and_then(|s| s.parse::<u64>().ok());
    Some((
        value_of("value")?,
        value_of("max")?,
        value["status"].as_str().unwrap_or_default().to_owned(),
        value["sim"].as_bool().unwrap_or(false),
    ))
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn an_image_submitted_from_the_dashboard_runs_with_live_progress_and_lands_in_the_gallery(
    pool: PgPool,
) {
    studio_job_end_to_end(pool, None).await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn an_image_submitted_from_the_dashboard_runs_through_comfyui_end_to_end(pool: PgPool) {
    let comfy = FakeComfy::start_with(FakeComfyOptions {
        step_delay: Duration::from_millis(150),
        ..FakeComfyOptions::default()
    })
    .await;
    studio_job_end_to_end(pool, Some(&comfy)).await;
    assert_eq!(comfy.accepted_prompts().len(), 1);
}

/// Submits a txt2img job through the studio form and follows it to the gallery: on the
/// simulated GPU, or through `comfy` (the test kit's fake ComfyUI) when given.
async fn studio_job_end_to_end(pool: PgPool, comfy: Option<&FakeComfy>) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = config(&nats, &pool, state.path());
    // Slow enough steps that the bar is seen moving: 20 steps take about three seconds.
    config.render.simulated_step_ms = 150;
    if let Some(comfy) = comfy {
        config.render.backend = render::BackendKind::Comfyui;
        config.render.comfyui_url = comfy.url();
    }
    let simulated = comfy.is_none();
    let stack = nebula::start(
        &config,
        Parts::of(&[
            Part::Gateway,
            Part::Projector,
            Part::Dispatcher,
            Part::RenderWorker,
        ]),
    )
    .await
    .unwrap();
    let addr = stack.gateway_addr.unwrap();

    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/#token={TOKEN}")).await;
    wait_until("the page to go live with the studio loaded", WAIT, || async {
        let ready = browser
            .eval(
                "return document.querySelector('#conn-status').textContent.trim() === 'live'
                    && !!document.querySelector('#studio')
                    && /\\d+ \\/ \\d+/.test(document.querySelector('#studio-queue-count').textContent);",
            )
            .await;
        (ready == true).then_some(())
    })
    .await;
    open_room(&browser, "studio").await;

    // Fill the txt2img form as a user would and submit it.
    let seed = 987_654_321_u64;
    browser
        .eval(&format!(
            "const set = (sel, v) => {{ const e = document.querySelector(sel); e.value = v;
                 e.dispatchEvent(new Event('input', {{ bubbles: true }}));
                 e.dispatchEvent(new Event('change', {{ bubbles: true }})); }};
             set('#studio-mode', 'txt2img');
             set('#studio-prompt', 'a lighthouse on a cliff at dusk');
             set('#studio-seed', '{seed}');
             set('#studio-steps', '20');
             set('#studio-width', '256');
             set('#studio-height', '256');
             document.querySelector('#studio-submit').click();
             return null;"
        ))
        .await;
    let job = wait_until("the job id after submitting", WAIT, || async {
        // (Not `error`: WebDriver's own errors are objects with that key.)
        let answer = browser
            .eval(
                "const err = document.querySelector('#studio-error');
                 return { id: document.querySelector('#studio-notice').dataset.jobId || null,
                          shown: err.hidden ? null : err.textContent };",
            )
            .await;
        assert!(
            answer["shown"].is_null(),
            "the studio showed an error: {answer}"
        );
        answer["id"].as_str().map(str::to_owned)
    })
    .await;

    // The queue shows the job, and its bar moves without a reload.
    let seen = RefCell::new(Vec::<u64>::new());
    let simulated_in_queue = RefCell::new(false);
    let max = wait_until(
        "the progress bar to show two different values below max",
        WAIT,
        || async {
            let (value, max, status, sim) = queue_progress(&browser, &job).await?;
            if sim {
                *simulated_in_queue.borrow_mut() = true;
            }
            if value < max && status == "running" {
                let mut seen = seen.borrow_mut();
                if seen.last() != Some(&value) {
                    seen.push(value);
                }
            }
            let seen = seen.borrow();
            let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
            (distinct.len() >= 2).then_some(max)
        },
    )
    .await;
    let seen = seen.into_inner();
    assert_eq!(max, 20, "one progress step per sampler step");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "progress went backwards: {seen:?}"
    );
    assert_eq!(
        simulated_in_queue.into_inner(),
        simulated,
        "a job on the simulated GPU, and only such a job, is labelled SIMULATED GPU in the queue"
    );

    // It lands in the gallery: the image loads through the token, with its provenance.
    let tile = wait_until("the job's tile with its image loaded", WAIT, || async {
        let tile = browser
            .eval(&format!(
                "const tile = document.querySelector('#studio-gallery [data-job-id=\"{job}\"]');
                 if (!tile) return null;
                 const img = tile.querySelector('img');
                 if (!img || !img.complete || img.naturalWidth === 0) return null;
                 const badge = tile.querySelector('.badge-simulated');
                 return {{ width: img.naturalWidth, height: img.naturalHeight, src: img.src,
                          provenance: tile.querySelector('.provenance').textContent,
                          badge: badge ? badge.textContent : null,
                          badge_visible: !!badge && badge.getBoundingClientRect().width > 0 }};"
            ))
            .await;
        (!tile.is_null()).then_some(tile)
    })
    .await;
    assert_eq!(tile["width"], 256, "{tile}");
    assert_eq!(tile["height"], 256, "{tile}");
    assert!(
        tile["src"].as_str().unwrap().starts_with("blob:"),
        "the artifact is fetched with the token into a blob URL: {tile}"
    );
    let provenance = tile["provenance"].as_str().unwrap();
    assert!(provenance.contains(&seed.to_string()), "{tile}");
    assert!(provenance.contains("dashboard"), "the trigger: {tile}");
    if simulated {
        assert!(provenance.contains("simulated"), "{tile}");
        assert_eq!(tile["badge"], "SIMULATED GPU", "{tile}");
        assert_eq!(tile["badge_visible"], true, "{tile}");
    } else {
        assert!(provenance.contains("comfyui"), "{tile}");
        assert!(tile["badge"].is_null(), "{tile}");
    }

    if simulated {
        share_from_the_gallery(&browser, &job).await;
    }

    // Finished work leaves the queue by itself.
    wait_until("the finished job to leave the queue", WAIT, || async {
        let gone = browser
            .eval(&format!(
                "return !document.querySelector('#studio-queue [data-job-id=\"{job}\"]');"
            ))
            .await;
        (gone == true).then_some(())
    })
    .await;
    browser
        .eval("document.querySelector('#studio').scrollIntoView(); return null;")
        .await;
    let png = browser.screenshot_png().await;
    let name = if simulated {
        "nebula-studio.png"
    } else {
        "nebula-studio-comfyui.png"
    };
    let _ = std::fs::write(std::env::temp_dir().join(name), &png);
    stack.shutdown().await;
}

/// The tile's share button makes a public link (shown at once, and it opens the image without
/// a token); unshare takes it away and the link stops working.
async fn share_from_the_gallery(browser: &Browser, job: &str) {
    let tile = format!("document.querySelector('#studio-gallery [data-job-id=\"{job}\"]')");
    browser
        .eval(&format!(
            "{tile}.querySelector('button[data-action=share]').click(); return null;"
        ))
        .await;
    let link = wait_until("the tile's public link", WAIT, || async {
        let shown = browser
            .eval(&format!(
                "const t = {tile}; const row = t.querySelector('.tile-share');
                 const err = t.querySelector('.tile-share-error');
                 return {{ shown: !row.hidden && row.getBoundingClientRect().height > 0,
                          url: row.querySelector('.share-link').href,
                          text: row.querySelector('.share-link').textContent,
                          button: !t.querySelector('button[data-action=share]').hidden,
                          failed: err.hidden ? null : err.textContent }};"
            ))
            .await;
        // (Not `error`: WebDriver's own errors are objects with that key.)
        assert!(shown["failed"].is_null(), "{shown}");
        (shown["shown"] == true).then_some(shown)
    })
    .await;
    assert_eq!(
        link["button"], false,
        "shared: the share button gives way to the link"
    );
    let url = link["url"].as_str().unwrap().to_owned();
    assert_eq!(link["text"], url.as_str());
    assert!(url.contains("/share/"), "{link}");
    let opened = wait_until("the link to open the image", WAIT, || async {
        let response = reqwest::get(&url).await.ok()?;
        (response.status() == 200).then_some(response)
    })
    .await;
    assert_eq!(opened.headers()["content-type"], "image/png");
    browser
        .eval(&format!(
            "{tile}.scrollIntoView({{ block: 'end' }}); return null;"
        ))
        .await;
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(std::env::temp_dir().join("nebula-studio-shared.png"), &png);

    browser
        .eval(&format!(
            "{tile}.querySelector('button[data-action=unshare]').click(); return null;"
        ))
        .await;
    wait_until("the link to leave the tile", WAIT, || async {
        let gone = browser
            .eval(&format!(
                "const t = {tile}; return t.querySelector('.tile-share').hidden
                    && !t.querySelector('button[data-action=share]').hidden;"
            ))
            .await;
        (gone == true).then_some(())
    })
    .await;
    wait_until("the unshared link to stop", WAIT, || async {
        let response = reqwest::get(&url).await.ok()?;
        (response.status() == 404).then_some(())
    })
    .await;
}

const GUILD: u64 = 900_000_000_000_000_077;
const BOT_TOKEN: &str = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.fake.dashboard";

/// Sets a form control as a user would.
const SET: &str = "const set = (sel, v) => { const e = document.querySelector(sel);
    if (e.type === 'checkbox') e.checked = v; else e.value = v;
    e.dispatchEvent(new Event('input', { bubbles: true }));
    e.dispatchEvent(new Event('change', { bubbles: true })); };";

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn chat_settings_are_edited_and_commands_followed_from_the_dashboard(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let discord = FakeDiscord::start(FakeDiscordOptions {
        token: BOT_TOKEN.into(),
        guilds: vec![GUILD],
    })
    .await;
    let stream = FakeStream::start(FakeStreamOptions::default()).await;
    let mut config = config(&nats, &pool, state.path());
    common::post_to(&mut config, &stream);
    config.chat.shared.redis_prefix = format!("test:{}", uuid::Uuid::new_v4());
    config.chat.discord.token = Some(BOT_TOKEN.into());
    config.chat.discord.api_url = Some(discord.api_url());
    config.chat.discord.progress_every_secs = 0;
    let stack = nebula::start(
        &config,
        Parts::of(&[
            Part::Gateway,
            Part::Projector,
            Part::Dispatcher,
            Part::RenderWorker,
            Part::Chat,
            Part::Posting,
        ]),
    )
    .await
    .unwrap();
    let addr = stack.gateway_addr.unwrap();
    wait_until("the bot to register its commands", WAIT, || async {
        discord.commands(GUILD).map(|_| ())
    })
    .await;

    let browser = Browser::start().await;
    // The token arrives once in the address and is kept; then a deep link opens its room on load.
    browser.goto(&format!("http://{addr}/#token={TOKEN}")).await;
    wait_until("the token to be kept", WAIT, || async {
        let kept = browser
            .eval("return !!localStorage.getItem('nebula.token') && !location.hash.includes('token');")
            .await;
        (kept == true).then_some(())
    })
    .await;
    browser.goto("about:blank").await;
    browser.goto(&format!("http://{addr}/#/chat")).await;
    wait_until("the page to go live", WAIT, || async {
        let live = browser
            .eval("return document.querySelector('#conn-status').textContent.trim() === 'live' && !!document.querySelector('#chat');")
            .await;
        (live == true).then_some(())
    })
    .await;
    let opened = browser
        .eval(&format!(
            "return {{ room: (() => {{ {SHOWN_ROOM} }})(), hash: location.hash }};"
        ))
        .await;
    assert_eq!(
        opened["room"], "chat",
        "the deep link opens the chat room, marked in the navigation: {opened}"
    );
    assert_eq!(opened["hash"], "#/chat", "{opened}");

    // Open the guild: the defaults, nothing saved yet.
    browser
        .eval(&format!(
            "{SET} set('#chat-platform', 'discord'); set('#chat-scope', '{GUILD}');
             document.querySelector('#chat-open').click(); return null;"
        ))
        .await;
    let opened = wait_until("the guild's settings in the form", WAIT, || async {
        let form = browser
            .eval(
                "const f = document.querySelector('#chat-settings-form');
                 if (f.hidden || !f.dataset.scope) return null;
                 return { scope: f.dataset.scope, state: document.querySelector('#chat-settings-state').textContent,
                          rules: [...document.querySelectorAll('#chat-rules tr')].map(r => r.dataset.command),
                          cooldown: document.querySelector('#chat-cooldown').value,
                          nickname_shown: !document.querySelector('#chat-nickname').closest('[data-platform]').hidden };",
            )
            .await;
        (!form.is_null()).then_some(form)
    })
    .await;
    assert_eq!(opened["scope"], GUILD.to_string());
    assert!(opened["state"].as_str().unwrap().contains("defaults"));
    assert_eq!(
        opened["rules"],
        serde_json::json!(["imagine", "status", "queue", "cancel"])
    );
    assert_eq!(opened["cooldown"], "30");
    assert_eq!(opened["nickname_shown"], true);

    // A value the server refuses: its reason is shown, nothing is saved.
    browser
        .eval(&format!(
            "{SET} set('#chat-avatar', 'ftp://example.com/a.png');
             document.querySelector('#chat-save').click(); return null;"
        ))
        .await;
    let refused = wait_until("the refusal", WAIT, || async {
        let shown = browser
            .eval("const e = document.querySelector('#chat-error'); return e.hidden ? null : e.textContent;")
            .await;
        shown.as_str().map(str::to_owned)
    })
    .await;
    assert!(refused.contains("avatar must be"), "{refused}");

    // Nickname, a shorter cooldown, /queue only for role 777: saved, and the bot renames itself.
    browser
        .eval(&format!(
            "{SET} set('#chat-avatar', ''); set('#chat-nickname', 'Studio Bot'); set('#chat-cooldown', '5');
             set('#chat-refusals', 'summary');
             set('#chat-rules tr[data-command=queue] input[name=roles]', '777');
             document.querySelector('#chat-save').click(); return null;"
        ))
        .await;
    wait_until("the saved notice", WAIT, || async {
        let notice = browser
            .eval("return document.querySelector('#chat-notice').textContent;")
            .await;
        (notice == "saved").then_some(())
    })
    .await;
    wait_until("the bot's new nickname in the guild", WAIT, || async {
        (discord.member(GUILD)?["nick"] == "Studio Bot").then_some(())
    })
    .await;
    // The read model catches up with the saved event (the bot acts on the event itself).
    let saved = wait_until("the saved settings in the read model", WAIT, || async {
        let saved = common::http()
            .get(format!("http://{addr}/api/chat/settings/discord/{GUILD}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()?;
        (saved["settings"]["cooldown_secs"] == 5).then_some(saved)
    })
    .await;
    assert_eq!(saved["settings"]["cooldown_secs"], 5);
    assert_eq!(saved["settings"]["refusals"], "summary");
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(std::env::temp_dir().join("nebula-chat.png"), &png);
    assert_eq!(
        saved["settings"]["commands"]["queue"]["roles"],
        serde_json::json!(["777"])
    );
    wait_until(
        "the guild in the list of servers with settings",
        WAIT,
        || async {
            let known = browser
                .eval(&format!(
                    "return !!document.querySelector('#chat-known button[data-scope=\"{GUILD}\"]');"
                ))
                .await;
            (known == true).then_some(())
        },
    )
    .await;

    // A /imagine in Discord appears in the live log, and its job's outcome follows.
    let interaction = discord.interact(
        GUILD,
        910_000_000_000_000_001,
        &DiscordMember::new(4242, "Viewer"),
        "imagine",
        serde_json::json!({"prompt": "a comet over the sea", "size": "64x64", "steps": 4}),
    );
    let command_id = events::chat::command_id(events::chat::Platform::Discord, &interaction.id);
    let entry = wait_until("the command's job to show as completed in the log", WAIT, || async {
        let entry = browser
            .eval(&format!(
                "const li = document.querySelector('#chat-log li[data-command-id=\"{command_id}\"]');
                 if (!li) return null;
                 return {{ outcome: li.querySelector('.chat-outcome').textContent,
                          typed: li.querySelector('.chat-typed').textContent,
                          user: li.querySelector('.chat-user').textContent,
                          reply: li.querySelector('.chat-reply').textContent,
                          correlation: li.dataset.correlationId }};"
            ))
            .await;
        (entry["outcome"] == "job completed" && entry["reply"].as_str()?.contains("here it is"))
            .then_some(entry)
    })
    .await;
    assert!(
        entry["typed"]
            .as_str()
            .unwrap()
            .starts_with("/imagine a comet over the sea"),
        "{entry}"
    );
    assert_eq!(entry["user"], "Viewer");

    // Opened, it lists what the command caused, in one correlation.
    browser
        .eval(&format!(
            "document.querySelector('#chat-log li[data-command-id=\"{command_id}\"] .chat-row').click(); return null;"
        ))
        .await;
    let caused = wait_until("everything the command caused", WAIT, || async {
        let types = browser
            .eval(&format!(
                "const li = document.querySelector('#chat-log li[data-command-id=\"{command_id}\"]');
                 return li ? [...li.querySelectorAll('.chat-caused-item')].map(i => i.dataset.type) : [];"
            ))
            .await;
        let types: Vec<String> = serde_json::from_value(types).ok()?;
        types
            .iter()
            .any(|t| t == "chat.reply_sent")
            .then_some(types)
    })
    .await;
    for expected in [
        "chat.command_received",
        "chat.job_started",
        "render.job_requested",
        "render.job_completed",
        "chat.reply_sent",
    ] {
        assert!(
            caused.iter().any(|t| t == expected),
            "{expected} in {caused:?}"
        );
    }
    // "show in the event feed" opens the Events room filtered to that correlation.
    let shown = browser
        .eval(&format!(
            "document.querySelector('#chat-log li[data-command-id=\"{command_id}\"] button[data-action=filter]').click();
             return {{ filter: document.querySelector('#event-filter').value, room: (() => {{ {SHOWN_ROOM} }})() }};"
        ))
        .await;
    assert_eq!(shown["filter"], entry["correlation"], "{shown}");
    assert_eq!(shown["room"], "events", "{shown}");

    // The image, shared from its gallery tile in the Studio through the Stream Bot room, reaches
    // every platform; each destination's outcome shows as it is recorded.
    open_room(&browser, "studio").await;
    let sha256 = wait_until("the image in the gallery with a post button", WAIT, || async {
        let sha = browser
            .eval(
                "const b = document.querySelector('#studio-gallery button[data-action=post-artifact]');
                 if (!b) return null; b.click(); return b.dataset.sha256;",
            )
            .await;
        sha.as_str().map(str::to_owned)
    })
    .await;
    let attached = browser
        .eval(&format!(
            "return {{ room: (() => {{ {SHOWN_ROOM} }})(),
                      shown: !document.querySelector('#post-artifact').hidden,
                      sha: document.querySelector('#post-artifact-sha').title }};"
        ))
        .await;
    assert_eq!(
        attached["room"], "streambot",
        "the tile's post button opens the Stream Bot: {attached}"
    );
    assert_eq!(attached["shown"], true, "{attached}");
    assert_eq!(attached["sha"], sha256.as_str(), "{attached}");
    browser
        .eval(&format!(
            "{SET} set('#post-text', 'Fresh from the studio');
             document.querySelector('#post-submit').click(); return null;"
        ))
        .await;
    let outcomes = wait_until("every destination delivered", WAIT, || async {
        let outcomes = browser
            .eval(
                "return [...document.querySelectorAll('#post-list .post-entry [data-destination]')]
                    .map(b => b.dataset.destination + ':' + b.dataset.status);",
            )
            .await;
        let outcomes: Vec<String> = serde_json::from_value(outcomes).ok()?;
        (outcomes.len() == 3 && outcomes.iter().all(|o| o.ends_with(":delivered")))
            .then_some(outcomes)
    })
    .await;
    assert_eq!(
        outcomes,
        ["kick:delivered", "twitch:delivered", "youtube:delivered"]
    );
    let notice = browser
        .eval("return document.querySelector('#post-notice').textContent;")
        .await;
    assert_eq!(notice, "posted");
    let posted = stream.posted();
    assert_eq!(posted.len(), 3);
    for message in &posted {
        assert!(
            message.text.starts_with("Fresh from the studio"),
            "{message:?}"
        );
        // The link is the image's share link (a random token, not its hash), and opens it.
        let link = message.text.split_whitespace().last().unwrap();
        let token = link
            .rsplit_once("/share/")
            .and_then(|(_, file)| file.strip_suffix(".png"))
            .unwrap_or_default();
        assert!(domain::render::is_share_token(token), "{message:?}");
        let image = reqwest::get(link).await.unwrap().bytes().await.unwrap();
        assert_eq!(render::artifacts::sha256_hex(&image), sha256);
    }
    stack.shutdown().await;
}
