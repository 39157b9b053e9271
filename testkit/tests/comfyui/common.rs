//! What the tests share: the fake as they start it, the captured txt2img graph in its textual
//! order, a websocket client, and HTTP helpers.

use std::time::Duration;

use artifacts::png;
use futures::StreamExt;
use serde_json::Value;
use testkit::DEFAULT_WAIT;
use testkit::comfyui::{FakeComfy, FakeComfyOptions};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CHECKPOINT: &str = "random_sd15.safetensors";

pub(crate) async fn fake() -> FakeComfy {
    FakeComfy::start_with(FakeComfyOptions {
        step_delay: Duration::from_millis(5),
        checkpoints: vec![CHECKPOINT.to_owned()],
        upscale_models: vec!["tiny_compact_x2.safetensors".to_owned()],
        ..FakeComfyOptions::default()
    })
    .await
}

/// The standard 7-node graph of `txt2img_nopreview.json`, key order included.
pub(crate) fn txt2img(seed: u64, steps: u32) -> Value {
    serde_json::from_str(&format!(
        r#"{{
        "4": {{"class_type": "CheckpointLoaderSimple", "inputs": {{"ckpt_name": "{CHECKPOINT}"}}}},
        "6": {{"class_type": "CLIPTextEncode", "inputs": {{"text": "a photo of a cat", "clip": ["4", 1]}}}},
        "7": {{"class_type": "CLIPTextEncode", "inputs": {{"text": "blurry", "clip": ["4", 1]}}}},
        "5": {{"class_type": "EmptyLatentImage", "inputs": {{"width": 64, "height": 64, "batch_size": 1}}}},
        "3": {{"class_type": "KSampler",
            "inputs": {{"seed": {seed}, "steps": {steps}, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
            "negative": ["7", 0], "latent_image": ["5", 0]}}}},
        "8": {{"class_type": "VAEDecode", "inputs": {{"samples": ["3", 0], "vae": ["4", 2]}}}},
        "9": {{"class_type": "SaveImage", "inputs": {{"filename_prefix": "cap_txt2img", "images": ["8", 0]}}}}
    }}"#
    ))
    .unwrap()
}

/// Posts a raw body (key order kept) to `/prompt`: `(status, body)`.
pub(crate) async fn post_prompt_raw(comfy: &FakeComfy, body: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/prompt", comfy.url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Submits `graph` (serialized in its textual order) for `client_id`.
pub(crate) async fn submit(
    comfy: &FakeComfy,
    graph_json: &str,
    client_id: Option<&str>,
) -> (u16, Value) {
    let body = match client_id {
        Some(client_id) => format!(r#"{{"prompt": {graph_json}, "client_id": "{client_id}"}}"#),
        None => format!(r#"{{"prompt": {graph_json}}}"#),
    };
    post_prompt_raw(comfy, body).await
}

pub(crate) fn txt2img_json(seed: u64, steps: u32) -> String {
    // `serde_json` sorts keys; rebuild the text in the capture's order.
    let graph = txt2img(seed, steps);
    let order = ["4", "6", "7", "5", "3", "8", "9"];
    let nodes: Vec<String> = order
        .iter()
        .map(|id| format!("\"{id}\": {}", node_json(&graph[*id])))
        .collect();
    format!("{{{}}}", nodes.join(", "))
}

fn node_json(node: &Value) -> String {
    let inputs_order: &[&str] = match node["class_type"].as_str().unwrap() {
        "KSampler" => &[
            "seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "denoise",
            "model",
            "positive",
            "negative",
            "latent_image",
        ],
        "CLIPTextEncode" => &["text", "clip"],
        "EmptyLatentImage" => &["width", "height", "batch_size"],
        "VAEDecode" => &["samples", "vae"],
        "SaveImage" => &["filename_prefix", "images"],
        _ => &["ckpt_name"],
    };
    let inputs: Vec<String> = inputs_order
        .iter()
        .map(|name| format!("\"{name}\": {}", node["inputs"][*name]))
        .collect();
    format!(
        r#"{{"class_type": {}, "inputs": {{{}}}}}"#,
        node["class_type"],
        inputs.join(", ")
    )
}

pub(crate) async fn connect(comfy: &FakeComfy, client_id: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{}/ws?clientId={client_id}", comfy.port());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = next_frame(&mut ws).await;
    assert_eq!(hello["type"], "status", "{hello}");
    assert_eq!(hello["data"]["sid"], client_id);
    ws
}

pub(crate) async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(DEFAULT_WAIT, ws.next())
            .await
            .expect("no websocket frame in time")
            .expect("websocket closed")
            .expect("websocket failed");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Binary(_) => panic!("a binary frame with previews off"),
            _ => {}
        }
    }
}

/// Frames up to and including `executing {node: null, prompt_id}`.
pub(crate) async fn frames_until_done(ws: &mut Ws, prompt_id: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(ws).await;
        let done = frame["type"] == "executing"
            && frame["data"]["node"].is_null()
            && frame["data"]["prompt_id"] == prompt_id;
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// `type`, `type:node` or `progress:node:value/max`, to compare orders readably.
pub(crate) fn label(frame: &Value) -> String {
    let kind = frame["type"].as_str().unwrap();
    let data = &frame["data"];
    match kind {
        "executing" if data["node"].is_null() => "executing:null".to_owned(),
        "executing" | "executed" => format!("{kind}:{}", data["node"].as_str().unwrap()),
        "progress" => format!(
            "progress:{}:{}/{}",
            data["node"].as_str().unwrap(),
            data["value"],
            data["max"]
        ),
        _ => kind.to_owned(),
    }
}

pub(crate) async fn get_json(comfy: &FakeComfy, path: &str) -> Value {
    reqwest::get(format!("{}{path}", comfy.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub(crate) async fn post_json(comfy: &FakeComfy, path: &str, body: Value) -> u16 {
    reqwest::Client::new()
        .post(format!("{}{path}", comfy.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A multipart upload of `bytes` as `filename`, with extra text fields.
pub(crate) async fn upload(
    comfy: &FakeComfy,
    filename: &str,
    bytes: &[u8],
    fields: &[(&str, &str)],
) -> (u16, Value) {
    let boundary = "----fake-comfy-test-boundary";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\nContent-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let response = reqwest::Client::new()
        .post(format!("{}/upload/image", comfy.url()))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) fn small_png(width: u32, height: u32) -> Vec<u8> {
    let rgb: Vec<u8> = (0..width * height * 3).map(|i| (i % 251) as u8).collect();
    png::encode_rgb(width, height, &rgb, &[])
}
