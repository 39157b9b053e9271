//! The live hub: one reader of EVENTS and TELEMETRY per gateway, fanned out to every websocket
//! client through a bounded broadcast ring. The hub never waits for a client: a client that
//! falls a whole ring behind is told so and disconnected.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use bus::{Bus, ReadFrom, StoredMessage, StreamName};
use events::StreamSeq;
use futures::StreamExt;
use service::Context;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// One frame, serialized once for every client.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// EVENTS stream sequence for event frames; `None` for telemetry.
    pub(crate) seq: Option<StreamSeq>,
    pub(crate) text: Utf8Bytes,
    /// The API token this commit revoked, by name: websockets opened with it are closed.
    pub(crate) revokes: Option<String>,
}

impl Frame {
    /// Whether this frame ends the session of `principal` (its token was revoked).
    pub(crate) fn revokes(&self, principal: &crate::Principal) -> bool {
        self.revokes.as_deref() == Some(principal.name.as_str())
            && principal.name != sagas::access::BOOTSTRAP_NAME
    }
}

struct Inner {
    sender: broadcast::Sender<Arc<Frame>>,
    /// The last EVENTS sequence broadcast; updated under the same lock as each send so a new
    /// subscriber knows exactly where its live feed starts.
    head: Mutex<StreamSeq>,
    clients: AtomicUsize,
    /// Fires when the gateway shuts down: every client is then told it is going away.
    shutdown: CancellationToken,
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

pub(crate) struct Subscription {
    pub(crate) receiver: broadcast::Receiver<Arc<Frame>>,
    /// Every event frame after this sequence will arrive on `receiver`.
    pub(crate) head: StreamSeq,
    hub: Hub,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.inner.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    /// Starts reading both streams from their current ends.
    pub async fn start(ctx: &Context, capacity: usize) -> Result<Hub, bus::BusError> {
        let head = ctx.bus.last_seq(StreamName::Events).await?;
        let (sender, _) = broadcast::channel(capacity.max(16));
        let hub = Hub {
            inner: Arc::new(Inner {
                sender,
                head: Mutex::new(head),
                clients: AtomicUsize::new(0),
                shutdown: ctx.cancel.clone(),
            }),
        };
        let (pump, bus) = (hub.clone(), ctx.bus.clone());
        ctx.spawn("hub-events", move |cancel| {
            pump.clone().pump_events(bus.clone(), cancel)
        });
        let (pump, bus) = (hub.clone(), ctx.bus.clone());
        ctx.spawn("hub-telemetry", move |cancel| {
            pump.clone().pump_telemetry(bus.clone(), cancel)
        });
        let (pump, bus) = (hub.clone(), ctx.bus.clone());
        ctx.spawn("hub-bus", move |cancel| {
            pump.clone().pump_connection(bus.clone(), cancel)
        });
        Ok(hub)
    }

    pub fn clients(&self) -> usize {
        self.inner.clients.load(Ordering::Relaxed)
    }

    /// Resolves when the gateway is shutting down.
    pub(crate) async fn shutting_down(&self) {
        self.inner.shutdown.cancelled().await;
    }

    pub(crate) fn subscribe(&self) -> Subscription {
        let head = self
            .inner
            .head
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let receiver = self.inner.sender.subscribe();
        self.inner.clients.fetch_add(1, Ordering::Relaxed);
        Subscription {
            receiver,
            head: *head,
            hub: self.clone(),
        }
    }

    async fn pump_events(self, bus: Bus, cancel: CancellationToken) -> anyhow::Result<()> {
        let resume_from = || {
            let head = self
                .inner
                .head
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            ReadFrom::Seq(StreamSeq(head.0 + 1))
        };
        follow(&bus, StreamName::Events, resume_from, &cancel, |message| {
            self.publish_event(&bus, message)
        })
        .await
    }

    fn publish_event(&self, bus: &Bus, message: &StoredMessage) {
        let mut head = self
            .inner
            .head
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if message.stream_seq <= *head {
            return;
        }
        *head = message.stream_seq;
        match event_frame(message) {
            Some(frame) => {
                // No receivers is fine: nobody is watching.
                let _ = self.inner.sender.send(Arc::new(frame));
            }
            None => bus
                .metrics()
                .inc("nebula_ws_malformed_events_skipped_total"),
        }
    }

