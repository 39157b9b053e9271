//! Supervising a service: it is started (or found running), checked every interval, restarted
//! with backoff when it goes down or hangs (per its policy), and given up on after too many
//! restarts without once becoming healthy. Every change of state goes to a [`Record`]: the
//! agent's services record `service.state_changed`, a render worker's ComfyUI
//! `comfyui.state_changed`.

pub mod config;
pub mod target;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Backoff;
use events::service::ServiceState;
use tokio_util::sync::CancellationToken;

pub use config::{HealthConfig, RestartConfig, RestartPolicy, ServiceConfig};
use target::{Alive, Running, Target};

/// One change of a supervised service's state.
#[derive(Debug, Clone)]
pub struct Change {
    pub state: ServiceState,
    pub pid: Option<u32>,
    /// Restarts since the supervisor began.
    pub restarts: u32,
    pub reason: String,
}

/// Where a supervisor's changes of state go (the log, a live map).
pub trait Record: Send + Sync + 'static {
    fn record(&self, change: Change) -> impl Future<Output = ()> + Send;
}

pub struct Supervisor<R> {
    config: ServiceConfig,
    target: Target,
    recorder: R,
    http: reqwest::Client,
}

/// How one run of the service ended.
enum Ended {
    Cancelled,
    Exited { reason: String, success: bool },
    Hung(String),
}

impl<R: Record> Supervisor<R> {
    pub fn new(config: ServiceConfig, target: Target, recorder: R, http: reqwest::Client) -> Self {
        Self {
            config,
            target,
            recorder,
            http,
        }
    }

    async fn record(&self, state: ServiceState, pid: Option<u32>, restarts: u32, reason: String) {
        tracing::info!(service = %self.config.name, state = state.as_str(), pid, restarts, reason = %reason, "service state");
        self.recorder
            .record(Change {
                state,
                pid,
                restarts,
                reason,
            })
            .await;
    }

    /// Supervises until `cancel` fires (then stops what it owns).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let restart = &self.config.restart;
        let secs = |s: f64| Duration::from_secs_f64(s.max(0.01));
        let mut backoff = Backoff::new(
            secs(restart.backoff_initial_secs),
            secs(restart.backoff_max_secs),
        );
        let grace = Duration::from_secs_f64(restart.stop_grace_secs.max(0.0));
        let mut restarts = 0;
        // Restarts since it was last healthy: too many and it is given up on.
        let mut unhealthy_restarts = 0;
        loop {
            // How this run ended: the last state's pid, why it is down, and whether it ended well.
            let (pid, reason, success) = match self.target.start(&self.config).await {
                Err(reason) => (None, reason, false),
                Ok(mut running) => {
                    let pid = running.pid();
                    self.record(ServiceState::Starting, pid, restarts, "started".into())
                        .await;
                    let mut healthy = false;
                    let ended = self
                        .watch(&mut running, pid, restarts, &mut healthy, &cancel)
                        .await;
                    if healthy {
                        unhealthy_restarts = 0;
                        backoff.reset();
                    }
                    match ended {
                        Ended::Cancelled => {
                            self.target.stop(&mut running, grace, false).await;
                            if matches!(self.target, Target::Command) {
                                self.record(
                                    ServiceState::Stopped,
                                    pid,
                                    restarts,
                                    "supervisor stopped".into(),
                                )
                                .await;
                            }
                            return Ok(());
                        }
                        Ended::Exited { reason, success } => {
                            self.target.stop(&mut running, Duration::ZERO, false).await;
                            (pid, reason, success)
                        }
                        Ended::Hung(reason) => {
                            self.target.stop(&mut running, grace, true).await;
                            (pid, format!("stopped as hung: {reason}"), false)
                        }
                    }
                }
            };
            self.record(ServiceState::Down, pid, restarts, reason).await;
            if !self
                .again(
                    &mut backoff,
                    &mut restarts,
                    &mut unhealthy_restarts,
                    success,
                    &cancel,
                )
                .await
            {
                return Ok(());
            }
        }
    }

    /// Whether to start it again (after the backoff), per its policy; false when it is left
    /// down (policy, given up, or the supervisor stopping).
    async fn again(
        &self,
        backoff: &mut Backoff,
        restarts: &mut u32,
        unhealthy_restarts: &mut u32,
        success: bool,
        cancel: &CancellationToken,
    ) -> bool {
        let policy = self.config.restart.policy;
        let restart = match policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        };
        if !restart {
            cancel.cancelled().await;
            return false;
        }
        let give_up_after = self.config.restart.give_up_after;
        if give_up_after > 0 && *unhealthy_restarts >= give_up_after {
            self.record(
                ServiceState::GaveUp,
                None,
                *restarts,
                format!("restarted {give_up_after} times without becoming healthy; left down until its supervisor restarts"),
            )
            .await;
            cancel.cancelled().await;
            return false;
        }
        if !backoff.wait(cancel).await {
            return false;
        }
        *restarts += 1;
        *unhealthy_restarts += 1;
        true
    }

    async fn watch(
        &self,
        running: &mut Running,
        pid: Option<u32>,
        restarts: u32,
        healthy: &mut bool,
        cancel: &CancellationToken,
    ) -> Ended {
        let health = &self.config.health;
        let started = Instant::now();
        let grace = Duration::from_secs_f64(health.startup_grace_secs);
        let mut interval = tokio::time::interval(Duration::from_secs_f64(health.interval_secs));
        let mut state = ServiceState::Starting;
        let mut failures = 0;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ended::Cancelled,
                _ = interval.tick() => {}
            }
            let verdict = match self.target.alive(running).await {
                Alive::Ended { reason, success } => return Ended::Exited { reason, success },
                Alive::Unhealthy(reason) => Err(reason),
                Alive::Yes => target::check(health, &self.http).await,
            };
            match verdict {
                Ok(()) => {
                    failures = 0;
                    if state != ServiceState::Healthy {
                        state = ServiceState::Healthy;
                        *healthy = true;
                        self.record(state, pid, restarts, "its check passes".into())
                            .await;
                    }
                }
                Err(reason) => {
                    if state == ServiceState::Starting {
                        if started.elapsed() > grace {
                            return Ended::Hung(format!(
                                "not healthy {} s after its start: {reason}",
                                grace.as_secs()
                            ));
                        }
                        continue;
                    }
                    failures += 1;
                    if state == ServiceState::Healthy {
                        state = ServiceState::Unhealthy;
                        self.record(state, pid, restarts, reason.clone()).await;
                    }
                    if failures >= health.unhealthy_after {
                        return Ended::Hung(reason);
                    }
                }
            }
        }
    }
}
