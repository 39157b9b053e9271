//! A fake OpenAI-compatible chat completions API (`POST /v1/chat/completions`, `GET
//! /v1/models`) with OpenAI's shapes: a bearer key checked (401 `invalid_api_key`), tool calls
//! with ids and their `arguments` as a JSON *string*, `usage`, `finish_reason`; a `tool` message
//! that answers no earlier call refused (400) as OpenAI refuses it. Its answers are scripted
//! with [`crate::ollama::Reply`]; every request body is kept.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::ollama::{Reply, tokens};

struct Inner {
    key: String,
    script: VecDeque<Reply>,
    requests: Vec<Value>,
    calls: u64,
}

#[derive(Clone)]
pub struct FakeOpenAi {
    inner: Arc<Mutex<Inner>>,
    /// `http://127.0.0.1:<port>/v1`
    pub url: String,
}

fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}})),
    )
        .into_response()
}

impl FakeOpenAi {
    /// Serves the API for the API key `key`.
    pub async fn start(key: &str) -> FakeOpenAi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let fake = FakeOpenAi {
            inner: Arc::new(Mutex::new(Inner {
                key: key.to_owned(),
                script: VecDeque::new(),
                requests: Vec::new(),
                calls: 0,
            })),
            url,
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/models", get(models))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let key = self.inner.lock().unwrap().key.clone();
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {key}"))
    }
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        Some("invalid_api_key"),
    )
}

async fn models(State(fake): State<FakeOpenAi>, headers: HeaderMap) -> Response {
    if !fake.authorized(&headers) {
        return unauthorized();
    }
    Json(json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "openai"}]}))
        .into_response()
}

async fn completions(
    State(fake): State<FakeOpenAi>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    fake.inner.lock().unwrap().requests.push(body.clone());
    if !fake.authorized(&headers) {
        return unauthorized();
    }
    let Some(messages) = body["messages"].as_array() else {
        return error(
            StatusCode::BAD_REQUEST,
            "'messages' is a required property",
            "invalid_request_error",
            None,
        );
    };
    // A tool message must answer a call made before it.
    let mut called: HashSet<String> = HashSet::new();
    for message in messages {
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            if let Some(id) = call["id"].as_str() {
                called.insert(id.to_owned());
            }
        }
        if message["role"] == "tool"
            && !message["tool_call_id"]
                .as_str()
                .is_some_and(|id| called.contains(id))
        {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                "invalid_request_error",
                None,
            );
        }
    }
    let prompt: String = messages
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect();
    let (reply, n) = {
        let mut inner = fake.inner.lock().unwrap();
        inner.calls += 1;
        (inner.script.pop_front(), inner.calls)
    };
    let Some(reply) = reply else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the fake has no scripted reply left",
            "server_error",
            None,
        );
    };
    let (content, tool_calls) = match reply {
        Reply::Error(status, message) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(status, &message, "server_error", None);
        }
        Reply::Text(text) | Reply::BrokenStream(text) => (Some(text), Vec::new()),
        Reply::Held(inner) => match *inner {
            Reply::Text(text) => (Some(text), Vec::new()),
            _ => (None, Vec::new()),
        },
        Reply::Tools(calls) => (
            None,
            calls
                .into_iter()
                .enumerate()
                .map(|(k, (name, arguments))| {
                    json!({"id": format!("call_{n}_{k}"), "type": "function",
                           "function": {"name": name, "arguments": arguments.to_string()}})
                })
                .collect::<Vec<_>>(),
        ),
    };
    let completion = content.as_deref().map_or(1, tokens);
    let mut message = json!({"role": "assistant", "content": content});
    let finish = if tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    if !tool_calls.is_empty() {
        message["tool_calls"] = json!(tool_calls);
    }
    Json(json!({
        "id": format!("chatcmpl-{n}"), "object": "chat.completion", "created": 1_765_000_000u64,
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": tokens(&prompt), "completion_tokens": completion, "total_tokens": tokens(&prompt) + completion},
    }))
    .into_response()
}
