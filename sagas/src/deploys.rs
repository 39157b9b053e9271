//! Deploys as every way in asks for them (the gateway's REST, the CLI, git webhooks): a release
//! made of the app's definition (a new one only when the definition changed), a run requested
//! with the release it replaces, rollbacks to a release that was live before, and a run read
//! back with its steps.

use std::time::Duration;

use bus::store::{CommandMeta, Commands, JetStreamStore, execute};
use bus::{Bus, BusError};
use chrono::{DateTime, Utc};
use cqrs_es::{AggregateError, EventStore};
use domain::deploy::{App, AppCommand, AppError, DeployCommand, DeployError, DeployRun};
use events::DomainEvent;
use events::deploy::{
    AppContainer, AppEvent, AppHealth, BUILD_IMAGE, BuildSource, DeployEvent, DeployRequested,
    DeployStep, DeployTrigger, Release,
};
use serde::Serialize;

/// Why a deploy was not requested.
#[derive(Debug, thiserror::Error)]
pub enum DeployRequestError {
    #[error("no app {0}")]
    NoApp(String),
    #[error("{0}")]
    NoRelease(String),
    #[error(transparent)]
    App(#[from] AggregateError<AppError>),
    #[error(transparent)]
    Run(#[from] AggregateError<DeployError>),
    /// The git source could not be read.
    #[error("{0}")]
    Source(String),
}

/// The commit `branch` of `repo` points at now (asked of the remote, nothing cloned).
pub async fn branch_head(repo: &str, branch: &str) -> Result<String, String> {
    let (repo, branch) = (repo.to_owned(), branch.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut remote = git2::Remote::create_detached(repo.as_str())
            .map_err(|err| format!("git source {repo}: {}", err.message()))?;
        remote
            .connect(git2::Direction::Fetch)
            .map_err(|err| format!("git source {repo} cannot be read: {}", err.message()))?;
        let wanted = format!("refs/heads/{branch}");
        let head = remote
            .list()
            .map_err(|err| format!("git source {repo}: {}", err.message()))?
            .iter()
            .find(|r| r.name() == wanted)
            .map(|r| r.oid().to_string());
        head.ok_or_else(|| format!("git source {repo} has no branch {branch}"))
    })
    .await
    .map_err(|err| format!("the git source could not be read: {err}"))?
}

/// SHA-256 (hex) of a release's containers and check, as canonical JSON.
pub fn spec_hash(containers: &[AppContainer], health: &AppHealth) -> String {
    common::sha256_hex(&serde_json::to_vec(&(containers, health)).unwrap_or_default())
}

/// The app `name` as it stands, or `None` when it is not defined.
pub async fn load_app(
    state: &JetStreamStore<App>,
    name: &str,
) -> Result<Option<App>, AggregateError<AppError>> {
    let app = state.load_aggregate(name).await?.state().clone();
    Ok(app.defined.is_some().then_some(app))
}

/// A run id and the release it rolls out.
#[derive(Debug, Clone, Serialize)]
pub struct Requested {
    pub run_id: String,
    pub release: u32,
}

/// Rolls out the app's definition: its latest release when the definition has not changed
/// since, else a new release of it.
pub async fn deploy(
    apps: &Commands<App>,
    app_state: &JetStreamStore<App>,
    runs: &Commands<DeployRun>,
    name: &str,
    trigger: DeployTrigger,
    meta: CommandMeta,
) -> Result<Requested, DeployRequestError> {
    let app = load_app(app_state, name)
        .await?
        .ok_or_else(|| DeployRequestError::NoApp(name.to_owned()))?;
    let Some(defined) = &app.defined else {
        return Err(DeployRequestError::NoApp(name.to_owned()));
    };
    // An app built from git: its branch's head now, and the image that commit becomes.
    let build = match &defined.git {
        None => None,
        Some(git) => {
            let commit = branch_head(&git.repo, &git.branch)
                .await
                .map_err(DeployRequestError::Source)?;
            Some(BuildSource {
                repo: git.repo.clone(),
                image: format!("nebula-build/{name}:{}", &commit[..12]),
                commit,
                dockerfile: git.dockerfile.clone(),
                command: git.build_command.clone(),
            })
        }
    };
    let containers: Vec<AppContainer> = defined
        .containers
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if let Some(build) = &build
                && c.spec.image == BUILD_IMAGE
            {
                c.spec.image = build.image.clone();
            }
            c
        })
        .collect();
    let hash = spec_hash(&containers, &defined.health);
    let release = match app.latest() {
        Some(latest) if latest.spec_hash == hash => latest.clone(),
        latest => {
            let release = Release {
                number: latest.map_or(1, |r| r.number + 1),
                containers,
                health: defined.health.clone(),
                spec_hash: hash,
                build,
            };
            execute(
                apps,
                name,
                AppCommand::CreateRelease(release.clone()),
                meta.clone(),
                3,
            )
            .await?;
            release
        }
    };
    request_run(runs, &app, name, release, trigger, meta).await
}

