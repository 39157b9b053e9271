//! The AI developer's worker: every `ai_dev_job` carried out — a local LLM (Ollama) changing one
//! of the configured repositories on a branch and worktree of its own through tools that see
//! only that worktree, the build verified, the change committed only when green, then merged by
//! a repository's auto-approval rule or after a person's approval (the approval engine), or
//! rejected; a merged change reverted on request.
//!
//! The jobs are a fold of their events, rebuilt at every start: a job found running resumes from
//! its memory in Redis (the conversation, the plan, the budget spent, the files written) in the
//! worktree it left; one waiting for its approval waits again. Runs here, on the control plane
//! (`local`); at most `max_jobs` agent loops at once, while any number of changes wait for
//! their approvals.

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

use bus::store::{Commands, JetStreamStore, commands};
use bus::{Bus, ReadFrom, StreamName};
use domain::ai_dev::{AutoApprove, JobStatus};
use domain::approval::PolicyRule;
use events::ai_dev::AiDevEvent;
use events::{Actor, CorrelationId, DomainEvent, EventId};
use futures::StreamExt;
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
        }
    }
}

impl Config {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.ollama_url.starts_with("http://") && !self.ollama_url.starts_with("https://") {
            problems.push(format!("ollama_url must be an http(s) URL, got {:?}", self.ollama_url));
        }
        let openai = &self.openai.url;
        if !openai.is_empty() && !openai.starts_with("http://") && !openai.starts_with("https://") {
            problems.push(format!("openai.url must be an http(s) URL or empty, got {openai:?}"));
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
                problems.push(format!("repos[{index}]: path must be absolute, got {}", repo.path.display()));
            }
            for pattern in &repo.deny {
                if let Err(err) = globset::Glob::new(pattern) {
                    problems.push(format!("repos[{index}]: deny {pattern:?}: {err}"));
                }
            }
        }
        for (field, value, range) in [
            ("max_wall_secs", self.max_wall_secs, 1.0..=86_400.0),
            ("build_timeout_secs", self.build_timeout_secs, 1.0..=86_400.0),
            ("model_timeout_secs", self.model_timeout_secs, 1.0..=3600.0),
            ("compress_at", self.compress_at, 0.1..=0.95),
        ] {
            if !(value.is_finite() && range.contains(&value)) {
                problems.push(format!("{field} must be {range:?}, got {value}"));
            }
        }
        if !(1..=1000).contains(&self.max_steps) {
            problems.push(format!("max_steps must be 1..=1000, got {}", self.max_steps));
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

/// Starts the worker (restarted by the context if it fails). `rules` are the approval rules
/// (`[[approvals.rules]]`, kind `ai_dev`).
pub fn start(ctx: &Context, config: Config, rules: Vec<PolicyRule>, kv: Option<kv::Kv>) {
    let bus = ctx.bus.clone();
    let worker = Arc::new(Worker {
        jobs: commands(bus.clone(), ()),
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

pub(crate) struct Worker {
    pub(crate) bus: Bus,
    pub(crate) jobs: Commands<domain::ai_dev::AiDevJob>,
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
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) status: JobStatus,
    pub(crate) actor: Actor,
    pub(crate) correlation_id: CorrelationId,
    pub(crate) event_id: EventId,
    pub(crate) cancel_requested: bool,
    /// Rollbacks asked for so far (each is carried out once).
    pub(crate) rollbacks: u32,
}

impl Known {
    /// What the worker still has to do for it (a key per piece of work, done once).
    fn work(&self, id: &str) -> Option<String> {
        match self.status {
            JobStatus::Requested
            | JobStatus::Running
            | JobStatus::Proposed
            | JobStatus::AwaitingApproval => Some(id.to_owned()),
            JobStatus::Merged if self.rollbacks > 0 => Some(format!("{id}/rollback/{}", self.rollbacks)),
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
        jobs.entry(id.clone()).or_insert(Known {
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
    match event {
        AiDevEvent::Started(_) => job.status = JobStatus::Running,
        AiDevEvent::ChangeProposed(_) => job.status = JobStatus::Proposed,
        AiDevEvent::ApprovalAsked { .. } => job.status = JobStatus::AwaitingApproval,
        AiDevEvent::Merged { .. } => job.status = JobStatus::Merged,
        AiDevEvent::Rejected { .. } => job.status = JobStatus::Rejected,
        AiDevEvent::RolledBack { .. } => job.status = JobStatus::RolledBack,
        AiDevEvent::Failed { .. } => job.status = JobStatus::Failed,
        AiDevEvent::Cancelled {} => job.status = JobStatus::Cancelled,
        AiDevEvent::CancelRequested {} => job.cancel_requested = true,
        AiDevEvent::RollbackRequested {} => job.rollbacks += 1,
        _ => {}
    }
}

impl Worker {
    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut log = self
            .bus
            .read(
                StreamName::Events,
                ReadFrom::Start,
                Some(events::subjects::events_of_type(AiDevEvent::AGGREGATE_TYPE)),
            )
            .await?;
        let mut jobs: BTreeMap<String, Known> = BTreeMap::new();
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
                    let message = message.ok_or_else(|| anyhow::anyhow!("the ai_dev_job reader ended"))??;
                    for envelope in message.decode_commit().unwrap_or_default() {
                        fold(&mut jobs, &envelope);
                    }
                    if message.pending.unwrap_or(0) > 0 {
                        continue; // caught up first
                    }
                }
            }
            for (id, job) in &jobs {
                if job.cancel_requested
                    && let Some(token) = tokens.get(id)
                {
                    token.cancel();
                }
                let Some(work) = job.work(id) else {
                    continue;
                };
                if !taken.insert(work) {
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
                    worker.carry_on(&id, &job, token).await;
                    id
                });
            }
        }
    }
}
