//! The control plane's side of commands that act on a node. An actor's request is recorded on
//! its command aggregate (`container.command_requested`, by the gateway or the CLI); the router
//! here sends it to the node's own WORK subject, where only that node's agent may take it, and
//! expires what nobody started before its deadline (`container.command_expired`, with the
//! reason), so a request never runs hours late.
//!
//! A create command's environment may name vault secrets (`secret:NAME`); the node's agent asks
//! for their values while it carries the command out (`nebula.ask.<node>.container_secrets`),
//! and they are given only to the node the command is for, only while it is started — never
//! written to the log or to WORK.
//!
//! The router's state is a fold of the command events (few and small: one aggregate per
//! request); it is rebuilt at every start, and requests made before a restart are sent again
//! (the agent refuses a second start, and JetStream's dedupe window drops recent duplicates).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bus::Bus;
use bus::store::{CommandMeta, Commands, JetStreamStore, commands, execute};
use chrono::{DateTime, Utc};
use cqrs_es::{AggregateError, EventStore};
use domain::container::{CommandStatus, ContainerCommand, ContainerCommandCommand};
use events::container::{
    CommandRequested, ContainerAction, ContainerCommandEvent, ContainerWork, RevealedSecrets,
    SECRETS_QUESTION, SecretsQuestion,
};
use events::{Actor, CorrelationId, DomainEvent, EventEnvelope, EventId};
use serde::{Deserialize, Serialize};
use service::Context;
use tokio_util::sync::CancellationToken;

/// The router's settings (`[fleet]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How often requests past their deadline are looked for.
    pub expiry_check_secs: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            expiry_check_secs: 1.0,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.expiry_check_secs.is_finite() && (0.05..=60.0).contains(&self.expiry_check_secs))
        {
            problems.push(format!(
                "expiry_check_secs must be 0.05..=60, got {}",
                self.expiry_check_secs
            ));
        }
        problems
    }
}

/// Starts the command router and the secrets answerer (each restarted by the context if it
/// fails).
pub fn start(ctx: &Context, config: Config) {
    let secrets = Arc::new(Secrets {
        bus: ctx.bus.clone(),
        state: JetStreamStore::new(ctx.bus.clone()),
        key_source: vault::KeySource::new(ctx.site.vault_key_file.clone()),
        vault: tokio::sync::OnceCell::new(),
    });
    ctx.spawn("container-secrets", move |cancel| {
        let secrets = secrets.clone();
        async move {
            let answerer = &*secrets;
            secrets
                .bus
                .answer_nodes(SECRETS_QUESTION, cancel, |node, question| {
                    answerer.reveal(node, question)
                })
                .await?;
            Ok(())
        }
    });
    let bus = ctx.bus.clone();
    let check = Duration::from_secs_f64(config.expiry_check_secs);
    ctx.spawn("container-router", move |cancel| {
        let router = Router {
            commands: commands(bus.clone(), ()),
            bus: bus.clone(),
            check,
        };
        async move { router.run(cancel).await }
    });
}

/// A request not started yet.
#[derive(Serialize, Deserialize)]
struct Pending {
    requested: CommandRequested,
    correlation_id: CorrelationId,
    event_id: EventId,
}

struct Router {
    bus: Bus,
    commands: Commands<ContainerCommand>,
    check: Duration,
}

impl Router {
    async fn run(&self, cancel: CancellationToken) -> anyhow::Result<()> {
        // The requests nobody started, from the fold's checkpoint on; what was sent is this
        // process's own (sent again after a restart: the agent takes a command once).
        let (mut pending, mut log) = self
            .bus
            .open_fold::<HashMap<String, Pending>>(
                "container-commands",
                1,
                vec![events::subjects::events_of_type(
                    ContainerCommandEvent::AGGREGATE_TYPE,
                )],
            )
            .await?;
        let mut sent: HashSet<String> = HashSet::new();
        let mut tick = tokio::time::interval(self.check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                message = log.next() => {
                    let message = message?;
                    if let Some(message) = &message {
                        match message.decode_commit() {
                            Ok(commit) => {
                                for envelope in &commit {
                                    fold(&mut pending, &mut sent, envelope);
                                }
                            }
                            Err(err) => {
                                tracing::warn!(stream_seq = %message.stream_seq, error = %err, "undecodable commit skipped");
                            }
                        }
                    }
                    // Sent once caught up: a backlog's finished requests are never sent.
                    if log.settled(message.as_ref()) {
                        self.send(&pending, &mut sent).await;
                        log.save(&pending).await;
                    }
                }
                _ = tick.tick() => {
                    // A send that failed (NATS away) is tried again; nothing waits for a new
                    // request to come along first.
                    if log.caught_up() {
                        self.send(&pending, &mut sent).await;
                        log.save(&pending).await;
                    }
                    self.expire(&pending, Utc::now()).await;
                }
            }
        }
    }

    /// Sends every pending request not sent yet to its node's WORK subject.
    async fn send(&self, pending: &HashMap<String, Pending>, sent: &mut HashSet<String>) {
        for (id, request) in pending {
            if sent.contains(id) {
                continue;
            }
            let work = agent_work(id, request);
            let subject = events::subjects::node_work(&request.requested.node_id);
            let payload = match serde_json::to_vec(&work) {
                Ok(payload) => payload,
                Err(err) => {
                    tracing::error!(command_id = %id, error = %err, "a container command could not be encoded");
                    continue;
                }
            };
            match self
                .bus
                .publish_raw(
                    subject,
                    format!("container-{id}"),
                    Vec::new(),
                    payload.into(),
                )
                .await
            {
                Ok(_) => {
                    sent.insert(id.clone());
                }
                Err(err) => {
                    tracing::warn!(command_id = %id, error = %err, "a container command was not sent yet; trying again")
                }
            }
        }
    }

    /// Records the expiry of every request past its deadline (one started meanwhile refuses).
    async fn expire(&self, pending: &HashMap<String, Pending>, now: DateTime<Utc>) {
        for (id, request) in pending {
            if request.requested.expires_at > now {
                continue;
            }
            let reason = format!(
                "no agent on node {} took it before {}: is its agent running, with Docker enabled?",
                request.requested.node_id,
                request.requested.expires_at.format("%H:%M:%S UTC")
            );
            let meta = CommandMeta {
                correlation_id: request.correlation_id,
                causation_id: Some(request.event_id),
                actor: Actor::Service("container-router".to_owned()),
            };
            match execute(
                &self.commands,
                id,
                ContainerCommandCommand::Expire { reason },
                meta,
                3,
            )
            .await
            {
                Ok(()) | Err(AggregateError::UserError(_)) => {}
                Err(err) => {
                    tracing::warn!(command_id = %id, error = %err, "an expiry was not recorded yet")
                }
            }
        }
    }
}

