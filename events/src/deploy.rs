//! The Deploy Center: apps (`app`, one aggregate per app name: its definition, its releases and
//! which one is live) and deploy runs (`deploy_run`, one aggregate per run: a release rolled out
//! to the app's nodes step by step, each step's outcome and output recorded, then finished once:
//! succeeded, failed, rolled back to the release that was live, or refused by its approval).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DomainEvent;
use crate::container::ContainerSpec;

/// In a check's address, each node's own host (from its agent's address); the check is then
/// made against every node.
pub const NODE_HOST: &str = "{node_host}";

/// Most output a step keeps (the rest is cut, and says so).
pub const STEP_OUTPUT_MAX_BYTES: usize = 16 * 1024;

/// One container of an app (an app may have several: they deploy and roll back together).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppContainer {
    /// Its name within the app (`web`, `worker`); the container is named
    /// `<app>-<name>-r<release>` on the node.
    pub name: String,
    pub spec: ContainerSpec,
}

/// How a release is known to be good once it runs: an HTTP answer (any 2xx) or a TCP connect,
/// from the control plane, within `timeout_secs`; without a check, every container running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppHealth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// How long a new release may take to pass its check.
    pub timeout_secs: u32,
}

impl Default for AppHealth {
    fn default() -> Self {
        AppHealth {
            http: None,
            tcp: None,
            timeout_secs: 60,
        }
    }
}

/// In a container's image: the image each release builds from the app's git source.
pub const BUILD_IMAGE: &str = "{build}";

/// Where an app's own code comes from: a branch of a git repository with a Dockerfile (or a
/// build command), built on each node for every release (the release pins the commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitSource {
    /// A URL or path the control plane and the nodes can fetch from.
    pub repo: String,
    pub branch: String,
    /// Relative to the repository's root.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    /// Instead of the Dockerfile: a shell command run on the node in the commit's checkout
    /// that leaves the image `$NEBULA_IMAGE` in its engine (`pack build "$NEBULA_IMAGE"`,
    /// `nixpacks build . --name "$NEBULA_IMAGE"`, `make image`). It runs as the node's
    /// agent (or the SSH user), so only an admin may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_command: Option<String>,
    /// The vault secret that signs this app's git webhooks (`X-Hub-Signature-256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Deploy when the branch moves, looked at every `deploy.git_poll_secs`.
    #[serde(default)]
    pub poll: bool,
}

fn default_dockerfile() -> String {
    "Dockerfile".to_owned()
}

/// What a release builds: the commit, and the image it becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildSource {
    pub repo: String,
    pub commit: String,
    pub dockerfile: String,
    pub image: String,
    /// The build command, when the app builds with one rather than its Dockerfile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// What an app is: its containers, its check and the nodes it runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppDefined {
    /// Its own code, when it is built rather than pulled (containers name the built image
    /// `{build}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    pub containers: Vec<AppContainer>,
    #[serde(default)]
    pub health: AppHealth,
    pub nodes: Vec<String>,
    /// Labels for people (`team = "media"`); not for Docker.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// An immutable release: the containers exactly as they were deployed, and their hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// 1, 2, 3, … per app.
    pub number: u32,
    pub containers: Vec<AppContainer>,
    pub health: AppHealth,
    /// SHA-256 of the canonical JSON of `containers` and `health`.
    pub spec_hash: String,
    /// The commit it is built from, for an app with a git source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AppEvent {
    /// Created or changed (the next deploy makes a release of it).
    #[serde(rename = "app.defined")]
    Defined(AppDefined),
    #[serde(rename = "app.removed")]
    Removed {},
    #[serde(rename = "app.release_created")]
    ReleaseCreated(Release),
    /// `release` passed its check on every node: it is what runs now.
    #[serde(rename = "app.release_live")]
    ReleaseLive { release: u32, run_id: String },
    /// A signed git webhook (`delivery`: its id; a second delivery of it changes nothing).
    #[serde(rename = "app.webhook_received")]
    WebhookReceived {
        delivery: String,
        reference: String,
        commit: String,
    },
    /// A webhook refused (a bad or missing signature), so the log shows who knocked.
    #[serde(rename = "app.webhook_refused")]
    WebhookRefused { delivery: String, reason: String },
}

