//! Containers end to end against a real Docker engine (the project's own dockerd): a node's
//! agent, in a process of its own with the agent's NATS credentials, lists its containers and
//! carries out commands recorded under the caller's name, each at most once; a command nobody
//! takes expires with the reason; an engine that is not there is reported.

use crate::common;

use natsauth::Identity;
use nebula::{Part, Parts};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::docker::{TEST_IMAGE, TestContainer};
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};

pub(crate) const NODE: &str = "box-1";
const CONTROL: Parts = Parts::of(&[Part::Gateway, Part::Projector, Part::Dispatcher]);

/// The control plane (gateway, projector, dispatcher) of a NATS server that knows node
/// [`NODE`].
pub(crate) struct Stack {
    pub(crate) nats: NatsServer,
    pub(crate) state: tempfile::TempDir,
    pub(crate) config: nebula::Config,
    pub(crate) running: nebula::Running,
    pub(crate) base: String,
}

pub(crate) async fn control(pool: &PgPool, tune: impl FnOnce(&mut nebula::Config)) -> Stack {
    let nats = NatsServer::start_with_nodes(&[NODE]);
    let state = tempfile::tempdir().unwrap();
    let mut config = common::config(&nats, pool, state.path());
    tune(&mut config);
    let running = nebula::start(&config, CONTROL).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    Stack {
        nats,
        state,
        config,
        running,
        base,
    }
}

/// The node's agent, alone in its process, signed in as that node's agent.
pub(crate) async fn node_agent(
    config: &nebula::Config,
    nats: &NatsServer,
    docker_host: String,
) -> nebula::Running {
    let mut node = config.clone();
    node.agent.node_id = Some(NODE.into());
    node.agent.docker_host = docker_host;
    node.agent.containers_interval_secs = 0.3;
    common::sign_in_as(&mut node, nats, &Identity::Agent(NODE.parse().unwrap()));
    nebula::start(&node, Parts::AGENT).await.unwrap()
}

pub(crate) async fn listing(base: &str) -> Value {
    common::get_json(
        &common::http(),
        format!("{base}/api/nodes/{NODE}/containers"),
    )
    .await
}

/// The listed container named `name`, once it is listed in `state`.
pub(crate) async fn listed(base: &str, name: &str, state: &str) -> Value {
    wait_until(
        &format!("{name} listed as {state}"),
        DEFAULT_WAIT,
        || async {
            let listing = listing(base).await;
            listing["containers"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == name && c["state"] == state)
                .cloned()
        },
    )
    .await
}

