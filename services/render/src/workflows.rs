//! ComfyUI workflow templates: one API-format graph (`{node_id: {"class_type", "inputs"}}`) per
//! render mode, built from the real node classes and input names of ComfyUI 0.3.64 (and the
//! ReActor custom node for face swaps), and the hash that pins the exact graph that ran.
//!
//! Node ids follow ComfyUI's default txt2img graph (4 checkpoint, 6/7 prompts, 5 latent,
//! 3 sampler, 8 decode, 9 save), so a graph reads the same in ComfyUI's own history.

use std::collections::HashMap;

use events::render::{RenderMode, RenderParams};
use serde_json::{Map, Value, json};

use crate::artifacts::sha256_hex;

/// Used when a controlnet job names no model.
pub const DEFAULT_CONTROLNET_MODEL: &str = "control_v11p_sd15_canny.pth";
pub use events::render::{DEFAULT_UPSCALE_MODEL, FACE_SWAP_MODEL};
/// How far `VAEEncodeForInpaint` grows the mask, in pixels (ComfyUI's default).
pub const INPAINT_GROW_MASK_BY: u32 = 6;

const CHECKPOINT: &str = "4";
const LATENT: &str = "5";
const POSITIVE: &str = "6";
const NEGATIVE: &str = "7";
const SAMPLER: &str = "3";
const DECODE: &str = "8";
const SAVE: &str = "9";
const INIT_IMAGE: &str = "10";
const ENCODE: &str = "11";
const MASK: &str = "12";
const SOURCE_FACE: &str = "13";
const CONTROLNET_LOADER: &str = "20";
const CONTROLNET_APPLY: &str = "21";
const LORA: &str = "30";
const UPSCALE_LOADER: &str = "40";
const UPSCALE: &str = "41";
const FACE_SWAP: &str = "50";
const CONTEXT_OPTIONS: &str = "60";
const MOTION: &str = "61";
const COMBINE: &str = "62";

/// The format VideoHelperSuite's `VHS_VideoCombine` writes a clip in.
pub const CLIP_FORMAT: &str = "video/h264-mp4";

/// The `SaveImage` prefix for a job's outputs: `nebula-<job id>`, with anything but ASCII
/// letters, digits, `-` and `_` replaced (a job id is never trusted as a path).
pub fn filename_prefix(job_id: &str) -> String {
    format!("nebula-{}", safe_name(job_id))
}

/// The file name an input image is uploaded as: `<job id>-<param>.png`, made safe the same way.
pub fn upload_name(job_id: &str, param: &str) -> String {
    format!("{}-{}.png", safe_name(job_id), safe_name(param))
}

fn safe_name(s: &str) -> String {
    let safe = events::sanitize_token(s, 100);
    if safe.is_empty() {
        "job".to_owned()
    } else {
        safe
    }
}

/// A link to output `slot` of node `id`.
fn link(id: &str, slot: u32) -> Value {
    json!([id, slot])
}

fn node(class_type: &str, inputs: Value) -> Value {
    json!({ "class_type": class_type, "inputs": inputs })
}

/// The ComfyUI file name an input parameter was uploaded as; empty when missing (ComfyUI then
/// rejects the graph, naming the node).
fn uploaded_name<'a>(uploaded: &'a HashMap<String, String>, param: &str) -> &'a str {
    uploaded.get(param).map(String::as_str).unwrap_or_default()
}

