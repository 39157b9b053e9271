//! The simulated GPU: a clearly labelled stand-in for machines without one. It reports progress
//! like a sampler would, honours cancellation, and produces a real PNG whose pixels are derived
//! from the prompt and seed alone (the same job draws the same bytes), with `tEXt` chunks saying
//! that no model ran; for an AnimateDiff job, a frame sequence (the picture panning slowly) as an
//! H.264 MP4 whose `comment` says the same.

use std::collections::HashMap;
use std::time::Duration;

use artifacts::png;
use async_trait::async_trait;
use bytes::Bytes;
use events::render::{RenderMode, RenderParams};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::backend::{
    Backend, BackendError, DeviceInfo, OutputImage, ProgressFn, RenderOutput, RenderRequest,
};
use crate::workflows;

/// The `Software` text every simulated image carries.
pub const SOFTWARE: &str = "Nebula simulated GPU (no real model ran)";

/// Upscaled outputs are capped at this many pixels a side.
pub const MAX_UPSCALE_SIDE: u32 = 2048;

/// The simulated backend. `step_time` is how long each sampler step takes.
#[derive(Debug, Clone)]
pub struct SimulatedGpu {
    pub vram_total_mib: u64,
    pub step_time: Duration,
}

/// The size of the image a mode produces: the job's size, or 4x it (capped) for upscales.
pub fn output_size(mode: RenderMode, params: &RenderParams) -> (u32, u32) {
    match mode {
        RenderMode::Upscale => (
            params.width.saturating_mul(4).min(MAX_UPSCALE_SIDE),
            params.height.saturating_mul(4).min(MAX_UPSCALE_SIDE),
        ),
        _ => (params.width, params.height),
    }
}

/// How many progress steps a mode reports: the sampler's steps, or a few tiles for the modes
/// that run no sampler.
fn progress_steps(mode: RenderMode, params: &RenderParams) -> u32 {
    match mode {
        RenderMode::Upscale => 4,
        RenderMode::FaceSwap => 2,
        _ => params.steps.max(1),
    }
}

#[async_trait]
impl Backend for SimulatedGpu {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn run(
        &self,
        request: &RenderRequest,
        progress: ProgressFn<'_>,
        cancel: CancellationToken,
    ) -> Result<RenderOutput, BackendError> {
        let params = &request.params;
        let steps = progress_steps(request.mode, params);
        // The device begins at once (no queue of its own).
        progress(0, steps);
        for step in 1..=steps {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(BackendError::Interrupted),
                () = tokio::time::sleep(self.step_time) => {}
            }
            progress(step, steps);
        }

        let (width, height) = output_size(request.mode, params);
        let prompt = params.prompt.clone();
        let seed = params.seed;
        let params_json = ascii_json(&serde_json::to_string(params).unwrap_or_default());
        let animation = (request.mode == RenderMode::AnimateDiff)
            .then(|| params.animation.clone().unwrap_or_default());
        let prefix = workflows::filename_prefix(&request.job_id);
        let render = tokio::task::spawn_blocking(move || {
            let rgb = draw(&prompt, seed, width, height);
            let Some(animation) = animation else {
                let png = png::encode_rgb(
                    width,
                    height,
                    &rgb,
                    &[("Software", SOFTWARE), ("prompt", &params_json)],
                );
                return Ok((format!("{prefix}_00001_.png"), "image/png", png));
            };
            let frames = pan(&rgb, width, height, animation.frames);
            media::clip::encode_rgb(
                width,
                height,
                animation.fps,
                &frames,
                &[("comment", SOFTWARE), ("description", &params_json)],
            )
            .map(|mp4| (format!("{prefix}_00001.mp4"), "video/mp4", mp4))
            .map_err(|err| BackendError::Execution {
                node_type: "VHS_VideoCombine".to_owned(),
                message: format!("the simulated clip could not be encoded: {err}"),
            })
        });
        let (filename, content_type, bytes) = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(BackendError::Interrupted),
            made = render => made.map_err(|err| {
                BackendError::Unavailable(format!("simulated render task failed: {err}"))
            })??,
        };

        // The graph ComfyUI would have run for this job, named as the ComfyUI backend names it.
        let uploaded: HashMap<String, String> = request
            .inputs
            .iter()
            .map(|input| {
                let name = workflows::upload_name(&request.job_id, &input.param);
                (input.param.clone(), name)
            })
            .collect();
        let prefix = workflows::filename_prefix(&request.job_id);
        let graph = workflows::build(request.mode, params, &uploaded, &prefix);
        Ok(RenderOutput {
            images: vec![OutputImage {
                filename,
                content_type: content_type.to_owned(),
                bytes: Bytes::from(bytes),
            }],
            workflow_hash: workflows::workflow_hash(&graph),
            backend_ref: None,
        })
    }

    async fn health(&self) -> Result<DeviceInfo, BackendError> {
        // A resident sixteenth, as a driver and an idle model would take.
        Ok(DeviceInfo {
            vram_total_mib: self.vram_total_mib,
            vram_free_mib: self.vram_total_mib - self.vram_total_mib / 16,
        })
    }
}

