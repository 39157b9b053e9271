//! Keeps a node's ComfyUI process alive: starts it with the VRAM flag that suits the GPU,
//! checks `/system_stats`, kills it when it stops answering, restarts it with backoff when it
//! dies, and records every change of state as an event (`comfyui.state_changed`).
//!
//! The process sees none of the worker's own environment (its NATS seed, the vault key, the
//! admin token, the database's password, every platform token) beyond [`INHERITED_ENV`], the
//! names `pass_env` adds and the values `env` sets. It runs in a process group of its own, and
//! stopping it stops the whole group: a wrapper script cannot leave ComfyUI behind holding the
//! port and the VRAM.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bus::Bus;
use bus::remote::Remote;
use bus::store::CommandMeta;
use common::Backoff;
use domain::render::{ComfyInstance, RecordComfyState};
use events::Actor;
use events::render::{ComfyState, ComfyStateChanged};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

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
        for name in &self.pass_env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                problems.push(format!("pass_env: {name:?} is not a variable name"));
            }
        }
        problems
    }

    /// What the process's environment starts from: the allowed names that are set here.
    fn inherited(&self) -> Vec<(String, std::ffi::OsString)> {
        INHERITED_ENV
            .iter()
            .copied()
            .chain(self.pass_env.iter().map(String::as_str))
            .filter_map(|name| Some((name.to_owned(), std::env::var_os(name)?)))
            .collect()
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

pub struct Supervisor {
    config: SupervisorConfig,
    /// ComfyUI's base URL (health checks go to `/system_stats`).
    url: String,
    node_id: String,
    vram_flag: String,
    /// Its state changes, decided by the control plane.
    events: Remote<ComfyInstance>,
    http: reqwest::Client,
}

enum Ended {
    Cancelled,
    Exited(String),
    Hung,
}

impl Supervisor {
    /// `vram_total_mib`: the node's GPU memory as the agent detected it (None without a GPU).
    pub fn new(
        bus: Bus,
        node_id: impl Into<String>,
        url: impl Into<String>,
        config: SupervisorConfig,
        vram_total_mib: Option<u64>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.command.is_empty(),
            "render.supervise.command must name the ComfyUI program"
        );
        let vram_flag = config
            .vram_mode
            .clone()
            .unwrap_or_else(|| vram_flag(vram_total_mib).to_owned());
        anyhow::ensure!(
            VRAM_MODES.contains(&vram_flag.as_str()),
            "render.supervise.vram_mode must be --lowvram, --normalvram or --highvram"
        );
        let node_id = node_id.into();
        Ok(Self {
            url: url.into().trim_end_matches('/').to_owned(),
            events: Remote::new(bus, &node_id),
            node_id,
            vram_flag,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs_f64(
                    config.health_timeout_secs.clamp(0.05, 60.0),
                ))
                .build()?,
            config,
        })
    }

    async fn record(&self, state: ComfyState, pid: Option<u32>, restarts: u32, reason: String) {
        tracing::info!(node = %self.node_id, state = ?state, pid, restarts, reason = %reason, "comfyui state");
        let command = RecordComfyState(ComfyStateChanged {
            state,
            pid,
            restarts,
            vram_mode: self.vram_flag.clone(),
            reason,
        });
        let meta = CommandMeta::new(Actor::Service(format!(
            "comfyui-supervisor@{}",
            self.node_id
        )));
        if let Err(err) = self.events.execute(&self.node_id, command, meta).await {
            tracing::warn!(error = %err, "failed to record a comfyui state change");
        }
    }

    async fn healthy(&self) -> bool {
        match self
            .http
            .get(format!("{}/system_stats", self.url))
            .send()
            .await
        {
            Ok(response) => response.status().is_success(),
            Err(_) => false,
        }
    }

    /// Runs until `cancel` fires, then stops the process.
    pub async fn run(self: std::sync::Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let secs = |s: f64| Duration::from_secs_f64(s.max(0.01));
        let mut backoff = Backoff::new(
            secs(self.config.backoff_initial_secs),
            secs(self.config.backoff_max_secs),
        );
        let mut restarts = 0;
        loop {
            let mut command = tokio::process::Command::new(&self.config.command[0]);
            command
                .args(&self.config.command[1..])
                .arg(&self.vram_flag)
                .env_clear()
                .envs(self.config.inherited())
                .envs(&self.config.env)
                .stdin(Stdio::null())
                // a group of its own, so that stopping it reaches what it started
                .process_group(0)
                .kill_on_drop(true);
            if let Some(dir) = &self.config.working_dir {
                command.current_dir(dir);
            }
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(err) => {
                    self.record(
                        ComfyState::Down,
                        None,
                        restarts,
                        format!("failed to start {:?}: {err}", self.config.command[0]),
                    )
                    .await;
                    if !backoff.wait(&cancel).await {
                        return Ok(());
                    }
                    restarts += 1;
                    continue;
                }
            };
            let pid = child.id();
            self.record(
                ComfyState::Starting,
                pid,
                restarts,
                "process started".into(),
            )
            .await;
            let ended = self
                .watch(&mut child, pid, restarts, &mut backoff, &cancel)
                .await;
            let grace = match ended {
                // a stop asks first; a hung or dead one is killed at once
                Ended::Cancelled => Duration::from_secs_f64(self.config.stop_grace_secs.max(0.0)),
                Ended::Exited(_) | Ended::Hung => Duration::ZERO,
            };
            if let Err(err) = common::process::stop_group(&mut child, pid, grace).await {
                tracing::warn!(error = %err, "cannot stop ComfyUI's process group");
            }
            match ended {
                Ended::Cancelled => {
                    self.record(
                        ComfyState::Stopped,
                        pid,
                        restarts,
                        "supervisor stopped".into(),
                    )
                    .await;
                    return Ok(());
                }
                Ended::Exited(status) => {
                    self.record(ComfyState::Down, pid, restarts, format!("exited: {status}"))
                        .await;
                }
                Ended::Hung => {
                    self.record(
                        ComfyState::Down,
                        pid,
                        restarts,
                        "killed after it stopped answering /system_stats".into(),
                    )
                    .await;
                }
            }
            if !backoff.wait(&cancel).await {
                return Ok(());
            }
            restarts += 1;
        }
    }

    async fn watch(
        &self,
        child: &mut tokio::process::Child,
        pid: Option<u32>,
        restarts: u32,
        backoff: &mut Backoff,
        cancel: &CancellationToken,
    ) -> Ended {
        let started = Instant::now();
        let grace = Duration::from_secs_f64(self.config.startup_grace_secs.max(0.0));
        let mut interval = tokio::time::interval(Duration::from_secs_f64(
            self.config.health_interval_secs.max(0.05),
        ));
        let mut state = ComfyState::Starting;
        let mut failures = 0;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ended::Cancelled,
                status = child.wait() => {
                    return Ended::Exited(status.map_or_else(|e| e.to_string(), |s| s.to_string()));
                }
                _ = interval.tick() => {}
            }
            if self.healthy().await {
                failures = 0;
                if state != ComfyState::Healthy {
                    state = ComfyState::Healthy;
                    // A process that came up healthy earns a fresh backoff.
                    backoff.reset();
                    self.record(state, pid, restarts, "answers /system_stats".into())
                        .await;
                }
                continue;
            }
            // A failed check may just be the process having died a moment ago.
            if let Ok(Some(status)) = child.try_wait() {
                return Ended::Exited(status.to_string());
            }
            if state == ComfyState::Starting {
                if started.elapsed() > grace {
                    return Ended::Hung;
                }
                continue;
            }
            failures += 1;
            if state == ComfyState::Healthy {
                state = ComfyState::Unresponsive;
                self.record(
                    state,
                    pid,
                    restarts,
                    "stopped answering /system_stats".into(),
                )
                .await;
            }
            if failures >= self.config.unresponsive_after {
                return Ended::Hung;
            }
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
