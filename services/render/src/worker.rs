//! The render worker (`nebula worker render`): runs on a GPU node, takes that node's render
//! work from the WORK stream, drives the backend (ComfyUI, or the simulated GPU), stores the
//! outputs in the artifact store and reports every step as commands on the job.
//!
//! - Each of `slots` loops holds at most one job, so a node never runs more than `slots`.
//! - While a job runs the delivery is kept alive with progress acks: a long render is not
//!   redelivered. A worker that dies mid-job leaves its delivery unacked; it is redelivered
//!   after `ack_wait` and the same attempt runs again (its `Start` is accepted again).
//! - A job that moved on (cancelled, or requeued to another node after this one was thought
//!   lost) refuses this worker's reports, so it completes exactly once.
//! - Failures the backend calls retryable (ComfyUI unreachable, or died mid-job) wait for the
//!   backend to answer again — the delivery kept alive, for at most `outage_wait_secs` — and
//!   then the job runs again as a new attempt (`RenderCommand::Retry`; the last attempt fails
//!   instead), its reason the original cause, not the last "connection refused". An outage
//!   burns no attempts: only runs do. A backend that does not come back fails the job.
//! - A worker that cannot report is retried with backoff; after the last delivery the work
//!   goes to the DLQ.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bus::consumer::{ConsumerSpec, Delivery, Outcome};
use bus::remote::Remote;
use bus::store::CommandMeta;
use bus::{Bus, ReadFrom, StreamName};
use cqrs_es::AggregateError;
use domain::render::{RenderCommand, RenderError, RenderJob};
use events::render::{Artifact, Provenance, RenderJobEvent, WorkerHeartbeat};
use events::{Actor, DomainEvent};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendError, InputImage, RenderRequest};
use crate::dispatcher::{WorkItem, work_subject};
use artifacts::{ArtifactStore, png_size};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// Jobs this worker runs at once.
    pub slots: u32,
    /// Deliveries of one job on this node before it fails for good (and goes to the DLQ).
    pub max_deliveries: i64,
    /// How long a delivery may go without a sign of life before JetStream redelivers it.
    pub ack_wait_secs: f64,
    pub heartbeat_secs: f64,
    /// Delay before the first retry of a failed run; doubles for each one after.
    pub retry_backoff_secs: f64,
    /// How long a job waits for its backend to come back after it went away mid-job (a
    /// supervised ComfyUI takes 10-20 s to restart).
    pub outage_wait_secs: f64,
}

impl WorkerConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=64).contains(&self.slots) {
            problems.push(format!("slots must be 1..=64, got {}", self.slots));
        }
        if self.max_deliveries < 1 {
            problems.push("max_deliveries must be at least 1".to_owned());
        }
        for (name, secs) in [
            ("ack_wait_secs", self.ack_wait_secs),
            ("heartbeat_secs", self.heartbeat_secs),
            ("retry_backoff_secs", self.retry_backoff_secs),
            ("outage_wait_secs", self.outage_wait_secs),
        ] {
            if !(secs.is_finite() && secs > 0.0) {
                problems.push(format!(
                    "{name} must be a positive number of seconds, got {secs}"
                ));
            }
        }
        problems
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            slots: 2,
            max_deliveries: 3,
            ack_wait_secs: 30.0,
            heartbeat_secs: 2.0,
            retry_backoff_secs: 2.0,
            outage_wait_secs: 300.0,
        }
    }
}

pub(crate) struct Worker {
    bus: Bus,
    node_id: String,
    backend: Arc<dyn Backend>,
    store: ArtifactStore,
    config: WorkerConfig,
    /// The control plane decides every report (this node never writes the event log).
    jobs: Remote<RenderJob>,
    /// Cancel switches of the jobs running here, by job id.
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
}

enum Report {
    Done,
    /// The job moved on without us (cancelled, requeued elsewhere, already finished).
    Obsolete(String),
    Retry(String),
}

impl Worker {
    pub(crate) fn new(
        bus: Bus,
        node_id: String,
        backend: Arc<dyn Backend>,
        store: ArtifactStore,
        config: WorkerConfig,
    ) -> Self {
        Self {
            jobs: Remote::new(bus.clone(), &node_id),
            bus,
            node_id,
            backend,
            store,
            config,
            running: Arc::default(),
        }
    }