/// Rolls back to `release`, or to the last release that was live before the live one.
pub async fn rollback(
    app_state: &JetStreamStore<App>,
    runs: &Commands<DeployRun>,
    name: &str,
    release: Option<u32>,
    meta: CommandMeta,
) -> Result<Requested, DeployRequestError> {
    let app = load_app(app_state, name)
        .await?
        .ok_or_else(|| DeployRequestError::NoApp(name.to_owned()))?;
    let number = match release {
        Some(number) => number,
        None => app
            .good
            .iter()
            .rev()
            .copied()
            .find(|r| Some(*r) != app.live)
            .ok_or_else(|| {
                DeployRequestError::NoRelease(format!(
                    "{name} has no earlier release that was live to roll back to"
                ))
            })?,
    };
    let target = app
        .release(number)
        .cloned()
        .ok_or_else(|| DeployRequestError::NoRelease(format!("{name} has no release {number}")))?;
    request_run(runs, &app, name, target, DeployTrigger::Rollback, meta).await
}

async fn request_run(
    runs: &Commands<DeployRun>,
    app: &App,
    name: &str,
    release: Release,
    trigger: DeployTrigger,
    meta: CommandMeta,
) -> Result<Requested, DeployRequestError> {
    let nodes = app
        .defined
        .as_ref()
        .map(|d| d.nodes.clone())
        .unwrap_or_default();
    let previous = app
        .live
        .filter(|live| *live != release.number)
        .and_then(|live| app.release(live).cloned());
    let run_id = uuid::Uuid::now_v7().to_string();
    let number = release.number;
    execute(
        runs,
        &run_id,
        DeployCommand::Request(Box::new(DeployRequested {
            app: name.to_owned(),
            release,
            previous,
            nodes,
            trigger,
        })),
        meta,
        3,
    )
    .await?;
    Ok(Requested {
        run_id,
        release: number,
    })
}

/// The run once it finished, or as it stands when `wait` has passed.
pub async fn wait_run(
    bus: &Bus,
    state: &JetStreamStore<DeployRun>,
    run_id: &str,
    wait: Duration,
) -> Result<DeployRun, AggregateError<DeployError>> {
    crate::follow::until_final(bus, state, run_id, wait, |run| run.outcome.is_some()).await
}

/// One step of a run as it is shown.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    pub step: DeployStep,
    pub started_at: DateTime<Utc>,
    /// `running`, `ok` or `failed`.
    pub status: &'static str,
    pub output: String,
    pub error: Option<String>,
}

/// A run read from its events.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub run_id: String,
    pub app: String,
    pub release: u32,
    pub previous: Option<u32>,
    pub nodes: Vec<String>,
    pub trigger: DeployTrigger,
    pub requested_by: events::Actor,
    pub requested_at: DateTime<Utc>,
    pub approval_id: Option<String>,
    pub steps: Vec<StepView>,
    /// `running` until it finished, then its outcome.
    pub status: String,
    pub live_release: Option<u32>,
    pub error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The run `run_id`, or `None` when there is none.
