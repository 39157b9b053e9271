//! Deploys where no agent runs, and builds by a command, end to end: a registered SSH host (a
//! real sshd whose sessions reach the project's dockerd) gets each release built from git by
//! the app's build command and run with `docker` over SSH, its vault secret on the command's
//! input and nowhere on the log; a release whose check fails is rolled back there; a target
//! that is neither a node nor a host fails the run saying so. On an agent's node the build
//! command runs in the commit's checkout, and one that fails fails the build with its output.

use crate::common::{self, call};
use crate::containers::{NODE, Stack, control, node_agent};
use crate::deploy_git::{commit, steps};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::docker::TEST_IMAGE;
use testkit::ssh::Sshd;

async fn page(port: u16, path: &str) -> String {
    match common::http()
        .get(format!("http://127.0.0.1:{port}/{path}"))
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default().trim().to_owned(),
        Err(_) => String::new(),
    }
}

/// A Dockerfile whose container writes `$GREETING` to `/greeting.html` and serves `/` on
/// `port`.
fn dockerfile(port: u16) -> String {
    format!(
        "FROM {TEST_IMAGE}\nCOPY index.html /index.html\n\
         CMD [\"sh\", \"-c\", \"echo \\\"$GREETING\\\" > /greeting.html && exec httpd -f -p 127.0.0.1:{port} -h /\"]\n"
    )
}

async fn put(base: &str, path: &str, body: &Value, expect: StatusCode) -> Value {
    let (status, answer) = call(Method::PUT, format!("{base}{path}"), common::TOKEN, body).await;
    assert_eq!(status, expect, "{answer}");
    answer
}

async fn post(base: &str, path: &str, body: &Value, expect: StatusCode) -> Value {
    let (status, answer) = call(Method::POST, format!("{base}{path}"), common::TOKEN, body).await;
    assert_eq!(status, expect, "{answer}");
    answer
}

