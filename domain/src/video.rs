//! Script to video, decided: personas (defined, changed, removed; checked), and a video
//! project's life (requested → script → scenes → every scene rendered and narrated → assembled
//! → thumbnail → completed; failed at a named step; cancelled), each step once. And the pure
//! parts of the pipeline: a script cut into scenes, and each scene's prompt chained from the
//! script and the persona, its seed by the persona's policy.

use std::collections::BTreeMap;

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::video::{
    MAX_SCENES, Persona, PersonaEvent, PlannedScene, ProjectRequested, SCRIPT_MAX_BYTES,
    SeedPolicy, TimedText, VideoProjectEvent,
};
use serde::{Deserialize, Serialize};

use crate::Event;

/// A persona's name: what REST paths and projects call it.
pub fn valid_persona_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// Why `name` cannot name a persona, if it cannot.
pub fn persona_name_problem(name: &str) -> Option<String> {
    (!valid_persona_name(name)).then(|| {
        format!("name {name:?}: 1-64 of a-z, 0-9, '-' and '_', starting with a letter or digit")
    })
}

/// What is wrong with `persona`, if anything.
pub fn validate_persona(persona: &Persona) -> Vec<String> {
    let mut problems: Vec<String> = persona_name_problem(&persona.name).into_iter().collect();
    for (field, text, max) in [
        ("description", &persona.description, 2000),
        ("style_prompt", &persona.style_prompt, 2000),
        ("negative_prompt", &persona.negative_prompt, 2000),
    ] {
        if text.len() > max {
            problems.push(format!("{field} is {} bytes; at most {max}", text.len()));
        }
    }
    if let Some(lora) = &persona.lora
        && (lora.name.trim().is_empty()
            || !(lora.strength.is_finite() && (-4.0..=4.0).contains(&lora.strength)))
    {
        problems.push("lora needs a name and a strength in -4..=4".to_owned());
    }
    if persona.embeddings.len() > 16
        || persona.embeddings.iter().any(|e| {
            e.is_empty()
                || !e
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    {
        problems
            .push("embeddings: at most 16 names of letters, digits, '-', '_' and '.'".to_owned());
    }
    if !(persona.voice.starts_with("espeak-ng:") || persona.voice.starts_with("piper:")) {
        problems.push(format!(
            "voice {:?}: espeak-ng:<voice> or piper:<voice>",
            persona.voice
        ));
    }
    problems
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PersonaCommand {
    /// Defines it, or changes it when it is defined.
    Put(Persona),
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PersonaError {
    #[error("no such persona")]
    NotFound,
    #[error("invalid persona: {0}")]
    Invalid(String),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PersonaState {
    pub persona: Option<Persona>,
}

impl Aggregate for PersonaState {
    const TYPE: &'static str = "video_persona";
    type Command = PersonaCommand;
    type Event = Event<PersonaEvent>;
    type Error = PersonaError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PersonaCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PersonaError> {
        let event = match command {
            PersonaCommand::Put(persona) => {
                let problems = validate_persona(&persona);
                if !problems.is_empty() {
                    return Err(PersonaError::Invalid(problems.join("; ")));
                }
                match &self.persona {
                    None => PersonaEvent::Defined(persona),
                    Some(now) if *now == persona => return Ok(()),
                    Some(_) => PersonaEvent::Changed(persona),
                }
            }
            PersonaCommand::Remove => {
                self.persona.as_ref().ok_or(PersonaError::NotFound)?;
                PersonaEvent::Removed {}
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<PersonaEvent>) {
        match event.0 {
            PersonaEvent::Defined(persona) | PersonaEvent::Changed(persona) => {
                self.persona = Some(persona)
            }
            PersonaEvent::Removed {} => self.persona = None,
        }
    }
}

/// The script cut into at most `max` scenes: its paragraphs (blank lines between them); a
/// script of one paragraph, by sentences, about `target_secs / 5` scenes of whole sentences.
pub fn plan_scenes(script: &str, target_secs: u32, max: usize) -> Vec<String> {
    let normal = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let paragraphs: Vec<String> = script
        .split("\n\n")
        .map(normal)
        .filter(|p| p.chars().any(char::is_alphanumeric))
        .collect();
    let max = max.clamp(1, MAX_SCENES);
    let parts = if paragraphs.len() > 1 {
        paragraphs
    } else {
        let sentences = sentences(&paragraphs.concat());
        let wanted = ((target_secs / 5).max(1) as usize).min(sentences.len().max(1));
        let per = sentences.len().div_ceil(wanted).max(1);
        sentences.chunks(per).map(|chunk| chunk.join(" ")).collect()
    };
    if parts.len() <= max {
        return parts;
    }
    // Too many: neighbouring parts join, so there are no more than `max`.
    let per = parts.len().div_ceil(max);
    parts.chunks(per).map(|chunk| chunk.join(" ")).collect()
}

fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        current.push(c);
        if matches!(c, '.' | '!' | '?') && chars.peek().is_none_or(|n| n.is_whitespace()) {
            out.push(current.trim().to_owned());
            current.clear();
        }
    }
    if current.chars().any(char::is_alphanumeric) {
        out.push(current.trim().to_owned());
    }
    out
}

/// Scene `n`'s picture prompt: the persona's style, then what the scene says, then the
/// persona's embeddings (ComfyUI's `embedding:<name>`); its negative prompt; its seed by the
/// persona's policy (`random`: the one drawn for it).
pub fn scene_prompt(persona: Option<&Persona>, n: u32, text: &str, random: u64) -> PlannedScene {
    let mut prompt = Vec::new();
    if let Some(style) = persona
        .map(|p| p.style_prompt.trim())
        .filter(|s| !s.is_empty())
    {
        prompt.push(style.to_owned());
    }
    prompt.push(text.trim().to_owned());
    if let Some(persona) = persona {
        prompt.extend(persona.embeddings.iter().map(|e| format!("embedding:{e}")));
    }
    let seed = match persona.map_or(SeedPolicy::Random, |p| p.seed) {
        SeedPolicy::Fixed { seed } => seed,
        SeedPolicy::PerScene { base } => base.wrapping_add(u64::from(n)),
        SeedPolicy::Random => random,
    };
    PlannedScene {
        n,
        text: text.trim().to_owned(),
        prompt: prompt.join(", "),
        negative_prompt: persona
            .map(|p| p.negative_prompt.clone())
            .unwrap_or_default(),
        seed,
    }
}

/// What is wrong with a project request, if anything.
pub fn validate_project(request: &ProjectRequested) -> Vec<String> {
    let mut problems = Vec::new();
    if request.title.trim().is_empty() || request.title.len() > 200 {
        problems.push("title: 1-200 bytes".to_owned());
    }
    match (&request.script, &request.topic) {
        (None, None) => {
            problems.push("a script, or a topic for the model to write one from".to_owned())
        }
        (Some(script), _) if script.len() > SCRIPT_MAX_BYTES => {
            problems.push(format!(
                "the script is {} bytes; at most {SCRIPT_MAX_BYTES}",
                script.len()
            ));
        }
        (Some(script), _) if !script.chars().any(char::is_alphanumeric) => {
            problems.push("the script is empty".to_owned())
        }
        _ => {}
    }
    if !(5..=600).contains(&request.target_secs) {
        problems.push(format!(
            "target_secs must be 5..=600, got {}",
            request.target_secs
        ));
    }
    if let Some(persona) = &request.persona {
        problems.extend(
            validate_persona(persona)
                .into_iter()
                .map(|p| format!("persona: {p}")),
        );
    }
    if let Some(post) = &request.post {
        problems.extend(validate_post(post));
    }
    problems
}

/// What is wrong with an announcement, if anything: what the Stream Bot would refuse.
pub fn validate_post(post: &events::video::AutoPost) -> Vec<String> {
    let asked = events::post::PostRequested {
        text: post.text.replace("{title}", "x"),
        artifact: None,
        destinations: post.destinations.clone(),
        share: None,
    };
    match crate::post::validate(&asked) {
        Ok(()) => Vec::new(),
        Err(problem) => vec![format!("post: {problem}")],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl ProjectStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectStatus::Queued => "queued",
            ProjectStatus::Running => "running",
            ProjectStatus::Completed => "completed",
            ProjectStatus::Failed => "failed",
            ProjectStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            ProjectStatus::Completed | ProjectStatus::Failed | ProjectStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ProjectCommand {
    Request(ProjectRequested),
    WriteScript {
        script: String,
        model: Option<String>,
    },
    PlanScenes {
        scenes: Vec<PlannedScene>,
    },
    QueueRender {
        n: u32,
        render_job_id: String,
    },
    RecordRender {
        n: u32,
        artifact: String,
    },
    RecordNarration {
        n: u32,
        artifact: String,
        duration_ms: u64,
        voice: String,
        sentences: Vec<TimedText>,
    },
    RecordAssembly {
        video: String,
        subtitles: String,
        duration_ms: u64,
        width: u32,
        height: u32,
    },
    RecordThumbnail {
        artifact: String,
    },
    /// Its announcement asked of the Stream Bot as post `post_id`.
    RecordPost {
        post_id: String,
    },
    Complete,
    Fail {
        step: String,
        reason: String,
    },
    ChangePriority {
        priority: i32,
    },
    RequestCancel,
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ProjectError {
    #[error("no such project")]
    NotFound,
    #[error("this project was already requested")]
    AlreadyRequested,
    #[error("the project is {0} and cannot {1}")]
    InvalidTransition(String, String),
    #[error("{0}")]
    Invalid(String),
}

/// One scene's progress.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SceneState {
    pub render_job_id: Option<String>,
    pub picture: Option<String>,
    pub narration: Option<String>,
    pub duration_ms: u64,
    /// The narration's sentences and their times.
    pub sentences: Vec<TimedText>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct VideoProject {
    pub requested: Option<ProjectRequested>,
    pub status: Option<ProjectStatus>,
    pub priority: i32,
    pub script: Option<String>,
    pub scenes: Vec<PlannedScene>,
    pub progress: BTreeMap<u32, SceneState>,
    pub video: Option<String>,
    pub thumbnail: Option<String>,
    /// The Stream Bot post announcing it, once asked for.
    pub posted: Option<String>,
    pub cancel_requested: bool,
    /// The step it failed at and why.
    pub failure: Option<(String, String)>,
}

impl VideoProject {
    fn running(&self, action: &str) -> Result<(), ProjectError> {
        match self.status {
            None => Err(ProjectError::NotFound),
            Some(ProjectStatus::Queued | ProjectStatus::Running) => Ok(()),
            Some(status) => Err(ProjectError::InvalidTransition(
                status.as_str().to_owned(),
                action.to_owned(),
            )),
        }
    }

    fn scene(&self, n: u32) -> Result<&SceneState, ProjectError> {
        self.progress
            .get(&n)
            .ok_or_else(|| ProjectError::Invalid(format!("there is no scene {n}")))
    }

    /// Every scene has its picture and its narration.
    pub fn scenes_ready(&self) -> bool {
        !self.progress.is_empty()
            && self
                .progress
                .values()
                .all(|s| s.picture.is_some() && s.narration.is_some())
    }
}

impl Aggregate for VideoProject {
    const TYPE: &'static str = "video_project";
    type Command = ProjectCommand;
    type Event = Event<VideoProjectEvent>;
    type Error = ProjectError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ProjectCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ProjectError> {
        use VideoProjectEvent as E;
        let event = match command {
            ProjectCommand::Request(request) => {
                if self.status.is_some() {
                    return Err(ProjectError::AlreadyRequested);
                }
                let problems = validate_project(&request);
                if !problems.is_empty() {
                    return Err(ProjectError::Invalid(problems.join("; ")));
                }
                E::Requested(request)
            }
            ProjectCommand::WriteScript { script, model } => {
                self.running("take a script")?;
                if self.script.is_some() {
                    return Err(ProjectError::Invalid("its script is written".to_owned()));
                }
                E::ScriptWritten { script, model }
            }
            ProjectCommand::PlanScenes { scenes } => {
                self.running("plan its scenes")?;
                if self.script.is_none() || !self.scenes.is_empty() {
                    return Err(ProjectError::Invalid(
                        "scenes are planned once, after the script".to_owned(),
                    ));
                }
                if scenes.is_empty() || scenes.len() > MAX_SCENES {
                    return Err(ProjectError::Invalid(format!(
                        "1..={MAX_SCENES} scenes, got {}",
                        scenes.len()
                    )));
                }
                if scenes
                    .iter()
                    .enumerate()
                    .any(|(i, s)| s.n as usize != i + 1)
                {
                    return Err(ProjectError::Invalid(
                        "scenes are numbered 1, 2, 3, …".to_owned(),
                    ));
                }
                E::ScenesPlanned { scenes }
            }
            ProjectCommand::QueueRender { n, render_job_id } => {
                self.running("render a scene")?;
                if self.scene(n)?.render_job_id.is_some() {
                    return Err(ProjectError::Invalid(format!(
                        "scene {n}'s render is queued already"
                    )));
                }
                E::SceneRenderQueued { n, render_job_id }
            }
            ProjectCommand::RecordRender { n, artifact } => {
                self.running("record a picture")?;
                if self.scene(n)?.picture.is_some() {
                    return Err(ProjectError::Invalid(format!("scene {n} has its picture")));
                }
                E::SceneRendered { n, artifact }
            }
            ProjectCommand::RecordNarration {
                n,
                artifact,
                duration_ms,
                voice,
                sentences,
            } => {
                self.running("record a narration")?;
                if self.scene(n)?.narration.is_some() {
                    return Err(ProjectError::Invalid(format!(
                        "scene {n} has its narration"
                    )));
                }
                E::SceneNarrated {
                    n,
                    artifact,
                    duration_ms,
                    voice,
                    sentences,
                }
            }
            ProjectCommand::RecordAssembly {
                video,
                subtitles,
                duration_ms,
                width,
                height,
            } => {
                self.running("be assembled")?;
                if !self.scenes_ready() || self.video.is_some() {
                    return Err(ProjectError::Invalid(
                        "assembled once, when every scene is ready".to_owned(),
                    ));
                }
                E::Assembled {
                    video,
                    subtitles,
                    duration_ms,
                    width,
                    height,
                }
            }
            ProjectCommand::RecordThumbnail { artifact } => {
                self.running("get a thumbnail")?;
                if self.video.is_none() || self.thumbnail.is_some() {
                    return Err(ProjectError::Invalid(
                        "one thumbnail, after the video".to_owned(),
                    ));
                }
                E::ThumbnailMade { artifact }
            }
            ProjectCommand::RecordPost { post_id } => {
                self.running("be announced")?;
                let wanted = self.requested.as_ref().is_some_and(|r| r.post.is_some());
                if !wanted || self.thumbnail.is_none() || self.posted.is_some() {
                    return Err(ProjectError::Invalid(
                        "one announcement, when asked for, once the video is made".to_owned(),
                    ));
                }
                E::Posted { post_id }
            }
            ProjectCommand::Complete => {
                self.running("complete")?;
                if self.thumbnail.is_none() {
                    return Err(ProjectError::Invalid(
                        "it completes with its video and thumbnail".to_owned(),
                    ));
                }
                if self.requested.as_ref().is_some_and(|r| r.post.is_some())
                    && self.posted.is_none()
                {
                    return Err(ProjectError::Invalid(
                        "it completes once its announcement is asked for".to_owned(),
                    ));
                }
                E::Completed {}
            }
            ProjectCommand::Fail { step, reason } => {
                self.running("fail")?;
                E::Failed { step, reason }
            }
            ProjectCommand::ChangePriority { priority } => {
                self.running("change its priority")?;
                E::PriorityChanged { priority }
            }
            ProjectCommand::RequestCancel => {
                self.running("be cancelled")?;
                if self.cancel_requested {
                    return Err(ProjectError::Invalid(
                        "its cancellation was already asked for".to_owned(),
                    ));
                }
                E::CancelRequested {}
            }
            ProjectCommand::Cancel => {
                self.running("be cancelled")?;
                E::Cancelled {}
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<VideoProjectEvent>) {
        use VideoProjectEvent as E;
        match event.0 {
            E::Requested(request) => {
                self.priority = request.priority;
                self.requested = Some(request);
                self.status = Some(ProjectStatus::Queued);
            }
            E::ScriptWritten { script, .. } => {
                self.script = Some(script);
                self.status = Some(ProjectStatus::Running);
            }
            E::ScenesPlanned { scenes } => {
                self.progress = scenes
                    .iter()
                    .map(|s| (s.n, SceneState::default()))
                    .collect();
                self.scenes = scenes;
                self.status = Some(ProjectStatus::Running);
            }
            E::SceneRenderQueued { n, render_job_id } => {
                self.progress.entry(n).or_default().render_job_id = Some(render_job_id);
            }
            E::SceneRendered { n, artifact } => {
                self.progress.entry(n).or_default().picture = Some(artifact)
            }
            E::SceneNarrated {
                n,
                artifact,
                duration_ms,
                sentences,
                ..
            } => {
                let scene = self.progress.entry(n).or_default();
                scene.narration = Some(artifact);
                scene.duration_ms = duration_ms;
                scene.sentences = sentences;
            }
            E::Assembled { video, .. } => self.video = Some(video),
            E::ThumbnailMade { artifact } => self.thumbnail = Some(artifact),
            E::Posted { post_id } => self.posted = Some(post_id),
            E::Completed {} => self.status = Some(ProjectStatus::Completed),
            E::Failed { step, reason } => {
                self.failure = Some((step, reason));
                self.status = Some(ProjectStatus::Failed);
            }
            E::PriorityChanged { priority } => self.priority = priority,
            E::CancelRequested {} => self.cancel_requested = true,
            E::Cancelled {} => self.status = Some(ProjectStatus::Cancelled),
        }
    }
}

#[derive(Debug, Clone)]
pub enum VideoQueueCommand {
    /// A place for `project_id`, unless `cap` places are taken (taking it again changes nothing).
    Admit { project_id: String, cap: usize },
    /// The place given back (the project ended, or was never recorded).
    Release { project_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum VideoQueueError {
    #[error(
        "the video queue is full ({cap} projects waiting or running); try again when one has finished"
    )]
    Full { cap: usize },
}

/// The projects holding a place in the video queue.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct VideoQueue {
    pub admitted: std::collections::BTreeSet<String>,
}

impl Aggregate for VideoQueue {
    const TYPE: &'static str = "video_queue";
    type Command = VideoQueueCommand;
    type Event = Event<events::video::VideoQueueEvent>;
    type Error = VideoQueueError;
    type Services = ();

    async fn handle(
        &mut self,
        command: VideoQueueCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), VideoQueueError> {
        use events::video::VideoQueueEvent as E;
        let event = match command {
            VideoQueueCommand::Admit { project_id, cap } => {
                if self.admitted.contains(&project_id) {
                    return Ok(());
                }
                if self.admitted.len() >= cap {
                    return Err(VideoQueueError::Full { cap });
                }
                E::Admitted { project_id }
            }
            VideoQueueCommand::Release { project_id } => {
                if !self.admitted.contains(&project_id) {
                    return Ok(());
                }
                E::Released { project_id }
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<events::video::VideoQueueEvent>) {
        match event.0 {
            events::video::VideoQueueEvent::Admitted { project_id } => {
                self.admitted.insert(project_id);
            }
            events::video::VideoQueueEvent::Released { project_id } => {
                self.admitted.remove(&project_id);
            }
        }
    }
}

/// Which waiting projects run next when `free` places are free: the highest priority first,
/// then the oldest (ids are UUID v7: they sort by time).
pub fn next_to_run(waiting: &[(String, i32)], free: usize) -> Vec<String> {
    let mut order: Vec<&(String, i32)> = waiting.iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    order
        .into_iter()
        .take(free)
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use events::render::Lora;

    fn persona() -> Persona {
        Persona {
            name: "nova".to_owned(),
            description: "a synthwave host".to_owned(),
            style_prompt: "neon portrait of Nova, pink hair, 80s film grain".to_owned(),
            negative_prompt: "blurry, extra fingers".to_owned(),
            lora: Some(Lora {
                name: "nova-v2.safetensors".to_owned(),
                strength: 0.8,
            }),
            embeddings: vec!["nova-face".to_owned()],
            seed: SeedPolicy::Fixed { seed: 4242 },
            voice: "espeak-ng:en-us".to_owned(),
        }
    }

    fn request(script: &str) -> ProjectRequested {
        ProjectRequested {
            title: "Synthwave facts".to_owned(),
            script: Some(script.to_owned()),
            topic: None,
            persona: Some(persona()),
            format: events::video::VideoFormat::Portrait,
            visuals: events::video::Visuals::Stills,
            target_secs: 30,
            music: None,
            priority: 0,
            post: None,
        }
    }

    #[test]
    fn a_persona_is_checked_and_an_unchanged_put_records_nothing() {
        TestFramework::<PersonaState>::with(())
            .given_no_previous_events()
            .when(PersonaCommand::Put(persona()))
            .then_expect_events(vec![Event(PersonaEvent::Defined(persona()))]);
        TestFramework::<PersonaState>::with(())
            .given(vec![Event(PersonaEvent::Defined(persona()))])
            .when(PersonaCommand::Put(persona()))
            .then_expect_events(vec![]);
        let changed = Persona {
            style_prompt: "oil painting of Nova".to_owned(),
            ..persona()
        };
        TestFramework::<PersonaState>::with(())
            .given(vec![Event(PersonaEvent::Defined(persona()))])
            .when(PersonaCommand::Put(changed.clone()))
            .then_expect_events(vec![Event(PersonaEvent::Changed(changed))]);
        TestFramework::<PersonaState>::with(())
            .given_no_previous_events()
            .when(PersonaCommand::Remove)
            .then_expect_error(PersonaError::NotFound);
        let bad = Persona {
            name: "Nova!".to_owned(),
            voice: "say".to_owned(),
            ..persona()
        };
        let problems = validate_persona(&bad);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("name \"Nova!\""));
        assert!(problems[1].starts_with("voice \"say\""));
    }

    #[test]
    fn paragraphs_are_scenes_and_one_paragraph_is_cut_by_sentences() {
        assert_eq!(
            plan_scenes(
                "First, the sun.\n\nThen   the sea.\n\n\n\nLast, the stars.",
                30,
                10
            ),
            ["First, the sun.", "Then the sea.", "Last, the stars."]
        );
        // One paragraph of six sentences, about 15 s: three scenes of two sentences.
        let one = "One. Two! Three? Four. Five. Six.";
        assert_eq!(
            plan_scenes(one, 15, 10),
            ["One. Two!", "Three? Four.", "Five. Six."]
        );
        // Never more than asked: the extra parts join.
        let many: String = (1..=7).map(|n| format!("Part {n}.\n\n")).collect();
        assert_eq!(plan_scenes(&many, 30, 3).len(), 3);
        assert!(plan_scenes("  \n\n ", 30, 3).is_empty());
    }

    #[test]
    fn every_scene_of_a_persona_carries_its_look_and_seed() {
        let nova = persona();
        let scenes: Vec<PlannedScene> = ["Nova waves.", "Nova walks a neon street."]
            .iter()
            .enumerate()
            .map(|(i, t)| scene_prompt(Some(&nova), i as u32 + 1, t, 7))
            .collect();
        for scene in &scenes {
            assert!(
                scene
                    .prompt
                    .starts_with("neon portrait of Nova, pink hair, 80s film grain, "),
                "{}",
                scene.prompt
            );
            assert!(
                scene.prompt.ends_with(", embedding:nova-face"),
                "{}",
                scene.prompt
            );
            assert_eq!(scene.negative_prompt, "blurry, extra fingers");
            assert_eq!(scene.seed, 4242, "a fixed seed keeps the character");
        }
        assert!(scenes[1].prompt.contains("Nova walks a neon street."));
        let per_scene = Persona {
            seed: SeedPolicy::PerScene { base: 100 },
            ..nova
        };
        assert_eq!(scene_prompt(Some(&per_scene), 3, "x", 7).seed, 103);
        let plain = scene_prompt(None, 1, " A lighthouse. ", 99);
        assert_eq!((plain.prompt.as_str(), plain.seed), ("A lighthouse.", 99));
    }

    #[test]
    fn a_project_goes_step_by_step_each_once() {
        let scene = |n: u32| scene_prompt(None, n, "x", 1);
        let base = vec![
            Event(VideoProjectEvent::Requested(request("One.\n\nTwo."))),
            Event(VideoProjectEvent::ScriptWritten {
                script: "One.\n\nTwo.".to_owned(),
                model: None,
            }),
            Event(VideoProjectEvent::ScenesPlanned {
                scenes: vec![scene(1), scene(2)],
            }),
        ];
        TestFramework::<VideoProject>::with(())
            .given(base.clone())
            .when(ProjectCommand::QueueRender {
                n: 3,
                render_job_id: "r".to_owned(),
            })
            .then_expect_error(ProjectError::Invalid("there is no scene 3".to_owned()));
        let mut rendered = base.clone();
        rendered.push(Event(VideoProjectEvent::SceneRendered {
            n: 1,
            artifact: "a".to_owned(),
        }));
        TestFramework::<VideoProject>::with(())
            .given(rendered.clone())
            .when(ProjectCommand::RecordRender {
                n: 1,
                artifact: "b".to_owned(),
            })
            .then_expect_error(ProjectError::Invalid("scene 1 has its picture".to_owned()));
        TestFramework::<VideoProject>::with(())
            .given(rendered)
            .when(ProjectCommand::RecordAssembly {
                video: "v".to_owned(),
                subtitles: "s".to_owned(),
                duration_ms: 1,
                width: 2,
                height: 2,
            })
            .then_expect_error(ProjectError::Invalid(
                "assembled once, when every scene is ready".to_owned(),
            ));
        TestFramework::<VideoProject>::with(())
            .given(base.clone())
            .when(ProjectCommand::Complete)
            .then_expect_error(ProjectError::Invalid(
                "it completes with its video and thumbnail".to_owned(),
            ));
        let mut failed = base;
        failed.push(Event(VideoProjectEvent::Failed {
            step: "render".to_owned(),
            reason: "r".to_owned(),
        }));
        TestFramework::<VideoProject>::with(())
            .given(failed)
            .when(ProjectCommand::Cancel)
            .then_expect_error(ProjectError::InvalidTransition(
                "failed".to_owned(),
                "be cancelled".to_owned(),
            ));
        let empty = ProjectRequested {
            script: None,
            ..request("x")
        };
        TestFramework::<VideoProject>::with(())
            .given_no_previous_events()
            .when(ProjectCommand::Request(empty))
            .then_expect_error(ProjectError::Invalid(
                "a script, or a topic for the model to write one from".to_owned(),
            ));
    }

    #[test]
    fn the_queue_admits_under_its_cap_once_each_and_releases() {
        use events::video::VideoQueueEvent as E;
        let admitted = |id: &str| {
            Event(E::Admitted {
                project_id: id.to_owned(),
            })
        };
        let admit = |id: &str| VideoQueueCommand::Admit {
            project_id: id.to_owned(),
            cap: 2,
        };
        TestFramework::<VideoQueue>::with(())
            .given(vec![admitted("a"), admitted("b")])
            .when(admit("c"))
            .then_expect_error(VideoQueueError::Full { cap: 2 });
        TestFramework::<VideoQueue>::with(())
            .given(vec![admitted("a"), admitted("b")])
            .when(admit("a"))
            .then_expect_events(vec![]);
        TestFramework::<VideoQueue>::with(())
            .given(vec![
                admitted("a"),
                admitted("b"),
                Event(E::Released {
                    project_id: "a".to_owned(),
                }),
            ])
            .when(admit("c"))
            .then_expect_events(vec![admitted("c")]);
        TestFramework::<VideoQueue>::with(())
            .given_no_previous_events()
            .when(VideoQueueCommand::Release {
                project_id: "x".to_owned(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_highest_priority_then_the_oldest_runs_next() {
        let waiting = [
            ("01-old".to_owned(), 0),
            ("02-urgent".to_owned(), 5),
            ("03-new".to_owned(), 0),
            ("04-urgent".to_owned(), 5),
        ];
        assert_eq!(
            next_to_run(&waiting, 3),
            ["02-urgent", "04-urgent", "01-old"]
        );
        assert!(next_to_run(&waiting, 0).is_empty());
    }
}
