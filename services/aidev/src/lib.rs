//! The AI developer's worker: every `ai_dev_job` carried out — a local LLM (Ollama) changing one
//! of the configured repositories on a branch and worktree of its own through tools that see
//! only that worktree, the build verified, the change committed only when green, then merged by
//! a repository's auto-approval rule or after a person's approval (the approval engine), or
//! rejected; a merged change reverted on request.
//!
//! The jobs are a fold of their events, rebuilt at every start: a job found running resumes from
//! its memory in Redis (the conversation, the plan, the budget spent, the files written) in the
//! worktree it left; one waiting for its approval waits again. At most `max_jobs` agent loops
//! at once, while any number of changes wait for their approvals.
//!
//! Where a job runs: the control plane offers it to a node whose agent takes AI developer jobs
//! (the node's registration says `ai-dev`), through that node's work queue; the node takes it
//! (once: the job's `Claimed`) and carries it out in its own clone of the repository, with its
//! own Ollama, sending every step through the control plane's relay. When no node takes it
//! within `remote_wait_secs`, it runs here (`local`), and the job says why. Deciding a change
//! (a repository rule, or people through the approval engine) is always the control plane's;
//! the runner merges, cleans up and reverts in its repository when the job says so.

mod decide;
mod git;
mod guard;
mod job;
mod memory;
mod ollama;
mod openai;
mod tools;
mod verify;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bus::store::{CommandMeta, Commands, JetStreamStore, commands, execute};
use bus::{Bus, StreamName};
use cqrs_es::AggregateError;
use domain::ai_dev::AiDevCommand;
use domain::ai_dev::{AutoApprove, JobStatus};
use domain::approval::PolicyRule;
use events::ai_dev::AiDevEvent;
use events::{Actor, CorrelationId, DomainEvent, EventId};
use serde::{Deserialize, Serialize};
use service::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A repository the AI developer may change (`[[ai_dev.repos]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// What jobs call it.
    pub name: String,
    /// A git repository on this machine (a clone; bare or not).
    pub path: PathBuf,
    /// The branch jobs start from and merge into, when a job names none.
    #[serde(default = "default_base")]
    pub base: String,
    /// Its model (else `ai_dev.model`, else the VRAM tier's).
    #[serde(default)]
    pub model: Option<String>,
    /// Globs (relative to the repository's root) the model may neither read nor write, beyond
    /// `.git`, `.env` files and keys, which it never may.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Which changes merge without a person.
    #[serde(default)]
    pub auto_approve: AutoApprove,
    /// A rejected change's branch is deleted (else kept for inspection).
    #[serde(default)]
    pub delete_rejected_branches: bool,
}

fn default_base() -> String {
    "main".to_owned()
}

/// The fallback when Ollama cannot serve a job (`[ai_dev.openai]`): an OpenAI-compatible chat
/// completions API, its key in the vault.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// `https://api.openai.com/v1`, or any compatible server (empty: no fallback).
    pub url: String,
    pub model: String,
    /// The vault secret holding the API key.
    pub key_secret: String,
    /// The model's context, in tokens.
    pub context_tokens: u64,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            model: "gpt-4o-mini".to_owned(),
            key_secret: "openai-api-key".to_owned(),
            context_tokens: 128_000,
        }
    }
}

