//! The script-to-video pipeline's worker: every `video_project` carried from where its events
//! say it is — the script (as given), the scenes planned (their prompts chained from the script
//! and the persona), each scene's picture asked of the render queue (any node's GPU, or the
//! simulated one) and its narration spoken (espeak-ng, or Piper), the video assembled in
//! process (media), the thumbnail made, the video announced through the Stream Bot when asked
//! — each step recorded once, so a worker that stops
//! resumes at the step after the last recorded one and nothing already made is made again.
//! At most `max_running` projects at once; cancelling one cancels its queued renders.
//! Outputs go to the artifact store and under `<storage_root>/<project id>/`. Beside it, the
//! scheduler (`scheduler`) fires the schedules into projects.

mod config;
mod scheduler;
mod script;

pub use config::{Config, PiperConfig};

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use artifacts::ArtifactStore;
use bus::Bus;
use bus::store::{CommandMeta, Commands, JetStreamStore, commands, execute};
use cqrs_es::EventStore;
use domain::render::{RenderCommand, RenderJob, RenderQueue};
use domain::video::{ProjectCommand, ProjectStatus, VideoProject};
use events::render::{RenderMode, RenderStatus, Trigger};
use events::video::{TimedText, VideoProjectEvent, Visuals};
use events::{Actor, CorrelationId, DomainEvent, EventId};
use media::tts::Tts;
use service::Context;
use tokio_util::sync::CancellationToken;

/// The namespace of the posts announcing videos (a project's post id is derived from its id).
const POSTS: uuid::Uuid = uuid::Uuid::from_u128(0x6e65_6275_6c61_2d76_6964_656f_2d70_6f73);

/// Silence after each scene's narration, before the next scene speaks.
const SCENE_PAD: Duration = Duration::from_millis(350);

/// Starts the worker (restarted by the context if it fails).
pub fn start(ctx: &Context, config: Config) -> anyhow::Result<()> {
    let bus = ctx.bus.clone();
    let storage = config
        .storage_root
        .clone()
        .unwrap_or_else(|| ctx.site.state_dir.join("storage/ai/influencer"));
    let worker = Arc::new(Worker {
        projects: commands(bus.clone(), ()),
        project_state: JetStreamStore::new(bus.clone()),
        render_jobs: commands(bus.clone(), ()),
        render_state: JetStreamStore::new(bus.clone()),
        render_queue: commands(bus.clone(), ()),
        queue_cap: ctx.site.render_queue_cap,
        video_queue: commands(bus.clone(), ()),
        posts: commands(bus.clone(), ()),
        artifacts: ArtifactStore::open(&ctx.site.artifacts_dir)?,
        storage,
        config,
        bus,
    });
    let scheduler = Arc::new(scheduler::Scheduler {
        schedules: commands(ctx.bus.clone(), ()),
        schedule_state: JetStreamStore::new(ctx.bus.clone()),
        projects: commands(ctx.bus.clone(), ()),
        project_state: JetStreamStore::new(ctx.bus.clone()),
        queue: commands(ctx.bus.clone(), ()),
        queue_cap: worker.config.queue_cap(),
        bus: ctx.bus.clone(),
    });
    ctx.spawn("video", move |cancel| {
        let worker = worker.clone();
        async move { worker.run(cancel).await }
    });
    ctx.spawn("video-scheduler", move |cancel| {
        let scheduler = scheduler.clone();
        async move { scheduler.run(cancel).await }
    });
    Ok(())
}

struct Worker {
    bus: Bus,
    projects: Commands<VideoProject>,
    project_state: JetStreamStore<VideoProject>,
    render_jobs: Commands<RenderJob>,
    render_state: JetStreamStore<RenderJob>,
    render_queue: Commands<RenderQueue>,
    queue_cap: usize,
    video_queue: Commands<domain::video::VideoQueue>,
    posts: Commands<domain::post::Post>,
    artifacts: ArtifactStore,
    storage: PathBuf,
    config: Config,
}

/// A project as the fold knows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Known {
    correlation_id: CorrelationId,
    event_id: EventId,
    priority: i32,
    /// It has begun (its script is recorded): it goes on first after a restart.
    begun: bool,
    cancel_requested: bool,
    /// It ended: it stays known until its place in the queue is given back.
    done: bool,
}

