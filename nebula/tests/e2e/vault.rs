//! The secrets vault end to end: values sealed on disk, set and listed over REST without ever
//! coming back, `secret:NAME` configuration resolved at start and again on rotation, and no
//! value in any event, answer or captured log line.

use crate::common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{TOKEN, http};
use natsauth::Identity;
use nebula::Parts;
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::stream::{Api, FakeStream, FakeStreamOptions};
use testkit::{NatsServer, wait_until};

/// Every log line of this test binary from the first call on (tests run side by side in it;
/// what is searched for is unique to one test).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || Writer(sink.clone()))
            .try_init();
        logs
    })
    .clone()
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            files_contain(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

async fn put_secret(base: &str, name: &str, value: &str) -> Value {
    let response = http()
        .put(format!("{base}/api/secrets/{name}"))
        .bearer_auth(TOKEN)
        .json(&json!({ "value": value }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains(value), "the value came back: {text}");
    serde_json::from_str(&text).unwrap()
}

async fn post_to_kick(base: &str) -> Value {
    let created: Value = http()
        .post(format!("{base}/api/posts"))
        .bearer_auth(TOKEN)
        .json(&json!({"text": "going live", "destinations": ["kick"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let post_id = created["post_id"].as_str().unwrap().to_owned();
    wait_until(
        "the kick post to settle",
        Duration::from_secs(30),
        || async {
            let post: Value = http()
                .get(format!("{base}/api/posts/{post_id}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (post["destinations"]["kick"]["status"] != "pending").then_some(post)
        },
    )
    .await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn secrets_are_sealed_never_shown_and_rotate_into_a_running_service(pool: PgPool) {
    let logs = captured_logs();
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let fake = FakeStream::start(FakeStreamOptions::default()).await;
    let good = FakeStreamOptions::default().kick_token;
    let stale = "kick-stale-8c1d0f5e7a";

    // The gateway creates the vault and its key (0600) on first start.
    let config = common::config(&nats, &pool, state.path());
    let gateway = nebula::start(&config, Parts::GATEWAY).await.unwrap();
    let base = format!("http://{}", gateway.gateway_addr.unwrap());
    let key_file = state.path().join("vault.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert_eq!(
        put_secret(&base, "kick", stale).await,
        json!({"name": "kick", "version": 1})
    );

    // Bad requests are refused plainly.
    for (name, body, status) in [
        ("Kick", json!({"value": "x"}), 400),
        ("kick", json!({"value": ""}), 400),
        ("kick", json!({"value": "x".repeat(70_000)}), 400),
        ("kick", json!({"secret": "x"}), 400),
        ("kick", json!({"value": 5}), 400),
    ] {
        let response = http()
            .put(format!("{base}/api/secrets/{name}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{name} {body}");
    }
    let response = http()
        .delete(format!("{base}/api/secrets/nothing"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // The chat services read `secret:kick` at start: Kick refuses the stale token.
    let mut config = common::config(&nats, &pool, state.path());
    common::post_to(&mut config, &fake);
    config.post.kick.token = Some("secret:kick".into());
    common::sign_in_as(&mut config, &nats, &Identity::Posting);
    let chat = nebula::start(&config, Parts::POSTING).await.unwrap();
    let post = post_to_kick(&base).await;
    assert_eq!(post["destinations"]["kick"]["status"], "failed", "{post}");
    assert_eq!(
        post["destinations"]["kick"]["error"],
        "kick 401: Unauthorized"
    );

    // Rotated: the running Stream Bot posts with the new value.
    assert_eq!(put_secret(&base, "kick", &good).await["version"], 2);
    let delivered = wait_until(
        "the rotated token to be used",
        Duration::from_secs(30),
        || async {
            let post = post_to_kick(&base).await;
            (post["destinations"]["kick"]["status"] == "delivered").then_some(post)
        },
    )
    .await;
    assert_eq!(delivered["destinations"]["kick"]["status"], "delivered");
    assert!(
        fake.calls()
            .iter()
            .any(|(api, status)| *api == Api::Kick && *status == 200)
    );

    // Listed by name, version and who set it; never by value.
    let listing = http()
        .get(format!("{base}/api/secrets"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let secrets: Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(secrets["secrets"][0]["name"], "kick");
    assert_eq!(secrets["secrets"][0]["version"], 2);
    assert_eq!(
        secrets["secrets"][0]["set_by"],
        json!({"kind": "user", "id": "admin"})
    );

    // Nowhere in plain: not on disk, not on the log, not in an answer, not in a log line.
    let bus = common::bus(&nats).await;
    let last = bus.last_seq(bus::StreamName::Events).await.unwrap();
    let mut events = bus
        .read(bus::StreamName::Events, bus::ReadFrom::Start, None)
        .await
        .unwrap();
    let mut messages = Vec::new();
    while messages
        .last()
        .is_none_or(|m: &bus::StoredMessage| m.stream_seq < last)
    {
        let next = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut events),
        );
        messages.push(next.await.unwrap().unwrap().unwrap());
    }
    assert!(
        messages
            .iter()
            .any(|m| m.subject == events::subjects::event("secret", "kick"))
    );
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("secret set"), "the capture works");
    for value in [stale, good.as_str()] {
        assert!(
            !files_contain(nats.store_dir(), value.as_bytes()),
            "{value} on disk"
        );
        for message in &messages {
            let payload = &message.payload;
            assert!(!payload.windows(value.len()).any(|w| w == value.as_bytes()));
        }
        assert!(!listing.contains(value));
        assert!(!logs.contains(value), "{value} in the logs");
    }

    chat.shutdown().await;
    gateway.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_wrong_or_missing_key_is_a_clear_error_at_start(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = common::config(&nats, &pool, state.path());
    let gateway = nebula::start(&config, Parts::GATEWAY).await.unwrap();
    let base = format!("http://{}", gateway.gateway_addr.unwrap());
    put_secret(&base, "discord", "discord-token-3f9a").await;
    gateway.shutdown().await;

    // Another key: refused, naming the problem.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("vault.key"), "ab".repeat(32)).unwrap();
    let mut config = common::config(&nats, &pool, other.path());
    config.chat.discord.token = Some("secret:discord".into());
    common::sign_in_as(&mut config, &nats, &Identity::Chat);
    let err = nebula::start(&config, Parts::CHAT).await.err().unwrap();
    let message = format!("{err:#}");
    assert!(
        message.contains("the vault key does not open this vault"),
        "{message}"
    );

    // No key at all: refused, saying where it should be (and no new key is made).
    let empty = tempfile::tempdir().unwrap();
    let mut config = common::config(&nats, &pool, empty.path());
    config.chat.discord.token = Some("secret:discord".into());
    common::sign_in_as(&mut config, &nats, &Identity::Chat);
    let err = nebula::start(&config, Parts::CHAT).await.err().unwrap();
    let message = format!("{err:#}");
    assert!(message.contains("the vault key is missing"), "{message}");
    assert!(!empty.path().join("vault.key").exists());

    // A name the vault does not hold names the key that wants it.
    let mut config = common::config(&nats, &pool, state.path());
    config.chat.discord.token = Some("secret:nothing".into());
    common::sign_in_as(&mut config, &nats, &Identity::Chat);
    let err = nebula::start(&config, Parts::CHAT).await.err().unwrap();
    let message = format!("{err:#}");
    assert!(
        message.contains("chat.discord.token names secret:nothing, which the vault does not hold"),
        "{message}"
    );
}
