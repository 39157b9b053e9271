//! Followed container logs, end to end against the real Docker engine: over the websocket,
//! within each viewer's rate, and in the Containers room.

use crate::common;
use crate::containers::{NODE, Stack, control, listed, node_agent};

use serde_json::Value;
use sqlx::PgPool;
use testkit::docker::TestContainer;
use testkit::{DEFAULT_WAIT, wait_until};

/// The next frame of a followed log, as JSON (None when the socket ends or is quiet for 10 s).
async fn next_frame(socket: &mut common::Ws) -> Option<Value> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .ok()??
            .ok()?;
        match message {
            Message::Text(text) => return serde_json::from_str(&text).ok(),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// A followed log over a websocket: new lines as they come, in order; a container that writes
/// far faster than a viewer's cap is cut to the cap with what was left out counted; the follow
/// ends when the container stops; an unknown container is refused before the upgrade.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_followed_log_streams_new_lines_within_each_viewers_rate(pool: PgPool) {
    const CAP: u64 = 32 * 1024;
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, |config| {
        config.gateway.log_follow_bytes_per_sec = CAP
    })
    .await;
    let agent = node_agent(&config, &nats, testkit::docker::host()).await;
    let ticker = TestContainer::run(
        "nebula-follow",
        &[],
        &[
            "sh",
            "-c",
            "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.05; done",
        ],
    );
    let chatty = TestContainer::run(
        "nebula-chatty",
        &[],
        &[
            "sh",
            "-c",
            "while true; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done",
        ],
    );
    listed(&base, &chatty.name, "running").await;
    let addr = running.gateway_addr.unwrap();
    let path = |name: &str| format!("/api/nodes/{NODE}/containers/{name}/logs/follow?tail=0");

    let mut socket = common::ws_at(addr, &path(&ticker.name), common::TOKEN)
        .await
        .unwrap();
    let mut seen: Vec<u64> = Vec::new();
    while seen.len() < 20 {
        let frame = next_frame(&mut socket)
            .await
            .expect("a frame of the ticker's log");
        for line in frame["lines"].as_array().unwrap() {
            let text = line["text"].as_str().unwrap();
            seen.push(text.strip_prefix("line-").unwrap().parse().unwrap());
        }
    }
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");

    // The Containers room follows it too: new lines appear under the last ones read.
    {
        use testkit::webdriver::Browser;
        let browser = Browser::start().await;
        crate::dashboard_access::sign_in(
            &browser,
            &format!("{base}/#token={}", common::TOKEN),
            "admin · admin",
        )
        .await;
        crate::dashboard::open_room(&browser, "containers").await;
        let row = format!(
            "document.querySelector('#containers tr[data-container=\"{}\"]')",
            ticker.name
        );
        wait_until("the ticker's row", DEFAULT_WAIT, || async {
            browser
                .eval(&format!("return {row} ? true : null;"))
                .await
                .as_bool()
        })
        .await;
        browser
            .eval(&format!(
                "{row}.querySelector('button[data-action=logs]').click(); return null;"
            ))
            .await;
        let last_read = |text: &str| {
            text.lines()
                .filter_map(|l| l.strip_prefix("line-")?.parse::<u64>().ok())
                .max()
        };
        let first = wait_until("the last lines read", DEFAULT_WAIT, || async {
            let text = browser
                .eval("return document.querySelector('#container-log-text').textContent;")
                .await;
            last_read(text.as_str()?)
        })
        .await;
        browser
            .eval("document.getElementById('container-log-follow').click(); return null;")
            .await;
        let followed = wait_until("new lines followed", DEFAULT_WAIT, || async {
            let text = browser
                .eval("return document.querySelector('#container-log-text').textContent;")
                .await;
            let text = text.as_str()?.to_owned();
            (last_read(&text)? > first + 10).then_some(text)
        })
        .await;
        let note = browser
            .eval("return document.getElementById('container-log-follow-note').textContent;")
            .await;
        assert!(note.as_str().unwrap().contains("following"), "{note}");
        let numbers: Vec<u64> = followed
            .lines()
            .filter_map(|l| l.strip_prefix("line-")?.parse().ok())
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "a gap or a repeat in the followed lines: {numbers:?}"
        );
        let png = browser.screenshot_png().await;
        let _ = std::fs::write(std::env::temp_dir().join("nebula-follow.png"), &png);
    }

    // The chatty one is cut to the viewer's cap; what was left out is counted.
    let mut chatty_socket = common::ws_at(addr, &path(&chatty.name), common::TOKEN)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (mut kept, mut skipped) = (0u64, 0u64);
    while started.elapsed() < std::time::Duration::from_secs(3) {
        let frame = next_frame(&mut chatty_socket)
            .await
            .expect("a frame of the chatty log");
        kept += frame["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["text"].as_str().unwrap().len() as u64 + 1)
            .sum::<u64>();
        skipped += frame["skipped_bytes"].as_u64().unwrap_or(0);
    }
    let allowed = CAP + (started.elapsed().as_secs_f64() * CAP as f64) as u64;
    assert!(
        kept <= allowed,
        "{kept} bytes kept, at most {allowed} allowed"
    );
    assert!(skipped > kept, "{skipped} bytes skipped, {kept} kept");
    drop(chatty_socket);

    // Stopped, the follow says so and ends.
    testkit::docker::docker(&["stop", "-t", "0", &ticker.name]);
    let ended = loop {
        let frame = next_frame(&mut socket)
            .await
            .expect("the end of the follow");
        if !frame["ended"].is_null() {
            break frame["ended"].as_str().unwrap().to_owned();
        }
    };
    assert!(ended.contains("stopped"), "{ended}");

    let refused = common::ws_at(addr, &path("no-such-container"), common::TOKEN).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected a 404, got {other:?}"),
    }
    agent.shutdown().await;
    running.shutdown().await;
}
