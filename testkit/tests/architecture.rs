//! The dependency direction of the house, checked on `cargo metadata` and on the sources:
//! events ← bus, projections ← gateway, services; only bus talks to NATS, only projections to
//! Postgres, only gateway serves HTTP.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Normal (non-dev) dependencies of every workspace package, by package name.
fn dependencies() -> HashMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(testkit::workspace_root())
        .output()
        .expect("failed to run cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let deps = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (package["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

const SERVICES: &[&str] = &["agent", "render", "chat", "twitch", "discord", "posting"];

/// `(package, dependencies it must not have)`.
fn forbidden() -> Vec<(&'static str, Vec<&'static str>)> {
    let layers = [
        "bus",
        "projections",
        "gateway",
        "domain",
        "sagas",
        "nebula",
        "testkit",
    ];
    let mut rules = vec![
        (
            "events",
            [
                &["async-nats", "sqlx", "axum", "tokio", "redis", "cqrs-es"][..],
                &layers[..],
                SERVICES,
            ]
            .concat(),
        ),
        (
            "domain",
            [
                &[
                    "async-nats",
                    "sqlx",
                    "axum",
                    "redis",
                    "bus",
                    "projections",
                    "gateway",
                    "sagas",
                    "nebula",
                    "testkit",
                ][..],
                SERVICES,
            ]
            .concat(),
        ),
        (
            "bus",
            [
                &[
                    "sqlx",
                    "axum",
                    "redis",
                    "projections",
                    "gateway",
                    "sagas",
                    "nebula",
                    "testkit",
                    "domain",
                ][..],
                SERVICES,
            ]
            .concat(),
        ),
        (
            "projections",
            [
                &[
                    "async-nats",
                    "axum",
                    "redis",
                    "gateway",
                    "sagas",
                    "nebula",
                    "testkit",
                ][..],
                SERVICES,
            ]
            .concat(),
        ),
        (
            "gateway",
            [&["async-nats", "sqlx", "nebula", "testkit"][..], SERVICES].concat(),
        ),
        (
            "sagas",
            [
                &[
                    "async-nats",
                    "sqlx",
                    "axum",
                    "redis",
                    "projections",
                    "gateway",
                    "nebula",
                    "testkit",
                ][..],
                SERVICES,
            ]
            .concat(),
        ),
    ];
    for service in SERVICES {
        rules.push((
            service,
            vec![
                "async-nats",
                "sqlx",
                "axum",
                "projections",
                "gateway",
                "nebula",
                "testkit",
            ],
        ));
    }
    rules
}

#[test]
fn dependencies_point_one_way() {
    let dependencies = dependencies();
    let mut violations = Vec::new();
    for (package, banned) in forbidden() {
        let deps = dependencies
            .get(package)
            .unwrap_or_else(|| panic!("package {package} not in the workspace"));
        for dep in deps {
            if banned.contains(&dep.as_str()) {
                violations.push(format!("{package} depends on {dep}"));
            }
        }
    }
    // Product code may use the test kit only as a dev-dependency (the bench is a dev tool).
    for (package, deps) in &dependencies {
        if package != "bench" && deps.iter().any(|d| d == "testkit") {
            violations.push(format!(
                "{package} depends on testkit outside dev-dependencies"
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "dependency direction broken:\n{}",
        violations.join("\n")
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The same rule on the code itself: `async_nats::`, `sqlx::` and `axum::` appear only in the
/// one crate that owns each (tests excluded).
#[test]
fn only_one_crate_touches_each_backend() {
    let root = testkit::workspace_root();
    let owners = [
        ("async_nats", "bus/src"),
        ("sqlx", "projections/src"),
        ("axum", "gateway/src"),
    ];
    let mut files = Vec::new();
    for dir in [
        "events/src",
        "domain/src",
        "bus/src",
        "projections/src",
        "gateway/src",
        "services",
        "nebula/src",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut violations = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if relative.contains("/tests/") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (krate, owner) in owners {
            if !relative.starts_with(owner)
                && (text.contains(&format!("{krate}::")) || text.contains(&format!("use {krate}")))
            {
                violations.push(format!("{relative} uses {krate}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "backend used outside its crate:\n{}",
        violations.join("\n")
    );
}
