//! A fake ComfyUI 0.3.64 server, run in-process on a tokio task (or as the `fake-comfyui`
//! binary), that follows the traffic captured from the real one: the same routes (also under
//! `/api`), status codes, JSON bodies and error bodies, the same websocket frames in the same
//! order to the same clients, and the same queue, history, cache and interrupt behaviour.
//!
//! What it models, from the captures:
//! - `POST /prompt` validates the graph the way `execution.validate_prompt` does (unknown or
//!   missing class, no outputs, missing required inputs, bad links, type mismatches, INT/FLOAT
//!   conversion and bounds, values not in a combo list, LoadImage's custom validation) and
//!   answers `400 {error, node_errors}`; a body that is not JSON gets a plain-text 500; `number`
//!   grows for rejected prompts too.
//! - One prompt runs at a time, FIFO by `number`; each node in ComfyUI's execution order sends
//!   `progress_state` and `executing`, samplers and upscalers one `progress` per step,
//!   `SaveImage`/`PreviewImage` `executed`; then `execution_success`, `execution_error` or
//!   `execution_interrupted`, a `status`, and last `executing {node: null}`. Frames go to the
//!   submitting `client_id` only, except `status` (everyone) and, for a prompt without a client
//!   id, `progress`/`progress_state` (everyone).
//! - Node outputs are cached by input signature like ComfyUI's classic cache: an identical
//!   resubmission executes nothing and reports the previous file names.
//! - Model names for upscalers are checked late (the prompt fails when it runs); a checkpoint
//!   whose name contains `corrupt` fails in `CheckpointLoaderSimple` at run time.
//! - Images are real PNGs with a `prompt` `tEXt` chunk; pixels derive from the graph (seed,
//!   prompt text, ...), so different seeds give different bytes.
//! - `/upload/image` renames a different file with the same name to `name (1).ext`, keeps the
//!   name for identical bytes or `overwrite`; `/view` answers 400/403/404 like ComfyUI.
//! - A client that reconnects with the same `clientId` while a prompt runs gets
//!   `executing {node}`; the reconnect quirk (the old socket's close silences the new one) too.
//!
//! Previews are off (no binary frames), as on a default server. The node classes that exist:
//! CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode, VAEEncode,
//! VAEEncodeForInpaint, SetLatentNoiseMask, VAELoader, SaveImage, PreviewImage, LoadImage,
//! LoadImageMask, EmptyImage, ImageInvert, ImageScale, ImageScaleBy, LoraLoader,
//! ControlNetLoader, ControlNetApply, ControlNetApplyAdvanced, UpscaleModelLoader,
//! ImageUpscaleWithModel and the ReActorFaceSwap custom node. LoRA, ControlNet and VAE names
//! pass until [`FakeComfy::set_models`] says which exist.

#[path = "png.rs"]
pub mod png;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// What the fake server reports and knows about.
#[derive(Clone, Debug)]
pub struct FakeComfyOptions {
    /// `devices[0].vram_total` in `/system_stats`, in MiB.
    pub vram_total_mib: u64,
    /// `devices[0].vram_free` in `/system_stats`, in MiB.
    pub vram_free_mib: u64,
    /// Time per sampler step (and per upscaler tile).
    pub step_delay: Duration,
    /// Checkpoint names that exist (`CheckpointLoaderSimple.ckpt_name`); a name containing
    /// `corrupt` passes validation and fails when loaded.
    pub checkpoints: Vec<String>,
    /// Upscale model names that exist; others fail at run time, as in ComfyUI.
    pub upscale_models: Vec<String>,
    /// `system.argv` in `/system_stats`.
    pub argv: Vec<String>,
}

impl Default for FakeComfyOptions {
    fn default() -> Self {
        Self {
            vram_total_mib: 24_576,
            vram_free_mib: 20_000,
            step_delay: Duration::from_millis(20),
            checkpoints: vec![
                "v1-5-pruned-emaonly.safetensors".to_owned(),
                "sd_xl_base_1.0.safetensors".to_owned(),
            ],
            upscale_models: vec!["RealESRGAN_x4plus.pth".to_owned()],
            argv: vec!["main.py".to_owned()],
        }
    }
}

/// A running fake ComfyUI on `127.0.0.1`. Dropping it stops the server.
pub struct FakeComfy {
    port: u16,
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl FakeComfy {
    /// Starts a server with default options on a free port.
    pub async fn start() -> FakeComfy {
        Self::start_with(FakeComfyOptions::default()).await
    }

    /// Starts a server with `options` on a free port.
    pub async fn start_with(options: FakeComfyOptions) -> FakeComfy {
        Self::start_on(0, options)
            .await
            .expect("failed to bind the fake ComfyUI on loopback")
    }

    /// Starts a server with `options` on `127.0.0.1:port` (0 picks a free port).
    pub async fn start_on(port: u16, options: FakeComfyOptions) -> io::Result<FakeComfy> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::new(options));
        let listener = KillableListener {
            listener,
            cancel: shared.cancel.clone(),
        };
        let app = router(shared.clone());
        let server = tokio::spawn(async move {
            // Only returns on an error of the listener itself; the fake then just stops.
            let _ = axum::serve(listener, app).await;
        });
        let worker = tokio::spawn(prompt_worker(shared.clone()));
        Ok(FakeComfy {
            port,
            shared,
            tasks: Mutex::new(vec![server, worker]),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `prompt` graph of each accepted `POST /prompt`, as sent, in order.
    pub fn accepted_prompts(&self) -> Vec<Value> {
        self.shared.state().accepted_prompts.clone()
    }

    /// How many `POST /interrupt` calls hit a running prompt.
    pub fn interrupts(&self) -> usize {
        self.shared.state().interrupts
    }

    /// `(name, bytes)` of each accepted `POST /upload/image`, where `name` is what a `LoadImage`
    /// node would use (`subfolder/name` when uploaded into a subfolder).
    pub fn uploads(&self) -> Vec<(String, Vec<u8>)> {
        self.shared.state().uploads.clone()
    }

    /// Prompts executing right now: 0 or 1 (the others wait in the queue).
    pub fn running(&self) -> usize {
        usize::from(self.shared.state().running.is_some())
    }

    /// Prompts that ran to `execution_success`.
    pub fn completed(&self) -> usize {
        self.shared.state().completed
    }

    /// While `hold` is true, a running prompt stops after each `progress` frame it sends (so after
    /// its first one) until released or interrupted; `false` lets it go on.
    pub fn set_hold(&self, hold: bool) {
        self.shared.state().hold = hold;
        self.shared.control.send_replace(());
    }

    /// The model files of `folder` (`loras`, `controlnet`, `vae`, or `checkpoints` and
    /// `upscale_models` to replace the options). Until a folder is set, any LoRA, ControlNet or
    /// VAE name passes validation; once set, other names are rejected with `value_not_in_list`
    /// as ComfyUI does.
    pub fn set_models<I, S>(&self, folder: &str, names: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names = names.into_iter().map(Into::into).collect();
        self.shared.state().models.insert(folder.to_owned(), names);
    }

    /// While `unresponsive` is true the server still accepts connections but never answers an
    /// HTTP request (a hung ComfyUI, for supervisor tests).
    pub fn set_unresponsive(&self, unresponsive: bool) {
        self.shared
            .unresponsive
            .store(unresponsive, Ordering::SeqCst);
    }

    /// The server dies: the listener closes, every websocket and HTTP connection is cut, and its
    /// in-memory state (queue, history, files, cache) is lost; `url()` then refuses connections.
    /// The recorders (`accepted_prompts`, `uploads`, ...) keep what they saw.
    pub async fn kill(&self) {
        self.shared.cancel.cancel();
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        let mut state = self.shared.state();
        state.pending.clear();
        state.running = None;
        state.history.clear();
        state.clients.clear();
        state.files.clear();
        state.cache.clear();
        state.last_node_id = None;
    }
}

impl Drop for FakeComfy {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        for task in lock(&self.tasks).iter() {
            task.abort();
        }
    }
}

/// The `fake-comfyui` binary of this crate, built on first use (`cargo build -p testkit --bin
/// fake-comfyui`), for tests that need ComfyUI as a separate process.
pub fn fake_comfyui_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .args([
                "build",
                "--package",
                "testkit",
                "--bin",
                "fake-comfyui",
                "--message-format=json-render-diagnostics",
            ])
            .current_dir(crate::workspace_root())
            .stderr(Stdio::inherit())
            .output()
            .expect("failed to run cargo build for fake-comfyui");
        assert!(
            output.status.success(),
            "cargo build of fake-comfyui failed"
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|message| message["target"]["name"] == "fake-comfyui")
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo build did not report the fake-comfyui executable")
    })
    .clone()
}

// ---------------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------------

/// Frames buffered per websocket client before new ones are dropped.
const CLIENT_BUFFER: usize = 4096;
/// ComfyUI's `MAXIMUM_HISTORY_SIZE`.
const MAXIMUM_HISTORY_SIZE: usize = 10_000;
/// ComfyUI's `max_upload_size` (100 MiB).
const MAX_UPLOAD_SIZE: usize = 100 * 1024 * 1024;
/// Extra-data keys ComfyUI keeps out of the queue and history.
const SENSITIVE_EXTRA_DATA_KEYS: [&str; 2] = ["auth_token_comfy_org", "api_key_comfy_org"];

struct Shared {
    options: FakeComfyOptions,
    /// `object_info` of the known classes, model lists still empty.
    definitions: Map<String, Value>,
    cancel: CancellationToken,
    state: Mutex<ServerState>,
    /// A prompt was queued.
    queued: Notify,
    /// `hold` or an interrupt changed.
    control: watch::Sender<()>,
    unresponsive: AtomicBool,
    /// `PreviewImage`'s file prefix, `ComfyUI_temp_xxxxx`.
    temp_prefix: String,
}

impl Shared {
    fn new(options: FakeComfyOptions) -> Self {
        let definitions = match serde_json::from_str(NODE_DEFINITIONS) {
            Ok(Value::Object(map)) => map,
            _ => panic!("NODE_DEFINITIONS is not a JSON object"),
        };
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstupvxyz";
        let suffix: String = uuid::Uuid::new_v4().as_bytes()[..5]
            .iter()
            .map(|b| LETTERS[*b as usize % LETTERS.len()] as char)
            .collect();
        Self {
            options,
            definitions,
            cancel: CancellationToken::new(),
            state: Mutex::new(ServerState::default()),
            queued: Notify::new(),
            control: watch::Sender::new(()),
            unresponsive: AtomicBool::new(false),
            temp_prefix: format!("ComfyUI_temp_{suffix}"),
        }
    }

