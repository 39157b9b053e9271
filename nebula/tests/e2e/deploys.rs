//! The Deploy Center end to end against the real Docker engine: an app defined by an admin,
//! each deploy to its node (tagged `prod`) approved by another admin (a rule asks for it), carried out by the deployer
//! through the node's agent; a release whose check never passes rolled back automatically so
//! the old one serves again; a rollback on demand; a rejected deploy touching nothing.

use crate::common::{self, call, create_token};
use crate::containers::{NODE, Stack, control, node_agent};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::docker::TEST_IMAGE;
use testkit::{DEFAULT_WAIT, wait_until};

/// The app `name`'s definition: one busybox web server answering `version` on `port` (or,
/// when `version` is `None`, a container that never listens). Each test names its own app:
/// tests run at once against one Docker engine, and an app's containers are named after it.
fn app(name: &str, port: u16, version: Option<&str>) -> Value {
    let command = match version {
        Some(version) => {
            format!("echo {version} > /index.html && exec httpd -f -p 127.0.0.1:{port} -h /")
        }
        None => "exec sleep 3600".to_owned(),
    };
    json!({
        "name": name,
        "containers": [{ "name": "web", "spec": {
            "image": TEST_IMAGE, "command": ["sh", "-c", command], "network": "host",
        }}],
        "health": { "http": format!("http://127.0.0.1:{port}/index.html"), "timeout_secs": 4 },
        "nodes": [NODE],
    })
}

