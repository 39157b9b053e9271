//! The frames of a run and their order, and who receives them.

use artifacts::png;
use serde_json::{Value, json};

use crate::common::{
    connect, fake, frames_until_done, get_json, label, next_frame, submit, txt2img, txt2img_json,
};

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