impl DomainEvent for AppEvent {
    const AGGREGATE_TYPE: &'static str = "app";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "app.defined",
        "app.removed",
        "app.release_created",
        "app.release_live",
        "app.webhook_received",
        "app.webhook_refused",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            AppEvent::Defined(_) => "app.defined",
            AppEvent::Removed {} => "app.removed",
            AppEvent::ReleaseCreated(_) => "app.release_created",
            AppEvent::ReleaseLive { .. } => "app.release_live",
            AppEvent::WebhookReceived { .. } => "app.webhook_received",
            AppEvent::WebhookRefused { .. } => "app.webhook_refused",
        }
    }
}

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployTrigger {
    /// Someone asked (REST, CLI, dashboard).
    Manual,
    /// Someone asked for an earlier release.
    Rollback,
    /// A git push (webhook) or a new commit seen by polling.
    Git,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRequested {
    pub app: String,
    /// The release to roll out (the whole of it: the app's containers, its check).
    pub release: Release,
    /// The release live when the run was asked for: what a failed run goes back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Release>,
    pub nodes: Vec<String>,
    pub trigger: DeployTrigger,
}

/// The steps of a run, in order; `rollback` only when a step failed after the old release was
/// stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployStep {
    Approval,
    /// The release's image built on each node (apps with a git source).
    Build,
    StopOld,
    StartNew,
    Health,
    Rollback,
}

impl DeployStep {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployStep::Approval => "approval",
            DeployStep::Build => "build",
            DeployStep::StopOld => "stop_old",
            DeployStep::StartNew => "start_new",
            DeployStep::Health => "health",
            DeployStep::Rollback => "rollback",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployOutcome {
    Succeeded,
    /// Failed before anything old was touched, or the way back failed too.
    Failed,
    /// Failed, and the release that was live runs again.
    RolledBack,
    /// Its approval was rejected, expired or withdrawn: nothing was touched.
    Refused,
}

impl DeployOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployOutcome::Succeeded => "succeeded",
            DeployOutcome::Failed => "failed",
            DeployOutcome::RolledBack => "rolled_back",
            DeployOutcome::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum DeployEvent {
    #[serde(rename = "deploy.requested")]
    Requested(Box<DeployRequested>),
    /// The run waits for this approval.
    #[serde(rename = "deploy.approval_asked")]
    ApprovalAsked { approval_id: String },
    #[serde(rename = "deploy.step_started")]
    StepStarted { step: DeployStep },
    /// A step's end: its output (what each node did), and the error when it failed.
    #[serde(rename = "deploy.step_finished")]
    StepFinished {
        step: DeployStep,
        ok: bool,
        output: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    #[serde(rename = "deploy.finished")]
    Finished {
        outcome: DeployOutcome,
        /// What runs now (the new release, the old one again, or none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        live_release: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl DomainEvent for DeployEvent {
    const AGGREGATE_TYPE: &'static str = "deploy_run";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &[
        "deploy.requested",
        "deploy.approval_asked",
        "deploy.step_started",
        "deploy.step_finished",
        "deploy.finished",
    ];

    fn event_type(&self) -> &'static str {
        match self {
            DeployEvent::Requested(_) => "deploy.requested",
            DeployEvent::ApprovalAsked { .. } => "deploy.approval_asked",
            DeployEvent::StepStarted { .. } => "deploy.step_started",
            DeployEvent::StepFinished { .. } => "deploy.step_finished",
            DeployEvent::Finished { .. } => "deploy.finished",
        }
    }
}

/// Whether `name` may name an app: 1 to 40 of `[a-z0-9-]`, starting with a letter (a subject
/// token, a URL segment and a container name's first part alike).
pub fn validate_app_name(name: &str) -> Result<(), String> {
    let valid = (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "app name {name:?} must be 1-40 of a-z, 0-9 and '-', starting with a letter"
        ))
    }
}

/// The container a release runs as on a node.
pub fn container_name(app: &str, container: &str, release: u32) -> String {
    format!("{app}-{container}-r{release}")
}

/// `output` cut to [`STEP_OUTPUT_MAX_BYTES`] at a character boundary, saying so.
pub fn bounded_output(mut output: String) -> String {
    if output.len() > STEP_OUTPUT_MAX_BYTES {
        let mut end = STEP_OUTPUT_MAX_BYTES;
        while !output.is_char_boundary(end) {
            end -= 1;
        }
        output.truncate(end);
        output.push_str("\n… (output cut)");
    }
    output
}
