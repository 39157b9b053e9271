//! The Deploy Center's decisions.
//!
//! An [`App`] (id = its name) is defined by an admin (its containers, check and nodes), makes
//! numbered releases of its definition — immutable, never renumbered, not even after the app is
//! removed and defined again — and knows which release is live. A [`DeployRun`] (id = a v7
//! uuid) is requested with the release it rolls out and the one it replaces, records its steps,
//! and finishes once.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::deploy::{
    AppDefined, AppEvent, DeployEvent, DeployOutcome, DeployRequested, DeployStep, Release,
    bounded_output,
};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AppCommand {
    Define(AppDefined),
    Remove,
    /// Records `release` (its number must be the next one).
    CreateRelease(Release),
    MarkLive {
        release: u32,
        run_id: String,
    },
    /// A signed webhook; refused when its delivery was recorded before.
    RecordWebhook {
        delivery: String,
        reference: String,
        commit: String,
    },
    RefuseWebhook {
        delivery: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AppError {
    #[error("no such app")]
    NotFound,
    #[error("invalid app: {0}")]
    Invalid(String),
    #[error("release {0} is not the next release ({1})")]
    NotNextRelease(u32, u32),
    #[error("the app has no release {0}")]
    NoSuchRelease(u32),
    #[error("webhook delivery {0} was received before")]
    DuplicateDelivery(String),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct App {
    pub defined: Option<AppDefined>,
    pub releases: Vec<Release>,
    pub live: Option<u32>,
    /// Every release that went live, oldest first (what a rollback may go back to).
    pub good: Vec<u32>,
    /// The last webhook deliveries received (a redelivery is recognised).
    pub deliveries: std::collections::VecDeque<String>,
}

impl App {
    pub fn release(&self, number: u32) -> Option<&Release> {
        self.releases.iter().find(|r| r.number == number)
    }

    pub fn latest(&self) -> Option<&Release> {
        self.releases.last()
    }

    fn next_number(&self) -> u32 {
        self.latest().map_or(1, |r| r.number + 1)
    }
}

impl Aggregate for App {
    const TYPE: &'static str = "app";
    type Command = AppCommand;
    type Event = Event<AppEvent>;
    type Error = AppError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AppCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AppError> {
        let event = match command {
            AppCommand::Define(defined) => {
                let problems = validate_app(&defined);
                if !problems.is_empty() {
                    return Err(AppError::Invalid(problems.join("; ")));
                }
                AppEvent::Defined(defined)
            }
            AppCommand::Remove => {
                self.defined.as_ref().ok_or(AppError::NotFound)?;
                AppEvent::Removed {}
            }
            AppCommand::CreateRelease(release) => {
                self.defined.as_ref().ok_or(AppError::NotFound)?;
                if release.number != self.next_number() {
                    return Err(AppError::NotNextRelease(release.number, self.next_number()));
                }
                AppEvent::ReleaseCreated(release)
            }
            AppCommand::MarkLive { release, run_id } => {
                self.defined.as_ref().ok_or(AppError::NotFound)?;
                self.release(release)
                    .ok_or(AppError::NoSuchRelease(release))?;
                AppEvent::ReleaseLive { release, run_id }
            }
            AppCommand::RecordWebhook {
                delivery,
                reference,
                commit,
            } => {
                self.defined.as_ref().ok_or(AppError::NotFound)?;
                if self.deliveries.contains(&delivery) {
                    return Err(AppError::DuplicateDelivery(delivery));
                }
                AppEvent::WebhookReceived {
                    delivery,
                    reference,
                    commit,
                }
            }
            AppCommand::RefuseWebhook { delivery, reason } => {
                self.defined.as_ref().ok_or(AppError::NotFound)?;
                AppEvent::WebhookRefused { delivery, reason }
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<AppEvent>) {
        match event.0 {
            AppEvent::Defined(defined) => self.defined = Some(defined),
            AppEvent::Removed {} => {
                self.defined = None;
                self.live = None;
            }
            AppEvent::ReleaseCreated(release) => self.releases.push(release),
            AppEvent::WebhookReceived { delivery, .. } => {
                if self.deliveries.len() >= 256 {
                    self.deliveries.pop_front();
                }
                self.deliveries.push_back(delivery);
            }
            AppEvent::WebhookRefused { .. } => {}
            AppEvent::ReleaseLive { release, .. } => {
                self.live = Some(release);
                self.good.retain(|r| *r != release);
                self.good.push(release);
            }
        }
    }
}

/// Every problem of a definition.
pub fn validate_app(app: &AppDefined) -> Vec<String> {
    let mut problems = Vec::new();
    if app.containers.is_empty() {
        problems.push("an app needs at least one container".to_owned());
    }
    if app.containers.len() > 16 {
        problems.push("an app may have at most 16 containers".to_owned());
    }
    let mut names = std::collections::BTreeSet::new();
    for container in &app.containers {
        let name = &container.name;
        let valid = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            problems.push(format!(
                "container name {name:?} must be 1-32 of a-z, 0-9 and '-'"
            ));
        }
        if !names.insert(name.clone()) {
            problems.push(format!("container name {name:?} is used twice"));
        }
        problems.extend(
            container
                .spec
                .validate()
                .into_iter()
                .map(|p| format!("containers.{name}: {p}")),
        );
    }
    if app.nodes.is_empty() {
        problems.push("an app runs on at least one node".to_owned());
    }
    let builds = app
        .containers
        .iter()
        .filter(|c| c.spec.image == events::deploy::BUILD_IMAGE)
        .count();
    match &app.git {
        Some(git) => {
            if builds == 0 {
                problems.push("an app with a git source runs its build: give a container the image \"{build}\"".to_owned());
            }
            let probe = events::container::ContainerAction::Build {
                image: "nebula-build/x:1".to_owned(),
                repo: git.repo.clone(),
                commit: "0".repeat(40),
                dockerfile: git.dockerfile.clone(),
                command: git.build_command.clone(),
            };
            if let Err(err) = probe.validate() {
                problems.push(format!("git: {err}"));
            }
            let branch_ok = !git.branch.is_empty()
                && !git.branch.starts_with('-')
                && git
                    .branch
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'));
            if !branch_ok {
                problems.push(format!("git.branch {:?} is not a branch name", git.branch));
            }
        }
        None if builds > 0 => {
            problems.push("the image \"{build}\" needs a git source to build from".to_owned());
        }
        None => {}
    }
    for node in &app.nodes {
        if let Err(err) = node.parse::<events::NodeId>() {
            problems.push(format!("node {node:?}: {err}"));
        }
    }
    let health = &app.health;
    if let Some(url) = &health.http
        && !url.starts_with("http://")
        && !url.starts_with("https://")
    {
        problems.push(format!("health.http must be an http:// URL, got {url:?}"));
    }
    if let Some(addr) = &health.tcp
        && addr
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        problems.push(format!("health.tcp must be host:port, got {addr:?}"));
    }
    if !(1..=3600).contains(&health.timeout_secs) {
        problems.push("health.timeout_secs must be 1-3600".to_owned());
    }
    problems
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DeployCommand {
    Request(Box<DeployRequested>),
    AskApproval {
        approval_id: String,
    },
    StartStep(DeployStep),
    FinishStep {
        step: DeployStep,
        ok: bool,
        output: String,
        error: Option<String>,
    },
    Finish {
        outcome: DeployOutcome,
        live_release: Option<u32>,
        error: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum DeployError {
    #[error("this run was already requested")]
    AlreadyRequested,
    #[error("no such deploy run")]
    NotFound,
    #[error("the run already finished ({0})")]
    Finished(String),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct DeployRun {
    pub requested: Option<DeployRequested>,
    pub approval_id: Option<String>,
    /// The step under way, if any.
    pub current: Option<DeployStep>,
    /// Steps done, in order, and whether each went well.
    pub done: Vec<(DeployStep, bool)>,
    pub outcome: Option<DeployOutcome>,
}

impl DeployRun {
    fn open(&self) -> Result<(), DeployError> {
        self.requested.as_ref().ok_or(DeployError::NotFound)?;
        match self.outcome {
            Some(outcome) => Err(DeployError::Finished(outcome.as_str().to_owned())),
            None => Ok(()),
        }
    }

    /// Whether the old release was stopped (so a failure must bring it back).
    pub fn touched_old(&self) -> bool {
        self.current == Some(DeployStep::StopOld)
            || self
                .done
                .iter()
                .any(|(step, _)| *step == DeployStep::StopOld)
    }
}

impl Aggregate for DeployRun {
    const TYPE: &'static str = "deploy_run";
    type Command = DeployCommand;
    type Event = Event<DeployEvent>;
    type Error = DeployError;
    type Services = ();

    async fn handle(
        &mut self,
        command: DeployCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DeployError> {
        let event = match command {
            DeployCommand::Request(requested) => {
                if self.requested.is_some() {
                    return Err(DeployError::AlreadyRequested);
                }
                DeployEvent::Requested(requested)
            }
            DeployCommand::AskApproval { approval_id } => {
                self.open()?;
                DeployEvent::ApprovalAsked { approval_id }
            }
            DeployCommand::StartStep(step) => {
                self.open()?;
                DeployEvent::StepStarted { step }
            }
            DeployCommand::FinishStep {
                step,
                ok,
                output,
                error,
            } => {
                self.open()?;
                DeployEvent::StepFinished {
                    step,
                    ok,
                    output: bounded_output(output),
                    error,
                }
            }
            DeployCommand::Finish {
                outcome,
                live_release,
                error,
            } => {
                self.open()?;
                DeployEvent::Finished {
                    outcome,
                    live_release,
                    error,
                }
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<DeployEvent>) {
        match event.0 {
            DeployEvent::Requested(requested) => self.requested = Some(*requested),
            DeployEvent::ApprovalAsked { approval_id } => self.approval_id = Some(approval_id),
            DeployEvent::StepStarted { step } => self.current = Some(step),
            DeployEvent::StepFinished { step, ok, .. } => {
                self.current = None;
                self.done.push((step, ok));
            }
            DeployEvent::Finished { outcome, .. } => {
                self.current = None;
                self.outcome = Some(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use events::container::ContainerSpec;
    use events::deploy::{AppContainer, AppHealth};

    use super::*;

    fn defined() -> AppDefined {
        AppDefined {
            git: None,
            containers: vec![AppContainer {
                name: "web".into(),
                spec: ContainerSpec {
                    image: "web:1".into(),
                    ..Default::default()
                },
            }],
            health: AppHealth::default(),
            nodes: vec!["gpu-1".into()],
            labels: Default::default(),
        }
    }

    fn release(number: u32) -> Release {
        Release {
            number,
            containers: defined().containers,
            health: AppHealth::default(),
            spec_hash: "h".into(),
            build: None,
        }
    }

    #[test]
    fn releases_are_numbered_in_order_and_never_reused() {
        let given = vec![
            Event(AppEvent::Defined(defined())),
            Event(AppEvent::ReleaseCreated(release(1))),
            Event(AppEvent::Removed {}),
            Event(AppEvent::Defined(defined())),
        ];
        TestFramework::<App>::with(())
            .given(given.clone())
            .when(AppCommand::CreateRelease(release(1)))
            .then_expect_error(AppError::NotNextRelease(1, 2));
        TestFramework::<App>::with(())
            .given(given)
            .when(AppCommand::CreateRelease(release(2)))
            .then_expect_events(vec![Event(AppEvent::ReleaseCreated(release(2)))]);
        TestFramework::<App>::with(())
            .given(vec![Event(AppEvent::Defined(defined()))])
            .when(AppCommand::MarkLive {
                release: 3,
                run_id: "r".into(),
            })
            .then_expect_error(AppError::NoSuchRelease(3));
    }

    #[test]
    fn a_definition_is_checked_whole() {
        let mut bad = defined();
        bad.containers.push(bad.containers[0].clone());
        bad.containers[1].spec.image = "has space".into();
        bad.nodes = vec!["Not A Node".into()];
        bad.health.tcp = Some("nowhere".into());
        let problems = validate_app(&bad);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(validate_app(&defined()).is_empty());
    }

    #[test]
    fn a_run_finishes_once() {
        let requested = Event(DeployEvent::Requested(Box::new(DeployRequested {
            app: "web".into(),
            release: release(1),
            previous: None,
            nodes: vec!["gpu-1".into()],
            trigger: events::deploy::DeployTrigger::Manual,
        })));
        let finished = Event(DeployEvent::Finished {
            outcome: DeployOutcome::Succeeded,
            live_release: Some(1),
            error: None,
        });
        TestFramework::<DeployRun>::with(())
            .given(vec![requested, finished])
            .when(DeployCommand::StartStep(DeployStep::Health))
            .then_expect_error(DeployError::Finished("succeeded".into()));
    }
}
