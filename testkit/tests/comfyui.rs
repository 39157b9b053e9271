//! The fake ComfyUI against what the captures of ComfyUI 0.3.64 show: frames and their order,
//! who receives them, the 400 bodies, execution errors, interrupts, history, files, and death.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use testkit::comfyui::{FakeComfy, FakeComfyOptions, png};
use testkit::{DEFAULT_WAIT, wait_until};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CHECKPOINT: &str = "random_sd15.safetensors";

async fn fake() -> FakeComfy {
    FakeComfy::start_with(FakeComfyOptions {
        step_delay: Duration::from_millis(5),
        checkpoints: vec![CHECKPOINT.to_owned()],
        upscale_models: vec!["tiny_compact_x2.safetensors".to_owned()],
        ..FakeComfyOptions::default()
    })
    .await
}

/// The standard 7-node graph of `txt2img_nopreview.json`, key order included.
fn txt2img(seed: u64, steps: u32) -> Value {
    serde_json::from_str(&format!(
        r#"{{
        "4": {{"class_type": "CheckpointLoaderSimple", "inputs": {{"ckpt_name": "{CHECKPOINT}"}}}},
        "6": {{"class_type": "CLIPTextEncode", "inputs": {{"text": "a photo of a cat", "clip": ["4", 1]}}}},
        "7": {{"class_type": "CLIPTextEncode", "inputs": {{"text": "blurry", "clip": ["4", 1]}}}},
        "5": {{"class_type": "EmptyLatentImage", "inputs": {{"width": 64, "height": 64, "batch_size": 1}}}},
        "3": {{"class_type": "KSampler", "inputs": {{"seed": {seed}, "steps": {steps}, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}}},
        "8": {{"class_type": "VAEDecode", "inputs": {{"samples": ["3", 0], "vae": ["4", 2]}}}},
        "9": {{"class_type": "SaveImage", "inputs": {{"filename_prefix": "cap_txt2img", "images": ["8", 0]}}}}
    }}"#
    ))
    .unwrap()
}

