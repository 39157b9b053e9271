//! An OpenAI-compatible chat completions API (OpenAI itself, or any server that speaks it), the
//! configured fallback when Ollama cannot serve a job: `POST <url>/chat/completions` with the
//! API key from the vault as a bearer token. The conversation is kept in Ollama's shape; here it
//! is translated: a tool call gets an id, and a tool's answer names the call it answers.

use std::time::Duration;

use serde_json::{Value, json};

use crate::ollama::{Answer, Failure, ToolCall};

pub(crate) struct OpenAi {
    url: String,
    http: reqwest::Client,
}

/// Ollama-shaped messages → OpenAI's: each assistant tool call numbered `call_<turn>_<k>`, each
/// following tool answer given the id of the call it answers, in order.
pub(crate) fn messages(ollama: &[Value]) -> Vec<Value> {
    let mut out = Vec::with_capacity(ollama.len());
    let mut pending: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for (turn, message) in ollama.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or("user");
        let content = message["content"].as_str().unwrap_or_default();
        match role {
            "assistant" if message["tool_calls"].is_array() => {
                pending.clear();
                let calls: Vec<Value> = message["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(|(k, call)| {
                        let id = format!("call_{turn}_{k}");
                        pending.push_back(id.clone());
                        json!({"id": id, "type": "function", "function": {
                            "name": call["function"]["name"],
                            "arguments": call["function"]["arguments"].to_string(),
                        }})
                    })
                    .collect();
                out.push(json!({
                    "role": "assistant",
                    "content": if content.is_empty() { Value::Null } else { json!(content) },
                    "tool_calls": calls,
                }));
            }
            "tool" => {
                let id = pending
                    .pop_front()
                    .unwrap_or_else(|| format!("call_{turn}_0"));
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            role => out.push(json!({"role": role, "content": content})),
        }
    }
    out
}

impl OpenAi {
    pub(crate) fn new(url: &str, timeout: Duration) -> OpenAi {
        OpenAi {
            url: url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
        }
    }

    /// One chat turn with `key`; `tools` in Ollama's shape, which is OpenAI's too.
    pub(crate) async fn chat(
        &self,
        key: &str,
        model: &str,
        prompt: &[Value],
        tools: &[Value],
    ) -> Result<Answer, Failure> {
        let mut body = json!({ "model": model, "messages": messages(prompt), "temperature": 0.2 });
        if !tools.is_empty() {
            body["tools"] = json!(tools);
        }
        let response = self
            .http
            .post(format!("{}/chat/completions", self.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .map_err(|err| Failure {
                message: format!(
                    "the OpenAI-compatible API at {} is unreachable: {err}",
                    self.url
                ),
                transient: true,
                missing: false,
            })?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = answer["error"]["message"]
                .as_str()
                .unwrap_or("no error message")
                .to_owned();
            return Err(Failure {
                message: format!(
                    "the OpenAI-compatible API answered {}: {message}",
                    status.as_u16()
                ),
                transient: status.is_server_error() || status.as_u16() == 429,
                missing: false,
            });
        }
        let choice = &answer["choices"][0];
        let message = &choice["message"];
        let tool_calls = message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|call| ToolCall {
                name: call["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                arguments: call["function"]["arguments"]
                    .as_str()
                    .and_then(|text| serde_json::from_str(text).ok())
                    .unwrap_or(Value::Null),
            })
            .collect();
        Ok(Answer {
            content: message["content"].as_str().unwrap_or_default().to_owned(),
            tool_calls,
            prompt_tokens: answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
            eval_tokens: answer["usage"]["completion_tokens"].as_u64().unwrap_or(0),
            done_reason: choice["finish_reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_answers_name_the_calls_they_answer() {
        let ollama = vec![
            json!({"role": "system", "content": "s"}),
            json!({"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "read_file", "arguments": {"path": "a"}}},
                {"function": {"name": "read_file", "arguments": {"path": "b"}}},
            ]}),
            json!({"role": "tool", "tool_name": "read_file", "content": "A"}),
            json!({"role": "tool", "tool_name": "read_file", "content": "B"}),
        ];
        let out = messages(&ollama);
        assert_eq!(out[1]["content"], Value::Null);
        assert_eq!(out[1]["tool_calls"][1]["id"], "call_1_1");
        assert_eq!(
            out[1]["tool_calls"][0]["function"]["arguments"],
            "{\"path\":\"a\"}"
        );
        assert_eq!(out[2]["tool_call_id"], "call_1_0");
        assert_eq!(out[3]["tool_call_id"], "call_1_1");
    }
}
