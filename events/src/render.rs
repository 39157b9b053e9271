//! The Creative Studio's vocabulary: render jobs (one aggregate per job), the render queue (one
//! aggregate: admission under the cap, pause and resume), and ComfyUI process supervision.

use serde::{Deserialize, Serialize};

use crate::DomainEvent;

/// The kinds of generation the studio offers: six image modes and AnimateDiff clips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenderMode {
    Txt2img,
    Img2img,
    Inpaint,
    Controlnet,
    Upscale,
    FaceSwap,
    /// A short clip (AnimateDiff frames, combined to MP4 by VideoHelperSuite).
    #[serde(rename = "animatediff")]
    AnimateDiff,
}

impl RenderMode {
    pub const ALL: [RenderMode; 7] = [
        RenderMode::Txt2img,
        RenderMode::Img2img,
        RenderMode::Inpaint,
        RenderMode::Controlnet,
        RenderMode::Upscale,
        RenderMode::FaceSwap,
        RenderMode::AnimateDiff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RenderMode::Txt2img => "txt2img",
            RenderMode::Img2img => "img2img",
            RenderMode::Inpaint => "inpaint",
            RenderMode::Controlnet => "controlnet",
            RenderMode::Upscale => "upscale",
            RenderMode::FaceSwap => "face_swap",
            RenderMode::AnimateDiff => "animatediff",
        }
    }

    /// The input images this mode needs, by parameter name.
    pub fn required_images(self) -> &'static [&'static str] {
        match self {
            RenderMode::Txt2img | RenderMode::AnimateDiff => &[],
            RenderMode::Img2img | RenderMode::Upscale => &["init_image"],
            RenderMode::Inpaint => &["init_image", "mask_image"],
            RenderMode::Controlnet => &["control_image"],
            RenderMode::FaceSwap => &["init_image", "face_image"],
        }
    }
}

/// An image already in the artifact store, by the SHA-256 of its bytes (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageRef {
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lora {
    pub name: String,
    pub strength: f64,
}

/// Everything a workflow template takes. Unused fields are ignored by modes that do not need
/// them; defaults are filled in at submit time so the stored request is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderParams {
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "defaults::steps")]
    pub steps: u32,
    #[serde(default = "defaults::cfg")]
    pub cfg: f64,
    #[serde(default = "defaults::size")]
    pub width: u32,
    #[serde(default = "defaults::size")]
    pub height: u32,
    #[serde(default = "defaults::checkpoint")]
    pub checkpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<Lora>,
    #[serde(default = "defaults::denoise")]
    pub denoise: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upscale_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlnet_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_image: Option<ImageRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_image: Option<ImageRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_image: Option<ImageRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_image: Option<ImageRef>,
    /// A clip's frames and motion (AnimateDiff; filled in at submit time for that mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub animation: Option<Animation>,
}

/// What an AnimateDiff clip is made of: how many frames at what rate, the motion module, and
/// the sliding context window (AnimateDiff-Evolved's uniform context options) that lets a clip
/// run longer than the module's 16 frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Animation {
    #[serde(default = "defaults::frames")]
    pub frames: u32,
    #[serde(default = "defaults::fps")]
    pub fps: u32,
    #[serde(default = "defaults::motion_module")]
    pub motion_module: String,
    #[serde(default = "defaults::context_length")]
    pub context_length: u32,
    #[serde(default = "defaults::context_overlap")]
    pub context_overlap: u32,
}

impl Default for Animation {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults are valid")
    }
}

mod defaults {
    pub(super) fn steps() -> u32 {
        20
    }
    pub(super) fn cfg() -> f64 {
        7.0
    }
    pub(super) fn size() -> u32 {
        512
    }
    pub(super) fn checkpoint() -> String {
        "v1-5-pruned-emaonly.safetensors".to_owned()
    }
    pub(super) fn denoise() -> f64 {
        1.0
    }
    pub(super) fn frames() -> u32 {
        16
    }
    pub(super) fn fps() -> u32 {
        8
    }
    pub(super) fn motion_module() -> String {
        "mm_sd_v15_v2.ckpt".to_owned()
    }
    pub(super) fn context_length() -> u32 {
        16
    }
    pub(super) fn context_overlap() -> u32 {
        4
    }
}