/// Answers the nodes' questions for the secrets their create commands name.
struct Secrets {
    bus: Bus,
    state: JetStreamStore<ContainerCommand>,
    key_source: vault::KeySource,
    vault: tokio::sync::OnceCell<vault::Vault>,
}

impl Secrets {
    async fn reveal(
        &self,
        node: String,
        question: SecretsQuestion,
    ) -> Result<RevealedSecrets, String> {
        let id = &question.command_id;
        let command = self
            .state
            .load_aggregate(id)
            .await
            .map_err(|err| format!("the event store is unavailable: {err}"))?
            .state()
            .clone();
        let Some(requested) = command.requested else {
            return Err(format!("no container command {id}"));
        };
        if requested.node_id != node || node.is_empty() {
            tracing::warn!(command_id = %id, asker = %node, "a node asked for another node's secrets");
            return Err(format!("container command {id} is not for node {node}"));
        }
        if command.status != Some(CommandStatus::Started) {
            return Err(format!("container command {id} is not being carried out"));
        }
        let ContainerAction::Create { spec, .. } = &requested.action else {
            return Err(format!("container command {id} names no secrets"));
        };
        let vault = self
            .vault
            .get_or_try_init(|| vault::Vault::open(&self.bus, &self.key_source, false))
            .await
            .map_err(|err| format!("the vault cannot be opened: {err}"))?;
        let mut values = std::collections::BTreeMap::new();
        for name in spec.secrets() {
            let revealed = vault
                .get(name)
                .await
                .map_err(|err| format!("secret {name} cannot be read: {err}"))?
                .ok_or_else(|| format!("the vault has no secret {name}"))?;
            values.insert(name.to_owned(), revealed.value.expose().to_owned());
        }
        tracing::info!(command_id = %id, node = %node, secrets = ?values.keys().collect::<Vec<_>>(), "secrets given to a container command");
        Ok(RevealedSecrets { values })
    }
}

/// The work message for the node's agent.
fn agent_work(id: &str, request: &Pending) -> ContainerWork {
    ContainerWork {
        command_id: id.to_owned(),
        action: request.requested.action.clone(),
        correlation_id: request.correlation_id,
        causation_id: request.event_id,
    }
}

/// The router's fold: requests in, and out once started, finished or expired.
fn fold(
    pending: &mut HashMap<String, Pending>,
    sent: &mut HashSet<String>,
    envelope: &EventEnvelope,
) {
    let Ok(event) = envelope.decode::<ContainerCommandEvent>() else {
        return; // a type this version does not know
    };
    let id = envelope.aggregate_id.clone();
    match event {
        ContainerCommandEvent::Requested(requested) => {
            pending.insert(
                id,
                Pending {
                    requested,
                    correlation_id: envelope.correlation_id,
                    event_id: envelope.event_id,
                },
            );
        }
        ContainerCommandEvent::Started {}
        | ContainerCommandEvent::Completed { .. }
        | ContainerCommandEvent::Failed { .. }
        | ContainerCommandEvent::Expired { .. } => {
            pending.remove(&id);
            sent.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn envelope(id: &str, event: &ContainerCommandEvent) -> EventEnvelope {
        EventEnvelope::new(id, 1, event, CorrelationId::new(), None, Actor::system())
    }

    #[test]
    fn the_fold_keeps_what_nobody_started() {
        let (mut pending, mut sent) = (HashMap::new(), HashSet::new());
        let requested = ContainerCommandEvent::Requested(CommandRequested {
            node_id: "gpu-1".into(),
            action: ContainerAction::Start {
                container: "web".into(),
            },
            expires_at: Utc::now(),
        });
        fold(&mut pending, &mut sent, &envelope("a", &requested));
        fold(&mut pending, &mut sent, &envelope("b", &requested));
        sent.insert("a".to_owned());
        fold(
            &mut pending,
            &mut sent,
            &envelope("a", &ContainerCommandEvent::Started {}),
        );
        assert_eq!(pending.keys().collect::<Vec<_>>(), ["b"]);
        assert!(sent.is_empty());
        let work = serde_json::to_value(agent_work("b", &pending["b"])).unwrap();
        assert_eq!(work["action"]["action"], "start");
        assert_eq!(work["action"]["container"], "web");
        assert_eq!(work["command_id"], "b");
    }
}
