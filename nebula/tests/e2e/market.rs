//! The marketplace end to end: the built-in templates and a catalog by URL (its malformed
//! template reported by name, the rest usable; an unreachable catalog reported), a template
//! installed from the dashboard as an app of the Deploy Center on the real Docker engine and
//! serving, a secret input kept in the vault and nowhere on the log, and an install whose image
//! the node lacks failing clearly.

use crate::common::{self, call};
use crate::containers::{NODE, Stack, control, node_agent};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::docker::TEST_IMAGE;
use testkit::{DEFAULT_WAIT, wait_until};

/// A catalog host serving `body`.
fn catalog_server(body: String) -> String {
    let port = common::serve_fixed(body, "application/json");
    format!("http://127.0.0.1:{port}/catalog.json")
}

async fn run_outcome(base: &str, run_id: &str) -> Value {
    common::finished_run(base, common::TOKEN, run_id).await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn templates_install_as_apps_and_broken_catalogs_are_reported(pool: PgPool) {
    let (builtin, _) = marketplace::builtin();
    let mut extra = serde_json::to_value(
        &builtin
            .iter()
            .find(|t| t.id == "uptime-kuma")
            .unwrap()
            .template,
    )
    .unwrap();
    extra["title"] = json!("Uptime Kuma (team build)");
    let catalog = catalog_server(
        json!({"templates": {
            "kuma-team": extra,
            "half-done": {"title": "Half done", "description": "no containers"},
        }})
        .to_string(),
    );
    let dead = format!("http://127.0.0.1:{}/catalog.json", testkit::free_port());
    let (catalog_url, dead_url) = (catalog.clone(), dead.clone());
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, move |config| {
        config.gateway.marketplace_catalogs = vec![catalog_url, dead_url];
        config.deploy.health_interval_secs = 0.2;
    })
    .await;
    let _agent = node_agent(&config, &nats, testkit::docker::host()).await;
    let _cleanup = common::RemoveAppContainers(&["site", "plex"]);

    let market = common::get_json(&common::http(), format!("{base}/api/marketplace")).await;
    let ids: Vec<&str> = market["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    for wanted in [
        "comfyui",
        "home-assistant",
        "ollama",
        "plex",
        "static-web",
        "uptime-kuma",
        "kuma-team",
    ] {
        assert!(ids.contains(&wanted), "{wanted} not in {ids:?}");
    }
    let broken = market["broken"].as_array().unwrap();
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(
        broken
            .iter()
            .any(|b| b["catalog"] == catalog && b["template"] == "half-done"),
        "{broken:?}"
    );
    assert!(
        broken
            .iter()
            .any(|b| b["catalog"] == dead && b["error"].as_str().unwrap().contains("unreachable")),
        "{broken:?}"
    );

    // Refusals: an unknown template, a missing required input, an unknown input.
    let install = |id: &str| format!("{base}/api/marketplace/{id}/install");
    let (status, _) = call(
        Method::POST,
        install("nope"),
        common::TOKEN,
        &json!({"nodes": [NODE]}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = call(
        Method::POST,
        install("plex"),
        common::TOKEN,
        &json!({"nodes": [NODE]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer["error"]["message"],
        "these inputs need a value: PLEX_CLAIM"
    );
    let (status, answer) = call(
        Method::POST,
        install("static-web"),
        common::TOKEN,
        &json!({"nodes": [NODE], "inputs": {"COLOUR": "red"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // A secret input goes to the vault; the image is not on the node, so the run fails clearly
    // and nothing is left running.
    let (status, answer) = call(
        Method::POST,
        install("plex"),
        common::TOKEN,
        &json!({"nodes": [NODE], "inputs": {"PLEX_CLAIM": "claim-5ecr3t"}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let run = run_outcome(&base, answer["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("plexinc/pms-docker"),
        "{run}"
    );
    let (_, app) = call(
        Method::GET,
        format!("{base}/api/apps/plex"),
        common::TOKEN,
        &json!(null),
    )
    .await;
    assert_eq!(
        app["definition"]["containers"][0]["spec"]["env"]["PLEX_CLAIM"],
        "secret:plex-plex-claim"
    );
    assert_eq!(app["definition"]["labels"]["marketplace.template"], "plex");
    let (_, secrets) = call(
        Method::GET,
        format!("{base}/api/secrets"),
        common::TOKEN,
        &json!(null),
    )
    .await;
    assert!(secrets.to_string().contains("plex-plex-claim"), "{secrets}");
    let bus = common::bus(&nats).await;
    let mut log = bus
        .read(bus::StreamName::Events, bus::ReadFrom::Start, None)
        .await
        .unwrap();
    let last = bus.last_seq(bus::StreamName::Events).await.unwrap();
    while let Some(Ok(message)) = futures::StreamExt::next(&mut log).await {
        assert!(!String::from_utf8_lossy(&message.payload).contains("claim-5ecr3t"));
        if message.stream_seq >= last {
            break;
        }
    }

    // The static web server, installed from the Marketplace room, serves the node's folder.
    let site = tempfile::tempdir().unwrap();
    std::fs::write(
        site.path().join("index.html"),
        "hello from the marketplace\n",
    )
    .unwrap();
    let port = testkit::free_port();
    {
        use testkit::webdriver::Browser;
        let browser = Browser::start().await;
        crate::dashboard_access::sign_in(
            &browser,
            &format!("{base}/#token={}", common::TOKEN),
            "admin · admin",
        )
        .await;
        crate::dashboard::open_room(&browser, "market").await;
        let shown = wait_until("the templates and the broken catalogs", DEFAULT_WAIT, || async {
            let shown = browser
                .eval(
                    "const cards = document.querySelectorAll('#market li[data-template]');
                     const form = document.querySelector('form[data-template=\"static-web\"]');
                     if (cards.length < 7 || !form || !form.querySelector('option')) return null;
                     return { cards: cards.length, broken: document.querySelectorAll('#market-broken li').length,
                              secret: document.querySelector('form[data-template=\"plex\"] input[data-input=PLEX_CLAIM]').type };",
                )
                .await;
            shown.is_object().then_some(shown)
        })
        .await;
        assert_eq!(shown["broken"], 2, "{shown}");
        assert_eq!(shown["secret"], "password", "{shown}");
        let png = browser.screenshot_png().await;
        let _ = std::fs::write(std::env::temp_dir().join("nebula-market.png"), &png);
        browser
            .eval(&format!(
                "const form = document.querySelector('form[data-template=\"static-web\"]');
                 const set = (name, value) => {{ const el = form.querySelector('input[name=\"' + name + '\"]'); el.value = value; }};
                 set('app-name', 'site');
                 set('input-PORT', '{port}');
                 set('input-SITE_DIR', '{}');
                 set('input-IMAGE', '{TEST_IMAGE}');
                 form.querySelector('button[type=submit]').click();
                 return true;",
                site.path().display()
            ))
            .await;
        let run_id = wait_until("the install's run", DEFAULT_WAIT, || async {
            let message = browser
                .eval("const m = document.querySelector('form[data-template=\"static-web\"] .market-message'); return m ? m.textContent : null;")
                .await;
            message.as_str()?.split("(run ").nth(1).map(|rest| rest.trim_end_matches(')').to_owned())
        })
        .await;
        let run = run_outcome(&base, &run_id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let served = common::http()
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, "hello from the marketplace\n");
    let (_, app) = call(
        Method::GET,
        format!("{base}/api/apps/site"),
        common::TOKEN,
        &json!(null),
    )
    .await;
    assert_eq!(app["live_release"], 1, "{app}");
    running.shutdown().await;
}
