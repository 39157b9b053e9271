//! A fake Ollama speaking its HTTP API (`../shared/PROTOCOLS.md`): `POST /api/chat` as NDJSON
//! chunks or one object (`"stream": false`), tool calls as `message.tool_calls[].function`
//! with `arguments` an object, `done_reason` and the counters (`prompt_eval_count`,
//! `eval_count`, nanosecond durations); `GET /api/tags`, `POST /api/show` (`capabilities`, the
//! context length in `model_info`), `POST /api/pull` (a progress stream), `POST /api/embed`,
//! `GET /api/version`; and its errors as `{"error": …}`: 404 for an unknown model, 400 when
//! tools go to a model without them, a prompt past `num_ctx` silently truncated (or refused
//! with 400, when asked), a mid-stream error as the last line of a 200.
//!
//! Its answers are scripted: each chat request takes the next [`Reply`], so a test drives a whole
//! conversation; every request body is kept for the test to look at.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// One scripted answer to a chat request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The assistant says this.
    Text(String),
    /// The assistant calls these tools (name, arguments object), with optional text.
    Tools(Vec<(String, Value)>),
    /// The request fails with this status and `{"error": …}`.
    Error(u16, String),
    /// Starts streaming, then ends with an `{"error": …}` line (status 200).
    BrokenStream(String),
    /// Waits until [`FakeOllama::release`] before answering with the inner reply (a model that
    /// takes its time, so a test can kill its caller meanwhile).
    Held(Box<Reply>),
}

/// A model the fake serves.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    /// `completion`, `tools`, …
    pub capabilities: Vec<String>,
    pub context_length: u64,
}

impl Model {
    pub fn new(name: &str, capabilities: &[&str], context_length: u64) -> Model {
        Model {
            name: name.to_owned(),
            capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
            context_length,
        }
    }
}

struct Inner {
    models: Vec<Model>,
    script: VecDeque<Reply>,
    requests: Vec<Value>,
    /// A prompt past its context is refused (400) rather than silently truncated.
    strict_context: bool,
}

#[derive(Clone)]
pub struct FakeOllama {
    inner: Arc<Mutex<Inner>>,
    released: Arc<tokio::sync::Notify>,
    /// `http://127.0.0.1:<port>`
    pub url: String,
}

/// Ollama's rough count: a token is about four characters.
pub fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

fn error(status: u16, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(json!({ "error": message })),
    )
        .into_response()
}

fn ndjson(lines: Vec<Value>) -> Response {
    let mut body = String::new();
    for line in lines {
        body.push_str(&line.to_string());
        body.push('\n');
    }
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from(body))
        .unwrap()
}

