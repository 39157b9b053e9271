//! Containers created from a spec, end to end against the real Docker engine: a vault secret
//! in the environment filled in on the node and nowhere on the log.

use crate::common;
use crate::containers::{NODE, Stack, command, control, listed, listing, node_agent};

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use testkit::docker::TEST_IMAGE;
use testkit::{DEFAULT_WAIT, wait_until};

/// A container created from a spec by an admin: its `secret:` env filled in on the node from
/// the vault (the value nowhere on the log), its labels, limits and restart policy as asked;
/// bad specs, unknown secrets, a taken name and an operator are refused with the reason.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn an_admin_creates_a_container_from_a_spec_with_a_vault_secret(pool: PgPool) {
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, |_| {}).await;
    let agent = node_agent(&config, &nats, testkit::docker::host()).await;
    wait_until("the node's listing", DEFAULT_WAIT, || async {
        (listing(&base).await["docker"] == "available").then_some(())
    })
    .await;
    let (status, _) = common::call(
        reqwest::Method::PUT,
        format!("{base}/api/secrets/app-token"),
        common::TOKEN,
        &json!({ "value": "tok-5ecr3t-value" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let name = format!(
        "created-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let removal = RemoveOnDrop(name.clone());
    let spec = json!({
        "name": name, "image": TEST_IMAGE,
        "command": ["sh", "-c", "echo greeting=$GREETING token=$APP_TOKEN; sleep 3600"],
        "env": { "GREETING": "hello", "APP_TOKEN": "secret:app-token" },
        "labels": { "com.example.app": "demo" },
        "restart_policy": "unless-stopped", "memory_limit_bytes": 67108864, "cpus": "0.5",
        "network": "none",
    });
    let path = format!("/api/nodes/{NODE}/containers?wait=30");
    let operator = common::create_token(&base, "ops", "operator").await;
    let (status, _) = command(&base, &operator, reqwest::Method::POST, &path, spec.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, answer) = command(
        &base,
        common::TOKEN,
        reqwest::Method::POST,
        &path,
        spec.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "completed", "{answer}");
    assert_eq!(answer["action"], "create");
    listed(&base, &name, "running").await;
    let inspect = |format: &str| testkit::docker::docker(&["inspect", "-f", format, &name]);
    assert_eq!(
        inspect("{{index .Config.Labels \"com.example.app\"}}"),
        "demo"
    );
    assert_eq!(
        inspect("{{.HostConfig.RestartPolicy.Name}}"),
        "unless-stopped"
    );
    assert_eq!(inspect("{{.HostConfig.Memory}}"), "67108864");
    assert_eq!(inspect("{{.HostConfig.NanoCpus}}"), "500000000");
    let logs = wait_until("the container's greeting", DEFAULT_WAIT, || async {
        let logs = testkit::docker::docker(&["logs", &name]);
        logs.contains("greeting").then_some(logs)
    })
    .await;
    assert_eq!(logs, "greeting=hello token=tok-5ecr3t-value");
    // The secret's value is nowhere on the log: the request names it only.
    common::assert_not_on_log(&nats, "tok-5ecr3t-value").await;

    // Refusals, each with its reason.
    let (status, answer) = command(
        &base,
        common::TOKEN,
        reqwest::Method::POST,
        &path,
        spec.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let mut unknown = spec.clone();
    unknown["name"] = json!("other-one");
    unknown["env"] = json!({ "X": "secret:no-such-secret" });
    let (status, answer) =
        command(&base, common::TOKEN, reqwest::Method::POST, &path, unknown).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer.to_string().contains("no-such-secret"), "{answer}");
    let mut bad = spec.clone();
    bad["name"] = json!("other-two");
    bad["ports"] = json!(["eighty"]);
    bad["restart_policy"] = json!("sometimes");
    let (status, answer) = command(&base, common::TOKEN, reqwest::Method::POST, &path, bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer.to_string().contains("ports") && answer.to_string().contains("restart_policy"),
        "{answer}"
    );
    let mut missing_image = spec;
    missing_image["name"] = json!("other-three");
    missing_image["image"] = json!("nebula-test/not-here:1");
    let (status, answer) = command(
        &base,
        common::TOKEN,
        reqwest::Method::POST,
        &path,
        missing_image,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "failed");
    assert!(
        answer["outcome"]
            .as_str()
            .unwrap()
            .contains("No such image"),
        "{answer}"
    );
    drop(removal);
    agent.shutdown().await;
    running.shutdown().await;
}

/// Removes a container by name when dropped (a test that fails leaves nothing running).
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["-H", &testkit::docker::host(), "rm", "-f", &self.0])
            .output();
    }
}
