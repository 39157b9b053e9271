//! The ComfyUI backend, against ComfyUI's own HTTP and websocket API (as captured from 0.3.64 in
//! `shared/comfyui-0.3.64-captures/`).
//!
//! One run: open `/ws?clientId=<fresh uuid>` first (frames go only to the submitting client, and
//! a fresh id per connection avoids the reconnect quirk), upload the inputs, `POST /prompt`, then
//! follow the socket — `progress` for our prompt reports steps, `executed` names outputs,
//! `execution_error` / `execution_interrupted` end it badly, and `executing` with `node: null`
//! is always the last frame. `GET /history/{id}` then confirms the outputs, which are
//! downloaded with `GET /view`. A cancel deletes a queued prompt (`POST /queue`) or interrupts a
//! running one (`POST /interrupt`).

use std::collections::HashMap;
use std::error::Error as _;
use std::time::Duration;

use async_trait::async_trait;
use common::Backoff;
use futures::StreamExt;
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::backend::{
    Backend, BackendError, DeviceInfo, InputImage, OutputImage, ProgressFn, RenderOutput,
    RenderRequest,
};
use crate::workflows;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest output image taken from ComfyUI by default (a 4× upscale of a 2048² image is
/// ~50 MiB as PNG): anything larger is refused while it streams in, never held whole.
pub const MAX_OUTPUT_BYTES: usize = 128 << 20;
/// How long a cancelled run waits for ComfyUI to confirm the interrupt.
const CANCEL_GRACE: Duration = Duration::from_secs(10);
/// After this long without a frame, history is asked whether the prompt ended unseen.
const SILENCE_PROBE: Duration = Duration::from_secs(30);
/// How long history may lag the end frame before the socket's outputs are used instead.
const HISTORY_GRACE: Duration = Duration::from_secs(3);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A ComfyUI server, by its base URL (`http://127.0.0.1:8188`).
#[derive(Debug, Clone)]
pub struct ComfyUi {
    /// Always ends with `/`, so endpoints join onto any path prefix.
    base: Url,
    client: reqwest::Client,
    /// The largest output image taken ([`MAX_OUTPUT_BYTES`] unless set).
    max_output_bytes: usize,
}

/// A file ComfyUI names in `executed` frames and history outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileRef {
    filename: String,
    subfolder: String,
    kind: String,
}

/// Where a prompt stands in ComfyUI's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueState {
    Running,
    Pending,
    Absent,
}

