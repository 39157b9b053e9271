//! Script to video, its personas over REST: operators put (define or change) and remove them,
//! viewers read them; bad bodies are refused saying why; each put is an event under the name of
//! who made it, and an unchanged put records nothing.

use crate::common::{self, call};

use nebula::{Part, Parts};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::NatsServer;

/// A NATS server, a state folder and a configuration whose render worker is the simulated GPU
/// (node `gpu-sim`), videos at 15 fps.
pub(crate) fn simulated_gpu(pool: &PgPool) -> (NatsServer, tempfile::TempDir, nebula::Config) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = common::config(&nats, pool, state.path());
    config.render.node_id = Some("gpu-sim".into());
    config.video.fps = 15;
    (nats, state, config)
}

/// The control plane (gateway, projector, dispatcher: the video worker and scheduler).
pub(crate) const CONTROL: Parts = Parts::of(&[Part::Gateway, Part::Projector, Part::Dispatcher]);
/// The control plane and a render worker.
pub(crate) const STUDIO: Parts = CONTROL.with(Part::RenderWorker);

/// `config` running as `parts`, and its gateway's URL.
pub(crate) async fn start(config: &nebula::Config, parts: Parts) -> (nebula::Running, String) {
    let running = nebula::start(config, parts).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    (running, base)
}

/// A studio whose node renders through a fake ComfyUI: the fake, the NATS server and state
/// folder to keep, and the configuration.
pub(crate) async fn comfy_studio(
    pool: &PgPool,
) -> (
    testkit::comfyui::FakeComfy,
    NatsServer,
    tempfile::TempDir,
    nebula::Config,
) {
    let comfy = testkit::comfyui::FakeComfy::start().await;
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = common::config(&nats, pool, state.path());
    config.render.backend = render::BackendKind::Comfyui;
    config.render.comfyui_url = comfy.url();
    config.render.node_id = Some("gpu-comfy".into());
    config.render.worker.ack_wait_secs = 2.0;
    (comfy, nats, state, config)
}

/// The render job of scene `n` of `project`, as the studio's REST answers it.
pub(crate) async fn scene_render(base: &str, project: &Value, n: u32) -> Value {
    let id = project["progress"][n.to_string()]["render_job_id"]
        .as_str()
        .expect("the scene's render job");
    let (_, job) = call(
        Method::GET,
        format!("{base}/api/render/jobs/{id}"),
        common::TOKEN,
        &Value::Null,
    )
    .await;
    job
}

