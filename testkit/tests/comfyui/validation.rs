//! The 400 bodies of prompts that fail validation, and model lists.

use artifacts::png;
use serde_json::json;

use crate::common::{
    connect, fake, frames_until_done, get_json, post_prompt_raw, small_png, submit, txt2img, upload,
};

#[tokio::test]
async fn invalid_prompts_get_the_captured_400_bodies() {
    let comfy = fake().await;

    let (status, body) = post_prompt_raw(
        &comfy,
        r#"{"prompt": {"1": {"class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 1}},
            "2": {"class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "cap_empty"}},
            "99": {"class_type": "NoSuchNode", "inputs": {}}}}"#
            .to_owned(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"type": "invalid_prompt", "message": "Cannot execute because node NoSuchNode does not exist.", "details": "Node ID '#99'", "extra_info": {}}, "node_errors": {}})
    );

    let (status, body) = post_prompt_raw(
        &comfy,
        r#"{"prompt": {"1": {"class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1}},
            "2": {"class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "cap_empty"}}}}"#
            .to_owned(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
            "node_errors": {"1": {"errors": [{"type": "required_input_missing",
            "message": "Required input is missing", "details": "color",
            "extra_info": {"input_name": "color"}}], "dependent_outputs": ["2"],
            "class_type": "EmptyImage"}}})
    );

    let (status, body) = post_prompt_raw(
        &comfy,
        r#"{"prompt": {"1": {"class_type": "EmptyImage",
            "inputs": {"width": "abc", "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "cap_empty"}}}}"#
            .to_owned(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["node_errors"]["1"]["errors"][0],
        json!({"type": "invalid_input_type",
            "message": "Failed to convert an input value to a INT value",
            "details": "width, abc, invalid literal for int() with base 10: 'abc'",
            "extra_info": {"input_name": "width",
            "input_config": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
            "received_value": "abc",
            "exception_message": "invalid literal for int() with base 10: 'abc'"}})
    );

    let mut bad_checkpoint = txt2img(1, 3);
    bad_checkpoint["4"]["inputs"]["ckpt_name"] = json!("nope.safetensors");
    let (status, body) = submit(&comfy, &bad_checkpoint.to_string(), None).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["node_errors"]["4"],
        json!({"errors": [{"type": "value_not_in_list", "message": "Value not in list",
            "details": "ckpt_name: 'nope.safetensors' not in ['random_sd15.safetensors']",
            "extra_info": {"input_name": "ckpt_name",
            "input_config": [["random_sd15.safetensors"],
            {"tooltip": "The name of the checkpoint (model) to load."}],
            "received_value": "nope.safetensors"}}], "dependent_outputs": ["9"],
            "class_type": "CheckpointLoaderSimple"})
    );

    let (status, body) = post_prompt_raw(
        &comfy,
        r#"{"prompt": {"1": {"class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "2": {"class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}}"#
            .to_owned(),
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
        r#"{"prompt": {"1": {"class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 1}},
            "2": {"class_type": "SaveImage",
            "inputs": {"images": ["1"], "filename_prefix": "x"}}}}"#
            .to_owned(),
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
        r#"{"prompt": {"1": {"class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 1}},
            "2": {"class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "cap_empty"}},
            "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "y"}}}}"#
            .to_owned(),
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

/// The ControlNet template of `templates.json`.
const CONTROLNET: &str = r#"{"4": {"class_type": "CheckpointLoaderSimple",
    "inputs": {"ckpt_name": "random_sd15.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a watercolor", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "10": {"class_type": "LoadImage", "inputs": {"image": "tpl_src.png"}},
    "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
    "3": {"class_type": "KSampler",
    "inputs": {"seed": 7, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
    "denoise": 1.0, "model": ["4", 0], "positive": ["21", 0], "negative": ["21", 1],
    "latent_image": ["11", 0]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "cap_cn", "images": ["8", 0]}},
    "20": {"class_type": "ControlNetLoader",
    "inputs": {"control_net_name": "control_v11p_sd15_canny.pth"}},
    "21": {"class_type": "ControlNetApplyAdvanced",
    "inputs": {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["20", 0],
    "image": ["10", 0], "strength": 0.8, "start_percent": 0.0, "end_percent": 1.0}}}"#;

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
        json!({"error": {"type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
            "node_errors": {"20": {"errors": [{"type": "value_not_in_list",
            "message": "Value not in list",
            "details": "control_net_name: 'control_v11p_sd15_canny.pth' not in []",
            "extra_info": {"input_name": "control_net_name", "input_config": [[], {}],
            "received_value": "control_v11p_sd15_canny.pth"}}], "dependent_outputs": ["9"],
            "class_type": "ControlNetLoader"}}})
    );
    comfy.set_models("controlnet", ["control_v11p_sd15_canny.pth"]);
    assert_eq!(
        get_json(&comfy, "/models/controlnet").await,
        json!(["control_v11p_sd15_canny.pth"])
    );
    let (status, _) = submit(&comfy, CONTROLNET, Some("cap-tpl")).await;
    assert_eq!(status, 200);
}
