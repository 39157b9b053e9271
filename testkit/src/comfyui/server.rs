//! The HTTP and websocket surface: ComfyUI's routes (also under `/api`) and their handlers, a
//! layer that hangs every request while the fake plays unresponsive, and a listener whose
//! connections die with the server.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::graph::{Graph, KeyOrder};
use super::io::{
    file_response, internal_error, join_subfolder, json_response, ok_json, parse_json,
    split_extension, upload_form, view_target,
};
use super::python::{py_str, py_truthy, to_float};
use super::validate::{Validation, Validator};
use super::{QueueItem, Shared};

/// Frames buffered per websocket client before new ones are dropped.
const CLIENT_BUFFER: usize = 4096;
/// ComfyUI's `max_upload_size` (100 MiB).
const MAX_UPLOAD_SIZE: usize = 100 * 1024 * 1024;
/// Extra-data keys ComfyUI keeps out of the queue and history.
const SENSITIVE_EXTRA_DATA_KEYS: [&str; 2] = ["auth_token_comfy_org", "api_key_comfy_org"];

/// Serves the fake on `listener` until it is killed (or the listener itself fails).
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let listener = KillableListener {
        listener,
        cancel: shared.cancel.clone(),
    };
    // Only returns on an error of the listener itself; the fake then just stops.
    let _ = axum::serve(listener, router(shared)).await;
}

// ---------------------------------------------------------------------------------------------
// Routes, hanging, and a listener whose connections die with the server
// ---------------------------------------------------------------------------------------------

fn router(shared: Arc<Shared>) -> Router {
    let routes = || {
        Router::new()
            .route("/system_stats", get(system_stats))
            .route("/prompt", get(get_prompt).post(post_prompt))
            .route("/queue", get(get_queue).post(post_queue))
            .route("/history", get(get_history).post(post_history))
            .route("/history/{prompt_id}", get(get_history_item))
            .route("/interrupt", post(post_interrupt))
            .route("/view", get(view))
            .route("/upload/image", post(upload_image))
            .route("/object_info", get(object_info))
            .route("/object_info/{class}", get(object_info_class))
            .route("/features", get(features))
            .route("/embeddings", get(embeddings))
            .route("/models", get(models))
            .route("/models/{folder}", get(models_in))
            .route("/ws", get(websocket))
    };
    Router::new()
        .route("/", get(index))
        .merge(routes())
        .nest("/api", routes())
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            hang_when_unresponsive,
        ))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_SIZE + 64 * 1024))
        .with_state(shared)
}

async fn hang_when_unresponsive(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if shared.unresponsive.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    next.run(request).await
}

/// Accepts like a `TcpListener`, handing out connections that fail once the server is killed,
/// so that idle keep-alive connections and upgraded websockets die with it.
struct KillableListener {
    listener: TcpListener,
    cancel: CancellationToken,
}

impl axum::serve::Listener for KillableListener {
    type Io = KillableIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let io = KillableIo {
                        stream,
                        killed: Box::pin(self.cancel.clone().cancelled_owned()),
                        dead: false,
                    };
                    return (io, addr);
                }
                // Out of file descriptors and the like: wait a little, as axum does.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

struct KillableIo {
    stream: TcpStream,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    dead: bool,
}

impl KillableIo {
    fn is_dead(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.dead && self.killed.as_mut().poll(cx).is_ready() {
            self.dead = true;
        }
        self.dead
    }
}

fn connection_killed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "the fake ComfyUI was killed",
    )
}

