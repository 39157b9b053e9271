//! Build verification: the toolchain detected from the worktree's files (Cargo, npm, Go,
//! Python with pytest), its build then its tests run there — each command in a process group
//! of its own (all of it killed at the deadline or on cancel), both streams together, the tail
//! kept — and the failing tests named where the output says them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use events::ai_dev::{BUILD_OUTPUT_MAX_BYTES, BuildChecked, tail};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// What to run for a worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub toolchain: &'static str,
    pub commands: Vec<Vec<String>>,
    /// Why nothing runs, when nothing does.
    pub note: Option<String>,
}

fn words(command: &[&str]) -> Vec<String> {
    command.iter().map(|w| (*w).to_owned()).collect()
}

/// Whether `program` is on the PATH.
fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The toolchain of the project at `root`, by its files (first found: Cargo, npm, Go, Python).
pub(crate) fn detect(root: &Path) -> Plan {
    let has = |file: &str| root.join(file).is_file();
    if has("Cargo.toml") {
        return Plan {
            toolchain: "cargo",
            commands: vec![
                words(&["cargo", "build", "--all-targets"]),
                words(&["cargo", "test"]),
            ],
            note: None,
        };
    }
    if has("package.json") {
        let scripts = std::fs::read_to_string(root.join("package.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .map(|package| package["scripts"].clone())
            .unwrap_or_default();
        let mut commands = Vec::new();
        if scripts["build"].is_string() {
            commands.push(words(&["npm", "run", "build"]));
        }
        if scripts["test"].is_string() {
            commands.push(words(&["npm", "test"]));
        }
        let note = commands
            .is_empty()
            .then(|| "package.json has no build or test script".to_owned());
        return Plan {
            toolchain: "npm",
            commands,
            note,
        };
    }
    if has("go.mod") {
        return Plan {
            toolchain: "go",
            commands: vec![
                words(&["go", "build", "./..."]),
                words(&["go", "test", "./..."]),
            ],
            note: None,
        };
    }
    if has("pyproject.toml") || has("requirements.txt") || has("setup.py") {
        return Plan {
            toolchain: "python",
            commands: vec![words(&["python3", "-m", "pytest", "-q"])],
            note: None,
        };
    }
    Plan {
        toolchain: "none",
        commands: Vec::new(),
        note: Some("no Cargo.toml, package.json, go.mod or Python project found".to_owned()),
    }
}

/// The tests the output says failed (cargo, pytest, go test, node's test runner).
pub(crate) fn failing_tests(output: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in output.lines() {
        let line = line.trim_end();
        let found = if let Some(rest) = line.strip_prefix("test ") {
            rest.strip_suffix(" ... FAILED").map(str::to_owned)
        } else if let Some(rest) = line.strip_prefix("FAILED ") {
            rest.split(" - ").next().map(|s| s.trim().to_owned())
        } else if let Some(rest) = line.trim_start().strip_prefix("--- FAIL: ") {
            rest.split_whitespace().next().map(str::to_owned)
        } else if let Some(rest) = line.strip_prefix("not ok ") {
            rest.split_once(" - ")
                .map(|(_, name)| name.trim().to_owned())
        } else {
            None
        };
        if let Some(name) = found
            && !name.is_empty()
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

/// Where a Cargo project builds (shared by a repository's jobs, outside their worktrees).
pub(crate) struct Env {
    pub cargo_target_dir: PathBuf,
}

/// Runs `plan` in `root` within `timeout` (all commands together).
pub(crate) async fn run(
    root: &Path,
    plan: &Plan,
    env: &Env,
    timeout: Duration,
    cancel: &CancellationToken,
) -> BuildChecked {
    let began = Instant::now();
    let commands: Vec<String> = plan.commands.iter().map(|c| c.join(" ")).collect();
    let mut output = String::new();
    if let Some(note) = &plan.note {
        output.push_str(note);
        output.push('\n');
    }
    let mut result = BuildChecked {
        toolchain: plan.toolchain.to_owned(),
        commands,
        ok: true,
        exit_status: None,
        duration_ms: 0,
        output: String::new(),
        failing_tests: Vec::new(),
    };
    for command in &plan.commands {
        output.push_str(&format!("$ {}\n", command.join(" ")));
        if !installed(&command[0]) {
            output.push_str(&format!(
                "{} is not installed on this machine\n",
                command[0]
            ));
            result.ok = false;
            break;
        }
        let left = timeout.saturating_sub(began.elapsed());
        let (status, text) = run_one(root, command, env, left, cancel).await;
        output.push_str(&text);
        match status {
            Ok(0) => {}
            Ok(code) => {
                result.ok = false;
                result.exit_status = Some(code);
                break;
            }
            Err(why) => {
                output.push_str(&why);
                output.push('\n');
                result.ok = false;
                break;
            }
        }
    }
    result.failing_tests = failing_tests(&output);
    result.output = tail(&output, BUILD_OUTPUT_MAX_BYTES);
    result.duration_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
    result
}

/// One command: its exit status (or why it has none) and its output (both streams, the last
/// quarter MiB kept).
async fn run_one(
    root: &Path,
    command: &[String],
    env: &Env,
    timeout: Duration,
    cancel: &CancellationToken,
) -> (Result<i32, String>, String) {
    let spawned = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("exec 2>&1; exec \"$@\"")
        .arg("sh")
        .args(command)
        .current_dir(root)
        .env("CARGO_TARGET_DIR", &env.cargo_target_dir)
        .env("CARGO_TERM_COLOR", "never")
        .env("NO_COLOR", "1")
        .env("CI", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            return (
                Err(format!("{} could not start: {err}", command[0])),
                String::new(),
            );
        }
    };
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut kept: Vec<u8> = Vec::new();
    const KEEP: usize = 256 * 1024;
    let read = async {
        let mut buffer = [0u8; 8192];
        loop {
            match stdout.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buffer[..n]);
                    if kept.len() > 2 * KEEP {
                        kept.drain(..kept.len() - KEEP);
                    }
                }
            }
        }
    };
    let stopped = tokio::select! {
        () = read => None,
        () = tokio::time::sleep(timeout) => Some(format!("killed at the build's {} s timeout", timeout.as_secs())),
        () = cancel.cancelled() => Some("killed: the job was cancelled".to_owned()),
    };
    let text = String::from_utf8_lossy(&kept).into_owned();
    if let Some(why) = stopped {
        if let Err(err) = common::process::stop_group(&mut child, pid, Duration::ZERO).await {
            tracing::warn!(error = %err, "a build command was not stopped");
        }
        return (Err(why), text);
    }
    let status = match child.wait().await {
        Ok(status) => status.code().ok_or_else(|| "ended by a signal".to_owned()),
        Err(err) => Err(format!("lost: {err}")),
    };
    (status, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_toolchain_is_found_by_its_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect(dir.path()).toolchain, "none");
        std::fs::write(dir.path().join("go.mod"), "module x\n").unwrap();
        assert_eq!(
            detect(dir.path()).commands,
            [
                words(&["go", "build", "./..."]),
                words(&["go", "test", "./..."])
            ]
        );
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"scripts": {"test": "node --test"}}"#,
        )
        .unwrap();
        let npm = detect(dir.path());
        assert_eq!(
            (npm.toolchain, npm.commands),
            ("npm", vec![words(&["npm", "test"])])
        );
        std::fs::write(dir.path().join("Cargo.toml"), "[package]\n").unwrap();
        assert_eq!(detect(dir.path()).toolchain, "cargo");
        let py = tempfile::tempdir().unwrap();
        std::fs::write(py.path().join("pyproject.toml"), "").unwrap();
        assert_eq!(detect(py.path()).toolchain, "python");
    }

    /// A build past its deadline is killed with everything it started (its process group).
    #[tokio::test]
    async fn a_build_past_its_time_is_killed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan {
            toolchain: "test",
            commands: vec![words(&["sh", "-c", "sleep 60 & echo started $!; wait"])],
            note: None,
        };
        let env = Env {
            cargo_target_dir: dir.path().join("target"),
        };
        let build = run(
            dir.path(),
            &plan,
            &env,
            Duration::from_millis(300),
            &CancellationToken::new(),
        )
        .await;
        assert!(!build.ok);
        assert_eq!(build.exit_status, None);
        assert!(
            build.output.contains("started") && build.output.contains("killed at the build's"),
            "{}",
            build.output
        );
        // The build's child (a minute's sleep) is gone with it: not running, at most a zombie
        // waiting to be reaped (a survivor would still be sleeping past this bounded wait).
        let words: Vec<&str> = build.output.split_whitespace().collect();
        let child: u32 = words
            .windows(2)
            .find_map(|w| (w[0] == "started").then(|| w[1].parse().ok()).flatten())
            .expect("the child's pid");
        testkit::wait_until(
            "the build's child to be gone",
            testkit::DEFAULT_WAIT,
            || async {
                let stat =
                    std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
                // `pid (comm) state …`: gone, or a zombie (`Z`).
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().next());
                matches!(state, None | Some("Z")).then_some(())
            },
        )
        .await;
    }

    #[test]
    fn failing_tests_are_named_from_each_runner() {
        let output = "test tests::adds ... FAILED\ntest tests::ok ... ok\n\
                      FAILED tests/test_calc.py::test_div - ZeroDivisionError\n\
                      --- FAIL: TestSum (0.00s)\nnot ok 2 - parses dates\n";
        assert_eq!(
            failing_tests(output),
            [
                "tests::adds",
                "tests/test_calc.py::test_div",
                "TestSum",
                "parses dates"
            ]
        );
    }
}
