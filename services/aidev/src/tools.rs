//! The tools the model works with, as Ollama's function definitions, and the file tools carried
//! out in the worktree through the [`Guard`]. `run_build`, `update_plan` and `finish` are the
//! job's own (they record events); their definitions are here with the others.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::guard::Guard;

/// Most of a file the model reads at once, and most it may write.
const READ_MAX: usize = 64 * 1024;
const WRITE_MAX: usize = 256 * 1024;
/// Most entries a listing, and hits a search, gives back.
const LIST_MAX: usize = 400;
const HITS_MAX: usize = 100;

fn function(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
    json!({"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required},
    }})
}

/// Every tool, in Ollama's `tools` shape.
pub(crate) fn definitions() -> Vec<Value> {
    let path = json!({"type": "string", "description": "relative to the repository's root"});
    vec![
        function(
            "list_files",
            "List the files under a folder of the repository (recursively).",
            json!({"path": path}),
            &[],
        ),
        function(
            "read_file",
            "Read a text file of the repository.",
            json!({"path": path}),
            &["path"],
        ),
        function(
            "search",
            "Find the lines containing a text (literal, case-sensitive) in the repository's files.",
            json!({"text": {"type": "string"}, "path": path}),
            &["text"],
        ),
        function(
            "write_file",
            "Write a whole text file (created, or replaced with exactly this content).",
            json!({"path": path, "content": {"type": "string"}}),
            &["path", "content"],
        ),
        function(
            "replace_in_file",
            "Replace one exact occurrence of a text in a file with another.",
            json!({"path": path, "old": {"type": "string"}, "new": {"type": "string"}}),
            &["path", "old", "new"],
        ),
        function(
            "update_plan",
            "Write down the plan: the task list, what is done and what is next. It is kept whole for the whole job.",
            json!({"plan": {"type": "string"}}),
            &["plan"],
        ),
        function(
            "run_build",
            "Build the project and run its tests; answers whether they pass and what failed.",
            json!({}),
            &[],
        ),
        function(
            "finish",
            "Finish: the change is done and its build is green. Give a one-paragraph summary of it.",
            json!({"summary": {"type": "string"}}),
            &["summary"],
        ),
    ]
}

/// The tool names (for a model without tools, which answers in JSON instead).
pub(crate) fn names() -> Vec<String> {
    definitions()
        .iter()
        .filter_map(|d| d["function"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// How a file tool went: its answer to the model, and whether it was refused.
pub(crate) struct Done {
    pub result: String,
    pub refused: bool,
}

fn refused(why: String) -> Done {
    Done {
        result: format!("refused: {why}"),
        refused: true,
    }
}

fn answer(result: String) -> Done {
    Done {
        result,
        refused: false,
    }
}

fn text_arg<'a>(arguments: &'a Value, name: &str) -> Result<&'a str, String> {
    arguments[name]
        .as_str()
        .ok_or_else(|| format!("the argument {name:?} (a string) is missing"))
}

/// Carries out a file tool; `written` collects the paths the model changed.
pub(crate) fn file_tool(
    guard: &Guard,
    name: &str,
    arguments: &Value,
    written: &mut BTreeSet<String>,
) -> Done {
    let result = match name {
        "list_files" => list(guard, arguments["path"].as_str().unwrap_or("")),
        "read_file" => text_arg(arguments, "path").and_then(|path| read(guard, path)),
        "search" => text_arg(arguments, "text")
            .and_then(|text| search(guard, text, arguments["path"].as_str().unwrap_or(""))),
        "write_file" => text_arg(arguments, "path").and_then(|path| {
            text_arg(arguments, "content").and_then(|content| write(guard, path, content, written))
        }),
        "replace_in_file" => text_arg(arguments, "path").and_then(|path| {
            let old = text_arg(arguments, "old")?;
            let new = text_arg(arguments, "new")?;
            replace(guard, path, old, new, written)
        }),
        other => Err(format!("there is no tool {other:?}")),
    };
    match result {
        Ok(text) => answer(text),
        Err(why) if why.starts_with("refused:") => refused(why["refused: ".len()..].to_owned()),
        Err(why) => answer(format!("error: {why}")),
    }
}

fn checked(guard: &Guard, path: &str) -> Result<(std::path::PathBuf, String), String> {
    guard.check(path).map_err(|why| format!("refused: {why}"))
}

fn list(guard: &Guard, path: &str) -> Result<String, String> {
    let (full, relative) = checked(guard, path)?;
    let mut found = Vec::new();
    let mut stack = vec![full];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(rel) = path.strip_prefix(guard.root()) else {
                continue;
            };
            let rel = rel.to_string_lossy().into_owned();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == ".git" || guard.denied(&rel) || name == "node_modules" || name == "target" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(rel);
            }
        }
    }
    found.sort();
    let total = found.len();
    found.truncate(LIST_MAX);
    let mut text = found.join("\n");
    if total > LIST_MAX {
        text.push_str(&format!("\n… and {} more", total - LIST_MAX));
    }
    if text.is_empty() {
        text = format!(
            "no files under {:?}",
            if relative.is_empty() { "." } else { &relative }
        );
    }
    Ok(text)
}

