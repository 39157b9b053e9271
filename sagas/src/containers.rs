//! Container commands as every way in asks them (the gateway's REST and `nebula containers`):
//! recorded with a deadline under the caller's name, then, when the caller waits, followed on
//! the command's own subject until it is final.

use std::time::Duration;

use bus::Bus;
use bus::store::{CommandMeta, Commands, JetStreamStore, execute};
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use domain::container::{ContainerCommand, ContainerCommandCommand, ContainerCommandError};
use events::container::{CommandRequested, ContainerAction};

/// A recorded request: its id (the idempotency key the node's agent keeps) and its deadline.
#[derive(Debug, Clone)]
pub struct Requested {
    pub command_id: String,
    pub expires_at: DateTime<Utc>,
}

/// Records `action` for `node_id`, to be taken by its agent within `timeout` or expire.
pub async fn request_container_command(
    commands: &Commands<ContainerCommand>,
    node_id: &str,
    action: ContainerAction,
    timeout: Duration,
    meta: CommandMeta,
) -> Result<Requested, AggregateError<ContainerCommandError>> {
    let command_id = uuid::Uuid::now_v7().to_string();
    let expires_at =
        Utc::now() + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::seconds(60));
    let requested = CommandRequested {
        node_id: node_id.to_owned(),
        action,
        expires_at,
    };
    execute(
        commands,
        &command_id,
        ContainerCommandCommand::Request(requested),
        meta,
        3,
    )
    .await?;
    Ok(Requested {
        command_id,
        expires_at,
    })
}

/// The command's state once it is final, or as it stands when `wait` has passed.
pub async fn wait_container_command(
    bus: &Bus,
    state: &JetStreamStore<ContainerCommand>,
    command_id: &str,
    wait: Duration,
) -> Result<ContainerCommand, AggregateError<ContainerCommandError>> {
    crate::follow::until_final(bus, state, command_id, wait, is_final).await
}

fn is_final(command: &ContainerCommand) -> bool {
    command.status.is_some_and(|status| status.is_final())
}
