//! Container commands and what nodes' Docker engines report.
//!
//! A [`ContainerCommand`] (one per request, id = the command id) goes requested → started →
//! completed | failed, or requested → expired when nobody starts it before its deadline. The
//! node's agent starts it through the control plane's relay before it asks Docker, and the
//! command refuses a second start, so a redelivered request never runs twice: the command id is
//! the idempotency key. [`NodeContainers`] (id = the node id) records what the node's engine
//! did, asked for or not.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::container::{
    CommandRequested, ContainerAction, ContainerCommandEvent, NodeContainersEvent, StateChanged,
};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ContainerCommandCommand {
    /// An actor asks `node_id` to act (the control plane records it; the node never does).
    Request(CommandRequested),
    /// The node's agent takes it, before it asks Docker.
    Start,
    Complete {
        summary: String,
    },
    Fail {
        error: String,
    },
    /// Nobody took it in time.
    Expire {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ContainerCommandError {
    #[error("this container command was already requested")]
    AlreadyRequested,
    #[error("no such container command")]
    NotFound,
    #[error("the command is {0} and cannot {1}")]
    InvalidTransition(String, String),
    #[error("the command expired at {0} before anyone started it")]
    Expired(DateTime<Utc>),
    #[error("invalid command: {0}")]
    Invalid(String),
}

/// Where a container command stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Requested,
    Started,
    Completed,
    Failed,
    Expired,
}

impl CommandStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Requested => "requested",
            CommandStatus::Started => "started",
            CommandStatus::Completed => "completed",
            CommandStatus::Failed => "failed",
            CommandStatus::Expired => "expired",
        }
    }

    /// Whether it will change no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CommandStatus::Completed | CommandStatus::Failed | CommandStatus::Expired
        )
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ContainerCommand {
    pub requested: Option<CommandRequested>,
    pub status: Option<CommandStatus>,
    /// The summary, the error or the reason it expired, once final.
    pub outcome: Option<String>,
}

impl ContainerCommand {
    fn require(&self, allowed: CommandStatus, action: &str) -> Result<(), ContainerCommandError> {
        match self.status {
            None => Err(ContainerCommandError::NotFound),
            Some(status) if status == allowed => Ok(()),
            Some(status) => Err(ContainerCommandError::InvalidTransition(
                status.as_str().to_owned(),
                action.to_owned(),
            )),
        }
    }
}

/// What a node's agent may do to a container command (`bus::remote::NodePolicy`): start,
/// finish or expire only the commands for its own node; never request one.
pub fn command_node_may(
    state: &ContainerCommand,
    node_id: &str,
    command_id: &str,
    command: &ContainerCommandCommand,
) -> Result<(), String> {
    if matches!(command, ContainerCommandCommand::Request(_)) {
        return Err("a node may not request container commands".to_owned());
    }
    match &state.requested {
        Some(requested) if requested.node_id == node_id => Ok(()),
        Some(requested) => Err(format!(
            "container command {command_id} is for node {}, not node {node_id}",
            requested.node_id
        )),
        None => Err(format!("no container command {command_id}")),
    }
}

