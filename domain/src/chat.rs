//! Chat commands and per-server chat settings.
//!
//! A [`ChatCommand`] is received once (a second receipt of the same platform message is refused:
//! that is the deduplication), then decided once: rejected, answered, or turned into a render job.
//! Its result reply is recorded once, so a redelivered completion does not post the image twice.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::chat::{
    ChannelSettings, ChatCommandEvent, ChatJobStarted, ChatSettingsEvent, CommandAnswered,
    CommandReceived, CommandRejected, Platform, RejectReason, ReplyFailed, ReplyKind, ReplySent,
    ReplyWithheld, SettingsChanged, Withheld,
};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone)]
pub enum ChatCommandCommand {
    Receive(CommandReceived),
    Reject {
        reason: RejectReason,
        message: String,
        retry_after_secs: Option<u64>,
    },
    StartJob {
        job_id: String,
    },
    Answer {
        text: String,
    },
    RecordReply {
        kind: ReplyKind,
        text: String,
        artifact: Option<String>,
    },
    RecordReplyFailure {
        kind: ReplyKind,
        error: String,
    },
    /// The reply is not sent on its own (merged into a summary, or not at all).
    WithholdReply {
        kind: ReplyKind,
        why: Withheld,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("this chat message was already received")]
    AlreadyReceived,
    #[error("no such chat command")]
    NotFound,
    #[error("this chat command was already decided")]
    AlreadyDecided,
    #[error("the result of this chat command was already delivered")]
    AlreadyReplied,
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
}

/// How a command was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Rejected(RejectReason),
    Answered,
    Job(String),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ChatCommand {
    pub received: Option<CommandReceived>,
    pub decision: Option<Decision>,
    /// What the user is to be told when the command was rejected or answered.
    pub answer: Option<(ReplyKind, String)>,
    /// The reply that closes the command (result, rejection or answer) went out.
    pub replied: bool,
}

impl ChatCommand {
    fn undecided(&self) -> Result<(), ChatError> {
        match (&self.received, &self.decision) {
            (None, _) => Err(ChatError::NotFound),
            (Some(_), Some(_)) => Err(ChatError::AlreadyDecided),
            (Some(_), None) => Ok(()),
        }
    }
}

