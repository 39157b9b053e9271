//! Container commands as every way in asks them (the gateway's REST and `nebula containers`):
//! recorded with a deadline under the caller's name, then, when the caller waits, followed on
//! the command's own subject until it is final.

use std::time::Duration;

use bus::store::{CommandMeta, Commands, JetStreamStore, execute};
use bus::{Bus, ReadFrom, StreamName};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::{AggregateError, EventStore};
use domain::container::{ContainerCommand, ContainerCommandCommand, ContainerCommandError};
use events::container::{CommandRequested, ContainerAction, ContainerCommandEvent};
use futures::StreamExt;

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

/// The command's state once it is final, or as it stands when `wait` has passed. It follows
/// the command's own subject from where the loaded state ends, so an outcome is seen as soon as
/// it is stored (no polling, nothing missed in between).
pub async fn wait_container_command(
    bus: &Bus,
    state: &JetStreamStore<ContainerCommand>,
    command_id: &str,
    wait: Duration,
) -> Result<ContainerCommand, AggregateError<ContainerCommandError>> {
    let unexpected = |err: bus::BusError| AggregateError::UnexpectedError(Box::new(err));
    let deadline = tokio::time::Instant::now() + wait;
    let loaded = state.load_aggregate(command_id).await?;
    let mut command = loaded.state().clone();
    if is_final(&command) || wait.is_zero() {
        return Ok(command);
    }
    let subject = events::subjects::event(
        <ContainerCommandEvent as events::DomainEvent>::AGGREGATE_TYPE,
        command_id,
    );
    let mut updates = bus
        .read(
            StreamName::Events,
            ReadFrom::Seq(events::StreamSeq(loaded.last_stream_seq().0 + 1)),
            Some(subject),
        )
        .await
        .map_err(unexpected)?;
    loop {
        let next = match tokio::time::timeout_at(deadline, updates.next()).await {
            Err(_) | Ok(None) => return Ok(command),
            Ok(Some(next)) => next.map_err(unexpected)?,
        };
        for envelope in next.decode_commit().unwrap_or_default() {
            if let Ok(event) = envelope.decode::<ContainerCommandEvent>() {
                command.apply(domain::Event(event));
            }
        }
        if is_final(&command) {
            return Ok(command);
        }
    }
}

fn is_final(command: &ContainerCommand) -> bool {
    command.status.is_some_and(|status| status.is_final())
}