impl ComfyUi {
    pub fn new(base_url: &str) -> Result<Self, BackendError> {
        let mut base = Url::parse(base_url).map_err(|err| {
            BackendError::Unavailable(format!("invalid ComfyUI url {base_url:?}: {err}"))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(BackendError::Unavailable(format!(
                "ComfyUI url must be http or https, got {base_url:?}"
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.set_query(None);
        base.set_fragment(None);
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|err| {
                BackendError::Unavailable(format!("failed to build http client: {}", chain(&err)))
            })?;
        Ok(ComfyUi {
            base,
            client,
            max_output_bytes: MAX_OUTPUT_BYTES,
        })
    }

    /// Takes output images of at most `bytes` (a larger one fails its job, unread).
    pub fn with_max_output(mut self, bytes: usize) -> Self {
        self.max_output_bytes = bytes;
        self
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn endpoint(&self, path: &str) -> Result<Url, BackendError> {
        self.base.join(path).map_err(|err| {
            BackendError::Unavailable(format!("invalid ComfyUI endpoint {path}: {err}"))
        })
    }

    /// Opens the websocket and waits for ComfyUI's first `status` frame, which it sends once the
    /// socket is registered under `client_id` (so no frame for a prompt submitted after this can
    /// be missed).
    async fn connect(&self, client_id: &str) -> Result<Socket, BackendError> {
        let mut url = self.endpoint("ws")?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|()| {
            BackendError::Unavailable(format!("cannot make a websocket url from {}", self.base))
        })?;
        url.query_pairs_mut().append_pair("clientId", client_id);
        let connecting = tokio_tungstenite::connect_async(url.as_str());
        let (mut socket, _) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(BackendError::Unavailable(format!(
                    "timed out opening the ComfyUI websocket at {url}"
                )));
            }
            Ok(Err(err)) => {
                return Err(BackendError::Unavailable(format!(
                    "failed to open the ComfyUI websocket at {url}: {err}"
                )));
            }
            Ok(Ok(connected)) => connected,
        };
        let greeting = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(_))) => return Ok(()),
                    Some(Ok(Message::Close(frame))) => {
                        return Err(format!("closed: {frame:?}"));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => return Err(err.to_string()),
                    None => return Err("closed".to_owned()),
                }
            }
        })
        .await;
        match greeting {
            Ok(Ok(())) => Ok(socket),
            Ok(Err(why)) => Err(BackendError::Unavailable(format!(
                "ComfyUI websocket failed before its first frame: {why}"
            ))),
            // Real ComfyUI always greets; go on rather than fail a server that does not.
            Err(_) => {
                tracing::warn!(url = %url, "ComfyUI websocket sent no status frame; going on");
                Ok(socket)
            }
        }
    }

    /// Uploads every input as `<job id>-<param>.png`, returning param → the name to give
    /// `LoadImage` (ComfyUI's answer, with its subfolder when it gives one).
    async fn upload_inputs(
        &self,
        request: &RenderRequest,
    ) -> Result<HashMap<String, String>, BackendError> {
        let mut uploaded = HashMap::new();
        for input in &request.inputs {
            let name = self.upload(&request.job_id, input).await?;
            uploaded.insert(input.param.clone(), name);
        }
        Ok(uploaded)
    }

    async fn upload(&self, job_id: &str, input: &InputImage) -> Result<String, BackendError> {
        let file_name = workflows::upload_name(job_id, &input.param);
        let mime = if input.bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            "image/jpeg"
        } else {
            "image/png"
        };
        let part = reqwest::multipart::Part::bytes(input.bytes.to_vec())
            .file_name(file_name.clone())
            .mime_str(mime)
            .map_err(|err| BackendError::Unavailable(format!("bad mime type: {err}")))?;
        let form = reqwest::multipart::Form::new()
            .part("image", part)
            .text("type", "input")
            .text("overwrite", "true");
        let response = self
            .client
            .post(self.endpoint("upload/image")?)
            .multipart(form)
            .timeout(UPLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|err| unreachable_server("upload", &err))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let message = format!(
                "ComfyUI refused the upload of {} ({status}): {}",
                input.param,
                body.trim()
            );
            return Err(if status.is_client_error() {
                BackendError::Rejected {
                    message,
                    details: Value::Null,
                }
            } else {
                BackendError::Unavailable(message)
            });
        }
        let answer: Value = response
            .json()
            .await
            .map_err(|err| unreachable_server("upload", &err))?;
        let name = answer["name"].as_str().unwrap_or(&file_name);
        Ok(match answer["subfolder"].as_str() {
            Some(subfolder) if !subfolder.is_empty() => format!("{subfolder}/{name}"),
            _ => name.to_owned(),
        })
    }

    /// `POST /prompt`; the prompt id on success.
    async fn submit(&self, graph: &Value, client_id: &str) -> Result<String, BackendError> {
        let response = self
            .client
            .post(self.endpoint("prompt")?)
            .json(&json!({ "prompt": graph, "client_id": client_id }))
            .send()
            .await
            .map_err(|err| unreachable_server("prompt submission", &err))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| unreachable_server("prompt submission", &err))?;
        let answer: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            let answer = answer.unwrap_or_default();
            let Some(prompt_id) = answer["prompt_id"].as_str() else {
                return Err(BackendError::Unavailable(format!(
                    "ComfyUI accepted the prompt without a prompt_id: {}",
                    String::from_utf8_lossy(&body)
                )));
            };
            if answer["node_errors"]
                .as_object()
                .is_some_and(|errors| !errors.is_empty())
            {
                tracing::warn!(prompt_id, node_errors = %answer["node_errors"], "ComfyUI accepted the prompt with node errors");
            }
            return Ok(prompt_id.to_owned());
        }
        if status.is_server_error() {
            return Err(BackendError::Unavailable(format!(
                "ComfyUI failed to take the prompt ({status}): {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        Err(match answer {
            Some(answer) if status == StatusCode::BAD_REQUEST => BackendError::Rejected {
                message: rejection_message(&answer),
                details: answer
                    .get("node_errors")
                    .cloned()
                    .unwrap_or_else(|| json!({})),
            },
            _ => BackendError::Rejected {
                message: format!(
                    "ComfyUI refused the prompt ({status}): {}",
                    String::from_utf8_lossy(&body).trim()
                ),
                details: Value::Null,
            },
        })
    }

    /// Reads the socket until our prompt ends; the outputs its `executed` frames named.
    async fn follow(
        &self,
        socket: &mut Socket,
        prompt_id: &str,
        progress: ProgressFn<'_>,
        cancel: &CancellationToken,
    ) -> Result<Vec<FileRef>, BackendError> {
        let mut started = false;
        let mut outputs = Vec::new();
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    return Err(self.cancel(socket, prompt_id, started).await);
                }
                next = tokio::time::timeout(SILENCE_PROBE, socket.next()) => next,
            };
            let text = match next {
                Err(_) => {
                    // A long step, or an end we never heard of: history knows.
                    if self.history(prompt_id).await?.is_some() {
                        return Ok(outputs);
                    }
                    continue;
                }
                Ok(None) => return Err(connection_lost("the websocket closed")),
                Ok(Some(Err(err))) => return Err(connection_lost(&err.to_string())),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    let why = frame.map_or_else(
                        || "the websocket closed".to_owned(),
                        |frame| format!("the websocket closed ({} {})", frame.code, frame.reason),
                    );
                    return Err(connection_lost(&why));
                }
                Ok(Some(Ok(Message::Text(text)))) => text,
                // Previews (binary) and pings.
                Ok(Some(Ok(_))) => continue,
            };
            let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            let data = &frame["data"];
            if data["prompt_id"].as_str() != Some(prompt_id) {
                continue;
            }
            // ComfyUI begins our prompt (it may have waited behind others in its own queue):
            // a progress of 0 says so, before any step.
            let begins = !started
                && matches!(
                    frame["type"].as_str(),
                    Some("execution_start" | "execution_cached" | "executing" | "progress")
                )
                && !(frame["type"] == "executing" && data["node"].is_null());
            if begins {
                progress(0, 1);
            }
            match frame["type"].as_str().unwrap_or_default() {
                "execution_start" | "execution_cached" => started = true,
                "executing" => {
                    if data["node"].is_null() {
                        return Ok(outputs);
                    }
                    started = true;
                }
                "progress" => {
                    started = true;
                    if let (Some(value), Some(max)) = (count(&data["value"]), count(&data["max"])) {
                        progress(value, max);
                    }
                }
                "executed" => outputs.extend(images(&data["output"])),
                "execution_error" => return Err(execution_error(data)),
                "execution_interrupted" => return Err(BackendError::Interrupted),
                _ => {}
            }
        }
    }

    /// Stops our prompt: out of the queue if it is still pending, interrupted if it runs.
    async fn cancel(&self, socket: &mut Socket, prompt_id: &str, started: bool) -> BackendError {
        let mut running = started;
        if !started {
            if let Err(err) = self
                .post_json("queue", &json!({ "delete": [prompt_id] }))
                .await
            {
                tracing::warn!(prompt_id, error = %err, "failed to delete a queued ComfyUI prompt");
            }
            // It may have started between the last frame and the delete.
            running = match self.queue_state(prompt_id).await {
                Ok(QueueState::Running) => true,
                Ok(QueueState::Absent) => false,
                Ok(QueueState::Pending) => {
                    // The delete did not take; one more try, then it is ComfyUI's to drop.
                    if let Err(err) = self
                        .post_json("queue", &json!({ "delete": [prompt_id] }))
                        .await
                    {
                        tracing::warn!(prompt_id, error = %err, "failed to delete a queued ComfyUI prompt");
                    }
                    false
                }
                Err(err) => {
                    tracing::warn!(prompt_id, error = %err, "failed to read the ComfyUI queue; interrupting to be sure");
                    true
                }
            };
        }
        if running {
            if let Err(err) = self
                .post_json("interrupt", &json!({ "prompt_id": prompt_id }))
                .await
            {
                tracing::warn!(prompt_id, error = %err, "failed to interrupt a ComfyUI prompt");
                return BackendError::Interrupted;
            }
            // Wait (bounded) until ComfyUI confirms, so the GPU is free when we return.
            let confirmed = tokio::time::timeout(CANCEL_GRACE, async {
                while let Some(Ok(message)) = socket.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    let data = &frame["data"];
                    if data["prompt_id"].as_str() != Some(prompt_id) {
                        continue;
                    }
                    match frame["type"].as_str().unwrap_or_default() {
                        "execution_interrupted" | "execution_error" | "execution_success" => {
                            return;
                        }
                        "executing" if data["node"].is_null() => return,
                        _ => {}
                    }
                }
            })
            .await;
            if confirmed.is_err() {
                tracing::warn!(prompt_id, "ComfyUI did not confirm the interrupt in time");
            }
        }
        BackendError::Interrupted
    }

    async fn post_json(&self, path: &str, body: &Value) -> Result<(), BackendError> {
        let response = self
            .client
            .post(self.endpoint(path)?)
            .json(body)
            .send()
            .await
            .map_err(|err| unreachable_server(path, &err))?;
        if !response.status().is_success() {
            return Err(BackendError::Unavailable(format!(
                "ComfyUI answered {} to POST /{path}",
                response.status()
            )));
        }
        Ok(())
    }

    async fn get_json(&self, url: Url, what: &str) -> Result<Value, BackendError> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|err| unreachable_server(what, &err))?;
        let status = response.status();
        if !status.is_success() {
            return Err(BackendError::Unavailable(format!(
                "ComfyUI answered {status} to {what}"
            )));
        }
        response
            .json()
            .await
            .map_err(|err| unreachable_server(what, &err))
    }

    async fn queue_state(&self, prompt_id: &str) -> Result<QueueState, BackendError> {
        let queue = self.get_json(self.endpoint("queue")?, "the queue").await?;
        let holds = |list: &Value| {
            list.as_array()
                .is_some_and(|items| items.iter().any(|item| item[1].as_str() == Some(prompt_id)))
        };
        Ok(if holds(&queue["queue_running"]) {
            QueueState::Running
        } else if holds(&queue["queue_pending"]) {
            QueueState::Pending
        } else {
            QueueState::Absent
        })
    }

    /// The prompt's history entry, or `None` while it is queued or running (ComfyUI says `{}`).
    async fn history(&self, prompt_id: &str) -> Result<Option<Value>, BackendError> {
        let mut url = self.endpoint("history/")?;
        url.path_segments_mut()
            .map_err(|()| BackendError::Unavailable("ComfyUI url cannot take a path".to_owned()))?
            .pop_if_empty()
            .push(prompt_id);
        let mut history = self.get_json(url, "history").await?;
        Ok(history.get_mut(prompt_id).map(Value::take))
    }

    /// The outputs of a prompt whose end frame arrived, from history (authoritative), which
    /// also tells an error or interrupt the socket may not have shown.
    async fn confirm(
        &self,
        prompt_id: &str,
        seen: Vec<FileRef>,
    ) -> Result<Vec<FileRef>, BackendError> {
        let deadline = tokio::time::Instant::now() + HISTORY_GRACE;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        let entry = loop {
            if let Some(entry) = self.history(prompt_id).await? {
                break entry;
            }
            if tokio::time::Instant::now() >= deadline {
                if seen.is_empty() {
                    return Err(BackendError::Unavailable(format!(
                        "ComfyUI ended prompt {prompt_id} but has no history of it"
                    )));
                }
                tracing::warn!(
                    prompt_id,
                    "ComfyUI has no history of a finished prompt; using the websocket's outputs"
                );
                return Ok(seen);
            }
            backoff.sleep().await;
        };
        if let Some(messages) = entry["status"]["messages"].as_array() {
            for message in messages {
                match message[0].as_str() {
                    Some("execution_error") => return Err(execution_error(&message[1])),
                    Some("execution_interrupted") => return Err(BackendError::Interrupted),
                    _ => {}
                }
            }
        }
        let mut outputs = Vec::new();
        if let Some(nodes) = entry["outputs"].as_object() {
            for output in nodes.values() {
                outputs.extend(images(output));
            }
        }
        if outputs.is_empty() {
            return Err(BackendError::Execution {
                node_type: "SaveImage".to_owned(),
                message: format!("prompt {prompt_id} finished without saving an image"),
            });
        }
        Ok(outputs)
    }

    async fn download(&self, file: &FileRef) -> Result<OutputImage, BackendError> {
        let mut url = self.endpoint("view")?;
        url.query_pairs_mut()
            .append_pair("filename", &file.filename)
            .append_pair("subfolder", &file.subfolder)
            .append_pair("type", &file.kind);
        let what = format!("the download of {}", file.filename);
        let response = self
            .client
            .get(url)
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|err| unreachable_server(&what, &err))?;
        let status = response.status();
        if !status.is_success() {
            return Err(BackendError::Unavailable(format!(
                "ComfyUI answered {status} to {what}"
            )));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("image/png")
            .to_owned();
        let too_large = || BackendError::Execution {
            node_type: "SaveImage".to_owned(),
            message: format!(
                "output {} is larger than the {} bytes a worker takes",
                file.filename, self.max_output_bytes
            ),
        };
        if response
            .content_length()
            .is_some_and(|length| length > self.max_output_bytes as u64)
        {
            return Err(too_large());
        }
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| unreachable_server(&what, &err))?
        {
            if bytes.len() + chunk.len() > self.max_output_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(OutputImage {
            filename: file.filename.clone(),
            content_type,
            bytes: bytes.into(),
        })
    }

    async fn run_prompt(
        &self,
        socket: &mut Socket,
        client_id: &str,
        request: &RenderRequest,
        progress: ProgressFn<'_>,
        cancel: &CancellationToken,
    ) -> Result<RenderOutput, BackendError> {
        let uploaded = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(BackendError::Interrupted),
            uploaded = self.upload_inputs(request) => uploaded?,
        };
        let prefix = workflows::filename_prefix(&request.job_id);
        let graph = workflows::build(request.mode, &request.params, &uploaded, &prefix);
        let workflow_hash = workflows::workflow_hash(&graph);
        if cancel.is_cancelled() {
            return Err(BackendError::Interrupted);
        }
        // Not raced against the cancel: once sent, the prompt id is what a cancel needs.
        let prompt_id = self.submit(&graph, client_id).await?;
        tracing::debug!(job_id = %request.job_id, prompt_id, "ComfyUI prompt queued");
        let seen = self.follow(socket, &prompt_id, progress, cancel).await?;
        let files = self.confirm(&prompt_id, seen).await?;
        let mut images = Vec::with_capacity(files.len());
        for file in &files {
            let image = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(BackendError::Interrupted),
                image = self.download(file) => image?,
            };
            images.push(image);
        }
        Ok(RenderOutput {
            images,
            workflow_hash,
            backend_ref: Some(prompt_id),
        })
    }
}

