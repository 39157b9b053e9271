//! Keeps a node's ComfyUI process alive, as one supervised service ([`supervise::Supervisor`],
//! the same supervisor as the agent's services): started with the VRAM flag that suits the
//! GPU, checked on `/system_stats`, killed when it stops answering, restarted with backoff when
//! it dies, given up on after too many restarts without once answering; every change of state
//! is recorded as an event (`comfyui.state_changed`).
//!
//! The process sees none of the worker's own environment (its NATS seed, the vault key, the
//! admin token, the database's password, every platform token) beyond [`INHERITED_ENV`], the
//! names `pass_env` adds and the values `env` sets. It runs in a process group of its own, and
//! stopping it stops the whole group: a wrapper script cannot leave ComfyUI behind holding the
//! port and the VRAM.

use std::path::PathBuf;

use bus::Bus;
use bus::remote::Remote;
use bus::store::CommandMeta;
use domain::render::{ComfyInstance, RecordComfyState};
use events::Actor;
use events::render::{ComfyState, ComfyStateChanged};
use events::service::ServiceState;
use serde::{Deserialize, Serialize};
use supervise::{Change, HealthConfig, Record, RestartConfig, RestartPolicy, ServiceConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// The program and its arguments, e.g. `["python", "main.py", "--listen", "127.0.0.1",
    /// "--port", "8188"]`. The VRAM flag is appended.
    pub command: Vec<String>,
    pub working_dir: Option<PathBuf>,
    /// Environment set for the process (e.g. `CUDA_VISIBLE_DEVICES = "1"`).
    pub env: std::collections::BTreeMap<String, String>,
    /// Names of the worker's own environment passed through besides [`INHERITED_ENV`] (e.g.
    /// `HF_TOKEN`); everything else of it is withheld.
    pub pass_env: Vec<String>,
    /// How long a stopped ComfyUI may take to exit after SIGTERM before its group is killed.
    pub stop_grace_secs: f64,
    pub health_interval_secs: f64,
    /// How long one `/system_stats` check may take.
    pub health_timeout_secs: f64,
    /// Failed health checks in a row (once it has been healthy) before it counts as hung.
    pub unresponsive_after: u32,
    /// How long a fresh process may take to answer for the first time.
    pub startup_grace_secs: f64,
    pub backoff_initial_secs: f64,
    pub backoff_max_secs: f64,
    /// Restarts in a row without once answering before it is left down (0: never).
    pub give_up_after: u32,
    /// ComfyUI's stdout and stderr are appended to this file (discarded when unset).
    pub log_file: Option<PathBuf>,
    /// `--lowvram`, `--normalvram` or `--highvram`; chosen from the detected VRAM when absent.
    pub vram_mode: Option<String>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            command: Vec::new(),
            working_dir: None,
            env: std::collections::BTreeMap::new(),
            pass_env: Vec::new(),
            stop_grace_secs: 10.0,
            health_interval_secs: 2.0,
            health_timeout_secs: 5.0,
            unresponsive_after: 3,
            startup_grace_secs: 120.0,
            backoff_initial_secs: 1.0,
            backoff_max_secs: 60.0,
            give_up_after: 5,
            log_file: None,
            vram_mode: None,
        }
    }
}

impl SupervisorConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.command.is_empty() {
            problems.push("command must name the ComfyUI program".to_owned());
        }
        if let Some(mode) = &self.vram_mode
            && !VRAM_MODES.contains(&mode.as_str())
        {
            problems.push(format!(
                "vram_mode must be --lowvram, --normalvram or --highvram, got {mode:?}"
            ));
        }
        if !self.command.is_empty() {
            let service = self.service("http://127.0.0.1:8188", "--normalvram");
            problems.extend(
                service
                    .validate(0)
                    .into_iter()
                    .filter_map(|p| p.strip_prefix("services[0] (comfyui): ").map(str::to_owned)),
            );
        }
        problems
    }

    /// ComfyUI as a supervised service at `url`, started with `vram_flag`.
    fn service(&self, url: &str, vram_flag: &str) -> ServiceConfig {
        let mut command = self.command.clone();
        command.push(vram_flag.to_owned());
        ServiceConfig {
            name: "comfyui".to_owned(),
            command,
            container: None,
            systemd_unit: None,
            working_dir: self.working_dir.clone(),
            env: self.env.clone(),
            pass_env: self.pass_env.clone(),
            log_file: self.log_file.clone(),
            health: HealthConfig {
                http: Some(format!("{}/system_stats", url.trim_end_matches('/'))),
                interval_secs: self.health_interval_secs,
                timeout_secs: self.health_timeout_secs,
                unhealthy_after: self.unresponsive_after,
                startup_grace_secs: self.startup_grace_secs,
                ..HealthConfig::default()
            },
            restart: RestartConfig {
                policy: RestartPolicy::Always,
                backoff_initial_secs: self.backoff_initial_secs,
                backoff_max_secs: self.backoff_max_secs,
                give_up_after: self.give_up_after,
                stop_grace_secs: self.stop_grace_secs,
            },
        }
    }
}