/// How a step ended.
enum Step {
    /// Go on to the next.
    Next,
    /// The project ended (completed, failed, cancelled) or cannot go on now.
    Stop,
}

impl Worker {
    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        // The projects not ended or whose place is not given back yet, from the fold's
        // checkpoint on.
        let (mut projects, mut log) = self
            .bus
            .open_fold::<BTreeMap<String, Known>>(
                "video-worker",
                1,
                vec![events::subjects::events_of_type(
                    VideoProjectEvent::AGGREGATE_TYPE,
                )],
            )
            .await?;
        // Those being carried out now (at most `max_running`).
        let mut taken: HashSet<String> = HashSet::new();
        // Each running project's own token: its cancellation stops its waits at once.
        let mut tokens: std::collections::HashMap<String, CancellationToken> =
            std::collections::HashMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    tasks.shutdown().await;
                    return Ok(());
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(id) = done {
                        taken.remove(&id);
                        tokens.remove(&id);
                    }
                }
                message = log.next() => {
                    let message = message?;
                    let commit = message.as_ref().map(|m| m.decode_commit().unwrap_or_default());
                    for envelope in commit.unwrap_or_default() {
                        let Ok(event) = envelope.decode::<VideoProjectEvent>() else { continue };
                        let known = projects.entry(envelope.aggregate_id.clone()).or_insert(Known {
                            correlation_id: envelope.correlation_id,
                            event_id: envelope.event_id,
                            priority: 0,
                            begun: false,
                            cancel_requested: false,
                            done: false,
                        });
                        known.event_id = envelope.event_id;
                        match event {
                            VideoProjectEvent::Requested(requested) => known.priority = requested.priority,
                            VideoProjectEvent::PriorityChanged { priority } => known.priority = priority,
                            VideoProjectEvent::ScriptWritten { .. } => known.begun = true,
                            VideoProjectEvent::CancelRequested {} => {
                                known.cancel_requested = true;
                                if let Some(token) = tokens.get(&envelope.aggregate_id) {
                                    token.cancel();
                                }
                            }
                            VideoProjectEvent::Completed {} | VideoProjectEvent::Failed { .. } | VideoProjectEvent::Cancelled {} => {
                                known.done = true;
                            }
                            _ => {}
                        }
                    }
                    if !log.settled(message.as_ref()) {
                        continue; // caught up first
                    }
                }
            }
            // Ended: their places in the queue given back (again after a restart: no change);
            // known until that is done, so a checkpoint never forgets one.
            let ended: Vec<(String, Known)> = projects
                .iter()
                .filter(|(_, k)| k.done)
                .map(|(id, k)| (id.clone(), k.clone()))
                .collect();
            for (id, known) in ended {
                match sagas::video::release(&self.video_queue, &id, self.meta(&known)).await {
                    Ok(()) => {
                        projects.remove(&id);
                    }
                    Err(err) => {
                        tracing::warn!(project = id, error = %err, "a video project's place was not given back; it is tried again");
                    }
                }
            }
            log.save(&projects).await;
            // A waiting project cancelled ends now, without waiting for a place to run.
            let cancelled: Vec<String> = projects
                .iter()
                .filter(|(id, known)| known.cancel_requested && !known.done && !taken.contains(*id))
                .map(|(id, _)| id.clone())
                .collect();
            // Those begun before a restart first, then the highest priority, then the oldest.
            let free = self.config.max_running.saturating_sub(taken.len());
            let waiting: Vec<(String, i32)> = projects
                .iter()
                .filter(|(id, known)| {
                    !taken.contains(*id) && !known.cancel_requested && !known.done
                })
                .map(|(id, known)| {
                    (
                        id.clone(),
                        if known.begun {
                            i32::MAX
                        } else {
                            known.priority
                        },
                    )
                })
                .collect();
            for id in cancelled
                .into_iter()
                .chain(domain::video::next_to_run(&waiting, free))
            {
                // A project's task runs it to its end; a cancellation is seen between steps.
                taken.insert(id.clone());
                let token = CancellationToken::new();
                tokens.insert(id.clone(), token.clone());
                let (worker, known) = (self.clone(), projects[&id].clone());
                tasks.spawn(async move {
                    worker.carry_on(&id, &known, &token).await;
                    id
                });
            }
        }
    }

    fn meta(&self, known: &Known) -> CommandMeta {
        CommandMeta {
            correlation_id: known.correlation_id,
            causation_id: Some(known.event_id),
            actor: Actor::Service("video".to_owned()),
        }
    }

    async fn record(&self, id: &str, known: &Known, command: ProjectCommand) -> bool {
        match execute(&self.projects, id, command, self.meta(known), 3).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(project = id, error = %err, "a video project's step was not recorded");
                false
            }
        }
    }

    async fn fail(&self, id: &str, known: &Known, step: &str, reason: String) -> Step {
        tracing::warn!(project = id, step, reason, "a video project failed");
        self.record(
            id,
            known,
            ProjectCommand::Fail {
                step: step.to_owned(),
                reason,
            },
        )
        .await;
        Step::Stop
    }

    async fn carry_on(&self, id: &str, known: &Known, cancel: &CancellationToken) {
        let mut unreadable =
            common::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let state = match self.project_state.load_aggregate(id).await {
                Ok(loaded) => {
                    unreadable.reset();
                    loaded.state().clone()
                }
                Err(err) => {
                    tracing::warn!(project = id, error = %err, retry_in = ?unreadable.peek(), "a video project could not be read; retrying");
                    // Backing off while the event store is away; a stop ends the wait.
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = unreadable.sleep() => {}
                    }
                    continue;
                }
            };
            if state.status.is_none_or(ProjectStatus::is_final) {
                return;
            }
            if state.cancel_requested {
                self.cancel(id, known, &state).await;
                return;
            }
            match self.step(id, known, &state, cancel).await {
                Step::Next => {}
                Step::Stop => return,
            }
        }
    }

    /// The next step of `state`, carried out and recorded.
    async fn step(
        &self,
        id: &str,
        known: &Known,
        state: &VideoProject,
        cancel: &CancellationToken,
    ) -> Step {
        let Some(requested) = state.requested.clone() else {
            return Step::Stop;
        };
        let Some(script) = state.script.clone() else {
            let (script, model) = match requested.script.clone() {
                Some(script) => (script, None),
                // Written by the local LLM from the topic.
                None => match script::write(
                    &self.config.ollama_url,
                    &self.config.script_model,
                    &requested,
                )
                .await
                {
                    Ok(script) => (script, Some(self.config.script_model.clone())),
                    Err(reason) => return self.fail(id, known, "script", reason).await,
                },
            };
            self.record(id, known, ProjectCommand::WriteScript { script, model })
                .await;
            return Step::Next;
        };
        if state.scenes.is_empty() {
            let texts = domain::video::plan_scenes(
                &script,
                requested.target_secs,
                events::video::MAX_SCENES,
            );
            if texts.is_empty() {
                return self
                    .fail(
                        id,
                        known,
                        "scenes",
                        "the script has nothing to say".to_owned(),
                    )
                    .await;
            }
            let random = seed_of(id);
            let scenes = texts
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    domain::video::scene_prompt(
                        requested.persona.as_ref(),
                        i as u32 + 1,
                        text,
                        random.wrapping_add(i as u64),
                    )
                })
                .collect();
            self.record(id, known, ProjectCommand::PlanScenes { scenes })
                .await;
            return Step::Next;
        }
        // Each scene's render asked for: its id recorded first, so a crash between the two
        // submits the same job again (which changes nothing) rather than a second one.
        if let Some(scene) = state.scenes.iter().find(|s| {
            state
                .progress
                .get(&s.n)
                .is_none_or(|p| p.render_job_id.is_none())
        }) {
            let render_job_id = uuid::Uuid::now_v7().to_string();
            self.record(
                id,
                known,
                ProjectCommand::QueueRender {
                    n: scene.n,
                    render_job_id,
                },
            )
            .await;
            return Step::Next;
        }
        for scene in &state.scenes {
            let progress = &state.progress[&scene.n];
            if progress.picture.is_some() {
                continue;
            }
            let job_id = progress.render_job_id.clone().unwrap_or_default();
            if let Err(reason) = self.submit(id, known, &requested, scene, &job_id).await {
                return self
                    .fail(id, known, "render", format!("scene {}: {reason}", scene.n))
                    .await;
            }
        }
        // The narrations while the pictures render.
        for scene in &state.scenes {
            if state.progress[&scene.n].narration.is_some() {
                continue;
            }
            let voice = requested
                .persona
                .as_ref()
                .map_or_else(events::video::default_voice, |p| p.voice.clone());
            match self.narrate(&voice, &scene.text).await {
                Ok((artifact, duration_ms, sentences)) => {
                    let command = ProjectCommand::RecordNarration {
                        n: scene.n,
                        artifact,
                        duration_ms,
                        voice,
                        sentences,
                    };
                    if !self.record(id, known, command).await {
                        return Step::Stop;
                    }
                }
                Err(reason) => {
                    return self
                        .fail(
                            id,
                            known,
                            "narration",
                            format!("scene {}: {reason}", scene.n),
                        )
                        .await;
                }
            }
        }
        for scene in &state.scenes {
            let progress = &state.progress[&scene.n];
            if progress.picture.is_some() {
                continue;
            }
            let job_id = progress.render_job_id.clone().unwrap_or_default();
            let picture = tokio::select! {
                // Asked to stop: the next turn finds the cancellation and carries it out.
                () = cancel.cancelled() => return Step::Next,
                picture = self.picture(&job_id) => picture,
            };
            match picture {
                Ok(artifact) => {
                    if !self
                        .record(
                            id,
                            known,
                            ProjectCommand::RecordRender {
                                n: scene.n,
                                artifact,
                            },
                        )
                        .await
                    {
                        return Step::Stop;
                    }
                }
                Err(_) if cancel.is_cancelled() => return Step::Next,
                Err(reason) => {
                    return self
                        .fail(id, known, "render", format!("scene {}: {reason}", scene.n))
                        .await;
                }
            }
        }
        let state = match self.project_state.load_aggregate(id).await {
            Ok(loaded) => loaded.state().clone(),
            Err(_) => return Step::Next,
        };
        if !state.scenes_ready() {
            return Step::Next;
        }
        if state.video.is_none() {
            return match self.assemble(id, &state).await {
                Ok(command) => {
                    self.record(id, known, command).await;
                    Step::Next
                }
                Err(reason) => self.fail(id, known, "assembly", reason).await,
            };
        }
        if state.thumbnail.is_none() {
            return match self.thumbnail(id, &state).await {
                Ok(artifact) => {
                    self.record(id, known, ProjectCommand::RecordThumbnail { artifact })
                        .await;
                    Step::Next
                }
                Err(reason) => self.fail(id, known, "thumbnail", reason).await,
            };
        }
        if let (Some(post), None) = (&requested.post, &state.posted) {
            return match self.announce(id, known, &requested.title, post).await {
                Ok(post_id) => {
                    self.record(id, known, ProjectCommand::RecordPost { post_id })
                        .await;
                    Step::Next
                }
                Err(reason) => self.fail(id, known, "post", reason).await,
            };
        }
        self.record(id, known, ProjectCommand::Complete).await;
        tracing::info!(project = id, "a video project completed");
        Step::Stop
    }

    /// Scene `scene`'s picture asked of the render queue as job `job_id` (again after a
    /// restart: the queue and the job change nothing the second time).
    async fn submit(
        &self,
        id: &str,
        known: &Known,
        requested: &events::video::ProjectRequested,
        scene: &events::video::PlannedScene,
        job_id: &str,
    ) -> Result<(), String> {
        let (width, height) = requested.format.render_size();
        let mut params = serde_json::json!({
            "prompt": scene.prompt,
            "negative_prompt": scene.negative_prompt,
            "seed": scene.seed,
            "width": width,
            "height": height,
        });
        if let Some(lora) = requested.persona.as_ref().and_then(|p| p.lora.as_ref()) {
            params["lora"] = serde_json::json!(lora);
        }
        if let Some(checkpoint) = &self.config.checkpoint {
            params["checkpoint"] = serde_json::json!(checkpoint);
        }
        if let Some(steps) = self.config.steps {
            params["steps"] = serde_json::json!(steps);
        }
        let mode = match requested.visuals {
            Visuals::Stills => RenderMode::Txt2img,
            Visuals::Clips => {
                params["animation"] = serde_json::json!({
                    "frames": self.config.clip_frames,
                    "fps": self.config.clip_fps,
                });
                RenderMode::AnimateDiff
            }
        };
        let params = serde_json::from_value(params)
            .map_err(|err| format!("the render's parameters: {err}"))?;
        let submit = RenderCommand::Submit {
            mode,
            params,
            priority: requested.priority,
            trigger: Trigger {
                source: "video".to_owned(),
                reference: Some(format!("project {id} scene {}", scene.n)),
            },
            max_attempts: 3,
        };
        sagas::submit_render(
            &self.render_queue,
            &self.render_jobs,
            job_id,
            self.queue_cap,
            None,
            submit,
            self.meta(known),
        )
        .await
        .map_err(|err| format!("the render could not be queued: {err:?}"))
    }

    /// The picture of render job `job_id`, once it has one.
    async fn picture(&self, job_id: &str) -> Result<String, String> {
        let wait = Duration::from_secs_f64(self.config.render_timeout_secs);
        let job = sagas::video::wait_render(&self.bus, &self.render_state, job_id, wait)
            .await
            .map_err(|err| format!("render job {job_id} could not be followed: {err}"))?;
        match job.status {
            Some(RenderStatus::Completed) => job
                .outputs
                .first()
                .cloned()
                .ok_or_else(|| format!("render job {job_id} completed without a picture")),
            Some(RenderStatus::Failed | RenderStatus::Cancelled) => {
                let why = sagas::video::render_failure(&self.bus, job_id)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                Err(format!(
                    "render job {job_id} ended without a picture: {why}"
                ))
            }
            _ => Err(format!(
                "render job {job_id} had no picture after {}s",
                self.config.render_timeout_secs
            )),
        }
    }

    fn tts(&self, voice: &str) -> Result<Box<dyn Tts>, String> {
        if let Some(name) = voice.strip_prefix("espeak-ng:") {
            return Ok(Box::new(media::tts::EspeakNg {
                binary: self.config.espeak_binary.clone(),
                voice: name.to_owned(),
                ..media::tts::EspeakNg::default()
            }));
        }
        if let Some(name) = voice.strip_prefix("piper:") {
            let piper = self
                .config
                .piper
                .as_ref()
                .ok_or("piper voices need [video.piper] (its binary and voices folder)")?;
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!("{name:?} is not a piper voice name"));
            }
            return Ok(Box::new(media::tts::Piper {
                binary: piper.binary.clone(),
                model: piper.voices_dir.join(format!("{name}.onnx")),
            }));
        }
        Err(format!("no speech engine for voice {voice:?}"))
    }

    /// `text` spoken in `voice`: the WAV's artifact, its length and its sentences' times.
    async fn narrate(
        &self,
        voice: &str,
        text: &str,
    ) -> Result<(String, u64, Vec<TimedText>), String> {
        let tts = self.tts(voice)?;
        let text = text.to_owned();
        let speech = tokio::task::spawn_blocking(move || tts.speak(&text))
            .await
            .map_err(|err| err.to_string())?
            .map_err(|err| err.to_string())?;
        let (artifact, _) = self
            .artifacts
            .put(&speech.to_wav())
            .await
            .map_err(|err| format!("the artifact store: {err}"))?;
        let ms = |d: Duration| d.as_millis() as u64;
        let sentences = speech
            .sentences
            .iter()
            .map(|s| TimedText {
                text: s.text.clone(),
                start_ms: ms(s.start),
                end_ms: ms(s.end),
            })
            .collect();
        Ok((artifact, ms(speech.duration()), sentences))
    }

    fn artifact_path(&self, sha: &str) -> Result<PathBuf, String> {
        self.artifacts
            .content_path(sha)
            .filter(|path| path.exists())
            .ok_or_else(|| format!("artifact {sha} is not in the store"))
    }

    /// The project's folder, with its scene files copied in.
    fn folder(&self, id: &str) -> Result<PathBuf, String> {
        uuid::Uuid::parse_str(id).map_err(|_| format!("{id} is not a project id"))?;
        let folder = self.storage.join(id);
        std::fs::create_dir_all(&folder).map_err(|err| format!("{}: {err}", folder.display()))?;
        Ok(folder)
    }

    async fn assemble(&self, id: &str, state: &VideoProject) -> Result<ProjectCommand, String> {
        let requested = state.requested.clone().ok_or("no request")?;
        let folder = self.folder(id)?;
        // Each scene's picture and narration, from the store into the project's folder.
        let mut scenes = Vec::new();
        let mut narration: Vec<i16> = Vec::new();
        let mut rate = 0;
        let mut subtitles = Vec::new();
        for scene in &state.scenes {
            let progress = &state.progress[&scene.n];
            let picture = self.artifact_path(progress.picture.as_deref().unwrap_or_default())?;
            let image = folder.join(scene_file(&requested, scene.n));
            std::fs::copy(&picture, &image).map_err(|err| format!("{}: {err}", image.display()))?;
            let wav_path = self.artifact_path(progress.narration.as_deref().unwrap_or_default())?;
            std::fs::copy(&wav_path, folder.join(format!("scene-{}.wav", scene.n)))
                .map_err(|err| err.to_string())?;
            let file = std::fs::File::open(&wav_path).map_err(|err| err.to_string())?;
            let (scene_rate, samples) = media::tts::wav_samples(std::io::BufReader::new(file))?;
            if rate == 0 {
                rate = scene_rate;
            } else if rate != scene_rate {
                return Err(format!(
                    "scene {} is narrated at {scene_rate} Hz, the others at {rate}",
                    scene.n
                ));
            }
            let offset = Duration::from_secs_f64(narration.len() as f64 / f64::from(rate));
            for sentence in sentences_of(state, scene.n) {
                subtitles.push(media::tts::Timed {
                    text: sentence.text,
                    start: offset + Duration::from_millis(sentence.start_ms),
                    end: offset + Duration::from_millis(sentence.end_ms),
                });
            }
            narration.extend(samples);
            narration.extend(std::iter::repeat_n(
                0,
                (SCENE_PAD.as_secs_f64() * f64::from(rate)) as usize,
            ));
            let duration =
                Duration::from_secs_f64(narration.len() as f64 / f64::from(rate)) - offset;
            let motion = if scene.n % 2 == 1 {
                media::assemble::Motion::ZoomIn
            } else {
                media::assemble::Motion::ZoomOut
            };
            scenes.push(media::assemble::Scene {
                image,
                duration,
                motion,
            });
        }
        let (width, height) = requested.format.size();
        let speech = media::tts::Speech {
            sample_rate: rate,
            samples: narration,
            sentences: Vec::new(),
        };
        let music = match &requested.music {
            Some(sha) => Some(media::audio::Music::new(self.artifact_path(sha)?)),
            None => None,
        };
        // Made in a folder of this attempt's own: an earlier attempt still finishing (its worker
        // stopped, its thread not) never writes into this one's file.
        let attempt = tempfile::Builder::new()
            .prefix(".assembling-")
            .tempdir_in(&folder)
            .map_err(|err| format!("{}: {err}", folder.display()))?;
        let output = attempt.path().join("video.mp4");
        let (fps, fade) = (
            self.config.fps,
            Duration::from_secs_f64(self.config.fade_secs),
        );
        let out = output.clone();
        let assembled = tokio::task::spawn_blocking(move || {
            let assembly = media::assemble::Assembly {
                frame: media::assemble::Frame { width, height, fps },
                scenes,
                narration: Some(&speech),
                subtitles,
                fade,
                music,
                output: out,
            };
            media::assemble::assemble(&assembly, |_| {})
        })
        .await
        .map_err(|err| err.to_string())?
        .map_err(|err| err.to_string())?;
        let video = tokio::fs::read(&output)
            .await
            .map_err(|err| err.to_string())?;
        let srt = tokio::fs::read(output.with_extension("srt"))
            .await
            .map_err(|err| err.to_string())?;
        for name in ["video.mp4", "video.srt"] {
            tokio::fs::rename(attempt.path().join(name), folder.join(name))
                .await
                .map_err(|err| format!("{name}: {err}"))?;
        }
        let (video, _) = self
            .artifacts
            .put(&video)
            .await
            .map_err(|err| err.to_string())?;
        let (subtitles, _) = self
            .artifacts
            .put(&srt)
            .await
            .map_err(|err| err.to_string())?;
        Ok(ProjectCommand::RecordAssembly {
            video,
            subtitles,
            duration_ms: assembled.duration.as_millis() as u64,
            width,
            height,
        })
    }

    async fn thumbnail(&self, id: &str, state: &VideoProject) -> Result<String, String> {
        let requested = state.requested.clone().ok_or("no request")?;
        let folder = self.folder(id)?;
        let pictures: Vec<PathBuf> = state
            .scenes
            .iter()
            .map(|s| folder.join(scene_file(&requested, s.n)))
            .collect();
        let attempt = tempfile::Builder::new()
            .prefix(".thumbnail-")
            .tempdir_in(&folder)
            .map_err(|err| format!("{}: {err}", folder.display()))?;
        let out = attempt.path().join("thumbnail.png");
        let (width, height) = requested.format.size();
        let (font, title, path) = (
            self.config.font.clone(),
            requested.title.clone(),
            out.clone(),
        );
        tokio::task::spawn_blocking(move || -> Result<(), media::assemble::AssemblyError> {
            let best = media::thumbnail::best_picture(&pictures)?;
            let frame = media::assemble::Frame {
                width: width / 2,
                height: height / 2,
                fps: 1,
            };
            media::thumbnail::thumbnail(&pictures[best], frame, &title, &font, &path)
        })
        .await
        .map_err(|err| err.to_string())?
        .map_err(|err| err.to_string())?;
        let bytes = tokio::fs::read(&out).await.map_err(|err| err.to_string())?;
        tokio::fs::rename(&out, folder.join("thumbnail.png"))
            .await
            .map_err(|err| err.to_string())?;
        let (artifact, _) = self
            .artifacts
            .put(&bytes)
            .await
            .map_err(|err| err.to_string())?;
        Ok(artifact)
    }

    /// Asks the Stream Bot to announce the video: one post per project (its id derived from the
    /// project's), so a worker that stops before recording it asks for the same post again and
    /// finds it made.
    async fn announce(
        &self,
        id: &str,
        known: &Known,
        title: &str,
        post: &events::video::AutoPost,
    ) -> Result<String, String> {
        let post_id = uuid::Uuid::new_v5(&POSTS, id.as_bytes()).to_string();
        let request = domain::post::PostCommand::Request(events::post::PostRequested {
            text: post.text.replace("{title}", title),
            artifact: None,
            destinations: post.destinations.clone(),
            share: None,
        });
        match execute(&self.posts, &post_id, request, self.meta(known), 3).await {
            Ok(())
            | Err(cqrs_es::AggregateError::UserError(domain::post::PostError::AlreadyRequested)) => {
                Ok(post_id)
            }
            Err(cqrs_es::AggregateError::UserError(err)) => {
                Err(format!("the Stream Bot refused the post: {err}"))
            }
            Err(err) => Err(format!("the post could not be asked for: {err}")),
        }
    }

    /// Cancels the project's renders that have not ended, then the project.
    async fn cancel(&self, id: &str, known: &Known, state: &VideoProject) {
        for progress in state.progress.values() {
            let (Some(job_id), None) = (&progress.render_job_id, &progress.picture) else {
                continue;
            };
            let cancel = RenderCommand::Cancel {
                reason: format!("video project {id} was cancelled"),
            };
            let _ = execute(&self.render_jobs, job_id, cancel, self.meta(known), 3).await;
        }
        self.record(id, known, ProjectCommand::Cancel).await;
        tracing::info!(project = id, "a video project cancelled");
    }
}

/// A scene's narrated sentences, as recorded.
fn sentences_of(state: &VideoProject, n: u32) -> Vec<TimedText> {
    state
        .progress
        .get(&n)
        .map(|p| p.sentences.clone())
        .unwrap_or_default()
}

/// A project's own seed (for personas whose policy is random): from its id.
/// Scene `n`'s picture (or clip) in the project's folder.
fn scene_file(requested: &events::video::ProjectRequested, n: u32) -> String {
    match requested.visuals {
        Visuals::Stills => format!("scene-{n}.png"),
        Visuals::Clips => format!("scene-{n}.mp4"),
    }
}

fn seed_of(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
