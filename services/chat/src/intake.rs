//! Deciding what a chat command does: received once (duplicates stop here), checked against the
//! server's rules and the Redis limits, then rejected, answered, or turned into a render job —
//! and the user told.
//!
//! Built for floods: several commands are decided at once (one lane per user, so a user's own
//! commands keep their order), every held delivery is kept alive, refusals are merged into a
//! periodic summary when the channel's send budget runs short (or per its settings), and while
//! Redis or NATS is away a command waits for it — counted in `nebula_chat_waiting` — instead of
//! spending its deliveries.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bus::consumer::{ConsumerSpec, Delivery, Outcome};
use bus::store::{CommandMeta, Commands, JetStreamStore, commands, execute};
use bus::{Bus, StreamName};
use cqrs_es::{AggregateError, EventStore};
use domain::chat::{ChatCommand, ChatCommandCommand, ChatError, ChatSettings, Decision};
use domain::render::{
    ChatPlace, QUEUE_ID, QueueError, RenderCommand, RenderError, RenderJob, RenderQueue,
};
use events::chat::{
    ChannelSettings, CommandReceived, RefusalReplies, RejectReason, ReplyKind, Withheld,
    command_id, settings_id,
};
use events::render::{RenderMode, RenderStatus, Trigger};
use events::{Actor, CorrelationId};
use tokio_util::sync::CancellationToken;

use crate::ChatLimits;
use crate::command::{Incoming, imagine, parse_imagine};
use crate::limits::{Limited, Limits, Taken};
use crate::reply::{Replier, Reply, Stage, short_of_room};
use crate::summary::Summaries;

/// How long a platform's reply token is kept (Discord's interaction tokens live 15 minutes).
const REPLY_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone)]
pub(crate) struct IntakeConfig {
    /// The render queue's cap (as the gateway enforces it).
    pub queue_cap: usize,
    /// Places in the queue all chat commands may hold at once.
    pub chat_share: usize,
    /// Attempts a chat-started render job gets.
    pub max_attempts: u32,
    /// Commands decided at once.
    pub lanes: usize,
    /// This platform's limits on what a chat user may ask.
    pub limits: ChatLimits,
    /// How long a command waits for Redis or NATS before its delivery counts as failed.
    pub outage_wait: Duration,
    /// How often refusals merged into a summary are posted.
    pub summary_every: Duration,
}

pub(crate) struct Intake {
    bus: Bus,
    replier: Arc<dyn Replier>,
    limits: Limits,
    config: IntakeConfig,
    chat: Commands<ChatCommand>,
    chat_state: JetStreamStore<ChatCommand>,
    settings: JetStreamStore<ChatSettings>,
    jobs: Commands<RenderJob>,
    job_state: JetStreamStore<RenderJob>,
    queue: Commands<RenderQueue>,
    queue_state: JetStreamStore<RenderQueue>,
    pub(crate) summaries: Summaries,
    redis: kv::Probe,
    /// One restore of the counts at a time.
    restoring: tokio::sync::Mutex<()>,
    /// Commands waiting for Redis, and for NATS.
    waiting: [AtomicI64; 2],
    in_flight: AtomicI64,
}

/// What a command waits for while it is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dependency {
    Redis,
    Nats,
}

impl Dependency {
    fn as_str(self) -> &'static str {
        match self {
            Dependency::Redis => "redis",
            Dependency::Nats => "nats",
        }
    }
}

/// Handling stopped short.
enum Stop {
    /// Redis or NATS failed: when it is away, the command waits for it.
    Away(Dependency, String),
    /// Something else (a conflict, the platform refusing a reply): tried again after the
    /// consumer's backoff.
    Retry(String),
}

impl<E: std::error::Error> From<AggregateError<E>> for Stop {
    fn from(err: AggregateError<E>) -> Self {
        match err {
            AggregateError::DatabaseConnectionError(_) | AggregateError::UnexpectedError(_) => {
                Stop::Away(Dependency::Nats, err.to_string())
            }
            other => Stop::Retry(other.to_string()),
        }
    }
}