impl Default for RenderParams {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults are valid")
    }
}

impl RenderParams {
    /// Checks what can be checked before anything runs; the message says which field is wrong.
    pub fn validate(&self, mode: RenderMode) -> Result<(), String> {
        if !(1..=150).contains(&self.steps) {
            return Err(format!("steps must be 1..=150, got {}", self.steps));
        }
        if !(0.0..=30.0).contains(&self.cfg) {
            return Err(format!("cfg must be 0..=30, got {}", self.cfg));
        }
        for (name, value) in [("width", self.width), ("height", self.height)] {
            if !(64..=4096).contains(&value) || value % 8 != 0 {
                return Err(format!(
                    "{name} must be a multiple of 8 in 64..=4096, got {value}"
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.denoise) {
            return Err(format!("denoise must be 0..=1, got {}", self.denoise));
        }
        if let Some(lora) = &self.lora
            && !(-4.0..=4.0).contains(&lora.strength)
        {
            return Err(format!(
                "lora.strength must be -4..=4, got {}",
                lora.strength
            ));
        }
        if self.checkpoint.trim().is_empty() {
            return Err("checkpoint must not be empty".to_owned());
        }
        if mode != RenderMode::Upscale && mode != RenderMode::FaceSwap && self.prompt.is_empty() {
            return Err(format!("{} needs a prompt", mode.as_str()));
        }
        for name in mode.required_images() {
            if self.image(name).is_none() {
                return Err(format!("{} needs {name}", mode.as_str()));
            }
        }
        if mode == RenderMode::Upscale && self.upscale_model.is_none() {
            return Err("upscale needs upscale_model".to_owned());
        }
        if let Some(animation) = &self.animation {
            if !(2..=MAX_FRAMES).contains(&animation.frames) {
                return Err(format!(
                    "animation.frames must be 2..={MAX_FRAMES}, got {}",
                    animation.frames
                ));
            }
            if !(1..=60).contains(&animation.fps) {
                return Err(format!(
                    "animation.fps must be 1..=60, got {}",
                    animation.fps
                ));
            }
            if !(1..=64).contains(&animation.context_length)
                || animation.context_overlap >= animation.context_length
            {
                return Err(format!(
                    "animation.context_length must be 1..=64 and more than context_overlap, got {} and {}",
                    animation.context_length, animation.context_overlap
                ));
            }
            if animation.motion_module.trim().is_empty() {
                return Err("animation.motion_module must not be empty".to_owned());
            }
        } else if mode == RenderMode::AnimateDiff {
            return Err("animatediff needs animation".to_owned());
        }
        for image in [
            &self.init_image,
            &self.mask_image,
            &self.control_image,
            &self.face_image,
        ]
        .into_iter()
        .flatten()
        {
            if image.sha256.len() != 64 || !image.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("not a sha256 image reference: {}", image.sha256));
            }
        }
        Ok(())
    }

    pub fn image(&self, name: &str) -> Option<&ImageRef> {
        match name {
            "init_image" => self.init_image.as_ref(),
            "mask_image" => self.mask_image.as_ref(),
            "control_image" => self.control_image.as_ref(),
            "face_image" => self.face_image.as_ref(),
            _ => None,
        }
    }

    /// A rough VRAM need in MiB, used for placement: for the diffusion modes a base per model
    /// family plus the latent (all of a clip's frames at once); upscale and face swap load no
    /// checkpoint and sample nothing, so their need is their own model's (ComfyUI tiles an
    /// upscale, whatever the input's size).
    pub fn vram_estimate_mib(&self, mode: RenderMode) -> u64 {
        match mode {
            RenderMode::Upscale => return 1_500,
            RenderMode::FaceSwap => return 1_200,
            _ => {}
        }
        let pixels = u64::from(self.width) * u64::from(self.height);
        let base = if self.checkpoint.to_ascii_lowercase().contains("xl") {
            6_500
        } else {
            2_500
        };
        let extra = match mode {
            RenderMode::Controlnet => 1_400,
            // The motion module, and every frame's latent at once.
            RenderMode::AnimateDiff => {
                let frames = self.animation.as_ref().map_or(16, |a| a.frames);
                1_200 + u64::from(frames) * pixels / 4_096
            }
            _ => 0,
        };
        base + extra + pixels / 512
    }

    /// The model a mode's graph actually runs, as provenance records it: the checkpoint (and a
    /// clip's motion module), or the upscaler's or face swapper's own model.
    pub fn model_used(&self, mode: RenderMode) -> String {
        match mode {
            RenderMode::Upscale => self
                .upscale_model
                .clone()
                .unwrap_or_else(|| DEFAULT_UPSCALE_MODEL.to_owned()),
            RenderMode::FaceSwap => FACE_SWAP_MODEL.to_owned(),
            RenderMode::AnimateDiff => format!(
                "{} + {}",
                self.checkpoint,
                self.animation
                    .as_ref()
                    .map_or_else(defaults::motion_module, |a| a.motion_module.clone())
            ),
            _ => self.checkpoint.clone(),
        }
    }
}

/// Used when an upscale job names no model (validation normally requires one).
pub const DEFAULT_UPSCALE_MODEL: &str = "RealESRGAN_x4plus.pth";
/// ReActor's swap model.
pub const FACE_SWAP_MODEL: &str = "inswapper_128.onnx";

/// The most frames one clip may have.
pub const MAX_FRAMES: u32 = 256;

/// What started a job: the provenance chain begins here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// `"dashboard"`, `"api"`, `"discord"`, `"twitch"`, `"schedule"`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderRequested {
    pub mode: RenderMode,
    pub params: RenderParams,
    pub priority: i32,
    pub trigger: Trigger,
    pub vram_mib: u64,
    /// Attempts before a retryable failure becomes final.
    pub max_attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderQueued {
    pub priority: i32,
    /// Why it is (back) in the queue: `"submitted"`, or the reason it was requeued.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderPriorityChanged {
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderAssigned {
    pub node_id: String,
    /// 1 for the first assignment; each requeue adds one.
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderStarted {
    pub node_id: String,
    pub attempt: u32,
    /// `"comfyui"` or `"simulated"`.
    pub backend: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderProgressed {
    pub attempt: u32,
    pub value: u32,
    pub max: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub sha256: String,
    pub bytes: u64,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    /// The name the backend gave the file.
    pub filename: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// SHA-256 of the exact workflow JSON that ran.
    pub workflow_hash: String,
    pub model: String,
    pub seed: u64,
    pub node_id: String,
    pub backend: String,
    pub trigger: Trigger,
    pub correlation_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderCompleted {
    pub attempt: u32,
    pub artifacts: Vec<Artifact>,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderFailed {
    pub attempt: u32,
    pub reason: String,
    /// Whether running it again might succeed (the job is final either way once failed).
    pub retryable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderCancelled {
    pub reason: String,
    /// Whether it was running (and so had to be interrupted on its node).
    pub was_running: bool,
}

/// One output of a finished job may be seen by anyone holding its link,
/// `<public_url>/share/<token>.png`. The token is random (128 bits, so a link cannot be guessed
/// from the image's hash); it is not a secret in the vault's sense: it opens this one image and
/// is meant to be published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderShared {
    /// The output's SHA-256 (one of the job's artifacts).
    pub sha256: String,
    pub token: String,
}

/// A share link stops working; the output may be shared again (under a new token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderShareRevoked {
    pub sha256: String,
    pub token: String,
}

/// A finished job taken out of the read models (the log keeps its history): its outputs are
/// no longer held by it, so an artifact sweep collects them once nothing else refers to them,
/// and its share links close with it. Nothing more can be done to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderDeleted {
    /// The SHA-256 of each output it had.
    pub outputs: Vec<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum RenderJobEvent {
    #[serde(rename = "render.job_requested")]
    Requested(RenderRequested),
    #[serde(rename = "render.job_queued")]
    Queued(RenderQueued),
    #[serde(rename = "render.job_priority_changed")]
    PriorityChanged(RenderPriorityChanged),
    #[serde(rename = "render.job_assigned")]
    Assigned(RenderAssigned),
    #[serde(rename = "render.job_started")]
    Started(RenderStarted),
    #[serde(rename = "render.job_progressed")]
    Progressed(RenderProgressed),
    #[serde(rename = "render.job_completed")]
    Completed(RenderCompleted),
    #[serde(rename = "render.job_failed")]
    Failed(RenderFailed),
    #[serde(rename = "render.job_cancelled")]
    Cancelled(RenderCancelled),
    #[serde(rename = "render.job_shared")]
    Shared(RenderShared),
    #[serde(rename = "render.job_share_revoked")]
    ShareRevoked(RenderShareRevoked),
    #[serde(rename = "render.job_deleted")]
    Deleted(RenderDeleted),
}

impl DomainEvent for RenderJobEvent {
    const AGGREGATE_TYPE: &'static str = "render_job";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "render.job_requested",
        "render.job_queued",
        "render.job_priority_changed",
        "render.job_assigned",
        "render.job_started",
        "render.job_progressed",
        "render.job_completed",
        "render.job_failed",
        "render.job_cancelled",
        "render.job_shared",
        "render.job_share_revoked",
        "render.job_deleted",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            RenderJobEvent::Requested(_) => "render.job_requested",
            RenderJobEvent::Queued(_) => "render.job_queued",
            RenderJobEvent::PriorityChanged(_) => "render.job_priority_changed",
            RenderJobEvent::Assigned(_) => "render.job_assigned",
            RenderJobEvent::Started(_) => "render.job_started",
            RenderJobEvent::Progressed(_) => "render.job_progressed",
            RenderJobEvent::Completed(_) => "render.job_completed",
            RenderJobEvent::Failed(_) => "render.job_failed",
            RenderJobEvent::Cancelled(_) => "render.job_cancelled",
            RenderJobEvent::Shared(_) => "render.job_shared",
            RenderJobEvent::ShareRevoked(_) => "render.job_share_revoked",
            RenderJobEvent::Deleted(_) => "render.job_deleted",
        }
    }
}

/// Where a render job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenderStatus {
    Queued,
    Assigned,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl RenderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RenderStatus::Queued => "queued",
            RenderStatus::Assigned => "assigned",
            RenderStatus::Running => "running",
            RenderStatus::Completed => "completed",
            RenderStatus::Failed => "failed",
            RenderStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RenderStatus::Completed | RenderStatus::Failed | RenderStatus::Cancelled
        )
    }
}

