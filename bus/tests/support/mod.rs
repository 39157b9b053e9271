//! What the bus's test files share: a bus on a test server, node events, a stream read whole.

use std::time::Duration;

use bus::{Bus, BusConfig, NatsAuth, ReadFrom, StreamName};
use events::node::{NodeEvent, NodeRegistered};
use events::{Actor, CorrelationId, EventEnvelope};
use futures::StreamExt;
use testkit::NatsServer;

pub(crate) async fn connect(server: &NatsServer) -> Bus {
    Bus::connect(BusConfig {
        url: server.url(),
        auth: NatsAuth::nkey(server.control_seed()),
        ..Default::default()
    })
    .await
    .expect("failed to connect")
}

pub(crate) fn inventory(hostname: &str) -> NodeRegistered {
    NodeRegistered {
        hostname: hostname.to_owned(),
        os: "Debian GNU/Linux 12".into(),
        kernel: "6.1".into(),
        cpu_model: "test".into(),
        cpu_cores: 4,
        memory_total_bytes: 8 << 30,
        disk_total_bytes: 1 << 40,
        gpus: vec![],
        gpu_source: "none".into(),
        agent_version: "0.0.0".into(),
        agent_url: None,
        capabilities: Vec::new(),
    }
}

/// A `node.registered` envelope for `node`, its `seq`-th event (the hostname says which).
pub(crate) fn registered(node: &str, seq: u64) -> EventEnvelope {
    EventEnvelope::new(
        node,
        seq,
        &NodeEvent::Registered(inventory(&format!("{node}-{seq}"))),
        CorrelationId::new(),
        None,
        Actor::system(),
    )
}

pub(crate) async fn read_all(bus: &Bus, stream: StreamName) -> Vec<bus::StoredMessage> {
    let last = bus.last_seq(stream).await.unwrap();
    if last.0 == 0 {
        return Vec::new();
    }
    let mut messages = bus.read(stream, ReadFrom::Start, None).await.unwrap();
    let mut out = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("read stalled")
    {
        let message = message.unwrap();
        let done = message.stream_seq >= last;
        out.push(message);
        if done {
            break;
        }
    }
    out
}