#[async_trait]
impl Backend for ComfyUi {
    fn name(&self) -> &'static str {
        "comfyui"
    }

    async fn run(
        &self,
        request: &RenderRequest,
        progress: ProgressFn<'_>,
        cancel: CancellationToken,
    ) -> Result<RenderOutput, BackendError> {
        for param in request.mode.required_images() {
            if !request.inputs.iter().any(|input| input.param == *param) {
                return Err(BackendError::Rejected {
                    message: format!("{} needs {param}", request.mode.as_str()),
                    details: Value::Null,
                });
            }
        }
        let client_id = uuid::Uuid::new_v4().to_string();
        let mut socket = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(BackendError::Interrupted),
            socket = self.connect(&client_id) => socket?,
        };
        let result = self
            .run_prompt(&mut socket, &client_id, request, progress, &cancel)
            .await;
        // Best effort: the server forgets the socket either way.
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
        result
    }

    async fn health(&self) -> Result<DeviceInfo, BackendError> {
        let response = self
            .client
            .get(self.endpoint("system_stats")?)
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await
            .map_err(|err| unreachable_server("system_stats", &err))?;
        let status = response.status();
        if !status.is_success() {
            return Err(BackendError::Unavailable(format!(
                "ComfyUI answered {status} to system_stats"
            )));
        }
        let stats: Value = response
            .json()
            .await
            .map_err(|err| unreachable_server("system_stats", &err))?;
        let device = &stats["devices"][0];
        let mib = |field: &str| {
            let bytes = device[field]
                .as_u64()
                .or_else(|| device[field].as_f64().map(|bytes| bytes.max(0.0) as u64));
            bytes.map(|bytes| bytes / (1024 * 1024))
        };
        match (mib("vram_total"), mib("vram_free")) {
            (Some(vram_total_mib), Some(vram_free_mib)) => Ok(DeviceInfo {
                vram_total_mib,
                vram_free_mib,
            }),
            _ => Err(BackendError::Unavailable(format!(
                "ComfyUI system_stats names no device: {stats}"
            ))),
        }
    }
}

