//! The AI developer's providers and places: the OpenAI-compatible fallback, a model pulled
//! first, a change refused or a job cancelled leaving the base alone, and jobs run on a node
//! that takes them (or here when it does not). The helpers are `ai_dev`'s.

use crate::ai_dev::{
    CARGO, CONTROL, LIB, MODEL, Stack, ask, deploy_setup, fixing_script, head, repo_config,
    repository, settled, small_changes, stack, tool, until,
};
use crate::common::{self, call};

use nebula::Parts;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::NatsServer;
use testkit::ollama::{FakeOllama, Model, Reply};

/// Ollama away: the configured OpenAI-compatible API does the job, its key from the vault (and
/// nowhere on the log); without the key the job fails saying which secret is missing.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn without_ollama_the_openai_compatible_fallback_does_the_job(pool: PgPool) {
    let ollama = FakeOllama::start(Vec::new()).await; // unused: its URL is replaced below
    let openai = testkit::openai::FakeOpenAi::start("sk-test-k3y-value").await;
    let dir = tempfile::tempdir().unwrap();
    repository(dir.path(), &[("Cargo.toml", CARGO), ("src/lib.rs", LIB)]);
    let (down, fallback) = (
        format!("http://127.0.0.1:{}", testkit::free_port()),
        openai.url.clone(),
    );
    let Stack {
        nats,
        state: _state,
        config: _,
        running,
        base,
    } = stack(
        &pool,
        &ollama,
        vec![repo_config("calc", dir.path(), small_changes())],
        move |config| {
            config.ai_dev.ollama_url = down;
            config.ai_dev.openai.url = fallback;
        },
    )
    .await;
    let id = ask(&base, "calc", "Make the failing test pass.").await;
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("the vault has no secret openai-api-key"),
        "{job:#}"
    );

    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/secrets/openai-api-key"),
        common::TOKEN,
        &json!({"value": "sk-test-k3y-value"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    openai.script(fixing_script(None));
    let id = ask(&base, "calc", "Make the failing test pass.").await;
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "merged", "{job:#}");
    assert_eq!(job["started"]["provider"], "openai");
    assert_eq!(job["started"]["model"], "gpt-4o-mini");
    assert!(
        job["started"]["model_rule"]
            .as_str()
            .unwrap()
            .starts_with("fallback to the OpenAI-compatible API"),
        "{job:#}"
    );
    // The fake refuses a tool answer that names no earlier call: every one named its call.
    let last = openai.requests().pop().unwrap();
    let tool_ids: Vec<&str> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["tool_call_id"].as_str().unwrap())
        .collect();
    assert_eq!(tool_ids.len(), 5, "{last}");
    common::assert_not_on_log(&nats, "sk-test-k3y-value").await;
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_missing_model_is_pulled_first_when_asked(pool: PgPool) {
    let ollama = FakeOllama::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    repository(dir.path(), &[("Cargo.toml", CARGO), ("src/lib.rs", LIB)]);
    let Stack {
        nats: _nats,
        state: _state,
        config: _,
        running,
        base,
    } = stack(
        &pool,
        &ollama,
        vec![repo_config("calc", dir.path(), small_changes())],
        |config| {
            config.ai_dev.model = "fresh:1b".to_owned();
            config.ai_dev.pull_missing = true;
        },
    )
    .await;
    let json_call = |tool: &str, arguments: Value| {
        Reply::Text(json!({"tool": tool, "arguments": arguments}).to_string())
    };
    ollama.script([
        json_call(
            "replace_in_file",
            json!({"path": "src/lib.rs", "old": "a - b", "new": "a + b"}),
        ),
        json_call("finish", json!({"summary": "add adds"})),
    ]);
    let id = ask(&base, "calc", "Make the failing test pass.").await;
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "merged", "{job:#}");
    assert_eq!(job["started"]["model"], "fresh:1b");
    assert_eq!(job["started"]["tool_mode"], "json");
    running.shutdown().await;
}

