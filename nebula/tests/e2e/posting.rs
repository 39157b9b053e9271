//! The Stream Bot end to end against the test kit's fakes of Twitch Helix, the YouTube Data API
//! and Kick's public API: a post with an artifact reaches all three (each within its length,
//! the link whole), 429s and 5xx are retried, refusals are final at once, every attempt is an
//! event in the post's correlation, and bad requests are refused with the reason.

use crate::common;

use std::time::Duration;

use natsauth::Identity;
use nebula::Parts;
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::stream::{Api, FakeStream, FakeStreamOptions};
use testkit::{NatsServer, wait_until};

const WAIT: Duration = Duration::from_secs(40);

struct Stack {
    /// The gateway, signed in as the control plane.
    running: nebula::Running,
    /// The Stream Bot in a process of its own, signed in as the posting role.
    posting: nebula::Running,
    base: String,
    _nats: NatsServer,
    _state: tempfile::TempDir,
}

impl Stack {
    async fn shutdown(self) {
        common::assert_no_permission_violations(&self.posting);
        self.posting.shutdown().await;
        self.running.shutdown().await;
    }
}

async fn start(pool: &PgPool, fake: &FakeStream) -> Stack {
    start_with(pool, fake, |_| {}).await
}

async fn start_with(
    pool: &PgPool,
    fake: &FakeStream,
    tune: impl FnOnce(&mut nebula::Config),
) -> Stack {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = common::config(&nats, pool, state.path());
    common::post_to(&mut config, fake);
    tune(&mut config);
    // The studio too: a post's image is a finished job's output.
    let studio = common::RENDERING_STUDIO;
    let running = nebula::start(&config, studio).await.unwrap();
    common::sign_in_as(&mut config, &nats, &Identity::Posting);
    config.public_url = running.gateway_addr.map(|addr| format!("http://{addr}"));
    let posting = nebula::start(&config, Parts::POSTING).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    Stack {
        running,
        posting,
        base,
        _nats: nats,
        _state: state,
    }
}

