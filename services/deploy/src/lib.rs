//! The Deploy Center's executor, on the control plane: every requested deploy run is carried
//! out here, one at a time per app (runs of different apps go side by side), through the nodes'
//! agents (container commands, each in the run's correlation): its approval when the policy
//! asks for one, the old release stopped, the new one created and started, its check passed —
//! else the new release removed and the old one started again (a rollback of the whole app, not
//! one container). Every step is recorded with what it did on each node.
//!
//! The runs are a fold of the `deploy_run` events, rebuilt at every start: a run a restart cut
//! off is not carried on blindly — if it had touched the old release it is rolled back, else it
//! is failed, saying why.
//!
//! Also here: the expiry of approvals nobody decided in time (`approval.closed` with outcome
//! `expired`), so a waiting deploy learns it and the log says so; and the polling of git
//! sources for new commits.

mod caddy;
mod certs;
mod cloudflare;
mod domains;
mod expiry;
mod poll;
mod run;
mod ssh;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bus::Bus;
use bus::store::{Commands, JetStreamStore, commands};
use domain::approval::PolicyRule;
use events::deploy::DeployEvent;
use events::{Actor, CorrelationId, DomainEvent, EventId};
use serde::{Deserialize, Serialize};
use service::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The deployer's settings (`[deploy]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How long one container command (stop, create, start) may take on a node.
    pub command_timeout_secs: f64,
    /// How often a release's check is tried while it comes up.
    pub health_interval_secs: f64,
    /// How long building a release's image on a node may take.
    pub build_timeout_secs: f64,
    /// How often apps with `git.poll` are looked at for a new commit (0: never).
    pub git_poll_secs: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            command_timeout_secs: 60.0,
            health_interval_secs: 1.0,
            build_timeout_secs: 1800.0,
            git_poll_secs: 60.0,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (field, value, range) in [
            (
                "command_timeout_secs",
                self.command_timeout_secs,
                1.0..=3600.0,
            ),
            (
                "health_interval_secs",
                self.health_interval_secs,
                0.05..=60.0,
            ),
        ] {
            if !(value.is_finite() && range.contains(&value)) {
                problems.push(format!("{field} must be {range:?}, got {value}"));
            }
        }
        if !(self.git_poll_secs == 0.0 || (1.0..=86_400.0).contains(&self.git_poll_secs)) {
            problems.push(format!(
                "git_poll_secs must be 0 (never) or 1..=86400, got {}",
                self.git_poll_secs
            ));
        }
        problems
    }
}

/// The approval rules (`[[approvals.rules]]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalsConfig {
    pub rules: Vec<PolicyRule>,
}

impl ApprovalsConfig {
    pub fn validate(&self) -> Vec<String> {
        self.rules
            .iter()
            .enumerate()
            .flat_map(|(index, rule)| rule.validate(index))
            .collect()
    }
}

pub use domains::DomainsConfig;

/// Starts the deployer, the approvals' expiry, the git poller and (when Caddy is configured)
/// the domains part (each restarted by the context if it fails).
pub fn start(ctx: &Context, config: Config, approvals: ApprovalsConfig, domains: DomainsConfig) {
    if !domains.caddy_admin.is_empty() {
        let part = Arc::new(domains::Domains::new(
            ctx.bus.clone(),
            &domains,
            ctx.site.vault_key_file.clone(),
        ));
        ctx.spawn("domains", move |cancel| Arc::clone(&part).run(cancel));
    }
    let poll_secs = config.git_poll_secs;
    let bus = ctx.bus.clone();
    let deployer = Arc::new(Deployer {
        runs: commands(bus.clone(), ()),
        run_state: JetStreamStore::new(bus.clone()),
        apps: commands(bus.clone(), ()),
        containers: commands(bus.clone(), ()),
        container_state: JetStreamStore::new(bus.clone()),
        approvals: commands(bus.clone(), ()),
        approval_state: JetStreamStore::new(bus.clone()),
        tag_state: JetStreamStore::new(bus.clone()),
        places: ssh::Places::new(&bus),
        execs: commands(bus.clone(), ()),
        exec_state: JetStreamStore::new(bus.clone()),
        http: reqwest::Client::new(),
        config,
        rules: approvals.rules,
        bus,
    });
    ctx.spawn("deployer", move |cancel| {
        let deployer = deployer.clone();
        async move { deployer.run(cancel).await }
    });
    let bus = ctx.bus.clone();
    ctx.spawn("approval-expiry", move |cancel| {
        expiry::run(bus.clone(), cancel)
    });
    if poll_secs > 0.0 {
        let bus = ctx.bus.clone();
        ctx.spawn("git-poll", move |cancel| {
            poll::run(bus.clone(), secs(poll_secs), cancel)
        });
    }
}

