//! P12: the AI developer's own cost. A job on a tiny Cargo crate whose model (the fake Ollama)
//! answers at once: the time between two of its steps (the model asked over HTTP, the tool
//! carried out in the worktree, the step recorded on the log, the memory saved in Redis)
//! against the same chat request made directly; and its build verification (detection, then
//! `cargo build --all-targets` and `cargo test` in a process group, output kept) against the
//! same two commands run directly on a checkout of the same commit, both with a warm target
//! folder.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::Env;
use events::ai_dev::AiDevEvent;
use serde_json::json;
use testkit::ollama::{FakeOllama, Model, Reply};

use bench::gateway::GatewayProcess;

pub(crate) struct AiDev {
    pub(crate) step: Vec<Duration>,
    pub(crate) model_direct: Vec<Duration>,
    pub(crate) verify: Vec<Duration>,
    pub(crate) verify_direct: Vec<Duration>,
}

const MODEL: &str = "bench:7b";
const CARGO: &str =
    "[package]\nname = \"benchcalc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n";
const LIB: &str = "pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() {\n        assert_eq!(super::add(2, 3), 5);\n    }\n}\n";

/// A repository with the crate committed on `main`.
fn repository(dir: &Path) -> Result<()> {
    let repo = git2::Repository::init(dir)?;
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(dir.join("Cargo.toml"), CARGO)?;
    std::fs::write(dir.join("src/lib.rs"), LIB)?;
    let mut index = repo.index()?;
    index.add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let who = git2::Signature::now("Bench", "bench@example.com")?;
    repo.commit(Some("refs/heads/main"), &who, &who, "start", &tree, &[])?;
    repo.set_head("refs/heads/main")?;
    Ok(())
}

fn tool(name: &str, arguments: serde_json::Value) -> Reply {
    Reply::Tools(vec![(name.to_owned(), arguments)])
}

/// `cargo build --all-targets` then `cargo test` in `dir`, as the verification runs them.
fn cargo_directly(dir: &Path, target: &Path) -> Result<Duration> {
    let started = Instant::now();
    for args in [&["build", "--all-targets"][..], &["test"][..]] {
        let output = std::process::Command::new("cargo")
            .args(args)
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", target)
            .env("CARGO_TERM_COLOR", "never")
            .output()
            .context("cargo")?;
        if !output.status.success() {
            bail!(
                "cargo {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(started.elapsed())
}

pub(crate) async fn ai_dev(rounds: usize, steps: usize) -> Result<AiDev> {
    let env = Env::new("bench_p12", "").await?;
    let ollama = FakeOllama::start(vec![Model::new(MODEL, &["completion", "tools"], 32768)]).await;
    let work = tempfile::tempdir()?;
    let repo = work.path().join("repo");
    repository(&repo)?;
    let config = work.path().join("nebula.toml");
    std::fs::write(
        &config,
        format!(
            "[ai_dev]\nollama_url = \"{}\"\nmodel = \"{MODEL}\"\nmax_steps = 1000\n\n[[ai_dev.repos]]\nname = \"bench\"\npath = \"{}\"\nauto_approve = {{ small_change = {{ max_lines = 100, max_files = 5 }} }}\n",
            ollama.url,
            repo.display()
        ),
    )?;
    let stack = GatewayProcess::start_with(
        &env,
        "up",
        &[
            ("NEBULA_CONFIG", config.display().to_string()),
            ("REDIS_URL", testkit::redis_url()),
            ("NEBULA_AGENT__DOCKER_HOST", String::new()),
            ("NEBULA_AGENT__DISABLE_GPU_DETECTION", "true".to_owned()),
            ("NEBULA_AGENT_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ],
    )
    .await?;
    let http = reqwest::Client::new();
    let direct_target = work.path().join("direct-target");
    let mut result = AiDev {
        step: Vec::new(),
        model_direct: Vec::new(),
        verify: Vec::new(),
        verify_direct: Vec::new(),
    };
    // A first round warms both target folders; it is not counted.
    for round in 0..=rounds {
        let mut script: Vec<Reply> = (0..steps)
            .map(|i| {
                tool(
                    "update_plan",
                    json!({ "plan": format!("round {round}, step {i}") }),
                )
            })
            .collect();
        script.push(tool(
            "write_file",
            json!({ "path": format!("notes/round-{round}.md"), "content": "benchmark\n" }),
        ));
        script.push(tool("run_build", json!({})));
        script.push(tool("finish", json!({ "summary": "a note" })));
        ollama.script(script);
        let (status, answer) = stack
            .call(
                "POST",
                "/api/ai-dev/jobs",
                Some(&json!({ "repo": "bench", "instruction": "Add a note." }).to_string()),
            )
            .await?;
        if status != 202 {
            bail!("a job was refused: {status} {answer}");
        }
        let id = answer["job_id"].as_str().context("no job id")?.to_owned();
        let started = Instant::now();
        loop {
            let (status, job) = stack
                .call("GET", &format!("/api/ai-dev/jobs/{id}?wait=20"), None)
                .await?;
            if status == 200 {
                if job["status"] != "merged" {
                    bail!("job {id} ended {}: {}", job["status"], job["error"]);
                }
                break;
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("job {id} did not finish in 300 s");
            }
        }
        let envelopes = env.bus.aggregate_events("ai_dev_job", &id).await?;
        let mut plan_steps = Vec::new();
        let mut verifications = Vec::new();
        for envelope in &envelopes {
            match envelope.decode::<AiDevEvent>() {
                Ok(AiDevEvent::Step(step)) if step.tool.as_deref() == Some("update_plan") => {
                    plan_steps.push(envelope.occurred_at);
                }
                Ok(AiDevEvent::BuildChecked(build)) => {
                    verifications.push(Duration::from_millis(build.duration_ms));
                }
                _ => {}
            }
        }
        // The same commit checked out anew, its two commands run directly.
        let checkout = work.path().join(format!("direct-{round}"));
        git2::Repository::clone(repo.to_str().context("path")?, &checkout)?;
        let direct = cargo_directly(&checkout, &direct_target)?;
        // The model asked directly, as often as the job asked it.
        ollama.script((0..steps).map(|_| Reply::Text("ok".to_owned())));
        let mut asked = Vec::new();
        for _ in 0..steps {
            let began = Instant::now();
            let response = http
                .post(format!("{}/api/chat", ollama.url))
                .json(&json!({ "model": MODEL, "stream": false, "messages": [{ "role": "user", "content": "next" }] }))
                .send()
                .await?;
            response.bytes().await?;
            asked.push(began.elapsed());
        }
        if round == 0 {
            continue;
        }
        for pair in plan_steps.windows(2) {
            let gap = (pair[1] - pair[0]).to_std().unwrap_or_default();
            result.step.push(gap);
        }
        result.verify.extend(verifications);
        result.verify_direct.push(direct);
        result.model_direct.extend(asked);
    }
    drop(stack);
    Ok(result)
}
