//! The house rules, checked on the tree itself (rust-analyzer's "tidy" tests in spirit). Each
//! test here is one **Architecture Invariant** of ARCHITECTURE.md, which names it; the crate
//! graph is read from ARCHITECTURE.md itself, so the drawing and the manifests cannot drift.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// Every workspace crate: its folder (relative to the root) and its normal dependencies on
/// other workspace crates and on the crates the owner rules name.
struct Crate {
    dir: String,
    workspace_deps: BTreeSet<String>,
    all_deps: BTreeSet<String>,
}

fn crates() -> BTreeMap<String, Crate> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("failed to run cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    let root = root();
    packages
        .iter()
        .map(|package| {
            let all_deps: BTreeSet<String> = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
            let dir = manifest
                .parent()
                .unwrap()
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let crate_ = Crate {
                dir,
                workspace_deps: all_deps.intersection(&names).cloned().collect(),
                all_deps,
            };
            (package["name"].as_str().unwrap().to_owned(), crate_)
        })
        .collect()
}

/// The ```crate-graph block of ARCHITECTURE.md: `crate: dependency dependency …` per line.
fn drawn_graph() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let start = text
        .find("```crate-graph\n")
        .expect("ARCHITECTURE.md has no ```crate-graph block");
    let body = &text[start + "```crate-graph\n".len()..];
    let body = &body[..body
        .find("```")
        .expect("the crate-graph block is not closed")];
    body.lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|line| {
            let (name, deps) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("crate-graph line without a colon: {line:?}"));
            (
                name.trim().to_owned(),
                deps.split_whitespace().map(str::to_owned).collect(),
            )
        })
        .collect()
}

