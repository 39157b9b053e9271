//! Hosts over SSH, the control plane's side: remote commands carried out once each, and the
//! metrics of every registered host read every interval.
//!
//! The executor is an ordered read of the `host_exec` subjects. Once caught up, every request
//! not started yet is started (`host_exec.started`, refused a second time, so nothing runs
//! twice), run on the host's pooled session, its output recorded in capped chunks, and
//! finished with the exit status or one distinct failure. An execution found started but
//! unfinished when the executor (re)starts was cut off by that restart: it is recorded failed
//! (`interrupted`), never run again.
//!
//! The host key is checked before anything is sent: the first key seen is pinned
//! (`host.key_pinned`); another one is refused and recorded once (`host.key_mismatch`) until an
//! admin accepts it. The private key is read from the vault at each connection, so a rotated
//! key is used at once; it never leaves this process.

pub mod metrics;
mod ssh;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::Bus;
use bus::store::{CommandMeta, Commands, JetStreamStore, commands, execute};
use cqrs_es::{AggregateError, EventStore};
use domain::host::{Host, HostCommand, HostExec, HostExecCommand};
use events::host::{
    ExecFailure, ExecRequested, HOST_KIND, HostError, HostExecEvent, HostSample, OutputStream,
};
use events::{Actor, CorrelationId, DomainEvent, EventEnvelope, EventId};
use serde::{Deserialize, Serialize};
use service::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use ssh::Failure;

/// The SSH side's settings (`[hosts]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How often each host's load, memory and disks are read (0 = never).
    pub metrics_interval_secs: f64,
    /// How long a connection and its login may take.
    pub connect_timeout_secs: f64,
    /// How much of a command's output is recorded; the rest is counted, not kept.
    pub output_cap_bytes: usize,
    /// How many commands run at once, over all hosts.
    pub max_running: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            metrics_interval_secs: 15.0,
            connect_timeout_secs: 10.0,
            output_cap_bytes: 64 * 1024,
            max_running: 16,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let interval = self.metrics_interval_secs;
        if !(interval.is_finite() && (interval == 0.0 || (0.5..=3600.0).contains(&interval))) {
            problems.push(format!(
                "metrics_interval_secs must be 0 or 0.5..=3600, got {interval}"
            ));
        }
        let connect = self.connect_timeout_secs;
        if !(connect.is_finite() && (0.1..=300.0).contains(&connect)) {
            problems.push(format!(
                "connect_timeout_secs must be 0.1..=300, got {connect}"
            ));
        }
        if !(1024..=16 << 20).contains(&self.output_cap_bytes) {
            problems.push(format!(
                "output_cap_bytes must be 1024..=16777216, got {}",
                self.output_cap_bytes
            ));
        }
        if !(1..=256).contains(&self.max_running) {
            problems.push(format!(
                "max_running must be 1..=256, got {}",
                self.max_running
            ));
        }
        problems
    }
}

/// Starts the executor and the metrics reader (each restarted by the context if it fails).
pub fn start(ctx: &Context, config: Config) {
    let hosts = Arc::new(Hosts {
        bus: ctx.bus.clone(),
        pool: ssh::Pool::default(),
        vault: tokio::sync::OnceCell::new(),
        key_source: vault::KeySource::new(ctx.site.vault_key_file.clone()),
        host_state: JetStreamStore::new(ctx.bus.clone()),
        host_commands: commands(ctx.bus.clone(), ()),
        exec_commands: commands(ctx.bus.clone(), ()),
        config,
    });
    let executor = hosts.clone();
    ctx.spawn("host-exec", move |cancel| {
        let hosts = executor.clone();
        async move { hosts.execute_requests(cancel).await }
    });
    if hosts.config.metrics_interval_secs > 0.0 {
        ctx.spawn("host-metrics", move |cancel| {
            let hosts = hosts.clone();
            async move { hosts.read_metrics(cancel).await }
        });
    }
}

const ACTOR: &str = "hosts";

struct Hosts {
    bus: Bus,
    pool: ssh::Pool,
    vault: tokio::sync::OnceCell<Arc<vault::Vault>>,
    key_source: vault::KeySource,
    host_state: JetStreamStore<Host>,
    host_commands: Commands<Host>,
    exec_commands: Commands<HostExec>,
    config: Config,
}

