//! The node classes at work: what each computes from its inputs (sizes, seeds and colours that
//! flow along the links), the errors ComfyUI's nodes raise, and `SaveImage`/`PreviewImage`
//! writing real PNGs whose pixels derive from the graph.

use std::collections::HashMap;

use artifacts::png;
use axum::body::Bytes;
use serde_json::{Value, json};

use super::graph::{GraphNode, link};
use super::io::{Folder, normalize_subfolder};
use super::python::{py_as_f64, py_int, py_str};
use super::{QueueItem, ServerState, Shared};

/// What flows along a link: enough to size and paint the images a graph makes.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Artifact {
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
pub(super) enum NodeFailure {
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

pub(super) fn node_error(
    exception_type: &str,
    exception_message: String,
    frames: &[&str],
) -> NodeFailure {
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

/// What a node does once [`evaluate`] has looked at it.
pub(super) enum Evaluation {
    /// Its outputs, after `steps` progress reports (sampler steps, upscaler tiles; 0 for the
    /// others).
    Outputs { steps: u32, outputs: Vec<Artifact> },
    /// `SaveImage` / `PreviewImage`: these images to save ([`save_images`]).
    Save(Artifact),
}

/// What a node of each known class computes, from its inputs and what its links carry.
pub(super) fn evaluate(
    shared: &Shared,
    node: &GraphNode,
    values: &HashMap<String, Vec<Artifact>>,
) -> Result<Evaluation, NodeFailure> {
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
        .filter_map(|(from, slot)| values.get(from)?.get(slot).copied())
        .collect();
    let input = |name: &str| -> Artifact {
        node.input(name)
            .and_then(link)
            .and_then(|(from, slot)| values.get(from)?.get(slot).copied())
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
    let mut steps = 0;

    match class {
        "CheckpointLoaderSimple" => {
            let name = text("ckpt_name");
            if name.contains("corrupt") {
                return Err(node_error(
                    "ValueError",
                    format!(
                        "Error while deserializing header: MetadataIncompleteBuffer\n\nFile path: \
                     ComfyUI/models/checkpoints/{name}\n\nThe safetensors file is \
                     corrupt/incomplete. Check the file size and make sure you have \
                     copied/downloaded it correctly."
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
                    format!("Model in folder 'upscale_models' with filename '{name}' not found."),
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
        "KSampler" => steps = int("steps").max(1),
        "ImageUpscaleWithModel" => {
            let model = input("upscale_model");
            let image = input("image");
            // One step per tile.
            steps = image.batch.max(1)
                * image.height.div_ceil(480).max(1)
                * image.width.div_ceil(480).max(1);
            let scale = model.scale.max(1);
            artifact.width = image.width * scale;
            artifact.height = image.height * scale;
        }
        "SaveImage" | "PreviewImage" | "VHS_VideoCombine" => {
            return Ok(Evaluation::Save(input("images")));
        }
        _ => {}
    }
    let outputs = vec![artifact; output_count.max(1)];
    Ok(Evaluation::Outputs { steps, outputs })
}

/// `SaveImage.save_images` (and `PreviewImage`'s, into `temp`): one PNG per image of the
/// batch, `{prefix}_{counter:05}_.png`, the counter following the files already there.
pub(super) async fn save_images(
    shared: &Shared,
    item: &QueueItem,
    node: &GraphNode,
    images: Artifact,
) -> Result<Value, NodeFailure> {
    if node.class() == "VHS_VideoCombine" {
        return save_video(shared, node, images).await;
    }
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
    let (subfolder, filename) = split_prefix(&prefix)?;

    let mut text = vec![(
        "prompt".to_owned(),
        serde_json::to_string(&item.prompt).unwrap_or_default(),
    )];
    if let Some(extra) = item.extra_data["extra_pnginfo"].as_object() {
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

/// `folder_paths.get_save_image_path`'s split of a filename prefix into its subfolder and file
/// name, refusing one that climbs out of the output folder.
fn split_prefix(prefix: &str) -> Result<(String, String), NodeFailure> {
    let (subfolder, filename) = match prefix.rsplit_once('/') {
        Some((subfolder, filename)) => (normalize_subfolder(subfolder), filename.to_owned()),
        None => (Some(String::new()), prefix.to_owned()),
    };
    let Some(subfolder) = subfolder else {
        return Err(node_error(
            "Exception",
            format!(
                "**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: ComfyUI/output/{prefix}\n         output_dir: ComfyUI/output"
            ),
            &[
                "  File \"ComfyUI/folder_paths.py\", line 446, in get_save_image_path\n    <source line>\n",
            ],
        ));
    };
    Ok((subfolder, filename))
}

/// VideoHelperSuite's `VHS_VideoCombine` with `video/h264-mp4`: the batch's frames as one
/// H.264 MP4 at `frame_rate`, `{prefix}_{counter:05}.mp4` in the output folder (or temp when
/// `save_output` is false), reported under `gifs` with its `format` and `frame_rate`. The
/// other formats need encoders this fake does not carry and fail as a missing ffmpeg would.
async fn save_video(
    shared: &Shared,
    node: &GraphNode,
    images: Artifact,
) -> Result<Value, NodeFailure> {
    let prefix = node
        .input("filename_prefix")
        .map_or_else(|| "AnimateDiff".to_owned(), py_str);
    let format = node.input("format").map(py_str).unwrap_or_default();
    let frame_rate = node.input("frame_rate").and_then(py_as_f64).unwrap_or(8.0);
    let save_output = node.input("save_output") != Some(&Value::Bool(false));
    if format != "video/h264-mp4" {
        return Err(node_error(
            "Exception",
            format!("Unsupported format {format}: this server's ffmpeg has no encoder for it"),
            &[
                "  File \"ComfyUI/custom_nodes/ComfyUI-VideoHelperSuite/videohelpersuite/nodes.py\", line 479, in combine_video\n    <source line>\n",
            ],
        ));
    }
    let (subfolder, filename) = split_prefix(&prefix)?;
    let folder = if save_output {
        Folder::Output
    } else {
        Folder::Temp
    };
    let batch = images.batch.max(1);
    let fps = (frame_rate.round() as u32).max(1);
    let encoded = tokio::task::spawn_blocking(move || {
        let (width, height) = (images.width.max(2) & !1, images.height.max(2) & !1);
        let frames: Vec<Vec<u8>> = (0..batch)
            .map(|index| paint(&images, width, height, index))
            .collect();
        media::clip::encode_rgb(width, height, fps, &frames, &[])
    })
    .await
    .map_err(|_| NodeFailure::Killed)?
    .map_err(|err| {
        node_error(
            "RuntimeError",
            format!("ffmpeg failed: {err}"),
            &["  File \"ComfyUI/custom_nodes/ComfyUI-VideoHelperSuite/videohelpersuite/nodes.py\", line 520, in combine_video\n    <source line>\n"],
        )
    })?;
    let mut state = shared.state();
    let counter = state
        .files
        .keys()
        .filter(|(f, s, _)| *f == folder && *s == subfolder)
        .filter_map(|(_, _, name)| {
            let rest = name.strip_prefix(&filename)?.strip_prefix('_')?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        })
        .max()
        .map_or(1, |highest| highest + 1);
    let file = format!("{filename}_{counter:05}.mp4");
    state.files.insert(
        (folder, subfolder.clone(), file.clone()),
        Bytes::from(encoded),
    );
    Ok(json!({ "gifs": [{
        "filename": file,
        "subfolder": subfolder,
        "type": folder.name(),
        "format": format,
        "frame_rate": frame_rate,
        "workflow": format!("{filename}_{counter:05}.png"),
        "fullpath": format!("ComfyUI/{}/{file}", folder.name()),
    }] }))
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
pub(super) fn fnv1a<P: AsRef<[u8]>>(parts: &[P]) -> u64 {
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