/// A reqwest error with its sources, as one line.
fn chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn unreachable_server(what: &str, err: &reqwest::Error) -> BackendError {
    BackendError::Unavailable(format!("ComfyUI {what} failed: {}", chain(err)))
}

fn connection_lost(why: &str) -> BackendError {
    BackendError::Unavailable(format!("connection to ComfyUI lost mid-job: {why}"))
}

fn execution_error(data: &Value) -> BackendError {
    BackendError::Execution {
        node_type: data["node_type"].as_str().unwrap_or("unknown").to_owned(),
        message: data["exception_message"]
            .as_str()
            .unwrap_or("no message")
            .trim()
            .to_owned(),
    }
}

/// A progress count (an integer; tolerated as a float).
fn count(value: &Value) -> Option<u32> {
    value
        .as_u64()
        .or_else(|| value.as_f64().map(|float| float.max(0.0).round() as u64))
        .map(|count| u32::try_from(count).unwrap_or(u32::MAX))
}

/// The saved files an output names: images (`{"images": [{filename, subfolder, type}]}`) and
/// VideoHelperSuite's clips (`{"gifs": [...]}`, the same shape plus `format`); previews
/// (`type: "temp"`) are not results.
fn images(output: &Value) -> Vec<FileRef> {
    ["images", "gifs"]
        .iter()
        .filter_map(|key| output[*key].as_array())
        .flatten()
        .filter_map(|image| {
            let kind = image["type"].as_str().unwrap_or("output");
            if kind != "output" {
                return None;
            }
            Some(FileRef {
                filename: image["filename"].as_str()?.to_owned(),
                subfolder: image["subfolder"].as_str().unwrap_or_default().to_owned(),
                kind: kind.to_owned(),
            })
        })
        .collect()
}

