//! Script to video from the side: schedules firing projects, the `nebula video` CLI, and a
//! topic's script written by the local LLM. The helpers are `video`'s.

use crate::common::{self, call};
use crate::video::{CONTROL, STUDIO, comfy_studio, ended, scene_render, simulated_gpu, start};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::NatsServer;

/// Schedules over REST, fired by the scheduler on the real clock (every 2 s here; the time
/// zones and daylight-saving days are `domain::schedule`'s tests): the first firing makes a
/// project from the template; while it is busy (no GPU here) the next firings are skipped and
/// recorded so; a schedule that allows overlap fires each time; the next firings are listed.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn schedules_fire_projects_and_skip_while_the_last_is_busy(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = common::config(&nats, &pool, state.path());
    let (running, base) = start(&config, CONTROL).await;
    let schedule = |overlap: &str| {
        json!({
            "cron": "*/2 * * * * *", "time_zone": "Europe/Berlin", "overlap": overlap,
            "template": {"title": "Fact #{n}", "scripts": ["One.", "Two."]},
        })
    };
    let (status, answer) = call(
        Method::PUT,
        format!("{base}/api/video/schedules/calm"),
        common::TOKEN,
        &schedule("skip"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let next: Vec<&str> = answer["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(next.len(), 3, "{answer}");
    let (status, answer) = call(
        Method::PUT,
        format!("{base}/api/video/schedules/bad"),
        common::TOKEN,
        &json!({"cron": "61 * * * *", "time_zone": "Mars/Base", "template": {"title": "x", "scripts": []}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Mars/Base") && message.contains("1-100 scripts"),
        "{message}"
    );

    let log = |name: &'static str| {
        let bus = running.bus.clone();
        async move { common::envelopes(&bus, "video_schedule", name).await }
    };
    testkit::wait_until(
        "a firing, then a skip while busy",
        std::time::Duration::from_secs(20),
        || async {
            let events = log("calm").await;
            let fired = events
                .iter()
                .filter(|e| e.event_type == "schedule.fired")
                .count();
            let busy = events.iter().any(|e| {
                e.event_type == "schedule.skipped"
                    && e.data["reason"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("busy")
            });
            (fired == 1 && busy).then_some(())
        },
    )
    .await;
    let (_, list) = call(
        Method::GET,
        format!("{base}/api/video/schedules"),
        common::TOKEN,
        &Value::Null,
    )
    .await;
    let calm = &list["schedules"][0];
    assert_eq!(calm["fired"], 1, "{list}");
    let project = calm["last_project"].as_str().unwrap();
    let (_, made) = call(
        Method::GET,
        format!("{base}/api/video/projects/{project}"),
        common::TOKEN,
        &Value::Null,
    )
    .await;
    assert_eq!(made["requested"]["title"], "Fact #1", "{made}");
    assert_eq!(made["requested"]["script"], "One.");

    // Overlap allowed: a project each time.
    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/video/schedules/eager"),
        common::TOKEN,
        &schedule("allow"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    testkit::wait_until(
        "two firings",
        std::time::Duration::from_secs(20),
        || async {
            let fired = log("eager")
                .await
                .iter()
                .filter(|e| e.event_type == "schedule.fired")
                .count();
            (fired >= 2).then_some(())
        },
    )
    .await;
    let (status, _) = call(
        Method::DELETE,
        format!("{base}/api/video/schedules/eager"),
        common::TOKEN,
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = call(
        Method::GET,
        format!("{base}/api/video/schedules"),
        common::TOKEN,
        &Value::Null,
    )
    .await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
    running.shutdown().await;
}

/// `nebula video`: a project asked for from a script file, listed, shown and cancelled; the
/// personas and schedules listed.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn the_cli_asks_for_lists_shows_and_cancels_videos(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = common::config(&nats, &pool, state.path());
    let (running, base) = start(&config, CONTROL).await;
    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/video/personas/nova"),
        common::TOKEN,
        &json!({"style_prompt": "neon"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let script = state.path().join("script.txt");
    std::fs::write(&script, "Nova wakes.\n\nNova walks.").unwrap();
    let script = script.display().to_string();
    let new = common::nebula_cli(
        &nats,
        &[
            "video",
            "new",
            "--title",
            "From the shell",
            "--script",
            &script,
            "--persona",
            "nova",
            "--format",
            "1:1",
        ],
    )
    .await;
    assert!(new.status.success(), "{new:?}");
    let id = String::from_utf8_lossy(&new.stdout).trim().to_owned();
    assert_eq!(id.len(), 36, "{id}");
    let ls = common::nebula_cli(&nats, &["video", "ls"]).await;
    let listed = String::from_utf8_lossy(&ls.stdout);
    assert!(
        listed.contains(&id) && listed.contains("From the shell"),
        "{listed}"
    );
    let show = testkit::wait_until("its scenes planned", testkit::DEFAULT_WAIT, || async {
        let show = common::nebula_cli(&nats, &["video", "show", &id]).await;
        let text = String::from_utf8_lossy(&show.stdout).into_owned();
        text.contains("scene 2:").then_some(text)
    })
    .await;
    assert!(
        show.starts_with("From the shell (running, 1:1)") && show.contains("Nova walks."),
        "{show}"
    );
    let bad = common::nebula_cli(
        &nats,
        &[
            "video", "new", "--title", "x", "--script", &script, "--format", "4:3",
        ],
    )
    .await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("format must be 9:16, 16:9 or 1:1"));
    let cancel = common::nebula_cli(&nats, &["video", "cancel", &id]).await;
    assert!(cancel.status.success(), "{cancel:?}");
    testkit::wait_until("the project cancelled", testkit::DEFAULT_WAIT, || async {
        let (_, project) = call(
            Method::GET,
            format!("{base}/api/video/projects/{id}"),
            common::TOKEN,
            &Value::Null,
        )
        .await;
        (project["status"] == "cancelled").then_some(())
    })
    .await;
    let personas = common::nebula_cli(&nats, &["video", "personas"]).await;
    assert!(
        String::from_utf8_lossy(&personas.stdout).contains("nova"),
        "{personas:?}"
    );
    running.shutdown().await;
}

/// A project asked for by topic: its script written by the local LLM (the fake Ollama, which
/// sees the topic and the persona), recorded with the model that wrote it, then made like any
/// other; with Ollama away, the project fails at its script, saying so.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_topic_becomes_a_script_written_by_the_local_llm(pool: PgPool) {
    use testkit::ollama::{FakeOllama, Model, Reply};
    let ollama = FakeOllama::start(vec![Model::new("writer:3b", &["completion"], 8192)]).await;
    let (_nats, _state, mut config) = simulated_gpu(&pool);
    config.video.ollama_url = ollama.url.clone();
    config.video.script_model = "writer:3b".to_owned();
    let (running, base) = start(&config, STUDIO).await;
    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/video/personas/nova"),
        common::TOKEN,
        &json!({"description": "a cheerful synthwave host", "style_prompt": "neon"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    ollama.script([Reply::Text(
        "Lighthouses guide ships at night.\n\nTheir lamps turn slowly.".to_owned(),
    )]);
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/video/projects"),
        common::TOKEN,
        &json!({"title": "Lighthouses", "topic": "how lighthouses work", "persona": "nova", "target_secs": 12}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let project = ended(&base, answer["project_id"].as_str().unwrap()).await;
    assert_eq!(project["status"], "completed", "{project:#}");
    assert_eq!(project["scenes"].as_array().unwrap().len(), 2);
    assert_eq!(project["scenes"][1]["text"], "Their lamps turn slowly.");
    let asked = ollama.requests()[0]["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        asked.contains("how lighthouses work") && asked.contains("a cheerful synthwave host"),
        "{asked}"
    );
    let id = project["project_id"].as_str().unwrap();
    let written = common::envelopes(&running.bus, "video_project", id)
        .await
        .into_iter()
        .find(|e| e.event_type == "video.script_written")
        .unwrap();
    assert_eq!(written.data["model"], "writer:3b");

    // Ollama refuses (the model is not there): the project fails at its script.
    ollama.script([Reply::Error(
        404,
        "model \"writer:3b\" not found, try pulling it first".to_owned(),
    )]);
    let (_, answer) = call(
        Method::POST,
        format!("{base}/api/video/projects"),
        common::TOKEN,
        &json!({"title": "x", "topic": "y"}),
    )
    .await;
    let failed = ended(&base, answer["project_id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["failure"][0], "script");
    assert!(
        failed["failure"][1]
            .as_str()
            .unwrap()
            .contains("not found, try pulling it first"),
        "{failed}"
    );
    running.shutdown().await;
}

/// A scene's render that fails in a way that may pass (ComfyUI answers 500 serving the picture)
/// is run again as a new attempt: once, and the project goes on; every time, and after its
/// last attempt the project fails saying which scene, which job and why.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_scene_render_that_may_pass_is_retried_then_fails_its_project_saying_why(pool: PgPool) {
    let (comfy, _nats, _state, mut config) = comfy_studio(&pool).await;
    config.render.worker.retry_backoff_secs = 0.1;
    config.video.steps = Some(2);
    let (running, base) = start(&config, STUDIO).await;
    let ask = |title: &'static str| {
        let base = base.clone();
        async move {
            let (status, answer) = call(
                Method::POST,
                format!("{base}/api/video/projects"),
                common::TOKEN,
                &json!({"title": title, "script": "A lighthouse at night.", "format": "1:1"}),
            )
            .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
            answer["project_id"].as_str().unwrap().to_owned()
        }
    };

    // Once: the render is tried again and the video made.
    comfy.fail_views(1);
    let id = ask("hiccup").await;
    let project = ended(&base, &id).await;
    assert_eq!(project["status"], "completed", "{project:#}");
    assert_eq!(
        comfy.accepted_prompts().len(),
        2,
        "the scene's prompt ran twice"
    );

    // Every time: tried as often as the worker may, then the project fails naming scene, job
    // and cause.
    comfy.fail_views(1_000);
    let id = ask("doomed").await;
    let project = ended(&base, &id).await;
    assert_eq!(project["status"], "failed", "{project:#}");
    assert_eq!(project["failure"][0], "render");
    let reason = project["failure"][1].as_str().unwrap();
    let render_job = project["progress"]["1"]["render_job_id"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "scene 1: render job {render_job} ended without a picture"
        )) && reason.contains("500")
            && reason.contains("no attempts left (3 of 3)"),
        "{reason}"
    );
    assert_eq!(
        comfy.accepted_prompts().len(),
        5,
        "the doomed scene's prompt ran on each of its three attempts"
    );
    assert_eq!(project["video"], Value::Null);
    running.shutdown().await;
}

/// Clips instead of stills, and the finished video announced through the Stream Bot: each
/// scene rendered as an AnimateDiff clip (on the simulated GPU, an MP4 of moving frames), the
/// video assembled from them, and one post asked for with the title in its text.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn clips_make_the_scenes_and_the_video_is_announced_once(pool: PgPool) {
    let (_nats, state, config) = simulated_gpu(&pool);
    let (running, base) = start(&config, STUDIO).await;
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/video/projects"),
        common::TOKEN,
        &json!({"title": "Moving Nova", "format": "1:1", "visuals": "clips",
                "script": "Nova walks through rain.\n\nShe looks up at the lights.",
                "post": {"text": "New video: {title}", "destinations": ["twitch", "kick"]}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["project_id"].as_str().unwrap().to_owned();
    let project = ended(&base, &id).await;
    assert_eq!(project["status"], "completed", "{project:#}");
    for n in [1, 2] {
        let job = scene_render(&base, &project, n).await;
        assert_eq!(job["mode"], "animatediff", "{job:#}");
        assert_eq!(job["params"]["animation"]["frames"], 16, "{job:#}");
    }
    let folder = state.path().join("storage/ai/influencer").join(&id);
    assert!(folder.join("scene-1.mp4").exists() && folder.join("scene-2.mp4").exists());
    let probe = crate::video::probe(&folder.join("video.mp4"));
    let video = &probe["streams"][0];
    assert_eq!(
        (
            video["codec_name"].as_str(),
            video["width"].as_u64(),
            video["height"].as_u64()
        ),
        (Some("h264"), Some(1080), Some(1080)),
        "{probe:#}"
    );
    // Announced once, by the project's own post.
    let post_id = project["posted"].as_str().expect("a post id").to_owned();
    let (status, post) = call(
        Method::GET,
        format!("{base}/api/posts/{post_id}"),
        common::TOKEN,
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{post}");
    assert_eq!(post["text"], "New video: Moving Nova");
    let posted = common::envelopes(&running.bus, "video_project", &id)
        .await
        .iter()
        .filter(|e| e.event_type == "video.posted")
        .count();
    assert_eq!(posted, 1);
    running.shutdown().await;
}

/// The scheduler saves its fold with the position it reflects, and a start reads from it: a
/// schedule the log says is disabled, planted enabled in the checkpoint, fires after a restart
/// — which only reading from the checkpoint can make it do.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_restarted_scheduler_starts_from_its_checkpoint(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = common::config(&nats, &pool, state.path());
    let (running, base) = start(&config, CONTROL).await;
    let mut later = json!({
        "cron": "*/2 * * * * *", "time_zone": "UTC", "enabled": false,
        "template": {"title": "Later #{n}", "scripts": ["One."]},
    });
    let (status, answer) = call(
        Method::PUT,
        format!("{base}/api/video/schedules/later"),
        common::TOKEN,
        &later,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let head = running.bus.last_seq(bus::StreamName::Events).await.unwrap();
    let saved = testkit::wait_until(
        "the scheduler's checkpoint",
        testkit::DEFAULT_WAIT,
        || async {
            let (at, saved) = running.bus.load_fold::<Value>("video-scheduler", 1).await?;
            (at >= head).then_some(saved)
        },
    )
    .await;
    assert_eq!(saved["schedules"]["later"][0]["enabled"], false, "{saved}");
    running.shutdown().await;

    let bus = common::bus(&nats).await;
    let head = bus.last_seq(bus::StreamName::Events).await.unwrap();
    later["enabled"] = json!(true);
    let since = saved["schedules"]["later"][1].clone();
    let planted = json!({"schedules": {"later": [later, since]}});
    bus.save_fold("video-scheduler", 1, head, &planted)
        .await
        .unwrap();
    let (running, _) = start(&config, CONTROL).await;
    testkit::wait_until(
        "the planted schedule to fire",
        testkit::DEFAULT_WAIT,
        || async {
            let fired = common::envelopes(&running.bus, "video_schedule", "later")
                .await
                .iter()
                .any(|e| e.event_type == "schedule.fired");
            fired.then_some(())
        },
    )
    .await;
    running.shutdown().await;
}

/// The video worker keeps a project that ended in its fold (and its checkpoint) until its place
/// in the video queue is given back, and a start reads from the checkpoint: a project the log
/// knows nothing of, planted as ended in the checkpoint while it holds a place, has its place
/// given back after the start — which only reading from the checkpoint can make it do.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_restarted_video_worker_gives_back_the_places_its_checkpoint_holds(pool: PgPool) {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let config = common::config(&nats, &pool, state.path());
    let bus = common::bus(&nats).await;
    let queue = bus::store::commands::<domain::video::VideoQueue>(bus.clone(), ());
    let meta = bus::store::CommandMeta::new(events::Actor::Service("test".to_owned()));
    bus::store::execute(
        &queue,
        events::video::VIDEO_QUEUE_ID,
        domain::video::VideoQueueCommand::Admit {
            project_id: "ghost".to_owned(),
            cap: 10,
        },
        meta,
        3,
    )
    .await
    .unwrap();
    let head = bus.last_seq(bus::StreamName::Events).await.unwrap();
    let planted = json!({"ghost": {
        "correlation_id": events::CorrelationId::new(), "event_id": events::EventId::new(),
        "priority": 0, "begun": true, "cancel_requested": false, "done": true,
    }});
    bus.save_fold("video-worker", 1, head, &planted)
        .await
        .unwrap();
    let (running, _) = start(&config, CONTROL).await;
    testkit::wait_until(
        "the planted project's place to be given back",
        testkit::DEFAULT_WAIT,
        || async {
            let released = common::envelopes(&running.bus, "video_queue", "video")
                .await
                .iter()
                .any(|e| e.event_type == "video_queue.released" && e.data["project_id"] == "ghost");
            released.then_some(())
        },
    )
    .await;
    running.shutdown().await;
}