/// Asks for a deploy (or a rollback), approves or rejects it as `decider`, and waits for the
/// run's end.
async fn deploy(
    base: &str,
    asker: &str,
    decider: &str,
    path: &str,
    body: Value,
    approve: bool,
) -> Value {
    let (status, answer) = call(Method::POST, format!("{base}{path}"), asker, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let run_id = answer["run_id"].as_str().unwrap().to_owned();
    let approval = wait_until("the run's approval", DEFAULT_WAIT, || async {
        let (_, run) = call(
            Method::GET,
            format!("{base}/api/deploys/{run_id}"),
            asker,
            &json!(null),
        )
        .await;
        run["approval_id"].as_str().map(str::to_owned)
    })
    .await;
    let action = if approve { "approve" } else { "reject" };
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/approvals/{approval}/{action}"),
        decider,
        &json!({"comment": "checked the plan"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    common::finished_run(base, asker, &run_id).await
}

fn steps(run: &Value) -> Vec<String> {
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

async fn serving(port: u16) -> String {
    common::http()
        .get(format!("http://127.0.0.1:{port}/index.html"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .trim()
        .to_owned()
}

fn containers(app: &str) -> Vec<String> {
    common::app_containers(app)
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn apps_deploy_roll_back_on_a_failed_check_and_on_demand(pool: PgPool) {
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, |config| {
        config.approvals.rules = vec![
            toml::from_str("name = \"every-deploy\"\nkind = \"deploy\"\nrole = \"admin\"\n")
                .unwrap(),
        ];
        config.deploy.health_interval_secs = 0.2;
        config.deploy.command_timeout_secs = 30.0;
    })
    .await;
    let _agent = node_agent(&config, &nats, testkit::docker::host()).await;
    let _cleanup = common::RemoveAppContainers(&["web"]);
    let alice = create_token(&base, "alice", "admin").await;
    let bob = create_token(&base, "bob", "admin").await;
    let port = testkit::free_port();

    // Bad definitions are refused with their reasons.
    let mut bad = app("web", port, Some("v1"));
    bad["name"] = json!("Web App");
    let (status, answer) = call(Method::POST, format!("{base}/api/apps"), &alice, &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let mut bad = app("web", port, Some("v1"));
    bad["containers"][0]["spec"]["image"] = json!("");
    bad["nodes"] = json!([]);
    let (status, answer) = call(Method::POST, format!("{base}/api/apps"), &alice, &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("containers.web: image") && message.contains("at least one node"),
        "{message}"
    );
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/apps/nope/deploy"),
        &alice,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The node is tagged prod by an admin: deploys to it need another admin's approval.
    let tags = format!("{base}/api/nodes/{NODE}/tags");
    let (status, answer) = call(
        Method::PUT,
        tags.clone(),
        &alice,
        &json!({"tags": ["Prod!"]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = call(
        Method::PUT,
        tags.clone(),
        &alice,
        &json!({"tags": ["prod", "gpu"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, answer) = call(Method::GET, tags, &alice, &json!(null)).await;
    assert_eq!(answer["tags"], json!(["prod", "gpu"]));

    // Release 1, approved by another admin (the one who asked may not), is live.
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/apps"),
        &alice,
        &app("web", port, Some("v1")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let run = deploy(&base, &alice, &bob, "/api/apps/web/deploy", json!({}), true).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["release"], 1);
    assert_eq!(steps(&run), ["approval:ok", "start_new:ok", "health:ok"]);
    assert_eq!(serving(port).await, "v1");

    // Release 2 never answers: rolled back, release 1 serves again, release 2 is gone.
    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/apps/web"),
        &alice,
        &app("web", port, None),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let run = deploy(&base, &alice, &bob, "/api/apps/web/deploy", json!({}), true).await;
    assert_eq!(run["status"], "rolled_back", "{run}");
    assert_eq!(
        (run["release"].as_u64(), run["live_release"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        steps(&run),
        [
            "approval:ok",
            "stop_old:ok",
            "start_new:ok",
            "health:failed",
            "rollback:ok"
        ]
    );
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("not healthy within 4 s"),
        "{run}"
    );
    assert_eq!(serving(port).await, "v1");
    assert_eq!(containers("web"), ["web-web-r1:running"]);

    // Release 3 goes live; a rollback on demand goes back to the last good one before it (1).
    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/apps/web"),
        &alice,
        &app("web", port, Some("v3")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let run = deploy(&base, &alice, &bob, "/api/apps/web/deploy", json!({}), true).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(serving(port).await, "v3");
    assert_eq!(
        containers("web"),
        ["web-web-r1:exited", "web-web-r3:running"]
    );
    let run = deploy(
        &base,
        &alice,
        &bob,
        "/api/apps/web/rollback",
        json!({}),
        true,
    )
    .await;
    assert_eq!(
        (run["status"].as_str(), run["release"].as_u64()),
        (Some("succeeded"), Some(1)),
        "{run}"
    );
    assert_eq!(run["trigger"], "rollback");
    assert_eq!(serving(port).await, "v1");

    // A rejected deploy touches nothing.
    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/apps/web"),
        &alice,
        &app("web", port, Some("v4")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let run = deploy(
        &base,
        &alice,
        &bob,
        "/api/apps/web/deploy",
        json!({}),
        false,
    )
    .await;
    assert_eq!(run["status"], "refused", "{run}");
    assert_eq!(steps(&run), ["approval:failed"]);
    assert_eq!(serving(port).await, "v1");

    let (_, view) = call(
        Method::GET,
        format!("{base}/api/apps/web"),
        &alice,
        &json!(null),
    )
    .await;
    assert_eq!(view["live_release"], 1, "{view}");
    assert_eq!(view["releases"].as_array().unwrap().len(), 4);
    assert_eq!(view["good_releases"], json!([1, 3]));
    assert_eq!(view["runs"].as_array().unwrap().len(), 5);
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/apps/web/rollback"),
        &alice,
        &json!({"release": 9}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");

    // The Apps room: releases with the live one marked, every run with its steps; a rollback
    // to release 3 asked from its row, approved by bob, goes live.
    {
        use testkit::webdriver::Browser;
        let browser = Browser::start().await;
        crate::dashboard_access::sign_in(
            &browser,
            &format!("{base}/#token={alice}"),
            "alice · admin",
        )
        .await;
        crate::dashboard::open_room(&browser, "apps").await;
        let shown = wait_until("the app's runs in the room", DEFAULT_WAIT, || async {
            let shown = browser
                .eval(
                    "const runs = Array.from(document.querySelectorAll('#app-runs li[data-run]'));
                     if (runs.length < 5) return null;
                     return { runs: runs.map((r) => r.dataset.status),
                              live: Array.from(document.querySelectorAll('#app-releases tr.live')).map((r) => r.dataset.release),
                              rolledBackSteps: Array.from(runs.find((r) => r.dataset.status === 'rolled_back').querySelectorAll('li[data-step]')).map((s) => s.dataset.step + ':' + s.dataset.status) };",
                )
                .await;
            shown.is_object().then_some(shown)
        })
        .await;
        assert_eq!(
            shown["runs"],
            json!([
                "refused",
                "succeeded",
                "succeeded",
                "rolled_back",
                "succeeded"
            ]),
            "{shown}"
        );
        assert_eq!(shown["live"], json!(["1"]), "{shown}");
        assert_eq!(
            shown["rolledBackSteps"],
            json!([
                "approval:ok",
                "stop_old:ok",
                "start_new:ok",
                "health:failed",
                "rollback:ok"
            ])
        );
        let png = browser.screenshot_png().await;
        let _ = std::fs::write(std::env::temp_dir().join("nebula-apps.png"), &png);
        browser
            .eval("document.querySelector('#app-releases tr[data-release=\"3\"] button[data-action=rollback]').click(); return true;")
            .await;
        let run_id = wait_until("the rollback asked from the room", DEFAULT_WAIT, || async {
            let (_, view) = call(
                Method::GET,
                format!("{base}/api/apps/web"),
                &alice,
                &json!(null),
            )
            .await;
            let latest = view["runs"].get(0)?.clone();
            (latest["release"] == 3 && latest["trigger"] == "rollback")
                .then(|| latest["run_id"].as_str().unwrap().to_owned())
        })
        .await;
        let approval = wait_until("the rollback's approval", DEFAULT_WAIT, || async {
            let (_, run) = call(
                Method::GET,
                format!("{base}/api/deploys/{run_id}"),
                &alice,
                &json!(null),
            )
            .await;
            run["approval_id"].as_str().map(str::to_owned)
        })
        .await;
        let (status, _) = call(
            Method::POST,
            format!("{base}/api/approvals/{approval}/approve"),
            &bob,
            &json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        wait_until("release 3 live in the room", std::time::Duration::from_secs(60), || async {
            let live = browser
                .eval("const r = document.querySelector('#app-releases tr.live'); return r ? r.dataset.release : null;")
                .await;
            (live == "3").then_some(())
        })
        .await;
        assert_eq!(serving(port).await, "v3");
    }

    // Removed with its containers: a remove command per release, the engine left clean.
    let (status, answer) = call(
        Method::DELETE,
        format!("{base}/api/apps/web?remove_containers=true"),
        &alice,
        &json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["container_commands"].as_array().unwrap().len(), 4);
    wait_until("the app's containers removed", DEFAULT_WAIT, || async {
        containers("web").is_empty().then_some(())
    })
    .await;
    let (status, _) = call(
        Method::GET,
        format!("{base}/api/apps/web"),
        &alice,
        &json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    running.shutdown().await;
}

/// A node whose agent is gone mid-deploy: the run fails within its command timeouts, saying
/// which step could not reach the node and that the way back could not either; the release
/// that was live is still what the node runs.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_node_lost_mid_deploy_fails_the_run_saying_so(pool: PgPool) {
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, |config| {
        config.deploy.health_interval_secs = 0.2;
        config.deploy.command_timeout_secs = 2.0;
    })
    .await;
    let agent = node_agent(&config, &nats, testkit::docker::host()).await;
    let _cleanup = common::RemoveAppContainers(&["lost"]);
    let port = testkit::free_port();
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/apps"),
        common::TOKEN,
        &app("lost", port, Some("v1")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let run = finish(&base, "/api/apps/lost/deploy").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(serving(port).await, "v1");

    agent.shutdown().await;
    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/apps/lost"),
        common::TOKEN,
        &app("lost", port, Some("v2")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let run = finish(&base, "/api/apps/lost/deploy").await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(steps(&run), ["stop_old:failed", "rollback:failed"]);
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("no agent on node box-1 took it"), "{error}");
    assert!(error.contains("release 1 did not come back"), "{error}");
    assert_eq!(run["live_release"], Value::Null);
    // What the node runs is what it ran: the stop never reached it.
    assert_eq!(serving(port).await, "v1");
    assert_eq!(containers("lost"), ["lost-web-r1:running"]);
    running.shutdown().await;
}

/// Asks for a run at `path` (no approval in the way) and waits for its end.
async fn finish(base: &str, path: &str) -> Value {
    let (status, answer) = call(
        Method::POST,
        format!("{base}{path}"),
        common::TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    common::finished_run(base, common::TOKEN, answer["run_id"].as_str().unwrap()).await
}