/// A change refused by a person keeps its branch for a look and leaves the base alone; a job
/// cancelled while its model thinks stops there, its branch kept.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_rejected_change_and_a_cancelled_job_leave_the_base_alone(pool: PgPool) {
    let (
        ollama,
        dir,
        start,
        Stack {
            nats: _nats,
            state: _state,
            config: _,
            running,
            base,
        },
    ) = deploy_setup(&pool).await;
    ollama.script(fixing_script(Some(("deploy/app.toml", "replicas = 9\n"))));
    let id = ask(&base, "calc", "Fix add and scale up.").await;
    let job = settled(&base, &id).await;
    let approval_id = job["approval_id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/approvals/{approval_id}/reject"),
        common::TOKEN,
        &json!({"comment": "not nine"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let job = until(&base, &id, |s| s != "awaiting_approval" && s != "approved").await;
    assert_eq!(job["status"], "rejected", "{job:#}");
    assert!(
        job["error"].as_str().unwrap().contains("refused by admin"),
        "{job:#}"
    );
    assert_eq!(head(dir.path(), "main"), start);
    let branch = job["started"]["branch"].as_str().unwrap();
    assert_eq!(
        head(dir.path(), branch),
        job["change"]["commit"].as_str().unwrap(),
        "the branch is kept"
    );

    ollama.script([
        tool("update_plan", json!({"plan": "think long"})),
        Reply::Held(Box::new(Reply::Text("never heard".to_owned()))),
    ]);
    let id = ask(&base, "calc", "Think about it.").await;
    testkit::wait_until("the first step", testkit::DEFAULT_WAIT, || async {
        let (_, job) = call(
            Method::GET,
            format!("{base}/api/ai-dev/jobs/{id}"),
            common::TOKEN,
            &Value::Null,
        )
        .await;
        (job["steps"].as_array()?.len() == 1 && ollama.left() == 0).then_some(())
    })
    .await;
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/ai-dev/jobs/{id}/cancel"),
        common::TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    assert_eq!(head(dir.path(), "main"), start);
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/ai-dev/jobs/{id}/cancel"),
        common::TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a finished job is not cancelled again"
    );
    running.shutdown().await;
}

