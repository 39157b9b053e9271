//! Ollama's HTTP API, as the AI developer uses it: `POST /api/show` (does the model take tools,
//! how long is its context) and `POST /api/chat` (one answer, not streamed: a step is recorded
//! whole), its `{"error": …}` answers passed on in its own words.

use std::time::Duration;

use serde_json::{Value, json};

/// What a model can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelFacts {
    pub tools: bool,
    pub context: u64,
}

/// One tool call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolCall {
    pub name: String,
    pub arguments: Value,
}

/// What the model answered.
#[derive(Debug, Clone, Default)]
pub(crate) struct Answer {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub prompt_tokens: u64,
    pub eval_tokens: u64,
    pub done_reason: String,
}

/// A failure: its words, and whether trying again may help (the server away, a 5xx).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub message: String,
    pub transient: bool,
    /// The server said 404: no such model.
    pub missing: bool,
}

pub(crate) struct Ollama {
    url: String,
    http: reqwest::Client,
}

impl Ollama {
    pub(crate) fn new(url: &str, timeout: Duration) -> Ollama {
        Ollama {
            url: url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .map_err(|err| Failure {
                message: format!("Ollama at {} is unreachable: {err}", self.url),
                transient: true,
                missing: false,
            })?;
        let status = response.status();
        let text = response.text().await.map_err(|err| Failure {
            message: format!("Ollama's answer broke off: {err}"),
            transient: true,
            missing: false,
        })?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(error) = value["error"].as_str() {
            return Err(Failure {
                message: format!("Ollama answered {}: {error}", status.as_u16()),
                transient: status.is_server_error(),
                missing: status.as_u16() == 404,
            });
        }
        if !status.is_success() || value.is_null() {
            return Err(Failure {
                message: format!(
                    "Ollama answered {}: {}",
                    status.as_u16(),
                    text.chars().take(300).collect::<String>()
                ),
                transient: status.is_server_error(),
                missing: false,
            });
        }
        Ok(value)
    }

    /// Pulls `model` (the progress streamed as NDJSON lines, logged), until `success` or an
    /// error line.
    pub(crate) async fn pull(&self, model: &str) -> Result<(), Failure> {
        let response = self
            .http
            .post(format!("{}/api/pull", self.url))
            .json(&json!({ "model": model, "stream": true }))
            .send()
            .await
            .map_err(|err| Failure {
                message: format!("Ollama at {} is unreachable: {err}", self.url),
                transient: true,
                missing: false,
            })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let mut last = String::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            if let Some(error) = value["error"].as_str() {
                return Err(Failure {
                    message: format!("pulling {model} failed: {error}"),
                    transient: false,
                    missing: false,
                });
            }
            if let Some(progress) = value["status"].as_str() {
                tracing::debug!(model, status = progress, completed = ?value["completed"].as_u64(), total = ?value["total"].as_u64(), "pulling a model");
                last = progress.to_owned();
            }
        }
        if !status.is_success() || last != "success" {
            return Err(Failure {
                message: format!(
                    "pulling {model} did not finish (HTTP {}, last status {last:?})",
                    status.as_u16()
                ),
                transient: false,
                missing: false,
            });
        }
        tracing::info!(model, "model pulled");
        Ok(())
    }

    /// Whether `model` takes tools, and its context length (2048 when it does not say).
    pub(crate) async fn show(&self, model: &str) -> Result<ModelFacts, Failure> {
        let shown = self.post("/api/show", &json!({ "model": model })).await?;
        let tools = shown["capabilities"]
            .as_array()
            .is_some_and(|caps| caps.iter().any(|c| c == "tools"));
        let context = shown["model_info"]
            .as_object()
            .and_then(|info| {
                info.iter()
                    .find(|(key, _)| key.ends_with(".context_length"))
                    .and_then(|(_, value)| value.as_u64())
            })
            .unwrap_or(2048);
        Ok(ModelFacts { tools, context })
    }