/// **Architecture Invariant:** the crates depend on each other exactly as ARCHITECTURE.md draws.
#[test]
fn the_crate_graph_is_the_one_architecture_md_draws() {
    let crates = crates();
    let drawn = drawn_graph();
    let mut problems = Vec::new();
    for (name, krate) in &crates {
        match drawn.get(name) {
            None => problems.push(format!("{name} is not in ARCHITECTURE.md's crate graph")),
            Some(deps) if deps != &krate.workspace_deps => problems.push(format!(
                "{name}: ARCHITECTURE.md draws {deps:?}, Cargo.toml has {:?}",
                krate.workspace_deps
            )),
            Some(_) => {}
        }
    }
    for name in drawn.keys() {
        if !crates.contains_key(name) {
            problems.push(format!(
                "ARCHITECTURE.md draws {name}, which is no workspace crate"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

const DEV_TOOLS: [&str; 3] = ["testkit", "bench", "xtask"];

fn is_service(krate: &Crate) -> bool {
    krate.dir.starts_with("services/")
}

/// **Architecture Invariant:** a service depends on no other service, except the `chat` crate
/// every chat platform shares; and no product crate depends on a dev tool.
#[test]
fn services_stand_alone_and_product_needs_no_dev_tool() {
    let crates = crates();
    let services: BTreeSet<&String> = crates
        .iter()
        .filter(|(_, k)| is_service(k))
        .map(|(name, _)| name)
        .collect();
    let mut problems = Vec::new();
    for (name, krate) in &crates {
        if is_service(krate) {
            for dep in &krate.workspace_deps {
                if services.contains(dep) && dep != "chat" {
                    problems.push(format!("service {name} depends on service {dep}"));
                }
            }
        }
        if !DEV_TOOLS.contains(&name.as_str()) {
            for tool in DEV_TOOLS {
                if krate.workspace_deps.contains(tool) {
                    problems.push(format!("{name} depends on the dev tool {tool}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Files of the tree: tracked and new (not ignored) ones, relative to the root.
fn files() -> Vec<String> {
    let output = Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(root())
        .output()
        .expect("failed to run git ls-files");
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|path| root().join(path).is_file())
        .map(str::to_owned)
        .collect()
}

/// The Rust sources of product crates (their `src/`, unit tests included), by crate.
fn product_sources() -> Vec<(String, String)> {
    let crates = crates();
    let mut out = Vec::new();
    for path in files() {
        if !path.ends_with(".rs") {
            continue;
        }
        let owner = crates
            .iter()
            .filter(|(_, k)| path.starts_with(&format!("{}/src/", k.dir)))
            .max_by_key(|(_, k)| k.dir.len());
        if let Some((name, _)) = owner
            && !DEV_TOOLS.contains(&name.as_str())
        {
            out.push((name.clone(), path));
        }
    }
    out
}

/// Code without comments: line comments and doc comments removed (string literals kept).
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
}

/// **Architecture Invariant:** each backend has one owner crate: only `bus` uses async-nats,
/// only `projections` sqlx, only `gateway` axum, only `kv` redis (in manifests and in code).
#[test]
fn each_backend_has_one_owner() {
    let owners = [
        ("async-nats", "async_nats", "bus"),
        ("sqlx", "sqlx", "projections"),
        ("axum", "axum", "gateway"),
        ("redis", "redis", "kv"),
    ];
    let crates = crates();
    let mut problems = Vec::new();
    for (name, krate) in &crates {
        if DEV_TOOLS.contains(&name.as_str()) {
            continue;
        }
        for (package, _, owner) in owners {
            if krate.all_deps.contains(package) && name != owner {
                problems.push(format!(
                    "{name} depends on {package}, which only {owner} may"
                ));
            }
        }
    }
    for (name, path) in product_sources() {
        let text = std::fs::read_to_string(root().join(&path)).unwrap();
        for (_, module, owner) in owners {
            let uses = code_lines(&text).any(|line| {
                line.contains(&format!("{module}::")) || line.contains(&format!("use {module}"))
            });
            if uses && name != owner {
                problems.push(format!("{path} uses {module}, which only {owner} may"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// **Architecture Invariant:** `events` is plain data: it depends on serialization, ids and
/// time only — nothing of NATS, Postgres, HTTP, Redis, tokio or cqrs-es.
#[test]
fn events_is_plain_data() {
    let allowed = ["serde", "serde_json", "uuid", "chrono", "thiserror"];
    let crates = crates();
    let extra: Vec<&String> = crates["events"]
        .all_deps
        .iter()
        .filter(|dep| !allowed.contains(&dep.as_str()))
        .collect();
    assert!(extra.is_empty(), "events depends on {extra:?}");
}

/// **Architecture Invariant:** subjects are built (and parsed) in `events::subjects` only: no
/// product file outside it spells a `nebula.…` subject.
#[test]
fn no_subject_is_spelled_outside_events_subjects() {
    let mut problems = Vec::new();
    for (_, path) in product_sources() {
        if path == "events/src/subjects.rs" {
            continue;
        }
        let text = std::fs::read_to_string(root().join(&path)).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for kind in ["events", "telemetry", "work", "dlq", "cmd"] {
                if line.contains(&format!("\"nebula.{kind}")) {
                    problems.push(format!("{path}:{}: {}", number + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "literal subjects (use events::subjects):\n{}",
        problems.join("\n")
    );
}

/// Data, not source: golden events, captures, lock files, bench results.
fn is_data(path: &str) -> bool {
    path.ends_with(".json") || path.ends_with(".lock") || path.ends_with(".png")
}

/// **Architecture Invariant:** no file of the tree (source, tests, fakes, docs) is longer than
/// 1,000 lines.
#[test]
fn no_file_is_over_1000_lines() {
    let mut problems = Vec::new();
    for path in files() {
        if is_data(&path) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root().join(&path)) else {
            continue; // not text
        };
        let lines = text.lines().count();
        if lines > 1000 {
            problems.push(format!("{path} has {lines} lines"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The module path a file of a crate's `src/` holds: `lib.rs` → [], `a.rs` or `a/mod.rs` →
/// [a], `a/b.rs` → [a, b].
fn module_of(relative: &str) -> Vec<String> {
    let without = relative.trim_end_matches(".rs");
    let mut parts: Vec<String> = without.split('/').map(str::to_owned).collect();
    if parts
        .last()
        .is_some_and(|last| last == "mod" || last == "lib" || last == "main")
    {
        parts.pop();
    }
    parts
}

/// The modules a file refers to by path: `crate::a::b…` and `super::…` (resolved), as far as
/// they name modules that are files.
fn references(
    module: &[String],
    text: &str,
    modules: &HashMap<Vec<String>, String>,
) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    let mut push_longest = |path: Vec<String>| {
        for len in (0..=path.len()).rev() {
            if modules.contains_key(&path[..len]) {
                out.insert(path[..len].to_vec());
                return;
            }
        }
    };
    for line in code_lines(text) {
        for (index, _) in line.match_indices("crate::") {
            let before = line[..index].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `$crate::`, `my_crate::`
            }
            push_longest(path_after(&line[index + "crate::".len()..]));
        }
        for (index, _) in line.match_indices("super::") {
            let before = line[..index].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            // In module a::b (file `a/b.rs` or `a/b/mod.rs`), `super` is a.
            let mut base = module.to_vec();
            base.pop();
            base.extend(path_after(&line[index + "super::".len()..]));
            push_longest(base);
        }
    }
    out
}

/// The identifiers of a path like `a::b::{c, d}` up to the first non-path character.
fn path_after(rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    for segment in rest.split("::") {
        let ident: String = segment
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        let whole = ident.len() == segment.len();
        out.push(ident);
        if !whole {
            break;
        }
    }
    out
}

/// **Architecture Invariant:** no two files of a crate use each other, directly or around a
/// circle (a module may use what its ancestors define: that is how a crate root shares types).
#[test]
fn no_import_circle_between_files() {
    let crates = crates();
    let all = files();
    let mut problems = Vec::new();
    for (name, krate) in &crates {
        let src = format!("{}/src/", krate.dir);
        let mut modules: HashMap<Vec<String>, String> = HashMap::new();
        for path in all
            .iter()
            .filter(|p| p.starts_with(&src) && p.ends_with(".rs"))
        {
            let relative = &path[src.len()..];
            if relative.starts_with("bin/") || relative == "main.rs" {
                continue; // binaries are their own crates
            }
            modules.insert(module_of(relative), path.clone());
        }
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (module, path) in &modules {
            let text = std::fs::read_to_string(root().join(path)).unwrap();
            let targets = references(module, &text, &modules)
                .into_iter()
                // Using an ancestor's items is how a module reaches its crate's shared types.
                .filter(|target| target != module && !module.starts_with(target))
                .collect();
            edges.insert(module.clone(), targets);
        }
        for cycle in cycles(&edges) {
            let files: Vec<&str> = cycle.iter().map(|m| modules[m].as_str()).collect();
            problems.push(format!("{name}: {}", files.join(" → ")));
        }
    }
    assert!(
        problems.is_empty(),
        "import circles:\n{}",
        problems.join("\n")
    );
}

/// One circle through each strongly connected group of more than one module.
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    let mut found = Vec::new();
    let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in edges.keys() {
        if reported.contains(start) {
            continue;
        }
        // Depth-first search for a path back to `start`.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if next == start && path.len() > 1 {
                    reported.extend(path.iter().cloned());
                    let mut circle = path.clone();
                    circle.push(start.clone());
                    found.push(circle);
                    stack.clear();
                    break;
                }
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found
}

#[test]
fn the_circle_finder_finds_circles() {
    let module = |name: &str| vec![name.to_owned()];
    let mut edges = BTreeMap::new();
    edges.insert(module("cli"), BTreeSet::from([module("tools")]));
    edges.insert(module("tools"), BTreeSet::from([module("cli")]));
    edges.insert(module("stack"), BTreeSet::from([module("tools")]));
    let found = cycles(&edges);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].len(), 3);
    let mut modules = HashMap::new();
    for name in ["", "cli", "tools"] {
        let path = if name.is_empty() {
            vec![]
        } else {
            module(name)
        };
        modules.insert(path, format!("{name}.rs"));
    }
    let refs = references(
        &module("cli"),
        "use crate::tools::{self, ReplayArgs};\n// crate::nothing\nlet x = super::tools::run();",
        &modules,
    );
    assert_eq!(refs, BTreeSet::from([module("tools")]));
}