/// A request seen in the log and not finished.
#[derive(serde::Serialize, serde::Deserialize)]
struct Open {
    requested: ExecRequested,
    started: bool,
    correlation_id: CorrelationId,
    event_id: EventId,
}

impl Hosts {
    async fn execute_requests(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        // The requests not finished, from the fold's checkpoint on.
        let (mut open, mut log) = self
            .bus
            .open_fold::<HashMap<String, Open>>(
                "host-execs",
                1,
                vec![events::subjects::events_of_type(
                    HostExecEvent::AGGREGATE_TYPE,
                )],
            )
            .await?;
        let mut taken: HashSet<String> = HashSet::new();
        let mut caught_up = false;
        let mut running = JoinSet::new();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                Some(_) = running.join_next(), if !running.is_empty() => {}
                message = log.next() => {
                    let message = message?;
                    if let Some(message) = &message {
                        for envelope in message.decode_commit().unwrap_or_default() {
                            fold(&mut open, &envelope);
                        }
                    }
                    if !log.settled(message.as_ref()) {
                        continue;
                    }
                    log.save(&open).await;
                    if !caught_up {
                        caught_up = true;
                        // Started before this reader began: cut off by a restart.
                        for (id, request) in open.iter().filter(|(_, r)| r.started) {
                            self.interrupted(id, request).await;
                            taken.insert(id.clone());
                        }
                    }
                }
            }
            if !caught_up {
                continue;
            }
            taken.retain(|id| open.contains_key(id));
            for (id, request) in &open {
                if running.len() >= self.config.max_running {
                    break;
                }
                if !request.started && taken.insert(id.clone()) {
                    let hosts = self.clone();
                    let (id, requested, meta) =
                        (id.clone(), request.requested.clone(), meta(request));
                    running.spawn(async move { hosts.run(&id, &requested, meta).await });
                }
            }
        }
    }

    async fn interrupted(&self, id: &str, request: &Open) {
        let command = HostExecCommand::Fail {
            reason: ExecFailure::Interrupted,
            error: "Nebula's control plane restarted while this command ran; it is not run again"
                .to_owned(),
            duration_ms: 0,
        };
        if let Err(err) = execute(&self.exec_commands, id, command, meta(request), 3).await {
            tracing::warn!(exec_id = %id, error = %err, "an interrupted command was not recorded");
        }
    }

    /// Runs one request: started once, then connected, run and finished.
    async fn run(&self, id: &str, requested: &ExecRequested, meta: CommandMeta) {
        let record = |command: HostExecCommand| {
            let meta = meta.clone();
            async move {
                match execute(&self.exec_commands, id, command, meta, 3).await {
                    Ok(()) => true,
                    Err(err) => {
                        tracing::warn!(exec_id = %id, error = %err, "a host command's step was not recorded");
                        false
                    }
                }
            }
        };
        if !record(HostExecCommand::Start).await {
            return; // started by someone else, or the log is away: not run
        }
        let began = Instant::now();
        let elapsed = || began.elapsed().as_millis() as u64;
        let input = match self.env_input(&requested.env_secrets).await {
            Ok(input) => input,
            Err(failure) => {
                record(fail(failure, elapsed())).await;
                return;
            }
        };
        let session = match self.session(&requested.host).await {
            Ok(session) => session,
            Err(failure) => {
                record(fail(failure, elapsed())).await;
                return;
            }
        };
        let mut chunks = Output::new(self.config.output_cap_bytes);
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let timeout = Duration::from_secs(u64::from(requested.timeout_secs));
        let command = requested.command.clone();
        let runner = async {
            let result = session
                .run(
                    &command,
                    input.expose().as_bytes(),
                    timeout,
                    |stream, data| {
                        let _ = sender.send((stream, data.to_vec()));
                    },
                )
                .await;
            drop(sender);
            result
        };
        // Output is recorded while the command runs: what came every 200 ms, and each full
        // chunk at once.
        let recorder = async {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                let now = tokio::select! {
                    piece = receiver.recv() => match piece {
                        Some((stream, data)) => {
                            chunks.push(stream, &data);
                            Flush::Full
                        }
                        None => Flush::All,
                    },
                    _ = tick.tick() => Flush::Tick,
                };
                for (stream, text) in chunks.ready(now) {
                    record(HostExecCommand::Output { stream, text }).await;
                }
                if now == Flush::All {
                    break;
                }
            }
        };
        let (result, ()) = tokio::join!(runner, recorder);
        let finish = match result {
            Ok(finished) => HostExecCommand::Complete {
                exit_status: finished.exit_status,
                duration_ms: elapsed(),
                output_bytes: chunks.total,
                truncated: chunks.truncated(),
            },
            Err(failure) => {
                if failure.reason == ExecFailure::ConnectionLost {
                    self.pool.forget(&requested.host).await;
                }
                fail(failure, elapsed())
            }
        };
        record(finish).await;
    }

    /// The host's pooled session: its registration and pinned key from the log, its private
    /// key from the vault; the first key seen is pinned, another one recorded and refused.
    async fn session(&self, name: &str) -> Result<Arc<ssh::Session>, Failure> {
        let host = self
            .host_state
            .load_aggregate(name)
            .await
            .map_err(|err| {
                Failure::new(
                    ExecFailure::ConnectionLost,
                    format!("the event store is unavailable: {err}"),
                )
            })?
            .state()
            .clone();
        let Some(registered) = host.registered else {
            self.pool.forget(name).await;
            return Err(Failure::new(
                ExecFailure::UnknownHost,
                format!("host {name} is not registered"),
            ));
        };
        let key = self.private_key(&registered.key_secret).await?;
        let target = ssh::Target {
            name: name.to_owned(),
            registered,
            pinned: host.pinned.clone(),
            key_version: key.version,
        };
        let timeout = Duration::from_secs_f64(self.config.connect_timeout_secs);
        let meta = || CommandMeta::new(Actor::Service(ACTOR.to_owned()));
        match self
            .pool
            .session(&target, key.value.expose(), timeout)
            .await
        {
            ssh::Connected::Ok(session) => {
                if host.pinned.is_none() {
                    let pin = HostCommand::PinFirstKey(session.host_key.clone());
                    match execute(&self.host_commands, name, pin, meta(), 3).await {
                        Ok(()) => {
                            tracing::info!(host = %name, fingerprint = %session.host_key.fingerprint, "host key pinned on first contact")
                        }
                        Err(err) => {
                            // Pinned meanwhile by someone else: connect again against it.
                            self.pool.forget(name).await;
                            return Err(Failure::new(
                                ExecFailure::HostKeyMismatch,
                                format!("the host key of {name} could not be pinned: {err}"),
                            ));
                        }
                    }
                }
                Ok(session)
            }
            ssh::Connected::Mismatch { presented, failure } => {
                tracing::warn!(host = %name, presented = %presented.fingerprint, "host key mismatch: refused");
                let record = HostCommand::RecordMismatch(presented);
                match execute(&self.host_commands, name, record, meta(), 3).await {
                    Ok(()) | Err(AggregateError::UserError(_)) => {}
                    Err(err) => {
                        tracing::warn!(host = %name, error = %err, "a host key mismatch was not recorded")
                    }
                }
                Err(failure)
            }
            ssh::Connected::Failed(failure) => Err(failure),
        }
    }

    /// The `NAME=value` lines of a command's secret environment, read from the vault now.
    async fn env_input(
        &self,
        env_secrets: &BTreeMap<String, String>,
    ) -> Result<common::Secret, Failure> {
        let mut input = String::new();
        for (name, secret) in env_secrets {
            let value = self.secret(secret, ExecFailure::SecretUnavailable).await?;
            let value = value.value.expose();
            if value.contains(['\n', '\r', '\0']) {
                return Err(Failure::new(
                    ExecFailure::SecretUnavailable,
                    format!(
                        "the vault's secret {secret} (for {name}) spans lines, which an env file cannot hold"
                    ),
                ));
            }
            input.push_str(name);
            input.push('=');
            input.push_str(value);
            input.push('\n');
        }
        Ok(common::Secret::new(input))
    }

    async fn private_key(&self, secret: &str) -> Result<vault::Revealed, Failure> {
        self.secret(secret, ExecFailure::KeyUnavailable).await
    }

    /// A vault secret, or a failure for `reason` saying why it cannot be had.
    async fn secret(&self, secret: &str, reason: ExecFailure) -> Result<vault::Revealed, Failure> {
        let unavailable = |message: String| Failure::new(reason, message);
        let vault = self
            .vault
            .get_or_try_init(|| async {
                vault::Vault::open(&self.bus, &self.key_source, false)
                    .await
                    .map(Arc::new)
            })
            .await
            .map_err(|err| unavailable(format!("the vault cannot be opened: {err}")))?;
        match vault.get(secret).await {
            Ok(Some(revealed)) => Ok(revealed),
            Ok(None) => Err(unavailable(format!(
                "the vault has no secret {secret} (set it with `nebula secrets set {secret}`)"
            ))),
            Err(err) => Err(unavailable(format!(
                "the vault's secret {secret} cannot be read: {err}"
            ))),
        }
    }

    /// Reads every registered host's metrics each interval and publishes them as telemetry.
    async fn read_metrics(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut tick =
            tokio::time::interval(Duration::from_secs_f64(self.config.metrics_interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let names = self
                .bus
                .aggregate_ids(events::host::HostEvent::AGGREGATE_TYPE)
                .await?;
            let reads = names.iter().map(|name| self.sample(name));
            for sample in futures::future::join_all(reads).await.into_iter().flatten() {
                let subject = events::subjects::telemetry(&sample.host, HOST_KIND);
                let id = format!(
                    "host-{}-{}",
                    sample.host,
                    sample.at.timestamp_nanos_opt().unwrap_or_default()
                );
                self.bus
                    .publish_raw(subject, id, Vec::new(), serde_json::to_vec(&sample)?.into())
                    .await?;
            }
        }
    }

    /// One host's metrics, or why they could not be read (`None`: not registered any more).
    async fn sample(&self, name: &str) -> Option<HostSample> {
        let mut output = Vec::new();
        let read = async {
            let session = self.session(name).await?;
            let finished = session
                .run(metrics::COMMAND, &[], Duration::from_secs(10), |_, data| {
                    if output.len() < 1 << 20 {
                        output.extend_from_slice(data);
                    }
                })
                .await?;
            if finished.exit_status != 0 {
                return Err(Failure::new(
                    ExecFailure::ConnectionLost,
                    format!("the metrics command exited {}", finished.exit_status),
                ));
            }
            metrics::parse(&String::from_utf8_lossy(&output))
                .map_err(|err| Failure::new(ExecFailure::ConnectionLost, err))
        };
        let result = read.await;
        if let Err(failure) = &result {
            if failure.reason == ExecFailure::UnknownHost {
                return None;
            }
            if failure.reason == ExecFailure::ConnectionLost {
                self.pool.forget(name).await;
            }
        }
        Some(HostSample {
            host: name.to_owned(),
            at: chrono::Utc::now(),
            error: result.as_ref().err().map(|failure| HostError {
                reason: failure.reason,
                message: failure.message.clone(),
            }),
            metrics: result.ok(),
        })
    }
}