    /// One chat turn: `messages` in Ollama's shape, `tools` (empty: none), `format` (a JSON
    /// schema for a model without tools), within `num_ctx` tokens.
    pub(crate) async fn chat(
        &self,
        model: &str,
        messages: &[Value],
        tools: &[Value],
        format: Option<&Value>,
        num_ctx: u64,
    ) -> Result<Answer, Failure> {
        let mut body = json!({
            "model": model,
            "messages": messages,
            "stream": false,
            "options": { "num_ctx": num_ctx, "temperature": 0.2 },
        });
        if !tools.is_empty() {
            body["tools"] = json!(tools);
        }
        if let Some(format) = format {
            body["format"] = format.clone();
        }
        let answer = self.post("/api/chat", &body).await?;
        let message = &answer["message"];
        let tool_calls = message["tool_calls"]
            .as_array()
            .map(|calls| {
                calls
                    .iter()
                    .map(|call| {
                        let function = &call["function"];
                        // `arguments` is an object; some servers send it as a JSON string.
                        let arguments = match &function["arguments"] {
                            Value::String(text) => {
                                serde_json::from_str(text).unwrap_or(Value::Null)
                            }
                            other => other.clone(),
                        };
                        ToolCall {
                            name: function["name"].as_str().unwrap_or_default().to_owned(),
                            arguments,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Answer {
            content: message["content"].as_str().unwrap_or_default().to_owned(),
            tool_calls,
            prompt_tokens: answer["prompt_eval_count"].as_u64().unwrap_or(0),
            eval_tokens: answer["eval_count"].as_u64().unwrap_or(0),
            done_reason: answer["done_reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

/// The model a job uses, and the rule that chose it: asked for by the job, the repository's,
/// the configured default, else by the GPU memory of the machine it runs on (the seed's
/// table: under 4 GB phi, 4–8 GB a 7B coder, 8–16 GB a 13B one, more a 70B one).
pub(crate) fn choose_model(
    asked: Option<&str>,
    repository: Option<&str>,
    default: &str,
    vram_mb: Option<u64>,
) -> (String, String) {
    if let Some(model) = asked {
        return (model.to_owned(), "asked for by the job".to_owned());
    }
    if let Some(model) = repository {
        return (model.to_owned(), "the repository's model".to_owned());
    }
    if !default.is_empty() {
        return (
            default.to_owned(),
            "the configured default (ai_dev.model)".to_owned(),
        );
    }
    let (model, tier) = match vram_mb {
        None => ("phi3:mini", "no GPU known: the smallest tier".to_owned()),
        Some(mb) if mb < 4 * 1024 => ("phi3:mini", format!("{} MiB of VRAM: under 4 GB", mb)),
        Some(mb) if mb < 8 * 1024 => ("codellama:7b", format!("{} MiB of VRAM: 4-8 GB", mb)),
        Some(mb) if mb < 16 * 1024 => ("codellama:13b", format!("{} MiB of VRAM: 8-16 GB", mb)),
        Some(mb) => ("codellama:70b", format!("{} MiB of VRAM: over 16 GB", mb)),
    };
    (model.to_owned(), format!("VRAM tier ({tier})"))
}

#[cfg(test)]
mod tests {
    use super::choose_model;

    #[test]
    fn the_model_is_chosen_by_the_first_rule_that_names_one() {
        assert_eq!(
            choose_model(Some("a"), Some("b"), "c", None).1,
            "asked for by the job"
        );
        assert_eq!(choose_model(None, Some("b"), "c", None).0, "b");
        assert_eq!(choose_model(None, None, "c", None).0, "c");
        assert_eq!(choose_model(None, None, "", Some(3000)).0, "phi3:mini");
        assert_eq!(choose_model(None, None, "", Some(6144)).0, "codellama:7b");
        assert_eq!(choose_model(None, None, "", Some(12288)).0, "codellama:13b");
        let (model, rule) = choose_model(None, None, "", Some(24576));
        assert_eq!(model, "codellama:70b");
        assert!(rule.contains("over 16 GB"), "{rule}");
    }
}
