//! The script-to-video vocabulary: personas (a character and its look and voice, one aggregate
//! each) and video projects (one aggregate each: requested → script → scenes → each scene
//! rendered and narrated → assembled → thumbnail → completed; or failed, or cancelled).

use serde::{Deserialize, Serialize};

use crate::DomainEvent;
use crate::render::Lora;

/// The most scenes one project has.
pub const MAX_SCENES: usize = 40;
/// The most text a script may be.
pub const SCRIPT_MAX_BYTES: usize = 32 * 1024;

/// What a scene shows: a still moved slowly (Ken Burns), or an AnimateDiff clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Visuals {
    #[default]
    Stills,
    Clips,
}

impl Visuals {
    pub fn is_stills(&self) -> bool {
        *self == Visuals::Stills
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Visuals::Stills => "stills",
            Visuals::Clips => "clips",
        }
    }
}

/// The video's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum VideoFormat {
    /// 9:16, 1080×1920 (Shorts, Reels, TikTok).
    #[default]
    #[serde(rename = "9:16")]
    Portrait,
    /// 16:9, 1920×1080.
    #[serde(rename = "16:9")]
    Landscape,
    /// 1:1, 1080×1080.
    #[serde(rename = "1:1")]
    Square,
}

impl VideoFormat {
    /// Width and height of the finished video.
    pub fn size(self) -> (u32, u32) {
        match self {
            VideoFormat::Portrait => (1080, 1920),
            VideoFormat::Landscape => (1920, 1080),
            VideoFormat::Square => (1080, 1080),
        }
    }

    /// The size the scene pictures are rendered at (the model's native scale, the format's
    /// aspect, multiples of 64).
    pub fn render_size(self) -> (u32, u32) {
        match self {
            VideoFormat::Portrait => (576, 1024),
            VideoFormat::Landscape => (1024, 576),
            VideoFormat::Square => (768, 768),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VideoFormat::Portrait => "9:16",
            VideoFormat::Landscape => "16:9",
            VideoFormat::Square => "1:1",
        }
    }
}

/// How a persona's scenes are seeded: one seed for every scene keeps a character the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum SeedPolicy {
    /// The same seed for every scene.
    Fixed { seed: u64 },
    /// `base + n` for scene n.
    PerScene { base: u64 },
    /// A new seed each scene (recorded with its picture).
    Random,
}

impl Default for SeedPolicy {
    fn default() -> Self {
        SeedPolicy::Fixed { seed: 1 }
    }
}

/// A character: how it looks in every scene and how it sounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persona {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Carried by every scene's prompt.
    #[serde(default)]
    pub style_prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<Lora>,
    /// Textual-inversion embeddings, by name (each scene's prompt names them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embeddings: Vec<String>,
    #[serde(default)]
    pub seed: SeedPolicy,
    /// The narration's voice (`espeak-ng:en-us`, `piper:<voice>`).
    #[serde(default = "default_voice")]
    pub voice: String,
}

pub fn default_voice() -> String {
    "espeak-ng:en-us".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PersonaEvent {
    #[serde(rename = "persona.defined")]
    Defined(Persona),
    #[serde(rename = "persona.changed")]
    Changed(Persona),
    #[serde(rename = "persona.removed")]
    Removed {},
}

impl DomainEvent for PersonaEvent {
    const AGGREGATE_TYPE: &'static str = "video_persona";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] =
        &["persona.defined", "persona.changed", "persona.removed"];

    fn event_type(&self) -> &'static str {
        match self {
            PersonaEvent::Defined(_) => "persona.defined",
            PersonaEvent::Changed(_) => "persona.changed",
            PersonaEvent::Removed {} => "persona.removed",
        }
    }
}

/// What a video project is asked to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectRequested {
    pub title: String,
    /// The script as given (else written by the LLM from `topic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The persona as it was when the project was asked for (a later change does not touch a
    /// project under way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona: Option<Persona>,
    #[serde(default)]
    pub format: VideoFormat,
    /// Stills with a Ken Burns move, or AnimateDiff clips.
    #[serde(default, skip_serializing_if = "Visuals::is_stills")]
    pub visuals: Visuals,
    /// Roughly how long the video should be.
    #[serde(default = "default_target_secs")]
    pub target_secs: u32,
    /// Background music: an artifact (its SHA-256), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub music: Option<String>,
    #[serde(default)]
    pub priority: i32,
    /// Announced through the Stream Bot once the video is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<AutoPost>,
}

/// A post the Stream Bot makes when a video is done: `text` with `{title}` replaced by the
/// video's title, to each destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoPost {
    pub text: String,
    pub destinations: Vec<crate::post::Destination>,
}

fn default_target_secs() -> u32 {
    30
}

/// One scene as planned: what is said, what is shown, and its seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedScene {
    pub n: u32,
    /// Its narration.
    pub text: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
}