/// `[ai_dev]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub ollama_url: String,
    /// A model Ollama does not have is pulled first (`/api/pull`), rather than the job failing.
    pub pull_missing: bool,
    pub openai: OpenAiConfig,
    /// The default model (empty: chosen by the machine's GPU memory).
    pub model: String,
    pub repos: Vec<RepoConfig>,
    /// A job's budget: model turns and tool calls, tokens in and out, wall time.
    pub max_steps: u32,
    pub max_tokens: u64,
    pub max_wall_secs: f64,
    /// How long one build verification (build and tests) may take.
    pub build_timeout_secs: f64,
    /// How long one answer of the model may take.
    pub model_timeout_secs: f64,
    /// Agent loops at once.
    pub max_jobs: usize,
    /// The share of the model's context past which older turns are summarised.
    pub compress_at: f64,
    /// Turns always kept whole (the newest).
    pub keep_last: usize,
    /// How long a job offered to a node that takes AI developer jobs waits to be taken before
    /// it runs here (0: never offered).
    pub remote_wait_secs: f64,
    /// This node's agent takes the jobs offered to it (`nebula agent`, with this section's
    /// repositories, the node's own clones, and its Ollama).
    pub node_runner: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ollama_url: "http://127.0.0.1:11434".to_owned(),
            pull_missing: false,
            openai: OpenAiConfig::default(),
            model: String::new(),
            repos: Vec::new(),
            max_steps: 40,
            max_tokens: 500_000,
            max_wall_secs: 3600.0,
            build_timeout_secs: 900.0,
            model_timeout_secs: 600.0,
            max_jobs: 1,
            compress_at: 0.7,
            keep_last: 6,
            remote_wait_secs: 30.0,
            node_runner: false,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.ollama_url.starts_with("http://") && !self.ollama_url.starts_with("https://") {
            problems.push(format!(
                "ollama_url must be an http(s) URL, got {:?}",
                self.ollama_url
            ));
        }
        let openai = &self.openai.url;
        if !openai.is_empty() && !openai.starts_with("http://") && !openai.starts_with("https://") {
            problems.push(format!(
                "openai.url must be an http(s) URL or empty, got {openai:?}"
            ));
        }
        let mut names = HashSet::new();
        for (index, repo) in self.repos.iter().enumerate() {
            if !names.insert(repo.name.as_str()) {
                problems.push(format!("repos[{index}]: the name {} is taken", repo.name));
            }
            let request = events::ai_dev::JobRequested {
                repo: repo.name.clone(),
                instruction: "x".to_owned(),
                base: repo.base.clone(),
                model: repo.model.clone(),
            };
            problems.extend(
                domain::ai_dev::validate_request(&request)
                    .into_iter()
                    .map(|p| format!("repos[{index}]: {p}")),
            );
            if !repo.path.is_absolute() {
                problems.push(format!(
                    "repos[{index}]: path must be absolute, got {}",
                    repo.path.display()
                ));
            }
            for pattern in &repo.deny {
                if let Err(err) = globset::Glob::new(pattern) {
                    problems.push(format!("repos[{index}]: deny {pattern:?}: {err}"));
                }
            }
        }
        for (field, value, range) in [
            ("max_wall_secs", self.max_wall_secs, 1.0..=86_400.0),
            (
                "build_timeout_secs",
                self.build_timeout_secs,
                1.0..=86_400.0,
            ),
            ("model_timeout_secs", self.model_timeout_secs, 1.0..=3600.0),
            ("compress_at", self.compress_at, 0.1..=0.95),
            ("remote_wait_secs", self.remote_wait_secs, 0.0..=3600.0),
        ] {
            if !(value.is_finite() && range.contains(&value)) {
                problems.push(format!("{field} must be {range:?}, got {value}"));
            }
        }
        if !(1..=1000).contains(&self.max_steps) {
            problems.push(format!(
                "max_steps must be 1..=1000, got {}",
                self.max_steps
            ));
        }
        if !(1..=16).contains(&self.max_jobs) {
            problems.push(format!("max_jobs must be 1..=16, got {}", self.max_jobs));
        }
        problems
    }

    pub fn repo(&self, name: &str) -> Option<&RepoConfig> {
        self.repos.iter().find(|r| r.name == name)
    }
}

pub(crate) fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

/// Starts the control plane's worker (restarted by the context if it fails). `rules` are the
/// approval rules (`[[approvals.rules]]`, kind `ai_dev`).
pub fn start(ctx: &Context, config: Config, rules: Vec<PolicyRule>, kv: Option<kv::Kv>) {
    spawn(
        ctx,
        Place::ControlPlane,
        JobCommands::Local(commands(ctx.bus.clone(), ())),
        config,
        rules,
        kv,
        None,
    );
}