/// JSON with every non-ASCII character escaped (`\uXXXX`), so it fits a Latin-1 `tEXt` chunk.
/// Non-ASCII characters only occur inside JSON strings, where the escape means the same.
fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// `frames` frames of `rgb` panning right across an eighth of its width, wrapping around.
fn pan(rgb: &[u8], width: u32, height: u32, frames: u32) -> Vec<Vec<u8>> {
    let (w, h) = (width as usize, height as usize);
    let frames = frames.max(1) as usize;
    (0..frames)
        .map(|k| {
            let shift = k * w / 8 / frames;
            let mut frame = vec![0u8; w * h * 3];
            for y in 0..h {
                let row = &rgb[y * w * 3..(y + 1) * w * 3];
                let out = &mut frame[y * w * 3..(y + 1) * w * 3];
                out[shift * 3..].copy_from_slice(&row[..(w - shift) * 3]);
                out[..shift * 3].copy_from_slice(&row[(w - shift) * 3..]);
            }
            frame
        })
        .collect()
}

/// xorshift64*: small, fast and the same everywhere.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn color(&mut self) -> [u8; 3] {
        // Keep away from the darkest shades so the picture reads.
        [0, 1, 2].map(|_| 40 + self.below(216) as u8)
    }
}

/// Draws the picture for a prompt and seed: a gradient between two palette colours along a
/// seeded direction, and soft discs over it. Only integer and basic float arithmetic (no
/// transcendental functions), so the bytes are the same on every machine.
fn draw(prompt: &str, seed: u64, width: u32, height: u32) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(prompt.as_bytes());
    hasher.update([0]);
    hasher.update(seed.to_le_bytes());
    let digest = hasher.finalize();
    let mut state = [0u8; 8];
    state.copy_from_slice(&digest[..8]);
    let mut rng = XorShift::new(u64::from_le_bytes(state));
    let palette: Vec<[u8; 3]> = (0..5).map(|_| rng.color()).collect();

    let (w, h) = (width as usize, height as usize);
    let mut rgb = vec![0u8; w * h * 3];
    if w == 0 || h == 0 {
        return rgb;
    }

    // Gradient along (dx, dy).
    let mut dx = rng.below(513) as i64 - 256;
    let dy = rng.below(513) as i64 - 256;
    if dx == 0 && dy == 0 {
        dx = 1;
    }
    let corners = [
        0,
        dx * (w as i64 - 1),
        dy * (h as i64 - 1),
        dx * (w as i64 - 1) + dy * (h as i64 - 1),
    ];
    let low = corners.iter().copied().min().unwrap_or(0);
    let high = corners.iter().copied().max().unwrap_or(1);
    let span = (high - low).max(1);
    let (from, to) = (palette[0], palette[1]);
    for y in 0..h {
        for x in 0..w {
            let along = x as i64 * dx + y as i64 * dy - low;
            let t = (along * 256 / span) as u32;
            let pixel = (y * w + x) * 3;
            for channel in 0..3 {
                let a = u32::from(from[channel]);
                let b = u32::from(to[channel]);
                rgb[pixel + channel] = ((a * (256 - t) + b * t) >> 8) as u8;
            }
        }
    }

    // Soft discs.
    let short_side = width.min(height).max(1) as u64;
    let discs = 5 + rng.below(6);
    for _ in 0..discs {
        let cx = rng.below(width as u64) as f32;
        let cy = rng.below(height as u64) as f32;
        let radius = (short_side / 10 + rng.below(short_side / 4 + 1)).max(2) as f32;
        let feather = (radius * 0.3).max(1.0);
        let opacity = 140 + rng.below(90) as u32; // of 256
        let color = palette[2 + rng.below(3) as usize];
        let x0 = (cx - radius).max(0.0) as usize;
        let x1 = ((cx + radius) as usize).min(w.saturating_sub(1));
        let y0 = (cy - radius).max(0.0) as usize;
        let y1 = ((cy + radius) as usize).min(h.saturating_sub(1));
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (ox, oy) = (x as f32 - cx, y as f32 - cy);
                let distance = (ox * ox + oy * oy).sqrt();
                if distance >= radius {
                    continue;
                }
                let edge = ((radius - distance) / feather).min(1.0);
                let alpha = (edge * opacity as f32) as u32;
                let pixel = (y * w + x) * 3;
                for channel in 0..3 {
                    let under = u32::from(rgb[pixel + channel]);
                    let over = u32::from(color[channel]);
                    rgb[pixel + channel] = ((under * (256 - alpha) + over * alpha) >> 8) as u8;
                }
            }
        }
    }
    rgb
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;
    use crate::artifacts::png_size;

    fn decode_rgb(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        png::decode_rgb(bytes).expect("an 8-bit RGB PNG")
    }

    fn request(mode: RenderMode, params: RenderParams) -> RenderRequest {
        RenderRequest {
            job_id: "0190b5c2-job".into(),
            mode,
            params,
            inputs: Vec::new(),
        }
    }

    fn params(seed: u64) -> RenderParams {
        RenderParams {
            prompt: "a red fox in fresh snow".into(),
            seed,
            steps: 5,
            width: 96,
            height: 64,
            ..RenderParams::default()
        }
    }

    fn gpu() -> SimulatedGpu {
        SimulatedGpu {
            vram_total_mib: 8192,
            step_time: Duration::from_millis(1),
        }
    }

    #[test]
    fn encoded_png_is_well_formed_and_round_trips() {
        let (width, height) = (7, 5);
        let rgb: Vec<u8> = (0..width * height * 3)
            .map(|i| (i * 37 % 251) as u8)
            .collect();
        let bytes = png::encode_rgb(
            width,
            height,
            &rgb,
            &[("Software", SOFTWARE), ("Title", "Café ☕")],
        );
        let chunks = png::chunks(&bytes).expect("well formed, every CRC right");
        let kinds: Vec<&[u8; 4]> = chunks.iter().map(|(kind, _)| kind).collect();
        assert_eq!(kinds, [b"IHDR", b"tEXt", b"iTXt", b"IDAT", b"IEND"]);
        assert_eq!(chunks[0].1, [0, 0, 0, 7, 0, 0, 0, 5, 8, 2, 0, 0, 0]);
        assert_eq!(png_size(&bytes), Some((7, 5)));
        assert_eq!(
            png::text_chunks(&bytes),
            [
                ("Software".to_owned(), SOFTWARE.to_owned()),
                ("Title".to_owned(), "Café ☕".to_owned())
            ]
        );
        assert!(chunks[2].1.ends_with("Café ☕".as_bytes()));
        assert_eq!(decode_rgb(&bytes), (width, height, rgb));
    }

    #[tokio::test]
    async fn run_produces_a_labelled_png_of_the_requested_size() {
        let progress = Mutex::new(Vec::new());
        let mut params = params(42);
        params.prompt = "ünïcode prompt".into();
        let output = gpu()
            .run(
                &request(RenderMode::Txt2img, params.clone()),
                &|value, max| progress.lock().unwrap().push((value, max)),
                CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(
            *progress.lock().unwrap(),
            (0..=5).map(|step| (step, 5)).collect::<Vec<_>>()
        );
        assert_eq!(output.images.len(), 1);
        let image = &output.images[0];
        assert_eq!(image.content_type, "image/png");
        assert_eq!(image.filename, "nebula-0190b5c2-job_00001_.png");
        let (width, height, rgb) = decode_rgb(&image.bytes);
        assert_eq!((width, height), (96, 64));
        assert_eq!(rgb.len(), 96 * 64 * 3);
        let texts = png::text_chunks(&image.bytes);
        assert_eq!(texts[0], ("Software".to_owned(), SOFTWARE.to_owned()));
        assert_eq!(texts[1].0, "prompt");
        let stored: RenderParams = serde_json::from_str(&texts[1].1).unwrap();
        assert_eq!(stored, params);
        let graph = workflows::build(
            RenderMode::Txt2img,
            &params,
            &HashMap::new(),
            "nebula-0190b5c2-job",
        );
        assert_eq!(output.workflow_hash, workflows::workflow_hash(&graph));
    }

    #[tokio::test]
    async fn same_seed_same_bytes_other_seed_another_picture() {
        let run = |seed| async move {
            let output = gpu()
                .run(
                    &request(RenderMode::Txt2img, params(seed)),
                    &|_, _| {},
                    CancellationToken::new(),
                )
                .await
                .unwrap();
            output.images[0].bytes.clone()
        };
        let first = run(7).await;
        assert_eq!(first, run(7).await);
        let other = run(8).await;
        assert_ne!(first, other);
        // Visibly different: most pixels change.
        let (_, _, a) = decode_rgb(&first);
        let (_, _, b) = decode_rgb(&other);
        let differing = a
            .chunks(3)
            .zip(b.chunks(3))
            .filter(|(p, q)| p.iter().zip(q.iter()).any(|(x, y)| x.abs_diff(*y) > 8))
            .count();
        assert!(
            differing > a.len() / 3 / 2,
            "only {differing} pixels differ"
        );
        // A different prompt with the same seed differs too.
        let mut params = params(7);
        params.prompt = "a blue whale".into();
        let whale = gpu()
            .run(
                &request(RenderMode::Txt2img, params),
                &|_, _| {},
                CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_ne!(whale.images[0].bytes, first);
    }

    #[tokio::test]
    async fn an_animatediff_job_is_a_labelled_clip_of_its_frames() {
        let mut params = params(3);
        params.animation = Some(events::render::Animation {
            frames: 10,
            fps: 5,
            ..events::render::Animation::default()
        });
        let run = || async {
            gpu()
                .run(
                    &request(RenderMode::AnimateDiff, params.clone()),
                    &|_, _| {},
                    CancellationToken::new(),
                )
                .await
                .unwrap()
        };
        let output = run().await;
        let clip = &output.images[0];
        assert_eq!(clip.content_type, "video/mp4");
        assert_eq!(clip.filename, "nebula-0190b5c2-job_00001.mp4");
        // The same job, the same bytes.
        assert_eq!(clip.bytes, run().await.images[0].bytes);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.mp4");
        std::fs::write(&path, &clip.bytes).unwrap();
        let decoded = media::clip::decode(&path, 100).unwrap();
        assert_eq!(decoded.frames.len(), 10);
        assert!((decoded.fps - 5.0).abs() < 1e-6);
        assert_eq!(
            (decoded.frames[0].width(), decoded.frames[0].height()),
            (96, 64)
        );
        // It moves: the last frame is not the first.
        assert_ne!(decoded.frames[0].data(0), decoded.frames[9].data(0));
        // Labelled: the MP4 says no model ran.
        let labelled = clip
            .bytes
            .windows(SOFTWARE.len())
            .any(|window| window == SOFTWARE.as_bytes());
        assert!(labelled, "the clip does not say it was simulated");
    }

    #[test]
    fn upscale_is_four_times_the_size_capped() {
        let mut params = params(1);
        params.width = 256;
        params.height = 128;
        assert_eq!(output_size(RenderMode::Upscale, &params), (1024, 512));
        assert_eq!(output_size(RenderMode::Txt2img, &params), (256, 128));
        params.width = 1024;
        params.height = 4096;
        assert_eq!(output_size(RenderMode::Upscale, &params), (2048, 2048));
    }

    #[tokio::test]
    async fn upscale_run_outputs_the_upscaled_size() {
        let mut params = params(1);
        params.width = 64;
        params.height = 32;
        let output = gpu()
            .run(
                &request(RenderMode::Upscale, params),
                &|_, _| {},
                CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(png_size(&output.images[0].bytes), Some((256, 128)));
    }

    #[tokio::test]
    async fn cancel_interrupts_promptly() {
        let gpu = SimulatedGpu {
            vram_total_mib: 8192,
            step_time: Duration::from_secs(3600),
        };
        let cancel = CancellationToken::new();
        let started = Instant::now();
        let request = request(RenderMode::Txt2img, params(3));
        let run = gpu.run(&request, &|_, _| {}, cancel.clone());
        let (result, ()) = tokio::join!(run, async { cancel.cancel() });
        assert!(
            matches!(result, Err(BackendError::Interrupted)),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn cancel_mid_run_stops_at_the_next_step() {
        let gpu = SimulatedGpu {
            vram_total_mib: 8192,
            step_time: Duration::from_millis(20),
        };
        let cancel = CancellationToken::new();
        let seen = Mutex::new(Vec::new());
        let result = gpu
            .run(
                &request(RenderMode::Txt2img, params(3)),
                &|value, _| {
                    seen.lock().unwrap().push(value);
                    if value == 2 {
                        cancel.cancel();
                    }
                },
                cancel.clone(),
            )
            .await;
        assert!(
            matches!(result, Err(BackendError::Interrupted)),
            "{result:?}"
        );
        assert_eq!(*seen.lock().unwrap(), [0, 1, 2]);
    }

    #[tokio::test]
    async fn health_reports_the_configured_vram() {
        let device = gpu().health().await.unwrap();
        assert_eq!(device.vram_total_mib, 8192);
        assert!(device.vram_free_mib > 0 && device.vram_free_mib < 8192);
        assert_eq!(gpu().name(), "simulated");
    }
}