/// The id of the one render queue.
pub const QUEUE_ID: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAdmitted {
    pub job_id: String,
    /// The chat user (`<platform>:<user id>`) whose command the place is for; chat's places
    /// count against chat's share of the queue and the user's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueReleased {
    pub job_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePaused {
    pub reason: String,
}

/// The queue as one aggregate: admission is decided on its subject, so two concurrent
/// submissions can never both take the 100th place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum RenderQueueEvent {
    #[serde(rename = "render.queue_admitted")]
    Admitted(QueueAdmitted),
    #[serde(rename = "render.queue_released")]
    Released(QueueReleased),
    #[serde(rename = "render.queue_paused")]
    Paused(QueuePaused),
    #[serde(rename = "render.queue_resumed")]
    Resumed,
}

impl DomainEvent for RenderQueueEvent {
    const AGGREGATE_TYPE: &'static str = "render_queue";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "render.queue_admitted",
        "render.queue_released",
        "render.queue_paused",
        "render.queue_resumed",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            RenderQueueEvent::Admitted(_) => "render.queue_admitted",
            RenderQueueEvent::Released(_) => "render.queue_released",
            RenderQueueEvent::Paused(_) => "render.queue_paused",
            RenderQueueEvent::Resumed => "render.queue_resumed",
        }
    }
}