pub(crate) async fn command(
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    common::call(method, format!("{base}{path}"), token, &body).await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn containers_are_listed_and_commanded_once_through_the_nodes_agent(pool: PgPool) {
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, |config| {
        config.gateway.container_command_timeout_secs = 3.0;
        config.fleet.expiry_check_secs = 0.2;
    })
    .await;
    let agent = node_agent(&config, &nats, testkit::docker::host()).await;
    let web = TestContainer::run("nebula-web", &[], &["sleep", "3600"]);
    let operator = common::create_token(&base, "ops", "operator").await;

    // Listed as the agent sees it, with its use.
    let listed_web = listed(&base, &web.name, "running").await;
    assert_eq!(listed_web["image"], TEST_IMAGE);
    assert_eq!(listed_web["id"], web.id.as_str());
    assert!(
        listed_web["status"].as_str().unwrap().starts_with("Up"),
        "{listed_web}"
    );
    assert_eq!(listing(&base).await["docker"], "available");
    wait_until("memory use in the listing", DEFAULT_WAIT, || async {
        let web = listed(&base, &web.name, "running").await;
        web["memory_used_bytes"].as_u64().filter(|used| *used > 0)
    })
    .await;

    // Stopped by an operator: recorded under the token's name, carried out by the node.
    let (status, stopped) = command(
        &base,
        &operator,
        reqwest::Method::POST,
        &format!("/api/nodes/{NODE}/containers/{}/stop?wait=30", web.name),
        json!({"timeout_secs": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["status"], "completed", "{stopped}");
    assert!(
        stopped["outcome"].as_str().unwrap().ends_with("exited"),
        "{stopped}"
    );
    assert_eq!(web.state().as_deref(), Some("exited"));
    let command_id = stopped["command_id"].as_str().unwrap().to_owned();
    let events = common::envelopes(&running.bus, "container_command", &command_id).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "container.command_requested",
            "container.command_started",
            "container.command_completed"
        ]
    );
    assert_eq!(events[0].actor, events::Actor::User("ops".into()));
    assert_eq!(events[1].actor, events::Actor::Node(NODE.into()));
    assert!(
        events
            .iter()
            .all(|e| e.correlation_id == events[0].correlation_id)
    );
    assert_eq!(
        events[0].correlation_id.to_string(),
        stopped["correlation_id"].as_str().unwrap()
    );
    let shown = common::get_json(
        &common::http(),
        format!("{base}/api/container-commands/{command_id}"),
    )
    .await;
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["action"], "stop");

    // What the engine did is on the log even though nobody asked it: the container died.
    let died = wait_until("the death recorded", DEFAULT_WAIT, || async {
        common::envelopes(&running.bus, "node_containers", NODE)
            .await
            .into_iter()
            .find(|e| e.data["container"] == web.name.as_str() && e.data["change"] == "die")
    })
    .await;
    assert_eq!(died.actor, events::Actor::Node(NODE.into()));
    assert!(died.data["exit_code"].is_i64(), "{}", died.data);

    // Delivered again (a redelivery after a crash): not run again, nothing new recorded.
    let work = events::container::ContainerWork {
        command_id: command_id.clone(),
        action: serde_json::from_value(events[0].data.clone()).unwrap(),
        correlation_id: events[0].correlation_id,
        causation_id: events[0].event_id,
    };
    running
        .bus
        .publish_raw(
            events::subjects::node_work(NODE),
            format!("again-{command_id}"),
            Vec::new(),
            serde_json::to_vec(&work).unwrap().into(),
        )
        .await
        .unwrap();
    // Started again afterwards: the node takes its work in order, so the repeat was handled.
    let (status, started) = command(
        &base,
        &operator,
        reqwest::Method::POST,
        &format!("/api/nodes/{NODE}/containers/{}/start?wait=30", web.name),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["status"], "completed", "{started}");
    assert_eq!(web.state().as_deref(), Some("running"));
    let again = common::envelopes(&running.bus, "container_command", &command_id).await;
    assert_eq!(again.len(), 3, "the repeat changed nothing: {again:?}");

    // Clear refusals: an unknown container or node is named; a viewer may not act.
    let (status, body) = command(
        &base,
        &operator,
        reqwest::Method::POST,
        &format!("/api/nodes/{NODE}/containers/nope/restart"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.to_string().contains("no container nope on node box-1"),
        "{body}"
    );
    let (status, body) = command(
        &base,
        &operator,
        reqwest::Method::POST,
        &format!("/api/nodes/box-9/containers/{}/start", web.name),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.to_string().contains("no node box-9"), "{body}");
    let (status, _) = command(
        &base,
        &operator,
        reqwest::Method::POST,
        &format!("/api/nodes/{NODE}/containers/{}/stop?wait=nope", web.name),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = command(
        &base,
        &operator,
        reqwest::Method::DELETE,
        &format!("/api/nodes/{NODE}/containers/{}", web.name),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "removing needs an admin");

    // The node's agent is down: a command is not left waiting, it expires with the reason.
    common::assert_no_permission_violations(&agent);
    agent.shutdown().await;
    let (status, expired) = command(
        &base,
        &operator,
        reqwest::Method::POST,
        &format!("/api/nodes/{NODE}/containers/{}/restart?wait=20", web.name),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{expired}");
    assert_eq!(expired["status"], "expired", "{expired}");
    assert!(
        expired["outcome"]
            .as_str()
            .unwrap()
            .contains("no agent on node box-1 took it"),
        "{expired}"
    );

    // Back up later, the agent does not run the expired command: the container keeps running
    // (a restart would have recorded a second start).
    let agent = node_agent(&config, &nats, testkit::docker::host()).await;
    let (status, removed) = command(
        &base,
        common::TOKEN,
        reqwest::Method::DELETE,
        &format!(
            "/api/nodes/{NODE}/containers/{}?force=true&wait=30",
            web.name
        ),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["status"], "completed", "{removed}");
    assert_eq!(web.state(), None, "removed");
    // Once the removal is on the log, every change before it is too.
    let changes = wait_until("the removal recorded", DEFAULT_WAIT, || async {
        let changes: Vec<String> = common::envelopes(&running.bus, "node_containers", NODE)
            .await
            .into_iter()
            .filter(|e| e.data["container"] == web.name.as_str())
            .map(|e| e.data["change"].as_str().unwrap_or_default().to_owned())
            .collect();
        (changes.last().map(String::as_str) == Some("destroy")).then_some(changes)
    })
    .await;
    assert_eq!(
        changes.iter().filter(|c| *c == "start").count(),
        2,
        "docker run's start and the operator's, no restart's: {changes:?}"
    );
    agent.shutdown().await;
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn an_engine_that_is_not_there_is_reported_not_fatal(pool: PgPool) {
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, |_| {}).await;
    let missing = format!("unix://{}/no-docker.sock", _state.path().display());
    let agent = node_agent(&config, &nats, missing).await;
    let listing = wait_until("the node's listing", DEFAULT_WAIT, || async {
        let listing = common::get_json(
            &common::http(),
            format!("{base}/api/nodes/{NODE}/containers"),
        )
        .await;
        listing["docker"]
            .as_str()?
            .starts_with("unavailable")
            .then_some(listing)
    })
    .await;
    assert_eq!(listing["containers"], json!([]));
    assert!(
        listing["docker"]
            .as_str()
            .unwrap()
            .contains("no-docker.sock"),
        "{listing}"
    );
    // The agent still heartbeats: the node is up.
    let node = common::get_json(&common::http(), format!("{base}/api/nodes/{NODE}")).await;
    assert_eq!(node["status"], "online", "{node}");
    agent.shutdown().await;
    running.shutdown().await;
}

/// The Containers room in a real headless Chromium, signed in as an operator: the node's
/// containers listed with their state, a stop and a start from the row's buttons (each answered
/// in the row and logged with who asked), and remove locked (it needs an admin).
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn the_containers_room_lists_a_node_and_an_operator_stops_and_starts_from_it(pool: PgPool) {
    use testkit::webdriver::Browser;
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, |_| {}).await;
    let agent = node_agent(&config, &nats, testkit::docker::host()).await;
    let web = TestContainer::run(
        "nebula-ui",
        &[],
        &["sh", "-c", "echo hello-from-the-ui; sleep 3600"],
    );
    let operator = common::create_token(&base, "ops", "operator").await;
    listed(&base, &web.name, "running").await;

    let browser = Browser::start().await;
    crate::dashboard_access::sign_in(
        &browser,
        &format!("{base}/#token={operator}"),
        "ops · operator",
    )
    .await;
    crate::dashboard::open_room(&browser, "containers").await;
    let row = format!(
        "document.querySelector('#containers tr[data-container=\"{}\"]')",
        web.name
    );
    let state_of = |wanted: &'static str| {
        let row = row.clone();
        let browser = &browser;
        async move {
            wait_until(
                &format!("the row to show {wanted}"),
                DEFAULT_WAIT,
                || async {
                    let shown = browser
                        .eval(&format!(
                            "const r = {row}; if (!r) return null;
                         const remove = r.querySelector('button[data-action=remove]');
                         const note = r.querySelector('.container-note');
                         return {{ state: r.dataset.state, image: r.children[2].textContent,
                                  note: note ? note.textContent : null,
                                  remove_locked: remove.classList.contains('locked') }};"
                        ))
                        .await;
                    (shown["state"] == wanted).then_some(shown)
                },
            )
            .await
        }
    };
    let shown = state_of("running").await;
    assert_eq!(shown["image"], TEST_IMAGE);
    assert_eq!(
        shown["remove_locked"], true,
        "removing needs an admin: {shown}"
    );

    browser
        .eval(&format!(
            "{row}.querySelector('button[data-action=stop]').click(); return null;"
        ))
        .await;
    let stopped = state_of("exited").await;
    assert!(
        stopped["note"]
            .as_str()
            .unwrap_or_default()
            .ends_with("exited"),
        "{stopped}"
    );
    assert_eq!(web.state().as_deref(), Some("exited"));
    let logged = wait_until("the stop in the command log", DEFAULT_WAIT, || async {
        let text = browser
            .eval("const li = document.querySelector('#container-commands li[data-command-id]'); return li ? li.textContent : null;")
            .await;
        let text = text.as_str()?.to_owned();
        (text.contains("completed")).then_some(text)
    })
    .await;
    assert!(
        logged.contains(&format!("stop {}", web.name)) && logged.contains("by ops"),
        "{logged}"
    );
    // Its log, read through the node's agent.
    browser
        .eval(&format!(
            "{row}.querySelector('button[data-action=logs]').click(); return null;"
        ))
        .await;
    let log = wait_until("the log shown", DEFAULT_WAIT, || async {
        let text = browser
            .eval("const box = document.querySelector('#container-log'); return box.hidden ? null : document.querySelector('#container-log-text').textContent;")
            .await;
        let text = text.as_str()?.to_owned();
        text.contains("hello-from-the-ui").then_some(text)
    })
    .await;
    assert!(!log.contains("token"), "{log}");
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(std::env::temp_dir().join("nebula-containers.png"), &png);

    browser
        .eval(&format!(
            "{row}.querySelector('button[data-action=start]').click(); return null;"
        ))
        .await;
    state_of("running").await;
    assert_eq!(web.state().as_deref(), Some("running"));
    agent.shutdown().await;
    running.shutdown().await;
}