/// Builds the API-format graph for one job. `uploaded` maps an input parameter
/// (`init_image`, `mask_image`, `control_image`, `face_image`) to the name ComfyUI gave the
/// uploaded file; `filename_prefix` goes to `SaveImage`.
///
/// Parameters a mode does not use are ignored: txt2img and controlnet always denoise fully,
/// upscale and face swap run no sampler. The inpaint mask is read from the mask image's red
/// channel, so white marks the area to repaint.
pub fn build(
    mode: RenderMode,
    params: &RenderParams,
    uploaded: &HashMap<String, String>,
    filename_prefix: &str,
) -> Value {
    let mut graph = Map::new();
    let image = match mode {
        RenderMode::Upscale => {
            graph.insert(
                INIT_IMAGE.into(),
                node(
                    "LoadImage",
                    json!({ "image": uploaded_name(uploaded, "init_image") }),
                ),
            );
            let model = params
                .upscale_model
                .as_deref()
                .unwrap_or(DEFAULT_UPSCALE_MODEL);
            graph.insert(
                UPSCALE_LOADER.into(),
                node("UpscaleModelLoader", json!({ "model_name": model })),
            );
            graph.insert(
                UPSCALE.into(),
                node(
                    "ImageUpscaleWithModel",
                    json!({
                        "upscale_model": link(UPSCALE_LOADER, 0),
                        "image": link(INIT_IMAGE, 0),
                    }),
                ),
            );
            link(UPSCALE, 0)
        }
        RenderMode::FaceSwap => {
            graph.insert(
                INIT_IMAGE.into(),
                node(
                    "LoadImage",
                    json!({ "image": uploaded_name(uploaded, "init_image") }),
                ),
            );
            graph.insert(
                SOURCE_FACE.into(),
                node(
                    "LoadImage",
                    json!({ "image": uploaded_name(uploaded, "face_image") }),
                ),
            );
            graph.insert(
                FACE_SWAP.into(),
                node(
                    "ReActorFaceSwap",
                    json!({
                        "enabled": true,
                        "input_image": link(INIT_IMAGE, 0),
                        "source_image": link(SOURCE_FACE, 0),
                        "swap_model": FACE_SWAP_MODEL,
                        "facedetection": "retinaface_resnet50",
                        "face_restore_model": "none",
                        "face_restore_visibility": 1,
                        "codeformer_weight": 0.5,
                        "detect_gender_input": "no",
                        "detect_gender_source": "no",
                        "input_faces_index": "0",
                        "source_faces_index": "0",
                        "console_log_level": 1,
                    }),
                ),
            );
            link(FACE_SWAP, 0)
        }
        RenderMode::Txt2img
        | RenderMode::Img2img
        | RenderMode::Inpaint
        | RenderMode::Controlnet => {
            diffusion(&mut graph, mode, params, uploaded);
            link(DECODE, 0)
        }
        RenderMode::AnimateDiff => {
            diffusion(&mut graph, mode, params, uploaded);
            let animation = params.animation.clone().unwrap_or_default();
            // VideoHelperSuite combines the decoded frames into one H.264 MP4; its output is
            // the history's `gifs` entry.
            graph.insert(
                COMBINE.into(),
                node(
                    "VHS_VideoCombine",
                    json!({
                        "images": link(DECODE, 0),
                        "frame_rate": animation.fps,
                        "loop_count": 0,
                        "filename_prefix": filename_prefix,
                        "format": CLIP_FORMAT,
                        "pix_fmt": "yuv420p",
                        "crf": 19,
                        "save_metadata": true,
                        "pingpong": false,
                        "save_output": true,
                    }),
                ),
            );
            return Value::Object(graph);
        }
    };
    graph.insert(
        SAVE.into(),
        node(
            "SaveImage",
            json!({ "filename_prefix": filename_prefix, "images": image }),
        ),
    );
    Value::Object(graph)
}