/// Starts a node's runner, in its agent's process: it takes the jobs offered to node `node_id`
/// and carries them out with the node's credentials (its commands go through the control
/// plane's relay). `vram_mb`: the node's largest GPU, for the model's tier.
pub fn start_on_node(
    ctx: &Context,
    config: Config,
    node_id: &str,
    vram_mb: Option<u64>,
    kv: Option<kv::Kv>,
) {
    let commands = JobCommands::Remote(bus::Remote::new(ctx.bus.clone(), node_id));
    let place = Place::Node(node_id.to_owned());
    let repos: Vec<String> = config.repos.iter().map(|r| r.name.clone()).collect();
    spawn(ctx, place, commands, config, Vec::new(), kv, vram_mb);
    let bus = ctx.bus.clone();
    let node = node_id.to_owned();
    ctx.spawn("ai-dev-offers", move |cancel| {
        let (bus, node, repos) = (bus.clone(), node.clone(), repos.clone());
        async move { take_offers(bus, node, repos, cancel).await }
    });
}

fn spawn(
    ctx: &Context,
    place: Place,
    jobs: JobCommands,
    config: Config,
    rules: Vec<PolicyRule>,
    kv: Option<kv::Kv>,
    vram_mb: Option<u64>,
) {
    let bus = ctx.bus.clone();
    let worker = Arc::new(Worker {
        place,
        vram_mb,
        jobs,
        job_state: JetStreamStore::new(bus.clone()),
        approvals: commands(bus.clone(), ()),
        approval_state: JetStreamStore::new(bus.clone()),
        node_state: JetStreamStore::new(bus.clone()),
        node_id: ctx.site.node_id.to_string(),
        ollama: ollama::Ollama::new(&config.ollama_url, secs(config.model_timeout_secs)),
        openai: (!config.openai.url.is_empty())
            .then(|| openai::OpenAi::new(&config.openai.url, secs(config.model_timeout_secs))),
        vault: tokio::sync::OnceCell::new(),
        key_source: vault::KeySource::new(ctx.site.vault_key_file.clone()),
        slots: tokio::sync::Semaphore::new(config.max_jobs),
        work_dir: ctx.site.state_dir.join("ai-dev"),
        kv,
        config,
        rules,
        bus,
    });
    ctx.spawn("ai-dev", move |cancel| {
        let worker = worker.clone();
        async move { worker.run(cancel).await }
    });
}

/// What the control plane sends a node to offer it a job.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Offer {
    pub(crate) job_id: String,
    /// The repository it changes (a node takes only jobs on repositories it has).
    pub(crate) repo: String,
    pub(crate) correlation_id: CorrelationId,
}

/// A node takes the jobs offered to it: each offer claimed (once; a job the control plane has
/// meanwhile run itself is left), then carried out by the node's worker as the job's events
/// say.
async fn take_offers(
    bus: Bus,
    node: String,
    repos: Vec<String>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut spec = bus::consumer::ConsumerSpec::new(
        StreamName::Work,
        events::subjects::ai_dev_consumer(&node),
    );
    spec.filter_subject = Some(events::subjects::ai_dev_work(&node));
    let jobs = bus::Remote::<domain::ai_dev::AiDevJob>::new(bus.clone(), node.as_str());
    let (jobs, node, repos) = (&jobs, node.as_str(), &repos);
    bus.consume_json::<Offer, _, _>(spec, cancel, move |offer, _| async move {
        if !repos.contains(&offer.repo) {
            // The control plane runs it itself once the offer runs out.
            tracing::warn!(job = offer.job_id, repo = offer.repo, node, "an AI developer job offered for a repository this node does not have");
            return bus::consumer::Outcome::Ack;
        }
        let meta = CommandMeta {
            correlation_id: offer.correlation_id,
            causation_id: None,
            actor: Actor::Node(node.to_owned()),
        };
        let claim = AiDevCommand::Claim { runs_on: node.to_owned(), fallback: None };
        match jobs.execute(&offer.job_id, claim, meta).await {
            Ok(()) => {
                tracing::info!(job = offer.job_id, node, "took an AI developer job");
                bus::consumer::Outcome::Ack
            }
            // Taken already (by this node before a redelivery, or run on the control plane).
            Err(AggregateError::UserError(err)) => {
                tracing::info!(job = offer.job_id, node, reason = %err, "an offered AI developer job is not taken");
                bus::consumer::Outcome::Ack
            }
            Err(err) => bus::consumer::Outcome::Retry(format!("the job could not be claimed: {err}")),
        }
    })
    .await?;
    Ok(())
}

