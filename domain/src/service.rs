//! What a node's agent records about the services it supervises (aggregate id: the node id).
//! The agent is the only writer, through the control plane's relay.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::service::{NodeServicesEvent, ServiceStateChanged};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct NodeServices {
    pub changes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordServiceState(pub ServiceStateChanged);

/// A node's agent records its own services only (`bus::remote::NodePolicy`).
pub fn services_node_may(
    _state: &NodeServices,
    node_id: &str,
    aggregate_id: &str,
    _command: &RecordServiceState,
) -> Result<(), String> {
    crate::own_node(node_id, aggregate_id, "record the services of node")
}

impl Aggregate for NodeServices {
    const TYPE: &'static str = "node_services";
    type Command = RecordServiceState;
    type Event = Event<NodeServicesEvent>;
    type Error = crate::render::NeverFails;
    type Services = ();

    async fn handle(
        &mut self,
        command: RecordServiceState,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), crate::render::NeverFails> {
        sink.write(Event(NodeServicesEvent::StateChanged(command.0)), self)
            .await;
        Ok(())
    }

    fn apply(&mut self, _event: Event<NodeServicesEvent>) {
        self.changes += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_records_only_its_own_services() {
        let state = NodeServices::default();
        let command = RecordServiceState(ServiceStateChanged {
            service: "web".into(),
            kind: "command".into(),
            state: events::service::ServiceState::Healthy,
            restarts: 0,
            pid: None,
            reason: "ok".into(),
        });
        assert!(services_node_may(&state, "gpu-1", "gpu-1", &command).is_ok());
        assert!(services_node_may(&state, "gpu-1", "gpu-2", &command).is_err());
    }
}