async fn request_post(base: &str, body: Value) -> (u16, Value) {
    let response = common::http()
        .post(format!("{base}/api/posts"))
        .bearer_auth(common::TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The post once no destination is pending.
async fn settled(base: &str, post_id: &str) -> Value {
    wait_until("every destination to settle", WAIT, || async {
        let post: Value = common::http()
            .get(format!("{base}/api/posts/{post_id}"))
            .bearer_auth(common::TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let destinations = post["destinations"].as_object()?;
        destinations
            .values()
            .all(|d| d["status"] != "pending")
            .then_some(post)
    })
    .await
}

/// Uploads a PNG as an input (as the studio does); returns its SHA-256. An upload is never
/// shareable.
async fn upload(base: &str) -> String {
    let png = render::artifacts::png::encode_rgb(2, 2, &[200; 12], &[]);
    common::upload_png(base, png).await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_post_reaches_every_platform_through_rate_limits_and_outages(pool: PgPool) {
    let fake = FakeStream::start(FakeStreamOptions::default()).await;
    let stack = start(&pool, &fake).await;
    let (job_id, sha256) = common::render_one(&stack.base).await;
    fake.fail_next(Api::Helix, 429, 1);
    fake.fail_next(Api::Youtube, 503, 1);
    fake.fail_next(Api::Kick, 500, 1);

    let text = format!("Tonight's renders are in! {}", "✨".repeat(180));
    let (status, created) = request_post(
        &stack.base,
        json!({"text": text, "artifact": sha256, "destinations": ["twitch", "youtube", "kick"]}),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let post_id = created["post_id"].as_str().unwrap();
    let post = settled(&stack.base, post_id).await;
    for destination in ["twitch", "youtube", "kick"] {
        assert_eq!(
            post["destinations"][destination]["status"], "delivered",
            "{post}"
        );
        assert_eq!(post["destinations"][destination]["attempts"], 2, "{post}");
    }
    assert!(
        post["destinations"]["youtube"]["remote_id"]
            .as_str()
            .unwrap()
            .starts_with("LCC.")
    );

    // The post carries the output's share link (shared for it, in its correlation).
    let envelopes = common::envelopes(&stack.running.bus, "post", post_id).await;
    let token = envelopes[0].data["share"].as_str().unwrap();
    let job = common::envelopes(&stack.running.bus, "render_job", &job_id).await;
    let shared = job.last().unwrap();
    assert_eq!(shared.event_type, "render.job_shared");
    assert_eq!(shared.data["token"], token);
    assert_eq!(shared.data["sha256"], sha256.as_str());
    assert_eq!(shared.correlation_id, envelopes[0].correlation_id);
    // Each platform got the text and the whole link, within its length.
    let link = format!("{}/share/{token}.png", stack.base);
    let posted = fake.posted();
    assert_eq!(posted.len(), 3, "{posted:?}");
    for message in &posted {
        assert!(message.text.ends_with(&link), "{message:?}");
        let max = if message.api == Api::Youtube {
            200
        } else {
            500
        };
        assert!(message.text.chars().count() <= max, "{message:?}");
    }
    let youtube = posted.iter().find(|m| m.api == Api::Youtube).unwrap();
    assert!(youtube.text.contains("… http"), "shortened: {youtube:?}");
    assert_eq!(
        youtube.target,
        FakeStreamOptions::default().youtube_live_chat.unwrap()
    );
    let kick = posted.iter().find(|m| m.api == Api::Kick).unwrap();
    assert_eq!(kick.target, "668");
    assert!(kick.text.starts_with(&text), "Kick takes the whole text");
    let twitch = posted.iter().find(|m| m.api == Api::Helix).unwrap();
    assert_eq!(twitch.target, "141981764");
    // The link is the image.
    let image = reqwest::get(&link).await.unwrap();
    assert_eq!(image.status(), 200);
    let bytes = image.bytes().await.unwrap();
    assert_eq!(render::artifacts::sha256_hex(&bytes), sha256);

    // Every attempt is an event, in the post's correlation.
    let envelopes = common::envelopes(&stack.running.bus, "post", post_id).await;
    let count = |t: &str| envelopes.iter().filter(|e| e.event_type == t).count();
    assert_eq!(count("post.requested"), 1);
    assert_eq!(count("post.failed"), 3);
    assert_eq!(count("post.delivered"), 3);
    let correlation = envelopes[0].correlation_id.to_string();
    assert_eq!(created["correlation_id"], correlation.as_str());
    assert!(
        envelopes
            .iter()
            .all(|e| e.correlation_id.to_string() == correlation)
    );
    let failed: Vec<&Value> = envelopes
        .iter()
        .filter(|e| e.event_type == "post.failed")
        .map(|e| &e.data)
        .collect();
    assert!(failed.iter().all(|f| f["will_retry"] == true));
    let errors: Vec<&str> = failed
        .iter()
        .map(|f| f["error"].as_str().unwrap())
        .collect();
    assert!(
        errors.iter().any(|e| e.starts_with("twitch 429")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("youtube 503: backendError")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with("kick 500")),
        "{errors:?}"
    );
    stack.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn refusals_are_final_and_bad_requests_are_explained(pool: PgPool) {
    let fake = FakeStream::start(FakeStreamOptions::default()).await;
    fake.set_youtube_live_chat(None); // off air
    let stack = start_with(&pool, &fake, |config| {
        config.post.kick.token = Some("a-revoked-token".into());
    })
    .await;

    let (status, created) = request_post(
        &stack.base,
        json!({"text": "going live soon", "destinations": ["kick", "youtube", "twitch"]}),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let post = settled(&stack.base, created["post_id"].as_str().unwrap()).await;
    let kick = &post["destinations"]["kick"];
    assert_eq!(kick["status"], "failed", "{post}");
    assert_eq!(kick["attempts"], 1, "a refusal is not tried again");
    assert_eq!(kick["error"], "kick 401: Unauthorized");
    let youtube = &post["destinations"]["youtube"];
    assert_eq!(youtube["status"], "failed", "{post}");
    assert!(
        youtube["error"]
            .as_str()
            .unwrap()
            .contains("no active broadcast")
    );
    assert_eq!(post["destinations"]["twitch"]["status"], "delivered");
    assert_eq!(
        fake.calls()
            .iter()
            .filter(|(api, _)| *api == Api::Kick)
            .count(),
        1
    );

    // Bad requests: the reason, and nothing recorded.
    for (body, expected) in [
        (
            json!({"text": "", "destinations": ["kick"]}),
            "text must not be empty",
        ),
        (
            json!({"text": "hi", "destinations": []}),
            "at least one destination",
        ),
        (
            json!({"text": "hi", "destinations": ["myspace"]}),
            "unknown variant",
        ),
        (
            json!({"text": "hi", "destinations": ["kick", "kick"]}),
            "named twice",
        ),
        (
            json!({"text": "hi", "destinations": ["kick"], "artifact": "ab".repeat(32)}),
            "is not an output of a finished render job",
        ),
        (
            json!({"text": "hi", "destinations": ["kick"], "artifact": upload(&stack.base).await}),
            "is not an output of a finished render job",
        ),
        (
            json!({"text": "hi", "destinations": ["kick"], "colour": "red"}),
            "unknown field",
        ),
        (
            json!({"text": "x".repeat(501), "destinations": ["kick"]}),
            "500 at most",
        ),
    ] {
        let (status, answer) = request_post(&stack.base, body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(
            answer.to_string().contains(expected),
            "{body} → {answer} (expected {expected:?})"
        );
    }
    // A client that retries with the same Idempotency-Key gets the post it already made.
    let keyed = |key: &'static str| {
        common::http()
            .post(format!("{}/api/posts", stack.base))
            .bearer_auth(common::TOKEN)
            .header("idempotency-key", key)
            .json(&json!({"text": "once only", "destinations": ["twitch"]}))
            .send()
    };
    let first = keyed("announce-2026-12-01").await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = keyed("announce-2026-12-01").await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["post_id"], first["post_id"]);
    settled(&stack.base, first["post_id"].as_str().unwrap()).await;
    assert_eq!(
        fake.posted()
            .iter()
            .filter(|p| p.text == "once only")
            .count(),
        1
    );

    let missing = common::http()
        .get(format!("{}/api/posts/{}", stack.base, uuid::Uuid::now_v7()))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    stack.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_post_that_cannot_go_out_in_time_is_given_up(pool: PgPool) {
    let fake = FakeStream::start(FakeStreamOptions::default()).await;
    let stack = start_with(&pool, &fake, |config| {
        config.post.max_age_secs = 1;
    })
    .await;
    // Kick is down; by the retry (a second later) the announcement is stale.
    fake.fail_next(Api::Kick, 502, 3);
    let (status, created) = request_post(
        &stack.base,
        json!({"text": "starting now!", "destinations": ["kick"]}),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let post = settled(&stack.base, created["post_id"].as_str().unwrap()).await;
    let kick = &post["destinations"]["kick"];
    assert_eq!(kick["status"], "failed", "{post}");
    assert!(
        kick["error"]
            .as_str()
            .unwrap()
            .starts_with("too old to post"),
        "{post}"
    );
    assert!(fake.posted().is_empty());
    assert_eq!(fake.calls().len(), 1, "one attempt, then given up");
    stack.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn stale_access_tokens_are_refreshed_and_the_rotated_ones_kept(pool: PgPool) {
    let fake = FakeStream::start(FakeStreamOptions::default()).await;
    let options = FakeStreamOptions::default();
    let state_dir = std::cell::RefCell::new(None);
    let stack = start_with(&pool, &fake, |config| {
        let post = &mut config.post;
        post.twitch.refresh_token = Some(fake.refresh_token(Api::Helix).into());
        post.twitch.client_secret = Some(options.client_secret.clone().into());
        post.twitch.token_url = fake.token_url(Api::Helix);
        post.youtube.refresh_token = Some(fake.refresh_token(Api::Youtube).into());
        post.youtube.client_id = Some(options.client_id.clone());
        post.youtube.client_secret = Some(options.client_secret.clone().into());
        post.youtube.token_url = fake.token_url(Api::Youtube);
        post.kick.refresh_token = Some(fake.refresh_token(Api::Kick).into());
        post.kick.client_id = Some(options.client_id.clone());
        post.kick.client_secret = Some(options.client_secret.clone().into());
        post.kick.token_url = fake.token_url(Api::Kick);
        *state_dir.borrow_mut() = Some(config.state_dir.clone());
    })
    .await;
    // An hour later: every configured access token is stale.
    fake.expire_access_tokens();
    let (status, created) = request_post(
        &stack.base,
        json!({"text": "still here", "destinations": ["twitch", "youtube", "kick"]}),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let post = settled(&stack.base, created["post_id"].as_str().unwrap()).await;
    for (destination, api) in [
        ("twitch", Api::Helix),
        ("youtube", Api::Youtube),
        ("kick", Api::Kick),
    ] {
        assert_eq!(
            post["destinations"][destination]["status"], "delivered",
            "{post}"
        );
        assert_eq!(
            post["destinations"][destination]["attempts"], 1,
            "refreshed within the attempt"
        );
        assert_eq!(fake.refreshes(api), 1);
        let statuses: Vec<u16> = fake
            .calls()
            .iter()
            .filter(|(a, _)| *a == api)
            .map(|(_, status)| *status)
            .collect();
        assert_eq!(statuses[0], 401, "{destination}: {statuses:?}");
        assert!((200..300).contains(statuses.last().unwrap()));
    }
    // Twitch and Kick retired the configured refresh tokens: the new ones are on disk, only
    // for the service's user.
    let path = state_dir.borrow().clone().unwrap().join("post-tokens.json");
    let kept: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(kept["kick"]["refresh_token"], fake.refresh_token(Api::Kick));
    assert_eq!(
        kept["twitch"]["refresh_token"],
        fake.refresh_token(Api::Helix)
    );
    assert_eq!(kept["youtube"]["refresh_token"], "youtube-refresh-0");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    stack.shutdown().await;
}