    /// Spawns its loops on the context: `slots` consumers of this node's work, the heartbeat,
    /// and the watch for cancelled jobs.
    pub(crate) fn start(self, ctx: &service::Context) {
        let this = Arc::new(self);
        tracing::info!(node = %this.node_id, backend = this.backend.name(), slots = this.config.slots, "render worker running");
        let worker = Arc::clone(&this);
        ctx.spawn("render-heartbeat", move |cancel| {
            Arc::clone(&worker).heartbeats(cancel)
        });
        let worker = Arc::clone(&this);
        ctx.spawn("render-cancel-watch", move |cancel| {
            Arc::clone(&worker).watch_cancellations(cancel)
        });
        for _ in 0..this.config.slots.max(1) {
            let worker = Arc::clone(&this);
            ctx.spawn("render-worker", move |cancel| {
                Arc::clone(&worker).consume(cancel)
            });
        }
    }

    fn spec(&self) -> ConsumerSpec {
        let mut spec = ConsumerSpec::new(
            StreamName::Work,
            events::subjects::render_consumer(&self.node_id),
        );
        spec.filter_subject = Some(work_subject(&self.node_id));
        spec.max_deliver = self.config.max_deliveries;
        spec.max_ack_pending = i64::from(self.config.slots.max(1));
        spec.ack_wait = Duration::from_secs_f64(self.config.ack_wait_secs);
        let first = self.config.retry_backoff_secs.clamp(0.01, 3600.0);
        spec.backoff = (0..6)
            .map(|n| Duration::from_secs_f64((first * f64::from(1 << n)).min(3600.0)))
            .collect();
        spec
    }

    async fn consume(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        self.bus
            .consume_json::<WorkItem, _, _>(self.spec(), cancel.clone(), |item, delivery| {
                let this = Arc::clone(&self);
                let delivery = delivery.clone();
                let shutdown = cancel.clone();
                async move {
                    tokio::select! {
                        outcome = this.handle(item, &delivery) => outcome,
                        // Stopping mid-job: leave the work for the next start of this node.
                        () = shutdown.cancelled() => Outcome::Retry("worker stopped mid-job".into()),
                    }
                }
            })
            .await?;
        Ok(())
    }

