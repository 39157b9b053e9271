//! The AI developer end to end: real git repositories (git2, in temp dirs), real toolchains
//! (cargo) on tiny projects the tests make, Redis for the jobs' memory, and a fake Ollama that
//! speaks its HTTP API and replays scripted conversations. A job fixes a failing test on its
//! own branch (red build, then green), is auto-approved as a small change and merged; one that
//! touches `deploy/` waits for a person, is approved, merged and rolled back; one whose model
//! reaches outside its worktree or for `.env` is refused (recorded) and, out of steps, fails
//! leaving the base untouched; a worker stopped mid-job resumes from Redis; a long
//! conversation is compressed, the instruction and the plan kept verbatim.

use std::path::Path;

use crate::common::{self, call};

use nebula::{Part, Parts};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::NatsServer;
use testkit::ollama::{FakeOllama, Model, Reply};

pub(crate) const CONTROL: Parts = Parts::of(&[Part::Gateway, Part::Projector, Part::Dispatcher]);
pub(crate) const MODEL: &str = "coder:7b";

/// A repository with `files` committed on `main`, checked out.
pub(crate) fn repository(dir: &Path, files: &[(&str, &str)]) -> String {
    let files: Vec<(&str, String)> = files.iter().map(|(p, t)| (*p, (*t).to_owned())).collect();
    let commit = crate::deploy_git::commit(dir, &files, "start");
    let repo = git2::Repository::open(dir).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
        .unwrap();
    commit
}

pub(crate) fn head(dir: &Path, branch: &str) -> String {
    let repo = git2::Repository::open(dir).unwrap();
    repo.refname_to_id(&format!("refs/heads/{branch}"))
        .unwrap()
        .to_string()
}

/// A crate whose one test fails: `add` subtracts.
pub(crate) const LIB: &str = "pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() {\n        assert_eq!(super::add(2, 3), 5);\n    }\n}\n";
pub(crate) const CARGO: &str =
    "[package]\nname = \"calc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n";

pub(crate) fn tool(name: &str, arguments: Value) -> Reply {
    Reply::Tools(vec![(name.to_owned(), arguments)])
}

/// The replies of a model that fixes `add`: a plan, a red build, a look, the fix, a green build,
/// done.
pub(crate) fn fixing_script(extra_file: Option<(&str, &str)>) -> Vec<Reply> {
    let mut script = vec![
        tool(
            "update_plan",
            json!({"plan": "1. see the failure 2. fix add 3. build green"}),
        ),
        tool("run_build", json!({})),
        tool("read_file", json!({"path": "src/lib.rs"})),
        tool(
            "replace_in_file",
            json!({"path": "src/lib.rs", "old": "a - b", "new": "a + b"}),
        ),
    ];
    if let Some((path, content)) = extra_file {
        script.push(tool(
            "write_file",
            json!({"path": path, "content": content}),
        ));
    }
    script.push(tool("run_build", json!({})));
    script.push(tool(
        "finish",
        json!({"summary": "add subtracted; it adds now"}),
    ));
    script
}

pub(crate) struct Stack {
    pub(crate) nats: NatsServer,
    pub(crate) state: tempfile::TempDir,
    pub(crate) config: nebula::Config,
    pub(crate) running: nebula::Running,
    pub(crate) base: String,
}