pub async fn run_view(bus: &Bus, run_id: &str) -> Result<Option<RunView>, BusError> {
    let envelopes = bus
        .aggregate_events(DeployEvent::AGGREGATE_TYPE, run_id)
        .await?;
    let mut view: Option<RunView> = None;
    for envelope in envelopes {
        let Ok(event) = envelope.decode::<DeployEvent>() else {
            continue;
        };
        if let DeployEvent::Requested(requested) = &event {
            view = Some(RunView {
                run_id: run_id.to_owned(),
                app: requested.app.clone(),
                release: requested.release.number,
                previous: requested.previous.as_ref().map(|r| r.number),
                nodes: requested.nodes.clone(),
                trigger: requested.trigger,
                requested_by: envelope.actor.clone(),
                requested_at: envelope.occurred_at,
                approval_id: None,
                steps: Vec::new(),
                status: "running".to_owned(),
                live_release: None,
                error: None,
                finished_at: None,
            });
            continue;
        }
        let Some(view) = view.as_mut() else { continue };
        match event {
            DeployEvent::Requested(_) => {}
            DeployEvent::ApprovalAsked { approval_id } => view.approval_id = Some(approval_id),
            DeployEvent::StepStarted { step } => view.steps.push(StepView {
                step,
                started_at: envelope.occurred_at,
                status: "running",
                output: String::new(),
                error: None,
            }),
            DeployEvent::StepFinished {
                step,
                ok,
                output,
                error,
            } => {
                if let Some(last) = view.steps.iter_mut().rev().find(|s| s.step == step) {
                    last.status = if ok { "ok" } else { "failed" };
                    last.output = output;
                    last.error = error;
                }
            }
            DeployEvent::Finished {
                outcome,
                live_release,
                error,
            } => {
                view.status = outcome.as_str().to_owned();
                view.live_release = live_release;
                view.error = error;
                view.finished_at = Some(envelope.occurred_at);
            }
        }
    }
    Ok(view)
}

/// Every run of `app`, newest first (at most `limit`).
pub async fn app_runs(bus: &Bus, app: &str, limit: usize) -> Result<Vec<RunView>, BusError> {
    let mut runs = Vec::new();
    let mut ids = bus.aggregate_ids(DeployEvent::AGGREGATE_TYPE).await?;
    // v7 ids sort by time: newest first
    ids.sort_unstable_by(|a, b| b.cmp(a));
    for id in ids {
        if runs.len() >= limit {
            break;
        }
        if let Some(view) = run_view(bus, &id).await?
            && view.app == app
        {
            runs.push(view);
        }
    }
    Ok(runs)
}

/// An app as the dashboard and the CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct AppView {
    pub name: String,
    pub definition: events::deploy::AppDefined,
    pub releases: Vec<Release>,
    pub live_release: Option<u32>,
    /// Releases that were live, newest first.
    pub good_releases: Vec<u32>,
}

/// Every defined app, by name.
pub async fn list_apps(
    bus: &Bus,
    state: &JetStreamStore<App>,
) -> Result<Vec<AppView>, AggregateError<AppError>> {
    let unexpected = |err: BusError| AggregateError::UnexpectedError(Box::new(err));
    let names = bus
        .aggregate_ids(AppEvent::AGGREGATE_TYPE)
        .await
        .map_err(unexpected)?;
    let mut apps = Vec::new();
    for name in names {
        if let Some(app) = load_app(state, &name).await? {
            apps.push(app_view(&name, app));
        }
    }
    Ok(apps)
}

pub fn app_view(name: &str, app: App) -> AppView {
    AppView {
        name: name.to_owned(),
        definition: app.defined.unwrap_or_else(|| events::deploy::AppDefined {
            git: None,
            containers: Vec::new(),
            health: AppHealth::default(),
            nodes: Vec::new(),
            labels: Default::default(),
        }),
        releases: app.releases,
        live_release: app.live,
        good_releases: app.good.into_iter().rev().collect(),
    }
}