    fn state(&self) -> MutexGuard<'_, ServerState> {
        lock(&self.state)
    }

    /// The model names of `folder` (`checkpoints`, `loras`, ...); `None` when the fake was not
    /// told (any name then passes validation).
    fn models(&self, state: &ServerState, folder: &str) -> Option<Vec<String>> {
        state.models.get(folder).cloned().or_else(|| match folder {
            "checkpoints" => Some(self.options.checkpoints.clone()),
            "upscale_models" => Some(self.options.upscale_models.clone()),
            _ => None,
        })
    }

    /// `object_info` for the known classes, with the model and input-file lists filled in.
    fn object_info(&self, state: &ServerState) -> Map<String, Value> {
        let mut info = self.definitions.clone();
        let inputs: Vec<Value> = state
            .files
            .keys()
            .filter(|(folder, _, _)| *folder == Folder::Input)
            .map(|(_, subfolder, name)| Value::String(join_subfolder(subfolder, name)))
            .collect();
        for (class, input, folder) in MODEL_INPUTS {
            let mut names = self.models(state, folder).unwrap_or_default();
            if folder == "vae" {
                names.push("pixel_space".to_owned());
            }
            if let Some(spec) = info.get_mut(class) {
                spec["input"]["required"][input][0] = json!(names);
            }
        }
        let upscale_models = self.models(state, "upscale_models").unwrap_or_default();
        if let Some(spec) = info.get_mut("UpscaleModelLoader") {
            spec["input"]["required"]["model_name"][1]["options"] = json!(upscale_models);
        }
        for class in ["LoadImage", "LoadImageMask"] {
            if let Some(spec) = info.get_mut(class) {
                spec["input"]["required"]["image"][0] = Value::Array(inputs.clone());
            }
        }
        info
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
struct ServerState {
    /// The next `number` POST /prompt hands out.
    number: i64,
    pending: Vec<QueueItem>,
    running: Option<QueueItem>,
    history: Vec<(String, Value)>,
    /// Websocket clients by `sid` (the `clientId`).
    clients: HashMap<String, mpsc::Sender<String>>,
    files: BTreeMap<(Folder, String, String), Bytes>,
    cache: HashMap<String, CacheEntry>,
    /// Model folders set with `FakeComfy::set_models`.
    models: HashMap<String, Vec<String>>,
    hold: bool,
    interrupt_requested: bool,
    /// `server.client_id`: the client of the prompt that runs (or ran last).
    current_client: Option<String>,
    /// `server.last_node_id`: the node executing now, resent to a client that reconnects.
    last_node_id: Option<String>,
    accepted_prompts: Vec<Value>,
    uploads: Vec<(String, Vec<u8>)>,
    interrupts: usize,
    completed: usize,
}

impl ServerState {
    /// `server.send_sync`: to `sid` when given (dropped when it is not connected), else to all.
    fn send(&self, event: &str, data: Value, sid: Option<&str>) {
        let text = json!({ "type": event, "data": data }).to_string();
        match sid {
            Some(sid) => {
                if let Some(client) = self.clients.get(sid) {
                    let _ = client.try_send(text);
                }
            }
            None => {
                for client in self.clients.values() {
                    let _ = client.try_send(text.clone());
                }
            }
        }
    }

    fn queue_info(&self) -> Value {
        let remaining = self.pending.len() + usize::from(self.running.is_some());
        json!({ "exec_info": { "queue_remaining": remaining } })
    }

    /// `server.queue_updated`: a `status` frame to everyone.
    fn queue_updated(&self) {
        self.send("status", json!({ "status": self.queue_info() }), None);
    }

    fn sort_pending(&mut self) {
        self.pending.sort_by(|a, b| {
            a.sort_key
                .total_cmp(&b.sort_key)
                .then_with(|| a.prompt_id.cmp(&b.prompt_id))
        });
    }

    /// `PromptQueue.wipe_queue`.
    fn wipe_queue(&mut self) {
        self.pending.clear();
        self.queue_updated();
    }

    fn file(&self, folder: Folder, subfolder: &str, name: &str) -> Option<&Bytes> {
        self.files
            .get(&(folder, subfolder.to_owned(), name.to_owned()))
    }

    /// The file an annotated input reference (`sub/name.png [output]`) names.
    fn input_file(&self, reference: &str) -> Option<&Bytes> {
        let (path, folder) = annotated_filepath(reference);
        let (subfolder, name) = match path.rsplit_once('/') {
            Some((subfolder, name)) => (normalize_subfolder(subfolder)?, name.to_owned()),
            None => (String::new(), path.to_owned()),
        };
        self.file(folder.unwrap_or(Folder::Input), &subfolder, &name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Folder {
    Input,
    Output,
    Temp,
}

impl Folder {
    fn parse(name: &str) -> Option<Folder> {
        match name {
            "input" => Some(Folder::Input),
            "output" => Some(Folder::Output),
            "temp" => Some(Folder::Temp),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Folder::Input => "input",
            Folder::Output => "output",
            Folder::Temp => "temp",
        }
    }
}

/// `folder_paths.annotated_filepath`: `name [output]` names a file in another folder.
fn annotated_filepath(name: &str) -> (&str, Option<Folder>) {
    for folder in [Folder::Output, Folder::Input, Folder::Temp] {
        if let Some(stripped) = name.strip_suffix(&format!(" [{}]", folder.name())) {
            return (stripped, Some(folder));
        }
    }
    (name, None)
}

/// A subfolder as `os.path.normpath` leaves it, or `None` when it leaves its base folder.
fn normalize_subfolder(subfolder: &str) -> Option<String> {
    if subfolder.starts_with('/') || subfolder.starts_with('\\') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in subfolder.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

fn join_subfolder(subfolder: &str, name: &str) -> String {
    if subfolder.is_empty() {
        name.to_owned()
    } else {
        format!("{subfolder}/{name}")
    }
}

#[derive(Clone)]
struct QueueItem {
    /// `number` as reported (an int, or a float when the client chose it).
    number: Value,
    sort_key: f64,
    prompt_id: String,
    /// The graph after validation (with its input conversions), as ComfyUI keeps it.
    prompt: Value,
    graph: Graph,
    extra_data: Value,
    outputs: Vec<String>,
}

impl QueueItem {
    /// The queue tuple `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
    fn tuple(&self) -> Value {
        json!([
            self.number,
            self.prompt_id,
            self.prompt,
            self.extra_data,
            self.outputs
        ])
    }

    fn client_id(&self) -> Option<String> {
        match &self.extra_data["client_id"] {
            Value::Null => None,
            value => Some(py_str(value)),
        }
    }
}

#[derive(Clone)]
struct CacheEntry {
    outputs: Vec<Artifact>,
    ui: Option<Value>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Server plumbing: routes, a listener whose connections die with the server, hanging
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

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn ok_json(body: &Value) -> Response {
    json_response(StatusCode::OK, body)
}

/// What aiohttp answers when a handler raises.
fn internal_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "500 Internal Server Error\n\nServer got itself in trouble",
    )
        .into_response()
}

/// `await request.json()` on a body that may be empty: `None` when it is not JSON.
fn parse_json(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
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
    let Some(filename) = query.get("filename") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (filename, annotated) = annotated_filepath(filename);
    if filename.is_empty() || filename.starts_with('/') || filename.contains("..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let folder = match annotated {
        Some(folder) => folder,
        None => match Folder::parse(query.get("type").map_or("output", String::as_str)) {
            Some(folder) => folder,
            None => return StatusCode::BAD_REQUEST.into_response(),
        },
    };
    let subfolder = match query.get("subfolder") {
        Some(subfolder) => match normalize_subfolder(subfolder) {
            Some(subfolder) => subfolder,
            None => return StatusCode::FORBIDDEN.into_response(),
        },
        None => String::new(),
    };
    let name = filename.rsplit('/').next().unwrap_or(filename);
    let state = shared.state();
    let Some(bytes) = state.file(folder, &subfolder, name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let content_type = match name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
    {
        Some(ext) if ext == "png" => "image/png",
        Some(ext) if ext == "jpg" || ext == "jpeg" => "image/jpeg",
        Some(ext) if ext == "webp" => "image/webp",
        Some(ext) if ext == "gif" => "image/gif",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, format!("filename=\"{name}\"")),
        ],
        bytes.clone(),
    )
        .into_response()
}

async fn upload_image(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let Some(parts) = parse_multipart(content_type, &body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let field = |name: &str| {
        parts
            .iter()
            .find(|part| part.name == name && part.filename.is_none())
            .map(|part| String::from_utf8_lossy(&part.data).into_owned())
    };
    let Some(image) = parts
        .iter()
        .find(|part| part.name == "image" && part.filename.is_some())
    else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let filename = image
        .filename
        .as_deref()
        .unwrap_or_default()
        .replace('/', "%2F")
        .replace('\\', "%5C");
    if filename.is_empty() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let overwrite = field("overwrite").is_some_and(|value| value == "true" || value == "1");
    let kind = field("type").unwrap_or_else(|| "input".to_owned());
    let Some(folder) = Folder::parse(&kind) else {
        return internal_error();
    };
    let subfolder = field("subfolder").unwrap_or_default();
    let Some(stored_subfolder) = normalize_subfolder(&subfolder) else {
        return StatusCode::BAD_REQUEST.into_response();
    };

    let mut state = shared.state();
    let mut name = filename.clone();
    let mut duplicate = false;
    if !overwrite {
        let (stem, extension) = split_extension(&filename);
        let mut i = 1;
        while let Some(existing) = state.file(folder, &stored_subfolder, &name) {
            if existing[..] == image.data[..] {
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
            image.data.clone(),
        );
    }
    state.uploads.push((
        join_subfolder(&stored_subfolder, &name),
        image.data.to_vec(),
    ));
    ok_json(&json!({ "name": name, "subfolder": subfolder, "type": kind }))
}

/// `os.path.splitext`.
fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if name[..dot].chars().any(|c| c != '.') => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    }
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

// ---------------------------------------------------------------------------------------------
// multipart/form-data
// ---------------------------------------------------------------------------------------------

struct Part {
    name: String,
    filename: Option<String>,
    data: Bytes,
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (from..=haystack.len() - needle.len()).find(|&at| &haystack[at..at + needle.len()] == needle)
}

/// `key=value` parameters of a header value (`form-data; name="image"; filename="a.png"`).
fn header_params(value: &str) -> HashMap<String, String> {
    value
        .split(';')
        .skip(1)
        .filter_map(|param| {
            let (key, value) = param.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(|v| v.replace("\\\"", "\"").replace("\\\\", "\\"))
                .unwrap_or_else(|| value.to_owned());
            Some((key.trim().to_ascii_lowercase(), value))
        })
        .collect()
}

fn parse_multipart(content_type: &str, body: &Bytes) -> Option<Vec<Part>> {
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return None;
    }
    let boundary = header_params(content_type).remove("boundary")?;
    let delimiter = format!("--{boundary}").into_bytes();
    let closing = format!("\r\n--{boundary}").into_bytes();
    let mut at = find(body, &delimiter, 0)? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Some(parts);
        }
        at = find(body, b"\r\n", at)? + 2;
        let headers_end = find(body, b"\r\n\r\n", at)?;
        let headers = String::from_utf8_lossy(&body[at..headers_end]).into_owned();
        let data_start = headers_end + 4;
        let data_end = find(body, &closing, data_start)?;
        let disposition = headers
            .split("\r\n")
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default();
        let mut params = header_params(&disposition);
        parts.push(Part {
            name: params.remove("name").unwrap_or_default(),
            filename: params.remove("filename"),
            data: body.slice(data_start..data_end),
        });
        at = data_end + closing.len();
    }
}

// ---------------------------------------------------------------------------------------------
// The prompt graph, with the key order of the request (serde_json's maps sort their keys, and
// ComfyUI's execution order and cached-node lists follow the order the client sent)
// ---------------------------------------------------------------------------------------------

/// The keys of a JSON object in document order.
struct OrderedKeys<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrderedKeys<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OrderedVisitor<T> {
            type Value = OrderedKeys<T>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, T>()? {
                    entries.push(entry);
                }
                Ok(OrderedKeys(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}

#[derive(Deserialize)]
struct BodyKeys {
    #[serde(default)]
    prompt: Option<OrderedKeys<NodeKeys>>,
}

#[derive(Deserialize)]
struct NodeKeys {
    #[serde(default)]
    inputs: Option<OrderedKeys<IgnoredAny>>,
}

/// Node ids and each node's input names in the order of the request body.
#[derive(Default)]
struct KeyOrder {
    nodes: Vec<String>,
    inputs: HashMap<String, Vec<String>>,
}

impl KeyOrder {
    /// The order in `body`; empty (sorted order is used) when the body is not shaped for it.
    fn of(body: &[u8]) -> KeyOrder {
        let Ok(BodyKeys {
            prompt: Some(OrderedKeys(nodes)),
        }) = serde_json::from_slice::<BodyKeys>(body)
        else {
            return KeyOrder::default();
        };
        let mut order = KeyOrder::default();
        for (id, node) in nodes {
            if let Some(OrderedKeys(inputs)) = node.inputs {
                order.inputs.insert(
                    id.clone(),
                    inputs.into_iter().map(|(name, _)| name).collect(),
                );
            }
            order.nodes.push(id);
        }
        order
    }
}

/// Orders `keys` by `order` (names missing from it keep their place at the end).
fn ordered<'a>(keys: impl Iterator<Item = &'a String>, order: Option<&Vec<String>>) -> Vec<String> {
    let mut keys: Vec<String> = keys.cloned().collect();
    if let Some(order) = order {
        keys.sort_by_key(|key| order.iter().position(|o| o == key).unwrap_or(usize::MAX));
    }
    keys
}

#[derive(Clone, Debug)]
struct Graph {
    nodes: Vec<GraphNode>,
}

#[derive(Clone, Debug)]
struct GraphNode {
    id: String,
    /// `class_type` as sent; `None` when missing (or the node is not an object).
    class_type: Option<Value>,
    /// `inputs` in request order; `None` when missing or not an object.
    inputs: Option<Vec<(String, Value)>>,
}

impl GraphNode {
    fn class(&self) -> &str {
        self.class_type
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn input(&self, name: &str) -> Option<&Value> {
        self.inputs
            .as_ref()?
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

impl Graph {
    /// `None` when the prompt is not a JSON object.
    fn build(prompt: &Value, order: &KeyOrder) -> Option<Graph> {
        let prompt = prompt.as_object()?;
        let ids = ordered(prompt.keys(), Some(&order.nodes));
        let nodes = ids
            .into_iter()
            .map(|id| {
                let node = &prompt[&id];
                let inputs = node.get("inputs").and_then(Value::as_object).map(|inputs| {
                    ordered(inputs.keys(), order.inputs.get(&id))
                        .into_iter()
                        .map(|name| {
                            let value = inputs[&name].clone();
                            (name, value)
                        })
                        .collect()
                });
                GraphNode {
                    class_type: node.get("class_type").cloned(),
                    inputs,
                    id,
                }
            })
            .collect();
        Some(Graph { nodes })
    }

    fn node(&self, id: &str) -> Option<&GraphNode> {
        self.nodes.iter().find(|node| node.id == id)
    }
}

/// ComfyUI's `is_link`: `[node_id: str, output_index: int]`.
fn link(value: &Value) -> Option<(&str, usize)> {
    match value.as_array()?.as_slice() {
        [Value::String(from), Value::Number(slot)] => Some((from, slot.as_u64()? as usize)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Validation: `execution.validate_prompt` and `validate_inputs`
// ---------------------------------------------------------------------------------------------

enum Validation {
    Valid {
        outputs: Vec<String>,
        node_errors: Value,
        /// `(node, input, value)`: what ComfyUI writes back into the prompt while validating.
        conversions: Vec<(String, String, Value)>,
    },
    Invalid {
        error: Value,
        node_errors: Value,
    },
}

/// A Python exception raised while validating: `(type, str(exception))`.
struct PyException {
    kind: &'static str,
    message: String,
}

impl PyException {
    fn key_error(key: &Value) -> Self {
        Self {
            kind: "KeyError",
            message: py_repr(key),
        }
    }
}

const VALIDATION_TRACEBACK: [&str; 2] = [
    "  File \"ComfyUI/execution.py\", line 1052, in validate_prompt\n    <source line>\n",
    "  File \"ComfyUI/execution.py\", line 822, in validate_inputs\n    <source line>\n",
];

/// One input of a class, from its `object_info`.
struct InputSpec<'a> {
    name: &'a str,
    /// `"INT"`, `"IMAGE"`, ... or a combo list.
    kind: &'a Value,
    extra: Value,
    required: bool,
}

fn class_inputs(definition: &Value) -> Vec<InputSpec<'_>> {
    let mut inputs = Vec::new();
    for category in ["required", "optional"] {
        let Some(names) = definition["input_order"][category].as_array() else {
            continue;
        };
        for name in names.iter().filter_map(Value::as_str) {
            let spec = &definition["input"][category][name];
            inputs.push(InputSpec {
                name,
                kind: &spec[0],
                extra: match spec.get(1) {
                    Some(extra @ Value::Object(_)) => extra.clone(),
                    _ => json!({}),
                },
                required: category == "required",
            });
        }
    }
    inputs
}

/// Combo inputs listing the files of a model folder: `(class, input, folder)`.
const MODEL_INPUTS: [(&str, &str, &str); 4] = [
    ("CheckpointLoaderSimple", "ckpt_name", "checkpoints"),
    ("LoraLoader", "lora_name", "loras"),
    ("ControlNetLoader", "control_net_name", "controlnet"),
    ("VAELoader", "vae_name", "vae"),
];

/// Whether any value passes a combo input: model lists the fake was not given, and ReActor's.
fn unchecked_combo(class: &str, input: &str, known_folders: &HashSet<&str>) -> bool {
    if class == "ReActorFaceSwap" {
        return matches!(input, "swap_model" | "face_restore_model");
    }
    MODEL_INPUTS
        .iter()
        .any(|(c, i, folder)| *c == class && *i == input && !known_folders.contains(folder))
}

/// Inputs a class checks in its own `VALIDATE_INPUTS`, which skips the generic checks.
fn custom_validated(class: &str) -> &'static [&'static str] {
    match class {
        "LoadImage" | "LoadImageMask" => &["image"],
        _ => &[],
    }
}

/// `validate_node_input`.
fn types_match(received: &str, expected: &Value) -> bool {
    let Some(expected) = expected.as_str() else {
        return false;
    };
    if received == expected {
        return true;
    }
    let received: HashSet<&str> = received.split(',').map(str::trim).collect();
    let expected: HashSet<&str> = expected.split(',').map(str::trim).collect();
    received.contains("*") || expected.contains("*") || !received.is_disjoint(&expected)
}

type Checked = (bool, Vec<Value>);

struct Validator<'a> {
    graph: &'a Graph,
    info: &'a Map<String, Value>,
    state: &'a ServerState,
    /// `validated`, in insertion order.
    validated: Vec<(String, Checked)>,
    in_progress: Vec<String>,
    conversions: Vec<(String, String, Value)>,
    /// Model folders whose lists are known (the others are not checked).
    known_folders: HashSet<&'a str>,
}

impl<'a> Validator<'a> {
    fn new(graph: &'a Graph, info: &'a Map<String, Value>, state: &'a ServerState) -> Self {
        let mut known_folders: HashSet<&'a str> = ["checkpoints", "upscale_models"].into();
        known_folders.extend(state.models.keys().map(String::as_str));
        Self {
            known_folders,
            graph,
            info,
            state,
            validated: Vec::new(),
            in_progress: Vec::new(),
            conversions: Vec::new(),
        }
    }

    fn validated(&self, id: &str) -> Option<&Checked> {
        self.validated
            .iter()
            .find(|(node, _)| node == id)
            .map(|(_, checked)| checked)
    }

    fn set_validated(&mut self, id: &str, checked: Checked) {
        match self.validated.iter_mut().find(|(node, _)| node == id) {
            Some(entry) => entry.1 = checked,
            None => self.validated.push((id.to_owned(), checked)),
        }
    }

    fn validate_prompt(mut self, partial: Option<&[String]>) -> Validation {
        let invalid = |kind: &str, message: String, details: String| Validation::Invalid {
            error: json!({
                "type": kind,
                "message": message,
                "details": details,
                "extra_info": {},
            }),
            node_errors: json!({}),
        };
        let mut outputs = Vec::new();
        for node in &self.graph.nodes {
            let Some(class_type) = &node.class_type else {
                return invalid(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.".to_owned(),
                    format!("Node ID '#{}'", node.id),
                );
            };
            let Some(definition) = class_type.as_str().and_then(|class| self.info.get(class))
            else {
                return invalid(
                    "invalid_prompt",
                    format!(
                        "Cannot execute because node {} does not exist.",
                        py_str(class_type)
                    ),
                    format!("Node ID '#{}'", node.id),
                );
            };
            if definition["output_node"] == true
                && partial.is_none_or(|targets| targets.contains(&node.id))
            {
                outputs.push(node.id.clone());
            }
        }
        if outputs.is_empty() {
            return invalid(
                "prompt_no_outputs",
                "Prompt has no outputs".to_owned(),
                String::new(),
            );
        }

        let mut good_outputs = Vec::new();
        let mut failed: Vec<(String, Vec<Value>)> = Vec::new();
        let mut node_errors = Map::new();
        for output in &outputs {
            let (valid, reasons) = match self.validate_inputs(output) {
                Ok(checked) => checked,
                Err(exception) => {
                    let reasons = vec![json!({
                        "type": "exception_during_validation",
                        "message": "Exception when validating node",
                        "details": exception.message,
                        "extra_info": {
                            "exception_type": exception.kind,
                            "traceback": VALIDATION_TRACEBACK,
                        },
                    })];
                    self.set_validated(output, (false, reasons.clone()));
                    (false, reasons)
                }
            };
            if valid {
                good_outputs.push(output.clone());
                continue;
            }
            failed.push((output.clone(), reasons));
            // As ComfyUI does: every node with errors so far lists this output as dependent.
            for (node_id, (valid, reasons)) in &self.validated {
                if *valid || reasons.is_empty() {
                    continue;
                }
                let entry = node_errors.entry(node_id.clone()).or_insert_with(|| {
                    let class_type = self
                        .graph
                        .node(node_id)
                        .and_then(|node| node.class_type.clone())
                        .unwrap_or(Value::Null);
                    json!({ "errors": reasons, "dependent_outputs": [], "class_type": class_type })
                });
                if let Some(dependent) = entry["dependent_outputs"].as_array_mut() {
                    dependent.push(json!(output));
                }
            }
        }

        if good_outputs.is_empty() {
            let details: Vec<String> = failed
                .iter()
                .flat_map(|(_, reasons)| reasons)
                .map(|reason| {
                    format!(
                        "{}: {}",
                        reason["message"].as_str().unwrap_or_default(),
                        reason["details"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            return Validation::Invalid {
                error: json!({
                    "type": "prompt_outputs_failed_validation",
                    "message": "Prompt outputs failed validation",
                    "details": details.join("\n"),
                    "extra_info": {},
                }),
                node_errors: Value::Object(node_errors),
            };
        }
        Validation::Valid {
            outputs: good_outputs,
            node_errors: Value::Object(node_errors),
            conversions: self.conversions,
        }
    }

    fn validate_inputs(&mut self, id: &str) -> Result<Checked, PyException> {
        if let Some(checked) = self.validated(id) {
            return Ok(checked.clone());
        }
        if self.in_progress.iter().any(|node| node == id) {
            return Err(PyException {
                kind: "RecursionError",
                message: "maximum recursion depth exceeded".to_owned(),
            });
        }
        self.in_progress.push(id.to_owned());
        let result = self.check_node(id);
        self.in_progress.pop();
        let checked = result?;
        self.set_validated(id, checked.clone());
        Ok(checked)
    }

    fn check_node(&mut self, id: &str) -> Result<Checked, PyException> {
        let graph = self.graph;
        let node = graph
            .node(id)
            .ok_or_else(|| PyException::key_error(&json!(id)))?;
        let inputs = node
            .inputs
            .as_ref()
            .ok_or_else(|| PyException::key_error(&json!("inputs")))?;
        let class = node.class();
        let info = self.info;
        let definition = &info[class];
        let custom = custom_validated(class);
        let mut errors = Vec::new();
        let mut valid = true;

        for spec in class_inputs(definition) {
            let name = spec.name;
            let Some(value) = inputs.iter().find(|(key, _)| key == name).map(|(_, v)| v) else {
                if spec.required {
                    errors.push(json!({
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": name,
                        "extra_info": { "input_name": name },
                    }));
                }
                continue;
            };
            let input_config = json!([spec.kind, spec.extra]);

            if let Value::Array(linked) = value {
                if linked.len() != 2 {
                    errors.push(json!({
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": name,
                        "extra_info": {
                            "input_name": name,
                            "input_config": input_config,
                            "received_value": value,
                        },
                    }));
                    continue;
                }
                let from = linked[0]
                    .as_str()
                    .and_then(|from| graph.node(from))
                    .ok_or_else(|| PyException::key_error(&linked[0]))?;
                let returns = info
                    .get(from.class())
                    .and_then(|definition| definition["output"].as_array())
                    .ok_or_else(|| PyException::key_error(&json!("class_type")))?;
                let received = py_index(returns, &linked[1])?;
                let received = received.as_str().unwrap_or_default().to_owned();
                if !types_match(&received, spec.kind) {
                    errors.push(json!({
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": format!(
                            "{name}, received_type({received}) mismatch input_type({})",
                            py_str(spec.kind)
                        ),
                        "extra_info": {
                            "input_name": name,
                            "input_config": input_config,
                            "received_type": received,
                            "linked_node": value,
                        },
                    }));
                    continue;
                }
                match self.validate_inputs(&from.id) {
                    Ok((true, _)) => {}
                    Ok((false, _)) => valid = false,
                    Err(exception) => {
                        valid = false;
                        let reasons = vec![json!({
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": exception.message,
                            "extra_info": {
                                "input_name": name,
                                "input_config": input_config,
                                "exception_message": exception.message,
                                "exception_type": exception.kind,
                                "traceback": VALIDATION_TRACEBACK,
                                "linked_node": value,
                            },
                        })];
                        self.set_validated(&from.id, (false, reasons));
                    }
                }
                continue;
            }

            let mut value = value.clone();
            if let Some(inner) = value.get("__value__") {
                value = inner.clone();
                self.conversions
                    .push((id.to_owned(), name.to_owned(), value.clone()));
            }
            let kind = spec.kind.as_str().unwrap_or_default();
            let converted = match kind {
                "INT" => Some(to_int(&value)),
                "FLOAT" => to_float(&value).map(|f| Some(json!(f))).transpose(),
                "STRING" => Some(Ok(Value::String(py_str(&value)))),
                "BOOLEAN" => Some(Ok(Value::Bool(py_truthy(&value)))),
                _ => None,
            };
            match converted {
                Some(Ok(converted)) => {
                    if converted != value {
                        self.conversions
                            .push((id.to_owned(), name.to_owned(), converted.clone()));
                    }
                    value = converted;
                }
                Some(Err(exception)) => {
                    errors.push(json!({
                        "type": "invalid_input_type",
                        "message": format!("Failed to convert an input value to a {kind} value"),
                        "details": format!("{name}, {}, {exception}", py_str(&value)),
                        "extra_info": {
                            "input_name": name,
                            "input_config": input_config,
                            "received_value": value,
                            "exception_message": exception,
                        },
                    }));
                    continue;
                }
                None => {}
            }

            if custom.contains(&name) {
                continue;
            }
            if let Some(min) = spec.extra.get("min")
                && py_lt(&value, min) == Some(true)
            {
                errors.push(json!({
                        "type": "value_smaller_than_min",
                        "message": format!("Value {} smaller than min of {}", py_str(&value), py_str(min)),
                        "details": name,
                        "extra_info": {
                            "input_name": name,
                            "input_config": input_config,
                            "received_value": value,
                        },
                    }));
                continue;
            }
            if let Some(max) = spec.extra.get("max")
                && py_lt(max, &value) == Some(true)
            {
                errors.push(json!({
                        "type": "value_bigger_than_max",
                        "message": format!("Value {} bigger than max of {}", py_str(&value), py_str(max)),
                        "details": name,
                        "extra_info": {
                            "input_name": name,
                            "input_config": input_config,
                            "received_value": value,
                        },
                    }));
                continue;
            }
            if let Value::Array(options) = spec.kind {
                if unchecked_combo(class, name, &self.known_folders)
                    || options.iter().any(|o| py_eq(o, &value))
                {
                    continue;
                }
                let (list, config) = if options.len() > 20 {
                    (format!("(list of length {})", options.len()), Value::Null)
                } else {
                    (py_repr(spec.kind), input_config)
                };
                errors.push(json!({
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": format!("{name}: '{}' not in {list}", py_str(&value)),
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "received_value": value,
                    },
                }));
            }
        }

        // LoadImage.VALIDATE_INPUTS / LoadImageMask.VALIDATE_INPUTS.
        for &name in custom {
            let Some(Value::String(image)) = node.input(name) else {
                continue;
            };
            if self.state.input_file(image).is_none() {
                errors.push(json!({
                    "type": "custom_validation_failed",
                    "message": "Custom validation failed for node",
                    "details": format!("{name} - Invalid image file: {image}"),
                    "extra_info": { "input_name": name },
                }));
            }
        }

        Ok((errors.is_empty() && valid, errors))
    }
}

// ---------------------------------------------------------------------------------------------
// Python semantics, for messages that must read like ComfyUI's
// ---------------------------------------------------------------------------------------------

/// `repr(float)`: `1.0`, `0.1`, `1e+20`.
fn py_float(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else if value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{value:.1}")
    } else {
        let text = format!("{value}");
        if value.abs() >= 1e16 {
            format!("{value:e}").replace('e', "e+")
        } else {
            text
        }
    }
}

fn py_number(number: &serde_json::Number) -> String {
    match number.as_f64() {
        Some(float) if number.is_f64() => py_float(float),
        _ => number.to_string(),
    }
}

/// `repr(value)` of the Python object `value` decodes to.
fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(number) => py_number(number),
        Value::String(text) => {
            let quote = if text.contains('\'') && !text.contains('"') {
                '"'
            } else {
                '\''
            };
            let mut out = String::with_capacity(text.len() + 2);
            out.push(quote);
            for c in text.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(py_repr).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("{}: {}", py_repr(&json!(key)), py_repr(value)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// `str(value)`.
fn py_str(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => py_repr(other),
    }
}

fn py_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A number (bools are ints in Python) as an exact integer when it is one.
fn py_int(value: &Value) -> Option<i128> {
    match value {
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        _ => None,
    }
}

fn py_as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// `a < b` for numbers; `None` when Python would raise (or the values are not numbers).
fn py_lt(a: &Value, b: &Value) -> Option<bool> {
    match (py_int(a), py_int(b)) {
        (Some(a), Some(b)) => Some(a < b),
        _ => Some(py_as_f64(a)? < py_as_f64(b)?),
    }
}

/// `a == b` in Python (`1 == 1.0 == True`).
fn py_eq(a: &Value, b: &Value) -> bool {
    match (py_as_f64(a), py_as_f64(b)) {
        (Some(x), Some(y)) => match (py_int(a), py_int(b)) {
            (Some(i), Some(j)) => i == j,
            _ => x == y,
        },
        _ => a == b,
    }
}

/// `sequence[index]`.
fn py_index<'v>(sequence: &'v [Value], index: &Value) -> Result<&'v Value, PyException> {
    let Some(index) = py_int(index) else {
        return Err(PyException {
            kind: "TypeError",
            message: format!(
                "tuple indices must be integers or slices, not {}",
                py_type(index)
            ),
        });
    };
    let len = sequence.len() as i128;
    let at = if index < 0 { index + len } else { index };
    if at < 0 || at >= len {
        return Err(PyException {
            kind: "IndexError",
            message: "tuple index out of range".to_owned(),
        });
    }
    Ok(&sequence[at as usize])
}

fn py_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `int(value)`, or the message of the exception it raises.
fn to_int(value: &Value) -> Result<Value, String> {
    match value {
        Value::Bool(b) => Ok(json!(i64::from(*b))),
        Value::Number(n) if n.is_f64() => {
            let float = n.as_f64().unwrap_or_default();
            Ok(json!(float.trunc() as i64))
        }
        Value::Number(n) => Ok(Value::Number(n.clone())),
        Value::String(text) => {
            let trimmed = text.trim();
            let digits = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
            let parsed = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                trimmed.parse::<i64>().ok().map(|i| json!(i)).or_else(|| {
                    trimmed
                        .trim_start_matches('+')
                        .parse::<u64>()
                        .ok()
                        .map(|u| json!(u))
                })
            } else {
                None
            };
            parsed.ok_or_else(|| {
                format!("invalid literal for int() with base 10: {}", py_repr(value))
            })
        }
        other => Err(format!(
            "int() argument must be a string, a bytes-like object or a real number, not '{}'",
            py_type(other)
        )),
    }
}

/// `float(value)`, or the message of the exception it raises.
fn to_float(value: &Value) -> Result<f64, String> {
    match value {
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        Value::Number(n) => Ok(n.as_f64().unwrap_or_default()),
        Value::String(text) => text
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("could not convert string to float: {}", py_repr(value))),
        other => Err(format!(
            "float() argument must be a string or a real number, not '{}'",
            py_type(other)
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Execution: `prompt_worker`, `PromptExecutor.execute_async`, `ExecutionList`
// ---------------------------------------------------------------------------------------------

/// What flows along a link: enough to size and paint the images a graph makes.
#[derive(Clone, Copy, Debug, Default)]
struct Artifact {
    /// Pixels (for latents too: the size they decode to); 0 for models and conditioning.
    width: u32,
    height: u32,
    batch: u32,
    /// Everything upstream, hashed: different graphs paint different pixels.
    seed: u64,
    /// A flat colour (`EmptyImage`, and what `ImageInvert` makes of it).
    color: Option<u32>,
    /// An upscale model's factor.
    scale: u32,
}

impl Artifact {
    fn has_pixels(&self) -> bool {
        self.width > 0 && self.height > 0
    }
}

/// Why a node stopped.
enum NodeFailure {
    Interrupted,
    Error {
        exception_type: String,
        exception_message: String,
        traceback: Vec<String>,
    },
    /// The server was killed: nothing more is sent or recorded.
    Killed,
}

const EXECUTION_TRACEBACK: [&str; 4] = [
    "  File \"ComfyUI/execution.py\", line 496, in execute\n    <source line>\n",
    "  File \"ComfyUI/execution.py\", line 315, in get_output_data\n    <source line>\n",
    "  File \"ComfyUI/execution.py\", line 289, in _async_map_node_over_list\n    <source line>\n",
    "  File \"ComfyUI/execution.py\", line 277, in process_inputs\n    <source line>\n",
];

fn node_error(exception_type: &str, exception_message: String, frames: &[&str]) -> NodeFailure {
    NodeFailure::Error {
        exception_type: exception_type.to_owned(),
        exception_message,
        traceback: EXECUTION_TRACEBACK
            .iter()
            .chain(frames)
            .map(|frame| (*frame).to_owned())
            .collect(),
    }
}

async fn prompt_worker(shared: Arc<Shared>) {
    loop {
        let item = loop {
            let next = {
                let mut state = shared.state();
                if state.pending.is_empty() {
                    None
                } else {
                    let item = state.pending.remove(0);
                    state.running = Some(item.clone());
                    state.queue_updated();
                    Some(item)
                }
            };
            if let Some(item) = next {
                break item;
            }
            tokio::select! {
                () = shared.queued.notified() => {}
                () = shared.cancel.cancelled() => return,
            }
        };
        let Some(finished) = Execution::run(&shared, &item).await else {
            return;
        };
        let mut state = shared.state();
        state.running = None;
        state.last_node_id = None;
        state.history.retain(|(id, _)| *id != item.prompt_id);
        state
            .history
            .push((item.prompt_id.clone(), finished.history));
        let excess = state.history.len().saturating_sub(MAXIMUM_HISTORY_SIZE);
        state.history.drain(..excess);
        if finished.success {
            state.completed += 1;
        }
        state.queue_updated();
        if let Some(client) = item.client_id() {
            let data = json!({ "node": null, "prompt_id": item.prompt_id });
            state.send("executing", data, Some(&client));
        }
    }
}

struct Finished {
    success: bool,
    history: Value,
}

/// One node's entry in `progress_state`.
struct NodeProgress {
    value: Value,
    max: Value,
    state: &'static str,
}

struct Execution<'a> {
    shared: &'a Arc<Shared>,
    item: &'a QueueItem,
    client: Option<String>,
    /// `status_messages`, for the history.
    messages: Vec<Value>,
    /// Nodes that started (or finished from the cache), in order.
    progress: Vec<(String, NodeProgress)>,
    values: HashMap<String, Vec<Artifact>>,
    signatures: HashMap<String, String>,
    executed: Vec<String>,
    ui_outputs: Vec<(String, Value)>,
}

impl<'a> Execution<'a> {
    /// Runs `item` to its end; `None` when the server was killed on the way.
    async fn run(shared: &'a Arc<Shared>, item: &'a QueueItem) -> Option<Finished> {
        let mut run = Execution {
            shared,
            item,
            client: item.client_id(),
            messages: Vec::new(),
            progress: Vec::new(),
            values: HashMap::new(),
            signatures: HashMap::new(),
            executed: Vec::new(),
            ui_outputs: Vec::new(),
        };
        let prompt_id = item.prompt_id.clone();
        let graph = &item.graph;
        let outputs_of = |id: &str| -> bool {
            graph
                .node(id)
                .and_then(|node| shared.definitions.get(node.class()))
                .is_some_and(|definition| definition["output_node"] == true)
        };

        let mut execution_list = {
            let mut state = shared.state();
            state.interrupt_requested = false;
            state.current_client = run.client.clone();
            run.add_message(
                &state,
                "execution_start",
                json!({ "prompt_id": prompt_id }),
                false,
            );

            // The classic cache: keep what this prompt can use, then look up each node.
            let mut signatures = HashMap::new();
            for node in &graph.nodes {
                signature(graph, &node.id, &state, &mut signatures, &mut Vec::new());
            }
            let wanted: HashSet<&String> = signatures.values().collect();
            state
                .cache
                .retain(|signature, _| wanted.contains(signature));
            let mut cached = Vec::new();
            for node in &graph.nodes {
                if let Some(entry) = state.cache.get(&signatures[&node.id]) {
                    cached.push(node.id.clone());
                    run.values.insert(node.id.clone(), entry.outputs.clone());
                }
            }
            run.signatures = signatures;
            let data = json!({ "nodes": cached, "prompt_id": prompt_id });
            run.add_message(&state, "execution_cached", data, false);

            let cached: HashSet<String> = cached.into_iter().collect();
            let mut list = ExecutionList::new(graph, cached);
            for output in &item.outputs {
                list.add_node(output);
            }
            list
        };

        let mut success = false;
        loop {
            if execution_list.pending.is_empty() {
                success = true;
                let state = shared.state();
                run.add_message(
                    &state,
                    "execution_success",
                    json!({ "prompt_id": prompt_id }),
                    false,
                );
                break;
            }
            let node_id = match execution_list.stage(&outputs_of) {
                Ok(node_id) => node_id,
                Err(blamed) => {
                    let failure = NodeFailure::Error {
                        exception_type: "graph.DependencyCycleError".to_owned(),
                        exception_message: "Dependency cycle detected".to_owned(),
                        traceback: Vec::new(),
                    };
                    run.handle_error(&blamed, failure);
                    break;
                }
            };
            match run.execute(&node_id).await {
                Ok(()) => execution_list.complete(&node_id),
                Err(NodeFailure::Killed) => return None,
                Err(failure) => {
                    run.handle_error(&node_id, failure);
                    break;
                }
            }
        }

        let mut outputs = Map::new();
        let mut meta = Map::new();
        for (node_id, ui) in &run.ui_outputs {
            outputs.insert(node_id.clone(), ui.clone());
            meta.insert(
                node_id.clone(),
                json!({
                    "node_id": node_id,
                    "display_node": node_id,
                    "parent_node": null,
                    "real_node_id": node_id,
                }),
            );
        }
        let history = json!({
            "prompt": item.tuple(),
            "outputs": outputs,
            "status": {
                "status_str": if success { "success" } else { "error" },
                "completed": success,
                "messages": run.messages,
            },
            "meta": meta,
        });
        Some(Finished { success, history })
    }

    /// `PromptExecutor.add_message`: recorded for the history, sent to the client (or to
    /// everyone when `broadcast`) when there is one.
    fn add_message(&mut self, state: &ServerState, event: &str, mut data: Value, broadcast: bool) {
        data["timestamp"] = json!(now_ms());
        self.messages.push(json!([event, data]));
        if self.client.is_some() || broadcast {
            state.send(event, data, self.client.as_deref());
        }
    }

    /// Sets `node`'s progress and sends `progress_state` (to the client; to everyone without one).
    fn set_progress(&mut self, state: &ServerState, node: &str, progress: NodeProgress) {
        match self.progress.iter_mut().find(|(id, _)| id == node) {
            Some(entry) => entry.1 = progress,
            None => self.progress.push((node.to_owned(), progress)),
        }
        let prompt_id = &self.item.prompt_id;
        let nodes: Map<String, Value> = self
            .progress
            .iter()
            .map(|(id, progress)| {
                let entry = json!({
                    "value": progress.value,
                    "max": progress.max,
                    "state": progress.state,
                    "node_id": id,
                    "prompt_id": prompt_id,
                    "display_node_id": id,
                    "parent_node_id": null,
                    "real_node_id": id,
                });
                (id.clone(), entry)
            })
            .collect();
        let data = json!({ "prompt_id": prompt_id, "nodes": nodes });
        state.send("progress_state", data, self.client.as_deref());
    }

    fn finish_progress(&mut self, state: &ServerState, node: &str) {
        let max = self
            .progress
            .iter()
            .find(|(id, _)| id == node)
            .map_or(json!(1), |(_, progress)| progress.max.clone());
        let progress = NodeProgress {
            value: max.clone(),
            max,
            state: "finished",
        };
        self.set_progress(state, node, progress);
    }

    /// `execution.execute` for one node.
    async fn execute(&mut self, node_id: &str) -> Result<(), NodeFailure> {
        let shared = self.shared;
        let graph = &self.item.graph;
        let node = graph
            .node(node_id)
            .ok_or_else(|| node_error("KeyError", py_repr(&json!(node_id)), &[]))?;
        let signature = self.signatures.get(node_id).cloned().unwrap_or_default();

        // Cached (an output node whose inputs did not change, or a twin of a node that ran).
        let cached = shared.state().cache.get(&signature).cloned();
        if let Some(entry) = cached {
            let state = shared.state();
            if let Some(client) = &self.client {
                let data = json!({
                    "node": node_id,
                    "display_node": node_id,
                    "output": entry.ui.clone().unwrap_or(Value::Null),
                    "prompt_id": self.item.prompt_id,
                });
                state.send("executed", data, Some(client));
            }
            if let Some(ui) = entry.ui {
                self.ui_outputs.push((node_id.to_owned(), ui));
            }
            self.finish_progress(&state, node_id);
            self.values.insert(node_id.to_owned(), entry.outputs);
            return Ok(());
        }

        {
            let mut state = shared.state();
            let running = NodeProgress {
                value: json!(0.0),
                max: json!(1.0),
                state: "running",
            };
            self.set_progress(&state, node_id, running);
            if let Some(client) = &self.client {
                state.last_node_id = Some(node_id.to_owned());
                let data = json!({
                    "node": node_id,
                    "display_node": node_id,
                    "prompt_id": self.item.prompt_id,
                });
                state.send("executing", data, Some(client));
            }
        }

        let (outputs, ui) = self.evaluate(node).await?;

        let mut state = shared.state();
        if let Some(ui) = &ui {
            self.ui_outputs.push((node_id.to_owned(), ui.clone()));
            if let Some(client) = &self.client {
                let data = json!({
                    "node": node_id,
                    "display_node": node_id,
                    "output": ui,
                    "prompt_id": self.item.prompt_id,
                });
                state.send("executed", data, Some(client));
            }
        }
        self.finish_progress(&state, node_id);
        self.executed.push(node_id.to_owned());
        state.cache.insert(
            signature,
            CacheEntry {
                outputs: outputs.clone(),
                ui,
            },
        );
        self.values.insert(node_id.to_owned(), outputs);
        Ok(())
    }

    /// `PromptExecutor.handle_execution_error`.
    fn handle_error(&mut self, node_id: &str, failure: NodeFailure) {
        let state = self.shared.state();
        let node = self.item.graph.node(node_id);
        let node_type = node.map(|node| node.class().to_owned()).unwrap_or_default();
        match failure {
            NodeFailure::Interrupted | NodeFailure::Killed => {
                let data = json!({
                    "prompt_id": self.item.prompt_id,
                    "node_id": node_id,
                    "node_type": node_type,
                    "executed": self.executed,
                });
                self.add_message(&state, "execution_interrupted", data, true);
            }
            NodeFailure::Error {
                exception_type,
                exception_message,
                traceback,
            } => {
                let mut current_inputs = Map::new();
                for (name, value) in node
                    .and_then(|node| node.inputs.as_ref())
                    .into_iter()
                    .flatten()
                {
                    let shown = match link(value) {
                        Some((from, slot)) => json!(format!("<output {slot} of node {from}>")),
                        None => value.clone(),
                    };
                    current_inputs.insert(name.clone(), json!([shown]));
                }
                let current_outputs: Vec<&String> =
                    self.item.graph.nodes.iter().map(|node| &node.id).collect();
                let data = json!({
                    "prompt_id": self.item.prompt_id,
                    "node_id": node_id,
                    "node_type": node_type,
                    "executed": self.executed,
                    "exception_message": exception_message,
                    "exception_type": exception_type,
                    "traceback": traceback,
                    "current_inputs": current_inputs,
                    "current_outputs": current_outputs,
                });
                self.add_message(&state, "execution_error", data, false);
            }
        }
    }

    /// What a node of each known class computes.
    async fn evaluate(
        &mut self,
        node: &GraphNode,
    ) -> Result<(Vec<Artifact>, Option<Value>), NodeFailure> {
        let shared = self.shared;
        let class = node.class();
        let output_count = shared.definitions[class]["output"]
            .as_array()
            .map_or(0, Vec::len);
        let int = |name: &str| {
            node.input(name)
                .and_then(py_int)
                .unwrap_or(0)
                .clamp(0, i128::from(u32::MAX)) as u32
        };
        let text = |name: &str| node.input(name).map(py_str).unwrap_or_default();
        let linked: Vec<Artifact> = node
            .inputs
            .iter()
            .flatten()
            .filter_map(|(_, value)| link(value))
            .filter_map(|(from, slot)| self.values.get(from)?.get(slot).copied())
            .collect();
        let input = |name: &str| -> Artifact {
            node.input(name)
                .and_then(link)
                .and_then(|(from, slot)| self.values.get(from)?.get(slot).copied())
                .unwrap_or_default()
        };
        let seed = {
            let mut parts: Vec<Vec<u8>> = vec![class.as_bytes().to_vec()];
            for (name, value) in node.inputs.iter().flatten() {
                if link(value).is_none() {
                    parts.push(format!("{name}={value}").into_bytes());
                }
            }
            for artifact in &linked {
                parts.push(artifact.seed.to_le_bytes().to_vec());
            }
            fnv1a(&parts)
        };
        // The default: a pass-through of the first linked image or latent.
        let mut artifact = linked
            .iter()
            .find(|artifact| artifact.has_pixels())
            .copied()
            .map(|upstream| Artifact {
                seed,
                color: None,
                scale: 0,
                ..upstream
            })
            .unwrap_or(Artifact {
                seed,
                batch: 1,
                ..Artifact::default()
            });

        match class {
            "CheckpointLoaderSimple" => {
                let name = text("ckpt_name");
                if name.contains("corrupt") {
                    return Err(node_error(
                        "ValueError",
                        format!(
                            "Error while deserializing header: MetadataIncompleteBuffer\n\nFile path: ComfyUI/models/checkpoints/{name}\n\nThe safetensors file is corrupt/incomplete. Check the file size and make sure you have copied/downloaded it correctly."
                        ),
                        &[
                            "  File \"ComfyUI/nodes.py\", line 580, in load_checkpoint\n    <source line>\n",
                            "  File \"ComfyUI/comfy/sd.py\", line 1018, in load_checkpoint_guess_config\n    <source line>\n",
                            "  File \"ComfyUI/comfy/utils.py\", line 87, in load_torch_file\n    <source line>\n",
                        ],
                    ));
                }
            }
            "UpscaleModelLoader" => {
                let name = text("model_name");
                if !shared.options.upscale_models.contains(&name) {
                    return Err(node_error(
                        "FileNotFoundError",
                        format!(
                            "Model in folder 'upscale_models' with filename '{name}' not found."
                        ),
                        &[
                            "  File \"ComfyUI/comfy_extras/nodes_upscale_model.py\", line 29, in execute\n    <source line>\n",
                            "  File \"ComfyUI/folder_paths.py\", line 318, in get_full_path_or_raise\n    <source line>\n",
                        ],
                    ));
                }
                artifact.scale = upscale_factor(&name);
            }
            "EmptyLatentImage" => {
                artifact.width = int("width") / 8 * 8;
                artifact.height = int("height") / 8 * 8;
                artifact.batch = int("batch_size").max(1);
            }
            "EmptyImage" => {
                artifact.width = int("width");
                artifact.height = int("height");
                artifact.batch = int("batch_size").max(1);
                artifact.color = Some(int("color") & 0xFF_FFFF);
            }
            "LoadImage" | "LoadImageMask" => {
                let reference = text("image");
                let bytes = shared.state().input_file(&reference).cloned();
                let size = bytes
                    .as_deref()
                    .and_then(|bytes| png::size(bytes).or_else(|| png::jpeg_size(bytes)));
                let Some((width, height)) = size else {
                    return Err(node_error(
                        "PIL.UnidentifiedImageError",
                        format!("cannot identify image file 'ComfyUI/input/{reference}'\n"),
                        &[
                            "  File \"ComfyUI/nodes.py\", line 1647, in load_image\n    <source line>\n",
                            "  File \"ComfyUI/node_helpers.py\", line 31, in pillow\n    <source line>\n",
                            "  File \"site-packages/PIL/Image.py\", line 3730, in open\n    <source line>\n",
                        ],
                    ));
                };
                artifact.width = width;
                artifact.height = height;
                artifact.batch = 1;
                artifact.seed = fnv1a(&[bytes.as_deref().unwrap_or_default()]);
            }
            "VAEEncode" | "VAEEncodeForInpaint" => {
                let pixels = input("pixels");
                artifact.width = pixels.width / 8 * 8;
                artifact.height = pixels.height / 8 * 8;
            }
            "ImageInvert" => artifact.color = input("image").color.map(|c| c ^ 0xFF_FFFF),
            "ImageScale" => {
                let image = input("image");
                let (mut width, mut height) = (int("width"), int("height"));
                if width == 0 && height == 0 {
                    (width, height) = (image.width, image.height);
                } else if width == 0 {
                    width = scaled(image.width, height, image.height);
                } else if height == 0 {
                    height = scaled(image.height, width, image.width);
                }
                artifact.width = width.max(1);
                artifact.height = height.max(1);
                artifact.color = image.color;
            }
            "ImageScaleBy" => {
                let image = input("image");
                let by = node.input("scale_by").and_then(py_as_f64).unwrap_or(1.0);
                artifact.width = ((f64::from(image.width) * by).round() as u32).max(1);
                artifact.height = ((f64::from(image.height) * by).round() as u32).max(1);
                artifact.color = image.color;
            }
            "KSampler" => {
                let steps = int("steps").max(1);
                for step in 1..=steps {
                    self.step(&node.id, step, steps).await?;
                }
            }
            "ImageUpscaleWithModel" => {
                let model = input("upscale_model");
                let image = input("image");
                let tiles = image.batch.max(1)
                    * image.height.div_ceil(480).max(1)
                    * image.width.div_ceil(480).max(1);
                for tile in 1..=tiles {
                    self.step(&node.id, tile, tiles).await?;
                }
                let scale = model.scale.max(1);
                artifact.width = image.width * scale;
                artifact.height = image.height * scale;
            }
            "SaveImage" | "PreviewImage" => {
                let images = input("images");
                let ui = self.save_images(node, images).await?;
                return Ok((Vec::new(), Some(ui)));
            }
            _ => {}
        }
        Ok((vec![artifact; output_count.max(1)], None))
    }

    /// One sampler step (or upscaler tile): its time, then `progress_state` and `progress`, then
    /// a stop while held.
    async fn step(&mut self, node_id: &str, value: u32, max: u32) -> Result<(), NodeFailure> {
        let shared = self.shared;
        let mut control = shared.control.subscribe();
        let delay = tokio::time::sleep(shared.options.step_delay);
        tokio::pin!(delay);
        loop {
            control.borrow_and_update();
            if shared.state().interrupt_requested {
                return Err(NodeFailure::Interrupted);
            }
            tokio::select! {
                () = &mut delay => break,
                changed = control.changed() => if changed.is_err() {
                    return Err(NodeFailure::Killed);
                },
                () = shared.cancel.cancelled() => return Err(NodeFailure::Killed),
            }
        }
        {
            let state = shared.state();
            if state.interrupt_requested {
                return Err(NodeFailure::Interrupted);
            }
            let progress = NodeProgress {
                value: json!(value),
                max: json!(max),
                state: "running",
            };
            self.set_progress(&state, node_id, progress);
            let data = json!({
                "value": value,
                "max": max,
                "prompt_id": self.item.prompt_id,
                "node": node_id,
            });
            state.send("progress", data, self.client.as_deref());
        }
        loop {
            control.borrow_and_update();
            {
                let state = shared.state();
                if state.interrupt_requested {
                    return Err(NodeFailure::Interrupted);
                }
                if !state.hold {
                    return Ok(());
                }
            }
            tokio::select! {
                changed = control.changed() => if changed.is_err() {
                    return Err(NodeFailure::Killed);
                },
                () = shared.cancel.cancelled() => return Err(NodeFailure::Killed),
            }
        }
    }

    /// `SaveImage.save_images` (and `PreviewImage`'s, into `temp`): one PNG per image of the
    /// batch, `{prefix}_{counter:05}_.png`, the counter following the files already there.
    async fn save_images(
        &mut self,
        node: &GraphNode,
        images: Artifact,
    ) -> Result<Value, NodeFailure> {
        let shared = self.shared;
        let (folder, prefix) = if node.class() == "PreviewImage" {
            (Folder::Temp, shared.temp_prefix.clone())
        } else {
            let prefix = node
                .input("filename_prefix")
                .map_or_else(|| "ComfyUI".to_owned(), py_str);
            (Folder::Output, prefix)
        };
        let prefix = prefix
            .replace("%width%", &images.width.to_string())
            .replace("%height%", &images.height.to_string());
        let (subfolder, filename) = match prefix.rsplit_once('/') {
            Some((subfolder, filename)) => (normalize_subfolder(subfolder), filename.to_owned()),
            None => (Some(String::new()), prefix.clone()),
        };
        let Some(subfolder) = subfolder else {
            return Err(node_error(
                "Exception",
                format!(
                    "**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: ComfyUI/output/{prefix}\n         output_dir: ComfyUI/output"
                ),
                &["  File \"ComfyUI/nodes.py\", line 1578, in save_images\n    <source line>\n"],
            ));
        };

        let mut text = vec![(
            "prompt".to_owned(),
            serde_json::to_string(&self.item.prompt).unwrap_or_default(),
        )];
        if let Some(extra) = self.item.extra_data["extra_pnginfo"].as_object() {
            for (key, value) in extra {
                text.push((key.clone(), value.to_string()));
            }
        }
        let batch = images.batch.max(1);
        let encoded = tokio::task::spawn_blocking(move || {
            (0..batch)
                .map(|index| {
                    let (width, height) = (images.width.max(1), images.height.max(1));
                    let rgb = paint(&images, width, height, index);
                    let text: Vec<(&str, &str)> =
                        text.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    png::encode_rgb(width, height, &rgb, &text)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|_| NodeFailure::Killed)?;

        let mut state = shared.state();
        let first = next_counter(&state, folder, &subfolder, &filename);
        let mut saved = Vec::new();
        for (counter, bytes) in (first..).zip(encoded) {
            let file = format!(
                "{}_{counter:05}_.png",
                filename.replace("%batch_num%", &saved.len().to_string())
            );
            state.files.insert(
                (folder, subfolder.clone(), file.clone()),
                Bytes::from(bytes),
            );
            saved.push(json!({ "filename": file, "subfolder": subfolder, "type": folder.name() }));
        }
        Ok(json!({ "images": saved }))
    }
}

/// `folder_paths.get_save_image_path`'s counter: one more than the highest
/// `{filename}_{NNNNN}_…` already in the folder.
fn next_counter(state: &ServerState, folder: Folder, subfolder: &str, filename: &str) -> u32 {
    state
        .files
        .keys()
        .filter(|(f, s, _)| *f == folder && s == subfolder)
        .filter_map(|(_, _, name)| {
            let rest = name.strip_prefix(filename)?.strip_prefix('_')?;
            rest.split('_').next()?.parse::<u32>().ok()
        })
        .max()
        .map_or(1, |highest| highest + 1)
}

/// `size * numerator / denominator`, rounded, at least 1.
fn scaled(size: u32, numerator: u32, denominator: u32) -> u32 {
    if denominator == 0 {
        return numerator.max(1);
    }
    ((f64::from(size) * f64::from(numerator) / f64::from(denominator)).round() as u32).max(1)
}

/// `x4` in `RealESRGAN_x4plus.pth`; 4 when the name does not say.
fn upscale_factor(name: &str) -> u32 {
    let lower = name.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    (0..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b'x' && bytes[i + 1].is_ascii_digit() && bytes[i + 1] != b'0')
        .map_or(4, |i| u32::from(bytes[i + 1] - b'0'))
}

/// FNV-1a over `parts`, each followed by a separator.
fn fnv1a<P: AsRef<[u8]>>(parts: &[P]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.as_ref().iter().chain(&[0xFF]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Pixels for image `index` of `artifact`: its flat colour, or a seeded gradient with noise.
fn paint(artifact: &Artifact, width: u32, height: u32, index: u32) -> Vec<u8> {
    let (width, height) = (width as usize, height as usize);
    if let Some(color) = artifact.color {
        let rgb = [(color >> 16) as u8, (color >> 8) as u8, color as u8];
        return rgb
            .iter()
            .copied()
            .cycle()
            .take(width * height * 3)
            .collect();
    }
    let mut state = (artifact.seed ^ u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let from: [u8; 3] = [next() as u8, next() as u8, next() as u8];
    let to: [u8; 3] = [next() as u8, next() as u8, next() as u8];
    let span = (width + height).saturating_sub(2).max(1);
    let mut rgb = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            let t = (x + y) * 255 / span;
            let noise = next();
            for channel in 0..3 {
                let a = from[channel] as usize;
                let b = to[channel] as usize;
                let base = (a * (255 - t) + b * t) / 255;
                rgb.push((base as u8).wrapping_add((noise >> (8 * channel)) as u8 & 0x1F));
            }
        }
    }
    rgb
}

/// A node's cache key, like `CacheKeySetInputSignature`: its class, its `IS_CHANGED` (an input
/// file's content), its literal inputs by name, and the keys of what it links to.
fn signature(
    graph: &Graph,
    id: &str,
    state: &ServerState,
    memo: &mut HashMap<String, String>,
    visiting: &mut Vec<String>,
) -> String {
    if let Some(known) = memo.get(id) {
        return known.clone();
    }
    let Some(node) = graph.node(id) else {
        return format!("missing:{id}");
    };
    if visiting.iter().any(|v| v == id) {
        return format!("cycle:{id}");
    }
    visiting.push(id.to_owned());
    let mut key = json!({ "class_type": node.class_type });
    if matches!(node.class(), "LoadImage" | "LoadImageMask") {
        let file = node
            .input("image")
            .and_then(Value::as_str)
            .and_then(|reference| state.input_file(reference));
        key["is_changed"] = json!(file.map(|bytes| fnv1a(&[&bytes[..]])));
    }
    let mut inputs = Map::new();
    for (name, value) in node.inputs.iter().flatten() {
        let entry = match link(value) {
            Some((from, slot)) => {
                json!([
                    "ANCESTOR",
                    signature(graph, from, state, memo, visiting),
                    slot
                ])
            }
            None => value.clone(),
        };
        inputs.insert(name.clone(), entry);
    }
    key["inputs"] = Value::Object(inputs);
    visiting.pop();
    let key = key.to_string();
    memo.insert(id.to_owned(), key.clone());
    key
}

/// `comfy_execution.graph.ExecutionList`: which node runs next.
struct ExecutionList<'g> {
    graph: &'g Graph,
    cached: HashSet<String>,
    /// `pendingNodes`, in insertion order.
    pending: Vec<String>,
    block_count: HashMap<String, usize>,
    /// `blocking[a]`: the nodes waiting for `a`, in order.
    blocking: HashMap<String, Vec<String>>,
}

impl<'g> ExecutionList<'g> {
    fn new(graph: &'g Graph, cached: HashSet<String>) -> Self {
        Self {
            graph,
            cached,
            pending: Vec::new(),
            block_count: HashMap::new(),
            blocking: HashMap::new(),
        }
    }

    /// `TopologicalSort.add_node`: the node and its uncached ancestors, depth first.
    fn add_node(&mut self, id: &str) {
        let mut stack = vec![id.to_owned()];
        let mut links = Vec::new();
        while let Some(unique_id) = stack.pop() {
            if self.pending.contains(&unique_id) {
                continue;
            }
            self.pending.push(unique_id.clone());
            self.block_count.insert(unique_id.clone(), 0);
            self.blocking.insert(unique_id.clone(), Vec::new());
            let Some(node) = self.graph.node(&unique_id) else {
                continue;
            };
            for (_, value) in node.inputs.iter().flatten() {
                if let Some((from, _)) = link(value) {
                    if !self.cached.contains(from) {
                        stack.push(from.to_owned());
                    }
                    links.push((from.to_owned(), unique_id.clone()));
                }
            }
        }
        for (from, to) in links {
            if self.cached.contains(&from) {
                continue;
            }
            self.add_node(&from);
            let blocked = self.blocking.entry(from).or_default();
            if !blocked.contains(&to) {
                blocked.push(to.clone());
                *self.block_count.entry(to).or_default() += 1;
            }
        }
    }

    /// `stage_node_execution` with `ux_friendly_pick_node`; `Err(node)` blames a node of a cycle.
    fn stage(&self, is_output: &dyn Fn(&str) -> bool) -> Result<String, String> {
        let available: Vec<&String> = self
            .pending
            .iter()
            .filter(|id| self.block_count.get(*id).copied().unwrap_or(0) == 0)
            .collect();
        let Some(first) = available.first() else {
            return Err(self.pending.first().cloned().unwrap_or_default());
        };
        let blocking = |id: &str| self.blocking.get(id).map(Vec::as_slice).unwrap_or(&[]);
        if let Some(id) = available.iter().find(|id| is_output(id)) {
            return Ok((*id).clone());
        }
        if let Some(id) = available
            .iter()
            .find(|id| blocking(id).iter().any(|b| is_output(b)))
        {
            return Ok((*id).clone());
        }
        if let Some(id) = available.iter().find(|id| {
            blocking(id)
                .iter()
                .any(|b| blocking(b).iter().any(|c| is_output(c)))
        }) {
            return Ok((*id).clone());
        }
        Ok((*first).clone())
    }

    /// `complete_node_execution`.
    fn complete(&mut self, id: &str) {
        self.pending.retain(|pending| pending != id);
        for blocked in self.blocking.remove(id).unwrap_or_default() {
            if let Some(count) = self.block_count.get_mut(&blocked) {
                *count = count.saturating_sub(1);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Node classes: `object_info` of ComfyUI 0.3.64 for the classes the fake knows (model and
// input-file lists are filled in at run time), plus the ReActor custom node
// ---------------------------------------------------------------------------------------------

/// The known node classes, as `GET /object_info` describes them.
const NODE_DEFINITIONS: &str = r#"{
"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [[], {"tooltip": "The name of the checkpoint (model) to load."}]}}, "input_order": {"required": ["ckpt_name"]}, "output": ["MODEL", "CLIP", "VAE"], "output_is_list": [false, false, false], "output_name": ["MODEL", "CLIP", "VAE"], "name": "CheckpointLoaderSimple", "display_name": "Load Checkpoint", "description": "Loads a diffusion model checkpoint, diffusion models are used to denoise latents.", "python_module": "nodes", "category": "loaders", "output_node": false, "output_tooltips": ["The model used for denoising latents.", "The CLIP model used for encoding text prompts.", "The VAE model used for encoding and decoding images to and from latent space."]},
"CLIPTextEncode": {"input": {"required": {"text": ["STRING", {"multiline": true, "dynamicPrompts": true, "tooltip": "The text to be encoded."}], "clip": ["CLIP", {"tooltip": "The CLIP model used for encoding the text."}]}}, "input_order": {"required": ["text", "clip"]}, "output": ["CONDITIONING"], "output_is_list": [false], "output_name": ["CONDITIONING"], "name": "CLIPTextEncode", "display_name": "CLIP Text Encode (Prompt)", "description": "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model towards generating specific images.", "python_module": "nodes", "category": "conditioning", "output_node": false, "output_tooltips": ["A conditioning containing the embedded text used to guide the diffusion model."]},
"EmptyLatentImage": {"input": {"required": {"width": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8, "tooltip": "The width of the latent images in pixels."}], "height": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8, "tooltip": "The height of the latent images in pixels."}], "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "The number of latent images in the batch."}]}}, "input_order": {"required": ["width", "height", "batch_size"]}, "output": ["LATENT"], "output_is_list": [false], "output_name": ["LATENT"], "name": "EmptyLatentImage", "display_name": "Empty Latent Image", "description": "Create a new batch of empty latent images to be denoised via sampling.", "python_module": "nodes", "category": "latent", "output_node": false, "output_tooltips": ["The empty latent image batch."]},
"KSampler": {"input": {"required": {"model": ["MODEL", {"tooltip": "The model used for denoising the input latent."}], "seed": ["INT", {"default": 0, "min": 0, "max": 18446744073709551615, "control_after_generate": true, "tooltip": "The random seed used for creating the noise."}], "steps": ["INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "The number of steps used in the denoising process."}], "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": "The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher values result in images more closely matching the prompt however too high values will negatively impact quality."}], "sampler_name": [["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"], {"tooltip": "The algorithm used when sampling, this can affect the quality, speed, and style of the generated output."}], "scheduler": [["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic", "kl_optimal"], {"tooltip": "The scheduler controls how noise is gradually removed to form the image."}], "positive": ["CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to include in the image."}], "negative": ["CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to exclude from the image."}], "latent_image": ["LATENT", {"tooltip": "The latent image to denoise."}], "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "The amount of denoising applied, lower values will maintain the structure of the initial image allowing for image to image sampling."}]}}, "input_order": {"required": ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative", "latent_image", "denoise"]}, "output": ["LATENT"], "output_is_list": [false], "output_name": ["LATENT"], "name": "KSampler", "display_name": "KSampler", "description": "Uses the provided model, positive and negative conditioning to denoise the latent image.", "python_module": "nodes", "category": "sampling", "output_node": false, "output_tooltips": ["The denoised latent."]},
"VAEDecode": {"input": {"required": {"samples": ["LATENT", {"tooltip": "The latent to be decoded."}], "vae": ["VAE", {"tooltip": "The VAE model used for decoding the latent."}]}}, "input_order": {"required": ["samples", "vae"]}, "output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "name": "VAEDecode", "display_name": "VAE Decode", "description": "Decodes latent images back into pixel space images.", "python_module": "nodes", "category": "latent", "output_node": false, "output_tooltips": ["The decoded image."]},
"VAEEncode": {"input": {"required": {"pixels": ["IMAGE"], "vae": ["VAE"]}}, "input_order": {"required": ["pixels", "vae"]}, "output": ["LATENT"], "output_is_list": [false], "output_name": ["LATENT"], "name": "VAEEncode", "display_name": "VAE Encode", "description": "", "python_module": "nodes", "category": "latent", "output_node": false},
"VAEEncodeForInpaint": {"input": {"required": {"pixels": ["IMAGE"], "vae": ["VAE"], "mask": ["MASK"], "grow_mask_by": ["INT", {"default": 6, "min": 0, "max": 64, "step": 1}]}}, "input_order": {"required": ["pixels", "vae", "mask", "grow_mask_by"]}, "output": ["LATENT"], "output_is_list": [false], "output_name": ["LATENT"], "name": "VAEEncodeForInpaint", "display_name": "VAE Encode (for Inpainting)", "description": "", "python_module": "nodes", "category": "latent/inpaint", "output_node": false},
"SetLatentNoiseMask": {"input": {"required": {"samples": ["LATENT"], "mask": ["MASK"]}}, "input_order": {"required": ["samples", "mask"]}, "output": ["LATENT"], "output_is_list": [false], "output_name": ["LATENT"], "name": "SetLatentNoiseMask", "display_name": "Set Latent Noise Mask", "description": "", "python_module": "nodes", "category": "latent/inpaint", "output_node": false},
"VAELoader": {"input": {"required": {"vae_name": [[]]}}, "input_order": {"required": ["vae_name"]}, "output": ["VAE"], "output_is_list": [false], "output_name": ["VAE"], "name": "VAELoader", "display_name": "Load VAE", "description": "", "python_module": "nodes", "category": "loaders", "output_node": false},
"SaveImage": {"input": {"required": {"images": ["IMAGE", {"tooltip": "The images to save."}], "filename_prefix": ["STRING", {"default": "ComfyUI", "tooltip": "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."}]}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}, "input_order": {"required": ["images", "filename_prefix"], "hidden": ["prompt", "extra_pnginfo"]}, "output": [], "output_is_list": [], "output_name": [], "name": "SaveImage", "display_name": "Save Image", "description": "Saves the input images to your ComfyUI output directory.", "python_module": "nodes", "category": "image", "output_node": true},
"PreviewImage": {"input": {"required": {"images": ["IMAGE"]}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}, "input_order": {"required": ["images"], "hidden": ["prompt", "extra_pnginfo"]}, "output": [], "output_is_list": [], "output_name": [], "name": "PreviewImage", "display_name": "Preview Image", "description": "Saves the input images to your ComfyUI output directory.", "python_module": "nodes", "category": "image", "output_node": true},
"LoadImage": {"input": {"required": {"image": [[], {"image_upload": true}]}}, "input_order": {"required": ["image"]}, "output": ["IMAGE", "MASK"], "output_is_list": [false, false], "output_name": ["IMAGE", "MASK"], "name": "LoadImage", "display_name": "Load Image", "description": "", "python_module": "nodes", "category": "image", "output_node": false},
"LoadImageMask": {"input": {"required": {"image": [[], {"image_upload": true}], "channel": [["alpha", "red", "green", "blue"]]}}, "input_order": {"required": ["image", "channel"]}, "output": ["MASK"], "output_is_list": [false], "output_name": ["MASK"], "name": "LoadImageMask", "display_name": "Load Image (as Mask)", "description": "", "python_module": "nodes", "category": "mask", "output_node": false},
"EmptyImage": {"input": {"required": {"width": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}], "height": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}], "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}], "color": ["INT", {"default": 0, "min": 0, "max": 16777215, "step": 1, "display": "color"}]}}, "input_order": {"required": ["width", "height", "batch_size", "color"]}, "output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "name": "EmptyImage", "display_name": "EmptyImage", "description": "", "python_module": "nodes", "category": "image", "output_node": false},
"ImageInvert": {"input": {"required": {"image": ["IMAGE"]}}, "input_order": {"required": ["image"]}, "output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "name": "ImageInvert", "display_name": "Invert Image", "description": "", "python_module": "nodes", "category": "image", "output_node": false},
"ImageScale": {"input": {"required": {"image": ["IMAGE"], "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]], "width": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}], "height": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}], "crop": [["disabled", "center"]]}}, "input_order": {"required": ["image", "upscale_method", "width", "height", "crop"]}, "output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "name": "ImageScale", "display_name": "Upscale Image", "description": "", "python_module": "nodes", "category": "image/upscaling", "output_node": false},
"ImageScaleBy": {"input": {"required": {"image": ["IMAGE"], "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]], "scale_by": ["FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}]}}, "input_order": {"required": ["image", "upscale_method", "scale_by"]}, "output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "name": "ImageScaleBy", "display_name": "Upscale Image By", "description": "", "python_module": "nodes", "category": "image/upscaling", "output_node": false},
"LoraLoader": {"input": {"required": {"model": ["MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}], "clip": ["CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}], "lora_name": [[], {"tooltip": "The name of the LoRA."}], "strength_model": ["FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01, "tooltip": "How strongly to modify the diffusion model. This value can be negative."}], "strength_clip": ["FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01, "tooltip": "How strongly to modify the CLIP model. This value can be negative."}]}}, "input_order": {"required": ["model", "clip", "lora_name", "strength_model", "strength_clip"]}, "output": ["MODEL", "CLIP"], "output_is_list": [false, false], "output_name": ["MODEL", "CLIP"], "name": "LoraLoader", "display_name": "Load LoRA", "description": "LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised such as applying styles. Multiple LoRA nodes can be linked together.", "python_module": "nodes", "category": "loaders", "output_node": false, "output_tooltips": ["The modified diffusion model.", "The modified CLIP model."]},
"ControlNetLoader": {"input": {"required": {"control_net_name": [[]]}}, "input_order": {"required": ["control_net_name"]}, "output": ["CONTROL_NET"], "output_is_list": [false], "output_name": ["CONTROL_NET"], "name": "ControlNetLoader", "display_name": "Load ControlNet Model", "description": "", "python_module": "nodes", "category": "loaders", "output_node": false},
"ControlNetApply": {"input": {"required": {"conditioning": ["CONDITIONING"], "control_net": ["CONTROL_NET"], "image": ["IMAGE"], "strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}]}}, "input_order": {"required": ["conditioning", "control_net", "image", "strength"]}, "output": ["CONDITIONING"], "output_is_list": [false], "output_name": ["CONDITIONING"], "name": "ControlNetApply", "display_name": "Apply ControlNet (OLD)", "description": "", "python_module": "nodes", "category": "conditioning/controlnet", "output_node": false, "deprecated": true},
"ControlNetApplyAdvanced": {"input": {"required": {"positive": ["CONDITIONING"], "negative": ["CONDITIONING"], "control_net": ["CONTROL_NET"], "image": ["IMAGE"], "strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}], "start_percent": ["FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}], "end_percent": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}]}, "optional": {"vae": ["VAE"]}}, "input_order": {"required": ["positive", "negative", "control_net", "image", "strength", "start_percent", "end_percent"], "optional": ["vae"]}, "output": ["CONDITIONING", "CONDITIONING"], "output_is_list": [false, false], "output_name": ["positive", "negative"], "name": "ControlNetApplyAdvanced", "display_name": "Apply ControlNet", "description": "", "python_module": "nodes", "category": "conditioning/controlnet", "output_node": false},
"UpscaleModelLoader": {"input": {"required": {"model_name": ["COMBO", {"multiselect": false, "options": []}]}}, "input_order": {"required": ["model_name"]}, "output": ["UPSCALE_MODEL"], "output_is_list": [false], "output_name": ["UPSCALE_MODEL"], "output_tooltips": [null], "name": "UpscaleModelLoader", "display_name": "Load Upscale Model", "description": "", "python_module": "comfy_extras.nodes_upscale_model", "category": "loaders", "output_node": false, "deprecated": false, "experimental": false, "api_node": false},
"ImageUpscaleWithModel": {"input": {"required": {"upscale_model": ["UPSCALE_MODEL", {}], "image": ["IMAGE", {}]}}, "input_order": {"required": ["upscale_model", "image"]}, "output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "output_tooltips": [null], "name": "ImageUpscaleWithModel", "display_name": "Upscale Image (using Model)", "description": "", "python_module": "comfy_extras.nodes_upscale_model", "category": "image/upscaling", "output_node": false, "deprecated": false, "experimental": false, "api_node": false},
"ReActorFaceSwap": {"input": {"required": {"enabled": ["BOOLEAN", {"default": true, "label_off": "OFF", "label_on": "ON"}], "input_image": ["IMAGE"], "swap_model": [["inswapper_128.onnx"]], "facedetection": [["retinaface_resnet50", "retinaface_mobile0.25", "YOLOv5l", "YOLOv5n"]], "face_restore_model": [["none", "codeformer-v0.1.0.pth", "GFPGANv1.3.pth", "GFPGANv1.4.pth", "GPEN-BFR-512.onnx"]], "face_restore_visibility": ["FLOAT", {"default": 1, "min": 0.1, "max": 1, "step": 0.05}], "codeformer_weight": ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05}], "detect_gender_input": [["no", "female", "male"], {"default": "no"}], "detect_gender_source": [["no", "female", "male"], {"default": "no"}], "input_faces_index": ["STRING", {"default": "0"}], "source_faces_index": ["STRING", {"default": "0"}], "console_log_level": [[0, 1, 2], {"default": 1}]}, "optional": {"source_image": ["IMAGE"], "face_model": ["FACE_MODEL"], "face_boost": ["FACE_BOOST"]}, "hidden": {"faces_order": "FACES_ORDER"}}, "input_order": {"required": ["enabled", "input_image", "swap_model", "facedetection", "face_restore_model", "face_restore_visibility", "codeformer_weight", "detect_gender_input", "detect_gender_source", "input_faces_index", "source_faces_index", "console_log_level"], "optional": ["source_image", "face_model", "face_boost"], "hidden": ["faces_order"]}, "output": ["IMAGE", "FACE_MODEL"], "output_is_list": [false, false], "output_name": ["SWAPPED_IMAGE", "FACE_MODEL"], "name": "ReActorFaceSwap", "display_name": "ReActor 🌌 Fast Face Swap", "description": "", "python_module": "custom_nodes.comfyui-reactor-node", "category": "🌌 ReActor", "output_node": false}
}"#;