/// Project `id` once it has ended.
pub(crate) async fn ended(base: &str, id: &str) -> Value {
    testkit::wait_until(
        "the project to end",
        std::time::Duration::from_secs(240),
        || async {
            let (status, project) = call(
                Method::GET,
                format!("{base}/api/video/projects/{id}?wait=5"),
                common::TOKEN,
                &Value::Null,
            )
            .await;
            (status == StatusCode::OK).then_some(project)
        },
    )
    .await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn personas_are_put_read_and_removed_by_those_allowed(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = common::config(&nats, &pool, state.path());
    let (running, base) = start(&config, Parts::of(&[Part::Gateway, Part::Projector])).await;
    let operator = common::create_token(&base, "ops", "operator").await;
    let viewer = common::create_token(&base, "watcher", "viewer").await;
    let url = format!("{base}/api/video/personas/nova");
    let nova = json!({
        "description": "a synthwave host",
        "style_prompt": "neon portrait of Nova, pink hair",
        "negative_prompt": "blurry",
        "lora": {"name": "nova-v2.safetensors", "strength": 0.8},
        "embeddings": ["nova-face"],
        "seed": {"policy": "fixed", "seed": 4242},
        "voice": "espeak-ng:en-us",
    });

    // A viewer may read, not put.
    let (status, _) = call(Method::PUT, url.clone(), &viewer, &nova).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, answer) = call(Method::PUT, url.clone(), &operator, &nova).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["name"], "nova");
    assert_eq!(answer["seed"], json!({"policy": "fixed", "seed": 4242}));
    assert_eq!(answer["version"], 1);
    assert_eq!(answer["updated_by"]["id"], "ops");
    // The same again: nothing new on the log.
    let (status, answer) = call(Method::PUT, url.clone(), &operator, &nova).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["version"], 1);
    // Changed by the admin.
    let mut changed = nova.clone();
    changed["seed"] = json!({"policy": "per_scene", "base": 100});
    let (status, answer) = call(Method::PUT, url.clone(), common::TOKEN, &changed).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["version"], 2);
    let log = common::envelopes(&running.bus, "video_persona", "nova").await;
    let kinds: Vec<&str> = log.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(kinds, ["persona.defined", "persona.changed"]);

    // Bad bodies, each refused saying why.
    for (body, why) in [
        (json!({"voice": "say"}), "voice \"say\""),
        (json!({"name": "other"}), "the body names \"other\""),
        (json!({"colour": "pink"}), "unknown field `colour`"),
        (
            json!({"lora": {"name": "x", "strength": 9.0}}),
            "strength in -4..=4",
        ),
        (json!([1, 2]), "expected a JSON object"),
    ] {
        let (status, answer) = call(Method::PUT, url.clone(), &operator, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{body}: {answer}");
    }
    let (status, answer) = call(
        Method::PUT,
        format!("{base}/api/video/personas/Bad%20Name"),
        &operator,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // Read by a viewer: one, and the list.
    let (status, one) = call(Method::GET, url.clone(), &viewer, &Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["style_prompt"], "neon portrait of Nova, pink hair");
    let (_, echo) = call(
        Method::PUT,
        format!("{base}/api/video/personas/echo"),
        &operator,
        &json!({"style_prompt": "a cartoon fox"}),
    )
    .await;
    assert_eq!(echo["voice"], "espeak-ng:en-us", "the default voice");
    let (status, list) = call(
        Method::GET,
        format!("{base}/api/video/personas"),
        &viewer,
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["personas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "nova"]);

    // Removed: gone from both, and a second removal is 404.
    let (status, _) = call(Method::DELETE, url.clone(), &viewer, &Value::Null).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(Method::DELETE, url.clone(), &operator, &Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(Method::GET, url.clone(), &viewer, &Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(Method::DELETE, url.clone(), &operator, &Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = call(
        Method::GET,
        format!("{base}/api/video/personas"),
        &viewer,
        &Value::Null,
    )
    .await;
    assert_eq!(list["personas"].as_array().unwrap().len(), 1);
    running.shutdown().await;
}

pub(crate) fn probe(path: &std::path::Path) -> Value {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (Debian's ffmpeg) is installed by cargo xtask");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A three-scene project with a persona, end to end on the simulated GPU and espeak-ng: each
/// scene's picture through the render queue (its prompt carrying the persona), each narrated,
/// the MP4 assembled (H.264 at the format's size, AAC, as long as the narration, subtitles
/// beside it), the thumbnail made; the files under the project's folder and in the artifact
/// store.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_three_scene_project_becomes_a_narrated_video_with_its_thumbnail(pool: PgPool) {
    let (_nats, state, mut config) = simulated_gpu(&pool);
    let storage = state.path().join("storage");
    config.video.storage_root = Some(storage.clone());
    let (running, base) = start(&config, STUDIO).await;
    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/video/personas/nova"),
        common::TOKEN,
        &json!({"style_prompt": "neon portrait of Nova", "embeddings": ["nova-face"], "seed": {"policy": "fixed", "seed": 7}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // Refused: an unknown persona, an empty script.
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/video/projects"),
        common::TOKEN,
        &json!({"title": "x", "script": "Hi.", "persona": "ghost"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/video/projects"),
        common::TOKEN,
        &json!({"title": "x", "script": " \n "}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the script is empty"),
        "{answer}"
    );

    let script = "Nova wakes in a neon city.\n\nShe walks past glowing signs.\n\nAt dawn the lights fade out.";
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/video/projects"),
        common::TOKEN,
        &json!({"title": "Nova's night", "script": script, "persona": "nova", "format": "16:9"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["project_id"].as_str().unwrap().to_owned();
    let project = ended(&base, &id).await;
    assert_eq!(project["status"], "completed", "{project:#}");
    let scenes = project["scenes"].as_array().unwrap();
    assert_eq!(scenes.len(), 3);
    for scene in scenes {
        assert!(
            scene["prompt"]
                .as_str()
                .unwrap()
                .starts_with("neon portrait of Nova, "),
            "{scene}"
        );
        assert!(
            scene["prompt"]
                .as_str()
                .unwrap()
                .ends_with("embedding:nova-face"),
            "{scene}"
        );
        assert_eq!(scene["seed"], 7);
    }
    let narrated_ms: u64 = project["progress"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p["duration_ms"].as_u64().unwrap())
        .sum();

    // The files, where the project keeps them.
    let folder = storage.join(&id);
    let probed = probe(&folder.join("video.mp4"));
    let streams = probed["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(1920), Some(1080))
    );
    assert!(
        streams
            .iter()
            .any(|s| s["codec_type"] == "audio" && s["codec_name"] == "aac")
    );
    let duration: f64 = probed["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let narration = narrated_ms as f64 / 1000.0 + 3.0 * 0.35;
    assert!(
        (duration - narration).abs() / narration < 0.05,
        "{duration} s against {narration} s"
    );
    let srt = std::fs::read_to_string(folder.join("video.srt")).unwrap();
    assert!(
        srt.contains("Nova wakes in a neon city.") && srt.contains("At dawn the lights fade out."),
        "{srt}"
    );
    let thumbnail = probe(&folder.join("thumbnail.png"));
    assert_eq!(thumbnail["streams"][0]["codec_name"], "png");
    for n in 1..=3 {
        assert!(
            folder.join(format!("scene-{n}.png")).exists()
                && folder.join(format!("scene-{n}.wav")).exists()
        );
    }
    // And in the artifact store, by content.
    let video_sha = project["video"].as_str().unwrap();
    let store = artifacts::ArtifactStore::open(&config.artifacts_dir).unwrap();
    assert_eq!(
        std::fs::read(store.content_path(video_sha).unwrap()).unwrap(),
        std::fs::read(folder.join("video.mp4")).unwrap()
    );
    // Each step once, on the log.
    let log = common::envelopes(&running.bus, "video_project", &id).await;
    let count = |kind: &str| log.iter().filter(|e| e.event_type == kind).count();
    assert_eq!(
        (
            count("video.scene_render_queued"),
            count("video.scene_rendered"),
            count("video.scene_narrated"),
            count("video.assembled"),
            count("video.completed")
        ),
        (3, 3, 3, 1, 1)
    );
    let (_, list) = call(
        Method::GET,
        format!("{base}/api/video/projects"),
        common::TOKEN,
        &Value::Null,
    )
    .await;
    assert_eq!(list["projects"][0]["project_id"], id.as_str());
    running.shutdown().await;
}

/// The Video room in Chromium: a persona saved, a video asked for from its form with a music
/// file (uploaded to `POST /api/video/music`, which refuses what is not audio), its pipeline
/// followed live to the end, the MP4 played in the page and the thumbnail shown.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_video_is_made_and_played_from_the_dashboard(pool: PgPool) {
    let (_nats, _state, config) = simulated_gpu(&pool);
    let (running, base) = start(&config, STUDIO).await;
    let upload = |content_type: &'static str, body: &'static [u8], token: String| {
        let url = format!("{base}/api/video/music");
        async move {
            let response = common::http()
                .post(url)
                .bearer_auth(token)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    let png: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR";
    let (status, said) = upload("image/png", png, common::TOKEN.into()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{said}");
    let (status, said) = upload("audio/wav", png, common::TOKEN.into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{said}");
    assert!(said.contains("not MP3, WAV, Ogg, FLAC or M4A"), "{said}");
    let viewer = common::create_token(&base, "watcher", "viewer").await;
    let (status, said) = upload("audio/wav", b"RIFF\0\0\0\0WAVE", viewer).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{said}");

    let browser = testkit::webdriver::Browser::start().await;
    crate::dashboard_access::sign_in(
        &browser,
        &format!("{base}/#token={}", common::TOKEN),
        "admin · admin",
    )
    .await;
    browser
        .eval("location.hash = '#/video'; return true;")
        .await;
    testkit::wait_until("the Video room", testkit::DEFAULT_WAIT, || async {
        let ready = browser
            .eval("return !!document.querySelector('#persona-form');")
            .await;
        (ready == Value::Bool(true)).then_some(())
    })
    .await;
    browser
        .eval(
            "const f = document.querySelector('#persona-form');
             f.name.value = 'nova'; f.style.value = 'neon portrait of Nova'; f.seed.value = '7';
             f.requestSubmit(); return true;",
        )
        .await;
    testkit::wait_until("the persona listed and offered", testkit::DEFAULT_WAIT, || async {
        let offered = browser
            .eval("return !!document.querySelector('#video-personas li[data-persona=nova]') && !!document.querySelector('#video-persona option[value=nova]');")
            .await;
        (offered == Value::Bool(true)).then_some(())
    })
    .await;
    // A schedule made in the page: listed with its next firings in its zone.
    browser
        .eval(
            "const f = document.querySelector('#schedule-form');
             f.name.value = 'yearly'; f.cron.value = '0 3 1 1 *'; f.zone.value = 'Europe/Berlin';
             f.title.value = 'New year #{n}'; f.source.value = 'topics'; f.lines.value = 'fireworks\\nresolutions';
             f['spost-kick'].checked = true; f.requestSubmit(); return true;",
        )
        .await;
    let listed = testkit::wait_until("the schedule listed", testkit::DEFAULT_WAIT, || async {
        let text = browser
            .eval("const li = document.querySelector('#video-schedules li[data-schedule=yearly]'); return li ? li.textContent : null;")
            .await;
        text.as_str().map(str::to_owned)
    })
    .await;
    assert!(
        listed.contains("topics: fireworks, resolutions") && listed.contains("announced on kick"),
        "{listed}"
    );
    assert!(
        listed.contains("next:") && listed.matches("·").count() >= 2,
        "{listed}"
    );
    // Music chosen in the form: a second of a 440 Hz tone as a WAV file.
    browser
        .eval(
            "const rate = 8000, n = rate, data = new DataView(new ArrayBuffer(44 + n * 2));
             const text = (at, s) => [...s].forEach((c, i) => data.setUint8(at + i, c.charCodeAt(0)));
             text(0, 'RIFF'); data.setUint32(4, 36 + n * 2, true); text(8, 'WAVEfmt ');
             data.setUint32(16, 16, true); data.setUint16(20, 1, true); data.setUint16(22, 1, true);
             data.setUint32(24, rate, true); data.setUint32(28, rate * 2, true);
             data.setUint16(32, 2, true); data.setUint16(34, 16, true);
             text(36, 'data'); data.setUint32(40, n * 2, true);
             for (let i = 0; i < n; i++) data.setInt16(44 + i * 2, Math.round(8000 * Math.sin(2 * Math.PI * 440 * i / rate)), true);
             const files = new DataTransfer();
             files.items.add(new File([data.buffer], 'tone.wav', { type: 'audio/wav' }));
             document.querySelector('#video-form').music.files = files.files;
             return true;",
        )
        .await;
    browser
        .eval(
            "const f = document.querySelector('#video-form');
             f.title.value = 'Nova at night'; f.format.value = '16:9'; f.visuals.value = 'clips';
             document.querySelector('#video-persona').value = 'nova';
             f.script.value = 'Nova wakes in a neon city.\\n\\nAt dawn the lights fade out.';
             f.requestSubmit(); return true;",
        )
        .await;
    let played = testkit::wait_until("the video made and playable in the page", std::time::Duration::from_secs(240), || async {
        let found = browser
            .eval(
                "const v = document.querySelector('#video-project video.video-player');
                 const thumb = document.querySelector('#video-project img.video-thumbnail');
                 if (v && v.error) return { error: v.error.code + ' ' + v.error.message };
                 if (!v || !thumb || v.readyState < 1) return null;
                 return { duration: v.duration, width: v.videoWidth, height: v.videoHeight,
                          status: document.querySelector('#video-project .video-status').textContent,
                          steps: [...document.querySelectorAll('#video-project .video-step.done')].length };",
            )
            .await;
        (!found.is_null()).then_some(found)
    })
    .await;
    assert_eq!(
        played["error"],
        Value::Null,
        "the page cannot play it: {played}"
    );
    assert_eq!(played["status"], "completed", "{played}");
    assert_eq!(played["steps"], 6, "{played}");
    assert_eq!(
        (played["width"].as_u64(), played["height"].as_u64()),
        (Some(1920), Some(1080)),
        "{played}"
    );
    assert!(played["duration"].as_f64().unwrap() > 1.0, "{played}");
    // The music went with it: uploaded from the form, asked for, and shown with a player.
    let music = browser
        .eval("const m = document.querySelector('#video-project .video-music'); return m ? { text: m.textContent, player: !!m.querySelector('audio.video-music-player') } : null;")
        .await;
    assert_eq!(music["player"], true, "{music}");
    let (status, listed) = common::call(
        Method::GET,
        format!("{base}/api/video/projects"),
        common::TOKEN,
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let id = listed["projects"][0]["project_id"]
        .as_str()
        .unwrap_or_default();
    let (_, project) = common::call(
        Method::GET,
        format!("{base}/api/video/projects/{id}"),
        common::TOKEN,
        &Value::Null,
    )
    .await;
    let sha = project["requested"]["music"].as_str().unwrap_or_default();
    assert_eq!(sha.len(), 64, "{project}");
    assert!(
        music["text"].as_str().unwrap().contains(&sha[..12]),
        "{music}"
    );
    // Its scenes are clips, shown moving beside the script.
    let clips = browser
        .eval(
            "return document.querySelectorAll('#video-project video.video-scene-picture').length;",
        )
        .await;
    assert_eq!(clips, 2, "one clip per scene");
    // It plays: the page lets it start, and its clock moves (however slowly a busy machine
    // decodes it).
    let started = browser
        .eval_async(
            "const v = document.querySelector('#video-project video.video-player'); v.muted = true;
             v.play().then(() => done('playing')).catch((e) => done('refused: ' + e));",
        )
        .await;
    assert_eq!(started, "playing", "{started}");
    testkit::wait_until(
        "the video's clock to move",
        testkit::DEFAULT_WAIT,
        || async {
            let at = browser
            .eval("return document.querySelector('#video-project video.video-player').currentTime;")
            .await;
            at.as_f64().is_some_and(|t| t > 0.2).then_some(())
        },
    )
    .await;
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(std::env::temp_dir().join("nebula-video.png"), &png);
    browser
        .eval("document.querySelector('#video-project').scrollIntoView(); return true;")
        .await;
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(std::env::temp_dir().join("nebula-video-project.png"), &png);
    running.shutdown().await;
}

/// The queue: at most `max_running` projects carried out and `max_waiting` more waiting; the
/// next one refused saying so; a waiting project cancelled leaves at once; a freed place goes
/// to the highest priority.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn the_queue_holds_its_cap_and_a_freed_place_goes_to_the_highest_priority(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = common::config(&nats, &pool, state.path());
    config.video.max_running = 1;
    config.video.max_waiting = 2;
    // No render worker: a running project waits for its pictures.
    let (running, base) = start(&config, CONTROL).await;
    let ask = |title: &'static str| {
        let base = base.clone();
        async move {
            call(
                Method::POST,
                format!("{base}/api/video/projects"),
                common::TOKEN,
                &json!({"title": title, "script": "One scene."}),
            )
            .await
        }
    };
    let status_of = |id: String| {
        let base = base.clone();
        async move {
            let (_, project) = call(
                Method::GET,
                format!("{base}/api/video/projects/{id}"),
                common::TOKEN,
                &Value::Null,
            )
            .await;
            project
        }
    };
    let mut ids = Vec::new();
    for title in ["first", "second", "third"] {
        let (status, answer) = ask(title).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        ids.push(answer["project_id"].as_str().unwrap().to_owned());
    }
    let (status, answer) = ask("fourth").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the video queue is full (3 projects"),
        "{answer}"
    );
    // The first runs (its scene's render asked for); the others wait.
    testkit::wait_until("the first to run", testkit::DEFAULT_WAIT, || async {
        let first = status_of(ids[0].clone()).await;
        (first["status"] == "running" && first["progress"]["1"]["render_job_id"].is_string())
            .then_some(())
    })
    .await;
    assert_eq!(status_of(ids[1].clone()).await["status"], "queued");

    // A waiting one cancelled leaves at once, and its place is free.
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/video/projects/{}/cancel", ids[1]),
        common::TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    testkit::wait_until("the second cancelled", testkit::DEFAULT_WAIT, || async {
        (status_of(ids[1].clone()).await["status"] == "cancelled").then_some(())
    })
    .await;
    let (status, answer) =
        testkit::wait_until("a place for the fifth", testkit::DEFAULT_WAIT, || async {
            let (status, answer) = ask("fifth").await;
            (status == StatusCode::ACCEPTED).then_some((status, answer))
        })
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let fifth = answer["project_id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/video/projects/{fifth}/priority"),
        common::TOKEN,
        &json!({"priority": 9}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // The running one cancelled (its render with it): the fifth, of higher priority, runs
    // before the older third.
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/video/projects/{}/cancel", ids[0]),
        common::TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    testkit::wait_until("the fifth to run", testkit::DEFAULT_WAIT, || async {
        (status_of(fifth.clone()).await["status"] == "running").then_some(())
    })
    .await;
    let first = status_of(ids[0].clone()).await;
    assert_eq!(first["status"], "cancelled");
    let job = scene_render(&base, &first, 1).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(status_of(ids[2].clone()).await["status"], "queued");
    running.shutdown().await;
}

/// A scene whose picture cannot be made (its checkpoint fails to load in ComfyUI): the project
/// fails, saying which scene, which render job and ComfyUI's reason; nothing after that step
/// is made.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_scene_that_cannot_be_rendered_fails_its_project_saying_why(pool: PgPool) {
    let (_comfy, _nats, _state, mut config) = comfy_studio(&pool).await;
    config.video.checkpoint = Some("corrupt-v1.safetensors".to_owned());
    let (running, base) = start(&config, STUDIO).await;
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/video/projects"),
        common::TOKEN,
        &json!({"title": "doomed", "script": "A lighthouse at night."}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["project_id"].as_str().unwrap().to_owned();
    let project = ended(&base, &id).await;
    assert_eq!(project["status"], "failed", "{project:#}");
    assert_eq!(project["failure"][0], "render");
    let reason = project["failure"][1].as_str().unwrap();
    assert!(
        reason.starts_with("scene 1: render job ") && reason.contains("ended without a picture"),
        "{reason}"
    );
    assert_eq!(project["video"], Value::Null);
    assert!(
        reason.contains("corrupt-v1.safetensors"),
        "ComfyUI's own reason: {reason}"
    );
    // The render's own record: failed, as final (a model that will not load does not get
    // better by trying again; failures that may pass are retried by the render queue).
    let job = scene_render(&base, &project, 1).await;
    assert_eq!(job["status"], "failed", "{job}");
    running.shutdown().await;
}

/// A worker stopped mid-project resumes it from its last recorded step: no scene rendered twice,
/// and what it made is what an uninterrupted twin project makes (same script, same persona and
/// seed): the same pictures and narration, a whole video as long as the narration.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_worker_stopped_mid_project_resumes_it_to_the_same_video(pool: PgPool) {
    let (_nats, _state, config) = simulated_gpu(&pool);
    let (running, base) = start(&config, STUDIO).await;
    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/video/personas/nova"),
        common::TOKEN,
        &json!({"style_prompt": "neon portrait of Nova", "seed": {"policy": "fixed", "seed": 11}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let body = json!({"title": "Twins", "persona": "nova", "format": "1:1",
        "script": "Nova wakes.\n\nNova walks.\n\nNova sleeps."});
    let (_, answer) = call(
        Method::POST,
        format!("{base}/api/video/projects"),
        common::TOKEN,
        &body,
    )
    .await;
    let first = answer["project_id"].as_str().unwrap().to_owned();
    // Stopped once it has begun its scenes.
    testkit::wait_until(
        "the first scene narrated",
        testkit::DEFAULT_WAIT,
        || async {
            let log = common::envelopes(&running.bus, "video_project", &first).await;
            log.iter()
                .any(|e| e.event_type == "video.scene_narrated")
                .then_some(())
        },
    )
    .await;
    running.shutdown().await;
    let (running, base) = start(&config, STUDIO).await;
    let resumed = ended(&base, &first).await;
    assert_eq!(resumed["status"], "completed", "{resumed:#}");
    let log = common::envelopes(&running.bus, "video_project", &first).await;
    let count = |kind: &str| log.iter().filter(|e| e.event_type == kind).count();
    assert_eq!(
        (
            count("video.scene_render_queued"),
            count("video.scene_rendered"),
            count("video.scene_narrated")
        ),
        (3, 3, 3)
    );
    let (_, answer) = call(
        Method::POST,
        format!("{base}/api/video/projects"),
        common::TOKEN,
        &body,
    )
    .await;
    let twin = ended(&base, answer["project_id"].as_str().unwrap()).await;
    assert_eq!(twin["status"], "completed", "{twin:#}");
    // What the resumed project made is what the uninterrupted one made: every scene's picture
    // and narration the same bytes, the video as long. (The video's own bytes are compared
    // only in a quiet run: x264's frame threads are not bit-exact on a loaded machine.)
    for n in ["1", "2", "3"] {
        let (ours, theirs) = (&resumed["progress"][n], &twin["progress"][n]);
        assert_eq!(
            (&ours["picture"], &ours["narration"]),
            (&theirs["picture"], &theirs["narration"]),
            "scene {n}"
        );
    }
    let length = |p: &Value| {
        p["progress"]
            .as_object()
            .unwrap()
            .values()
            .map(|s| s["duration_ms"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(length(&resumed), length(&twin));
    let folder = config.state_dir.join("storage/ai/influencer").join(&first);
    let probed = probe(&folder.join("video.mp4"));
    let seconds: f64 = probed["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let narration = length(&resumed) as f64 / 1000.0 + 3.0 * 0.35;
    assert!(
        (seconds - narration).abs() / narration < 0.05,
        "{seconds} s against {narration} s"
    );
    running.shutdown().await;
}