/// `nebula containers …` as a user runs it (the real binary, the control plane's credentials):
/// runs concurrently with the agent, so it is awaited, never blocking the test's runtime.
async fn cli(nats: &NatsServer, args: &[&str]) -> std::process::Output {
    let args: Vec<&str> = std::iter::once("containers")
        .chain(args.iter().copied())
        .collect();
    common::nebula_cli(nats, &args).await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn the_cli_lists_and_commands_a_nodes_containers(pool: PgPool) {
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, |_| {}).await;
    let agent = node_agent(&config, &nats, testkit::docker::host()).await;
    let web = TestContainer::run("nebula-cli", &[], &["sleep", "3600"]);
    listed(&base, &web.name, "running").await;

    let ls = cli(&nats, &["ls", NODE]).await;
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let ls = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(ls.starts_with("node box-1: docker available"), "{ls}");
    let line = ls
        .lines()
        .find(|l| l.starts_with(&web.name))
        .expect("listed");
    assert!(
        line.contains("running") && line.contains(TEST_IMAGE),
        "{line}"
    );

    let stop = cli(&nats, &["stop", NODE, &web.name, "--timeout-secs", "1"]).await;
    let printed = String::from_utf8_lossy(&stop.stdout).into_owned();
    assert!(
        stop.status.success(),
        "{printed} {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(
        printed.starts_with(&format!(
            "stop {} on box-1: completed {} exited",
            web.name, web.name
        )),
        "{printed}"
    );
    assert_eq!(web.state().as_deref(), Some("exited"));
    let command_id = printed
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches(')');
    let events = common::envelopes(&running.bus, "container_command", command_id).await;
    assert_eq!(events[0].actor, events::Actor::User("cli:alice".into()));

    let missing = cli(&nats, &["start", NODE, "nope"]).await;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("no container nope on node box-1"),
        "{stderr}"
    );
    agent.shutdown().await;
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_containers_log_is_read_through_its_nodes_agent(pool: PgPool) {
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, |_| {}).await;
    let agent = node_agent(&config, &nats, testkit::docker::host()).await;
    let chatty = TestContainer::run(
        "nebula-log",
        &[],
        &[
            "sh",
            "-c",
            "for i in 1 2 3; do echo out$i; echo err$i >&2; done; sleep 3600",
        ],
    );
    let tty = TestContainer::run(
        "nebula-tty",
        &["-t"],
        &["sh", "-c", "echo on-a-tty; sleep 3600"],
    );
    listed(&base, &chatty.name, "running").await;
    let client = common::http();
    let url =
        |name: &str, query: &str| format!("{base}/api/nodes/{NODE}/containers/{name}/logs{query}");

    // Both streams, in order; the tail is the last lines.
    let logs = wait_until("all six lines", DEFAULT_WAIT, || async {
        let logs = common::get_json(&client, url(&chatty.name, "")).await;
        (logs["lines"].as_array()?.len() == 6).then_some(logs)
    })
    .await;
    assert_eq!(logs["truncated"], false);
    let stdout: Vec<&str> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["stream"] == "stdout")
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(stdout, ["out1", "out2", "out3"]);
    assert!(
        logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["stream"] == "stderr" && l["text"] == "err3")
    );
    let tail = common::get_json(&client, url(&chatty.name, "?tail=2")).await;
    assert_eq!(tail["lines"].as_array().unwrap().len(), 2);
    let text = common::get_text(&client, url(&chatty.name, "?tail=2&format=text")).await;
    assert_eq!(text.lines().count(), 2, "{text}");
    // A TTY container's log is its console.
    let console = wait_until("the TTY's line", DEFAULT_WAIT, || async {
        let logs = common::get_json(&client, url(&tty.name, "")).await;
        logs["lines"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(console["stream"], "console");
    assert_eq!(console["text"].as_str().unwrap().trim_end(), "on-a-tty");

    // The CLI reads the same.
    let printed = cli(&nats, &["logs", NODE, &chatty.name, "--tail", "6"]).await;
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    assert!(
        printed.contains("out1") && printed.contains("err3"),
        "{printed}"
    );

    // Clear refusals.
    for (query, name, status) in [
        ("?tail=0", chatty.name.as_str(), StatusCode::BAD_REQUEST),
        ("?format=xml", chatty.name.as_str(), StatusCode::BAD_REQUEST),
        ("", "no-such-box", StatusCode::NOT_FOUND),
    ] {
        let response = client
            .get(url(name, query))
            .bearer_auth(common::TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{name}{query}");
    }
    // Nobody on the node answers: said so, quickly.
    agent.shutdown().await;
    let response = client
        .get(url(&chatty.name, ""))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.text().await.unwrap();
    assert!(body.contains("no agent on node box-1 answers"), "{body}");
    running.shutdown().await;
}

/// Docker goes away under a running agent and comes back: the node says so, a command is
/// refused (or fails) with the reason instead of hanging, and everything works again after.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn docker_going_away_is_reported_and_recovered_from(pool: PgPool) {
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, |_| {}).await;
    let mut engine = testkit::docker::PrivateEngine::start().await;
    let agent = node_agent(&config, &nats, engine.host()).await;
    let web = TestContainer::run_on(&engine.host(), "nebula-away", &[], &["sleep", "3600"]);
    listed(&base, &web.name, "running").await;

    engine.stop().await;
    let listing = wait_until("docker reported unavailable", DEFAULT_WAIT, || async {
        let listing = listing(&base).await;
        listing["docker"]
            .as_str()?
            .starts_with("unavailable")
            .then_some(listing)
    })
    .await;
    assert_eq!(listing["containers"], json!([]));
    let (status, refused) = command(
        &base,
        common::TOKEN,
        reqwest::Method::POST,
        &format!("/api/nodes/{NODE}/containers/{}/start", web.name),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("docker on node box-1 is unavailable"),
        "{refused}"
    );
    // One that reaches the agent all the same (recorded a moment before) fails with the reason.
    let commands = bus::store::commands(running.bus.clone(), ());
    let requested = sagas::containers::request_container_command(
        &commands,
        NODE,
        events::container::ContainerAction::Start {
            container: web.name.clone(),
        },
        std::time::Duration::from_secs(30),
        bus::store::CommandMeta::new(events::Actor::User("test".into())),
    )
    .await
    .unwrap();
    let state = bus::store::JetStreamStore::new(running.bus.clone());
    let failed = sagas::containers::wait_container_command(
        &running.bus,
        &state,
        &requested.command_id,
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(
        failed.status,
        Some(domain::container::CommandStatus::Failed)
    );
    assert!(
        failed
            .outcome
            .as_deref()
            .unwrap_or_default()
            .starts_with("docker: unavailable"),
        "{:?}",
        failed.outcome
    );

    // Back: listed again (its engine stopped it on the way down), and started on request; the
    // agent follows the engine's events again.
    engine.resume().await;
    listed(&base, &web.name, "exited").await;
    let (status, started) = command(
        &base,
        common::TOKEN,
        reqwest::Method::POST,
        &format!("/api/nodes/{NODE}/containers/{}/start?wait=30", web.name),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["status"], "completed", "{started}");
    let started_id = started["container"].as_str().unwrap().to_owned();
    wait_until(
        "the start recorded after the engine came back",
        DEFAULT_WAIT,
        || async {
            let changes = common::envelopes(&running.bus, "node_containers", NODE).await;
            let n = changes
                .iter()
                .filter(|e| {
                    e.data["container"] == started_id.as_str() && e.data["change"] == "start"
                })
                .count();
            (n >= 2).then_some(())
        },
    )
    .await;
    drop(web);
    agent.shutdown().await;
    running.shutdown().await;
}
