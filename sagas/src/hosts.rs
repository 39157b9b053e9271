//! Hosts over SSH as every way in sees them (the gateway's REST and `nebula hosts`): the
//! registry with each host's pinned key and latest metrics, remote commands recorded under the
//! caller's name, and an execution read back with its output.

use std::time::Duration;

use bus::store::{CommandMeta, Commands, JetStreamStore, execute};
use bus::{Bus, BusError, StreamName};
use chrono::{DateTime, Utc};
use cqrs_es::{AggregateError, EventStore};
use domain::host::{ExecStatus, Host, HostExec, HostExecCommand, HostExecError};
use events::DomainEvent;
use events::host::{
    ExecFailure, ExecRequested, HOST_KIND, HostEvent, HostExecEvent, HostKey, HostSample,
    OutputStream,
};
use serde::Serialize;

/// A registered host as the dashboard and the CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub key_secret: String,
    pub allowlist: Vec<String>,
    /// The pinned host key (none before the first contact).
    pub host_key: Option<HostKey>,
    /// A key the host presented instead of the pinned one, refused until an admin accepts it.
    pub key_mismatch: Option<HostKey>,
    /// The latest metrics read (or why they could not be).
    pub sample: Option<HostSample>,
}

/// The host's registry entry, or `None` when it is not registered.
pub async fn load_host(
    state: &JetStreamStore<Host>,
    name: &str,
) -> Result<Option<Host>, AggregateError<domain::host::HostError>> {
    let host = state.load_aggregate(name).await?.state().clone();
    Ok(host.registered.is_some().then_some(host))
}

/// Every registered host, by name, with its latest sample.
pub async fn list_hosts(
    bus: &Bus,
    state: &JetStreamStore<Host>,
) -> Result<Vec<HostView>, AggregateError<domain::host::HostError>> {
    let unexpected = |err: BusError| AggregateError::UnexpectedError(Box::new(err));
    let mut hosts = Vec::new();
    let names = bus
        .aggregate_ids(HostEvent::AGGREGATE_TYPE)
        .await
        .map_err(unexpected)?;
    for name in names {
        let Some(host) = load_host(state, &name).await? else {
            continue;
        };
        let Some(registered) = host.registered else {
            continue;
        };
        let subject = events::subjects::telemetry(&name, HOST_KIND);
        let sample = bus
            .last_on_subject(StreamName::Telemetry, &subject)
            .await
            .map_err(unexpected)?
            .and_then(|message| serde_json::from_slice::<HostSample>(&message.payload).ok());
        hosts.push(HostView {
            name,
            address: registered.address,
            port: registered.port,
            user: registered.user,
            key_secret: registered.key_secret,
            allowlist: registered.allowlist,
            host_key: host.pinned,
            key_mismatch: host.last_mismatch,
            sample,
        });
    }
    Ok(hosts)
}

/// Records a command for `host`; its id (the executor runs it once).
pub async fn request_exec(
    commands: &Commands<HostExec>,
    requested: ExecRequested,
    meta: CommandMeta,
) -> Result<String, AggregateError<HostExecError>> {
    let exec_id = uuid::Uuid::now_v7().to_string();
    execute(
        commands,
        &exec_id,
        HostExecCommand::Request(requested),
        meta,
        3,
    )
    .await?;
    Ok(exec_id)
}

/// The execution once it is finished, or as it stands when `wait` has passed.
pub async fn wait_exec(
    bus: &Bus,
    state: &JetStreamStore<HostExec>,
    exec_id: &str,
    wait: Duration,
) -> Result<HostExec, AggregateError<HostExecError>> {
    crate::follow::until_final(bus, state, exec_id, wait, |exec| {
        exec.status.is_some_and(ExecStatus::is_final)
    })
    .await
}

/// One piece of an execution's output.
#[derive(Debug, Clone, Serialize)]
pub struct OutputChunk {
    pub stream: OutputStream,
    pub text: String,
}

/// An execution read from its events.
#[derive(Debug, Clone, Serialize)]
pub struct ExecView {
    pub exec_id: String,
    pub host: String,
    pub command: String,
    pub timeout_secs: u32,
    pub status: ExecStatus,
    /// Who asked, as the log records it.
    pub requested_by: events::Actor,
    pub requested_at: DateTime<Utc>,
    pub output: Vec<OutputChunk>,
    pub exit_status: Option<u32>,
    pub duration_ms: Option<u64>,
    pub output_bytes: Option<u64>,
    pub truncated: bool,
    pub reason: Option<ExecFailure>,
    pub error: Option<String>,
}

/// The execution `exec_id`, or `None` when there is none.
pub async fn exec_view(bus: &Bus, exec_id: &str) -> Result<Option<ExecView>, BusError> {
    let envelopes = bus
        .aggregate_events(HostExecEvent::AGGREGATE_TYPE, exec_id)
        .await?;
    let mut view: Option<ExecView> = None;
    for envelope in envelopes {
        let Ok(event) = envelope.decode::<HostExecEvent>() else {
            continue;
        };
        if let HostExecEvent::Requested(requested) = &event {
            view = Some(ExecView {
                exec_id: exec_id.to_owned(),
                host: requested.host.clone(),
                command: requested.command.clone(),
                timeout_secs: requested.timeout_secs,
                status: ExecStatus::Requested,
                requested_by: envelope.actor.clone(),
                requested_at: envelope.occurred_at,
                output: Vec::new(),
                exit_status: None,
                duration_ms: None,
                output_bytes: None,
                truncated: false,
                reason: None,
                error: None,
            });
            continue;
        }
        let Some(view) = view.as_mut() else { continue };
        match event {
            HostExecEvent::Requested(_) => {}
            HostExecEvent::Started {} => view.status = ExecStatus::Started,
            HostExecEvent::Output { stream, text } => {
                view.output.push(OutputChunk { stream, text })
            }
            HostExecEvent::Completed {
                exit_status,
                duration_ms,
                output_bytes,
                truncated,
            } => {
                view.status = ExecStatus::Completed;
                view.exit_status = Some(exit_status);
                view.duration_ms = Some(duration_ms);
                view.output_bytes = Some(output_bytes);
                view.truncated = truncated;
            }
            HostExecEvent::Failed {
                reason,
                error,
                duration_ms,
            } => {
                view.status = ExecStatus::Failed;
                view.reason = Some(reason);
                view.error = Some(error);
                view.duration_ms = Some(duration_ms);
            }
        }
    }
    Ok(view)
}