/// Deploys `app` and waits for the run to finish.
async fn deploy(base: &str, app: &str) -> Value {
    let answer = post(
        base,
        &format!("/api/apps/{app}/deploy"),
        &json!({}),
        StatusCode::ACCEPTED,
    )
    .await;
    common::finished_run(base, common::TOKEN, answer["run_id"].as_str().unwrap()).await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn apps_deploy_over_ssh_where_no_agent_runs(pool: PgPool) {
    let Stack {
        nats,
        state: _state,
        config: _,
        running,
        base,
    } = control(&pool, |config| {
        config.deploy.health_interval_secs = 0.2;
        config.hosts.metrics_interval_secs = 0.0;
        config.hosts.connect_timeout_secs = 5.0;
    })
    .await;
    let _cleanup = common::RemoveAppContainers(&["nasapp"]);
    let mut sshd = Sshd::start();
    // The host's own Docker: every session gets it, as a host's profile would give it.
    sshd.set_env("DOCKER_HOST", &testkit::docker::host());
    put(
        &base,
        "/api/secrets/ssh-nas",
        &json!({"value": sshd.client_key}),
        StatusCode::OK,
    )
    .await;
    put(
        &base,
        "/api/secrets/nas-greeting",
        &json!({"value": "hello-from-the-vault"}),
        StatusCode::OK,
    )
    .await;
    post(
        &base,
        "/api/hosts",
        &json!({
            "name": "nas", "address": "127.0.0.1", "port": sshd.port, "user": sshd.user,
            "key_secret": "ssh-nas", "allowlist": [],
        }),
        StatusCode::CREATED,
    )
    .await;
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
    let definition = json!({
        "name": "nasapp",
        "git": {
            "repo": repo.path().display().to_string(), "branch": "main",
            "build_command": "docker build --quiet --tag \"$NEBULA_IMAGE\" . && echo made-by-the-command",
        },
        "containers": [{ "name": "web", "spec": {
            "image": "{build}", "network": "host", "env": { "GREETING": "secret:nas-greeting" },
        } }],
        "health": { "http": format!("http://{{node_host}}:{port}/index.html"), "timeout_secs": 10 },
        "nodes": ["nas"],
    });
    post(&base, "/api/apps", &definition, StatusCode::CREATED).await;

    // Release 1: built on the host by its command, started over SSH with its secret.
    let run = deploy(&base, "nasapp").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(steps(&run), ["build:ok", "start_new:ok", "health:ok"]);
    let build = run["steps"][0]["output"].as_str().unwrap();
    assert!(
        build.contains("made-by-the-command") && build.contains(&first[..12]),
        "{run}"
    );
    assert!(
        run["steps"][1]["output"]
            .as_str()
            .unwrap()
            .contains("nas: nasapp-web-r1 running"),
        "{run}"
    );
    assert_eq!(page(port, "index.html").await, "v1");
    assert_eq!(page(port, "greeting.html").await, "hello-from-the-vault");
    common::assert_not_on_log(&nats, "hello-from-the-vault").await;
    let bus = common::bus(&nats).await;
    let labels = testkit::docker::docker(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"nebula.release\"}}",
        "nasapp-web-r1",
    ]);
    assert_eq!(labels, "1");

    // Release 2 never answers its check: rolled back over SSH, release 1 serves again.
    commit(
        repo.path(),
        &[
            ("Dockerfile", dockerfile(testkit::free_port())),
            ("index.html", "v2\n".to_owned()),
        ],
        "v2 on the wrong port",
    );
    let mut short = definition.clone();
    short["health"]["timeout_secs"] = json!(2);
    put(&base, "/api/apps/nasapp", &short, StatusCode::OK).await;
    let run = deploy(&base, "nasapp").await;
    assert_eq!(run["status"], "rolled_back", "{run}");
    assert_eq!(
        steps(&run),
        [
            "build:ok",
            "stop_old:ok",
            "start_new:ok",
            "health:failed",
            "rollback:ok"
        ]
    );
    assert_eq!(run["live_release"], 1);
    assert_eq!(page(port, "index.html").await, "v1");
    let gone = testkit::docker::docker(&["ps", "-a", "--filter", "name=nasapp-web-r2", "-q"]);
    assert!(gone.is_empty(), "release 2's container is left: {gone}");

    // Every docker command ran once, as the deployer, on the log as host executions.
    let mut requested: Vec<Value> = Vec::new();
    for id in bus.aggregate_ids("host_exec").await.unwrap() {
        for envelope in common::envelopes(&bus, "host_exec", &id).await {
            if envelope.event_type == "host_exec.requested" {
                assert_eq!(
                    serde_json::to_value(&envelope.actor).unwrap(),
                    json!({"kind": "service", "id": "deployer"})
                );
                requested.push(envelope.data.clone());
            }
        }
    }
    assert!(
        requested
            .iter()
            .all(|r| r["host"] == "nas" && r["command"].as_str().unwrap().contains("docker")),
        "{requested:?}"
    );
    assert!(
        requested
            .iter()
            .any(|r| r["env_secrets"] == json!({"GREETING": "nas-greeting"})),
        "{requested:?}"
    );

    // A target that is neither a node with an agent nor a host: the run fails saying so.
    let mut ghost = definition.clone();
    ghost["nodes"] = json!(["ghost"]);
    put(&base, "/api/apps/nasapp", &ghost, StatusCode::OK).await;
    let run = deploy(&base, "nasapp").await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("ghost is neither a node with an agent nor a registered SSH host"),
        "{run}"
    );
    assert_eq!(page(port, "index.html").await, "v1");
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn an_agent_builds_with_the_apps_command(pool: PgPool) {
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, |config| {
        config.deploy.health_interval_secs = 0.2;
    })
    .await;
    let _agent = node_agent(&config, &nats, testkit::docker::host()).await;
    let _cleanup = common::RemoveAppContainers(&["cmdapp"]);
    let port = testkit::free_port();
    let repo = tempfile::tempdir().unwrap();
    commit(
        repo.path(),
        &[
            ("build/Containerfile", dockerfile(port)),
            ("index.html", "by-command\n".to_owned()),
            ("make-image.sh", "#!/bin/sh\necho \"building $NEBULA_COMMIT\"\nexec docker build --quiet --tag \"$NEBULA_IMAGE\" --file build/Containerfile .\n".to_owned()),
        ],
        "v1",
    );
    let definition = |command: &str| {
        json!({
            "name": "cmdapp",
            "git": { "repo": repo.path().display().to_string(), "branch": "main", "build_command": command },
            "containers": [{ "name": "web", "spec": { "image": "{build}", "network": "host" } }],
            "health": { "http": format!("http://127.0.0.1:{port}/index.html"), "timeout_secs": 10 },
            "nodes": [NODE],
        })
    };
    post(
        &base,
        "/api/apps",
        &definition("sh make-image.sh"),
        StatusCode::CREATED,
    )
    .await;
    let run = deploy(&base, "cmdapp").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let build = run["steps"][0]["output"].as_str().unwrap();
    assert!(
        build.contains("by its command") && build.contains("building "),
        "{run}"
    );
    assert_eq!(page(port, "index.html").await, "by-command");

    // A command that fails, and one that makes no image: the build fails, release 1 serves.
    for (command, says) in [
        ("echo compiling; exit 3", "compiling"),
        ("true", "left no image"),
    ] {
        put(
            &base,
            "/api/apps/cmdapp",
            &definition(command),
            StatusCode::OK,
        )
        .await;
        commit(
            repo.path(),
            &[("index.html", format!("{command}\n"))],
            "another",
        );
        let run = deploy(&base, "cmdapp").await;
        assert_eq!(run["status"], "failed", "{run}");
        assert_eq!(steps(&run), ["build:failed"]);
        assert!(run["error"].as_str().unwrap().contains(says), "{run}");
        assert_eq!(page(port, "index.html").await, "by-command");
    }
    // A multi-line command is refused with the reason.
    let (status, answer) = call(
        Method::PUT,
        format!("{base}/api/apps/cmdapp"),
        common::TOKEN,
        &definition("make\nrm -rf /"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().contains("one line"), "{answer}");
    running.shutdown().await;
}
