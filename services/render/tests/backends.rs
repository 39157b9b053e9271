//! Both backends end to end: `ComfyUi` against the fake ComfyUI (which follows the captured
//! 0.3.64 protocol, error paths included), and the simulated GPU.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use events::render::{Animation, ImageRef, Lora, RenderMode, RenderParams};
use render::artifacts::png::encode_rgb;
use render::backend::{Backend, BackendError, InputImage, RenderRequest};
use render::comfyui::ComfyUi;
use render::simulated::SimulatedGpu;
use render::workflows;
use testkit::comfyui::{FakeComfy, FakeComfyOptions};
use tokio_util::sync::CancellationToken;

const CHECKPOINT: &str = "v1-5-pruned-emaonly.safetensors";
const UPSCALER: &str = "RealESRGAN_x4plus.pth";
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

async fn fake() -> FakeComfy {
    FakeComfy::start_with(FakeComfyOptions {
        vram_total_mib: 24_576,
        vram_free_mib: 20_480,
        step_delay: Duration::from_millis(5),
        checkpoints: vec![CHECKPOINT.to_owned()],
        upscale_models: vec![UPSCALER.to_owned()],
        ..FakeComfyOptions::default()
    })
    .await
}

fn params() -> RenderParams {
    RenderParams {
        prompt: "a lighthouse at dusk".into(),
        negative_prompt: "blurry".into(),
        seed: 42,
        steps: 6,
        width: 64,
        height: 64,
        checkpoint: CHECKPOINT.into(),
        ..RenderParams::default()
    }
}

fn request(job_id: &str, mode: RenderMode, params: RenderParams) -> RenderRequest {
    RenderRequest {
        job_id: job_id.into(),
        mode,
        params,
        inputs: Vec::new(),
    }
}

fn input_png(param: &str) -> InputImage {
    let rgb: Vec<u8> = (0..16 * 16 * 3).map(|i| (i % 256) as u8).collect();
    let bytes = Bytes::from(encode_rgb(16, 16, &rgb, &[]));
    InputImage {
        param: param.into(),
        sha256: render::artifacts::sha256_hex(&bytes),
        bytes,
    }
}

/// Progress reports, recorded.
#[derive(Default)]
struct Progress(Mutex<Vec<(u32, u32)>>);

impl Progress {
    fn record(&self, value: u32, max: u32) {
        self.0.lock().unwrap().push((value, max));
    }

