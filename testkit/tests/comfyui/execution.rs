//! Runs that fail while they execute, interrupts, and the death of the server.

use artifacts::png;
use futures::StreamExt;
use serde_json::json;
use testkit::comfyui::{FakeComfy, FakeComfyOptions};
use testkit::{DEFAULT_WAIT, wait_until};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{
    connect, fake, frames_until_done, get_json, label, next_frame, post_json, small_png, submit,
    txt2img_json, upload,
};

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

    let graph = r#"{"10": {"class_type": "LoadImage", "inputs": {"image": "src.png"}},
        "11": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "missing_x4.pth"}},
        "12": {"class_type": "ImageUpscaleWithModel",
        "inputs": {"upscale_model": ["11", 0], "image": ["10", 0]}},
        "13": {"class_type": "SaveImage",
        "inputs": {"images": ["12", 0], "filename_prefix": "cap_up"}}}"#;
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
