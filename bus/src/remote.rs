//! Commands a node sends to the control plane's aggregates.
//!
//! Only the control plane writes the event log. A node's agent and render worker decide nothing
//! themselves: they send each command as a request on `nebula.cmd.<node id>.<aggregate type>`,
//! a subject only that node's credentials may publish to, so the subject says which node asks.
//! The control plane's relay ([`serve`]) checks that the node may issue the command on that
//! aggregate (the aggregate's [`NodePolicy`]: its own node, the jobs placed on it), executes it
//! against the aggregate like any other command, and replies with the outcome. [`Remote`] has
//! the same `execute` as `store::execute`, so a caller handles refusals, conflicts and an
//! unreachable control plane exactly as before.
//!
//! A reply that is lost (the relay executed, the node timed out) makes the node send the
//! command again; the aggregates refuse what was already done (a second `Complete` is an
//! invalid transition, a report for an old attempt is stale), so nothing happens twice.

use std::marker::PhantomData;
use std::time::Duration;

use async_nats::RequestErrorKind;
use cqrs_es::{Aggregate, AggregateError, EventStore};
use events::{Actor, CorrelationId, DomainEvent, EventId};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::store::{CommandMeta, JetStreamStore, commands, execute};
use crate::{Bus, BusError, BusErrorKind};

/// How long a node waits for the control plane to decide a command.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// How long the relay keeps answering after it is told to stop.
const DRAIN: Duration = Duration::from_secs(1);

/// Commands the relay decides at once (each is a few round trips to JetStream).
const CONCURRENCY: usize = 64;

/// Whether node `node_id` may issue `command` on aggregate `aggregate_id`, whose state is
/// `state`; the reason when it may not.
pub type NodePolicy<A> = fn(&A, &str, &str, &<A as Aggregate>::Command) -> Result<(), String>;