    async fn heartbeats(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut interval =
            tokio::time::interval(Duration::from_secs_f64(self.config.heartbeat_secs.max(0.1)));
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = interval.tick() => {}
            }
            let health = tokio::time::timeout(Duration::from_secs(5), self.backend.health()).await;
            let (ready, device) = match health {
                Ok(Ok(device)) => (true, Some(device)),
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "backend not ready");
                    (false, None)
                }
                Err(_) => (false, None),
            };
            let running = self
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len() as u32;
            let beat = WorkerHeartbeat {
                node_id: self.node_id.clone(),
                backend: self.backend.name().to_owned(),
                slots: self.config.slots,
                running,
                vram_free_mib: device.map(|d| d.vram_free_mib),
                vram_total_mib: device.map(|d| d.vram_total_mib),
                ready,
            };
            let subject = events::subjects::telemetry(&self.node_id, WorkerHeartbeat::KIND);
            let id = format!("wk-{}-{}", self.node_id, uuid::Uuid::now_v7());
            let payload = serde_json::to_vec(&beat).unwrap_or_default();
            if let Err(err) = self
                .bus
                .publish_raw(subject, id, Vec::new(), payload.into())
                .await
            {
                tracing::warn!(error = %err, "failed to publish the render worker heartbeat");
            }
        }
    }

    /// Interrupts jobs running here when the log says they were cancelled.
    async fn watch_cancellations(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let filter = events::subjects::events_of_type(RenderJobEvent::AGGREGATE_TYPE);
        let mut reader = self
            .bus
            .read(StreamName::Events, ReadFrom::New, Some(filter))
            .await?;
        loop {
            let message = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                message = reader.next() => message,
            };
            let message = match message {
                Some(message) => message?,
                None => anyhow::bail!("the cancellation reader ended"),
            };
            let Ok(commit) = message.decode_commit() else {
                continue;
            };
            for envelope in commit {
                if envelope.event_type == "render.job_cancelled"
                    && let Some(token) = self
                        .running
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&envelope.aggregate_id)
                {
                    tracing::info!(job_id = %envelope.aggregate_id, "job cancelled; interrupting it");
                    token.cancel();
                }
            }
        }
    }

    fn meta(&self, item: &WorkItem) -> CommandMeta {
        CommandMeta {
            correlation_id: item.correlation_id,
            causation_id: None,
            actor: Actor::Service(format!("render-worker@{}", self.node_id)),
        }
    }

    async fn report(&self, item: &WorkItem, command: RenderCommand) -> Report {
        match self
            .jobs
            .execute(&item.job_id, command, self.meta(item))
            .await
        {
            Ok(()) => Report::Done,
            Err(AggregateError::UserError(
                err @ (RenderError::StaleAttempt { .. }
                | RenderError::InvalidTransition(..)
                | RenderError::NotFound),
            )) => Report::Obsolete(err.to_string()),
            Err(err) => Report::Retry(err.to_string()),
        }
    }

    async fn handle(&self, item: WorkItem, delivery: &Delivery) -> Outcome {
        let job_id = item.job_id.clone();
        let token = CancellationToken::new();
        {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if running.contains_key(&job_id) {
                // A duplicate of work already running here (a republished assignment).
                return Outcome::Ack;
            }
            running.insert(job_id.clone(), token.clone());
        }
        // Off the running list however this ends (also when the future is dropped).
        struct Running<'a>(&'a Mutex<HashMap<String, CancellationToken>>, String);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&self.1);
            }
        }
        let _running = Running(&self.running, job_id);
        self.run_job(&item, delivery, token).await
    }

    async fn run_job(
        &self,
        item: &WorkItem,
        delivery: &Delivery,
        token: CancellationToken,
    ) -> Outcome {
        let start = RenderCommand::Start {
            node_id: self.node_id.clone(),
            attempt: item.attempt,
            backend: self.backend.name().to_owned(),
        };
        match self.report(item, start).await {
            Report::Done => {}
            Report::Obsolete(why) => {
                tracing::info!(job_id = %item.job_id, attempt = item.attempt, reason = %why, "work is obsolete; dropping it");
                return Outcome::Ack;
            }
            Report::Retry(why) => return Outcome::Retry(format!("could not start: {why}")),
        }
        let mut inputs = Vec::new();
        for name in item.mode.required_images() {
            let Some(image) = item.params.image(name) else {
                continue;
            };
            match self.store.get(&image.sha256).await {
                Ok(Some(bytes)) => inputs.push(InputImage {
                    param: (*name).to_owned(),
                    sha256: image.sha256.clone(),
                    bytes,
                }),
                Ok(None) => {
                    return self
                        .fail(
                            item,
                            format!("{name} {} is not in the artifact store", image.sha256),
                            false,
                        )
                        .await;
                }
                Err(err) => return Outcome::Retry(format!("artifact store: {err}")),
            }
        }
        let request = RenderRequest {
            job_id: item.job_id.clone(),
            mode: item.mode,
            params: item.params.clone(),
            inputs,
        };
        let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(None::<(u32, u32)>);
        let progress = move |value: u32, max: u32| {
            progress_tx.send_replace(Some((value, max)));
        };
        let run = self.backend.run(&request, &progress, token.clone());
        tokio::pin!(run);
        let keepalive_every =
            Duration::from_secs_f64((self.config.ack_wait_secs / 3.0).clamp(0.2, 10.0));
        let mut keepalive = tokio::time::interval(keepalive_every);
        let mut last_report: Option<(Instant, u32, u32)> = None;
        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                _ = keepalive.tick() => {
                    if let Err(err) = delivery.in_progress().await {
                        tracing::warn!(job_id = %item.job_id, error = %err, "progress ack failed");
                    }
                }
                changed = progress_rx.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let Some((value, max)) = *progress_rx.borrow_and_update() else { continue };
                    // A progress event per step is plenty; more than 4 a second is noise. A new
                    // measure (the backend began the job, then its sampler counts its steps)
                    // is always told.
                    let due = last_report.is_none_or(|(at, last, last_max)| {
                        value == max
                            || max != last_max
                            || (value != last && at.elapsed() >= Duration::from_millis(250))
                    });
                    if due && max > 0 && value <= max {
                        last_report = Some((Instant::now(), value, max));
                        let command = RenderCommand::ReportProgress { attempt: item.attempt, value, max };
                        if let Report::Obsolete(why) = self.report(item, command).await {
                            tracing::info!(job_id = %item.job_id, reason = %why, "job moved on mid-run; stopping it");
                            token.cancel();
                        }
                        let _ = delivery.in_progress().await;
                    }
                }
            }
        };
        match result {
            Ok(output) => {
                let mut artifacts = Vec::new();
                for (index, image) in output.images.iter().enumerate() {
                    let (sha, _) = match self.store.put(&image.bytes).await {
                        Ok(stored) => stored,
                        Err(err) => return Outcome::Retry(format!("artifact store: {err}")),
                    };
                    let (extension, size) = match image.content_type.as_str() {
                        "video/mp4" => ("mp4", Some((item.params.width, item.params.height))),
                        "image/jpeg" => ("jpg", None),
                        "image/webp" => ("webp", None),
                        _ => ("png", png_size(&image.bytes)),
                    };
                    if let Err(err) = self
                        .store
                        .link_job(&item.job_id, index, &sha, extension)
                        .await
                    {
                        return Outcome::Retry(format!("artifact store: {err}"));
                    }
                    let (width, height) = size.unwrap_or((0, 0));
                    artifacts.push(Artifact {
                        sha256: sha,
                        bytes: image.bytes.len() as u64,
                        content_type: image.content_type.clone(),
                        width,
                        height,
                        filename: image.filename.clone(),
                    });
                }
                let provenance = Provenance {
                    workflow_hash: output.workflow_hash,
                    model: item.params.model_used(item.mode),
                    seed: item.params.seed,
                    node_id: self.node_id.clone(),
                    backend: self.backend.name().to_owned(),
                    trigger: item.trigger.clone(),
                    correlation_id: item.correlation_id.to_string(),
                };
                let complete = RenderCommand::Complete {
                    attempt: item.attempt,
                    artifacts,
                    provenance,
                };
                match self.report(item, complete).await {
                    Report::Done => {
                        tracing::info!(job_id = %item.job_id, attempt = item.attempt, "render job completed");
                        Outcome::Ack
                    }
                    Report::Obsolete(why) => {
                        tracing::info!(job_id = %item.job_id, reason = %why, "finished work nobody waits for any more; discarding");
                        Outcome::Ack
                    }
                    Report::Retry(why) => {
                        Outcome::Retry(format!("could not record completion: {why}"))
                    }
                }
            }
            Err(BackendError::Interrupted) if token.is_cancelled() => Outcome::Ack,
            Err(err @ BackendError::Interrupted) => {
                self.fail(item, format!("{err} outside Nebula"), false)
                    .await
            }
            Err(err) if err.is_retryable() => self.ride_out(item, delivery, &token, err).await,
            Err(err) => self.fail(item, err.to_string(), false).await,
        }
    }

    /// The backend went away mid-job: waits, the delivery kept alive, until it answers its
    /// health check again (at most `outage_wait_secs`), then asks for the job to run again as a
    /// new attempt. Whatever happens, the reason recorded is `cause`, the first failure.
    async fn ride_out(
        &self,
        item: &WorkItem,
        delivery: &Delivery,
        token: &CancellationToken,
        cause: BackendError,
    ) -> Outcome {
        let cause = cause.to_string();
        tracing::warn!(job_id = %item.job_id, attempt = item.attempt, error = %cause, "the backend went away mid-job; waiting for it");
        let deadline = Instant::now() + Duration::from_secs_f64(self.config.outage_wait_secs);
        let mut pause = Duration::from_secs_f64(self.config.retry_backoff_secs.clamp(0.01, 5.0));
        loop {
            let healthy = matches!(
                tokio::time::timeout(Duration::from_secs(5), self.backend.health()).await,
                Ok(Ok(_))
            );
            if healthy {
                break;
            }
            if Instant::now() >= deadline {
                let reason = format!(
                    "{cause} (the {} backend did not come back within {:.0} s)",
                    self.backend.name(),
                    self.config.outage_wait_secs
                );
                return self.fail(item, reason, true).await;
            }
            tokio::select! {
                // Cancelled while waiting: nothing runs, the cancellation is recorded already.
                () = token.cancelled() => return Outcome::Ack,
                // A wait between health checks (doubling to 5 s), not a guess at timing.
                () = tokio::time::sleep(pause) => {}
            }
            let _ = delivery.in_progress().await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        let retry = RenderCommand::Retry {
            attempt: item.attempt,
            reason: format!(
                "the {} backend failed mid-job ({cause}); it answers again, so the job runs again",
                self.backend.name()
            ),
        };
        match self.report(item, retry).await {
            Report::Done | Report::Obsolete(_) => Outcome::Ack,
            Report::Retry(why) => Outcome::Retry(format!("could not ask to run again: {why}")),
        }
    }

    async fn fail(&self, item: &WorkItem, reason: String, retryable: bool) -> Outcome {
        tracing::warn!(job_id = %item.job_id, reason = %reason, "render job failed");
        let command = RenderCommand::Fail {
            attempt: item.attempt,
            reason,
            retryable,
        };
        match self.report(item, command).await {
            Report::Done | Report::Obsolete(_) => Outcome::Ack,
            Report::Retry(why) => Outcome::Retry(format!("could not record failure: {why}")),
        }
    }
}