impl FakeOllama {
    pub async fn start(models: Vec<Model>) -> FakeOllama {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeOllama {
            inner: Arc::new(Mutex::new(Inner {
                models,
                script: VecDeque::new(),
                requests: Vec::new(),
                strict_context: false,
            })),
            released: Arc::new(tokio::sync::Notify::new()),
            url,
        };
        let app = Router::new()
            .route("/api/chat", post(chat))
            .route("/api/tags", get(tags))
            .route("/api/show", post(show))
            .route("/api/pull", post(pull))
            .route("/api/embed", post(embed))
            .route(
                "/api/version",
                get(|| async { Json(json!({"version": "0.6.5"})) }),
            )
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    /// Adds replies to the end of the script.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    /// Every chat request body so far.
    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Replies not taken yet.
    pub fn left(&self) -> usize {
        self.inner.lock().unwrap().script.len()
    }

    pub fn strict_context(&self, strict: bool) {
        self.inner.lock().unwrap().strict_context = strict;
    }

    /// Lets a [`Reply::Held`] answer.
    pub fn release(&self) {
        self.released.notify_waiters();
        self.released.notify_one();
    }

    fn model(&self, name: &str) -> Option<Model> {
        let inner = self.inner.lock().unwrap();
        inner
            .models
            .iter()
            .find(|m| m.name == name || m.name == format!("{name}:latest"))
            .cloned()
    }
}

async fn chat(State(fake): State<FakeOllama>, Json(body): Json<Value>) -> Response {
    fake.inner.lock().unwrap().requests.push(body.clone());
    let name = body["model"].as_str().unwrap_or_default();
    let Some(model) = fake.model(name) else {
        return error(
            404,
            &format!("model \"{name}\" not found, try pulling it first"),
        );
    };
    let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    if has_tools && !model.capabilities.iter().any(|c| c == "tools") {
        return error(400, &format!("{name} does not support tools"));
    }
    let prompt: String = body["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .map(|m| {
                    format!(
                        "{}{}",
                        m["content"].as_str().unwrap_or_default(),
                        if m["tool_calls"].is_null() {
                            String::new()
                        } else {
                            m["tool_calls"].to_string()
                        }
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let num_ctx = body["options"]["num_ctx"].as_u64().unwrap_or(2048);
    let mut prompt_tokens = tokens(&prompt);
    let strict = fake.inner.lock().unwrap().strict_context;
    if prompt_tokens > num_ctx {
        if strict {
            return error(
                400,
                &format!("the prompt ({prompt_tokens} tokens) exceeds the context of {num_ctx}"),
            );
        }
        prompt_tokens = num_ctx; // truncated, silently, as Ollama does
    }
    let mut reply = fake.inner.lock().unwrap().script.pop_front();
    while let Some(Reply::Held(inner)) = reply {
        fake.released.notified().await;
        reply = Some(*inner);
    }
    let Some(reply) = reply else {
        return error(500, "the fake Ollama has no scripted reply left");
    };
    let stream = body["stream"].as_bool().unwrap_or(true);
    let created_at = chrono::Utc::now().to_rfc3339();
    let (content, tool_calls) = match reply {
        Reply::Error(status, message) => return error(status, &message),
        Reply::BrokenStream(message) => {
            return ndjson(vec![
                json!({"model": name, "created_at": created_at, "message": {"role": "assistant", "content": "Let me"}, "done": false}),
                json!({ "error": message }),
            ]);
        }
        Reply::Text(text) => (text, Vec::new()),
        Reply::Tools(calls) => (
            String::new(),
            calls
                .into_iter()
                .map(
                    |(name, arguments)| json!({"function": {"name": name, "arguments": arguments}}),
                )
                .collect::<Vec<_>>(),
        ),
        Reply::Held(_) => unreachable!("unwrapped above"),
    };
    let eval = tokens(&content).max(1);
    let last = |message: Value| {
        json!({
            "model": name, "created_at": created_at, "message": message, "done": true,
            "done_reason": "stop", "total_duration": 1_200_000u64, "load_duration": 100_000u64,
            "prompt_eval_count": prompt_tokens, "prompt_eval_duration": 400_000u64,
            "eval_count": eval, "eval_duration": 700_000u64,
        })
    };
    let mut message = json!({"role": "assistant", "content": content});
    if !tool_calls.is_empty() {
        message["tool_calls"] = json!(tool_calls);
    }
    if !stream {
        return Json(last(message)).into_response();
    }
    // Text in pieces, then the last chunk (empty content) with the counters; a whole tool
    // call arrives in one chunk.
    let mut lines = Vec::new();
    let chars: Vec<char> = content.chars().collect();
    for piece in chars.chunks(16) {
        lines.push(json!({"model": name, "created_at": created_at,
            "message": {"role": "assistant", "content": piece.iter().collect::<String>()}, "done": false}));
    }
    if !tool_calls.is_empty() {
        lines.push(json!({"model": name, "created_at": created_at,
            "message": {"role": "assistant", "content": "", "tool_calls": tool_calls}, "done": false}));
    }
    lines.push(last(json!({"role": "assistant", "content": ""})));
    ndjson(lines)
}

async fn tags(State(fake): State<FakeOllama>) -> Json<Value> {
    let models: Vec<Value> = fake
        .inner
        .lock()
        .unwrap()
        .models
        .iter()
        .map(|m| {
            json!({
                "name": m.name, "model": m.name, "modified_at": "2026-11-30T10:00:00Z",
                "size": 4_683_087_332u64, "digest": format!("{:064x}", m.name.len()),
                "details": {"format": "gguf", "family": "llama", "families": ["llama"],
                            "parameter_size": "7B", "quantization_level": "Q4_K_M"},
            })
        })
        .collect();
    Json(json!({ "models": models }))
}

async fn show(State(fake): State<FakeOllama>, Json(body): Json<Value>) -> Response {
    let name = body["model"]
        .as_str()
        .or_else(|| body["name"].as_str())
        .unwrap_or_default();
    let Some(model) = fake.model(name) else {
        return error(404, &format!("model '{name}' not found"));
    };
    Json(json!({
        "modelfile": format!("FROM {}\n", model.name),
        "parameters": "stop \"<|im_end|>\"",
        "template": "{{ .Prompt }}",
        "details": {"format": "gguf", "family": "llama", "parameter_size": "7B", "quantization_level": "Q4_K_M"},
        "model_info": {"general.architecture": "llama", "llama.context_length": model.context_length},
        "capabilities": model.capabilities,
    }))
    .into_response()
}

async fn pull(State(fake): State<FakeOllama>, Json(body): Json<Value>) -> Response {
    let name = body["model"]
        .as_str()
        .or_else(|| body["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() {
        return error(400, "model is required");
    }
    if fake.model(&name).is_none() {
        fake.inner
            .lock()
            .unwrap()
            .models
            .push(Model::new(&name, &["completion"], 4096));
    }
    let digest = format!("sha256:{:064x}", name.len());
    let lines = vec![
        json!({"status": "pulling manifest"}),
        json!({"status": format!("downloading {digest}"), "digest": digest, "total": 1000}),
        json!({"status": format!("downloading {digest}"), "digest": digest, "total": 1000, "completed": 1000}),
        json!({"status": "verifying sha256 digest"}),
        json!({"status": "writing manifest"}),
        json!({"status": "success"}),
    ];
    if body["stream"].as_bool() == Some(false) {
        return Json(json!({"status": "success"})).into_response();
    }
    ndjson(lines)
}

async fn embed(State(fake): State<FakeOllama>, Json(body): Json<Value>) -> Response {
    let name = body["model"].as_str().unwrap_or_default();
    if fake.model(name).is_none() {
        return error(
            404,
            &format!("model \"{name}\" not found, try pulling it first"),
        );
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => return error(400, "input must be a string or a list of strings"),
    };
    // Deterministic vectors: the same text, the same embedding.
    let embeddings: Vec<Vec<f64>> = inputs
        .iter()
        .map(|text| {
            (0..8u64)
                .map(|i| {
                    let sum: u64 = text.bytes().map(|b| u64::from(b) * (i + 1)).sum();
                    (sum % 1000) as f64 / 1000.0
                })
                .collect()
        })
        .collect();
    let count: u64 = inputs.iter().map(|t| tokens(t)).sum();
    Json(
        json!({"model": name, "embeddings": embeddings, "total_duration": 900_000u64,
                "load_duration": 100_000u64, "prompt_eval_count": count}),
    )
    .into_response()
}
