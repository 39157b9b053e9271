//! The first-run wizard, the whole path in Chromium on a fresh install: signed in with the
//! bootstrap token, this node named and tagged, another node's credentials made with the exact
//! commands that join it, tokens into the vault, a domain, a first test render on the simulated
//! GPU; every step recorded, the wizard resuming where it stopped after a reload, put away and
//! reopened.

use crate::common::{self, call};

use nebula::{Part, Parts};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::webdriver::Browser;
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};

/// The step the wizard shows now (its title) and the marks of the step list.
async fn wizard(browser: &Browser) -> Value {
    browser
        .eval(
            "const title = document.querySelector('#setup-step .setup-title');
             return { title: title ? title.textContent : null,
                      done: Array.from(document.querySelectorAll('#setup-steps li[data-step]')).filter((li) => li.dataset.done === 'true').map((li) => li.dataset.step) };",
        )
        .await
}

async fn at_step(browser: &Browser, title: &str) {
    wait_until(&format!("the wizard at {title}"), DEFAULT_WAIT, || async {
        (wizard(browser).await["title"] == title).then_some(())
    })
    .await;
}

/// Fills the current step's inputs (`name` → value) and presses its main button.
async fn fill_and_go(browser: &Browser, values: &[(&str, &str)]) {
    let sets: String = values
        .iter()
        .map(|(name, value)| {
            format!(
                "document.querySelector('#setup-step input[name=\"{name}\"]').value = {};",
                json!(value)
            )
        })
        .collect();
    browser
        .eval(&format!(
            "{sets} document.querySelector('#setup-step button[data-action=do]').click(); return true;"
        ))
        .await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn the_wizard_walks_an_admin_through_the_first_setup(pool: PgPool) {
    let state = tempfile::tempdir().unwrap();
    // The stack's own nats-server, as `cargo xtask up` runs it: the join reloads it.
    let nats = NatsServer::start_for_site(state.path());
    let mut config = common::config(&nats, &pool, state.path());
    config.render.simulated_step_ms = 10;
    config.domains.caddy_admin = String::new(); // no Caddy here: the domain is recorded only
    let parts = Parts::of(&[
        Part::Gateway,
        Part::Projector,
        Part::Dispatcher,
        Part::RenderWorker,
    ]);
    let running = nebula::start(&config, parts).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let (_, fresh) = call(
        Method::GET,
        format!("{base}/api/setup"),
        common::TOKEN,
        &json!(null),
    )
    .await;
    assert_eq!(fresh["next"], "sign_in", "{fresh}");
    let node = fresh["node_id"].as_str().unwrap().to_owned();

    let browser = Browser::start().await;
    crate::dashboard_access::sign_in(
        &browser,
        &format!("{base}/#token={}", common::TOKEN),
        "admin · admin",
    )
    .await;
    // A fresh install: the Overview leads to the wizard.
    let lead = wait_until("the overview's setup card", DEFAULT_WAIT, || async {
        let text = browser
            .eval("const c = document.querySelector('#overview-setup'); return c && !c.hidden ? c.textContent : null;")
            .await;
        text.as_str().map(str::to_owned)
    })
    .await;
    assert!(lead.contains("0 of 6 steps"), "{lead}");
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(std::env::temp_dir().join("nebula-overview-setup.png"), &png);
    crate::dashboard::open_room(&browser, "setup").await;

    at_step(&browser, "Sign in").await;
    fill_and_go(&browser, &[]).await;
    at_step(&browser, "Name this node").await;
    fill_and_go(&browser, &[("site", "attic lab"), ("tags", "prod, GPU")]).await;
    at_step(&browser, "Add another node").await;
    fill_and_go(&browser, &[("node", "gpu-2")]).await;
    let command = wait_until("the join commands", DEFAULT_WAIT, || async {
        let text = browser
            .eval("const c = document.querySelector('#setup-step .setup-command'); return c && !c.hidden ? c.textContent : null;")
            .await;
        text.as_str().map(str::to_owned)
    })
    .await;
    assert!(
        command.contains("NEBULA_AGENT__NODE_ID=gpu-2 nebula agent"),
        "{command}"
    );
    assert!(
        command.contains(&format!("NATS_URL={}", config.nats_url)),
        "{command}"
    );
    let seed_file = state.path().join("nats-auth").join("agent-gpu-2.nk");
    let seed = std::fs::read_to_string(&seed_file).unwrap();
    assert!(command.contains(seed.trim()), "the seed in the command");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&seed_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let authorization = std::fs::read_to_string(
        state
            .path()
            .join("nats-auth")
            .join(natsauth::AUTHORIZATION_FILE),
    )
    .unwrap();
    assert!(
        authorization.contains("gpu-2"),
        "the new node in authorization.conf"
    );
    assert!(
        command.contains("# done: nats-server (pid"),
        "the stack's nats-server reloaded: {command}"
    );
    // The new node's agent signs in with the seed it was given, and is there.
    let mut joined = config.clone();
    joined.agent.node_id = Some("gpu-2".into());
    joined.agent.docker_host = String::new();
    joined.nats = bus::NatsAuth::nkey(seed_file.clone());
    let agent = nebula::start(&joined, Parts::AGENT).await.unwrap();
    wait_until("gpu-2 registered", DEFAULT_WAIT, || async {
        let (status, node) = call(
            Method::GET,
            format!("{base}/api/nodes/gpu-2"),
            common::TOKEN,
            &json!(null),
        )
        .await;
        (status == reqwest::StatusCode::OK && node["status"] == "online").then_some(())
    })
    .await;
    common::assert_no_permission_violations(&agent);
    agent.shutdown().await;

    // Reloaded halfway: the wizard resumes at the first step not done.
    browser.eval("location.reload(); return true;").await;
    at_step(&browser, "Chat and platform tokens").await;
    fill_and_go(&browser, &[("secret-discord", "disc-t0ken-value")]).await;
    at_step(&browser, "A domain").await;
    fill_and_go(
        &browser,
        &[
            ("host", "home.example.test"),
            ("upstream", "127.0.0.1:8123"),
        ],
    )
    .await;
    at_step(&browser, "A first test render").await;
    fill_and_go(&browser, &[]).await;
    wait_until("setup done", std::time::Duration::from_secs(60), || async {
        let shown = wizard(&browser).await;
        (shown["done"].as_array()?.len() == 6).then_some(())
    })
    .await;
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(std::env::temp_dir().join("nebula-setup.png"), &png);

    // What each step did is real, and recorded (never a secret).
    let (_, setup) = call(
        Method::GET,
        format!("{base}/api/setup"),
        common::TOKEN,
        &json!(null),
    )
    .await;
    assert_eq!(setup["next"], Value::Null, "{setup}");
    let (_, tags) = call(
        Method::GET,
        format!("{base}/api/nodes/{node}/tags"),
        common::TOKEN,
        &json!(null),
    )
    .await;
    assert_eq!(tags["tags"], json!(["prod", "gpu"]));
    let (_, secrets) = call(
        Method::GET,
        format!("{base}/api/secrets"),
        common::TOKEN,
        &json!(null),
    )
    .await;
    assert!(secrets.to_string().contains("discord"));
    let (_, domains) = call(
        Method::GET,
        format!("{base}/api/domains"),
        common::TOKEN,
        &json!(null),
    )
    .await;
    assert_eq!(domains["domains"][0]["host"], "home.example.test");
    let bus = common::bus(&nats).await;
    let log = common::envelopes(&bus, "setup", "site").await;
    assert_eq!(
        log.iter()
            .filter(|e| e.event_type == "setup.step_done")
            .count(),
        6
    );
    let everything =
        serde_json::to_string(&log.iter().map(|e| &e.data).collect::<Vec<_>>()).unwrap();
    assert!(!everything.contains("disc-t0ken-value") && !everything.contains(seed.trim()));

    // Put away, then reopened from the navigation.
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/setup/dismiss"),
        common::TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    crate::dashboard::open_room(&browser, "overview").await;
    crate::dashboard::open_room(&browser, "setup").await;
    wait_until("the wizard reopened", DEFAULT_WAIT, || async {
        let (_, setup) = call(
            Method::GET,
            format!("{base}/api/setup"),
            common::TOKEN,
            &json!(null),
        )
        .await;
        (setup["dismissed"] == false).then_some(())
    })
    .await;
    running.shutdown().await;
}