impl From<kv::KvError> for Stop {
    fn from(err: kv::KvError) -> Self {
        Stop::Away(Dependency::Redis, err.to_string())
    }
}

impl From<bus::BusError> for Stop {
    fn from(err: bus::BusError) -> Self {
        match err.kind() {
            bus::BusErrorKind::Connect | bus::BusErrorKind::Timeout | bus::BusErrorKind::Other => {
                Stop::Away(Dependency::Nats, err.to_string())
            }
            _ => Stop::Retry(err.to_string()),
        }
    }
}

/// Counts a command as waiting for a dependency while it lives.
struct Waiting<'a> {
    intake: &'a Intake,
    on: Dependency,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.intake.gauge_waiting(self.on, -1);
    }
}

impl Intake {
    pub(crate) fn new(
        bus: Bus,
        replier: Arc<dyn Replier>,
        limits: Limits,
        redis_url: &str,
        config: IntakeConfig,
    ) -> Self {
        Self {
            summaries: Summaries::new(config.summary_every),
            redis: kv::Probe::new(redis_url),
            restoring: tokio::sync::Mutex::new(()),
            waiting: [AtomicI64::new(0), AtomicI64::new(0)],
            in_flight: AtomicI64::new(0),
            chat: commands(bus.clone(), ()),
            chat_state: JetStreamStore::new(bus.clone()),
            settings: JetStreamStore::new(bus.clone()),
            jobs: commands(bus.clone(), ()),
            job_state: JetStreamStore::new(bus.clone()),
            queue: commands(bus.clone(), ()),
            queue_state: JetStreamStore::new(bus.clone()),
            bus,
            replier,
            limits,
            config,
        }
    }

    /// The durable consumer this platform's commands are decided on.
    fn consumer(&self) -> ConsumerSpec {
        let platform = self.replier.platform();
        let mut spec = ConsumerSpec::new(StreamName::Work, format!("chat-intake-{platform}"));
        spec.filter_subject = Some(Incoming::subject(platform));
        spec.max_deliver = 8;
        spec.backoff = vec![
            Duration::from_millis(500),
            Duration::from_secs(2),
            Duration::from_secs(5),
        ];
        // A flood is held (and kept alive) this deep; the rest waits on the server.
        spec.max_ack_pending = 2000;
        spec
    }

    fn labels(&self) -> [(&'static str, &'static str); 1] {
        [("platform", self.replier.platform().as_str())]
    }

    fn count(&self, name: &str, extra: Option<(&str, &str)>) {
        let platform = ("platform", self.replier.platform().as_str());
        match extra {
            Some(label) => self.bus.metrics().add(name, &[platform, label], 1.0),
            None => self.bus.metrics().add(name, &[platform], 1.0),
        }
    }

    fn gauge_waiting(&self, on: Dependency, change: i64) {
        let slot = &self.waiting[on as usize];
        let now = slot.fetch_add(change, Ordering::SeqCst) + change;
        self.bus.metrics().set(
            "nebula_chat_waiting",
            &[
                ("platform", self.replier.platform().as_str()),
                ("on", on.as_str()),
            ],
            now as f64,
        );
    }