/// Posts a raw body (key order kept) to `/prompt`: `(status, body)`.
async fn post_prompt_raw(comfy: &FakeComfy, body: String) -> (u16, Value) {
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
async fn submit(comfy: &FakeComfy, graph_json: &str, client_id: Option<&str>) -> (u16, Value) {
    let body = match client_id {
        Some(client_id) => format!(r#"{{"prompt": {graph_json}, "client_id": "{client_id}"}}"#),
        None => format!(r#"{{"prompt": {graph_json}}}"#),
    };
    post_prompt_raw(comfy, body).await
}

fn txt2img_json(seed: u64, steps: u32) -> String {
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

async fn connect(comfy: &FakeComfy, client_id: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{}/ws?clientId={client_id}", comfy.port());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = next_frame(&mut ws).await;
    assert_eq!(hello["type"], "status", "{hello}");
    assert_eq!(hello["data"]["sid"], client_id);
    ws
}

async fn next_frame(ws: &mut Ws) -> Value {
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
async fn frames_until_done(ws: &mut Ws, prompt_id: &str) -> Vec<Value> {
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
fn label(frame: &Value) -> String {
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

async fn get_json(comfy: &FakeComfy, path: &str) -> Value {
    reqwest::get(format!("{}{path}", comfy.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn post_json(comfy: &FakeComfy, path: &str, body: Value) -> u16 {
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
async fn upload(
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

fn small_png(width: u32, height: u32) -> Vec<u8> {
    let rgb: Vec<u8> = (0..width * height * 3).map(|i| (i % 251) as u8).collect();
    png::encode_rgb(width, height, &rgb, &[])
}

#[tokio::test]
async fn txt2img_sends_the_captured_frames_in_order_and_saves_a_png() {
    let comfy = fake().await;
    let mut submitter = connect(&comfy, "cap-t2i").await;
    let mut observer = connect(&comfy, "cap-obs").await;

    let (status, accepted) = submit(&comfy, &txt2img_json(5665, 3), Some("cap-t2i")).await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["number"], 0);
    assert_eq!(accepted["node_errors"], json!({}));
    let prompt_id = accepted["prompt_id"].as_str().unwrap().to_owned();

    let frames = frames_until_done(&mut submitter, &prompt_id).await;
    let labels: Vec<String> = frames.iter().map(label).collect();
    let expected = [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "progress_state",
        "executing:4",
        "progress_state",
        "progress_state",
        "executing:5",
        "progress_state",
        "progress_state",
        "executing:7",
        "progress_state",
        "progress_state",
        "executing:6",
        "progress_state",
        "progress_state",
        "executing:3",
        "progress_state",
        "progress:3:1/3",
        "progress_state",
        "progress:3:2/3",
        "progress_state",
        "progress:3:3/3",
        "progress_state",
        "progress_state",
        "executing:8",
        "progress_state",
        "progress_state",
        "executing:9",
        "executed:9",
        "progress_state",
        "execution_success",
        "status",
        "executing:null",
    ];
    assert_eq!(labels, expected);
    assert_eq!(
        frames[0]["data"]["status"]["exec_info"]["queue_remaining"],
        1
    );
    assert_eq!(
        frames[33]["data"]["status"]["exec_info"]["queue_remaining"],
        0
    );
    assert_eq!(frames[3]["data"]["nodes"], json!([]));
    let executing = &frames[5]["data"];
    assert_eq!(
        executing,
        &json!({"node": "4", "display_node": "4", "prompt_id": prompt_id})
    );
    // progress_state: floats for plain nodes, the sampler's ints once it steps.
    let last_state = &frames[31]["data"]["nodes"];
    assert_eq!(last_state["4"]["value"], json!(1.0));
    assert_eq!(last_state["4"]["state"], "finished");
    assert_eq!(last_state["3"]["value"], json!(3));
    assert_eq!(last_state["9"]["real_node_id"], "9");
    assert!(last_state["9"]["parent_node_id"].is_null());
    let output = json!({"images": [{"filename": "cap_txt2img_00001_.png", "subfolder": "", "type": "output"}]});
    assert_eq!(frames[30]["data"]["output"], output);

    // The observer only sees the queue move.
    let mut observed = Vec::new();
    loop {
        let frame = next_frame(&mut observer).await;
        let idle = frame["data"]["status"]["exec_info"]["queue_remaining"] == 0;
        observed.push(label(&frame));
        if idle {
            break;
        }
    }
    assert_eq!(observed, ["status", "status", "status"]);

    // History, then the image through /view.
    let history = get_json(&comfy, &format!("/history/{prompt_id}")).await;
    let entry = &history[&prompt_id];
    assert_eq!(entry["prompt"][0], 0);
    assert_eq!(entry["prompt"][1], prompt_id);
    assert_eq!(entry["prompt"][2], txt2img(5665, 3));
    assert_eq!(entry["prompt"][3], json!({"client_id": "cap-t2i"}));
    assert_eq!(entry["prompt"][4], json!(["9"]));
    assert_eq!(entry["outputs"]["9"], output);
    assert_eq!(entry["status"]["status_str"], "success");
    assert_eq!(entry["status"]["completed"], true);
    let messages: Vec<&str> = entry["status"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message[0].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        ["execution_start", "execution_cached", "execution_success"]
    );
    assert_eq!(
        entry["meta"]["9"],
        json!({"node_id": "9", "display_node": "9", "parent_node": null, "real_node_id": "9"})
    );

    let response = reqwest::get(format!(
        "{}/view?filename=cap_txt2img_00001_.png&subfolder=&type=output",
        comfy.url()
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(
        response.headers()["content-disposition"],
        "filename=\"cap_txt2img_00001_.png\""
    );
    let first = response.bytes().await.unwrap();
    let (width, height, _) = png::decode_rgb(&first).expect("a valid RGB PNG");
    assert_eq!((width, height), (64, 64));
    let text = png::text_chunks(&first);
    assert_eq!(text[0].0, "prompt");
    assert_eq!(
        serde_json::from_str::<Value>(&text[0].1).unwrap(),
        txt2img(5665, 3)
    );
    assert_eq!(comfy.completed(), 1);
    assert_eq!(comfy.accepted_prompts(), vec![txt2img(5665, 3)]);

    // A new seed: the loaders come from the cache (in the graph's order), a new file, new pixels.
    let (_, second) = submit(&comfy, &txt2img_json(5666, 3), Some("cap-t2i")).await;
    assert_eq!(second["number"], 1);
    let second_id = second["prompt_id"].as_str().unwrap();
    let frames = frames_until_done(&mut submitter, second_id).await;
    let cached = frames
        .iter()
        .find(|f| f["type"] == "execution_cached")
        .unwrap();
    assert_eq!(cached["data"]["nodes"], json!(["4", "6", "7", "5"]));
    let executing: Vec<String> = frames
        .iter()
        .filter(|f| f["type"] == "executing")
        .map(label)
        .collect();
    assert_eq!(
        executing,
        [
            "executing:3",
            "executing:8",
            "executing:9",
            "executing:null"
        ]
    );
    let executed = frames.iter().find(|f| f["type"] == "executed").unwrap();
    assert_eq!(
        executed["data"]["output"]["images"][0]["filename"],
        "cap_txt2img_00002_.png"
    );
    let second_png = reqwest::get(format!(
        "{}/view?filename=cap_txt2img_00002_.png",
        comfy.url()
    ))
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    assert_ne!(
        png::decode_rgb(&first).unwrap().2,
        png::decode_rgb(&second_png).unwrap().2,
        "another seed paints other pixels"
    );

    // The identical graph again: everything cached, the same file reported, nothing executes.
    let (_, third) = submit(&comfy, &txt2img_json(5666, 3), Some("cap-t2i")).await;
    let frames = frames_until_done(&mut submitter, third["prompt_id"].as_str().unwrap()).await;
    let labels: Vec<String> = frames.iter().map(label).collect();
    assert_eq!(
        labels,
        [
            "status",
            "status",
            "execution_start",
            "execution_cached",
            "executed:9",
            "progress_state",
            "execution_success",
            "status",
            "executing:null"
        ]
    );
    assert_eq!(
        frames[4]["data"]["output"]["images"][0]["filename"],
        "cap_txt2img_00002_.png"
    );
}

#[tokio::test]
async fn without_a_client_id_only_progress_and_status_are_sent() {
    let comfy = fake().await;
    let mut observer = connect(&comfy, "cap-obs1").await;
    let (status, accepted) = submit(&comfy, &txt2img_json(1, 2), None).await;
    assert_eq!(status, 200);
    let prompt_id = accepted["prompt_id"].as_str().unwrap().to_owned();
    let mut kinds = Vec::new();
    loop {
        let frame = next_frame(&mut observer).await;
        let idle = frame["data"]["status"]["exec_info"]["queue_remaining"] == 0;
        kinds.push(frame["type"].as_str().unwrap().to_owned());
        if idle {
            break;
        }
    }
    assert!(kinds.contains(&"progress".to_owned()), "{kinds:?}");
    assert!(
        kinds
            .iter()
            .all(|kind| ["status", "progress", "progress_state"].contains(&kind.as_str())),
        "{kinds:?}"
    );
    let history = get_json(&comfy, &format!("/history/{prompt_id}")).await;
    assert_eq!(history[&prompt_id]["prompt"][3], json!({}));
    assert_eq!(history[&prompt_id]["status"]["status_str"], "success");
}

#[tokio::test]
async fn invalid_prompts_get_the_captured_400_bodies() {
    let comfy = fake().await;

    let (status, body) = post_prompt_raw(
        &comfy,
        r#"{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 1}}, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cap_empty"}}, "99": {"class_type": "NoSuchNode", "inputs": {}}}}"#.to_owned(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"type": "invalid_prompt", "message": "Cannot execute because node NoSuchNode does not exist.", "details": "Node ID '#99'", "extra_info": {}}, "node_errors": {}})
    );

    let (status, body) = post_prompt_raw(
        &comfy,
        r#"{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}}, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cap_empty"}}}}"#.to_owned(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}}, "node_errors": {"1": {"errors": [{"type": "required_input_missing", "message": "Required input is missing", "details": "color", "extra_info": {"input_name": "color"}}], "dependent_outputs": ["2"], "class_type": "EmptyImage"}}})
    );

    let (status, body) = post_prompt_raw(
        &comfy,
        r#"{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": "abc", "height": 8, "batch_size": 1, "color": 0}}, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cap_empty"}}}}"#.to_owned(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["node_errors"]["1"]["errors"][0],
        json!({"type": "invalid_input_type", "message": "Failed to convert an input value to a INT value", "details": "width, abc, invalid literal for int() with base 10: 'abc'", "extra_info": {"input_name": "width", "input_config": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}], "received_value": "abc", "exception_message": "invalid literal for int() with base 10: 'abc'"}})
    );

    let mut bad_checkpoint = txt2img(1, 3);
    bad_checkpoint["4"]["inputs"]["ckpt_name"] = json!("nope.safetensors");
    let (status, body) = submit(&comfy, &bad_checkpoint.to_string(), None).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["node_errors"]["4"],
        json!({"errors": [{"type": "value_not_in_list", "message": "Value not in list", "details": "ckpt_name: 'nope.safetensors' not in ['random_sd15.safetensors']", "extra_info": {"input_name": "ckpt_name", "input_config": [["random_sd15.safetensors"], {"tooltip": "The name of the checkpoint (model) to load."}], "received_value": "nope.safetensors"}}], "dependent_outputs": ["9"], "class_type": "CheckpointLoaderSimple"})
    );

    let (status, body) = post_prompt_raw(
        &comfy,
        r#"{"prompt": {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}}"#.to_owned(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["details"],
        "Return type mismatch between linked nodes: images, received_type(LATENT) mismatch input_type(IMAGE)"
    );
    assert_eq!(
        body["node_errors"]["2"]["errors"][0]["extra_info"]["linked_node"],
        json!(["1", 0])
    );

    let (status, body) = post_prompt_raw(
        &comfy,
        r#"{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 1}}, "2": {"class_type": "SaveImage", "inputs": {"images": ["1"], "filename_prefix": "x"}}}}"#.to_owned(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["node_errors"]["2"]["errors"][0]["type"],
        "bad_linked_input"
    );

    let (status, body) = post_prompt_raw(
        &comfy,
        r#"{"prompt": {"1": {"class_type": "SaveImage", "inputs": {"images": ["42", 0], "filename_prefix": "x"}}}}"#.to_owned(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["node_errors"]["1"]["errors"][0]["type"],
        "exception_during_validation"
    );
    assert_eq!(body["node_errors"]["1"]["errors"][0]["details"], "'42'");

    let (status, body) = post_prompt_raw(
        &comfy,
        r#"{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 1}}}}"#.to_owned(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "prompt_no_outputs");

    let (status, body) = post_prompt_raw(&comfy, r#"{"client_id": "x"}"#.to_owned()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "no_prompt");

    let (status, body) = post_prompt_raw(&comfy, "this is not json".to_owned()).await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        "500 Internal Server Error\n\nServer got itself in trouble"
    );

    // Two outputs, one bad: accepted with node_errors; only the good output runs.
    let (status, body) = post_prompt_raw(
        &comfy,
        r#"{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 1}}, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cap_empty"}}, "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "y"}}}}"#.to_owned(),
    )
    .await;
    assert_eq!(status, 200);
    // Every POST before it took a number, rejected or not (the non-JSON one did not).
    assert_eq!(body["number"], 9);
    assert_eq!(
        body["node_errors"]["3"]["errors"][0]["type"],
        "required_input_missing"
    );
    assert_eq!(comfy.accepted_prompts().len(), 1);
}

#[tokio::test]
async fn a_missing_upscale_model_is_accepted_and_fails_when_it_runs() {
    let comfy = fake().await;
    let mut ws = connect(&comfy, "cap-err").await;
    let (status, uploaded) = upload(&comfy, "src.png", &small_png(40, 30), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        uploaded,
        json!({"name": "src.png", "subfolder": "", "type": "input"})
    );

    let graph = r#"{"10": {"class_type": "LoadImage", "inputs": {"image": "src.png"}}, "11": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "missing_x4.pth"}}, "12": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["11", 0], "image": ["10", 0]}}, "13": {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "cap_up"}}}"#;
    let (status, accepted) = submit(&comfy, graph, Some("cap-err")).await;
    assert_eq!(status, 200, "model names are checked late: {accepted}");
    let prompt_id = accepted["prompt_id"].as_str().unwrap().to_owned();
    let frames = frames_until_done(&mut ws, &prompt_id).await;
    let labels: Vec<String> = frames.iter().map(label).collect();
    let tail = &labels[labels.len() - 5..];
    assert_eq!(
        tail,
        [
            "progress_state",
            "executing:11",
            "execution_error",
            "status",
            "executing:null"
        ]
    );
    let error = &frames[frames.len() - 3]["data"];
    assert_eq!(error["node_id"], "11");
    assert_eq!(error["node_type"], "UpscaleModelLoader");
    assert_eq!(error["exception_type"], "FileNotFoundError");
    assert_eq!(error["executed"], json!(["10"]));
    assert_eq!(
        error["current_inputs"],
        json!({"model_name": ["missing_x4.pth"]})
    );
    assert!(error["traceback"].as_array().unwrap().len() > 1);

    let history = get_json(&comfy, &format!("/history/{prompt_id}")).await;
    let status = &history[&prompt_id]["status"];
    assert_eq!(status["status_str"], "error");
    assert_eq!(status["completed"], false);
    assert_eq!(status["messages"][2][0], "execution_error");
    assert_eq!(history[&prompt_id]["outputs"], json!({}));
    assert_eq!(comfy.completed(), 0);

    // With a model that exists it upscales: tiles as progress, the size times the factor.
    let graph = graph.replace("missing_x4.pth", "tiny_compact_x2.safetensors");
    let (_, accepted) = submit(&comfy, &graph, Some("cap-err")).await;
    let frames = frames_until_done(&mut ws, accepted["prompt_id"].as_str().unwrap()).await;
    let labels: Vec<String> = frames.iter().map(label).collect();
    assert!(labels.contains(&"progress:12:1/1".to_owned()), "{labels:?}");
    let executed = frames.iter().find(|f| f["type"] == "executed").unwrap();
    let filename = executed["data"]["output"]["images"][0]["filename"]
        .as_str()
        .unwrap();
    let bytes = reqwest::get(format!("{}/view?filename={filename}", comfy.url()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(png::size(&bytes), Some((80, 60)));
}

#[tokio::test]
async fn interrupting_the_running_prompt_ends_it_with_execution_interrupted() {
    let comfy = fake().await;
    comfy.set_hold(true);
    let mut ws = connect(&comfy, "cap-q").await;
    let (_, first) = submit(&comfy, &txt2img_json(7, 20), Some("cap-q")).await;
    let (_, second) = submit(&comfy, &txt2img_json(8, 2), Some("cap-q")).await;
    let first_id = first["prompt_id"].as_str().unwrap().to_owned();
    let second_id = second["prompt_id"].as_str().unwrap().to_owned();

    loop {
        let frame = next_frame(&mut ws).await;
        if frame["type"] == "progress" {
            assert_eq!(frame["data"]["value"], 1);
            assert_eq!(frame["data"]["max"], 20);
            break;
        }
    }
    assert_eq!(comfy.running(), 1);
    // Nothing in the history while queued or running.
    assert_eq!(
        get_json(&comfy, &format!("/history/{first_id}")).await,
        json!({})
    );
    assert_eq!(
        get_json(&comfy, &format!("/history/{second_id}")).await,
        json!({})
    );
    let queue = get_json(&comfy, "/queue").await;
    assert_eq!(queue["queue_running"][0][1], first_id);
    assert_eq!(queue["queue_running"][0][4], json!(["9"]));
    assert_eq!(queue["queue_pending"][0][1], second_id);
    assert_eq!(
        get_json(&comfy, "/prompt").await,
        json!({"exec_info": {"queue_remaining": 2}})
    );

    // Aimed at the pending one: a no-op. Aimed at the running one: it stops.
    assert_eq!(
        post_json(&comfy, "/interrupt", json!({"prompt_id": second_id})).await,
        200
    );
    assert_eq!(comfy.interrupts(), 0);
    assert_eq!(
        post_json(&comfy, "/queue", json!({"delete": [second_id]})).await,
        200
    );
    assert_eq!(
        post_json(&comfy, "/interrupt", json!({"prompt_id": first_id})).await,
        200
    );
    let frames = frames_until_done(&mut ws, &first_id).await;
    let labels: Vec<String> = frames.iter().map(label).collect();
    let tail = &labels[labels.len() - 3..];
    assert_eq!(
        tail,
        ["execution_interrupted", "status", "executing:null"],
        "{labels:?}"
    );
    let interrupted = &frames[frames.len() - 3]["data"];
    assert_eq!(interrupted["prompt_id"], first_id);
    assert_eq!(interrupted["node_id"], "3");
    assert_eq!(interrupted["node_type"], "KSampler");
    assert_eq!(interrupted["executed"], json!(["4", "5", "7", "6"]));
    assert_eq!(comfy.interrupts(), 1);
    wait_until("the prompt to stop", DEFAULT_WAIT, || async {
        (comfy.running() == 0).then_some(())
    })
    .await;

    let history = get_json(&comfy, &format!("/history/{first_id}")).await;
    let status = &history[&first_id]["status"];
    assert_eq!(status["status_str"], "error");
    assert_eq!(status["completed"], false);
    assert_eq!(status["messages"][2][0], "execution_interrupted");
    // The deleted prompt never ran.
    assert_eq!(
        get_json(&comfy, &format!("/history/{second_id}")).await,
        json!({})
    );
    assert_eq!(
        get_json(&comfy, "/queue").await,
        json!({"queue_running": [], "queue_pending": []})
    );
}

#[tokio::test]
async fn kill_cuts_websockets_and_refuses_connections() {
    let comfy = fake().await;
    comfy.set_hold(true);
    let mut ws = connect(&comfy, "cap-kill").await;
    let (_, accepted) = submit(&comfy, &txt2img_json(3, 4), Some("cap-kill")).await;
    assert_eq!(accepted["number"], 0);
    loop {
        if next_frame(&mut ws).await["type"] == "progress" {
            break;
        }
    }
    comfy.kill().await;
    let end = tokio::time::timeout(DEFAULT_WAIT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the websocket outlived the server");
    assert!(
        reqwest::get(comfy.url()).await.is_err(),
        "still answering after kill"
    );
    assert_eq!(comfy.running(), 0);
    assert_eq!(comfy.accepted_prompts().len(), 1);

    // Started again on the same port: a fresh server that remembers nothing.
    let again = FakeComfy::start_on(comfy.port(), FakeComfyOptions::default())
        .await
        .unwrap();
    assert_eq!(again.url(), comfy.url());
    let history = get_json(
        &again,
        &format!("/history/{}", accepted["prompt_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(history, json!({}));
    assert_eq!(
        get_json(&again, "/queue").await,
        json!({"queue_running": [], "queue_pending": []})
    );
}

/// The ControlNet template of `templates.json`.
const CONTROLNET: &str = r#"{"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "random_sd15.safetensors"}}, "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a watercolor", "clip": ["4", 1]}}, "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}}, "10": {"class_type": "LoadImage", "inputs": {"image": "tpl_src.png"}}, "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}, "3": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["21", 0], "negative": ["21", 1], "latent_image": ["11", 0]}}, "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}, "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "cap_cn", "images": ["8", 0]}}, "20": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "control_v11p_sd15_canny.pth"}}, "21": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["20", 0], "image": ["10", 0], "strength": 0.8, "start_percent": 0.0, "end_percent": 1.0}}}"#;

#[tokio::test]
async fn model_lists_are_checked_once_the_fake_knows_them() {
    let comfy = fake().await;
    let mut ws = connect(&comfy, "cap-tpl").await;
    upload(
        &comfy,
        "tpl_src.png",
        &small_png(72, 56),
        &[("overwrite", "true")],
    )
    .await;

    // Not told which ControlNets exist: any name passes, and the graph runs.
    let (status, accepted) = submit(&comfy, CONTROLNET, Some("cap-tpl")).await;
    assert_eq!(status, 200, "{accepted}");
    let frames = frames_until_done(&mut ws, accepted["prompt_id"].as_str().unwrap()).await;
    let executed = frames.iter().find(|f| f["type"] == "executed").unwrap();
    let filename = executed["data"]["output"]["images"][0]["filename"]
        .as_str()
        .unwrap();
    let bytes = reqwest::get(format!("{}/view?filename={filename}", comfy.url()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        png::size(&bytes),
        Some((72, 56)),
        "img2img keeps the input's size"
    );

    // Told there are none, as on the captured server: the captured 400.
    comfy.set_models("controlnet", Vec::<String>::new());
    let (status, body) = submit(&comfy, CONTROLNET, Some("cap-tpl")).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}}, "node_errors": {"20": {"errors": [{"type": "value_not_in_list", "message": "Value not in list", "details": "control_net_name: 'control_v11p_sd15_canny.pth' not in []", "extra_info": {"input_name": "control_net_name", "input_config": [[], {}], "received_value": "control_v11p_sd15_canny.pth"}}], "dependent_outputs": ["9"], "class_type": "ControlNetLoader"}}})
    );
    comfy.set_models("controlnet", ["control_v11p_sd15_canny.pth"]);
    assert_eq!(
        get_json(&comfy, "/models/controlnet").await,
        json!(["control_v11p_sd15_canny.pth"])
    );
    let (status, _) = submit(&comfy, CONTROLNET, Some("cap-tpl")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn uploads_and_views_follow_comfyuis_naming_and_path_rules() {
    let comfy = fake().await;
    let image = small_png(40, 30);
    let other = small_png(4, 3);
    let (_, first) = upload(&comfy, "cap_src.png", &image, &[]).await;
    assert_eq!(first["name"], "cap_src.png");
    let (_, same) = upload(&comfy, "cap_src.png", &image, &[]).await;
    assert_eq!(
        same["name"], "cap_src.png",
        "identical bytes reuse the name"
    );
    let (_, renamed) = upload(&comfy, "cap_src.png", &other, &[]).await;
    assert_eq!(renamed["name"], "cap_src (1).png");
    let (_, overwritten) = upload(&comfy, "cap_src.png", &other, &[("overwrite", "true")]).await;
    assert_eq!(overwritten["name"], "cap_src.png");
    let (_, sub) = upload(&comfy, "cap_sub.png", &image, &[("subfolder", "capsub")]).await;
    assert_eq!(
        sub,
        json!({"name": "cap_sub.png", "subfolder": "capsub", "type": "input"})
    );
    let (_, temp) = upload(&comfy, "cap_tmp.png", &image, &[("type", "temp")]).await;
    assert_eq!(temp["type"], "temp");
    let (_, evil) = upload(&comfy, "../evil.png", &image, &[]).await;
    assert_eq!(evil["name"], "..%2Fevil.png");
    let uploads = comfy.uploads();
    assert_eq!(uploads.len(), 7);
    assert_eq!(uploads[4].0, "capsub/cap_sub.png");
    assert_eq!(uploads[2].1, other);

    let view = |query: &str| {
        let url = format!("{}/view?{query}", comfy.url());
        async move { reqwest::get(url).await.unwrap() }
    };
    let response = view("filename=cap_sub.png&subfolder=capsub&type=input").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap()[..], image[..]);
    assert_eq!(
        view("filename=cap_src.png&type=input")
            .await
            .bytes()
            .await
            .unwrap()[..],
        other[..]
    );
    assert_eq!(
        view("filename=cap_src.png&subfolder=../..&type=input")
            .await
            .status(),
        403
    );
    assert_eq!(view("filename=../secret.png").await.status(), 400);
    assert_eq!(view("filename=/etc/passwd").await.status(), 400);
    assert_eq!(view("filename=missing.png").await.status(), 404);
    assert_eq!(view("filename=x.png&type=bogus").await.status(), 400);
    assert_eq!(
        reqwest::get(format!("{}/view", comfy.url()))
            .await
            .unwrap()
            .status(),
        404
    );

    // LoadImage validates against the uploads.
    let graph = r#"{"1": {"class_type": "LoadImage", "inputs": {"image": "nope.png"}}, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}"#;
    let (status, body) = submit(&comfy, graph, None).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["node_errors"]["1"]["errors"][0],
        json!({"type": "custom_validation_failed", "message": "Custom validation failed for node", "details": "image - Invalid image file: nope.png", "extra_info": {"input_name": "image"}})
    );
    let (status, _) = submit(
        &comfy,
        &graph.replace("nope.png", "capsub/cap_sub.png"),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn system_stats_object_info_and_the_api_prefix() {
    let comfy = FakeComfy::start_with(FakeComfyOptions {
        vram_total_mib: 8_192,
        vram_free_mib: 6_000,
        argv: vec!["main.py".into(), "--highvram".into()],
        ..FakeComfyOptions::default()
    })
    .await;
    let stats = get_json(&comfy, "/system_stats").await;
    assert_eq!(stats["system"]["comfyui_version"], "0.3.64");
    assert_eq!(stats["system"]["embedded_python"], false);
    assert_eq!(stats["system"]["argv"], json!(["main.py", "--highvram"]));
    let device = &stats["devices"][0];
    assert_eq!(device["type"], "cuda");
    assert_eq!(device["index"], 0);
    assert_eq!(device["vram_total"], 8_192u64 * 1024 * 1024);
    assert_eq!(device["vram_free"], 6_000u64 * 1024 * 1024);
    assert_eq!(get_json(&comfy, "/api/system_stats").await, stats);

    let info = get_json(&comfy, "/object_info/CheckpointLoaderSimple").await;
    assert_eq!(
        info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0],
        json!([
            "v1-5-pruned-emaonly.safetensors",
            "sd_xl_base_1.0.safetensors"
        ])
    );
    assert_eq!(get_json(&comfy, "/object_info/NoSuchNode").await, json!({}));
    let all = get_json(&comfy, "/object_info").await;
    assert!(all["ReActorFaceSwap"].is_object());
    assert_eq!(all["SaveImage"]["output_node"], true);
    assert_eq!(
        get_json(&comfy, "/models/upscale_models").await,
        json!(["RealESRGAN_x4plus.pth"])
    );
    assert_eq!(get_json(&comfy, "/history").await, json!({}));
    assert_eq!(
        get_json(&comfy, "/queue").await,
        json!({"queue_running": [], "queue_pending": []})
    );
}

/// Kills the child process when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on a free port; returns it once it says it listens (as ComfyUI does). A
/// port taken between choosing and binding (by a test running beside this one) means another.
fn spawn_binary(env: &[(&str, &str)]) -> (Process, u16) {
    use std::io::BufRead;
    for _ in 0..5 {
        let port = testkit::free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_fake-comfyui"));
        command
            .args([
                "--listen",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--highvram",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("failed to start fake-comfyui");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        if line.starts_with("To see the GUI go to:") {
            return (Process(child), port);
        }
        drop(Process(child)); // it could not listen there
    }
    panic!("fake-comfyui found no port to listen on");
}

#[tokio::test]
async fn the_binary_takes_comfyuis_flags_and_can_hang() {
    let (_process, port) = spawn_binary(&[("FAKE_COMFY_VRAM_TOTAL_MIB", "12288")]);
    let url = format!("http://127.0.0.1:{port}/system_stats");
    let stats: Value = wait_until("fake-comfyui to answer", DEFAULT_WAIT, || async {
        reqwest::get(&url).await.ok()?.json().await.ok()
    })
    .await;
    assert_eq!(
        stats["system"]["argv"],
        json!([
            "main.py",
            "--listen",
            "127.0.0.1",
            "--port",
            port.to_string(),
            "--highvram"
        ])
    );
    assert_eq!(stats["devices"][0]["vram_total"], 12_288u64 * 1024 * 1024);

    // Hung from the start: it accepts connections and never answers.
    let (_hung, port) = spawn_binary(&[("FAKE_COMFY_HANG_AFTER_SECS", "0")]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let error = client
        .get(format!("http://127.0.0.1:{port}/system_stats"))
        .send()
        .await
        .expect_err("a hung server answered");
    assert!(error.is_timeout(), "{error}");
}

#[test]
fn fake_comfyui_bin_is_the_built_binary() {
    let built = testkit::comfyui::fake_comfyui_bin();
    assert_eq!(
        built.canonicalize().unwrap(),
        std::path::Path::new(env!("CARGO_BIN_EXE_fake-comfyui"))
            .canonicalize()
            .unwrap()
    );
}