    fn seen(&self) -> Vec<(u32, u32)> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn txt2img_runs_end_to_end() {
    let fake = fake().await;
    let comfy = ComfyUi::new(&fake.url()).unwrap();
    let progress = Progress::default();
    let request = request("job-t2i", RenderMode::Txt2img, params());

    let output = comfy
        .run(
            &request,
            &|v, m| progress.record(v, m),
            CancellationToken::new(),
        )
        .await
        .unwrap();

    // Begun (0), then progress climbs step by step to the sampler's steps.
    let seen = progress.seen();
    assert_eq!(seen.first(), Some(&(0, 1)), "the prompt's beginning, first");
    let seen = &seen[1..];
    assert!(!seen.is_empty(), "no progress reported");
    assert!(seen.iter().all(|&(_, max)| max == 6), "{seen:?}");
    assert!(
        seen.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "{seen:?}"
    );
    assert_eq!(seen.last(), Some(&(6, 6)));

    // One PNG.
    assert_eq!(output.images.len(), 1);
    let image = &output.images[0];
    assert!(image.bytes.starts_with(PNG_SIGNATURE), "not a PNG");
    assert_eq!(image.content_type, "image/png");
    assert!(
        image.filename.starts_with("nebula-job-t2i"),
        "{}",
        image.filename
    );
    assert!(output.backend_ref.is_some());

    // ComfyUI got exactly the graph the template builds, and the hash pins it.
    let accepted = fake.accepted_prompts();
    assert_eq!(accepted.len(), 1);
    let expected = workflows::build(
        RenderMode::Txt2img,
        &request.params,
        &HashMap::new(),
        &workflows::filename_prefix("job-t2i"),
    );
    assert_eq!(accepted[0], expected);
    assert_eq!(output.workflow_hash, workflows::workflow_hash(&accepted[0]));
    assert!(fake.uploads().is_empty());
    assert_eq!(fake.interrupts(), 0);
}

#[tokio::test]
async fn an_output_larger_than_the_cap_fails_the_job_unread() {
    let fake = fake().await;
    let comfy = ComfyUi::new(&fake.url()).unwrap().with_max_output(100);
    let request = request("job-big", RenderMode::Txt2img, params());
    let err = comfy
        .run(&request, &|_, _| {}, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("is larger than the 100 bytes a worker takes"),
        "{err}"
    );
}

#[tokio::test]
async fn img2img_uploads_its_input_and_loads_it_by_name() {
    let fake = fake().await;
    let comfy = ComfyUi::new(&fake.url()).unwrap();
    let input = input_png("init_image");
    let mut params = params();
    params.denoise = 0.6;
    params.init_image = Some(ImageRef {
        sha256: input.sha256.clone(),
    });
    let mut request = request("job-i2i", RenderMode::Img2img, params);
    request.inputs.push(input.clone());

    let output = comfy
        .run(&request, &|_, _| {}, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(output.images.len(), 1);

    let uploads = fake.uploads();
    assert_eq!(uploads.len(), 1);
    let (name, bytes) = &uploads[0];
    assert_eq!(name, &workflows::upload_name("job-i2i", "init_image"));
    assert_eq!(bytes[..], input.bytes[..]);

    let accepted = &fake.accepted_prompts()[0];
    let load = accepted
        .as_object()
        .unwrap()
        .values()
        .find(|node| node["class_type"] == "LoadImage")
        .expect("a LoadImage node");
    assert_eq!(load["inputs"]["image"], name.as_str());
    let sampler = accepted
        .as_object()
        .unwrap()
        .values()
        .find(|node| node["class_type"] == "KSampler")
        .unwrap();
    assert_eq!(sampler["inputs"]["denoise"], 0.6);
}

#[tokio::test]
async fn every_mode_runs_with_a_lora_and_its_inputs() {
    let fake = fake().await;
    let comfy = ComfyUi::new(&fake.url()).unwrap();
    for (index, mode) in RenderMode::ALL.into_iter().enumerate() {
        let mut params = params();
        params.lora = Some(Lora {
            name: "detail_tweaker.safetensors".into(),
            strength: 0.8,
        });
        params.upscale_model = Some(UPSCALER.into());
        if mode == RenderMode::AnimateDiff {
            params.animation = Some(Animation {
                frames: 4,
                ..Animation::default()
            });
        }
        let job_id = format!("job-mode-{index}");
        let mut request = request(&job_id, mode, params);
        for param in mode.required_images() {
            let input = input_png(param);
            request.params = with_image(request.params, param, &input.sha256);
            request.inputs.push(input);
        }
        request.params.validate(mode).unwrap();

        let output = comfy
            .run(&request, &|_, _| {}, CancellationToken::new())
            .await
            .unwrap_or_else(|err| panic!("{mode:?}: {err}"));

        assert_eq!(output.images.len(), 1, "{mode:?}");
        let bytes = &output.images[0].bytes;
        if mode == RenderMode::AnimateDiff {
            assert_eq!(&bytes[4..8], b"ftyp", "an MP4");
        } else {
            assert!(bytes.starts_with(PNG_SIGNATURE), "{mode:?}");
        }
        let accepted = fake.accepted_prompts().pop().unwrap();
        assert_eq!(output.workflow_hash, workflows::workflow_hash(&accepted));
    }
    assert_eq!(fake.completed(), RenderMode::ALL.len());
}

#[tokio::test]
async fn an_animatediff_clip_comes_back_as_the_mp4_videohelpersuite_wrote() {
    let fake = fake().await;
    let comfy = ComfyUi::new(&fake.url()).unwrap();
    let mut params = params();
    params.animation = Some(Animation {
        frames: 12,
        fps: 6,
        ..Animation::default()
    });
    let progress = Progress::default();
    let output = comfy
        .run(
            &request("job-clip", RenderMode::AnimateDiff, params.clone()),
            &|v, m| progress.record(v, m),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let clip = &output.images[0];
    assert_eq!(clip.content_type, "video/mp4");
    assert_eq!(clip.filename, "nebula-job-clip_00001.mp4");
    assert_eq!(progress.seen().last(), Some(&(6, 6)), "the sampler's steps");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
    std::fs::write(&path, &clip.bytes).unwrap();
    let frames = media::clip::decode(&path, 100).unwrap();
    assert_eq!(frames.frames.len(), 12, "one frame per latent of the batch");
    assert!((frames.fps - 6.0).abs() < 1e-6);
    assert_eq!(
        (frames.frames[0].width(), frames.frames[0].height()),
        (64, 64)
    );

    // A motion module the server does not have is refused before anything runs.
    fake.set_models("animatediff_models", ["mm_sd_v15_v2.ckpt"]);
    params.animation.as_mut().unwrap().motion_module = "mm_missing.ckpt".into();
    let err = comfy
        .run(
            &request("job-clip-2", RenderMode::AnimateDiff, params),
            &|_, _| {},
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("ADE_AnimateDiffLoaderGen1") && text.contains("mm_missing.ckpt"),
        "{text}"
    );
}

fn with_image(mut params: RenderParams, param: &str, sha256: &str) -> RenderParams {
    let image = Some(ImageRef {
        sha256: sha256.to_owned(),
    });
    match param {
        "init_image" => params.init_image = image,
        "mask_image" => params.mask_image = image,
        "control_image" => params.control_image = image,
        "face_image" => params.face_image = image,
        other => panic!("unknown image parameter {other}"),
    }
    params
}

#[tokio::test]
async fn cancel_takes_a_queued_prompt_out_of_the_queue() {
    let fake = fake().await;
    fake.set_hold(true);
    let comfy = ComfyUi::new(&fake.url()).unwrap();
    let progress = Progress::default();
    let report = |v, m| progress.record(v, m);
    let first_request = request("job-first", RenderMode::Txt2img, params());
    let second_request = request("job-second", RenderMode::Txt2img, params());
    let cancel = CancellationToken::new();

    let first = comfy.run(&first_request, &report, CancellationToken::new());
    let second = async {
        // The first holds the (single) executor, so the second waits in ComfyUI's queue.
        testkit::wait_until("the first prompt to run", testkit::DEFAULT_WAIT, || async {
            (!progress.seen().is_empty()).then_some(())
        })
        .await;
        let run = comfy.run(&second_request, &|_, _| {}, cancel.clone());
        let canceller = async {
            testkit::wait_until(
                "the second prompt queued",
                testkit::DEFAULT_WAIT,
                || async { (fake.accepted_prompts().len() == 2).then_some(()) },
            )
            .await;
            cancel.cancel();
        };
        let (result, ()) = tokio::join!(run, canceller);
        fake.set_hold(false);
        result
    };
    let (first, second) = tokio::join!(first, second);

    assert!(
        matches!(second, Err(BackendError::Interrupted)),
        "{second:?}"
    );
    assert_eq!(first.unwrap().images.len(), 1);
    assert_eq!(
        fake.interrupts(),
        0,
        "a queued prompt is deleted, not interrupted"
    );
    assert_eq!(fake.completed(), 1, "the cancelled prompt never ran");
}

#[tokio::test]
async fn an_unknown_checkpoint_is_rejected_with_node_errors() {
    let fake = fake().await;
    let comfy = ComfyUi::new(&fake.url()).unwrap();
    let mut params = params();
    params.checkpoint = "nope.safetensors".into();

    let result = comfy
        .run(
            &request("job-bad", RenderMode::Txt2img, params),
            &|_, _| {},
            CancellationToken::new(),
        )
        .await;

    match result {
        Err(BackendError::Rejected { message, details }) => {
            assert!(message.contains("nope.safetensors"), "{message}");
            let node = &details["4"];
            assert_eq!(node["class_type"], "CheckpointLoaderSimple", "{details:#}");
            assert!(!node["errors"].as_array().unwrap().is_empty());
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(fake.accepted_prompts().is_empty());
}

#[tokio::test]
async fn a_missing_upscale_model_fails_at_execution() {
    let fake = fake().await;
    let comfy = ComfyUi::new(&fake.url()).unwrap();
    let input = input_png("init_image");
    let mut params = params();
    params.upscale_model = Some("missing_x4.pth".into());
    params.init_image = Some(ImageRef {
        sha256: input.sha256.clone(),
    });
    let mut request = request("job-up", RenderMode::Upscale, params);
    request.inputs.push(input);

    let result = comfy
        .run(&request, &|_, _| {}, CancellationToken::new())
        .await;

    match result {
        Err(err @ BackendError::Execution { .. }) => assert!(!err.is_retryable()),
        other => panic!("expected Execution, got {other:?}"),
    }
    // Model names are checked late: ComfyUI took the prompt.
    assert_eq!(fake.accepted_prompts().len(), 1);
}

#[tokio::test]
async fn cancel_interrupts_a_running_prompt() {
    let fake = fake().await;
    fake.set_hold(true);
    let comfy = ComfyUi::new(&fake.url()).unwrap();
    let progress = Progress::default();
    let cancel = CancellationToken::new();
    let request = request("job-cancel", RenderMode::Txt2img, params());

    let report = |v, m| progress.record(v, m);
    let run = comfy.run(&request, &report, cancel.clone());
    let canceller = async {
        testkit::wait_until("a step", testkit::DEFAULT_WAIT, || async {
            progress.seen().iter().any(|(v, _)| *v > 0).then_some(())
        })
        .await;
        cancel.cancel();
    };
    let (result, ()) = tokio::join!(run, canceller);

    assert!(
        matches!(result, Err(BackendError::Interrupted)),
        "{result:?}"
    );
    assert_eq!(fake.interrupts(), 1);
    assert_eq!(
        progress.seen().len(),
        2,
        "begun, then held after the first step"
    );
}

#[tokio::test]
async fn a_dying_server_makes_the_run_unavailable() {
    let fake = fake().await;
    fake.set_hold(true);
    let comfy = ComfyUi::new(&fake.url()).unwrap();
    let progress = Progress::default();
    let request = request("job-kill", RenderMode::Txt2img, params());

    let report = |v, m| progress.record(v, m);
    let run = comfy.run(&request, &report, CancellationToken::new());
    let killer = async {
        testkit::wait_until("progress", testkit::DEFAULT_WAIT, || async {
            (!progress.seen().is_empty()).then_some(())
        })
        .await;
        fake.kill().await;
    };
    let (result, ()) = tokio::join!(run, killer);

    match result {
        Err(err @ BackendError::Unavailable(_)) => {
            assert!(err.is_retryable());
            assert!(err.to_string().contains("lost mid-job"), "{err}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn health_reports_the_servers_vram() {
    let fake = fake().await;
    let comfy = ComfyUi::new(&fake.url()).unwrap();
    let device = comfy.health().await.unwrap();
    assert_eq!(device.vram_total_mib, 24_576);
    assert_eq!(device.vram_free_mib, 20_480);
}

#[tokio::test]
async fn nobody_listening_is_unavailable() {
    let url = format!("http://127.0.0.1:{}", testkit::free_port());
    let comfy = ComfyUi::new(&url).unwrap();
    let health = comfy.health().await;
    assert!(
        matches!(health, Err(BackendError::Unavailable(_))),
        "{health:?}"
    );
    let run = comfy
        .run(
            &request("job-none", RenderMode::Txt2img, params()),
            &|_, _| {},
            CancellationToken::new(),
        )
        .await;
    assert!(matches!(run, Err(BackendError::Unavailable(_))), "{run:?}");
}

#[tokio::test]
async fn the_simulated_gpu_renders_a_labelled_png() {
    let backend: Box<dyn Backend> = Box::new(SimulatedGpu {
        vram_total_mib: 8_192,
        step_time: Duration::from_millis(2),
    });
    assert_eq!(backend.name(), "simulated");
    let progress = Progress::default();
    let output = backend
        .run(
            &request("job-sim", RenderMode::Txt2img, params()),
            &|v, m| progress.record(v, m),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        progress.seen(),
        (0..=6).map(|step| (step, 6)).collect::<Vec<_>>()
    );
    let image = &output.images[0];
    assert!(image.bytes.starts_with(PNG_SIGNATURE));
    assert_eq!(render::artifacts::png_size(&image.bytes), Some((64, 64)));
    let software = b"Software\0Nebula simulated GPU (no real model ran)";
    assert!(
        image
            .bytes
            .windows(software.len())
            .any(|window| window == software),
        "no Software tEXt chunk"
    );
    assert_eq!(backend.health().await.unwrap().vram_total_mib, 8_192);
}
