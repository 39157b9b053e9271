//! Following the render jobs chat started, back into the conversation: progress while they run
//! (throttled), then the image or the reason there is none. Reads the event log with a durable
//! consumer, so a restart resumes where it stopped; the result reply is recorded on the chat
//! command, so a redelivered completion is not posted twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use artifacts::ArtifactStore;
use bus::consumer::{ConsumerSpec, Outcome};
use bus::store::{CommandMeta, Commands, JetStreamStore, commands, execute};
use bus::{Bus, StreamName};
use cqrs_es::{AggregateError, EventStore};
use domain::chat::{ChatCommand, ChatCommandCommand, ChatError};
use domain::render::RenderJob;
use events::render::{RenderJobEvent, Trigger};
use events::{Actor, EventEnvelope};
use tokio_util::sync::CancellationToken;

use crate::limits::Limits;
use crate::reply::{Replier, Reply, Stage, short_of_room};
use events::chat::{CommandReceived, ReplyKind};

#[derive(Debug, Clone)]
pub(crate) struct FollowerConfig {
    /// At most one progress message per job this often (0: every step).
    pub progress_every: Duration,
    /// Where the gateway's share links are reachable: `<public_url>/share/<token>.png`.
    pub public_url: String,
}

pub(crate) struct Follower {
    bus: Bus,
    replier: Arc<dyn Replier>,
    limits: Limits,
    artifacts: ArtifactStore,
    config: FollowerConfig,
    chat: Commands<ChatCommand>,
    chat_state: JetStreamStore<ChatCommand>,
    /// The jobs whose outputs a result reply shares.
    render: Commands<RenderJob>,
    render_state: JetStreamStore<RenderJob>,
    /// Per job: the chat command that started it (`None`: not started from this platform).
    jobs: Mutex<HashMap<String, Followed>>,
}

struct Followed {
    /// `None`: the job was not started from this platform.
    target: Option<Arc<Target>>,
    last_progress: Option<Instant>,
}

/// Who to tell about a job: read once per job, not once per progress tick.
struct Target {
    command_id: String,
    received: CommandReceived,
    reply_token: Option<String>,
}

/// Progress about events older than this is not worth telling (a backlog after a restart).
const STALE_PROGRESS: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