/// A sentence of a scene's narration and when it is said (milliseconds from the scene's start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedText {
    pub text: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum VideoProjectEvent {
    #[serde(rename = "video.requested")]
    Requested(ProjectRequested),
    /// Its script, as given or as the model wrote it.
    #[serde(rename = "video.script_written")]
    ScriptWritten {
        script: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
    #[serde(rename = "video.scenes_planned")]
    ScenesPlanned { scenes: Vec<PlannedScene> },
    /// A scene's picture asked of the render queue.
    #[serde(rename = "video.scene_render_queued")]
    SceneRenderQueued { n: u32, render_job_id: String },
    #[serde(rename = "video.scene_rendered")]
    SceneRendered { n: u32, artifact: String },
    #[serde(rename = "video.scene_narrated")]
    SceneNarrated {
        n: u32,
        /// The WAV, an artifact.
        artifact: String,
        duration_ms: u64,
        voice: String,
        sentences: Vec<TimedText>,
    },
    #[serde(rename = "video.assembled")]
    Assembled {
        video: String,
        subtitles: String,
        duration_ms: u64,
        width: u32,
        height: u32,
    },
    #[serde(rename = "video.thumbnail_made")]
    ThumbnailMade { artifact: String },
    /// Its announcement asked of the Stream Bot (post `post_id`, one per project).
    #[serde(rename = "video.posted")]
    Posted { post_id: String },
    #[serde(rename = "video.completed")]
    Completed {},
    /// It stopped at `step`, saying why.
    #[serde(rename = "video.failed")]
    Failed { step: String, reason: String },
    #[serde(rename = "video.priority_changed")]
    PriorityChanged { priority: i32 },
    #[serde(rename = "video.cancel_requested")]
    CancelRequested {},
    #[serde(rename = "video.cancelled")]
    Cancelled {},
}

impl DomainEvent for VideoProjectEvent {
    const AGGREGATE_TYPE: &'static str = "video_project";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "video.requested",
        "video.script_written",
        "video.scenes_planned",
        "video.scene_render_queued",
        "video.scene_rendered",
        "video.scene_narrated",
        "video.assembled",
        "video.thumbnail_made",
        "video.posted",
        "video.completed",
        "video.failed",
        "video.priority_changed",
        "video.cancel_requested",
        "video.cancelled",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            VideoProjectEvent::Requested(_) => "video.requested",
            VideoProjectEvent::ScriptWritten { .. } => "video.script_written",
            VideoProjectEvent::ScenesPlanned { .. } => "video.scenes_planned",
            VideoProjectEvent::SceneRenderQueued { .. } => "video.scene_render_queued",
            VideoProjectEvent::SceneRendered { .. } => "video.scene_rendered",
            VideoProjectEvent::SceneNarrated { .. } => "video.scene_narrated",
            VideoProjectEvent::Assembled { .. } => "video.assembled",
            VideoProjectEvent::ThumbnailMade { .. } => "video.thumbnail_made",
            VideoProjectEvent::Posted { .. } => "video.posted",
            VideoProjectEvent::Completed {} => "video.completed",
            VideoProjectEvent::Failed { .. } => "video.failed",
            VideoProjectEvent::PriorityChanged { .. } => "video.priority_changed",
            VideoProjectEvent::CancelRequested {} => "video.cancel_requested",
            VideoProjectEvent::Cancelled {} => "video.cancelled",
        }
    }
}

/// The one video queue (aggregate id [`VIDEO_QUEUE_ID`]): the projects holding a place
/// (waiting or running), taken under the cap, given back when a project ends.
pub const VIDEO_QUEUE_ID: &str = "video";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum VideoQueueEvent {
    #[serde(rename = "video_queue.admitted")]
    Admitted { project_id: String },
    #[serde(rename = "video_queue.released")]
    Released { project_id: String },
}

impl DomainEvent for VideoQueueEvent {
    const AGGREGATE_TYPE: &'static str = "video_queue";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &["video_queue.admitted", "video_queue.released"];

    fn event_type(&self) -> &'static str {
        match self {
            VideoQueueEvent::Admitted { .. } => "video_queue.admitted",
            VideoQueueEvent::Released { .. } => "video_queue.released",
        }
    }
}

/// What to do with the instants a scheduler slept through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Let them go; wait for the next one.
    #[default]
    Skip,
    /// Run once now for the latest of them.
    CatchUpOnce,
}

/// What to do when a firing comes while the previous run is still busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Skip the firing (recorded).
    #[default]
    Skip,
    /// Run it beside the busy one.
    Allow,
}

/// What each firing of a schedule asks for: a project like this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectTemplate {
    /// The project's title; `{n}` becomes the firing's number.
    pub title: String,
    /// The scripts, used in turn; or, when there are none, the topics, each written into a
    /// script by the local LLM.
    #[serde(default)]
    pub scripts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// A persona's name, read when the schedule fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona: Option<String>,
    #[serde(default)]
    pub format: VideoFormat,
    #[serde(default, skip_serializing_if = "Visuals::is_stills")]
    pub visuals: Visuals,
    #[serde(default = "default_target_secs")]
    pub target_secs: u32,
    #[serde(default)]
    pub priority: i32,
    /// Each video announced through the Stream Bot when done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<AutoPost>,
}

/// A schedule as defined: a cron expression in a time zone, what it makes, and its policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDefined {
    pub cron: String,
    pub time_zone: String,
    pub template: ProjectTemplate,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub missed: Missed,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ScheduleEvent {
    #[serde(rename = "schedule.defined")]
    Defined(ScheduleDefined),
    /// The instant `at` fired: project `project_id` asked for.
    #[serde(rename = "schedule.fired")]
    Fired {
        at: chrono::DateTime<chrono::Utc>,
        project_id: String,
    },
    /// `count` instants up to `at` did not fire, and why (`missed`, `busy`, `queue_full`, …).
    #[serde(rename = "schedule.skipped")]
    Skipped {
        at: chrono::DateTime<chrono::Utc>,
        count: u32,
        reason: String,
    },
    #[serde(rename = "schedule.removed")]
    Removed {},
}

impl DomainEvent for ScheduleEvent {
    const AGGREGATE_TYPE: &'static str = "video_schedule";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "schedule.defined",
        "schedule.fired",
        "schedule.skipped",
        "schedule.removed",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            ScheduleEvent::Defined(_) => "schedule.defined",
            ScheduleEvent::Fired { .. } => "schedule.fired",
            ScheduleEvent::Skipped { .. } => "schedule.skipped",
            ScheduleEvent::Removed {} => "schedule.removed",
        }
    }
}
