//! A job's context memory: the conversation, the plan, the files written and the budget spent,
//! kept in Redis after every step so a restarted worker resumes the job where it was. The
//! prompt is always the instruction and the plan (verbatim, in the system message) and the
//! turns; when it would pass its share of the model's context, the older turns are summarised
//! by the model and replaced by that summary — the instruction, the plan and the last turns are
//! never summarised.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long a job's memory outlives its last step in Redis.
const TTL: Duration = Duration::from_secs(14 * 24 * 3600);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Memory {
    /// Turns after the system message: the model's, the tools' answers, our nudges.
    pub turns: Vec<Value>,
    pub plan: String,
    /// Steps taken and tokens spent so far (the budget survives a restart).
    pub steps: u32,
    pub tokens: u64,
    pub written: BTreeSet<String>,
    /// Whether the last build run was green, and after which write.
    pub green_after: Option<usize>,
}

/// Ollama's rough count, and ours: about four characters a token.
pub(crate) fn estimate(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

fn turn_text(turn: &Value) -> String {
    let mut text = turn["content"].as_str().unwrap_or_default().to_owned();
    if !turn["tool_calls"].is_null() {
        text.push_str(&turn["tool_calls"].to_string());
    }
    text
}

fn key(job: &str) -> String {
    format!("nebula:ai-dev:{job}:memory")
}

impl Memory {
    /// The system message: the instruction and the plan, verbatim, and how to work.
    pub(crate) fn system(
        &self,
        instruction: &str,
        tool_mode_json: bool,
        tool_names: &[String],
    ) -> Value {
        let plan = if self.plan.is_empty() {
            "(none yet: write one with update_plan)".to_owned()
        } else {
            self.plan.clone()
        };
        let how = if tool_mode_json {
            format!(
                "Answer every turn with one JSON object {{\"tool\": <one of {}>, \"arguments\": {{…}}, \"said\": <a short note>}}.",
                tool_names.join(", ")
            )
        } else {
            "Use the tools.".to_owned()
        };
        json!({"role": "system", "content": format!(
            "You are Nebula's AI developer, changing a git repository on a branch of its own. \
             You see only the repository's files; paths are relative to its root. {how} \
             Work in small steps: read before you write, keep the plan up to date, run the build \
             and tests, and call finish with a summary once they pass.\n\n\
             THE TASK (verbatim):\n{instruction}\n\nTHE PLAN (verbatim):\n{plan}"
        )})
    }

    /// The whole prompt.
    pub(crate) fn prompt(&self, system: Value) -> Vec<Value> {
        let mut messages = Vec::with_capacity(self.turns.len() + 1);
        messages.push(system);
        messages.extend(self.turns.iter().cloned());
        messages
    }

    pub(crate) fn tokens_of(messages: &[Value]) -> u64 {
        messages.iter().map(|m| estimate(&turn_text(m))).sum()
    }

    /// Where the turns may be cut so that the kept ones begin with a turn of their own (never a
    /// tool's answer without the call it answers): `None` when fewer than `keep_last` + 2 turns.
    pub(crate) fn cut(&self, keep_last: usize) -> Option<usize> {
        if self.turns.len() < keep_last + 2 {
            return None;
        }
        let mut cut = self.turns.len() - keep_last;
        while cut > 0 && self.turns[cut]["role"] == "tool" {
            cut -= 1;
        }
        (cut > 0).then_some(cut)
    }

    /// The turns before `cut` as a transcript for the model to summarise.
    pub(crate) fn transcript(&self, cut: usize) -> String {
        self.turns[..cut]
            .iter()
            .map(|turn| {
                format!(
                    "[{}] {}",
                    turn["role"].as_str().unwrap_or("?"),
                    events::ai_dev::bounded(&turn_text(turn), 2000)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The turns before `cut` replaced by `summary`.
    pub(crate) fn compress(&mut self, cut: usize, summary: &str) {
        let summary = json!({"role": "user", "content": format!(
            "Summary of the earlier work on this task (older turns were condensed):\n{summary}"
        )});
        self.turns.splice(..cut, [summary]);
    }

    pub(crate) async fn load(kv: &kv::Kv, job: &str) -> Result<Option<Memory>, String> {
        let text = kv.get(&key(job)).await.map_err(|err| err.to_string())?;
        text.map(|text| {
            serde_json::from_str(&text)
                .map_err(|err| format!("job {job}'s memory does not read: {err}"))
        })
        .transpose()
    }

    pub(crate) async fn save(&self, kv: &kv::Kv, job: &str) -> Result<(), String> {
        let text = serde_json::to_string(self).map_err(|err| err.to_string())?;
        kv.set(&key(job), &text, TTL)
            .await
            .map_err(|err| err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_keeps_the_last_turns_whole_and_never_orphans_a_tool_answer() {
        let mut memory = Memory::default();
        for i in 0..6 {
            memory.turns.push(json!({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "read_file", "arguments": {"path": i.to_string()}}}]}));
            memory.turns.push(
                json!({"role": "tool", "tool_name": "read_file", "content": format!("file {i}")}),
            );
        }
        assert_eq!(memory.cut(20), None);
        // keep 3: the cut would fall on a tool's answer, so it moves back to its call
        let cut = memory.cut(3).unwrap();
        assert_eq!(cut, 8);
        assert_eq!(memory.turns[cut]["role"], "assistant");
        assert!(memory.transcript(cut).contains("[tool] file 0"));
        memory.compress(cut, "read files 0-3");
        assert_eq!(memory.turns.len(), 5);
        assert!(
            memory.turns[0]["content"]
                .as_str()
                .unwrap()
                .contains("read files 0-3")
        );
        let system = memory.system("fix the adder", false, &[]);
        let text = system["content"].as_str().unwrap();
        assert!(text.contains("fix the adder") && text.contains("write one with update_plan"));
    }
}