impl Aggregate for ContainerCommand {
    const TYPE: &'static str = "container_command";
    type Command = ContainerCommandCommand;
    type Event = Event<ContainerCommandEvent>;
    type Error = ContainerCommandError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ContainerCommandCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ContainerCommandError> {
        use CommandStatus::{Requested, Started};
        let event = match command {
            ContainerCommandCommand::Request(requested) => {
                if self.status.is_some() {
                    return Err(ContainerCommandError::AlreadyRequested);
                }
                requested
                    .action
                    .validate()
                    .map_err(ContainerCommandError::Invalid)?;
                if let ContainerAction::Create { spec, .. } = &requested.action {
                    let problems = spec.validate();
                    if !problems.is_empty() {
                        return Err(ContainerCommandError::Invalid(problems.join("; ")));
                    }
                }
                requested
                    .node_id
                    .parse::<events::NodeId>()
                    .map_err(|err| ContainerCommandError::Invalid(err.to_string()))?;
                ContainerCommandEvent::Requested(requested)
            }
            ContainerCommandCommand::Start => {
                self.require(Requested, "start")?;
                let expires_at = self.requested.as_ref().map(|r| r.expires_at);
                if let Some(expires_at) = expires_at
                    && Utc::now() > expires_at
                {
                    return Err(ContainerCommandError::Expired(expires_at));
                }
                ContainerCommandEvent::Started {}
            }
            ContainerCommandCommand::Complete { summary } => {
                self.require(Started, "complete")?;
                ContainerCommandEvent::Completed { summary }
            }
            ContainerCommandCommand::Fail { error } => {
                self.require(Started, "fail")?;
                ContainerCommandEvent::Failed { error }
            }
            ContainerCommandCommand::Expire { reason } => {
                self.require(Requested, "expire")?;
                ContainerCommandEvent::Expired { reason }
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<ContainerCommandEvent>) {
        let (status, outcome) = match event.0 {
            ContainerCommandEvent::Requested(requested) => {
                self.requested = Some(requested);
                (CommandStatus::Requested, None)
            }
            ContainerCommandEvent::Started {} => (CommandStatus::Started, None),
            ContainerCommandEvent::Completed { summary } => {
                (CommandStatus::Completed, Some(summary))
            }
            ContainerCommandEvent::Failed { error } => (CommandStatus::Failed, Some(error)),
            ContainerCommandEvent::Expired { reason } => (CommandStatus::Expired, Some(reason)),
        };
        self.status = Some(status);
        self.outcome = outcome;
    }
}

/// What a node's Docker engine did (aggregate id: the node id). Its agent is the only writer.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct NodeContainers {
    pub changes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordStateChange(pub StateChanged);

/// A node's agent records its own engine's changes only (`bus::remote::NodePolicy`).
pub fn containers_node_may(
    _state: &NodeContainers,
    node_id: &str,
    aggregate_id: &str,
    _command: &RecordStateChange,
) -> Result<(), String> {
    crate::own_node(node_id, aggregate_id, "record the containers of node")
}

impl Aggregate for NodeContainers {
    const TYPE: &'static str = "node_containers";
    type Command = RecordStateChange;
    type Event = Event<NodeContainersEvent>;
    type Error = crate::render::NeverFails;
    type Services = ();

    async fn handle(
        &mut self,
        command: RecordStateChange,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), crate::render::NeverFails> {
        sink.write(Event(NodeContainersEvent::StateChanged(command.0)), self)
            .await;
        Ok(())
    }

    fn apply(&mut self, _event: Event<NodeContainersEvent>) {
        self.changes += 1;
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn requested(expires_in: chrono::TimeDelta) -> CommandRequested {
        CommandRequested {
            node_id: "gpu-1".into(),
            action: ContainerAction::Restart {
                container: "web".into(),
                timeout_secs: 10,
            },
            expires_at: Utc::now() + expires_in,
        }
    }

    fn event(e: ContainerCommandEvent) -> Event<ContainerCommandEvent> {
        Event(e)
    }

    #[test]
    fn a_command_runs_at_most_once() {
        let request = requested(chrono::TimeDelta::minutes(1));
        TestFramework::<ContainerCommand>::with(())
            .given_no_previous_events()
            .when(ContainerCommandCommand::Request(request.clone()))
            .then_expect_events(vec![event(ContainerCommandEvent::Requested(
                request.clone(),
            ))]);
        let given = vec![
            event(ContainerCommandEvent::Requested(request.clone())),
            event(ContainerCommandEvent::Started {}),
        ];
        // A redelivery finds it started: it is not started again.
        TestFramework::<ContainerCommand>::with(())
            .given(given.clone())
            .when(ContainerCommandCommand::Start)
            .then_expect_error(ContainerCommandError::InvalidTransition(
                "started".into(),
                "start".into(),
            ));
        TestFramework::<ContainerCommand>::with(())
            .given(given.clone())
            .when(ContainerCommandCommand::Complete {
                summary: "running".into(),
            })
            .then_expect_events(vec![event(ContainerCommandEvent::Completed {
                summary: "running".into(),
            })]);
        // Started, it no longer expires.
        TestFramework::<ContainerCommand>::with(())
            .given(given)
            .when(ContainerCommandCommand::Expire {
                reason: "late".into(),
            })
            .then_expect_error(ContainerCommandError::InvalidTransition(
                "started".into(),
                "expire".into(),
            ));
        TestFramework::<ContainerCommand>::with(())
            .given(vec![event(ContainerCommandEvent::Requested(request))])
            .when(ContainerCommandCommand::Request(requested(
                chrono::TimeDelta::minutes(1),
            )))
            .then_expect_error(ContainerCommandError::AlreadyRequested);
    }

    #[test]
    fn a_late_start_is_refused_and_bad_requests_are_explained() {
        let late = requested(chrono::TimeDelta::seconds(-1));
        TestFramework::<ContainerCommand>::with(())
            .given(vec![event(ContainerCommandEvent::Requested(late.clone()))])
            .when(ContainerCommandCommand::Start)
            .then_expect_error(ContainerCommandError::Expired(late.expires_at));
        let mut bad = requested(chrono::TimeDelta::minutes(1));
        bad.action = ContainerAction::Start {
            container: "../x".into(),
        };
        TestFramework::<ContainerCommand>::with(())
            .given_no_previous_events()
            .when(ContainerCommandCommand::Request(bad))
            .then_expect_error(ContainerCommandError::Invalid(
                "container \"../x\" is not a Docker container name or id".into(),
            ));
        TestFramework::<ContainerCommand>::with(())
            .given_no_previous_events()
            .when(ContainerCommandCommand::Start)
            .then_expect_error(ContainerCommandError::NotFound);
    }

    #[test]
    fn a_node_acts_only_on_its_own_commands() {
        let mut state = ContainerCommand::default();
        state.apply(event(ContainerCommandEvent::Requested(requested(
            chrono::TimeDelta::minutes(1),
        ))));
        let start = ContainerCommandCommand::Start;
        assert!(command_node_may(&state, "gpu-1", "c1", &start).is_ok());
        let err = command_node_may(&state, "gpu-2", "c1", &start).unwrap_err();
        assert!(err.contains("is for node gpu-1"), "{err}");
        let request = ContainerCommandCommand::Request(requested(chrono::TimeDelta::minutes(1)));
        assert!(command_node_may(&state, "gpu-1", "c1", &request).is_err());
        assert!(command_node_may(&ContainerCommand::default(), "gpu-1", "c2", &start).is_err());
    }
}