fn meta(request: &Open) -> CommandMeta {
    CommandMeta {
        correlation_id: request.correlation_id,
        causation_id: Some(request.event_id),
        actor: Actor::Service(ACTOR.to_owned()),
    }
}

fn fail(failure: Failure, duration_ms: u64) -> HostExecCommand {
    HostExecCommand::Fail {
        reason: failure.reason,
        error: failure.message,
        duration_ms,
    }
}

/// The executor's fold: requests in, marked once started, out once finished.
fn fold(open: &mut HashMap<String, Open>, envelope: &EventEnvelope) {
    let Ok(event) = envelope.decode::<HostExecEvent>() else {
        return; // a type this version does not know
    };
    let id = &envelope.aggregate_id;
    match event {
        HostExecEvent::Requested(requested) => {
            open.insert(
                id.clone(),
                Open {
                    requested,
                    started: false,
                    correlation_id: envelope.correlation_id,
                    event_id: envelope.event_id,
                },
            );
        }
        HostExecEvent::Started {} => {
            if let Some(request) = open.get_mut(id) {
                request.started = true;
            }
        }
        HostExecEvent::Output { .. } => {}
        HostExecEvent::Completed { .. } | HostExecEvent::Failed { .. } => {
            open.remove(id);
        }
    }
}

