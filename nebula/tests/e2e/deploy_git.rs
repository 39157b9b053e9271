//! Apps built from git, end to end: a real repository (git2, in a temp dir), its Dockerfile built
//! on the node by the real Docker engine for each release; a push webhook signed like GitHub's
//! deploys the new commit once (a bad signature refused and recorded, a redelivery ignored, a
//! push to another branch ignored); a build that fails leaves the live release serving; a
//! polled branch deploys its new commit by itself.

use crate::common::{self, call};
use crate::containers::{NODE, Stack, control, node_agent};

use hmac::{KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::docker::TEST_IMAGE;
use testkit::wait_until;

/// Commits `files` on `main` of the repository at `dir`; the commit id.
pub(crate) fn commit(dir: &std::path::Path, files: &[(&str, String)], message: &str) -> String {
    let repo = git2::Repository::open(dir)
        .or_else(|_| git2::Repository::init(dir))
        .unwrap();
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let who = git2::Signature::now("Dev", "dev@example.com").unwrap();
    let parent = repo
        .refname_to_id("refs/heads/main")
        .ok()
        .map(|id| repo.find_commit(id).unwrap());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(
        Some("refs/heads/main"),
        &who,
        &who,
        message,
        &tree,
        &parents,
    )
    .unwrap()
    .to_string()
}

fn dockerfile(port: u16) -> String {
    format!(
        "FROM {TEST_IMAGE}\nCOPY index.html /index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"127.0.0.1:{port}\", \"-h\", \"/\"]\n"
    )
}

fn signed(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", ::common::hex(&mac.finalize().into_bytes()))
}

async fn hook(base: &str, delivery: &str, signature: &str, body: &Value) -> (StatusCode, Value) {
    let response = common::http()
        .post(format!("{base}/api/apps/gitsite/hooks/git"))
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

async fn finished(base: &str, run_id: &str) -> Value {
    common::finished_run(base, common::TOKEN, run_id).await
}

async fn serving(port: u16) -> String {
    match common::http()
        .get(format!("http://127.0.0.1:{port}/index.html"))
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default().trim().to_owned(),
        Err(_) => String::new(),
    }
}

pub(crate) fn steps(run: &Value) -> Vec<String> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["step"].as_str().unwrap(),
                s["status"].as_str().unwrap()
            )
        })
        .collect()
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn apps_build_from_git_and_deploy_on_a_signed_push(pool: PgPool) {
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, |config| {
        config.deploy.health_interval_secs = 0.2;
        config.deploy.git_poll_secs = 1.0;
    })
    .await;
    let _agent = node_agent(&config, &nats, testkit::docker::host()).await;
    let _cleanup = common::RemoveAppContainers(&["gitsite"]);
    let port = testkit::free_port();
    let repo = tempfile::tempdir().unwrap();
    let first = commit(
        repo.path(),
        &[
            ("Dockerfile", dockerfile(port)),
            ("index.html", "v1\n".to_owned()),
        ],
        "v1",
    );
    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/secrets/site-hook"),
        common::TOKEN,
        &json!({"value": "hook-s3cret"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let definition = |poll: bool| {
        json!({
            "name": "gitsite",
            "git": { "repo": repo.path().display().to_string(), "branch": "main", "webhook_secret": "site-hook", "poll": poll },
            "containers": [{ "name": "web", "spec": { "image": "{build}", "network": "host" } }],
            "health": { "http": format!("http://127.0.0.1:{port}/index.html"), "timeout_secs": 10 },
            "nodes": [NODE],
        })
    };
    let mut wrong = definition(false);
    wrong["git"]["branch"] = json!("gone");
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/apps"),
        common::TOKEN,
        &wrong,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/apps/gitsite/deploy"),
        common::TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has no branch gone"),
        "{answer}"
    );
    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/apps/gitsite"),
        common::TOKEN,
        &definition(false),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Release 1: the branch's head built on the node and serving.
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/apps/gitsite/deploy"),
        common::TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let run = finished(&base, answer["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(steps(&run), ["build:ok", "start_new:ok", "health:ok"]);
    assert!(
        run["steps"][0]["output"]
            .as_str()
            .unwrap()
            .contains(&first[..12]),
        "{run}"
    );
    assert_eq!(serving(port).await, "v1");

    // A push: a bad signature is refused and recorded; a good one deploys the new commit once.
    let second = commit(repo.path(), &[("index.html", "v2\n".to_owned())], "v2");
    let push = json!({"ref": "refs/heads/main", "after": second});
    let (status, answer) = hook(
        &base,
        "d-0",
        &signed("not-the-secret", push.to_string().as_bytes()),
        &push,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let bus = common::bus(&nats).await;
    let log = common::envelopes(&bus, "app", "gitsite").await;
    assert!(
        log.iter()
            .any(|e| e.event_type == "app.webhook_refused" && e.data["delivery"] == "d-0"),
        "the refusal on the log"
    );
    let signature = signed("hook-s3cret", push.to_string().as_bytes());
    let (status, answer) = hook(&base, "d-1", &signature, &push).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let (status, again) = hook(&base, "d-1", &signature, &push).await;
    assert_eq!(
        (status, again["duplicate"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{again}"
    );
    let run = finished(&base, answer["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "git");
    assert_eq!(serving(port).await, "v2");
    let other = json!({"ref": "refs/heads/dev", "after": second});
    let (status, answer) = hook(
        &base,
        "d-2",
        &signed("hook-s3cret", other.to_string().as_bytes()),
        &other,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(
        answer["ignored"]
            .as_str()
            .unwrap()
            .contains("refs/heads/dev"),
        "{answer}"
    );

    // A build that fails touches nothing: release 2 still serves.
    commit(
        repo.path(),
        &[(
            "Dockerfile",
            format!("FROM {TEST_IMAGE}\nCOPY missing.txt /\n"),
        )],
        "broken",
    );
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/apps/gitsite/deploy"),
        common::TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let run = finished(&base, answer["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(steps(&run), ["build:failed"]);
    assert!(
        run["error"].as_str().unwrap().contains("missing.txt"),
        "{run}"
    );
    assert_eq!(run["live_release"], 2);
    assert_eq!(serving(port).await, "v2");

    // Polled: a fix pushed to the branch is deployed by itself.
    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/apps/gitsite"),
        common::TOKEN,
        &definition(true),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    commit(
        repo.path(),
        &[
            ("Dockerfile", dockerfile(port)),
            ("index.html", "v4\n".to_owned()),
        ],
        "fixed",
    );
    wait_until(
        "the polled commit serving",
        std::time::Duration::from_secs(90),
        || async { (serving(port).await == "v4").then_some(()) },
    )
    .await;
    let (_, view) = call(
        Method::GET,
        format!("{base}/api/apps/gitsite"),
        common::TOKEN,
        &json!(null),
    )
    .await;
    assert_eq!(view["runs"][0]["trigger"], "git", "{view}");
    assert_eq!(
        view["runs"][0]["requested_by"],
        json!({"kind": "service", "id": "git-poll"})
    );
    running.shutdown().await;
}
