//! The dispatcher: places queued render jobs on GPU nodes.
//!
//! Its state is a fold of the log (render job and queue events, from its checkpoint on) plus
//! live telemetry (worker and agent heartbeats), so a restarted dispatcher knows exactly what
//! it knew. Decisions are commands on the aggregates: an assignment that raced with a cancel
//! or another dispatcher is refused by the job's own subject, never applied twice.
//!
//! A job goes to a node whose render worker is alive, has a free slot (at most
//! `max_per_node` jobs assigned or running there), and reports free VRAM that fits the job's
//! estimate. Jobs are taken by priority, then in submission order. A node whose worker has
//! been silent for `node_timeout` is lost: its jobs go back to the queue as a new attempt. A job
//! a live node has not started within `assign_timeout` goes back too (its work message was not
//! taken: a stuck worker), so no job waits on a work message until WORK's `max_age` drops it
//! unrecorded. A job back in the queue before its node started it goes to another live node
//! when there is one: the node that did not take it is chosen again only when it is the only
//! one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::store::{CommandMeta, Commands, commands, execute};
use bus::{Bus, ReadFrom, StreamName};
use domain::render::{QUEUE_ID, QueueCommand, RenderCommand, RenderError, RenderJob, RenderQueue};
use events::render::{
    RenderJobEvent, RenderMode, RenderParams, RenderQueueEvent, RenderStatus, Trigger,
    WorkerHeartbeat,
};
use events::telemetry::Heartbeat;
use events::{Actor, CorrelationId, DomainEvent, EventEnvelope, EventId};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// `nebula.work.render.<node>`: a node's render work.
pub fn work_subject(node_id: &str) -> String {
    events::subjects::render_work(node_id)
}

/// What a worker receives: enough to run the job without reading the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    pub job_id: String,
    pub attempt: u32,
    pub mode: RenderMode,
    pub params: RenderParams,
    pub trigger: Trigger,
    pub correlation_id: CorrelationId,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// Most render jobs assigned to or running on one node at once.
    pub max_per_node: u32,
    /// A worker silent this long is lost, and its jobs requeued.
    #[serde(with = "humantime_secs")]
    pub node_timeout: Duration,
    /// A job assigned to a live node that has not started it within this long is requeued
    /// (recorded, with the reason) as a new attempt.
    #[serde(with = "humantime_secs")]
    pub assign_timeout: Duration,
    /// How often placement and recovery run when nothing else wakes them.
    #[serde(with = "humantime_secs")]
    pub tick: Duration,
    /// How often the fold's checkpoint is saved (sooner after 1,000 events), so a restart reads
    /// only the events since.
    #[serde(with = "humantime_secs")]
    pub checkpoint_every: Duration,
}

impl Config {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_per_node == 0 {
            problems.push("max_per_node must be at least 1".to_owned());
        }
        if self.node_timeout.is_zero() || self.tick.is_zero() || self.assign_timeout.is_zero() {
            problems
                .push("node_timeout, assign_timeout and tick must be longer than zero".to_owned());
        }
        problems
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_per_node: 2,
            node_timeout: Duration::from_secs(15),
            assign_timeout: Duration::from_secs(600),
            checkpoint_every: Duration::from_secs(30),
            tick: Duration::from_secs(1),
        }
    }
}

