//! The dashboard signed in as a viewer and as an operator, in a real headless Chromium: it says
//! who is signed in, opens the live feed without a token in any address, locks what the role
//! may not do, and what an operator does is recorded under the operator's name.

use crate::common;
use crate::dashboard::open_room;

use std::time::Duration;

use common::{config, create_token};
use nebula::Parts;
use serde_json::Value;
use sqlx::PgPool;
use testkit::webdriver::Browser;
use testkit::{NatsServer, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// Signs in through the address fragment and waits until the page says who it is and is live.
pub(crate) async fn sign_in(browser: &Browser, url: &str, expected: &str) {
    browser.goto(url).await;
    wait_until(
        &format!("{expected} to be signed in and live"),
        WAIT,
        || async {
            let state = browser
                .eval(
                    "const who = document.querySelector('#whoami');
                 return { who: who ? who.textContent.trim() : null,
                          conn: document.querySelector('#conn-status').textContent.trim(),
                          hash: location.hash };",
                )
                .await;
            (state["who"] == expected
                && state["conn"] == "live"
                && !state["hash"].as_str()?.contains("token"))
            .then_some(())
        },
    )
    .await;
}

/// `{locked, enabled}`: how many of the room's controls that need `role` are locked, and how
/// many are usable.
async fn controls(browser: &Browser, room: &str, role: &str) -> Value {
    browser
        .eval(&format!(
            "const els = [...document.querySelectorAll('section.room[data-room=\"{room}\"] [data-needs=\"{role}\"]')];
             const usable = (e) => !e.disabled && !e.classList.contains('locked');
             return {{ total: els.length,
                      locked: els.filter(e => e.classList.contains('locked') && (e.title || '').includes('{role}')).length,
                      enabled: els.filter(usable).length }};"
        ))
        .await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_viewer_watches_and_an_operator_acts_under_their_names(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let stack = nebula::start(&config(&nats, &pool, state.path()), Parts::ALL)
        .await
        .unwrap();
    let addr = stack.gateway_addr.unwrap();
    let base = format!("http://{addr}");
    let viewer = create_token(&base, "wall", "viewer").await;
    let operator = create_token(&base, "ops", "operator").await;

    // A viewer: sees everything live, may do nothing.
    let browser = Browser::start().await;
    sign_in(
        &browser,
        &format!("{base}/#token={viewer}"),
        "wall · viewer",
    )
    .await;
    open_room(&browser, "studio").await;
    let studio = wait_until(
        "the studio's operator controls to be locked",
        WAIT,
        || async {
            let c = controls(&browser, "studio", "operator").await;
            (c["total"].as_u64()? >= 2 && c["locked"] == c["total"] && c["enabled"] == 0)
                .then_some(c)
        },
    )
    .await;
    assert!(studio["total"].as_u64().unwrap() >= 2, "{studio}");
    let access_link = browser
        .eval("const a = document.querySelector('#nav a.nav-link[data-room=\"access\"]'); return !!a && a.offsetParent !== null;")
        .await;
    assert_eq!(access_link, false, "a viewer is not shown the Access room");
    let png = browser.screenshot_png().await;
    std::fs::write(std::env::temp_dir().join("nebula-viewer.png"), png).unwrap();

    // Signing out forgets the token and asks for one.
    browser
        .eval("document.querySelector('#sign-out').click(); return null;")
        .await;
    wait_until("the sign-in form after signing out", WAIT, || async {
        let state = browser
            .eval("return { form: !document.querySelector('#token-form').hidden, stored: localStorage.getItem('nebula.token') };")
            .await;
        (state["form"] == true && state["stored"].is_null()).then_some(())
    })
    .await;

    // An operator: may run the Studio, not change settings; the pause is recorded as ops.
    sign_in(
        &browser,
        &format!("{base}/?as=ops#token={operator}"),
        "ops · operator",
    )
    .await;
    open_room(&browser, "studio").await;
    wait_until("the studio's controls to be usable", WAIT, || async {
        let c = controls(&browser, "studio", "operator").await;
        (c["total"].as_u64()? >= 2 && c["enabled"] == c["total"]).then_some(())
    })
    .await;
    browser
        .eval("document.querySelector('#studio-pause').click(); return null;")
        .await;
    let bus = common::bus(&nats).await;
    let paused = wait_until("the pause to be recorded", WAIT, || async {
        let queue = common::envelopes(&bus, "render_queue", domain::render::QUEUE_ID).await;
        queue
            .into_iter()
            .find(|e| e.event_type == "render.queue_paused")
    })
    .await;
    assert_eq!(paused.actor, events::Actor::User("ops".into()));
    open_room(&browser, "chat").await;
    let chat = wait_until(
        "the chat settings to be locked for an operator",
        WAIT,
        || async {
            let c = controls(&browser, "chat", "admin").await;
            (c["total"].as_u64()? >= 1 && c["locked"] == c["total"]).then_some(c)
        },
    )
    .await;
    assert_eq!(chat["enabled"], 0, "{chat}");
    let png = browser.screenshot_png().await;
    std::fs::write(std::env::temp_dir().join("nebula-operator.png"), png).unwrap();

    stack.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn an_admin_issues_and_revokes_a_token_in_the_access_room(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let stack = nebula::start(&config(&nats, &pool, state.path()), Parts::GATEWAY)
        .await
        .unwrap();
    let base = format!("http://{}", stack.gateway_addr.unwrap());
    let browser = Browser::start().await;
    sign_in(
        &browser,
        &format!("{base}/#token={}", common::TOKEN),
        "admin · admin",
    )
    .await;
    open_room(&browser, "access").await;

    browser
        .eval(
            "document.querySelector('#token-name').value = 'kiosk';
             document.querySelector('#token-role').value = 'viewer';
             document.querySelector('#token-expiry').value = '30';
             document.querySelector('#token-create').click(); return null;",
        )
        .await;
    let token = wait_until("the new token to be shown once", WAIT, || async {
        let shown = browser
            .eval("const t = document.querySelector('#token-created'); return t && !t.closest('[hidden]') ? t.value : null;")
            .await;
        shown.as_str().filter(|t| t.starts_with("nbt_kiosk_")).map(str::to_owned)
    })
    .await;
    let whoami = |token: String| {
        let url = format!("{base}/api/whoami");
        async move {
            common::http()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(whoami(token.clone()).await, 200, "the shown token works");
    let row = wait_until("the token's row", WAIT, || async {
        let row = browser
            .eval(
                "const r = document.querySelector('#tokens-table tr[data-name=\"kiosk\"]');
                 return r ? { status: r.dataset.status, text: r.textContent } : null;",
            )
            .await;
        (row["status"] == "active").then_some(row)
    })
    .await;
    assert!(row["text"].as_str().unwrap().contains("viewer"), "{row}");
    assert!(
        !row["text"].as_str().unwrap().contains(&token[12..]),
        "the listing never shows it"
    );
    let png = browser.screenshot_png().await;
    std::fs::write(std::env::temp_dir().join("nebula-access.png"), png).unwrap();

    // Revoked from the page (after the confirmation): the token stops at once.
    browser
        .eval(
            "window.confirm = () => true;
             document.querySelector('#tokens-table tr[data-name=\"kiosk\"] [data-action=\"revoke\"]').click();
             return null;",
        )
        .await;
    wait_until("the row to say revoked", WAIT, || async {
        let status = browser
            .eval("const r = document.querySelector('#tokens-table tr[data-name=\"kiosk\"]'); return r ? r.dataset.status : null;")
            .await;
        (status == "revoked").then_some(())
    })
    .await;
    assert_eq!(whoami(token).await, 401);
    stack.shutdown().await;
}