impl AsyncRead for KillableIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_dead(cx) {
            return Poll::Ready(Err(connection_killed()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_dead(cx) {
            return Poll::Ready(Err(connection_killed()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_dead(cx) {
            return Poll::Ready(Err(connection_killed()));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_dead(cx) {
            return Poll::Ready(Err(connection_killed()));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_dead(cx) {
            return Poll::Ready(Err(connection_killed()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP handlers
// ---------------------------------------------------------------------------------------------

async fn index() -> Html<&'static str> {
    Html("<!DOCTYPE html><html><head><title>ComfyUI</title></head><body></body></html>")
}

async fn system_stats(State(shared): State<Arc<Shared>>) -> Response {
    const MIB: u64 = 1024 * 1024;
    let options = &shared.options;
    let vram_total = options.vram_total_mib * MIB;
    let vram_free = options.vram_free_mib.min(options.vram_total_mib) * MIB;
    ok_json(&json!({
        "system": {
            "os": "posix",
            "ram_total": 68_719_476_736u64,
            "ram_free": 51_539_607_552u64,
            "comfyui_version": "0.3.64",
            "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.95",
            "required_templates_version": "0.1.95",
            "python_version": "3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]",
            "pytorch_version": "2.8.0+cu128",
            "embedded_python": false,
            "argv": options.argv,
        },
        "devices": [{
            "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
            "type": "cuda",
            "index": 0,
            "vram_total": vram_total,
            "vram_free": vram_free,
            "torch_vram_total": vram_total - vram_free,
            "torch_vram_free": 0,
        }],
    }))
}

async fn get_prompt(State(shared): State<Arc<Shared>>) -> Response {
    ok_json(&shared.state().queue_info())
}

async fn post_prompt(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Some(request) = parse_json(&body) else {
        return internal_error();
    };
    let order = KeyOrder::of(&body);
    let mut state = shared.state();

    let (number, sort_key) = match request.get("number") {
        Some(number) => match to_float(number) {
            Ok(value) => (json!(value), value),
            Err(_) => return internal_error(),
        },
        None => {
            let mut number = state.number;
            if request.get("front").is_some_and(py_truthy) {
                number = -number;
            }
            state.number += 1;
            (json!(number), number as f64)
        }
    };

    let Some(prompt) = request.get("prompt") else {
        let error = json!({
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        });
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": error, "node_errors": {} }),
        );
    };
    let prompt_id = match request.get("prompt_id") {
        Some(id) if !id.is_null() => py_str(id),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    let partial: Option<Vec<String>> = request
        .get("partial_execution_targets")
        .and_then(Value::as_array)
        .map(|targets| targets.iter().map(py_str).collect());
    let Some(graph) = Graph::build(prompt, &order) else {
        // ComfyUI iterates the prompt as a dict and raises.
        return internal_error();
    };

    let info = shared.object_info(&state);
    let validation = Validator::new(&graph, &info, &state).validate_prompt(partial.as_deref());

    let mut extra_data = match request.get("extra_data") {
        Some(Value::Object(extra)) => extra.clone(),
        Some(_) => return internal_error(),
        None => Map::new(),
    };
    if let Some(client_id) = request.get("client_id") {
        extra_data.insert("client_id".to_owned(), client_id.clone());
    }

    match validation {
        Validation::Valid {
            outputs,
            node_errors,
            conversions,
        } => {
            for key in SENSITIVE_EXTRA_DATA_KEYS {
                extra_data.remove(key);
            }
            let mut converted = prompt.clone();
            for (node_id, input, value) in conversions {
                converted[node_id.as_str()]["inputs"][input.as_str()] = value;
            }
            let graph = Graph::build(&converted, &order).unwrap_or(graph);
            state.accepted_prompts.push(prompt.clone());
            state.pending.push(QueueItem {
                number: number.clone(),
                sort_key,
                prompt_id: prompt_id.clone(),
                prompt: converted,
                graph,
                extra_data: Value::Object(extra_data),
                outputs,
            });
            state.sort_pending();
            state.queue_updated();
            drop(state);
            shared.queued.notify_one();
            ok_json(&json!({
                "prompt_id": prompt_id,
                "number": number,
                "node_errors": node_errors,
            }))
        }
        Validation::Invalid { error, node_errors } => json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": error, "node_errors": node_errors }),
        ),
    }
}

async fn get_queue(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.state();
    let running: Vec<Value> = state.running.iter().map(QueueItem::tuple).collect();
    let pending: Vec<Value> = state.pending.iter().map(QueueItem::tuple).collect();
    ok_json(&json!({ "queue_running": running, "queue_pending": pending }))
}

async fn post_queue(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Some(request) = parse_json(&body) else {
        return internal_error();
    };
    let mut state = shared.state();
    if request.get("clear").is_some_and(py_truthy) {
        state.wipe_queue();
    }
    if let Some(ids) = request.get("delete").and_then(Value::as_array) {
        for id in ids {
            let id = py_str(id);
            if let Some(at) = state.pending.iter().position(|item| item.prompt_id == id) {
                if state.pending.len() == 1 {
                    state.wipe_queue();
                } else {
                    state.pending.remove(at);
                }
                state.queue_updated();
            }
        }
    }
    StatusCode::OK.into_response()
}

async fn get_history(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let max_items: Option<usize> = query.get("max_items").and_then(|n| n.parse().ok());
    let offset: i64 = query
        .get("offset")
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1);
    let state = shared.state();
    let offset = match (offset, max_items) {
        (offset, Some(max)) if offset < 0 => state.history.len().saturating_sub(max),
        (offset, _) => offset.max(0) as usize,
    };
    let mut out = Map::new();
    for (prompt_id, entry) in state.history.iter().skip(offset) {
        out.insert(prompt_id.clone(), entry.clone());
        if max_items.is_some_and(|max| out.len() >= max) {
            break;
        }
    }
    ok_json(&Value::Object(out))
}

async fn get_history_item(
    State(shared): State<Arc<Shared>>,
    Path(prompt_id): Path<String>,
) -> Response {
    let state = shared.state();
    let mut out = Map::new();
    if let Some((_, entry)) = state.history.iter().find(|(id, _)| *id == prompt_id) {
        out.insert(prompt_id, entry.clone());
    }
    ok_json(&Value::Object(out))
}

async fn post_history(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Some(request) = parse_json(&body) else {
        return internal_error();
    };
    let mut state = shared.state();
    if request.get("clear").is_some_and(py_truthy) {
        state.history.clear();
    }
    if let Some(ids) = request.get("delete").and_then(Value::as_array) {
        for id in ids {
            let id = py_str(id);
            state.history.retain(|(prompt_id, _)| *prompt_id != id);
        }
    }
    StatusCode::OK.into_response()
}

async fn post_interrupt(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request = parse_json(&body).unwrap_or_else(|| json!({}));
    let target = request
        .get("prompt_id")
        .filter(|id| py_truthy(id))
        .map(py_str);
    let mut state = shared.state();
    let running = state.running.as_ref().map(|item| item.prompt_id.clone());
    let hit = match (&target, running) {
        (Some(target), Some(running)) => running == *target,
        (Some(_), None) => false,
        (None, running) => {
            // A global interrupt raises the flag even when nothing runs; the next prompt
            // clears it when it starts.
            state.interrupt_requested = true;
            running.is_some()
        }
    };
    if hit {
        state.interrupt_requested = true;
        state.interrupts += 1;
    }
    drop(state);
    shared.control.send_replace(());
    StatusCode::OK.into_response()
}

async fn view(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (folder, subfolder, name) = match view_target(&query) {
        Ok(target) => target,
        Err(status) => return status.into_response(),
    };
    let mut state = shared.state();
    if state.failing_views > 0 {
        state.failing_views -= 1;
        return internal_error();
    }
    match state.file(folder, &subfolder, &name) {
        Some(bytes) => file_response(&name, bytes.clone()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn upload_image(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let upload = match upload_form(&headers, &body) {
        Ok(upload) => upload,
        Err(StatusCode::INTERNAL_SERVER_ERROR) => return internal_error(),
        Err(status) => return status.into_response(),
    };
    let (folder, stored_subfolder) = (upload.folder, &upload.stored_subfolder);
    let mut state = shared.state();
    let mut name = upload.filename.clone();
    let mut duplicate = false;
    if !upload.overwrite {
        let (stem, extension) = split_extension(&upload.filename);
        let mut i = 1;
        while let Some(existing) = state.file(folder, stored_subfolder, &name) {
            if existing[..] == upload.data[..] {
                duplicate = true;
                break;
            }
            name = format!("{stem} ({i}){extension}");
            i += 1;
        }
    }
    if !duplicate {
        state.files.insert(
            (folder, stored_subfolder.clone(), name.clone()),
            upload.data.clone(),
        );
    }
    state.uploads.push((
        join_subfolder(stored_subfolder, &name),
        upload.data.to_vec(),
    ));
    ok_json(&json!({ "name": name, "subfolder": upload.subfolder, "type": upload.kind }))
}

async fn object_info(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.state();
    ok_json(&Value::Object(shared.object_info(&state)))
}

async fn object_info_class(
    State(shared): State<Arc<Shared>>,
    Path(class): Path<String>,
) -> Response {
    let state = shared.state();
    let mut out = Map::new();
    if let Some(spec) = shared.object_info(&state).remove(&class) {
        out.insert(class, spec);
    }
    ok_json(&Value::Object(out))
}

fn server_features() -> Value {
    json!({ "supports_preview_metadata": true, "max_upload_size": MAX_UPLOAD_SIZE })
}

async fn features() -> Response {
    ok_json(&server_features())
}

async fn embeddings() -> Response {
    ok_json(&json!([]))
}

const MODEL_FOLDERS: [&str; 20] = [
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
];

async fn models() -> Response {
    ok_json(&json!(MODEL_FOLDERS))
}

async fn models_in(State(shared): State<Arc<Shared>>, Path(folder): Path<String>) -> Response {
    if !MODEL_FOLDERS.contains(&folder.as_str()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let state = shared.state();
    ok_json(&json!(shared.models(&state, &folder).unwrap_or_default()))
}

// ---------------------------------------------------------------------------------------------
// Websocket
// ---------------------------------------------------------------------------------------------

async fn websocket(
    upgrade: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let client_id = query.get("clientId").filter(|id| !id.is_empty()).cloned();
    upgrade.on_upgrade(move |socket| websocket_session(shared, socket, client_id))
}

/// `PromptServer.websocket_handler`, reconnect quirk included: a client that reconnects with
/// the same `clientId` replaces the old socket, and when the old one closes later its cleanup
/// removes the new one, which then stays open but receives nothing.
async fn websocket_session(shared: Arc<Shared>, mut socket: WebSocket, client_id: Option<String>) {
    let sid = client_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let (sender, mut frames) = mpsc::channel::<String>(CLIENT_BUFFER);
    {
        let mut state = shared.state();
        state.clients.insert(sid.clone(), sender);
        let status = json!({ "status": state.queue_info(), "sid": sid });
        state.send("status", status, Some(&sid));
        if state.current_client.as_deref() == Some(sid.as_str())
            && let Some(node) = &state.last_node_id
        {
            state.send("executing", json!({ "node": node }), Some(&sid));
        }
    }
    let mut first_message = true;
    let mut registered = true;
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => break,
            frame = frames.recv(), if registered => match frame {
                Some(text) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                // Replaced by a newer socket with the same clientId: stay open, silent.
                None => registered = false,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(message) = serde_json::from_str::<Value>(&text) {
                        if first_message && message["type"] == "feature_flags" {
                            shared
                                .state()
                                .send("feature_flags", server_features(), Some(&sid));
                        }
                        first_message = false;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    shared.state().clients.remove(&sid);
}