impl Aggregate for ChatCommand {
    const TYPE: &'static str = "chat_command";
    type Command = ChatCommandCommand;
    type Event = Event<ChatCommandEvent>;
    type Error = ChatError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ChatCommandCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ChatError> {
        let event = match command {
            ChatCommandCommand::Receive(received) => {
                if self.received.is_some() {
                    return Err(ChatError::AlreadyReceived);
                }
                ChatCommandEvent::Received(received)
            }
            ChatCommandCommand::Reject {
                reason,
                message,
                retry_after_secs,
            } => {
                self.undecided()?;
                ChatCommandEvent::Rejected(CommandRejected {
                    reason,
                    message,
                    retry_after_secs,
                })
            }
            ChatCommandCommand::StartJob { job_id } => {
                if self.decision == Some(Decision::Job(job_id.clone())) {
                    return Ok(());
                }
                self.undecided()?;
                ChatCommandEvent::JobStarted(ChatJobStarted { job_id })
            }
            ChatCommandCommand::Answer { text } => {
                self.undecided()?;
                ChatCommandEvent::Answered(CommandAnswered { text })
            }
            ChatCommandCommand::RecordReply {
                kind,
                text,
                artifact,
            } => {
                if self.received.is_none() {
                    return Err(ChatError::NotFound);
                }
                if self.replied {
                    return Err(ChatError::AlreadyReplied);
                }
                ChatCommandEvent::ReplySent(ReplySent {
                    kind,
                    text,
                    artifact,
                })
            }
            ChatCommandCommand::WithholdReply { kind, why } => {
                if self.received.is_none() {
                    return Err(ChatError::NotFound);
                }
                if self.replied {
                    return Err(ChatError::AlreadyReplied);
                }
                ChatCommandEvent::ReplyWithheld(ReplyWithheld { kind, why })
            }
            ChatCommandCommand::RecordReplyFailure { kind, error } => {
                if self.received.is_none() {
                    return Err(ChatError::NotFound);
                }
                ChatCommandEvent::ReplyFailed(ReplyFailed { kind, error })
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<ChatCommandEvent>) {
        match event.0 {
            ChatCommandEvent::Received(received) => self.received = Some(received),
            ChatCommandEvent::Rejected(rejected) => {
                self.decision = Some(Decision::Rejected(rejected.reason));
                self.answer = Some((ReplyKind::Rejection, rejected.message));
            }
            ChatCommandEvent::JobStarted(started) => {
                self.decision = Some(Decision::Job(started.job_id));
            }
            ChatCommandEvent::Answered(answered) => {
                self.decision = Some(Decision::Answered);
                self.answer = Some((ReplyKind::Answer, answered.text));
            }
            ChatCommandEvent::ReplySent(_) => self.replied = true,
            ChatCommandEvent::ReplyFailed(_) => {}
            ChatCommandEvent::ReplyWithheld(_) => self.replied = true,
        }
    }
}

/// Replaces a server's settings (aggregate id: [`events::chat::settings_id`]).
#[derive(Debug, Clone)]
pub struct ChangeSettings {
    pub platform: Platform,
    pub scope: String,
    pub settings: ChannelSettings,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ChatSettings {
    /// `None` until first changed: the defaults apply.
    pub settings: Option<ChannelSettings>,
}

impl ChatSettings {
    pub fn current(&self) -> ChannelSettings {
        self.settings.clone().unwrap_or_default()
    }
}

impl Aggregate for ChatSettings {
    const TYPE: &'static str = "chat_settings";
    type Command = ChangeSettings;
    type Event = Event<ChatSettingsEvent>;
    type Error = ChatError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ChangeSettings,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ChatError> {
        command
            .settings
            .validate()
            .map_err(ChatError::InvalidSettings)?;
        if self.settings.as_ref() == Some(&command.settings) {
            return Ok(());
        }
        sink.write(
            Event(ChatSettingsEvent::Changed(SettingsChanged {
                platform: command.platform,
                scope: command.scope,
                settings: command.settings,
            })),
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Event<ChatSettingsEvent>) {
        let ChatSettingsEvent::Changed(changed) = event.0;
        self.settings = Some(changed.settings);
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn received() -> CommandReceived {
        CommandReceived {
            platform: Platform::Twitch,
            scope: "nebula".into(),
            channel: "nebula".into(),
            user_id: "42".into(),
            user_name: "viewer".into(),
            message_id: "b34ccfc7-4977-403a-8a94-33c6bac34fb8".into(),
            command: "imagine".into(),
            args: "a red fox".into(),
            options: Default::default(),
            roles: vec![],
        }
    }

    type Commands = TestFramework<ChatCommand>;

    #[test]
    fn a_message_is_received_once() {
        Commands::with(())
            .given(vec![Event(ChatCommandEvent::Received(received()))])
            .when(ChatCommandCommand::Receive(received()))
            .then_expect_error(ChatError::AlreadyReceived);
    }

    #[test]
    fn a_command_is_decided_once() {
        Commands::with(())
            .given(vec![
                Event(ChatCommandEvent::Received(received())),
                Event(ChatCommandEvent::JobStarted(ChatJobStarted {
                    job_id: "j1".into(),
                })),
            ])
            .when(ChatCommandCommand::Reject {
                reason: RejectReason::Cooldown,
                message: "wait".into(),
                retry_after_secs: Some(3),
            })
            .then_expect_error(ChatError::AlreadyDecided);
        // Starting the same job again (a retry after a crash) is a no-op.
        Commands::with(())
            .given(vec![
                Event(ChatCommandEvent::Received(received())),
                Event(ChatCommandEvent::JobStarted(ChatJobStarted {
                    job_id: "j1".into(),
                })),
            ])
            .when(ChatCommandCommand::StartJob {
                job_id: "j1".into(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_result_is_delivered_once() {
        let sent = Event(ChatCommandEvent::ReplySent(ReplySent {
            kind: ReplyKind::Result,
            text: "done".into(),
            artifact: None,
        }));
        Commands::with(())
            .given(vec![Event(ChatCommandEvent::Received(received()))])
            .when(ChatCommandCommand::RecordReply {
                kind: ReplyKind::Result,
                text: "done".into(),
                artifact: None,
            })
            .then_expect_events(vec![sent.clone()]);
        Commands::with(())
            .given(vec![Event(ChatCommandEvent::Received(received())), sent])
            .when(ChatCommandCommand::RecordReply {
                kind: ReplyKind::Result,
                text: "done".into(),
                artifact: None,
            })
            .then_expect_error(ChatError::AlreadyReplied);
    }

    #[test]
    fn settings_are_validated_and_unchanged_settings_record_nothing() {
        let bad = ChannelSettings {
            quota_window_secs: 0,
            ..ChannelSettings::default()
        };
        TestFramework::<ChatSettings>::with(())
            .given_no_previous_events()
            .when(ChangeSettings {
                platform: Platform::Discord,
                scope: "1".into(),
                settings: bad,
            })
            .then_expect_error(ChatError::InvalidSettings(
                "quota_window_secs must be 1..=86400".into(),
            ));
        let same = ChannelSettings::default();
        TestFramework::<ChatSettings>::with(())
            .given(vec![Event(ChatSettingsEvent::Changed(SettingsChanged {
                platform: Platform::Discord,
                scope: "1".into(),
                settings: same.clone(),
            }))])
            .when(ChangeSettings {
                platform: Platform::Discord,
                scope: "1".into(),
                settings: same,
            })
            .then_expect_events(vec![]);
    }
}