impl Follower {
    pub(crate) fn new(
        bus: Bus,
        replier: Arc<dyn Replier>,
        limits: Limits,
        artifacts: ArtifactStore,
        config: FollowerConfig,
    ) -> Self {
        Self {
            chat: commands(bus.clone(), ()),
            chat_state: JetStreamStore::new(bus.clone()),
            render: commands(bus.clone(), ()),
            render_state: JetStreamStore::new(bus.clone()),
            bus,
            replier,
            limits,
            artifacts,
            config,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let platform = self.replier.platform();
        let mut spec = ConsumerSpec::new(StreamName::Events, format!("chat-follow-{platform}"));
        spec.filter_subject = Some(events::subjects::event("render_job", "*"));
        spec.max_deliver = 10;
        spec.backoff = vec![
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(15),
        ];
        spec.max_ack_pending = 1;
        let this = &*self;
        self.bus
            .consume_commits(spec, cancel, move |commit, _| this.handle(commit))
            .await?;
        Ok(())
    }

    async fn handle(&self, commit: Vec<EventEnvelope>) -> Outcome {
        for envelope in &commit {
            let Ok(event) = envelope.decode::<RenderJobEvent>() else {
                continue; // a type this version does not know
            };
            if let Err(reason) = self.follow(envelope, &event).await {
                return Outcome::Retry(reason);
            }
        }
        Outcome::Ack
    }

    async fn follow(&self, envelope: &EventEnvelope, event: &RenderJobEvent) -> Result<(), String> {
        let job_id = envelope.aggregate_id.clone();
        let Some(target) = self.target_of(&job_id, event).await? else {
            return Ok(());
        };
        let fresh = chrono::Utc::now() - envelope.occurred_at < STALE_PROGRESS;
        let stage = match event {
            RenderJobEvent::Started(started) if fresh => {
                self.mark_progress(&job_id);
                Stage::Started {
                    node_id: started.node_id.clone(),
                }
            }
            RenderJobEvent::Progressed(progressed) if fresh && self.progress_due(&job_id) => {
                Stage::Progress {
                    value: progressed.value,
                    max: progressed.max,
                }
            }
            RenderJobEvent::Completed(_)
            | RenderJobEvent::Failed(_)
            | RenderJobEvent::Cancelled(_) => return self.finish(envelope, event, &target).await,
            _ => return Ok(()),
        };
        // Progress is best effort: in a flood the channel's budget goes to results first.
        if short_of_room(&*self.replier, &target.received.channel) {
            return Ok(());
        }
        let reply = Reply::Progress {
            job_id: job_id.clone(),
            stage,
        };
        if let Err(err) = self
            .replier
            .send(&target.received, target.reply_token.as_deref(), &reply)
            .await
        {
            tracing::warn!(%job_id, error = %err, "a progress message was not delivered");
        }
        Ok(())
    }

    /// The result reply, once: a redelivered completion finds it recorded and stays quiet.
    async fn finish(
        &self,
        envelope: &EventEnvelope,
        event: &RenderJobEvent,
        target: &Target,
    ) -> Result<(), String> {
        let job_id = envelope.aggregate_id.clone();
        let command_id = &target.command_id;
        let replied = self
            .chat_state
            .load_aggregate(command_id)
            .await
            .map_err(|err| err.to_string())?
            .state()
            .replied;
        if replied {
            self.forget(&job_id);
            return Ok(());
        }
        let meta = CommandMeta::caused_by(
            envelope,
            Actor::Service(format!("chat-{}", target.received.platform)),
        );
        let (reply, artifact) = match event {
            RenderJobEvent::Completed(completed) => match completed.artifacts.first() {
                Some(artifact) => {
                    let path = self
                        .artifacts
                        .content_path(&artifact.sha256)
                        .ok_or_else(|| format!("artifact {} has no valid hash", artifact.sha256))?;
                    let token = sagas::share_output(
                        &self.render,
                        &self.render_state,
                        &job_id,
                        &artifact.sha256,
                        meta.clone(),
                    )
                    .await
                    .map_err(|err| format!("the image was not shared: {err}"))?;
                    (
                        Reply::Image {
                            job_id: job_id.clone(),
                            artifact: artifact.clone(),
                            path,
                            url: format!(
                                "{}/share/{token}.png",
                                self.config.public_url.trim_end_matches('/'),
                            ),
                            seed: completed.provenance.seed,
                        },
                        Some(artifact.sha256.clone()),
                    )
                }
                None => (
                    Reply::Failed {
                        job_id: job_id.clone(),
                        text: "the render produced no image".into(),
                    },
                    None,
                ),
            },
            RenderJobEvent::Failed(failed) => (
                Reply::Failed {
                    job_id: job_id.clone(),
                    text: failed.reason.clone(),
                },
                None,
            ),
            RenderJobEvent::Cancelled(cancelled) => (
                Reply::Failed {
                    job_id: job_id.clone(),
                    text: cancelled.reason.clone(),
                },
                None,
            ),
            _ => return Ok(()),
        };
        match self
            .replier
            .send(&target.received, target.reply_token.as_deref(), &reply)
            .await
        {
            Ok(text) => {
                let recorded = execute(
                    &self.chat,
                    command_id,
                    ChatCommandCommand::RecordReply {
                        kind: ReplyKind::Result,
                        text,
                        artifact,
                    },
                    meta,
                    3,
                )
                .await;
                self.forget(&job_id);
                match recorded {
                    Ok(()) | Err(AggregateError::UserError(ChatError::AlreadyReplied)) => Ok(()),
                    Err(err) => Err(err.to_string()),
                }
            }
            Err(err) => {
                execute(
                    &self.chat,
                    command_id,
                    ChatCommandCommand::RecordReplyFailure {
                        kind: ReplyKind::Result,
                        error: err.message.clone(),
                    },
                    meta,
                    3,
                )
                .await
                .map_err(|err| err.to_string())?;
                if err.retryable {
                    Err(format!("result not delivered: {err}"))
                } else {
                    self.forget(&job_id);
                    Ok(())
                }
            }
        }
    }

    /// Whom to tell about `job_id`: the chat command its request names, with the reply token
    /// (read once per job, then remembered).
    async fn target_of(
        &self,
        job_id: &str,
        event: &RenderJobEvent,
    ) -> Result<Option<Arc<Target>>, String> {
        if let Some(followed) = self.lock().get(job_id) {
            return Ok(followed.target.clone());
        }
        let trigger = match event {
            RenderJobEvent::Requested(requested) => Some(requested.trigger.clone()),
            _ => self.trigger_of(job_id).await?,
        };
        let command_id = trigger.and_then(|trigger| {
            (trigger.source == self.replier.platform().as_str())
                .then_some(trigger.reference)
                .flatten()
        });
        let target = match command_id {
            Some(command_id) => {
                let received = self
                    .chat_state
                    .load_aggregate(&command_id)
                    .await
                    .map_err(|err| err.to_string())?
                    .state()
                    .received
                    .clone();
                let reply_token = self
                    .limits
                    .secret(&command_id)
                    .await
                    .map_err(|err| format!("redis: {err}"))?;
                // A job whose chat command is not in the log (a replay elsewhere) is not ours.
                received.map(|received| {
                    Arc::new(Target {
                        command_id,
                        received,
                        reply_token,
                    })
                })
            }
            None => None,
        };
        let mut jobs = self.lock();
        if jobs.len() > 10_000 {
            jobs.retain(|_, followed| followed.target.is_some());
        }
        jobs.insert(
            job_id.to_owned(),
            Followed {
                target: target.clone(),
                last_progress: None,
            },
        );
        Ok(target)
    }

    async fn trigger_of(&self, job_id: &str) -> Result<Option<Trigger>, String> {
        let subject = events::subjects::event("render_job", job_id);
        let messages = self
            .bus
            .read_subject(&subject)
            .await
            .map_err(|err| err.to_string())?;
        for message in messages.iter().take(1) {
            let Ok(commit) = message.decode_commit() else {
                return Ok(None);
            };
            for envelope in commit {
                if let Ok(RenderJobEvent::Requested(requested)) = envelope.decode() {
                    return Ok(Some(requested.trigger));
                }
            }
        }
        Ok(None)
    }

    /// Whether a progress message for `job_id` may go out now (and if so, takes the slot).
    fn progress_due(&self, job_id: &str) -> bool {
        let mut jobs = self.lock();
        let Some(followed) = jobs.get_mut(job_id) else {
            return false;
        };
        if followed
            .last_progress
            .is_some_and(|at| at.elapsed() < self.config.progress_every)
        {
            return false;
        }
        followed.last_progress = Some(Instant::now());
        true
    }

    fn mark_progress(&self, job_id: &str) {
        if let Some(followed) = self.lock().get_mut(job_id) {
            followed.last_progress = Some(Instant::now());
        }
    }

    fn forget(&self, job_id: &str) {
        self.lock().remove(job_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Followed>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
