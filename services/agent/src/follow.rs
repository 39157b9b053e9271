//! Followed container logs: while a viewer keeps asking (a lease of some seconds, renewed), the
//! agent streams a container's new lines to `nebula.logs.<node>.<follow_id>` in small batches,
//! at most `bytes_per_sec` of them: what a chattier container writes beyond that is counted and
//! left out (`skipped_bytes`), so one noisy log cannot flood the bus or the viewer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bollard::query_parameters::LogsOptionsBuilder;
use bus::Bus;
use events::NodeId;
use events::container::{FOLLOW_QUERY, FollowQuestion, LogBatch, LogLine};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Follows one agent serves at once.
const MAX_FOLLOWS: usize = 32;
/// How often lines are sent (and at most how many bytes in one message).
const BATCH_EVERY: Duration = Duration::from_millis(100);
const BATCH_BYTES: usize = 64 * 1024;

/// One follow's lease: until when it runs, and how to stop it.
struct Lease {
    until: Arc<Mutex<Instant>>,
    stop: CancellationToken,
}

pub(crate) struct Follows {
    pub(crate) bus: Bus,
    pub(crate) node_id: NodeId,
    pub(crate) host: String,
    pub(crate) bytes_per_sec: u64,
    leases: Mutex<HashMap<String, Lease>>,
}

impl Follows {
    pub(crate) fn new(bus: Bus, node_id: NodeId, host: String, bytes_per_sec: u64) -> Self {
        Self {
            bus,
            node_id,
            host,
            bytes_per_sec,
            leases: Mutex::default(),
        }
    }

    /// Answers the control plane's follow questions until `cancel` fires (then every follow
    /// stops).
    pub(crate) async fn serve(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let this = &self;
        let answered = self
            .bus
            .answer(
                self.node_id.as_str(),
                FOLLOW_QUERY,
                cancel.clone(),
                |question: FollowQuestion| this.ask(question, cancel.clone()),
            )
            .await;
        for (_, lease) in self
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
        {
            lease.stop.cancel();
        }
        answered?;
        Ok(())
    }

    async fn ask(
        self: &Arc<Self>,
        question: FollowQuestion,
        cancel: CancellationToken,
    ) -> Result<Value, String> {
        question.validate()?;
        let until = Instant::now() + Duration::from_secs(u64::from(question.seconds));
        {
            let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(lease) = leases.get(&question.follow_id) {
                if question.seconds == 0 {
                    lease.stop.cancel();
                    leases.remove(&question.follow_id);
                    return Ok(json!({ "following": false }));
                }
                *lease.until.lock().unwrap_or_else(PoisonError::into_inner) = until;
                return Ok(json!({ "following": true }));
            }
            if question.seconds == 0 {
                return Ok(json!({ "following": false }));
            }
            if leases.len() >= MAX_FOLLOWS {
                return Err(format!(
                    "node {} already streams {MAX_FOLLOWS} logs",
                    self.node_id
                ));
            }
        }
        let docker = crate::connect_docker(&self.host).await?;
        docker
            .inspect_container(&question.container, None)
            .await
            .map_err(|err| format!("docker: {}", crate::docker_message(&err)))?;
        let lease = Lease {
            until: Arc::new(Mutex::new(until)),
            stop: cancel.child_token(),
        };
        let (until, stop) = (lease.until.clone(), lease.stop.clone());
        self.leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(question.follow_id.clone(), lease);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let follow_id = question.follow_id.clone();
            this.follow(docker, question, until, stop).await;
            this.leases
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&follow_id);
        });
        Ok(json!({ "following": true }))
    }

    async fn follow(
        &self,
        docker: bollard::Docker,
        question: FollowQuestion,
        until: Arc<Mutex<Instant>>,
        stop: CancellationToken,
    ) {
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .tail(&question.tail.to_string())
            .build();
        let mut stream = docker.logs(&question.container, Some(options));
        let mut bucket = common::Bucket::new(self.bytes_per_sec);
        let mut batch = LogBatch {
            lines: Vec::new(),
            skipped_bytes: 0,
            ended: None,
        };
        let mut batch_bytes = 0;
        let mut tick = tokio::time::interval(BATCH_EVERY);
        let ended = loop {
            let flush = tokio::select! {
                () = stop.cancelled() => break None,
                _ = tick.tick() => {
                    if Instant::now() > *until.lock().unwrap_or_else(PoisonError::into_inner) {
                        break None; // nobody renewed the lease: the viewer has gone
                    }
                    true
                }
                output = stream.next() => match output {
                    None => break Some(format!("{} stopped", question.container)),
                    Some(Err(err)) => break Some(format!("docker: {}", crate::docker_message(&err))),
                    Some(Ok(output)) => {
                        let Some((kind, message)) = crate::log_text(output) else { continue };
                        for text in message.lines() {
                            let size = text.len() as u64 + 1;
                            if bucket.take(size) {
                                batch_bytes += text.len();
                                batch.lines.push(LogLine { stream: kind.to_owned(), text: text.to_owned() });
                            } else {
                                batch.skipped_bytes += size;
                            }
                        }
                        batch_bytes >= BATCH_BYTES
                    }
                },
            };
            if flush && (!batch.lines.is_empty() || batch.skipped_bytes > 0) {
                self.send(&question.follow_id, &mut batch).await;
                batch_bytes = 0;
            }
        };
        batch.ended = Some(ended.unwrap_or_else(|| "the follow ended".to_owned()));
        self.send(&question.follow_id, &mut batch).await;
    }

    async fn send(&self, follow_id: &str, batch: &mut LogBatch) {
        if let Err(err) = self
            .bus
            .send_log(self.node_id.as_str(), follow_id, batch)
            .await
        {
            tracing::warn!(error = %err, "a followed log's lines were not sent");
        }
        batch.lines.clear();
        batch.skipped_bytes = 0;
    }
}