/// Checkpoint (+ LoRA) → prompts → latent → KSampler → VAEDecode.
fn diffusion(
    graph: &mut Map<String, Value>,
    mode: RenderMode,
    params: &RenderParams,
    uploaded: &HashMap<String, String>,
) {
    graph.insert(
        CHECKPOINT.into(),
        node(
            "CheckpointLoaderSimple",
            json!({ "ckpt_name": params.checkpoint }),
        ),
    );
    let (model, clip) = match &params.lora {
        Some(lora) => {
            graph.insert(
                LORA.into(),
                node(
                    "LoraLoader",
                    json!({
                        "model": link(CHECKPOINT, 0),
                        "clip": link(CHECKPOINT, 1),
                        "lora_name": lora.name,
                        "strength_model": lora.strength,
                        "strength_clip": lora.strength,
                    }),
                ),
            );
            (link(LORA, 0), link(LORA, 1))
        }
        None => (link(CHECKPOINT, 0), link(CHECKPOINT, 1)),
    };
    // A clip: AnimateDiff-Evolved's context options → its Gen1 loader over the model, which the
    // sampler then runs on every frame's latent at once.
    let (model, batch) = match (mode, &params.animation) {
        (RenderMode::AnimateDiff, animation) => {
            let animation = animation.clone().unwrap_or_default();
            graph.insert(
                CONTEXT_OPTIONS.into(),
                node(
                    "ADE_StandardUniformContextOptions",
                    json!({
                        "context_length": animation.context_length,
                        "context_stride": 1,
                        "context_overlap": animation.context_overlap,
                        "fuse_method": "pyramid",
                        "use_on_equal_length": false,
                        "start_percent": 0.0,
                        "guarantee_steps": 1,
                    }),
                ),
            );
            graph.insert(
                MOTION.into(),
                node(
                    "ADE_AnimateDiffLoaderGen1",
                    json!({
                        "model": model,
                        "model_name": animation.motion_module,
                        "beta_schedule": "autoselect",
                        "context_options": link(CONTEXT_OPTIONS, 0),
                    }),
                ),
            );
            (link(MOTION, 0), animation.frames)
        }
        _ => (model, 1),
    };
    let vae = link(CHECKPOINT, 2);
    graph.insert(
        POSITIVE.into(),
        node(
            "CLIPTextEncode",
            json!({ "text": params.prompt, "clip": clip }),
        ),
    );
    graph.insert(
        NEGATIVE.into(),
        node(
            "CLIPTextEncode",
            json!({ "text": params.negative_prompt, "clip": clip }),
        ),
    );

    let empty_latent =
        json!({ "width": params.width, "height": params.height, "batch_size": batch });
    let (latent, denoise) = match mode {
        RenderMode::Img2img => {
            graph.insert(
                INIT_IMAGE.into(),
                node(
                    "LoadImage",
                    json!({ "image": uploaded_name(uploaded, "init_image") }),
                ),
            );
            graph.insert(
                ENCODE.into(),
                node(
                    "VAEEncode",
                    json!({ "pixels": link(INIT_IMAGE, 0), "vae": vae }),
                ),
            );
            (link(ENCODE, 0), params.denoise)
        }
        RenderMode::Inpaint => {
            graph.insert(
                INIT_IMAGE.into(),
                node(
                    "LoadImage",
                    json!({ "image": uploaded_name(uploaded, "init_image") }),
                ),
            );
            graph.insert(
                MASK.into(),
                node(
                    "LoadImageMask",
                    json!({
                        "image": uploaded_name(uploaded, "mask_image"),
                        "channel": "red",
                    }),
                ),
            );
            graph.insert(
                ENCODE.into(),
                node(
                    "VAEEncodeForInpaint",
                    json!({
                        "pixels": link(INIT_IMAGE, 0),
                        "vae": vae,
                        "mask": link(MASK, 0),
                        "grow_mask_by": INPAINT_GROW_MASK_BY,
                    }),
                ),
            );
            (link(ENCODE, 0), params.denoise)
        }
        RenderMode::Txt2img
        | RenderMode::Controlnet
        | RenderMode::Upscale
        | RenderMode::FaceSwap
        | RenderMode::AnimateDiff => {
            graph.insert(LATENT.into(), node("EmptyLatentImage", empty_latent));
            (link(LATENT, 0), 1.0)
        }
    };

    let (positive, negative) = if mode == RenderMode::Controlnet {
        graph.insert(
            INIT_IMAGE.into(),
            node(
                "LoadImage",
                json!({ "image": uploaded_name(uploaded, "control_image") }),
            ),
        );
        let model_name = params
            .controlnet_model
            .as_deref()
            .unwrap_or(DEFAULT_CONTROLNET_MODEL);
        graph.insert(
            CONTROLNET_LOADER.into(),
            node(
                "ControlNetLoader",
                json!({ "control_net_name": model_name }),
            ),
        );
        graph.insert(
            CONTROLNET_APPLY.into(),
            node(
                "ControlNetApplyAdvanced",
                json!({
                    "positive": link(POSITIVE, 0),
                    "negative": link(NEGATIVE, 0),
                    "control_net": link(CONTROLNET_LOADER, 0),
                    "image": link(INIT_IMAGE, 0),
                    "strength": 1.0,
                    "start_percent": 0.0,
                    "end_percent": 1.0,
                }),
            ),
        );
        (link(CONTROLNET_APPLY, 0), link(CONTROLNET_APPLY, 1))
    } else {
        (link(POSITIVE, 0), link(NEGATIVE, 0))
    };

    graph.insert(
        SAMPLER.into(),
        node(
            "KSampler",
            json!({
                "seed": params.seed,
                "steps": params.steps,
                "cfg": params.cfg,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": denoise,
                "model": model,
                "positive": positive,
                "negative": negative,
                "latent_image": latent,
            }),
        ),
    );
    graph.insert(
        DECODE.into(),
        node(
            "VAEDecode",
            json!({ "samples": link(SAMPLER, 0), "vae": vae }),
        ),
    );
}