/// Where a worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// The control plane: offers jobs, decides every change, carries out the jobs it runs
    /// itself (`local`).
    ControlPlane,
    /// A node's agent: carries out the jobs it took.
    Node(String),
}

impl Place {
    /// The job's `runs_on` for the jobs this worker carries out.
    pub(crate) fn runner(&self) -> &str {
        match self {
            Place::ControlPlane => "local",
            Place::Node(node) => node,
        }
    }
}

/// How a worker records a job's events: straight to the store (the control plane), or through
/// the control plane's relay (a node).
pub(crate) enum JobCommands {
    Local(Commands<domain::ai_dev::AiDevJob>),
    Remote(bus::Remote<domain::ai_dev::AiDevJob>),
}

impl JobCommands {
    pub(crate) async fn execute(
        &self,
        id: &str,
        command: AiDevCommand,
        meta: CommandMeta,
    ) -> Result<(), AggregateError<domain::ai_dev::AiDevError>> {
        match self {
            JobCommands::Local(commands) => execute(commands, id, command, meta, 3).await,
            JobCommands::Remote(remote) => {
                // The control plane away for a moment: asked again, a little later.
                let mut attempt = 0;
                loop {
                    match remote.execute(id, command.clone(), meta.clone()).await {
                        Err(
                            AggregateError::DatabaseConnectionError(_)
                            | AggregateError::AggregateConflict,
                        ) if attempt < 5 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                        }
                        done => return done,
                    }
                }
            }
        }
    }
}

pub(crate) struct Worker {
    pub(crate) bus: Bus,
    pub(crate) place: Place,
    /// The node's largest GPU, when known up front (a node's runner).
    pub(crate) vram_mb: Option<u64>,
    pub(crate) jobs: JobCommands,
    pub(crate) job_state: JetStreamStore<domain::ai_dev::AiDevJob>,
    pub(crate) approvals: Commands<domain::approval::Approval>,
    pub(crate) approval_state: JetStreamStore<domain::approval::Approval>,
    pub(crate) node_state: JetStreamStore<domain::node::Node>,
    pub(crate) node_id: String,
    pub(crate) ollama: ollama::Ollama,
    pub(crate) openai: Option<openai::OpenAi>,
    pub(crate) vault: tokio::sync::OnceCell<vault::Vault>,
    pub(crate) key_source: vault::KeySource,
    pub(crate) slots: tokio::sync::Semaphore,
    pub(crate) work_dir: PathBuf,
    pub(crate) kv: Option<kv::Kv>,
    pub(crate) config: Config,
    pub(crate) rules: Vec<PolicyRule>,
}

/// A job as the fold knows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Known {
    /// The job folded from its events (what a node's runner works from: it cannot load an
    /// aggregate itself).
    pub(crate) state: domain::ai_dev::AiDevJob,
    /// Its change was rejected and its branch is to go.
    pub(crate) branch_deleted: bool,
    pub(crate) status: JobStatus,
    pub(crate) actor: Actor,
    pub(crate) correlation_id: CorrelationId,
    pub(crate) event_id: EventId,
    pub(crate) cancel_requested: bool,
    /// Rollbacks asked for so far (each is carried out once).
    pub(crate) rollbacks: u32,
}

