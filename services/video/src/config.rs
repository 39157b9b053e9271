//! `[video]`: where projects go, how many run at once, how scenes are rendered and spoken.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Piper, when the user has it: its binary and the folder of its voices (`<name>.onnx`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiperConfig {
    pub binary: PathBuf,
    pub voices_dir: PathBuf,
}

/// `[video]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where each project's files go, under its id (default `<state_dir>/storage/ai/influencer`).
    pub storage_root: Option<PathBuf>,
    /// Projects carried out at once.
    pub max_running: usize,
    /// Projects waiting beyond those (the next one asked for is refused).
    pub max_waiting: usize,
    pub fps: u32,
    /// Each cut between scenes a cross-fade this long.
    pub fade_secs: f64,
    /// How long one scene's picture may take (queued and rendered).
    pub render_timeout_secs: f64,
    /// The render's checkpoint and steps (else the studio's defaults).
    pub checkpoint: Option<String>,
    pub steps: Option<u32>,
    /// A clip scene's frames and their rate (AnimateDiff's motion modules are trained on 16).
    pub clip_frames: u32,
    pub clip_fps: u32,
    pub espeak_binary: PathBuf,
    pub piper: Option<PiperConfig>,
    /// The thumbnail's font.
    pub font: PathBuf,
    /// Ollama, for the scripts of projects asked for by topic.
    pub ollama_url: String,
    pub script_model: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            storage_root: None,
            max_running: 2,
            max_waiting: 100,
            fps: 30,
            fade_secs: 0.4,
            render_timeout_secs: 900.0,
            checkpoint: None,
            steps: None,
            clip_frames: 16,
            clip_fps: 8,
            espeak_binary: PathBuf::from("espeak-ng"),
            piper: None,
            font: PathBuf::from(media::thumbnail::DEFAULT_FONT),
            ollama_url: "http://127.0.0.1:11434".to_owned(),
            script_model: "llama3.2".to_owned(),
        }
    }
}

impl Config {
    /// The most projects waiting or running at once.
    pub fn queue_cap(&self) -> usize {
        self.max_running + self.max_waiting
    }

    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=16).contains(&self.max_running) {
            problems.push(format!(
                "max_running must be 1..=16, got {}",
                self.max_running
            ));
        }
        if !(1..=10_000).contains(&self.max_waiting) {
            problems.push(format!(
                "max_waiting must be 1..=10000, got {}",
                self.max_waiting
            ));
        }
        if !(1..=60).contains(&self.fps) {
            problems.push(format!("fps must be 1..=60, got {}", self.fps));
        }
        if !(2..=events::render::MAX_FRAMES).contains(&self.clip_frames)
            || !(1..=60).contains(&self.clip_fps)
        {
            problems.push(format!(
                "clip_frames must be 2..={} and clip_fps 1..=60, got {} and {}",
                events::render::MAX_FRAMES,
                self.clip_frames,
                self.clip_fps
            ));
        }
        if !(self.fade_secs.is_finite() && (0.0..=3.0).contains(&self.fade_secs)) {
            problems.push(format!("fade_secs must be 0..=3, got {}", self.fade_secs));
        }
        if !(self.render_timeout_secs.is_finite()
            && (1.0..=86_400.0).contains(&self.render_timeout_secs))
        {
            problems.push(format!(
                "render_timeout_secs must be 1..=86400, got {}",
                self.render_timeout_secs
            ));
        }
        problems
    }
}
