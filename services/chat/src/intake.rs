//! Deciding what a chat command does: received once (duplicates stop here), checked against the
//! server's rules and the Redis limits, then rejected, answered, or turned into a render job —
//! and the user told.

use std::sync::Arc;
use std::time::Duration;

use bus::consumer::{ConsumerSpec, Outcome};
use bus::store::{CommandMeta, Commands, JetStreamStore, commands, execute};
use bus::{Bus, StreamName};
use cqrs_es::{AggregateError, EventStore};
use domain::chat::{ChatCommand, ChatCommandCommand, ChatError, ChatSettings, Decision};
use domain::render::{QUEUE_ID, QueueError, RenderCommand, RenderError, RenderJob, RenderQueue};
use events::chat::{
    ChannelSettings, CommandReceived, RejectReason, ReplyKind, command_id, settings_id,
};
use events::render::{RenderMode, RenderStatus, Trigger};
use events::{Actor, CorrelationId};
use tokio_util::sync::CancellationToken;

use crate::command::{Incoming, imagine, parse_imagine};
use crate::limits::{Limited, Limits};
use crate::reply::{Replier, Reply, Stage};

/// How long a platform's reply token is kept (Discord's interaction tokens live 15 minutes).
const REPLY_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone)]
pub(crate) struct IntakeConfig {
    /// The render queue's cap (as the gateway enforces it).
    pub queue_cap: usize,
    /// Attempts a chat-started render job gets.
    pub max_attempts: u32,
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
}

/// Handling stopped short: the bus, Redis or the platform is away, so the delivery is tried
/// again later.
struct Stop(String);

impl<E: std::error::Error> From<AggregateError<E>> for Stop {
    fn from(err: AggregateError<E>) -> Self {
        Stop(err.to_string())
    }
}

impl From<kv::KvError> for Stop {
    fn from(err: kv::KvError) -> Self {
        Stop(err.to_string())
    }
}

impl From<bus::BusError> for Stop {
    fn from(err: bus::BusError) -> Self {
        Stop(err.to_string())
    }
}

impl Intake {
    pub(crate) fn new(
        bus: Bus,
        replier: Arc<dyn Replier>,
        limits: Limits,
        config: IntakeConfig,
    ) -> Self {
        Self {
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
        spec
    }

    /// Decides incoming commands until `cancel` fires.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let spec = self.consumer();
        let this = &*self;
        self.bus
            .consume_json::<Incoming, _, _>(spec, cancel, move |incoming, _| async move {
                this.handle(incoming).await
            })
            .await?;
        Ok(())
    }

    /// Decides one command (again, after a crash or redelivery: every step is idempotent).
    async fn handle(&self, incoming: Incoming) -> Outcome {
        match self.decide(&incoming).await {
            Ok(()) => Outcome::Ack,
            Err(Stop(reason)) => {
                tracing::warn!(message_id = %incoming.command.message_id, reason, "chat command will be retried");
                Outcome::Retry(reason)
            }
        }
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

        let state = self.chat_state.load_aggregate(&id).await?;
        let mut state = state.state().clone();
        if state.decision.is_none() {
            let settings = self
                .settings
                .load_aggregate(&settings_id(platform, &command.scope))
                .await?
                .state()
                .current();
            let verdict = self.verdict(command, &settings, &meta).await?;
            let chat_command = match verdict {
                Verdict::Reject(reason, message, retry_after) => ChatCommandCommand::Reject {
                    reason,
                    message,
                    retry_after_secs: retry_after,
                },
                Verdict::Answer(text) => ChatCommandCommand::Answer { text },
                Verdict::Job(job_id) => ChatCommandCommand::StartJob { job_id },
            };
            execute(&self.chat, &id, chat_command.clone(), meta.clone(), 3).await?;
            // What was just decided is what the aggregate now holds; no need to read it back.
            match chat_command {
                ChatCommandCommand::Reject { message, .. } => {
                    state.answer = Some((ReplyKind::Rejection, message));
                }
                ChatCommandCommand::Answer { text } => {
                    state.answer = Some((ReplyKind::Answer, text));
                }
                ChatCommandCommand::StartJob { job_id } => {
                    state.decision = Some(Decision::Job(job_id));
                }
                _ => {}
            }
            if let Some(Decision::Job(job_id)) = &state.decision {
                // Best effort: the follower reports the rest.
                let position = self.queue_position().await;
                let reply = Reply::Progress {
                    job_id: job_id.clone(),
                    stage: Stage::Queued { position },
                };
                if let Err(err) = self
                    .replier
                    .send(command, incoming.reply_token.as_deref(), &reply)
                    .await
                {
                    tracing::warn!(%id, error = %err, "the queued notice was not delivered");
                }
            }
        }
        if let (Some((kind, text)), false) = (&state.answer, state.replied) {
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
                        return Err(Stop(format!("reply not delivered: {err}")));
                    }
                }
            }
        }
        Ok(())
    }

    async fn correlation_of(&self, id: &str) -> Result<CorrelationId, Stop> {
        let subject = events::subjects::event("chat_command", id);
        let first = self.bus.read_subject(&subject).await?;
        first
            .first()
            .and_then(|message| message.decode_commit().ok())
            .and_then(|commit| commit.first().map(|envelope| envelope.correlation_id))
            .ok_or_else(|| Stop(format!("{subject} holds no readable commit")))
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
                let params = match parsed {
                    Ok(params) => params,
                    Err(message) => {
                        return Ok(Verdict::Reject(RejectReason::Invalid, message, None));
                    }
                };
                match self
                    .limits
                    .take(platform, &command.scope, &command.user_id, settings)
                    .await?
                {
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
                match self.submit(&job_id, &id, params, meta).await? {
                    Ok(()) => {
                        self.limits
                            .set_last_job(platform, &command.user_id, &job_id)
                            .await?;
                        Ok(Verdict::Job(job_id))
                    }
                    Err(message) => Ok(Verdict::Reject(RejectReason::QueueFull, message, None)),
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

    /// A place in the queue, then the job (as the gateway does); `Ok(Err)` when the queue is full.
    async fn submit(
        &self,
        job_id: &str,
        command_id: &str,
        params: events::render::RenderParams,
        meta: &CommandMeta,
    ) -> Result<Result<(), String>, Stop> {
        let submitted = sagas::submit_render(
            &self.queue,
            &self.jobs,
            job_id,
            self.config.queue_cap,
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
            Err(sagas::SubmitError::Queue(AggregateError::UserError(QueueError::Full { cap }))) => {
                Ok(Err(format!(
                    "the queue is full ({cap} images waiting); try again in a few minutes"
                )))
            }
            Err(sagas::SubmitError::Queue(err)) => Err(err.into()),
            Err(sagas::SubmitError::Job(err)) => Err(err.into()),
        }
    }
}

enum Verdict {
    Reject(RejectReason, String, Option<u64>),
    Answer(String),
    Job(String),
}