fn read(guard: &Guard, path: &str) -> Result<String, String> {
    let (full, relative) = checked(guard, path)?;
    let bytes = std::fs::read(&full).map_err(|err| format!("{relative}: {err}"))?;
    let text = String::from_utf8_lossy(&bytes);
    if text.len() > READ_MAX {
        let mut end = READ_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        return Ok(format!(
            "{}\n… ({} more bytes not shown)",
            &text[..end],
            text.len() - end
        ));
    }
    Ok(text.into_owned())
}

fn search(guard: &Guard, needle: &str, path: &str) -> Result<String, String> {
    if needle.is_empty() {
        return Err("search for something".to_owned());
    }
    let listing = list(guard, path)?;
    let mut hits = Vec::new();
    for file in listing.lines().filter(|l| !l.starts_with('…')) {
        let Ok(text) = std::fs::read_to_string(guard.root().join(file)) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            if line.contains(needle) {
                hits.push(format!("{file}:{}: {}", number + 1, line.trim()));
                if hits.len() >= HITS_MAX {
                    hits.push("… (more not shown)".to_owned());
                    return Ok(hits.join("\n"));
                }
            }
        }
    }
    Ok(if hits.is_empty() {
        format!("{needle:?} is nowhere")
    } else {
        hits.join("\n")
    })
}

fn write(
    guard: &Guard,
    path: &str,
    content: &str,
    written: &mut BTreeSet<String>,
) -> Result<String, String> {
    let (full, relative) = checked(guard, path)?;
    if relative.is_empty() {
        return Err("write to a file, not the repository's root".to_owned());
    }
    if content.len() > WRITE_MAX {
        return Err(format!(
            "a file is written whole, at most {WRITE_MAX} bytes"
        ));
    }
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent).map_err(|err| format!("{relative}: {err}"))?;
    }
    std::fs::write(&full, content).map_err(|err| format!("{relative}: {err}"))?;
    written.insert(relative.clone());
    Ok(format!("wrote {relative} ({} bytes)", content.len()))
}

fn replace(
    guard: &Guard,
    path: &str,
    old: &str,
    new: &str,
    written: &mut BTreeSet<String>,
) -> Result<String, String> {
    let (full, relative) = checked(guard, path)?;
    let text = std::fs::read_to_string(&full).map_err(|err| format!("{relative}: {err}"))?;
    match text.matches(old).count() {
        0 => Err(format!("{relative} does not contain that text")),
        1 => write(guard, path, &text.replacen(old, new, 1), written)
            .map(|_| format!("replaced one occurrence in {relative}")),
        n => Err(format!(
            "{relative} contains that text {n} times: give more of it"
        )),
    }
}

/// Whether `path` is a file the model may have left (for tests of this module).
#[cfg(test)]
fn exists(root: &std::path::Path, path: &str) -> bool {
    root.join(path).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_tools_work_in_the_worktree_and_refuse_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "fn a() { 1 - 1 }\n").unwrap();
        std::fs::write(dir.path().join(".env"), "TOKEN=x\n").unwrap();
        let guard = Guard::new(dir.path(), &[]).unwrap();
        let mut written = BTreeSet::new();
        let listed = file_tool(&guard, "list_files", &json!({}), &mut written);
        assert_eq!(listed.result, "src/lib.rs");
        let hits = file_tool(&guard, "search", &json!({"text": "1 - 1"}), &mut written);
        assert_eq!(hits.result, "src/lib.rs:1: fn a() { 1 - 1 }");
        let replaced = file_tool(
            &guard,
            "replace_in_file",
            &json!({"path": "src/lib.rs", "old": "1 - 1", "new": "1 + 1"}),
            &mut written,
        );
        assert_eq!(replaced.result, "replaced one occurrence in src/lib.rs");
        assert!(written.contains("src/lib.rs"));
        let env = file_tool(&guard, "read_file", &json!({"path": ".env"}), &mut written);
        assert!(
            env.refused && env.result.starts_with("refused:"),
            "{}",
            env.result
        );
        let up = file_tool(
            &guard,
            "write_file",
            &json!({"path": "../x", "content": ""}),
            &mut written,
        );
        assert!(up.refused);
        assert!(!exists(dir.path().parent().unwrap(), "x"));
        let missing = file_tool(&guard, "read_file", &json!({}), &mut written);
        assert!(!missing.refused && missing.result.contains("missing"));
    }
}