/// Remote execution: a node whose agent takes AI developer jobs (its registration says
/// `ai-dev`) is offered each job through its work queue, takes it with its own credentials and
/// carries it out in its own clone, with every step decided by the control plane's relay; the
/// control plane still decides the change (a rule, or people), the node merges it. A job on a
/// repository the node does not have is not taken: once the offer runs out it runs here, and
/// the job says why.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_node_that_takes_jobs_runs_them_and_a_job_it_does_not_take_runs_here(pool: PgPool) {
    const NODE: &str = "gpu-box";
    let ollama = FakeOllama::start(vec![Model::new(MODEL, &["completion", "tools"], 8192)]).await;
    let files = [
        ("Cargo.toml", CARGO),
        ("src/lib.rs", LIB),
        ("deploy/app.toml", "replicas = 1\n"),
    ];
    // The control plane's clone, the node's own clone, and a repository only the control
    // plane has.
    let (here, there, only_here) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let start = repository(here.path(), &files);
    repository(there.path(), &files);
    repository(only_here.path(), &files);
    let nats = NatsServer::start_with_nodes(&[NODE]);
    let state = tempfile::tempdir().unwrap();
    let mut config = common::config(&nats, &pool, state.path());
    config.ai_dev.ollama_url = ollama.url.clone();
    config.ai_dev.model = MODEL.to_owned();
    config.ai_dev.remote_wait_secs = 8.0;
    config.ai_dev.repos = vec![
        repo_config("calc", here.path(), small_changes()),
        repo_config("tools", only_here.path(), small_changes()),
    ];
    let running = nebula::start(&config, CONTROL).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());

    let node_state = tempfile::tempdir().unwrap();
    let mut node = config.clone();
    node.state_dir = node_state.path().to_path_buf();
    node.artifacts_dir = node_state.path().join("artifacts");
    node.agent.node_id = Some(NODE.into());
    node.ai_dev.node_runner = true;
    node.ai_dev.repos = vec![repo_config(
        "calc",
        there.path(),
        domain::ai_dev::AutoApprove::default(),
    )];
    common::sign_in_as(
        &mut node,
        &nats,
        &natsauth::Identity::Agent(NODE.parse().unwrap()),
    );
    let agent = nebula::start(&node, Parts::AGENT).await.unwrap();
    testkit::wait_until(
        "the node to register as taking AI developer jobs",
        testkit::DEFAULT_WAIT,
        || async {
            let (_, nodes) = call(
                Method::GET,
                format!("{base}/api/nodes"),
                common::TOKEN,
                &Value::Null,
            )
            .await;
            nodes.to_string().contains(NODE).then_some(())
        },
    )
    .await;

    // A small change: offered to the node, taken and carried out there, auto-approved by the
    // control plane's rule, merged in the node's clone.
    ollama.script(fixing_script(None));
    let id = ask(&base, "calc", "Make the failing test pass.").await;
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "merged", "{job:#}");
    assert_eq!(job["offered_to"], NODE);
    assert_eq!(job["fallback"], Value::Null);
    assert_eq!(job["started"]["runs_on"], NODE, "{job:#}");
    assert_eq!(job["decision"]["auto_rule"], "small_change");
    assert_eq!(
        head(there.path(), "main"),
        job["merged_commit"].as_str().unwrap()
    );
    assert!(
        std::fs::read_to_string(there.path().join("src/lib.rs"))
            .unwrap()
            .contains("a + b")
    );
    assert_eq!(
        head(here.path(), "main"),
        start,
        "the control plane's clone is not the one changed"
    );
    // The node's steps are the node's, its decision the control plane's.
    let log = common::envelopes(&running.bus, "ai_dev_job", &id).await;
    let actor = |kind: &str| {
        log.iter()
            .find(|e| e.event_type == kind)
            .map(|e| e.actor.clone())
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    assert_eq!(
        actor("ai_dev.claimed"),
        events::Actor::Node(NODE.to_owned())
    );
    assert_eq!(actor("ai_dev.step"), events::Actor::Node(NODE.to_owned()));
    assert_eq!(actor("ai_dev.merged"), events::Actor::Node(NODE.to_owned()));
    assert_eq!(
        actor("ai_dev.decided"),
        events::Actor::Service("ai-dev".to_owned())
    );

    // A change to deploy/ waits for a person; approved, the node merges it.
    ollama.script(fixing_script(Some(("deploy/app.toml", "replicas = 2\n"))));
    let id = ask(&base, "calc", "Run two replicas.").await;
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "awaiting_approval", "{job:#}");
    assert_eq!(job["started"]["runs_on"], NODE);
    let approval_id = job["approval_id"].as_str().unwrap().to_owned();
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/approvals/{approval_id}/approve"),
        common::TOKEN,
        &json!({"comment": "two it is"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let job = until(&base, &id, |s| s != "awaiting_approval" && s != "approved").await;
    assert_eq!(job["status"], "merged", "{job:#}");
    assert_eq!(
        std::fs::read_to_string(there.path().join("deploy/app.toml")).unwrap(),
        "replicas = 2\n"
    );

    // A repository the node does not have: offered, not taken, run here after the offer ran out.
    ollama.script(fixing_script(None));
    let id = ask(&base, "tools", "Make the failing test pass.").await;
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "merged", "{job:#}");
    assert_eq!(job["offered_to"], NODE);
    assert_eq!(job["started"]["runs_on"], "local");
    assert!(
        job["fallback"]
            .as_str()
            .unwrap()
            .contains("node gpu-box did not take it within 8s"),
        "{job:#}"
    );
    assert!(
        std::fs::read_to_string(only_here.path().join("src/lib.rs"))
            .unwrap()
            .contains("a + b")
    );

    common::assert_no_permission_violations(&agent);
    agent.shutdown().await;
    running.shutdown().await;
}
