//! (a) An agent heartbeat reaches the dashboard in a real headless Chromium, live; and the page
//! reconnects and resumes after the gateway restarts.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TOKEN, config};
use nebula::Parts;
use serde_json::Value;
use sqlx::PgPool;
use testkit::webdriver::Browser;
use testkit::{NatsServer, wait_until};

const WAIT: Duration = Duration::from_secs(30);

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
    let row: Value = browser
        .eval(
            "const row = document.querySelector('#nodes tr[data-node-id=\"test-node\"]');
             return { cpu: row.querySelector('.cpu').textContent, ram: row.querySelector('.ram').textContent,
                      disk: row.querySelector('.disk').textContent, gpus: row.querySelector('.gpus').textContent,
                      status: row.querySelector('.status').textContent,
                      conn: document.querySelector('#conn-status').textContent.trim(),
                      feed: [...document.querySelectorAll('#events li')].map(li => li.dataset.type),
                      token_in_url: location.hash.includes('token') };",
        )
        .await;
    assert!(row["cpu"].as_str().unwrap().contains('%'), "{row}");
    assert!(row["ram"].as_str().unwrap().contains("GiB"), "{row}");
    assert!(row["status"].as_str().unwrap().contains("online"), "{row}");
    assert_eq!(row["conn"], "live", "{row}");
    assert!(
        row["feed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "node.registered"),
        "{row}"
    );
    assert_eq!(
        row["token_in_url"], false,
        "the token must be moved out of the address bar"
    );
    let png = browser.screenshot_png().await;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
    let _ = std::fs::write(std::env::temp_dir().join("nebula-dashboard.png"), &png);

    // Restart the gateway on the same port; the page reconnects and resumes by itself.
    stack.shutdown().await;
    wait_until("the page to notice the gateway is gone", WAIT, || async {
        let conn = browser
            .eval("return document.querySelector('#conn-status').textContent.trim();")
            .await;
        (conn != "live").then_some(())
    })
    .await;
    config.http_addr = addr;
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