impl Known {
    /// What the worker at `place` still has to do for it (a key per piece of work, done once).
    fn work(&self, id: &str, place: &Place) -> Option<String> {
        let runs_on = self.state.runs_on.as_deref();
        let mine = runs_on == Some(place.runner());
        let here = *place == Place::ControlPlane;
        match self.status {
            // Offered, fallen back to, started and carried on here; or taken by this node.
            JobStatus::Requested if mine || (here && runs_on.is_none()) => Some(id.to_owned()),
            // The runner goes on with its job (the control plane's one task per job decides
            // and merges its own jobs too).
            JobStatus::Running if mine => Some(id.to_owned()),
            JobStatus::Proposed | JobStatus::AwaitingApproval | JobStatus::Approved
                if mine && here =>
            {
                Some(id.to_owned())
            }
            // The control plane decides the changes of jobs that ran on nodes.
            JobStatus::Proposed | JobStatus::AwaitingApproval if here => {
                Some(format!("{id}/decide"))
            }
            // A node merges its change once a rule or people approved it.
            JobStatus::Proposed if mine && self.state.auto_approved => Some(format!("{id}/merge")),
            JobStatus::Approved if mine => Some(format!("{id}/merge")),
            JobStatus::Rejected | JobStatus::Cancelled if mine && !here => {
                Some(format!("{id}/clean"))
            }
            JobStatus::Merged if mine && self.rollbacks > 0 => {
                Some(format!("{id}/rollback/{}", self.rollbacks))
            }
            _ => None,
        }
    }
}

/// Folds one event into the jobs.
fn fold(jobs: &mut BTreeMap<String, Known>, envelope: &events::EventEnvelope) {
    let Ok(event) = envelope.decode::<AiDevEvent>() else {
        return;
    };
    let id = &envelope.aggregate_id;
    if let AiDevEvent::Requested(_) = &event {
        let mut state = domain::ai_dev::AiDevJob::default();
        cqrs_es::Aggregate::apply(&mut state, domain::Event(event));
        jobs.entry(id.clone()).or_insert(Known {
            state,
            branch_deleted: false,
            status: JobStatus::Requested,
            actor: envelope.actor.clone(),
            correlation_id: envelope.correlation_id,
            event_id: envelope.event_id,
            cancel_requested: false,
            rollbacks: 0,
        });
        return;
    }
    let Some(job) = jobs.get_mut(id) else {
        return;
    };
    cqrs_es::Aggregate::apply(&mut job.state, domain::Event(event.clone()));
    match event {
        AiDevEvent::Started(_) => job.status = JobStatus::Running,
        AiDevEvent::ChangeProposed(_) => job.status = JobStatus::Proposed,
        AiDevEvent::ApprovalAsked { .. } => job.status = JobStatus::AwaitingApproval,
        AiDevEvent::Merged { .. } => job.status = JobStatus::Merged,
        AiDevEvent::Approved { .. } => job.status = JobStatus::Approved,
        AiDevEvent::Rejected { branch_deleted, .. } => {
            job.status = JobStatus::Rejected;
            job.branch_deleted = branch_deleted;
        }
        AiDevEvent::RolledBack { .. } => job.status = JobStatus::RolledBack,
        AiDevEvent::Failed { .. } => job.status = JobStatus::Failed,
        AiDevEvent::Cancelled {} => job.status = JobStatus::Cancelled,
        AiDevEvent::CancelRequested {} => job.cancel_requested = true,
        AiDevEvent::RollbackRequested {} => job.rollbacks += 1,
        _ => {}
    }
    // What no worker reads again leaves the fold (and its checkpoint): a job that failed or
    // was rolled back has nothing left to do anywhere, and an ended job's diff is read by
    // nobody (a rollback works from the merged commit, a clean-up from the branch).
    match job.status {
        JobStatus::Failed | JobStatus::RolledBack => {
            jobs.remove(id);
        }
        status if status.is_final() => {
            if let Some(proposed) = &mut job.state.proposed {
                proposed.diff = String::new();
            }
        }
        _ => {}
    }
}