    /// Tells every viewer when NATS goes away and comes back (`{"type":"bus","connected":…}`):
    /// on each change, and every second while it is away, so a viewer who arrives meanwhile
    /// learns it too. The live feed has nothing new while the bus is away; this says why.
    async fn pump_connection(self, bus: Bus, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut was = true;
        // A look at the connection each second (a real interval: the client reconnects by
        // itself and says nothing to us).
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let connected = bus.connected();
            if connected != was || !connected {
                let text = format!("{{\"type\":\"bus\",\"connected\":{connected}}}");
                let _ = self.inner.sender.send(Arc::new(Frame {
                    seq: None,
                    text: text.into(),
                    revokes: None,
                }));
            }
            was = connected;
        }
    }

    async fn pump_telemetry(self, bus: Bus, cancel: CancellationToken) -> anyhow::Result<()> {
        // Telemetry is a gauge: after a reopen, only what is new matters.
        follow(
            &bus,
            StreamName::Telemetry,
            || ReadFrom::New,
            &cancel,
            |message| {
                if let Some(frame) = telemetry_frame(message) {
                    let _ = self.inner.sender.send(Arc::new(frame));
                }
            },
        )
        .await
    }
}

/// Reads `stream` from `from()` until `cancel` fires, handing each message to `on_message`. A
/// failed or ended read is an error: the context reopens it (asking `from()` again).
async fn follow(
    bus: &Bus,
    stream: StreamName,
    from: impl Fn() -> ReadFrom,
    cancel: &CancellationToken,
    mut on_message: impl FnMut(&StoredMessage),
) -> anyhow::Result<()> {
    let mut messages = bus.read(stream, from(), None).await?;
    loop {
        let next = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        match next {
            Some(Ok(message)) => on_message(&message),
            Some(Err(err)) => return Err(err.into()),
            None => anyhow::bail!("the {} reader ended", stream.as_str()),
        }
    }
}

/// `{"type":"events","seq":S,"events":[…]}` — the stored commit is embedded as is, after it was
/// checked to be a valid commit.
pub(crate) fn event_frame(message: &StoredMessage) -> Option<Frame> {
    use events::DomainEvent;
    let commit = message.decode_commit().ok()?;
    let revokes = commit
        .iter()
        .find(|envelope| {
            envelope.aggregate_type == events::access::ApiTokenEvent::AGGREGATE_TYPE
                && matches!(
                    envelope.decode::<events::access::ApiTokenEvent>(),
                    Ok(events::access::ApiTokenEvent::Revoked {})
                )
        })
        .map(|envelope| envelope.aggregate_id.clone());
    let events = std::str::from_utf8(&message.payload).ok()?;
    let text = format!(
        "{{\"type\":\"events\",\"seq\":{},\"events\":{events}}}",
        message.stream_seq
    );
    Some(Frame {
        seq: Some(message.stream_seq),
        text: text.into(),
        revokes,
    })
}

fn telemetry_frame(message: &StoredMessage) -> Option<Frame> {
    let heartbeat: events::telemetry::Heartbeat = serde_json::from_slice(&message.payload).ok()?;
    let raw = std::str::from_utf8(&message.payload).ok()?;
    let node_id = serde_json::to_string(heartbeat.node_id.as_str()).ok()?;
    // Ordered by arrival: the stream's sequence and the server's time go with the sample, and
    // how far the agent's clock was off.
    let received_at = serde_json::to_string(&message.published).ok()?;
    let skew = (heartbeat.sampled_at - message.published).num_milliseconds();
    let text = format!(
        "{{\"type\":\"telemetry\",\"node_id\":{node_id},\"telemetry_seq\":{},\"received_at\":{received_at},\"clock_skew_ms\":{skew},\"heartbeat\":{raw}}}",
        message.stream_seq.0
    );
    Some(Frame {
        seq: None,
        text: text.into(),
        revokes: None,
    })
}