pub(crate) async fn stack(
    pool: &PgPool,
    ollama: &FakeOllama,
    repos: Vec<aidev::RepoConfig>,
    tune: impl FnOnce(&mut nebula::Config),
) -> Stack {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = common::config(&nats, pool, state.path());
    config.ai_dev.ollama_url = ollama.url.clone();
    config.ai_dev.model = MODEL.to_owned();
    config.ai_dev.repos = repos;
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

/// A crate whose test fails, with a `deploy/` file, on `main`; and a stack whose one repository
/// (`calc`) it is, small changes auto-approved. The fake Ollama, the folder, `main`'s commit.
pub(crate) async fn deploy_setup(pool: &PgPool) -> (FakeOllama, tempfile::TempDir, String, Stack) {
    let ollama = FakeOllama::start(vec![Model::new(MODEL, &["completion", "tools"], 8192)]).await;
    let dir = tempfile::tempdir().unwrap();
    let start = repository(
        dir.path(),
        &[
            ("Cargo.toml", CARGO),
            ("src/lib.rs", LIB),
            ("deploy/app.toml", "replicas = 1\n"),
        ],
    );
    let stack = stack(
        pool,
        &ollama,
        vec![repo_config("calc", dir.path(), small_changes())],
        |_| {},
    )
    .await;
    (ollama, dir, start, stack)
}

pub(crate) fn repo_config(
    name: &str,
    path: &Path,
    auto: domain::ai_dev::AutoApprove,
) -> aidev::RepoConfig {
    aidev::RepoConfig {
        name: name.to_owned(),
        path: path.to_path_buf(),
        base: "main".to_owned(),
        model: None,
        deny: vec!["secrets/**".to_owned()],
        auto_approve: auto,
        delete_rejected_branches: false,
    }
}

pub(crate) fn small_changes() -> domain::ai_dev::AutoApprove {
    domain::ai_dev::AutoApprove {
        docs_only: false,
        test_only: false,
        small_change: Some(domain::ai_dev::SmallChange {
            max_lines: 10,
            max_files: 3,
        }),
    }
}

pub(crate) async fn ask(base: &str, repo: &str, instruction: &str) -> String {
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/ai-dev/jobs"),
        common::TOKEN,
        &json!({"repo": repo, "instruction": instruction}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer["job_id"].as_str().unwrap().to_owned()
}

/// The job once it has ended or waits for its approval.
pub(crate) async fn settled(base: &str, id: &str) -> Value {
    until(base, id, |_| true).await
}

/// The job once it has settled in a state `wanted` accepts.
pub(crate) async fn until(base: &str, id: &str, wanted: impl Fn(&str) -> bool) -> Value {
    testkit::wait_until(
        "the job to settle",
        std::time::Duration::from_secs(180),
        || async {
            let (status, view) = call(
                Method::GET,
                format!("{base}/api/ai-dev/jobs/{id}?wait=5"),
                common::TOKEN,
                &Value::Null,
            )
            .await;
            (status == StatusCode::OK && wanted(view["status"].as_str().unwrap_or_default()))
                .then_some(view)
        },
    )
    .await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_job_fixes_a_failing_test_on_its_branch_and_merges_as_a_small_change(pool: PgPool) {
    let ollama = FakeOllama::start(vec![Model::new(MODEL, &["completion", "tools"], 8192)]).await;
    let dir = tempfile::tempdir().unwrap();
    let start = repository(dir.path(), &[("Cargo.toml", CARGO), ("src/lib.rs", LIB)]);
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
        |_| {},
    )
    .await;

    // Refused asks: an unknown repository, an empty instruction.
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/ai-dev/jobs"),
        common::TOKEN,
        &json!({"repo": "elsewhere", "instruction": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer.to_string().contains("configured: calc"), "{answer}");
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/ai-dev/jobs"),
        common::TOKEN,
        &json!({"repo": "calc", "instruction": " "}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    ollama.script(fixing_script(None));
    let id = ask(&base, "calc", "Make the failing test pass.").await;
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "merged", "{job:#}");
    let started = &job["started"];
    assert!(
        started["branch"].as_str().unwrap().starts_with("ai-dev/"),
        "{started}"
    );
    assert_eq!(started["base_commit"], start.as_str());
    assert_eq!(started["model"], MODEL);
    assert_eq!(started["tool_mode"], "tools");
    // Red, then green (twice: asked for, and again before finishing).
    let builds = job["builds"].as_array().unwrap();
    assert_eq!(builds.len(), 3, "{job:#}");
    assert_eq!(builds[0]["ok"], false);
    assert_eq!(builds[0]["toolchain"], "cargo");
    assert_eq!(builds[0]["failing_tests"], json!(["tests::adds"]));
    assert_eq!(
        (builds[1]["ok"].as_bool(), builds[2]["ok"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(job["decision"]["auto_rule"], "small_change", "{job:#}");
    let change = &job["change"];
    assert_eq!(change["files"], json!(["src/lib.rs"]));
    assert_eq!(
        (
            change["lines_added"].as_u64(),
            change["lines_removed"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert!(
        change["diff"].as_str().unwrap().contains("+    a + b"),
        "{change}"
    );
    assert_eq!(job["steps"].as_array().unwrap().len(), 6);
    // Merged: a fast-forward of main, its checked-out files updated too.
    assert_eq!(job["fast_forward"], true);
    assert_eq!(
        head(dir.path(), "main"),
        job["merged_commit"].as_str().unwrap()
    );
    let file = std::fs::read_to_string(dir.path().join("src/lib.rs")).unwrap();
    assert!(file.contains("a + b"), "{file}");
    // The model saw the instruction and the tools.
    let first = &ollama.requests()[0];
    assert!(
        first["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("Make the failing test pass.")
    );
    assert_eq!(first["tools"].as_array().unwrap().len(), 8);
    assert_eq!(ollama.left(), 0);
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_change_to_deploy_waits_for_a_person_then_merges_and_rolls_back(pool: PgPool) {
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
    ollama.script(fixing_script(Some(("deploy/app.toml", "replicas = 2\n"))));
    let id = ask(&base, "calc", "Fix add and run two replicas.").await;
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "awaiting_approval", "{job:#}");
    assert_eq!(job["decision"]["auto_rule"], Value::Null);
    assert!(
        job["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("protected paths (deploy/app.toml)"),
        "{job:#}"
    );
    assert_eq!(
        head(dir.path(), "main"),
        start,
        "main must not move before the approval"
    );
    let approval_id = job["approval_id"].as_str().unwrap().to_owned();
    let (_, approval) = call(
        Method::GET,
        format!("{base}/api/approvals/{approval_id}"),
        common::TOKEN,
        &Value::Null,
    )
    .await;
    assert_eq!(
        (
            approval["subject_kind"].as_str(),
            approval["subject_id"].as_str()
        ),
        (Some("ai_dev"), Some(id.as_str())),
        "{approval}"
    );
    let preview = approval["preview"]["body"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        preview.contains("+replicas = 2") && preview.contains("+    a + b"),
        "{approval}"
    );

    // Approved by the one who asked (the author is the model): merged.
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/approvals/{approval_id}/approve"),
        common::TOKEN,
        &json!({"comment": "looks right"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let job = until(&base, &id, |s| s != "awaiting_approval" && s != "approved").await;
    assert_eq!(job["status"], "merged", "{job:#}");
    let merged = job["merged_commit"].as_str().unwrap().to_owned();
    assert_eq!(head(dir.path(), "main"), merged);
    let file = std::fs::read_to_string(dir.path().join("deploy/app.toml")).unwrap();
    assert_eq!(file, "replicas = 2\n");

    // Rolled back: a revert commit on main, the files as they were.
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/ai-dev/jobs/{id}/rollback"),
        common::TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "rolled_back", "{job:#}");
    let revert = job["revert_commit"].as_str().unwrap();
    assert_eq!(head(dir.path(), "main"), revert);
    let repo = git2::Repository::open(dir.path()).unwrap();
    let commit = repo
        .find_commit(git2::Oid::from_str(revert).unwrap())
        .unwrap();
    assert!(
        commit
            .message()
            .unwrap()
            .contains(&format!("This reverts commit {merged}"))
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("deploy/app.toml")).unwrap(),
        "replicas = 1\n"
    );
    // A second rollback is refused.
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/ai-dev/jobs/{id}/rollback"),
        common::TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_model_that_reaches_outside_is_refused_and_runs_out_of_steps(pool: PgPool) {
    let ollama = FakeOllama::start(vec![Model::new(MODEL, &["completion", "tools"], 8192)]).await;
    let dir = tempfile::tempdir().unwrap();
    let start = repository(
        dir.path(),
        &[
            ("Cargo.toml", CARGO),
            ("src/lib.rs", LIB),
            (".env", "TOKEN=hunter2\n"),
            ("secrets/db.txt", "pw\n"),
        ],
    );
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
        |config| config.ai_dev.max_steps = 5,
    )
    .await;
    ollama.script([
        tool("read_file", json!({"path": "../outside.txt"})),
        tool("read_file", json!({"path": ".env"})),
        tool(
            "write_file",
            json!({"path": "secrets/db.txt", "content": "x"}),
        ),
        tool(
            "write_file",
            json!({"path": "src/lib.rs", "content": "broken"}),
        ),
        Reply::Text("I am thinking.".to_owned()),
    ]);
    let id = ask(&base, "calc", "Do something.").await;
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["failure"], "budget");
    assert!(
        job["error"].as_str().unwrap().contains("step budget (5)"),
        "{job:#}"
    );
    let steps = job["steps"].as_array().unwrap();
    let refused: Vec<bool> = steps
        .iter()
        .map(|s| s["refused"].as_bool().unwrap())
        .collect();
    assert_eq!(refused, [true, true, true, false, false], "{job:#}");
    assert!(
        steps[0]["result"]
            .as_str()
            .unwrap()
            .contains("outside the worktree")
    );
    assert!(!steps[1]["result"].as_str().unwrap().contains("hunter2"));
    // Nothing reached the base, nor outside the worktree; the branch is kept to look at.
    assert_eq!(head(dir.path(), "main"), start);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("secrets/db.txt")).unwrap(),
        "pw\n"
    );
    let branch = job["started"]["branch"].as_str().unwrap();
    assert!(
        git2::Repository::open(dir.path())
            .unwrap()
            .find_branch(branch, git2::BranchType::Local)
            .is_ok()
    );
    for request in ollama.requests() {
        assert!(
            !request.to_string().contains("hunter2"),
            "the secret went to the model"
        );
    }
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_worker_stopped_mid_job_resumes_it_from_redis(pool: PgPool) {
    let ollama = FakeOllama::start(vec![Model::new(MODEL, &["completion", "tools"], 8192)]).await;
    let dir = tempfile::tempdir().unwrap();
    repository(dir.path(), &[("Cargo.toml", CARGO), ("src/lib.rs", LIB)]);
    let Stack {
        nats,
        state,
        config,
        running,
        base,
    } = stack(
        &pool,
        &ollama,
        vec![repo_config("calc", dir.path(), small_changes())],
        |_| {},
    )
    .await;
    let mut script = fixing_script(None);
    let rest = script.split_off(3);
    // The fourth answer never comes to this worker: it is stopped while waiting for it.
    script.push(Reply::Held(Box::new(Reply::Text("too late".to_owned()))));
    ollama.script(script);
    let id = ask(&base, "calc", "Make the failing test pass.").await;
    testkit::wait_until("three steps", testkit::DEFAULT_WAIT, || async {
        let (_, job) = call(
            Method::GET,
            format!("{base}/api/ai-dev/jobs/{id}"),
            common::TOKEN,
            &Value::Null,
        )
        .await;
        (job["steps"].as_array()?.len() == 3 && ollama.left() == 0).then_some(())
    })
    .await;
    running.shutdown().await;
    let before = ollama.requests().len();

    // A new worker: the job goes on from its memory (the plan, the turns, the budget spent).
    ollama.script(rest);
    let running = nebula::start(&config, CONTROL).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "merged", "{job:#}");
    let numbers: Vec<u64> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["n"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6], "{job:#}");
    let resumed = ollama.requests()[before].clone();
    let text = resumed["messages"].to_string();
    assert!(
        text.contains("see the failure") && text.contains("pub fn add"),
        "the memory came back: {text}"
    );
    running.shutdown().await;
    drop((nats, state));
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_long_conversation_is_compressed_keeping_the_instruction_and_plan(pool: PgPool) {
    let ollama = FakeOllama::start(vec![Model::new(MODEL, &["completion", "tools"], 1000)]).await;
    let dir = tempfile::tempdir().unwrap();
    let big = "the quick brown fox jumps over the lazy dog. ".repeat(70);
    repository(
        dir.path(),
        &[
            ("Cargo.toml", CARGO),
            ("src/lib.rs", LIB),
            ("notes/big.txt", big.as_str()),
        ],
    );
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
            config.ai_dev.compress_at = 0.5;
            config.ai_dev.keep_last = 2;
        },
    )
    .await;
    ollama.script([
        tool(
            "update_plan",
            json!({"plan": "PLAN-MARKER: read, fix add, build"}),
        ),
        tool("read_file", json!({"path": "notes/big.txt"})),
        Reply::Text("SUMMARY-ONE: planned; read notes/big.txt (nothing useful)".to_owned()),
        tool("read_file", json!({"path": "src/lib.rs"})),
        Reply::Text("SUMMARY-TWO: big.txt is noise; add subtracts in src/lib.rs".to_owned()),
        tool(
            "replace_in_file",
            json!({"path": "src/lib.rs", "old": "a - b", "new": "a + b"}),
        ),
        tool("finish", json!({"summary": "add adds"})),
    ]);
    let id = ask(
        &base,
        "calc",
        "INSTRUCTION-MARKER: make the failing test pass.",
    )
    .await;
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "merged", "{job:#}");
    assert_eq!(job["compressions"], 2, "{job:#}");
    let requests = ollama.requests();
    let summarising: Vec<&Value> = requests
        .iter()
        .filter(|r| {
            r["messages"][0]["content"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Summarise")
        })
        .collect();
    assert_eq!(summarising.len(), 2);
    assert!(
        summarising[0]["tools"].is_null(),
        "a summary is asked without tools"
    );
    // After the second compression: the instruction and the plan verbatim, the summary, not
    // the big file.
    let last = requests.last().unwrap();
    let system = last["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("INSTRUCTION-MARKER: make the failing test pass."),
        "{system}"
    );
    assert!(
        system.contains("PLAN-MARKER: read, fix add, build"),
        "{system}"
    );
    let turns = last["messages"].to_string();
    assert!(
        turns.contains("SUMMARY-TWO") && !turns.contains("lazy dog"),
        "{turns}"
    );
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_model_without_tools_works_in_json_and_an_unknown_model_fails_clearly(pool: PgPool) {
    let ollama = FakeOllama::start(vec![Model::new("plain:3b", &["completion"], 4096)]).await;
    let dir = tempfile::tempdir().unwrap();
    let start = repository(dir.path(), &[("Cargo.toml", CARGO), ("src/lib.rs", LIB)]);
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
            config.ai_dev.model = "plain:3b".to_owned();
        },
    )
    .await;
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/ai-dev/jobs"),
        common::TOKEN,
        &json!({"repo": "calc", "instruction": "x", "model": "missing:1b"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let job = settled(&base, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(
        (job["status"].as_str(), job["failure"].as_str()),
        (Some("failed"), Some("model")),
        "{job:#}"
    );
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("ollama pull missing:1b"),
        "{job:#}"
    );

    let json_call = |tool: &str, arguments: Value| {
        Reply::Text(
            json!({"tool": tool, "arguments": arguments, "said": format!("using {tool}")})
                .to_string(),
        )
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
    assert_eq!(job["started"]["tool_mode"], "json");
    assert_eq!(
        job["started"]["model_rule"],
        "the configured default (ai_dev.model)"
    );
    assert_eq!(job["steps"][0]["tool"], "replace_in_file");
    assert_eq!(job["steps"][0]["said"], "using replace_in_file");
    for request in ollama.requests() {
        assert!(
            request["tools"].is_null(),
            "tools sent to a model without them"
        );
        assert_eq!(request["format"]["required"], json!(["tool", "arguments"]));
    }
    assert_ne!(head(dir.path(), "main"), start);
    running.shutdown().await;
}

/// The AI Developer room: a change waiting for a person, its diff highlighted, approved with
/// a click, merged; then rolled back from the room too.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_change_is_approved_and_rolled_back_from_the_dashboard(pool: PgPool) {
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
    ollama.script(fixing_script(Some(("deploy/app.toml", "replicas = 2\n"))));
    let id = ask(&base, "calc", "Fix add and run two replicas.").await;
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "awaiting_approval", "{job:#}");

    let browser = testkit::webdriver::Browser::start().await;
    crate::dashboard_access::sign_in(
        &browser,
        &format!("{base}/#token={}", common::TOKEN),
        "admin · admin",
    )
    .await;
    browser
        .eval(&format!("location.hash = '#/aidev?job={id}'; return true;"))
        .await;
    let shown = testkit::wait_until("the job with its highlighted diff", testkit::DEFAULT_WAIT, || async {
        let found = browser
            .eval("const d = document.querySelector('#aidev-job'); if (!d || d.hidden) return null;
                   const approve = d.querySelector('button[data-action=approve]');
                   const keyword = d.querySelector('.aidev-diff .hljs .hljs-keyword');
                   return approve && keyword ? { keyword: keyword.textContent, text: d.textContent } : null;")
            .await;
        (!found.is_null()).then_some(found)
    })
    .await;
    assert!(
        shown["text"].as_str().unwrap().contains("needs a person"),
        "{shown}"
    );
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(std::env::temp_dir().join("nebula-aidev.png"), &png);
    browser
        .eval("document.querySelector('.aidev-diff').scrollIntoView(); return true;")
        .await;
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(std::env::temp_dir().join("nebula-aidev-diff.png"), &png);
    browser
        .eval("document.querySelector('#aidev-job button[data-action=approve]').click(); return true;")
        .await;
    let job = until(&base, &id, |s| s == "merged").await;
    assert_ne!(head(dir.path(), "main"), start);
    testkit::wait_until("the room to show it merged", testkit::DEFAULT_WAIT, || async {
        let status = browser
            .eval("const b = document.querySelector('#aidev-job .aidev-status'); return b ? b.textContent : null;")
            .await;
        (status == "merged").then_some(())
    })
    .await;
    browser
        .eval("document.querySelector('#aidev-job button[data-action=rollback]').click(); return true;")
        .await;
    let job_after = until(&base, &id, |s| s == "rolled_back").await;
    assert_eq!(
        head(dir.path(), "main"),
        job_after["revert_commit"].as_str().unwrap()
    );
    assert_ne!(job["merged_commit"], job_after["revert_commit"]);
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_job_fixes_a_python_package_with_pytest(pool: PgPool) {
    let ollama = FakeOllama::start(vec![Model::new(MODEL, &["completion", "tools"], 8192)]).await;
    let dir = tempfile::tempdir().unwrap();
    repository(
        dir.path(),
        &[
            (
                "pyproject.toml",
                "[project]\nname = \"calc\"\nversion = \"0.1.0\"\n",
            ),
            ("calc.py", "def add(a, b):\n    return a - b\n"),
            (
                "tests/test_calc.py",
                "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
            ),
        ],
    );
    let Stack {
        nats: _nats,
        state: _state,
        config: _,
        running,
        base,
    } = stack(
        &pool,
        &ollama,
        vec![repo_config("pycalc", dir.path(), small_changes())],
        |_| {},
    )
    .await;
    ollama.script([
        tool("run_build", json!({})),
        tool(
            "replace_in_file",
            json!({"path": "calc.py", "old": "a - b", "new": "a + b"}),
        ),
        tool("finish", json!({"summary": "add adds"})),
    ]);
    let id = ask(&base, "pycalc", "Make the failing test pass.").await;
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "merged", "{job:#}");
    let builds = job["builds"].as_array().unwrap();
    assert_eq!(builds[0]["toolchain"], "python");
    assert_eq!(builds[0]["ok"], false);
    assert_eq!(
        builds[0]["failing_tests"],
        json!(["tests/test_calc.py::test_add"]),
        "{job:#}"
    );
    assert_eq!(builds[1]["ok"], true, "{job:#}");
    assert_eq!(
        job["change"]["files"],
        json!(["calc.py"]),
        "pytest's caches are not committed"
    );
    running.shutdown().await;
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_job_fixes_a_node_package_with_its_test_runner(pool: PgPool) {
    let ollama = FakeOllama::start(vec![Model::new(MODEL, &["completion", "tools"], 8192)]).await;
    let dir = tempfile::tempdir().unwrap();
    repository(
        dir.path(),
        &[
            (
                "package.json",
                r#"{"name": "calc", "version": "0.1.0", "scripts": {"test": "node --test"}}"#,
            ),
            ("calc.js", "exports.add = (a, b) => a - b;\n"),
            (
                "test/calc.test.js",
                "const test = require('node:test');\nconst assert = require('node:assert');\nconst { add } = require('../calc.js');\n\ntest('adds', () => {\n  assert.strictEqual(add(2, 3), 5);\n});\n",
            ),
        ],
    );
    let Stack {
        nats: _nats,
        state: _state,
        config: _,
        running,
        base,
    } = stack(
        &pool,
        &ollama,
        vec![repo_config("jscalc", dir.path(), small_changes())],
        |_| {},
    )
    .await;
    ollama.script([
        tool("run_build", json!({})),
        tool(
            "replace_in_file",
            json!({"path": "calc.js", "old": "a - b", "new": "a + b"}),
        ),
        tool("finish", json!({"summary": "add adds"})),
    ]);
    let id = ask(&base, "jscalc", "Make the failing test pass.").await;
    let job = settled(&base, &id).await;
    assert_eq!(job["status"], "merged", "{job:#}");
    let builds = job["builds"].as_array().unwrap();
    assert_eq!(builds[0]["toolchain"], "npm");
    assert_eq!(builds[0]["commands"], json!(["npm test"]));
    assert_eq!(builds[0]["ok"], false);
    assert_eq!(builds[0]["failing_tests"], json!(["adds"]), "{job:#}");
    assert_eq!(builds[1]["ok"], true, "{job:#}");
    assert_eq!(job["change"]["files"], json!(["calc.js"]));
    assert!(
        std::fs::read_to_string(dir.path().join("calc.js"))
            .unwrap()
            .contains("a + b")
    );
    running.shutdown().await;
}