impl Worker {
    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        // The jobs with something left to do, from the fold's checkpoint on.
        let filters = vec![events::subjects::events_of_type(AiDevEvent::AGGREGATE_TYPE)];
        let (mut jobs, mut log) = match &self.place {
            Place::ControlPlane => {
                self.bus
                    .open_fold::<BTreeMap<String, Known>>("ai-dev", 1, filters)
                    .await?
            }
            // A node's credentials reach its part of the log, not the checkpoints.
            Place::Node(_) => (
                BTreeMap::new(),
                self.bus
                    .open_fold_from_start("ai-dev-runner", filters)
                    .await?,
            ),
        };
        let mut taken: HashSet<String> = HashSet::new();
        let mut tokens: HashMap<String, CancellationToken> = HashMap::new();
        let mut tasks: JoinSet<String> = JoinSet::new();
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    tasks.shutdown().await;
                    return Ok(());
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(id) = done {
                        tokens.remove(&id);
                    }
                }
                message = log.next() => {
                    let message = message?;
                    if let Some(message) = &message {
                        for envelope in message.decode_commit().unwrap_or_default() {
                            fold(&mut jobs, &envelope);
                        }
                    }
                    if !log.settled(message.as_ref()) {
                        continue; // caught up first
                    }
                    log.save(&jobs).await;
                }
            }
            for (id, job) in &jobs {
                if job.cancel_requested
                    && let Some(token) = tokens.get(id)
                {
                    token.cancel();
                }
                let Some(work) = job.work(id, &self.place) else {
                    continue;
                };
                if !taken.insert(work.clone()) {
                    continue;
                }
                // A job's own token: stopping the worker aborts its tasks (the job resumes at the
                // next start), which a cancelled job must not be mistaken for.
                let token = CancellationToken::new();
                if job.cancel_requested {
                    token.cancel();
                }
                tokens.insert(id.clone(), token.clone());
                let (worker, id, job) = (self.clone(), id.clone(), job.clone());
                tasks.spawn(async move {
                    if work.ends_with("/decide") {
                        worker.decide_elsewhere(&id, &job, token).await;
                    } else {
                        worker.carry_on(&id, &job, token).await;
                    }
                    id
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(id: &str, seq: u64, event: &AiDevEvent) -> events::EventEnvelope {
        events::EventEnvelope::new(id, seq, event, CorrelationId::new(), None, Actor::system())
    }

    fn proposed() -> AiDevEvent {
        AiDevEvent::ChangeProposed(events::ai_dev::ChangeProposed {
            commit: "c1".to_owned(),
            summary: "a change".to_owned(),
            files: vec!["a.rs".to_owned()],
            lines_added: 1,
            lines_removed: 0,
            diff: "+fn a() {}\n".to_owned(),
        })
    }

    fn requested() -> AiDevEvent {
        AiDevEvent::Requested(events::ai_dev::JobRequested {
            repo: "r".to_owned(),
            instruction: "do it".to_owned(),
            base: "main".to_owned(),
            model: None,
        })
    }

    /// The fold (and so its checkpoint) keeps what a worker may still act on: a merged job
    /// without its diff (a rollback works from the merged commit); a job that failed or was
    /// rolled back not at all, whatever comes after.
    #[test]
    fn the_fold_keeps_only_what_a_worker_may_still_act_on() {
        let mut jobs = BTreeMap::new();
        for (seq, event) in [
            requested(),
            proposed(),
            AiDevEvent::Merged {
                commit: "m1".to_owned(),
                fast_forward: true,
            },
        ]
        .iter()
        .enumerate()
        {
            fold(&mut jobs, &envelope("merged", seq as u64 + 1, event));
        }
        let merged = &jobs["merged"];
        assert_eq!(merged.status, JobStatus::Merged);
        let change = merged.state.proposed.as_ref().expect("its change");
        assert!(change.diff.is_empty(), "the diff is dropped");
        assert_eq!(change.commit, "c1");
        assert_eq!(merged.state.merged_commit.as_deref(), Some("m1"));

        fold(&mut jobs, &envelope("open", 1, &requested()));
        fold(&mut jobs, &envelope("open", 2, &proposed()));
        let open = &jobs["open"].state.proposed;
        assert!(
            !open.as_ref().unwrap().diff.is_empty(),
            "still to be decided"
        );

        fold(&mut jobs, &envelope("failed", 1, &requested()));
        let failed = AiDevEvent::Failed {
            reason: "model".to_owned(),
            error: "gone".to_owned(),
        };
        fold(&mut jobs, &envelope("failed", 2, &failed));
        fold(
            &mut jobs,
            &envelope("failed", 3, &AiDevEvent::RollbackRequested {}),
        );
        assert!(!jobs.contains_key("failed"));
        assert_eq!(jobs.len(), 2);
    }
}