/// A command's output on its way to the log: lossy UTF-8 chunks of at most 16 KiB, in order,
/// the whole kept within the cap.
struct Output {
    cap: usize,
    kept: usize,
    total: u64,
    pending: Vec<(OutputStream, Vec<u8>)>,
}

const CHUNK: usize = 16 * 1024;

/// When [`Output::ready`] is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// A piece came: full chunks only.
    Full,
    /// Time passed: what came so far.
    Tick,
    /// The command ended.
    All,
}

impl Output {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            kept: 0,
            total: 0,
            pending: Vec::new(),
        }
    }

    fn push(&mut self, stream: OutputStream, data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.cap - self.kept;
        let data = &data[..data.len().min(room)];
        self.kept += data.len();
        for piece in data.chunks(CHUNK) {
            match self.pending.last_mut() {
                Some((last, bytes)) if *last == stream && bytes.len() + piece.len() <= CHUNK => {
                    bytes.extend_from_slice(piece)
                }
                _ => self.pending.push((stream, piece.to_vec())),
            }
        }
    }

    fn truncated(&self) -> bool {
        self.total > self.kept as u64
    }

    /// The chunks to record now: the full ones, or at a tick everything but an unfinished
    /// UTF-8 character at the very end (completed by the next piece), or at the end all.
    fn ready(&mut self, now: Flush) -> Vec<(OutputStream, String)> {
        let take = match now {
            Flush::Full => self
                .pending
                .iter()
                .take_while(|(_, bytes)| bytes.len() >= CHUNK)
                .count(),
            Flush::Tick | Flush::All => self.pending.len(),
        };
        let mut ready: Vec<(OutputStream, Vec<u8>)> = self.pending.drain(..take).collect();
        if now == Flush::Tick
            && let Some((stream, bytes)) = ready.last_mut()
            && let Err(err) = std::str::from_utf8(bytes)
            && err.error_len().is_none()
        {
            let tail = bytes.split_off(err.valid_up_to());
            self.pending.push((*stream, tail));
        }
        ready.retain(|(_, bytes)| !bytes.is_empty());
        ready
            .into_iter()
            .map(|(stream, bytes)| (stream, String::from_utf8_lossy(&bytes).into_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_and_kept_in_order() {
        let mut output = Output::new(10);
        output.push(OutputStream::Stdout, b"hello ");
        output.push(OutputStream::Stderr, b"oops");
        output.push(OutputStream::Stdout, b"world");
        assert_eq!(output.total, 15);
        assert!(output.truncated());
        let chunks = output.ready(Flush::All);
        assert_eq!(
            chunks,
            [
                (OutputStream::Stdout, "hello ".to_owned()),
                (OutputStream::Stderr, "oops".to_owned())
            ]
        );
    }

    #[test]
    fn a_character_cut_in_two_waits_for_its_end() {
        let mut output = Output::new(4 * CHUNK);
        let euro = "€".as_bytes();
        output.push(OutputStream::Stdout, &[b'a', euro[0]]);
        assert!(output.ready(Flush::Full).is_empty());
        assert_eq!(
            output.ready(Flush::Tick),
            [(OutputStream::Stdout, "a".to_owned())]
        );
        output.push(OutputStream::Stdout, &euro[1..]);
        assert_eq!(
            output.ready(Flush::Tick),
            [(OutputStream::Stdout, "€".to_owned())]
        );
        output.push(OutputStream::Stdout, &vec![b'x'; CHUNK + 1]);
        let full = output.ready(Flush::Full);
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].1.len(), CHUNK);
        assert_eq!(output.ready(Flush::All)[0].1, "x");
    }

    #[test]
    fn the_fold_keeps_what_is_not_finished() {
        let requested = HostExecEvent::Requested(ExecRequested {
            host: "nas".into(),
            command: "uptime".into(),
            timeout_secs: 5,
            env_secrets: Default::default(),
        });
        let envelope = |id: &str, event: &HostExecEvent| {
            EventEnvelope::new(id, 1, event, CorrelationId::new(), None, Actor::system())
        };
        let mut open = HashMap::new();
        fold(&mut open, &envelope("a", &requested));
        fold(&mut open, &envelope("b", &requested));
        fold(&mut open, &envelope("a", &HostExecEvent::Started {}));
        fold(
            &mut open,
            &envelope(
                "b",
                &HostExecEvent::Failed {
                    reason: ExecFailure::Unreachable,
                    error: "down".into(),
                    duration_ms: 1,
                },
            ),
        );
        assert_eq!(open.keys().collect::<Vec<_>>(), ["a"]);
        assert!(open["a"].started);
    }
}