/// Durations in config files as (fractional) seconds.
mod humantime_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(value.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobView {
    status: RenderStatus,
    priority: i32,
    submitted_seq: u64,
    vram_mib: u64,
    node_id: Option<String>,
    /// When this dispatcher saw its assignment (at its fold, for one made before a restart).
    #[serde(skip)]
    assigned_at: Option<Instant>,
    attempt: u32,
    /// The node it was last assigned to and that did not start it before it went back to the
    /// queue (a stuck worker, or one lost before it began).
    #[serde(default)]
    untaken_on: Option<String>,
    mode: RenderMode,
    params: RenderParams,
    trigger: Trigger,
    correlation_id: CorrelationId,
    last_event: EventId,
}

#[derive(Debug, Clone)]
struct NodeView {
    seen: Instant,
    slots: u32,
    ready: bool,
    vram_free_mib: Option<u64>,
    vram_total_mib: Option<u64>,
    /// From the node agent's heartbeat: the freest GPU's free memory.
    agent_vram_free_mib: Option<u64>,
}

/// The fold's checkpoint (`fold.render-dispatcher`): the jobs it still tracks, the places
/// still held, whether the queue is paused.
#[derive(Default, Serialize, Deserialize)]
struct Saved {
    jobs: HashMap<String, JobView>,
    admitted: Vec<String>,
    paused: bool,
}

const FOLD: &str = "render-dispatcher";
/// Bump when [`Saved`]'s shape changes: an older checkpoint is then ignored.
const FOLD_FORMAT: u32 = 1;

#[derive(Default)]
struct State {
    jobs: HashMap<String, JobView>,
    admitted: BTreeMap<String, Instant>,
    paused: bool,
    nodes: HashMap<String, NodeView>,
}

impl State {
    fn from_saved(saved: Saved) -> State {
        let now = Instant::now();
        let mut jobs = saved.jobs;
        for job in jobs.values_mut() {
            if job.status == RenderStatus::Assigned {
                job.assigned_at = Some(now);
            }
        }
        State {
            jobs,
            admitted: saved.admitted.into_iter().map(|id| (id, now)).collect(),
            paused: saved.paused,
            nodes: HashMap::new(),
        }
    }

    fn saved(&self) -> Saved {
        Saved {
            jobs: self.jobs.clone(),
            admitted: self.admitted.keys().cloned().collect(),
            paused: self.paused,
        }
    }

    fn apply_event(&mut self, envelope: &EventEnvelope, stream_seq: u64) {
        match envelope.aggregate_type.as_str() {
            t if t == RenderJobEvent::AGGREGATE_TYPE => {
                let Ok(event) = envelope.decode::<RenderJobEvent>() else {
                    return;
                };
                let id = envelope.aggregate_id.clone();
                if let RenderJobEvent::Requested(requested) = &event {
                    self.jobs.insert(
                        id.clone(),
                        JobView {
                            status: RenderStatus::Queued,
                            priority: requested.priority,
                            submitted_seq: stream_seq,
                            vram_mib: requested.vram_mib,
                            node_id: None,
                            assigned_at: None,
                            attempt: 0,
                            untaken_on: None,
                            mode: requested.mode,
                            params: requested.params.clone(),
                            trigger: requested.trigger.clone(),
                            correlation_id: envelope.correlation_id,
                            last_event: envelope.event_id,
                        },
                    );
                }
                let Some(job) = self.jobs.get_mut(&id) else {
                    return;
                };
                job.last_event = envelope.event_id;
                match event {
                    RenderJobEvent::Requested(_) => {}
                    RenderJobEvent::Queued(queued) => {
                        if job.status == RenderStatus::Assigned {
                            job.untaken_on.clone_from(&job.node_id);
                        }
                        job.status = RenderStatus::Queued;
                        job.priority = queued.priority;
                        job.node_id = None;
                    }
                    RenderJobEvent::PriorityChanged(changed) => job.priority = changed.priority,
                    RenderJobEvent::Assigned(assigned) => {
                        job.status = RenderStatus::Assigned;
                        job.node_id = Some(assigned.node_id);
                        job.assigned_at = Some(Instant::now());
                        job.attempt = assigned.attempt;
                    }
                    RenderJobEvent::Started(_) | RenderJobEvent::Progressed(_) => {
                        job.status = RenderStatus::Running;
                    }
                    RenderJobEvent::Completed(_) => job.status = RenderStatus::Completed,
                    RenderJobEvent::Failed(_) => job.status = RenderStatus::Failed,
                    RenderJobEvent::Cancelled(_) => job.status = RenderStatus::Cancelled,
                    RenderJobEvent::Shared(_)
                    | RenderJobEvent::ShareRevoked(_)
                    | RenderJobEvent::Deleted(_) => {}
                }
                // A finished job holding no queue place needs nothing more: forgotten at once,
                // so a fold of a long backlog holds only the jobs still open.
                if job.status.is_terminal() && !self.admitted.contains_key(&id) {
                    self.jobs.remove(&id);
                }
            }
            t if t == RenderQueueEvent::AGGREGATE_TYPE => {
                let Ok(event) = envelope.decode::<RenderQueueEvent>() else {
                    return;
                };
                match event {
                    RenderQueueEvent::Admitted(admitted) => {
                        self.admitted.insert(admitted.job_id, Instant::now());
                    }
                    RenderQueueEvent::Released(released) => {
                        self.admitted.remove(&released.job_id);
                        if self
                            .jobs
                            .get(&released.job_id)
                            .is_some_and(|job| job.status.is_terminal())
                        {
                            self.jobs.remove(&released.job_id);
                        }
                    }
                    RenderQueueEvent::Paused(_) => self.paused = true,
                    RenderQueueEvent::Resumed => self.paused = false,
                }
            }
            _ => {}
        }
    }

    fn load(&self, node_id: &str) -> (u32, u64) {
        let mut count = 0;
        let mut pending_vram = 0;
        for job in self.jobs.values() {
            if job.node_id.as_deref() == Some(node_id)
                && matches!(job.status, RenderStatus::Assigned | RenderStatus::Running)
            {
                count += 1;
                if job.status == RenderStatus::Assigned {
                    // Not started yet: its memory is not in the node's reported use.
                    pending_vram += job.vram_mib;
                }
            }
        }
        (count, pending_vram)
    }

    /// The node `job` should go to: alive and ready, below its job limit, with free VRAM (as
    /// both its worker and its agent report it, less what assigned jobs will take) that fits;
    /// among those, the one with most free slots, then most free VRAM. The node that did not
    /// take the job last time is left out while another live one could ever hold it (busy or
    /// not: the job waits for it).
    fn choose_node(&self, job: &JobView, max_per_node: u32, timeout: Duration) -> Option<String> {
        let alive = |node: &NodeView| node.ready && node.seen.elapsed() <= timeout;
        let avoid = job.untaken_on.as_deref().filter(|untaken| {
            self.nodes.iter().any(|(id, node)| {
                id != untaken
                    && alive(node)
                    && node
                        .vram_total_mib
                        .is_none_or(|total| total >= job.vram_mib)
            })
        });
        let mut best: Option<(String, u32, u64)> = None;
        for (node_id, node) in &self.nodes {
            if !alive(node) || avoid == Some(node_id.as_str()) {
                continue;
            }
            let (running, pending_vram) = self.load(node_id);
            let cap = node.slots.min(max_per_node);
            if running >= cap {
                continue;
            }
            let free = [node.vram_free_mib, node.agent_vram_free_mib]
                .into_iter()
                .flatten()
                .min()
                .map(|free| free.saturating_sub(pending_vram));
            if free.is_some_and(|free| free < job.vram_mib) {
                continue;
            }
            let free = free.unwrap_or(u64::MAX);
            let slots_left = cap - running;
            let better = best.as_ref().is_none_or(|(name, s, f)| {
                (slots_left, free, std::cmp::Reverse(node_id)) > (*s, *f, std::cmp::Reverse(name))
            });
            if better {
                best = Some((node_id.clone(), slots_left, free));
            }
        }
        best.map(|(node_id, _, _)| node_id)
    }

    /// Queued jobs in the order they should run.
    fn queue(&self) -> Vec<(String, JobView)> {
        let mut queued: Vec<(String, JobView)> = self
            .jobs
            .iter()
            .filter(|(_, job)| job.status == RenderStatus::Queued)
            .map(|(id, job)| (id.clone(), job.clone()))
            .collect();
        queued.sort_by(|(_, a), (_, b)| {
            b.priority
                .cmp(&a.priority)
                .then(a.submitted_seq.cmp(&b.submitted_seq))
        });
        queued
    }
}

/// Starts placing jobs (run one per system). Its state is rebuilt from the log at every
/// (re)start, so the context restarting it after a failure loses nothing.
pub fn start(ctx: &service::Context, config: Config) {
    let dispatcher = Arc::new(Dispatcher {
        jobs: commands::<RenderJob>(ctx.bus.clone(), ()),
        queue: commands::<RenderQueue>(ctx.bus.clone(), ()),
        bus: ctx.bus.clone(),
        config,
    });
    ctx.spawn("render-dispatcher", move |cancel| {
        let dispatcher = Arc::clone(&dispatcher);
        async move { dispatcher.run_once(&cancel).await }
    });
}

struct Dispatcher {
    bus: Bus,
    config: Config,
    jobs: Commands<RenderJob>,
    queue: Commands<RenderQueue>,
}

impl Dispatcher {
    async fn run_once(&self, cancel: &CancellationToken) -> anyhow::Result<()> {
        let started = Instant::now();
        // From the last checkpoint, when there is one; and only the render jobs' and the
        // queue's events: a restart reads what it folds since then, not the whole log.
        let (saved, log) = self
            .bus
            .open_fold::<Saved>(
                FOLD,
                FOLD_FORMAT,
                vec![
                    events::subjects::events_of_type(RenderJobEvent::AGGREGATE_TYPE),
                    events::subjects::events_of_type(RenderQueueEvent::AGGREGATE_TYPE),
                ],
            )
            .await?;
        let mut log = log.save_every(self.config.checkpoint_every);
        let mut state = State::from_saved(saved);
        let mut telemetry = self
            .bus
            .read(
                StreamName::Telemetry,
                ReadFrom::New,
                Some(events::subjects::TELEMETRY_ALL.to_owned()),
            )
            .await?;
        let mut republished = false;
        let mut tick = tokio::time::interval(self.config.tick);
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
                                    state.apply_event(envelope, message.stream_seq.0);
                                }
                            }
                            Err(err) => tracing::warn!(stream_seq = %message.stream_seq, error = %err, "undecodable commit skipped"),
                        }
                    }
                    // Place as soon as a change arrives, but not once per message of a backlog.
                    if !log.settled(message.as_ref()) {
                        continue;
                    }
                }
                message = telemetry.next() => {
                    let message = message.ok_or_else(|| anyhow::anyhow!("telemetry reader ended"))??;
                    observe_telemetry(&mut state, &message.subject, &message.payload);
                    continue;
                }
                _ = tick.tick() => {}
            }
            if !log.caught_up() {
                continue;
            }
            if !republished {
                // Assignments made before a restart may never have reached their node.
                self.republish_assigned(&state).await;
                republished = true;
            }
            // Nothing is declared lost before a full timeout of listening has passed.
            if started.elapsed() >= self.config.node_timeout {
                self.requeue_lost(&mut state).await;
            }
            self.release_admissions(&mut state).await;
            self.place(&mut state).await;
            if log.due() {
                log.save(&state.saved()).await;
            }
        }
    }

    fn meta(job: &JobView) -> CommandMeta {
        CommandMeta {
            correlation_id: job.correlation_id,
            causation_id: Some(job.last_event),
            actor: Actor::Service("render-dispatcher".to_owned()),
        }
    }

    async fn publish_work(&self, job_id: &str, job: &JobView) -> Result<(), bus::BusError> {
        let Some(node_id) = &job.node_id else {
            return Ok(());
        };
        let item = WorkItem {
            job_id: job_id.to_owned(),
            attempt: job.attempt,
            mode: job.mode,
            params: job.params.clone(),
            trigger: job.trigger.clone(),
            correlation_id: job.correlation_id,
        };
        let payload = serde_json::to_vec(&item).unwrap_or_default();
        self.bus
            .publish_raw(
                work_subject(node_id),
                format!("render-{job_id}-{}", job.attempt),
                Vec::new(),
                payload.into(),
            )
            .await?;
        Ok(())
    }

    async fn republish_assigned(&self, state: &State) {
        for (id, job) in &state.jobs {
            if job.status == RenderStatus::Assigned
                && let Err(err) = self.publish_work(id, job).await
            {
                tracing::warn!(job_id = %id, error = %err, "failed to republish an assignment");
            }
        }
    }

    async fn requeue_lost(&self, state: &mut State) {
        let timeout = self.config.node_timeout;
        let untaken = self.config.assign_timeout;
        let lost: Vec<(String, JobView, String)> = state
            .jobs
            .iter()
            .filter(|(_, job)| matches!(job.status, RenderStatus::Assigned | RenderStatus::Running))
            .filter_map(|(id, job)| {
                let node = job.node_id.as_deref()?;
                let reason = if state
                    .nodes
                    .get(node)
                    .is_none_or(|view| view.seen.elapsed() > timeout)
                {
                    format!("node {node} lost (no render worker heartbeat for {timeout:?})")
                } else if job.status == RenderStatus::Assigned
                    && job.assigned_at.is_some_and(|at| at.elapsed() > untaken)
                {
                    format!(
                        "not started on node {node} within {untaken:?} of its assignment (its work \
                         message was not taken)"
                    )
                } else {
                    return None;
                };
                Some((id.clone(), job.clone(), reason))
            })
            .collect();
        for (id, job, reason) in lost {
            let node = job.node_id.clone().unwrap_or_default();
            tracing::warn!(job_id = %id, node = %node, attempt = job.attempt, reason = %reason, "requeueing a job");
            match execute(
                &self.jobs,
                &id,
                RenderCommand::Requeue { reason },
                Self::meta(&job),
                3,
            )
            .await
            {
                Ok(()) => {
                    if let Some(view) = state.jobs.get_mut(&id) {
                        if view.status == RenderStatus::Assigned {
                            view.untaken_on = view.node_id.take();
                        }
                        view.status = RenderStatus::Queued;
                        view.node_id = None;
                    }
                }
                Err(err) => tracing::warn!(job_id = %id, error = %err, "requeue refused"),
            }
        }
    }

    /// Gives back places held by jobs that left the queue, or were never created (a
    /// submitter that crashed between admission and submission).
    async fn release_admissions(&self, state: &mut State) {
        let stale: Vec<String> = state
            .admitted
            .iter()
            .filter(|(id, since)| match state.jobs.get(*id) {
                Some(job) => job.status != RenderStatus::Queued,
                None => since.elapsed() > Duration::from_secs(30),
            })
            .map(|(id, _)| id.clone())
            .collect();
        // Finished jobs need nothing more once their place is given back: forget them.
        let admitted = &state.admitted;
        state
            .jobs
            .retain(|id, job| !job.status.is_terminal() || admitted.contains_key(id));
        for id in stale {
            let meta = CommandMeta::new(Actor::Service("render-dispatcher".to_owned()));
            match execute(
                &self.queue,
                QUEUE_ID,
                QueueCommand::Release { job_id: id.clone() },
                meta,
                5,
            )
            .await
            {
                Ok(()) => {
                    state.admitted.remove(&id);
                }
                Err(err) => {
                    tracing::warn!(job_id = %id, error = %err, "failed to release a queue place")
                }
            }
        }
    }

    async fn place(&self, state: &mut State) {
        if state.paused {
            return;
        }
        let timeout = self.config.node_timeout;
        for (id, job) in state.queue() {
            let Some(node_id) = state.choose_node(&job, self.config.max_per_node, timeout) else {
                continue;
            };
            let result = execute(
                &self.jobs,
                &id,
                RenderCommand::Assign {
                    node_id: node_id.clone(),
                },
                Self::meta(&job),
                3,
            )
            .await;
            match result {
                Ok(()) => {
                    let Some(view) = state.jobs.get_mut(&id) else {
                        continue;
                    };
                    view.status = RenderStatus::Assigned;
                    view.node_id = Some(node_id.clone());
                    view.attempt += 1;
                    let view = view.clone();
                    tracing::info!(job_id = %id, node = %node_id, attempt = view.attempt, "render job assigned");
                    if let Err(err) = self.publish_work(&id, &view).await {
                        // The next start of the dispatcher republishes it; until then retry.
                        tracing::warn!(job_id = %id, error = %err, "failed to publish work; retrying");
                        let _ = self.publish_work(&id, &view).await;
                    }
                }
                Err(cqrs_es::AggregateError::UserError(
                    RenderError::InvalidTransition(..) | RenderError::NotFound,
                )) => {
                    // Cancelled or assigned meanwhile; the log will tell us.
                }
                Err(err) => tracing::warn!(job_id = %id, error = %err, "assignment failed"),
            }
        }
    }
}

