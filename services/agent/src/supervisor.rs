//! The node's services, supervised ([`supervise::Supervisor`]): every change of state is
//! recorded (`service.state_changed`, through the control plane's relay) and kept in
//! [`Services`], which the agent's `/services` endpoint and the control plane's questions read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use bus::remote::Remote;
use bus::store::CommandMeta;
use chrono::Utc;
use domain::service::{NodeServices, RecordServiceState};
use events::service::{ServiceStateChanged, ServiceStatus};
use events::{Actor, NodeId};
use supervise::{Change, Record};

/// Every supervised service's live state, by name.
#[derive(Clone, Default)]
pub(crate) struct Services(Arc<Mutex<BTreeMap<String, ServiceStatus>>>);

impl Services {
    pub(crate) fn all(&self) -> Vec<ServiceStatus> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn set(&self, status: ServiceStatus) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(status.name.clone(), status);
    }
}

/// One service's changes: into [`Services`] and onto the log.
pub(crate) struct Recorder {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) node_id: NodeId,
    pub(crate) events: Remote<NodeServices>,
    pub(crate) services: Services,
}

impl Record for Recorder {
    async fn record(&self, change: Change) {
        let Change {
            state,
            pid,
            restarts,
            reason,
        } = change;
        self.services.set(ServiceStatus {
            name: self.name.clone(),
            kind: self.kind.to_owned(),
            state,
            restarts,
            pid,
            reason: reason.clone(),
            since: Utc::now(),
        });
        let change = RecordServiceState(ServiceStateChanged {
            service: self.name.clone(),
            kind: self.kind.to_owned(),
            state,
            restarts,
            pid,
            reason,
        });
        let meta = CommandMeta::new(Actor::Node(self.node_id.to_string()));
        if let Err(err) = self
            .events
            .execute(self.node_id.as_str(), change, meta)
            .await
        {
            tracing::warn!(service = %self.name, error = %err, "a service state change was not recorded");
        }
    }
}