/// States of a supervised ComfyUI process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComfyState {
    Starting,
    Healthy,
    /// Running but not answering `/system_stats`.
    Unresponsive,
    /// Exited (or was killed after hanging); a restart follows after the backoff.
    Down,
    /// Restarted too often without once answering: left down until its worker restarts.
    GaveUp,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComfyStateChanged {
    pub state: ComfyState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub restarts: u32,
    /// `"--lowvram"`, `"--normalvram"` or `"--highvram"`.
    pub vram_mode: String,
    pub reason: String,
}

/// A node's ComfyUI process (aggregate id: the node id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ComfyEvent {
    #[serde(rename = "comfyui.state_changed")]
    StateChanged(ComfyStateChanged),
}

impl DomainEvent for ComfyEvent {
    const AGGREGATE_TYPE: &'static str = "comfyui";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &["comfyui.state_changed"];

    fn event_type(&self) -> &'static str {
        "comfyui.state_changed"
    }
}

/// A render worker's heartbeat (TELEMETRY `nebula.telemetry.<node>.render_worker`): it is
/// alive, what it runs on, and how much room it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerHeartbeat {
    pub node_id: String,
    /// `"comfyui"` or `"simulated"`.
    pub backend: String,
    pub slots: u32,
    pub running: u32,
    /// Free and total VRAM as the backend reports it (MiB), when it reports it.
    #[serde(default)]
    pub vram_free_mib: Option<u64>,
    #[serde(default)]
    pub vram_total_mib: Option<u64>,
    /// Whether the backend answers (ComfyUI healthy).
    pub ready: bool,
}