/// SHA-256 (lowercase hex) of the graph's canonical JSON: object keys sorted at every level,
/// no whitespace. Independent of key order, and of whether serde_json preserves it.
pub fn workflow_hash(graph: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(graph, &mut canonical);
    sha256_hex(canonical.as_bytes())
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use events::render::Lora;
    use sha2::{Digest, Sha256};

    use super::*;

    fn params() -> RenderParams {
        RenderParams {
            prompt: "a lighthouse at dusk".into(),
            negative_prompt: "blurry".into(),
            seed: 1234,
            steps: 12,
            denoise: 0.55,
            upscale_model: Some("4x-UltraSharp.pth".into()),
            ..RenderParams::default()
        }
    }

    fn uploads() -> HashMap<String, String> {
        ["init_image", "mask_image", "control_image", "face_image"]
            .into_iter()
            .map(|param| (param.to_owned(), format!("job-{param}.png")))
            .collect()
    }

    fn nodes_of<'a>(graph: &'a Value, class_type: &str) -> Vec<(&'a String, &'a Value)> {
        graph
            .as_object()
            .expect("graph is an object")
            .iter()
            .filter(|(_, node)| node["class_type"] == class_type)
            .collect()
    }

    fn one<'a>(graph: &'a Value, class_type: &str) -> &'a Value {
        let nodes = nodes_of(graph, class_type);
        assert_eq!(nodes.len(), 1, "expected one {class_type} in {graph:#}");
        nodes[0].1
    }

    /// The node that writes the job's output: `SaveImage`, or a clip's `VHS_VideoCombine`.
    fn output_class(graph: &Value) -> &'static str {
        if nodes_of(graph, "VHS_VideoCombine").is_empty() {
            "SaveImage"
        } else {
            "VHS_VideoCombine"
        }
    }

    /// Every link points at an existing node, every node has a class and inputs, exactly one
    /// output node, and no node is left dangling (everything feeds the output).
    fn assert_valid(graph: &Value) {
        let nodes = graph.as_object().expect("graph is an object");
        let mut used = std::collections::HashSet::new();
        for (id, node) in nodes {
            assert!(node["class_type"].is_string(), "{id} has no class_type");
            let inputs = node["inputs"].as_object().expect("inputs is an object");
            for (name, value) in inputs {
                if let Some(link) = value.as_array() {
                    assert_eq!(link.len(), 2, "{id}.{name} is not [node, slot]");
                    let target = link[0].as_str().expect("link node id is a string");
                    assert!(link[1].is_u64(), "{id}.{name} slot is not an integer");
                    assert!(
                        nodes.contains_key(target),
                        "{id}.{name} links to missing node {target}"
                    );
                    used.insert(target.to_owned());
                }
            }
        }
        let output = output_class(graph);
        let outputs =
            nodes_of(graph, "SaveImage").len() + nodes_of(graph, "VHS_VideoCombine").len();
        assert_eq!(outputs, 1, "one output node");
        for (id, node) in nodes {
            if node["class_type"] != output {
                assert!(used.contains(id), "{id} feeds nothing");
            }
        }
    }

    #[test]
    fn every_mode_builds_a_valid_graph() {
        for mode in RenderMode::ALL {
            let graph = build(mode, &params(), &uploads(), "nebula-job");
            assert_valid(&graph);
            let save = one(&graph, output_class(&graph));
            assert_eq!(save["inputs"]["filename_prefix"], "nebula-job");
        }
    }

    #[test]
    fn a_clip_runs_animatediff_over_every_frame_and_combines_them_to_mp4() {
        let mut params = params();
        params.lora = Some(Lora {
            name: "nova.safetensors".into(),
            strength: 0.8,
        });
        params.animation = Some(events::render::Animation {
            frames: 24,
            fps: 12,
            motion_module: "mm_sd_v15_v2.ckpt".into(),
            context_length: 16,
            context_overlap: 4,
        });
        let graph = build(RenderMode::AnimateDiff, &params, &uploads(), "nebula-clip");
        assert_valid(&graph);
        // The motion module wraps the LoRA'd model, with the context window linked in.
        let loader = one(&graph, "ADE_AnimateDiffLoaderGen1");
        assert_eq!(loader["inputs"]["model"], json!([LORA, 0]));
        assert_eq!(loader["inputs"]["model_name"], "mm_sd_v15_v2.ckpt");
        assert_eq!(
            loader["inputs"]["context_options"],
            json!([CONTEXT_OPTIONS, 0])
        );
        let context = one(&graph, "ADE_StandardUniformContextOptions");
        assert_eq!(context["inputs"]["context_length"], 16);
        assert_eq!(context["inputs"]["context_overlap"], 4);
        // The sampler runs the animated model over one latent per frame.
        let sampler = one(&graph, "KSampler");
        assert_eq!(sampler["inputs"]["model"], json!([MOTION, 0]));
        assert_eq!(one(&graph, "EmptyLatentImage")["inputs"]["batch_size"], 24);
        let combine = one(&graph, "VHS_VideoCombine");
        assert_eq!(combine["inputs"]["images"], json!([DECODE, 0]));
        assert_eq!(combine["inputs"]["frame_rate"], 12);
        assert_eq!(combine["inputs"]["format"], CLIP_FORMAT);
        assert!(nodes_of(&graph, "SaveImage").is_empty());
        // The image modes are untouched: one latent, no motion module.
        let still = build(RenderMode::Txt2img, &params, &uploads(), "p");
        assert_eq!(one(&still, "EmptyLatentImage")["inputs"]["batch_size"], 1);
        assert!(nodes_of(&still, "ADE_AnimateDiffLoaderGen1").is_empty());
    }

    #[test]
    fn every_mode_builds_a_valid_graph_with_a_lora() {
        let mut params = params();
        params.lora = Some(Lora {
            name: "detail.safetensors".into(),
            strength: 0.7,
        });
        for mode in RenderMode::ALL {
            assert_valid(&build(mode, &params, &uploads(), "p"));
        }
    }

    #[test]
    fn txt2img_matches_the_captured_comfyui_graph() {
        // The prompt ComfyUI 0.3.64 accepted in txt2img_nopreview.json.
        let captured = json!({
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "random_sd15.safetensors"}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "3": {"class_type": "KSampler", "inputs": {"seed": 5665, "steps": 3, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "cap_txt2img", "images": ["8", 0]}}
        });
        let params = RenderParams {
            prompt: "a photo of a cat".into(),
            negative_prompt: "blurry".into(),
            seed: 5665,
            steps: 3,
            width: 64,
            height: 64,
            checkpoint: "random_sd15.safetensors".into(),
            ..RenderParams::default()
        };
        let graph = build(RenderMode::Txt2img, &params, &HashMap::new(), "cap_txt2img");
        assert_eq!(graph, captured);
    }

    #[test]
    fn img2img_matches_the_captured_comfyui_graph() {
        // The img2img prompt ComfyUI 0.3.64 accepted in templates.json.
        let captured = json!({
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "random_sd15.safetensors"}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a watercolor", "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
            "10": {"class_type": "LoadImage", "inputs": {"image": "tpl_src.png"}},
            "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
            "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.6, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["11", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "cap_img2img", "images": ["8", 0]}}
        });
        let params = RenderParams {
            prompt: "a watercolor".into(),
            negative_prompt: "blurry".into(),
            seed: 5,
            steps: 2,
            denoise: 0.6,
            checkpoint: "random_sd15.safetensors".into(),
            ..RenderParams::default()
        };
        let uploaded = HashMap::from([("init_image".to_owned(), "tpl_src.png".to_owned())]);
        let graph = build(RenderMode::Img2img, &params, &uploaded, "cap_img2img");
        assert_eq!(graph, captured);
    }

    #[test]
    fn seed_steps_cfg_and_denoise_land_on_the_sampler() {
        let mut params = params();
        params.seed = u64::MAX;
        params.cfg = 4.5;
        for mode in [RenderMode::Img2img, RenderMode::Inpaint] {
            let graph = build(mode, &params, &uploads(), "p");
            let sampler = &one(&graph, "KSampler")["inputs"];
            assert_eq!(sampler["seed"], u64::MAX);
            assert_eq!(sampler["steps"], 12);
            assert_eq!(sampler["cfg"], 4.5);
            assert_eq!(sampler["denoise"], 0.55, "{mode:?} uses the job's denoise");
        }
        for mode in [RenderMode::Txt2img, RenderMode::Controlnet] {
            let graph = build(mode, &params, &uploads(), "p");
            let sampler = &one(&graph, "KSampler")["inputs"];
            assert_eq!(sampler["seed"], u64::MAX);
            assert_eq!(sampler["denoise"], 1.0, "{mode:?} starts from noise");
            let latent = &one(&graph, "EmptyLatentImage")["inputs"];
            assert_eq!(latent["width"], params.width);
            assert_eq!(latent["height"], params.height);
        }
    }

    #[test]
    fn a_lora_sits_between_the_checkpoint_and_its_consumers() {
        let mut params = params();
        let without = build(RenderMode::Txt2img, &params, &uploads(), "p");
        assert!(nodes_of(&without, "LoraLoader").is_empty());

        params.lora = Some(Lora {
            name: "detail.safetensors".into(),
            strength: -0.5,
        });
        for mode in [
            RenderMode::Txt2img,
            RenderMode::Img2img,
            RenderMode::Inpaint,
            RenderMode::Controlnet,
        ] {
            let graph = build(mode, &params, &uploads(), "p");
            let (lora_id, lora) = nodes_of(&graph, "LoraLoader")[0];
            let inputs = &lora["inputs"];
            assert_eq!(inputs["lora_name"], "detail.safetensors");
            assert_eq!(inputs["strength_model"], -0.5);
            assert_eq!(inputs["strength_clip"], -0.5);
            assert_eq!(inputs["model"], json!([CHECKPOINT, 0]));
            assert_eq!(inputs["clip"], json!([CHECKPOINT, 1]));
            assert_eq!(
                one(&graph, "KSampler")["inputs"]["model"],
                json!([lora_id, 0])
            );
            for (_, encode) in nodes_of(&graph, "CLIPTextEncode") {
                assert_eq!(encode["inputs"]["clip"], json!([lora_id, 1]));
            }
            // The VAE still comes from the checkpoint.
            assert_eq!(
                one(&graph, "VAEDecode")["inputs"]["vae"],
                json!([CHECKPOINT, 2])
            );
        }
    }

    #[test]
    fn image_inputs_name_the_uploaded_files() {
        let uploads = uploads();
        let graph = build(RenderMode::Inpaint, &params(), &uploads, "p");
        assert_eq!(
            one(&graph, "LoadImage")["inputs"]["image"],
            "job-init_image.png"
        );
        let mask = &one(&graph, "LoadImageMask")["inputs"];
        assert_eq!(mask["image"], "job-mask_image.png");
        let encode = &one(&graph, "VAEEncodeForInpaint")["inputs"];
        assert_eq!(encode["grow_mask_by"], INPAINT_GROW_MASK_BY);

        let graph = build(RenderMode::Controlnet, &params(), &uploads, "p");
        assert_eq!(
            one(&graph, "LoadImage")["inputs"]["image"],
            "job-control_image.png"
        );
        let loader = &one(&graph, "ControlNetLoader")["inputs"];
        assert_eq!(loader["control_net_name"], DEFAULT_CONTROLNET_MODEL);
        let (apply_id, _) = nodes_of(&graph, "ControlNetApplyAdvanced")[0];
        let sampler = &one(&graph, "KSampler")["inputs"];
        assert_eq!(sampler["positive"], json!([apply_id, 0]));
        assert_eq!(sampler["negative"], json!([apply_id, 1]));

        let graph = build(RenderMode::FaceSwap, &params(), &uploads, "p");
        let swap = &one(&graph, "ReActorFaceSwap")["inputs"];
        assert_eq!(swap["swap_model"], FACE_SWAP_MODEL);
        let target = swap["input_image"][0].as_str().unwrap();
        let source = swap["source_image"][0].as_str().unwrap();
        assert_eq!(graph[target]["inputs"]["image"], "job-init_image.png");
        assert_eq!(graph[source]["inputs"]["image"], "job-face_image.png");
        assert!(nodes_of(&graph, "KSampler").is_empty());
    }

    #[test]
    fn upscale_runs_no_sampler() {
        let graph = build(RenderMode::Upscale, &params(), &uploads(), "p");
        assert_eq!(graph.as_object().unwrap().len(), 4);
        assert_eq!(
            one(&graph, "UpscaleModelLoader")["inputs"]["model_name"],
            "4x-UltraSharp.pth"
        );
        let upscale = &one(&graph, "ImageUpscaleWithModel")["inputs"];
        let source = upscale["image"][0].as_str().unwrap();
        assert_eq!(graph[source]["class_type"], "LoadImage");
        assert_eq!(graph[source]["inputs"]["image"], "job-init_image.png");
        assert!(nodes_of(&graph, "KSampler").is_empty());
        assert!(nodes_of(&graph, "CheckpointLoaderSimple").is_empty());
    }

    #[test]
    fn names_derived_from_a_job_id_are_safe() {
        assert_eq!(filename_prefix("0190-ab_C"), "nebula-0190-ab_C");
        assert_eq!(
            filename_prefix("../../etc/passwd"),
            "nebula-______etc_passwd"
        );
        assert_eq!(upload_name("j/1", "init_image"), "j_1-init_image.png");
        assert_eq!(upload_name("", "mask_image"), "job-mask_image.png");
    }

    #[test]
    fn hash_is_stable_under_key_order_and_changes_with_content() {
        let a: Value =
            serde_json::from_str(r#"{"b": {"y": 1, "x": [1, {"q": 2, "p": 3}]}, "a": "s"}"#)
                .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a": "s", "b": {"x": [1, {"p": 3, "q": 2}], "y": 1}}"#)
                .unwrap();
        assert_eq!(workflow_hash(&a), workflow_hash(&b));
        let hash = workflow_hash(&a);
        assert_eq!(hash.len(), 64);
        assert!(
            hash.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // Canonical form of `{"a":"s","b":{"x":[1,{"p":3,"q":2}],"y":1}}`.
        let expected = Sha256::digest(br#"{"a":"s","b":{"x":[1,{"p":3,"q":2}],"y":1}}"#);
        let expected: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hash, expected);

        let graph = build(RenderMode::Txt2img, &params(), &uploads(), "p");
        let mut other = params();
        other.seed += 1;
        let changed = build(RenderMode::Txt2img, &other, &uploads(), "p");
        assert_eq!(workflow_hash(&graph), workflow_hash(&graph.clone()));
        assert_ne!(workflow_hash(&graph), workflow_hash(&changed));
    }
}