#[derive(Serialize, Deserialize)]
struct Request<C> {
    aggregate_id: String,
    command: C,
    actor: Actor,
    correlation_id: CorrelationId,
    causation_id: Option<EventId>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
enum Reply<E> {
    Done,
    /// The aggregate refused the command.
    Refused(E),
    /// Another writer got there first, every time.
    Conflict,
    /// The control plane could not reach its store; try again.
    Unavailable(String),
    /// This node may not issue this command.
    Forbidden(String),
    /// The request could not be read.
    Invalid(String),
}

/// A node's handle on the control plane's aggregates of type `A`.
pub struct Remote<A> {
    bus: Bus,
    node_id: String,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Remote<A>
where
    A: Aggregate,
    A::Command: Serialize,
    A::Error: DeserializeOwned,
    A::Event: DomainEvent,
{
    /// Commands sent as node `node_id` (its credentials must allow its command subjects).
    pub fn new(bus: Bus, node_id: impl Into<String>) -> Self {
        Self {
            bus,
            node_id: node_id.into(),
            _aggregate: PhantomData,
        }
    }

    /// Has the control plane execute `command` on `aggregate_id`, and waits for its decision.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        meta: CommandMeta,
    ) -> Result<(), AggregateError<A::Error>> {
        let unexpected = |detail: String| {
            AggregateError::UnexpectedError(Box::new(BusError::msg(BusErrorKind::Other, detail)))
        };
        let unavailable = |detail: String| {
            AggregateError::DatabaseConnectionError(Box::new(BusError::msg(
                BusErrorKind::Connect,
                detail,
            )))
        };
        let request = Request {
            aggregate_id: aggregate_id.to_owned(),
            command,
            actor: meta.actor,
            correlation_id: meta.correlation_id,
            causation_id: meta.causation_id,
        };
        let payload = serde_json::to_vec(&request)
            .map_err(|err| unexpected(format!("the command cannot be encoded: {err}")))?;
        let subject =
            events::subjects::command(&self.node_id, <A::Event as DomainEvent>::AGGREGATE_TYPE);
        let asked = tokio::time::timeout(
            ANSWER_WITHIN,
            self.bus.client.request(subject, payload.into()),
        )
        .await;
        let message = match asked {
            Err(_) => {
                return Err(unavailable(format!(
                    "the control plane did not answer within {}s",
                    ANSWER_WITHIN.as_secs()
                )));
            }
            Ok(Err(err)) if err.kind() == RequestErrorKind::NoResponders => {
                return Err(unavailable(
                    "no command relay answers (is the control plane running?)".to_owned(),
                ));
            }
            Ok(Err(err)) => return Err(unavailable(format!("the command was not sent: {err}"))),
            Ok(Ok(message)) => message,
        };
        match serde_json::from_slice::<Reply<A::Error>>(&message.payload) {
            Ok(Reply::Done) => Ok(()),
            Ok(Reply::Refused(err)) => Err(AggregateError::UserError(err)),
            Ok(Reply::Conflict) => Err(AggregateError::AggregateConflict),
            Ok(Reply::Unavailable(why)) => Err(unavailable(why)),
            Ok(Reply::Forbidden(why)) => {
                Err(unexpected(format!("the control plane refused: {why}")))
            }
            Ok(Reply::Invalid(why)) => Err(unexpected(format!(
                "the control plane could not read the command: {why}"
            ))),
            Err(err) => Err(unexpected(format!(
                "unreadable answer from the control plane: {err}"
            ))),
        }
    }
}

/// The control plane's relay for aggregates of type `A`: serves every node's commands (in a
/// queue group, so any number of control-plane processes share them) until `cancel` fires.
pub async fn serve<A>(
    bus: Bus,
    policy: NodePolicy<A>,
    cancel: CancellationToken,
) -> Result<(), BusError>
where
    A: Aggregate<Services = ()> + Clone,
    A::Command: DeserializeOwned + Clone,
    A::Error: Serialize,
    A::Event: DomainEvent,
{
    let aggregate_type = <A::Event as DomainEvent>::AGGREGATE_TYPE;
    let subscription = bus
        .client
        .queue_subscribe(
            events::subjects::commands_of_type(aggregate_type),
            format!("nebula-relay-{aggregate_type}"),
        )
        .await
        .map_err(|err| BusError::with_source(BusErrorKind::Connect, err))?;
    let relay = Relay::<A> {
        commands: commands::<A>(bus.clone(), ()),
        states: JetStreamStore::new(bus.clone()),
        policy,
        bus,
    };
    tracing::info!(aggregate = aggregate_type, "relaying node commands");
    // At shutdown it answers a moment longer, so the nodes of this same process (`nebula up`)
    // can still say goodbye.
    let stopped = async move {
        cancel.cancelled().await;
        tokio::time::sleep(DRAIN).await;
    };
    subscription
        .take_until(stopped)
        .for_each_concurrent(CONCURRENCY, |message| relay.answer(message))
        .await;
    Ok(())
}

struct Relay<A>
where
    A: Aggregate + Clone,
    A::Event: DomainEvent,
{
    bus: Bus,
    commands: crate::store::Commands<A>,
    states: JetStreamStore<A>,
    policy: NodePolicy<A>,
}

impl<A> Relay<A>
where
    A: Aggregate<Services = ()> + Clone,
    A::Command: DeserializeOwned + Clone,
    A::Error: Serialize,
    A::Event: DomainEvent,
{
    async fn answer(&self, message: async_nats::Message) {
        let aggregate_type = <A::Event as DomainEvent>::AGGREGATE_TYPE;
        let Some(reply_to) = message.reply.clone() else {
            self.count("invalid");
            tracing::warn!(subject = %message.subject, "a node command without a reply subject; dropped");
            return;
        };
        let reply = self.decide(&message).await;
        let outcome = match &reply {
            Reply::Done => "done",
            Reply::Refused(_) => "refused",
            Reply::Conflict => "conflict",
            Reply::Unavailable(_) => "unavailable",
            Reply::Forbidden(_) => "forbidden",
            Reply::Invalid(_) => "invalid",
        };
        self.count(outcome);
        if let Reply::Forbidden(why) | Reply::Invalid(why) = &reply {
            tracing::warn!(subject = %message.subject, aggregate = aggregate_type, reason = %why, "node command refused");
        }
        let payload = serde_json::to_vec(&reply).unwrap_or_default();
        if let Err(err) = self.bus.client.publish(reply_to, payload.into()).await {
            tracing::warn!(error = %err, "failed to answer a node command");
        }
    }

    async fn decide(&self, message: &async_nats::Message) -> Reply<A::Error> {
        let Some(events::subjects::Subject::Command { node_id, .. }) =
            events::subjects::parse(&message.subject)
        else {
            return Reply::Invalid(format!("{} is not a command subject", message.subject));
        };
        let request: Request<A::Command> = match serde_json::from_slice(&message.payload) {
            Ok(request) => request,
            Err(err) => return Reply::Invalid(format!("not a command: {err}")),
        };
        // The subject names the node (only its credentials publish there); the actor must be
        // that node or one of its services, so the log says truthfully who asked.
        let speaks_for_node = match &request.actor {
            Actor::Node(node) => node == node_id,
            Actor::Service(service) => service
                .rsplit_once('@')
                .is_some_and(|(_, node)| node == node_id),
            Actor::User(_) => false,
        };
        if !speaks_for_node {
            return Reply::Forbidden(format!("node {node_id} cannot act as {:?}", request.actor));
        }
        let state = match self.states.load_aggregate(&request.aggregate_id).await {
            Ok(mut context) => cqrs_es::AggregateContext::aggregate(&mut context).clone(),
            Err(err) => return Reply::Unavailable(err.to_string()),
        };
        if let Err(why) = (self.policy)(&state, node_id, &request.aggregate_id, &request.command) {
            return Reply::Forbidden(why);
        }
        let meta = CommandMeta {
            correlation_id: request.correlation_id,
            causation_id: request.causation_id,
            actor: request.actor,
        };
        match execute(
            &self.commands,
            &request.aggregate_id,
            request.command,
            meta,
            5,
        )
        .await
        {
            Ok(()) => Reply::Done,
            Err(AggregateError::UserError(err)) => Reply::Refused(err),
            Err(AggregateError::AggregateConflict) => Reply::Conflict,
            Err(err) => Reply::Unavailable(err.to_string()),
        }
    }

    fn count(&self, outcome: &str) {
        self.bus.metrics.add(
            "nebula_relay_commands_total",
            &[
                ("aggregate", <A::Event as DomainEvent>::AGGREGATE_TYPE),
                ("outcome", outcome),
            ],
            1.0,
        );
    }
}
