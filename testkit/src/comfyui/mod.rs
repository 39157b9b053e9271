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
//! ImageUpscaleWithModel, the ReActorFaceSwap custom node, and for clips AnimateDiff-Evolved's
//! ADE_StandardUniformContextOptions and ADE_AnimateDiffLoaderGen1 with VideoHelperSuite's
//! VHS_VideoCombine (a real H.264 MP4 of the batch's frames, reported under `gifs`). LoRA,
//! ControlNet, VAE and motion module names pass until [`FakeComfy::set_models`] says which
//! exist.
//!
//! The parts: `server` answers HTTP and websockets (on a listener whose connections die with
//! the server), `io` parses what requests carry and names files, `graph` keeps a prompt in the
//! order it was sent, `validate` is `execution.validate_prompt` (on the Python semantics of
//! `python`), `execute` is the prompt worker and executor, `nodes` what each node class computes
//! and saves, `cache` the output cache; `object_info.json` describes the node classes.

mod cache;
mod execute;
mod graph;
mod io;
mod nodes;
mod python;
mod server;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use cache::CacheEntry;
use graph::Graph;
use io::{Folder, annotated_filepath, join_subfolder, normalize_subfolder};
use python::py_str;

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
    pub async fn start_on(port: u16, options: FakeComfyOptions) -> std::io::Result<FakeComfy> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::new(options));
        let server = tokio::spawn(server::serve(listener, shared.clone()));
        let worker = tokio::spawn(execute::prompt_worker(shared.clone()));
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

    /// The next `count` `/view` requests answer 500 (a server in trouble serving a file): the
    /// run that wanted the file cannot have it, and may have it when it asks again.
    pub fn fail_views(&self, count: u32) {
        self.shared.state().failing_views = count;
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

/// The known node classes, as `GET /object_info` of ComfyUI 0.3.64 describes them (model and
/// input-file lists are filled in at run time), plus the ReActor custom node.
const OBJECT_INFO: &str = include_str!("object_info.json");

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
        let definitions = match serde_json::from_str(OBJECT_INFO) {
            Ok(Value::Object(map)) => map,
            _ => panic!("object_info.json is not a JSON object"),
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
    /// `/view` requests still to answer 500 ([`FakeComfy::fail_views`]).
    failing_views: u32,
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

/// Combo inputs listing the files of a model folder: `(class, input, folder)`.
const MODEL_INPUTS: [(&str, &str, &str); 5] = [
    ("CheckpointLoaderSimple", "ckpt_name", "checkpoints"),
    ("LoraLoader", "lora_name", "loras"),
    ("ControlNetLoader", "control_net_name", "controlnet"),
    ("VAELoader", "vae_name", "vae"),
    (
        "ADE_AnimateDiffLoaderGen1",
        "model_name",
        "animatediff_models",
    ),
];