    /// Decides incoming commands until `cancel` fires, and posts the summaries of refusals.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        if let Err(Stop::Away(_, reason) | Stop::Retry(reason)) = self.remember().await {
            tracing::warn!(
                reason,
                "chat counts not checked at start; checked again when needed"
            );
        }
        let spec = self.consumer();
        let this = Arc::clone(&self);
        let stop = cancel.clone();
        let consume = self.bus.consume_lanes(
            spec,
            cancel.clone(),
            self.config.lanes,
            lane_of,
            move |delivery: Delivery| {
                let (this, stop) = (Arc::clone(&this), stop.clone());
                async move {
                    match serde_json::from_slice::<Incoming>(&delivery.message.payload) {
                        Ok(incoming) => this.handle(incoming, &delivery, &stop).await,
                        Err(err) => Outcome::Reject(format!("malformed payload: {err}")),
                    }
                }
            },
        );
        tokio::select! {
            consumed = consume => consumed?,
            () = self.summaries.run(&*self.replier, self.bus.metrics(), cancel.clone()) => {}
        }
        Ok(())
    }

    /// Decides one command (again, after a crash or redelivery: every step is idempotent).
    /// While Redis or NATS is away it waits for it (up to `outage_wait`), holding the delivery.
    async fn handle(
        &self,
        incoming: Incoming,
        delivery: &Delivery,
        cancel: &CancellationToken,
    ) -> Outcome {
        let labels = self.labels();
        if let Some(pending) = delivery.message.pending {
            self.bus
                .metrics()
                .set("nebula_chat_backlog", &labels, pending as f64);
        }
        let in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.bus
            .metrics()
            .set("nebula_chat_in_flight", &labels, in_flight as f64);
        let outcome = self.decide_through_outages(&incoming, cancel).await;
        let in_flight = self.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        self.bus
            .metrics()
            .set("nebula_chat_in_flight", &labels, in_flight as f64);
        outcome
    }

    async fn decide_through_outages(
        &self,
        incoming: &Incoming,
        cancel: &CancellationToken,
    ) -> Outcome {
        let message_id = &incoming.command.message_id;
        // Tries right away while the dependency answers (a client reconnecting to a Redis that
        // just came back fails once or twice).
        let mut answered_tries = 0u32;
        loop {
            let (on, reason) = match self.decide(incoming).await {
                Ok(()) => return Outcome::Ack,
                Err(Stop::Retry(reason)) => {
                    tracing::warn!(%message_id, reason, "chat command will be retried");
                    return Outcome::Retry(reason);
                }
                Err(Stop::Away(on, reason)) => (on, reason),
            };
            // It failed, but answers: it just came back (a few more tries settle that), or
            // something else is wrong.
            if self.answers(on).await {
                if answered_tries >= 3 {
                    tracing::warn!(%message_id, reason, "chat command will be retried");
                    return Outcome::Retry(reason);
                }
                answered_tries += 1;
                tokio::time::sleep(Duration::from_millis(200) * answered_tries).await;
                continue;
            }
            tracing::warn!(%message_id, on = on.as_str(), reason, "chat command waits for {} to come back", on.as_str());
            self.count("nebula_chat_outage_waits_total", Some(("on", on.as_str())));
            self.gauge_waiting(on, 1);
            let _waiting = Waiting { intake: self, on };
            let started = Instant::now();
            let mut pause = Duration::from_millis(250);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return Outcome::Retry("stopping".to_owned()),
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
                if self.answers(on).await {
                    break;
                }
                if started.elapsed() > self.config.outage_wait {
                    return Outcome::Retry(format!(
                        "{} did not come back within {} s: {reason}",
                        on.as_str(),
                        self.config.outage_wait.as_secs()
                    ));
                }
            }
            if on == Dependency::Redis
                && let Err(Stop::Away(_, err) | Stop::Retry(err)) = self.remember().await
            {
                tracing::warn!(error = err, "chat counts not restored yet");
            }
        }
    }

    async fn answers(&self, on: Dependency) -> bool {
        match on {
            Dependency::Redis => self.redis.ping().await.is_ok(),
            Dependency::Nats => self.bus.ping().await.is_ok(),
        }
    }

    /// Makes sure Redis holds this platform's counts, restoring them from the log when it
    /// forgot them (it restarted).
    async fn remember(&self) -> Result<(), Stop> {
        let platform = self.replier.platform();
        if self.limits.remembered(platform).await? {
            return Ok(());
        }
        let _one = self.restoring.lock().await;
        if self.limits.remembered(platform).await? {
            return Ok(());
        }
        let restored =
            crate::restore::from_log(&self.bus, &self.settings, platform, chrono::Utc::now())
                .await?;
        self.limits.restore(platform, &restored).await?;
        self.count("nebula_chat_restores_total", None);
        tracing::info!(
            %platform,
            cooldowns = restored.cooldowns.len(),
            quotas = restored.quotas.len(),
            last_jobs = restored.last_jobs.len(),
            "chat counts restored from the log into redis"
        );
        Ok(())
    }

    async fn decide(&self, incoming: &Incoming) -> Result<(), Stop> {
        let command = &incoming.command;
        let platform = self.replier.platform();
        if command.platform != platform {
            tracing::warn!(got = %command.platform, "chat command for another platform ignored");
            return Ok(());
        }
        let id = command_id(platform, &command.message_id);
        let meta = CommandMeta::new(Actor::User(format!("{platform}:{}", command.user_id)));
        let meta = match execute(
            &self.chat,
            &id,
            ChatCommandCommand::Receive(command.clone()),
            meta.clone(),
            3,
        )
        .await
        {
            Ok(()) => meta,
            Err(AggregateError::UserError(ChatError::AlreadyReceived)) => {
                let state = self.chat_state.load_aggregate(&id).await?;
                let state = state.state();
                if state.decision.is_some() && (state.replied || state.answer.is_none()) {
                    self.bus.metrics().add(
                        "nebula_chat_duplicates_total",
                        &[("platform", platform.as_str())],
                        1.0,
                    );
                    tracing::info!(%id, "duplicate chat message ignored");
                    return Ok(());
                }
                // Received before a crash, not finished: carry on in its correlation.
                CommandMeta {
                    correlation_id: self.correlation_of(&id).await?,
                    ..meta
                }
            }
            Err(err) => return Err(err.into()),
        };
        if let Some(token) = &incoming.reply_token {
            self.limits.put_secret(&id, token, REPLY_TOKEN_TTL).await?;
        }

        let settings = self
            .settings
            .load_aggregate(&settings_id(platform, &command.scope))
            .await?
            .state()
            .current();
        let state = self.chat_state.load_aggregate(&id).await?;
        let mut state = state.state().clone();
        if state.decision.is_none() {
            let verdict = self.verdict(command, &settings, &meta).await?;
            let chat_command = match verdict {
                Verdict::Reject(reason, message, retry_after) => {
                    self.count(
                        "nebula_chat_rejections_total",
                        Some(("reason", reason.as_str())),
                    );
                    ChatCommandCommand::Reject {
                        reason,
                        message,
                        retry_after_secs: retry_after,
                    }
                }
                Verdict::Answer(text) => ChatCommandCommand::Answer { text },
                Verdict::Job(job_id) => ChatCommandCommand::StartJob { job_id },
            };
            execute(&self.chat, &id, chat_command.clone(), meta.clone(), 3).await?;
            // What was just decided is what the aggregate now holds; no need to read it back.
            let outcome = match chat_command {
                ChatCommandCommand::Reject { message, .. } => {
                    state.answer = Some((ReplyKind::Rejection, message));
                    "rejected"
                }
                ChatCommandCommand::Answer { text } => {
                    state.answer = Some((ReplyKind::Answer, text));
                    "answered"
                }
                ChatCommandCommand::StartJob { job_id } => {
                    state.decision = Some(Decision::Job(job_id));
                    "job"
                }
                _ => "other",
            };
            self.count("nebula_chat_commands_total", Some(("outcome", outcome)));
            if let Some(Decision::Job(job_id)) = &state.decision
                && !short_of_room(&*self.replier, &command.channel)
            {
                // Best effort (skipped when the channel's budget is short), and off the lane:
                // it may still wait for the budget, which must not hold up other users'
                // commands. The follower reports the rest.
                let position = self.queue_position().await;
                let reply = Reply::Progress {
                    job_id: job_id.clone(),
                    stage: Stage::Queued { position },
                };
                let (replier, command, token, id) = (
                    Arc::clone(&self.replier),
                    command.clone(),
                    incoming.reply_token.clone(),
                    id.clone(),
                );
                tokio::spawn(async move {
                    if let Err(err) = replier.send(&command, token.as_deref(), &reply).await {
                        tracing::warn!(%id, error = %err, "the queued notice was not delivered");
                    }
                });
            }
        }
        let Some((kind, text)) = state.answer.as_ref().filter(|_| !state.replied) else {
            return Ok(());
        };
        if let Some(why) = self.withhold(*kind, command, &settings) {
            let withheld = execute(
                &self.chat,
                &id,
                ChatCommandCommand::WithholdReply { kind: *kind, why },
                meta,
                3,
            )
            .await;
            match withheld {
                Ok(()) => {}
                Err(AggregateError::UserError(ChatError::AlreadyReplied)) => return Ok(()),
                Err(err) => return Err(err.into()),
            }
            self.count(
                "nebula_chat_replies_withheld_total",
                Some(("why", why.as_str())),
            );
            if why == Withheld::Summary {
                self.summaries
                    .add(&command.channel, &command.user_name, text);
            }
            return Ok(());
        }
        let reply = match kind {
            ReplyKind::Rejection => Reply::Rejected { text: text.clone() },
            _ => Reply::Answer { text: text.clone() },
        };
        match self
            .replier
            .send(command, incoming.reply_token.as_deref(), &reply)
            .await
        {
            Ok(sent) => {
                let recorded = execute(
                    &self.chat,
                    &id,
                    ChatCommandCommand::RecordReply {
                        kind: *kind,
                        text: sent,
                        artifact: None,
                    },
                    meta,
                    3,
                )
                .await;
                match recorded {
                    Ok(()) | Err(AggregateError::UserError(ChatError::AlreadyReplied)) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            Err(err) => {
                execute(
                    &self.chat,
                    &id,
                    ChatCommandCommand::RecordReplyFailure {
                        kind: *kind,
                        error: err.message.clone(),
                    },
                    meta,
                    3,
                )
                .await?;
                if err.retryable {
                    return Err(Stop::Retry(format!("reply not delivered: {err}")));
                }
            }
        }
        Ok(())
    }

    /// Whether a reply is held back: refusals, per the channel's settings and send budget.
    fn withhold(
        &self,
        kind: ReplyKind,
        command: &CommandReceived,
        settings: &ChannelSettings,
    ) -> Option<Withheld> {
        if kind != ReplyKind::Rejection {
            return None;
        }
        let can_summarize = self.replier.can_post();
        match settings.refusals {
            RefusalReplies::Silent => Some(Withheld::Silent),
            RefusalReplies::Summary if can_summarize => Some(Withheld::Summary),
            RefusalReplies::Auto
                if can_summarize && short_of_room(&*self.replier, &command.channel) =>
            {
                Some(Withheld::Summary)
            }
            _ => None,
        }
    }

    async fn correlation_of(&self, id: &str) -> Result<CorrelationId, Stop> {
        let subject = events::subjects::event("chat_command", id);
        let first = self.bus.read_subject(&subject).await?;
        first
            .first()
            .and_then(|message| message.decode_commit().ok())
            .and_then(|commit| commit.first().map(|envelope| envelope.correlation_id))
            .ok_or_else(|| Stop::Retry(format!("{subject} holds no readable commit")))
    }

    async fn queue_position(&self) -> usize {
        match self.queue_state.load_aggregate(QUEUE_ID).await {
            Ok(queue) => queue.state().admitted.len(),
            Err(_) => 0,
        }
    }

    async fn verdict(
        &self,
        command: &CommandReceived,
        settings: &ChannelSettings,
        meta: &CommandMeta,
    ) -> Result<Verdict, Stop> {
        let rule = settings.rule(&command.command);
        if !rule.enabled {
            return Ok(Verdict::Reject(
                RejectReason::Disabled,
                format!("{} is switched off here", command.command),
                None,
            ));
        }
        if !rule.roles.is_empty() && !rule.roles.iter().any(|r| command.roles.contains(r)) {
            return Ok(Verdict::Reject(
                RejectReason::Forbidden,
                format!("{} is only for some roles here, sorry", command.command),
                None,
            ));
        }
        let platform = command.platform;
        match command.command.as_str() {
            "imagine" => {
                let id = command_id(platform, &command.message_id);
                // The job id and the seed follow from the message, so a retry after a crash
                // finds its job, and each new command draws a new image.
                let job_uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, id.as_bytes());
                let seed = job_uuid.as_u64_pair().0 >> 12; // fits every backend's seed range
                let parsed = if command.options.is_empty() {
                    parse_imagine(&command.args, seed)
                } else {
                    imagine(&command.options, seed)
                };
                let params = match parsed.and_then(|params| self.config.limits.check(params)) {
                    Ok(params) => params,
                    Err(message) => {
                        return Ok(Verdict::Reject(RejectReason::Invalid, message, None));
                    }
                };
                let taken = match self
                    .limits
                    .take(platform, &command.scope, &command.user_id, settings)
                    .await?
                {
                    Taken::Decided(taken) => taken,
                    Taken::Forgotten => {
                        self.remember().await?;
                        match self
                            .limits
                            .take(platform, &command.scope, &command.user_id, settings)
                            .await?
                        {
                            Taken::Decided(taken) => taken,
                            Taken::Forgotten => {
                                return Err(Stop::Retry(
                                    "redis forgot the chat counts again while they were restored"
                                        .to_owned(),
                                ));
                            }
                        }
                    }
                };
                match taken {
                    Ok(()) => {}
                    Err(Limited::Cooldown { retry_after }) => {
                        let secs = retry_after.as_secs().max(1);
                        return Ok(Verdict::Reject(
                            RejectReason::Cooldown,
                            format!("please wait {secs} s before the next imagine"),
                            Some(secs),
                        ));
                    }
                    Err(Limited::Quota { retry_after }) => {
                        let minutes = retry_after.as_secs().div_ceil(60).max(1);
                        return Ok(Verdict::Reject(
                            RejectReason::Quota,
                            format!(
                                "this channel has used its {} images for now; more in {minutes} min",
                                settings.quota
                            ),
                            Some(retry_after.as_secs().max(1)),
                        ));
                    }
                }
                let job_id = job_uuid.to_string();
                let place = ChatPlace {
                    user: format!("{platform}:{}", command.user_id),
                    per_user: self.config.limits.max_queued_per_user,
                    share: self.config.chat_share,
                };
                match self.submit(&job_id, &id, params, place, meta).await? {
                    Ok(()) => {
                        self.limits
                            .set_last_job(platform, &command.user_id, &job_id)
                            .await?;
                        Ok(Verdict::Job(job_id))
                    }
                    Err((reason, message)) => Ok(Verdict::Reject(reason, message, None)),
                }
            }
            "queue" => {
                let queue = self.queue_state.load_aggregate(QUEUE_ID).await?;
                let queue = queue.state();
                let paused = if queue.paused { " (paused)" } else { "" };
                Ok(Verdict::Answer(format!(
                    "{} image(s) waiting in the queue{paused}",
                    queue.admitted.len()
                )))
            }
            "status" => {
                let Some(job_id) = self.limits.last_job(platform, &command.user_id).await? else {
                    return Ok(Verdict::Answer("you have no image on the way".into()));
                };
                let job = self.job_state.load_aggregate(&job_id).await?;
                let text = match job.state().status {
                    Some(RenderStatus::Queued) => "your last image is waiting in the queue",
                    Some(RenderStatus::Assigned | RenderStatus::Running) => {
                        "your last image is rendering"
                    }
                    Some(RenderStatus::Completed) => "your last image is done",
                    Some(RenderStatus::Failed) => "your last image failed",
                    Some(RenderStatus::Cancelled) => "your last image was cancelled",
                    None => "you have no image on the way",
                };
                Ok(Verdict::Answer(text.into()))
            }
            "cancel" => {
                let Some(job_id) = self.limits.last_job(platform, &command.user_id).await? else {
                    return Ok(Verdict::Answer(
                        "there is nothing of yours to cancel".into(),
                    ));
                };
                let cancelled = execute(
                    &self.jobs,
                    &job_id,
                    RenderCommand::Cancel {
                        reason: format!("cancelled from {platform} by {}", command.user_name),
                    },
                    meta.clone(),
                    5,
                )
                .await;
                match cancelled {
                    Ok(()) => Ok(Verdict::Answer("cancelled your last image".into())),
                    Err(AggregateError::UserError(
                        RenderError::InvalidTransition(..) | RenderError::NotFound,
                    )) => Ok(Verdict::Answer(
                        "your last image is already finished".into(),
                    )),
                    Err(err) => Err(err.into()),
                }
            }
            other => Ok(Verdict::Reject(
                RejectReason::Invalid,
                format!("unknown command {other}"),
                None,
            )),
        }
    }

    /// A place in the queue, then the job (as the gateway does); `Ok(Err)` when the queue, chat's
    /// share of it or the user's own places are full.
    async fn submit(
        &self,
        job_id: &str,
        command_id: &str,
        params: events::render::RenderParams,
        place: ChatPlace,
        meta: &CommandMeta,
    ) -> Result<Result<(), (RejectReason, String)>, Stop> {
        let submitted = sagas::submit_render(
            &self.queue,
            &self.jobs,
            job_id,
            self.config.queue_cap,
            Some(place),
            RenderCommand::Submit {
                mode: RenderMode::Txt2img,
                params,
                priority: 0,
                trigger: Trigger {
                    source: self.replier.platform().as_str().to_owned(),
                    reference: Some(command_id.to_owned()),
                },
                max_attempts: self.config.max_attempts,
            },
            meta.clone(),
        )
        .await;
        match submitted {
            Ok(()) => Ok(Ok(())),
            Err(sagas::SubmitError::Queue(AggregateError::UserError(full))) => {
                Ok(Err(match full {
                    QueueError::Full { cap } => (
                        RejectReason::QueueFull,
                        format!(
                            "the queue is full ({cap} images waiting); try again in a few minutes"
                        ),
                    ),
                    QueueError::ChatShareFull { share } => (
                        RejectReason::QueueFull,
                        format!(
                            "chat's share of the queue is full ({share} images from chat waiting); try again in a few minutes"
                        ),
                    ),
                    QueueError::UserFull { per_user } => (
                        RejectReason::UserLimit,
                        format!(
                            "you already have {per_user} image(s) waiting; one at a time, please"
                        ),
                    ),
                    other => (RejectReason::QueueFull, other.to_string()),
                }))
            }
            Err(sagas::SubmitError::Queue(err)) => Err(err.into()),
            Err(sagas::SubmitError::Job(err)) => Err(err.into()),
        }
    }
}

/// The lane of a delivery: its user's (in their scope), so a user's commands keep their order.
fn lane_of(delivery: &Delivery) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match serde_json::from_slice::<Incoming>(&delivery.message.payload) {
        Ok(incoming) => (incoming.command.scope, incoming.command.user_id).hash(&mut hasher),
        Err(_) => delivery.message.stream_seq.0.hash(&mut hasher),
    }
    hasher.finish()
}

enum Verdict {
    Reject(RejectReason, String, Option<u64>),
    Answer(String),
    Job(String),
}