impl WorkerHeartbeat {
    pub const KIND: &'static str = "render_worker";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clip_is_named_animatediff_and_checked_before_it_runs() {
        assert_eq!(
            serde_json::to_value(RenderMode::AnimateDiff).unwrap(),
            "animatediff"
        );
        let params: RenderParams = serde_json::from_value(serde_json::json!({
            "prompt": "Nova walks",
            "animation": {"frames": 24}
        }))
        .unwrap();
        let animation = params.animation.clone().unwrap();
        assert_eq!((animation.frames, animation.fps), (24, 8));
        assert_eq!(animation.motion_module, "mm_sd_v15_v2.ckpt");
        params.validate(RenderMode::AnimateDiff).unwrap();
        // A clip costs more memory than its still, growing with its frames.
        assert!(
            params.vram_estimate_mib(RenderMode::AnimateDiff)
                > params.vram_estimate_mib(RenderMode::Txt2img) + 1_000
        );
        let mut bad = params.clone();
        bad.animation.as_mut().unwrap().frames = MAX_FRAMES + 1;
        assert!(
            bad.validate(RenderMode::AnimateDiff)
                .unwrap_err()
                .contains("animation.frames")
        );
        bad.animation.as_mut().unwrap().frames = 16;
        bad.animation.as_mut().unwrap().context_overlap = 16;
        assert!(
            bad.validate(RenderMode::AnimateDiff)
                .unwrap_err()
                .contains("context_length")
        );
        let none = RenderParams {
            animation: None,
            ..params.clone()
        };
        assert_eq!(
            none.validate(RenderMode::AnimateDiff).unwrap_err(),
            "animatediff needs animation"
        );
        // Provenance names the model each graph runs.
        assert_eq!(
            params.model_used(RenderMode::AnimateDiff),
            "v1-5-pruned-emaonly.safetensors + mm_sd_v15_v2.ckpt"
        );
        assert_eq!(params.model_used(RenderMode::FaceSwap), FACE_SWAP_MODEL);
        let upscale = RenderParams {
            upscale_model: Some("4x-UltraSharp.pth".into()),
            ..RenderParams::default()
        };
        assert_eq!(upscale.model_used(RenderMode::Upscale), "4x-UltraSharp.pth");
        // An upscale's need is its upscaler's, not a checkpoint's at the default size.
        let big = RenderParams {
            checkpoint: "sd_xl_base_1.0.safetensors".into(),
            width: 2048,
            height: 2048,
            ..upscale.clone()
        };
        assert_eq!(
            big.vram_estimate_mib(RenderMode::Upscale),
            upscale.vram_estimate_mib(RenderMode::Upscale)
        );
        // An image job's stored form has no animation field at all.
        let still = serde_json::to_value(&none).unwrap();
        assert!(still.get("animation").is_none());
    }
}
