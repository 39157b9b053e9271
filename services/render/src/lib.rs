//! The Creative Studio's moving parts: render backends (ComfyUI, simulated), the dispatcher that
//! places queued jobs on nodes, the worker that runs them, and the ComfyUI supervisor.
//!
//! Two parts start from here: [`start`] runs this node's render worker (and the ComfyUI
//! supervisor when `supervise` is set); [`dispatcher::start`] places jobs (one per system).

pub mod backend;
pub mod comfyui;
pub mod dispatcher;
pub mod simulated;
pub mod supervisor;
mod worker;
pub mod workflows;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use service::Context;

pub use artifacts::{self, ArtifactStore};
pub use backend::{Backend, BackendError, DeviceInfo, InputImage, RenderOutput, RenderRequest};
pub use dispatcher::WorkItem;
pub use worker::WorkerConfig;

/// Which backend runs this node's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A labelled stand-in that draws real PNGs from prompt and seed, for machines without a GPU.
    Simulated,
    /// A real ComfyUI server at `comfyui_url`.
    Comfyui,
}

/// The Creative Studio's settings (`[render]`): placement, and this node's render worker. The
/// artifact store and the queue's cap are the site's (`artifacts_dir`, `render_queue_cap`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub backend: BackendKind,
    pub comfyui_url: String,
    /// The worker's node id; the site's (the agent's) when absent.
    pub node_id: Option<String>,
    pub simulated_vram_mib: u64,
    pub simulated_step_ms: u64,
    pub dispatcher: dispatcher::Config,
    pub worker: WorkerConfig,
    /// Supervise a local ComfyUI process (start, health-check, restart) when set.
    pub supervise: Option<supervisor::SupervisorConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backend: BackendKind::Simulated,
            comfyui_url: "http://127.0.0.1:8188".to_owned(),
            node_id: None,
            simulated_vram_mib: 8192,
            simulated_step_ms: 120,
            dispatcher: dispatcher::Config::default(),
            worker: WorkerConfig::default(),
            supervise: None,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.comfyui_url.starts_with("http://") && !self.comfyui_url.starts_with("https://") {
            problems.push(format!(
                "comfyui_url must be an http(s) url, got {:?}",
                self.comfyui_url
            ));
        }
        if let Some(id) = &self.node_id
            && let Err(err) = id.parse::<events::NodeId>()
        {
            problems.push(format!("node_id {id:?} is invalid: {err}"));
        }
        problems.extend(
            self.worker
                .validate()
                .into_iter()
                .map(|p| format!("worker.{p}")),
        );
        problems.extend(
            self.dispatcher
                .validate()
                .into_iter()
                .map(|p| format!("dispatcher.{p}")),
        );
        if let Some(supervise) = &self.supervise {
            problems.extend(
                supervise
                    .validate()
                    .into_iter()
                    .map(|p| format!("supervise.{p}")),
            );
        }
        problems
    }

    /// The backend this configuration asks for.
    fn backend(&self) -> anyhow::Result<Arc<dyn Backend>> {
        Ok(match self.backend {
            BackendKind::Comfyui => Arc::new(
                comfyui::ComfyUi::new(&self.comfyui_url)
                    .map_err(|err| anyhow::anyhow!("render.comfyui_url: {err}"))?,
            ),
            BackendKind::Simulated => {
                tracing::warn!(
                    "render backend: SIMULATED GPU (no model runs; images are drawn from prompt and seed). \
                     Set render.backend = \"comfyui\" to use a real ComfyUI server."
                );
                Arc::new(simulated::SimulatedGpu {
                    vram_total_mib: self.simulated_vram_mib,
                    step_time: Duration::from_millis(self.simulated_step_ms),
                })
            }
        })
    }
}

/// Starts this node's render worker (`config.node_id`, else the site's node) and, when
/// `supervise` is set, the supervisor of its ComfyUI process.
pub async fn start(ctx: &Context, config: Config) -> anyhow::Result<()> {
    let node_id = match &config.node_id {
        Some(id) => id.clone(),
        None => ctx.site.node_id.to_string(),
    };
    let artifacts_dir = &ctx.site.artifacts_dir;
    let store = ArtifactStore::open(artifacts_dir).with_context(|| {
        format!(
            "failed to open the artifact store at {}",
            artifacts_dir.display()
        )
    })?;
    if let Some(supervise) = &config.supervise {
        let supervisor = Arc::new(supervisor::supervisor(
            ctx.bus.clone(),
            node_id.clone(),
            &config.comfyui_url,
            supervise,
            None,
        )?);
        ctx.spawn("comfyui-supervisor", move |cancel| {
            Arc::clone(&supervisor).run(cancel)
        });
    }
    worker::Worker::new(
        ctx.bus.clone(),
        node_id,
        config.backend()?,
        store,
        config.worker.clone(),
    )
    .start(ctx);
    Ok(())
}