fn observe_telemetry(state: &mut State, subject: &str, payload: &[u8]) {
    let Some(events::subjects::Subject::Telemetry { node_id, kind }) =
        events::subjects::parse(subject)
    else {
        return;
    };
    if kind == WorkerHeartbeat::KIND {
        let Ok(beat) = serde_json::from_slice::<WorkerHeartbeat>(payload) else {
            return;
        };
        let agent = state
            .nodes
            .get(node_id)
            .and_then(|view| view.agent_vram_free_mib);
        state.nodes.insert(
            node_id.to_owned(),
            NodeView {
                seen: Instant::now(),
                slots: beat.slots,
                ready: beat.ready,
                vram_free_mib: beat.vram_free_mib,
                vram_total_mib: beat.vram_total_mib,
                agent_vram_free_mib: agent,
            },
        );
    } else if kind == Heartbeat::KIND {
        let Ok(beat) = serde_json::from_slice::<Heartbeat>(payload) else {
            return;
        };
        let free = beat
            .gpus
            .iter()
            .map(|gpu| gpu.memory_total_bytes.saturating_sub(gpu.memory_used_bytes) >> 20)
            .max();
        if let Some(view) = state.nodes.get_mut(node_id) {
            view.agent_vram_free_mib = free;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(vram_mib: u64) -> JobView {
        JobView {
            status: RenderStatus::Queued,
            priority: 0,
            submitted_seq: 1,
            vram_mib,
            node_id: None,
            assigned_at: None,
            attempt: 0,
            untaken_on: None,
            mode: RenderMode::Txt2img,
            params: RenderParams::default(),
            trigger: Trigger {
                source: "api".into(),
                reference: None,
            },
            correlation_id: CorrelationId::new(),
            last_event: EventId::new(),
        }
    }

    fn worker(node: &str, vram_free_mib: u64) -> Vec<u8> {
        serde_json::to_vec(&WorkerHeartbeat {
            node_id: node.into(),
            backend: "comfyui".into(),
            slots: 2,
            running: 0,
            vram_free_mib: Some(vram_free_mib),
            vram_total_mib: Some(24_576),
            ready: true,
        })
        .unwrap()
    }

    fn agent(node: &str, used_gib: u64) -> Vec<u8> {
        serde_json::to_vec(&Heartbeat {
            node_id: node.parse().unwrap(),
            sampled_at: chrono::Utc::now(),
            sample_seq: 1,
            cpu_percent: 0.0,
            load_avg_1m: 0.0,
            memory_used_bytes: 0,
            memory_total_bytes: 0,
            disk_used_bytes: 0,
            disk_total_bytes: 0,
            gpus: vec![events::telemetry::GpuSample {
                index: 0,
                utilization_percent: None,
                memory_used_bytes: used_gib << 30,
                memory_total_bytes: 24 << 30,
                temperature_c: None,
                power_watts: None,
            }],
            uptime_secs: 1,
        })
        .unwrap()
    }

    #[test]
    fn the_agent_s_view_of_gpu_memory_counts_too() {
        let mut state = State::default();
        let timeout = Duration::from_secs(15);
        for node in ["a", "b"] {
            observe_telemetry(
                &mut state,
                &events::subjects::telemetry(node, WorkerHeartbeat::KIND),
                &worker(node, 20_000),
            );
        }
        // Something outside Nebula holds 20 GiB on node a's GPU: only the agent sees it.
        let heartbeat = |node| events::subjects::telemetry(node, Heartbeat::KIND);
        observe_telemetry(&mut state, &heartbeat("a"), &agent("a", 20));
        observe_telemetry(&mut state, &heartbeat("b"), &agent("b", 2));
        assert_eq!(
            state.choose_node(&job(8_000), 2, timeout).as_deref(),
            Some("b")
        );
        // Nothing has room for 30 GiB.
        assert_eq!(state.choose_node(&job(30_000), 2, timeout), None);
        // A full node is skipped whatever its memory.
        for i in 0..2 {
            let mut running = job(1);
            running.status = RenderStatus::Running;
            running.node_id = Some("b".into());
            state.jobs.insert(format!("r{i}"), running);
        }
        assert_eq!(
            state.choose_node(&job(1_000), 2, timeout).as_deref(),
            Some("a")
        );
        assert_eq!(state.choose_node(&job(8_000), 2, timeout), None);
    }

    /// A job back in the queue before its node started it goes elsewhere while another live
    /// node exists — even a busy one, which it waits for — and to that node again only when it
    /// is the only one; the fold learns which node that was from the log alone.
    #[test]
    fn a_job_its_node_did_not_take_goes_to_another_node() {
        let mut state = State::default();
        let timeout = Duration::from_secs(15);
        let beat = |state: &mut State, node: &str, free: u64| {
            observe_telemetry(
                state,
                &events::subjects::telemetry(node, WorkerHeartbeat::KIND),
                &worker(node, free),
            );
        };
        beat(&mut state, "stuck", 20_000);
        let event = |seq: u64, event: RenderJobEvent| {
            EventEnvelope::new(
                "j",
                seq,
                &event,
                CorrelationId::new(),
                None,
                Actor::system(),
            )
        };
        let mut requested = job(1_000);
        requested.status = RenderStatus::Queued;
        state.jobs.insert("j".into(), requested);
        state.apply_event(
            &event(
                2,
                RenderJobEvent::Assigned(events::render::RenderAssigned {
                    node_id: "stuck".into(),
                    attempt: 1,
                }),
            ),
            2,
        );
        state.apply_event(
            &event(
                3,
                RenderJobEvent::Queued(events::render::RenderQueued {
                    priority: 0,
                    reason: "not started".into(),
                }),
            ),
            3,
        );
        let requeued = state.jobs["j"].clone();
        assert_eq!(requeued.untaken_on.as_deref(), Some("stuck"));
        assert_eq!(
            state.choose_node(&requeued, 2, timeout).as_deref(),
            Some("stuck"),
            "the only node"
        );
        beat(&mut state, "other", 4_000);
        assert_eq!(
            state.choose_node(&requeued, 2, timeout).as_deref(),
            Some("other"),
            "less free memory, but it may take it"
        );
        for i in 0..2 {
            let mut running = job(1);
            running.status = RenderStatus::Running;
            running.node_id = Some("other".into());
            state.jobs.insert(format!("r{i}"), running);
        }
        assert_eq!(state.choose_node(&requeued, 2, timeout), None, "it waits");
        let mut large = requeued.clone();
        large.vram_mib = 30_000;
        beat(&mut state, "stuck", 40_000);
        assert_eq!(
            state.choose_node(&large, 2, timeout).as_deref(),
            Some("stuck"),
            "no other node could ever hold it"
        );
        assert_eq!(
            state.choose_node(&job(1_000), 2, timeout).as_deref(),
            Some("stuck"),
            "another job may go there"
        );
    }

    /// A fold of a long backlog holds only the jobs still open: a finished job is forgotten as
    /// soon as it holds no queue place (at once, or when its place is given back).
    #[test]
    fn finished_jobs_leave_the_fold_once_they_hold_no_place() {
        let mut state = State::default();
        let job_event = |id: &str, seq: u64, event: RenderJobEvent| {
            EventEnvelope::new(id, seq, &event, CorrelationId::new(), None, Actor::system())
        };
        let queue_event = |seq: u64, event: RenderQueueEvent| {
            EventEnvelope::new(
                QUEUE_ID,
                seq,
                &event,
                CorrelationId::new(),
                None,
                Actor::system(),
            )
        };
        let finished = || {
            RenderJobEvent::Failed(events::render::RenderFailed {
                attempt: 1,
                reason: "done".into(),
                retryable: false,
            })
        };
        for id in ["placed", "free"] {
            state.jobs.insert(id.into(), job(1_000));
        }
        state.apply_event(
            &queue_event(
                1,
                RenderQueueEvent::Admitted(events::render::QueueAdmitted {
                    job_id: "placed".into(),
                    chat_user: None,
                }),
            ),
            1,
        );
        state.apply_event(&job_event("free", 2, finished()), 2);
        state.apply_event(&job_event("placed", 2, finished()), 3);
        assert!(!state.jobs.contains_key("free"), "no place held: forgotten");
        assert!(
            state.jobs.contains_key("placed"),
            "its place is still to be given back"
        );
        state.apply_event(
            &queue_event(
                2,
                RenderQueueEvent::Released(events::render::QueueReleased {
                    job_id: "placed".into(),
                }),
            ),
            4,
        );
        assert!(state.jobs.is_empty());
    }
}
