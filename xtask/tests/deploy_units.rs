//! The systemd units in deploy/ are valid: a structural check everywhere, plus
//! `systemd-analyze verify` where systemd-analyze exists.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

const BINARY: &str = "/usr/local/bin/nebula";

fn read_unit(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("failed to read {}: {err}", path.display()))
}

/// Everything wrong with a unit named `name` whose ExecStart should be `nebula <subcommand>`.
fn problems(name: &str, text: &str, subcommand: &str) -> Vec<String> {
    let mut problems = structural_problems(text, subcommand);
    problems.extend(systemd_analyze_problems(name, text).unwrap_or_default());
    problems
}

/// The sections and keys every Nebula unit needs, checked without systemd.
fn structural_problems(text: &str, subcommand: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut section = String::new();
    let mut entries: Vec<(String, String, String)> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            section = name.to_owned();
        } else if let Some((key, value)) = line.split_once('=').filter(|_| !section.is_empty()) {
            entries.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        } else {
            problems.push(format!(
                "line {}: not `[Section]` or `Key=Value` in a section: {line}",
                number + 1
            ));
        }
    }
    let value = |section: &str, key: &str| {
        entries
            .iter()
            .find(|(s, k, _)| s == section && k == key)
            .map(|(_, _, value)| value.as_str())
    };
    let mut require =
        |section: &str, key: &str, accept: &dyn Fn(&str) -> bool| match value(section, key) {
            None => problems.push(format!("[{section}] has no {key}=")),
            Some(found) if !accept(found) => problems.push(format!(
                "[{section}] {key}={found} is not what it should be"
            )),
            Some(_) => {}
        };
    require("Unit", "Description", &|value| !value.is_empty());
    let exec_start = format!("{BINARY} {subcommand}");
    require("Service", "ExecStart", &|value| value == exec_start);
    require("Service", "Restart", &|value| {
        value == "on-failure" || value == "always"
    });
    require("Service", "EnvironmentFile", &|value| {
        value == "-/etc/nebula/nebula.env"
    });
    require("Service", "NoNewPrivileges", &|value| value == "yes");
    require("Service", "ProtectSystem", &|value| value == "strict");
    require("Install", "WantedBy", &|value| value == "multi-user.target");
    problems
}

/// The complaints of `systemd-analyze verify` (None where it is not installed). ExecStart's
/// binary is swapped for /bin/true in a copy, because verify rejects a command that does not
/// exist and /usr/local/bin/nebula is not installed here; everything else is checked as written.
fn systemd_analyze_problems(name: &str, text: &str) -> Option<Vec<String>> {
    let probe = Command::new("systemd-analyze").arg("--version").output();
    if !probe.is_ok_and(|output| output.status.success()) {
        return None;
    }
    let dir = TempDir::new(name);
    let unit = dir.0.join(name);
    let copy: String = text
        .lines()
        .map(
            |line| match line.strip_prefix(&format!("ExecStart={BINARY}")) {
                Some(arguments) => format!("ExecStart=/bin/true{arguments}\n"),
                None => format!("{line}\n"),
            },
        )
        .collect();
    std::fs::write(&unit, copy).expect("failed to write the unit copy");
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .expect("failed to run systemd-analyze");
    let mut problems: Vec<String> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| format!("systemd-analyze: {line}"))
        .collect();
    if !output.status.success() {
        problems.push(format!("systemd-analyze verify {name}: {}", output.status));
    }
    Some(problems)
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "xtask-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).expect("failed to create a temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn nebula_service_is_valid() {
    let problems = problems("nebula.service", &read_unit("nebula.service"), "up");
    assert!(
        problems.is_empty(),
        "deploy/nebula.service:\n{}",
        problems.join("\n")
    );
}

#[test]
fn nebula_agent_service_is_valid() {
    let problems = problems(
        "nebula-agent.service",
        &read_unit("nebula-agent.service"),
        "agent",
    );
    assert!(
        problems.is_empty(),
        "deploy/nebula-agent.service:\n{}",
        problems.join("\n")
    );
}

#[test]
fn nebula_render_worker_service_is_valid() {
    let problems = problems(
        "nebula-render-worker.service",
        &read_unit("nebula-render-worker.service"),
        "worker render",
    );
    assert!(
        problems.is_empty(),
        "deploy/nebula-render-worker.service:\n{}",
        problems.join("\n")
    );
}

#[test]
fn nebula_chat_service_is_valid() {
    let problems = problems(
        "nebula-chat.service",
        &read_unit("nebula-chat.service"),
        "chat",
    );
    assert!(
        problems.is_empty(),
        "deploy/nebula-chat.service:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_misspelled_key_is_reported() {
    let broken = read_unit("nebula.service").replace("Restart=on-failure", "Restrat=on-failure");
    let structural = structural_problems(&broken, "up");
    assert_eq!(structural, ["[Service] has no Restart="]);
    if let Some(systemd) = systemd_analyze_problems("nebula.service", &broken) {
        assert!(
            systemd.iter().any(|line| line.contains("Restrat")),
            "systemd-analyze did not report the misspelled key: {systemd:?}"
        );
    }
}

#[test]
fn a_wrong_command_is_reported() {
    let text = read_unit("nebula-agent.service");
    assert!(
        !structural_problems(&text, "up").is_empty(),
        "the agent unit must not pass as `nebula up`"
    );
    let moved = text.replace(
        &format!("ExecStart={BINARY}"),
        "ExecStart=/opt/nowhere/nebula",
    );
    let problems = problems("nebula-agent.service", &moved, "agent");
    assert!(
        problems.iter().any(|line| line.contains("ExecStart")),
        "{problems:?}"
    );
}