pub use common::process::INHERITED_ENV;

/// The memory modes ComfyUI takes.
pub const VRAM_MODES: [&str; 3] = ["--lowvram", "--normalvram", "--highvram"];

/// ComfyUI's memory mode for a GPU with this much VRAM: under 6 GiB needs `--lowvram`; 16 GiB
/// and more can keep models resident (`--highvram`); unknown or in between is the default.
pub fn vram_flag(vram_total_mib: Option<u64>) -> &'static str {
    match vram_total_mib {
        Some(mib) if mib < 6 * 1024 => "--lowvram",
        Some(mib) if mib >= 16 * 1024 => "--highvram",
        _ => "--normalvram",
    }
}

/// ComfyUI's supervisor: its process at `url`, its changes recorded on `node_id`'s
/// `comfyui` aggregate. `vram_total_mib`: the node's GPU memory as detected (None without a
/// GPU), which picks the VRAM flag unless the configuration names one.
pub fn supervisor(
    bus: Bus,
    node_id: impl Into<String>,
    url: &str,
    config: &SupervisorConfig,
    vram_total_mib: Option<u64>,
) -> anyhow::Result<supervise::Supervisor<Recorder>> {
    let problems = config.validate();
    anyhow::ensure!(
        problems.is_empty(),
        "render.supervise: {}",
        problems.join("; ")
    );
    let vram_flag = config
        .vram_mode
        .clone()
        .unwrap_or_else(|| vram_flag(vram_total_mib).to_owned());
    let node_id = node_id.into();
    let service = config.service(url, &vram_flag);
    Ok(supervise::Supervisor::new(
        service,
        supervise::target::Target::Command,
        Recorder {
            events: Remote::new(bus, &node_id),
            node_id,
            vram_flag,
        },
        reqwest::Client::builder().build()?,
    ))
}

/// ComfyUI's changes of state, as `comfyui.state_changed` events.
pub struct Recorder {
    node_id: String,
    vram_flag: String,
    /// Its state changes, decided by the control plane.
    events: Remote<ComfyInstance>,
}

impl Record for Recorder {
    async fn record(&self, change: Change) {
        let state = match change.state {
            ServiceState::Starting => ComfyState::Starting,
            ServiceState::Healthy => ComfyState::Healthy,
            ServiceState::Unhealthy => ComfyState::Unresponsive,
            ServiceState::Down => ComfyState::Down,
            ServiceState::GaveUp => ComfyState::GaveUp,
            ServiceState::Stopped => ComfyState::Stopped,
        };
        let command = RecordComfyState(ComfyStateChanged {
            state,
            pid: change.pid,
            restarts: change.restarts,
            vram_mode: self.vram_flag.clone(),
            reason: change.reason,
        });
        let meta = CommandMeta::new(Actor::Service(format!(
            "comfyui-supervisor@{}",
            self.node_id
        )));
        if let Err(err) = self.events.execute(&self.node_id, command, meta).await {
            tracing::warn!(error = %err, "failed to record a comfyui state change");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn vram_flags_follow_the_gpu() {
        assert_eq!(super::vram_flag(Some(4096)), "--lowvram");
        assert_eq!(super::vram_flag(Some(8192)), "--normalvram");
        assert_eq!(super::vram_flag(Some(24576)), "--highvram");
        assert_eq!(super::vram_flag(None), "--normalvram");
    }
}