/// A requested run, as the fold knows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Pending {
    pub(crate) app: String,
    /// Who asked (approvals are asked in their name).
    pub(crate) actor: Actor,
    pub(crate) correlation_id: CorrelationId,
    pub(crate) event_id: EventId,
}

pub(crate) struct Deployer {
    pub(crate) bus: Bus,
    pub(crate) runs: Commands<domain::deploy::DeployRun>,
    pub(crate) run_state: JetStreamStore<domain::deploy::DeployRun>,
    pub(crate) apps: Commands<domain::deploy::App>,
    pub(crate) containers: Commands<domain::container::ContainerCommand>,
    pub(crate) container_state: JetStreamStore<domain::container::ContainerCommand>,
    pub(crate) approvals: Commands<domain::approval::Approval>,
    pub(crate) approval_state: JetStreamStore<domain::approval::Approval>,
    pub(crate) tag_state: JetStreamStore<domain::node::NodeTags>,
    /// How each target is reached (its agent, or SSH) and its address.
    pub(crate) places: ssh::Places,
    pub(crate) execs: Commands<domain::host::HostExec>,
    pub(crate) exec_state: JetStreamStore<domain::host::HostExec>,
    pub(crate) http: reqwest::Client,
    pub(crate) config: Config,
    pub(crate) rules: Vec<PolicyRule>,
}

impl Deployer {
    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        // Requested and not finished, in the order they were asked for (from the fold's
        // checkpoint on).
        let (mut pending, mut log) = self
            .bus
            .open_fold::<Vec<(String, Pending)>>(
                "deploy-runs",
                1,
                vec![events::subjects::events_of_type(
                    DeployEvent::AGGREGATE_TYPE,
                )],
            )
            .await?;
        let mut started: HashSet<String> = HashSet::new();
        let mut busy: HashMap<String, String> = HashMap::new(); // app -> run id under way
        let mut tasks: JoinSet<(String, String)> = JoinSet::new();
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    tasks.shutdown().await;
                    return Ok(());
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    match done {
                        Ok((app, _run)) => { busy.remove(&app); }
                        Err(err) => tracing::error!(error = %err, "a deploy run's task ended abnormally"),
                    }
                }
                message = log.next() => {
                    let message = message?;
                    if let Some(message) = &message {
                        match message.decode_commit() {
                            Ok(commit) => {
                                for envelope in &commit {
                                    fold(&mut pending, envelope);
                                }
                            }
                            Err(err) => {
                                tracing::warn!(stream_seq = %message.stream_seq, error = %err, "undecodable commit skipped");
                            }
                        }
                    }
                    if !log.settled(message.as_ref()) {
                        continue; // caught up first: a backlog's finished runs are never started
                    }
                    log.save(&pending).await;
                }
            }
            // A task that panicked leaves its app marked busy until the run is folded away.
            busy.retain(|_, run| pending.iter().any(|(id, _)| id == run));
            for (run_id, run) in &pending {
                if started.contains(run_id) || busy.contains_key(&run.app) {
                    continue;
                }
                started.insert(run_id.clone());
                busy.insert(run.app.clone(), run_id.clone());
                let (deployer, run_id, run) = (self.clone(), run_id.clone(), run.clone());
                let cancel = cancel.clone();
                tasks.spawn(async move {
                    let app = run.app.clone();
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = deployer.carry_out(&run_id, &run) => {}
                    }
                    (app, run_id)
                });
            }
        }
    }
}

/// Folds one event of a run into the pending runs.
fn fold(pending: &mut Vec<(String, Pending)>, envelope: &events::EventEnvelope) {
    let Ok(event) = envelope.decode::<DeployEvent>() else {
        return;
    };
    let id = &envelope.aggregate_id;
    match event {
        DeployEvent::Requested(requested) if !pending.iter().any(|(run, _)| run == id) => {
            pending.push((
                id.clone(),
                Pending {
                    app: requested.app,
                    actor: envelope.actor.clone(),
                    correlation_id: envelope.correlation_id,
                    event_id: envelope.event_id,
                },
            ));
        }
        DeployEvent::Finished { .. } => pending.retain(|(run, _)| run != id),
        _ => {}
    }
}

pub(crate) fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}
