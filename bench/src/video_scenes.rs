//! P14: a video project's end-to-end time per scene on the simulated GPU — `nebula up` taking a
//! six-scene script (9:16, stills, espeak-ng narration) from the REST request to `completed`
//! (the render queue, the simulated renders, narration, assembly, thumbnail, every step on the
//! log) — against the same work done directly in one process in the same run: six simulated
//! renders one after another, six narrations, the same assembly and thumbnail.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::Env;
use events::render::{RenderMode, RenderParams};
use media::assemble::{Assembly, Frame, Motion, Scene};
use media::tts::{EspeakNg, Tts};
use render::Backend;
use render::backend::RenderRequest;
use render::simulated::SimulatedGpu;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use bench::gateway::GatewayProcess;

pub(crate) const SCENES: usize = 6;
/// The simulated sampler: `nebula up`'s default step time, and the studio's default steps.
const STEP_MS: u64 = 120;
const STEPS: u32 = 20;
const FPS: u32 = 30;

fn script() -> String {
    (1..=SCENES)
        .map(|n| format!("Scene {n} begins here. The city lights glow in the rain."))
        .collect::<Vec<_>>()
        .join("\n\n")
}

pub(crate) struct PerScene {
    pub(crate) pipeline: Vec<Duration>,
    pub(crate) direct: Vec<Duration>,
}

/// `rounds` projects through the stack, each followed by the same work done directly.
pub(crate) async fn scenes(rounds: usize) -> Result<PerScene> {
    let env = Env::new("bench_p14", "").await?;
    let stack = GatewayProcess::start_with(
        &env,
        "up",
        &[
            ("NEBULA_RENDER__NODE_ID", "bench-gpu".to_owned()),
            ("NEBULA_RENDER__SIMULATED_STEP_MS", STEP_MS.to_string()),
            ("NEBULA_VIDEO__FPS", FPS.to_string()),
            ("NEBULA_AGENT__DISABLE_GPU_DETECTION", "true".to_owned()),
            ("REDIS_URL", testkit::redis_url()),
        ],
    )
    .await?;
    let mut out = PerScene {
        pipeline: Vec::new(),
        direct: Vec::new(),
    };
    for round in 0..rounds {
        let body =
            json!({ "title": format!("bench {round}"), "script": script(), "format": "9:16" })
                .to_string();
        let started = Instant::now();
        let (status, answer) = stack
            .call("POST", "/api/video/projects", Some(&body))
            .await?;
        if status != 202 {
            bail!("the project was refused: {status} {answer}");
        }
        let id = answer["project_id"]
            .as_str()
            .context("no project id")?
            .to_owned();
        loop {
            let (status, project) = stack
                .call("GET", &format!("/api/video/projects/{id}?wait=30"), None)
                .await?;
            if status == 200 {
                if project["status"] != "completed" {
                    bail!(
                        "the project ended {}: {}",
                        project["status"],
                        project["failure"]
                    );
                }
                if project["scenes"].as_array().map_or(0, Vec::len) != SCENES {
                    bail!("the project has {} scenes, not {SCENES}", project["scenes"]);
                }
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!("the project did not end in 10 minutes");
            }
        }
        out.pipeline.push(started.elapsed() / SCENES as u32);
        out.direct.push(direct().await? / SCENES as u32);
    }
    drop(stack);
    env.drop_database().await;
    Ok(out)
}

/// The same six scenes made directly: renders, narrations, assembly and thumbnail.
async fn direct() -> Result<Duration> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let gpu = SimulatedGpu {
        vram_total_mib: 8192,
        step_time: Duration::from_millis(STEP_MS),
    };
    let (width, height) = events::video::VideoFormat::Portrait.render_size();
    let texts = domain::video::plan_scenes(&script(), 30, events::video::MAX_SCENES);
    let mut pictures = Vec::new();
    for (n, text) in texts.iter().enumerate() {
        let params = RenderParams {
            prompt: text.clone(),
            seed: n as u64,
            steps: STEPS,
            width,
            height,
            ..RenderParams::default()
        };
        let request = RenderRequest {
            job_id: format!("direct-{n}"),
            mode: RenderMode::Txt2img,
            params,
            inputs: Vec::new(),
        };
        let output = gpu
            .run(&request, &|_, _| {}, CancellationToken::new())
            .await?;
        let path = dir.path().join(format!("scene-{n}.png"));
        std::fs::write(&path, &output.images[0].bytes)?;
        pictures.push(path);
    }
    let out = dir.path().join("video.mp4");
    let thumbnail = dir.path().join("thumbnail.png");
    tokio::task::spawn_blocking(move || -> Result<()> {
        let tts = EspeakNg::default();
        let mut samples = Vec::new();
        let mut subtitles = Vec::new();
        let mut scenes = Vec::new();
        let mut rate = 22_050;
        for (n, text) in texts.iter().enumerate() {
            let speech = tts.speak(text)?;
            rate = speech.sample_rate;
            let offset = Duration::from_secs_f64(samples.len() as f64 / f64::from(rate));
            subtitles.extend(speech.sentences.iter().map(|s| media::tts::Timed {
                text: s.text.clone(),
                start: offset + s.start,
                end: offset + s.end,
            }));
            samples.extend(&speech.samples);
            samples.extend(std::iter::repeat_n(0, rate as usize * 35 / 100));
            let duration = Duration::from_secs_f64(samples.len() as f64 / f64::from(rate)) - offset;
            scenes.push(Scene {
                image: pictures[n].clone(),
                duration,
                motion: if n % 2 == 0 {
                    Motion::ZoomIn
                } else {
                    Motion::ZoomOut
                },
            });
        }
        let speech = media::tts::Speech {
            sample_rate: rate,
            samples,
            sentences: Vec::new(),
        };
        let (w, h) = events::video::VideoFormat::Portrait.size();
        media::assemble::assemble(
            &Assembly {
                frame: Frame {
                    width: w,
                    height: h,
                    fps: FPS,
                },
                scenes,
                narration: Some(&speech),
                subtitles,
                fade: Duration::from_secs_f64(0.4),
                music: None,
                output: out,
            },
            |_| {},
        )?;
        let best = media::thumbnail::best_picture(&pictures)?;
        media::thumbnail::thumbnail(
            &pictures[best],
            Frame {
                width: w / 2,
                height: h / 2,
                fps: 1,
            },
            "bench",
            std::path::Path::new(media::thumbnail::DEFAULT_FONT),
            &thumbnail,
        )?;
        Ok(())
    })
    .await??;
    Ok(started.elapsed())
}