/// ComfyUI's 400 body as one line: the error, then each node's errors.
fn rejection_message(answer: &Value) -> String {
    let error = &answer["error"];
    let mut message = match error {
        Value::String(text) => text.clone(),
        _ => error["message"]
            .as_str()
            .unwrap_or("ComfyUI rejected the prompt")
            .to_owned(),
    };
    if let Some(details) = error["details"].as_str().filter(|d| !d.is_empty()) {
        message.push_str(&format!(" ({details})"));
    }
    if let Some(nodes) = answer["node_errors"].as_object() {
        for (node_id, node) in nodes {
            let class_type = node["class_type"].as_str().unwrap_or("node");
            for error in node["errors"].as_array().into_iter().flatten() {
                let text = error["message"].as_str().unwrap_or("invalid");
                match error["details"].as_str().filter(|d| !d.is_empty()) {
                    Some(details) => {
                        message.push_str(&format!("; {class_type} #{node_id}: {text}: {details}"))
                    }
                    None => message.push_str(&format!("; {class_type} #{node_id}: {text}")),
                }
            }
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_takes_a_trailing_slash_and_endpoints_join_under_it() {
        let comfy = ComfyUi::new("http://127.0.0.1:8188").unwrap();
        assert_eq!(
            comfy.endpoint("prompt").unwrap().as_str(),
            "http://127.0.0.1:8188/prompt"
        );
        let proxied = ComfyUi::new("https://gpu.example/comfy?x=1").unwrap();
        assert_eq!(
            proxied.endpoint("upload/image").unwrap().as_str(),
            "https://gpu.example/comfy/upload/image"
        );
        assert!(ComfyUi::new("not a url").is_err());
        assert!(ComfyUi::new("ftp://host/").is_err());
        assert_eq!(comfy.name(), "comfyui");
    }

    #[test]
    fn rejection_message_names_each_node_error() {
        // The 400 ComfyUI 0.3.64 gave for a checkpoint not in its list (invalid.json).
        let answer = json!({
            "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
            "node_errors": {"4": {"errors": [{"type": "value_not_in_list", "message": "Value not in list", "details": "ckpt_name: 'nope.safetensors' not in ['random_sd15.safetensors']", "extra_info": {}}], "dependent_outputs": ["9"], "class_type": "CheckpointLoaderSimple"}}
        });
        assert_eq!(
            rejection_message(&answer),
            "Prompt outputs failed validation; CheckpointLoaderSimple #4: Value not in list: \
             ckpt_name: 'nope.safetensors' not in ['random_sd15.safetensors']"
        );
        let unknown = json!({
            "error": {"type": "invalid_prompt", "message": "Cannot execute because node NoSuchNode does not exist.", "details": "Node ID '#99'", "extra_info": {}},
            "node_errors": {}
        });
        assert_eq!(
            rejection_message(&unknown),
            "Cannot execute because node NoSuchNode does not exist. (Node ID '#99')"
        );
    }

    #[test]
    fn execution_error_takes_the_node_type_and_exception_message() {
        // From exec_error.json.
        let data = json!({"prompt_id": "d12e", "node_id": "1", "node_type": "LoadImage", "exception_message": "cannot identify image file 'ComfyUI/input/broken.png'\n", "exception_type": "PIL.UnidentifiedImageError"});
        match execution_error(&data) {
            BackendError::Execution { node_type, message } => {
                assert_eq!(node_type, "LoadImage");
                assert_eq!(
                    message,
                    "cannot identify image file 'ComfyUI/input/broken.png'"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn output_images_skip_previews() {
        let output = json!({"images": [
            {"filename": "nebula-j_00001_.png", "subfolder": "", "type": "output"},
            {"filename": "ComfyUI_temp_x_00001_.png", "subfolder": "", "type": "temp"},
            {"filename": "sub_00001_.png", "subfolder": "cap_scale", "type": "output"}
        ]});
        let files = images(&output);
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].subfolder, "cap_scale");
        assert_eq!(count(&json!(3)), Some(3));
        assert_eq!(count(&json!(2.0)), Some(2));
        assert_eq!(count(&json!(null)), None);
    }

    #[test]
    fn a_clip_is_read_from_the_gifs_entry() {
        let output = json!({"gifs": [
            {"filename": "nebula-j_00001.mp4", "subfolder": "", "type": "output", "format": "video/h264-mp4", "frame_rate": 8.0},
            {"filename": "nebula-j_00001.png", "subfolder": "", "type": "temp", "format": "image/png"}
        ]});
        let files = images(&output);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].filename, "nebula-j_00001.mp4");
    }
}
