//! The node aggregate: a machine joining and leaving the fleet.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::node::{NodeDeregistered, NodeEvent, NodeRegistered, NodeTagsEvent};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeCommand {
    /// Announce (or re-announce, after a restart or hardware change) a node's inventory.
    Register(NodeRegistered),
    Deregister {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NodeError {
    #[error("node is not registered")]
    NotRegistered,
    #[error("inventory is invalid: {0}")]
    InvalidInventory(String),
    #[error("invalid tags: {0}")]
    InvalidTags(String),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Node {
    pub registered: bool,
    pub online: bool,
    pub inventory: Option<NodeRegistered>,
}

/// A node speaks only for itself: its agent registers and deregisters its own node
/// (`bus::remote::NodePolicy`).
pub fn node_may(
    _state: &Node,
    node_id: &str,
    aggregate_id: &str,
    _command: &NodeCommand,
) -> Result<(), String> {
    crate::own_node(node_id, aggregate_id, "speak for node")
}

impl Aggregate for Node {
    const TYPE: &'static str = "node";
    type Command = NodeCommand;
    type Event = Event<NodeEvent>;
    type Error = NodeError;
    type Services = ();

    async fn handle(
        &mut self,
        command: NodeCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), NodeError> {
        match command {
            NodeCommand::Register(inventory) => {
                if inventory.hostname.trim().is_empty() {
                    return Err(NodeError::InvalidInventory("hostname is empty".to_owned()));
                }
                sink.write(Event(NodeEvent::Registered(inventory)), self)
                    .await;
            }
            NodeCommand::Deregister { reason } => {
                if !self.online {
                    return Err(NodeError::NotRegistered);
                }
                sink.write(
                    Event(NodeEvent::Deregistered(NodeDeregistered { reason })),
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Event<NodeEvent>) {
        match event.0 {
            NodeEvent::Registered(inventory) => {
                self.registered = true;
                self.online = true;
                self.inventory = Some(inventory);
            }
            NodeEvent::Deregistered(_) => self.online = false,
        }
    }
}

/// A node's tags, set by admins (never by the node: no relay carries this aggregate).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct NodeTags {
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeTagsCommand {
    Set(Vec<String>),
}

impl Aggregate for NodeTags {
    const TYPE: &'static str = "node_tags";
    type Command = NodeTagsCommand;
    type Event = Event<NodeTagsEvent>;
    type Error = NodeError;
    type Services = ();

    async fn handle(
        &mut self,
        command: NodeTagsCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), NodeError> {
        let NodeTagsCommand::Set(tags) = command;
        events::node::validate_tags(&tags).map_err(NodeError::InvalidTags)?;
        sink.write(Event(NodeTagsEvent::Set { tags }), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<NodeTagsEvent>) {
        let NodeTagsEvent::Set { tags } = event.0;
        self.tags = tags;
    }
}
