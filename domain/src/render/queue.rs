//! The one render queue: admission under the cap (and chat's share of it, and each chat
//! user's limit), release, pause and resume.

use std::collections::{BTreeMap, BTreeSet};

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::render::{QueueAdmitted, QueuePaused, QueueReleased, RenderQueueEvent};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone)]
pub enum QueueCommand {
    /// Takes a place in the queue for `job_id`, unless `cap` places are taken (or, for a chat
    /// command, chat's share or the user's limit).
    Admit {
        job_id: String,
        cap: usize,
        chat: Option<ChatPlace>,
    },
    /// Gives the place back (the job left the queue: assigned, cancelled, or never created).
    Release {
        job_id: String,
    },
    Pause {
        reason: String,
    },
    Resume,
}

/// Who a chat command's place is for, and the limits chat's places keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPlace {
    /// `<platform>:<user id>`.
    pub user: String,
    /// Places one chat user may hold at once.
    pub per_user: usize,
    /// Places all chat commands may hold at once (chat's share of the cap).
    pub share: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the render queue is full ({cap} jobs queued); try again when some have started")]
    Full { cap: usize },
    #[error("chat's share of the render queue is taken ({share} jobs queued from chat)")]
    ChatShareFull { share: usize },
    #[error("you already have {per_user} image(s) waiting")]
    UserFull { per_user: usize },
    #[error("the render queue is already paused")]
    AlreadyPaused,
    #[error("the render queue is not paused")]
    NotPaused,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RenderQueue {
    pub admitted: BTreeSet<String>,
    pub paused: bool,
    /// The admitted jobs chat commands started, with their user.
    #[serde(default)]
    pub chat: BTreeMap<String, String>,
}

impl Aggregate for RenderQueue {
    const TYPE: &'static str = "render_queue";
    type Command = QueueCommand;
    type Event = Event<RenderQueueEvent>;
    type Error = QueueError;
    type Services = ();

    async fn handle(
        &mut self,
        command: QueueCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), QueueError> {
        let event = match command {
            QueueCommand::Admit { job_id, cap, chat } => {
                if self.admitted.contains(&job_id) {
                    return Ok(());
                }
                if self.admitted.len() >= cap {
                    return Err(QueueError::Full { cap });
                }
                if let Some(place) = &chat {
                    if self.chat.len() >= place.share {
                        return Err(QueueError::ChatShareFull { share: place.share });
                    }
                    let held = self.chat.values().filter(|u| **u == place.user).count();
                    if held >= place.per_user {
                        return Err(QueueError::UserFull {
                            per_user: place.per_user,
                        });
                    }
                }
                RenderQueueEvent::Admitted(QueueAdmitted {
                    job_id,
                    chat_user: chat.map(|place| place.user),
                })
            }
            QueueCommand::Release { job_id } => {
                if !self.admitted.contains(&job_id) {
                    return Ok(());
                }
                RenderQueueEvent::Released(QueueReleased { job_id })
            }
            QueueCommand::Pause { reason } => {
                if self.paused {
                    return Err(QueueError::AlreadyPaused);
                }
                RenderQueueEvent::Paused(QueuePaused { reason })
            }
            QueueCommand::Resume => {
                if !self.paused {
                    return Err(QueueError::NotPaused);
                }
                RenderQueueEvent::Resumed
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<RenderQueueEvent>) {
        match event.0 {
            RenderQueueEvent::Admitted(admitted) => {
                if let Some(user) = admitted.chat_user {
                    self.chat.insert(admitted.job_id.clone(), user);
                }
                self.admitted.insert(admitted.job_id);
            }
            RenderQueueEvent::Released(released) => {
                self.chat.remove(&released.job_id);
                self.admitted.remove(&released.job_id);
            }
            RenderQueueEvent::Paused(_) => self.paused = true,
            RenderQueueEvent::Resumed => self.paused = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    #[test]
    fn the_queue_refuses_past_its_cap_and_admits_once_per_job() {
        let given: Vec<_> = (0..3)
            .map(|i| {
                Event(RenderQueueEvent::Admitted(QueueAdmitted {
                    job_id: format!("j{i}"),
                    chat_user: None,
                }))
            })
            .collect();
        TestFramework::<RenderQueue>::with(())
            .given(given.clone())
            .when(QueueCommand::Admit {
                job_id: "j3".into(),
                cap: 3,
                chat: None,
            })
            .then_expect_error(QueueError::Full { cap: 3 });
        TestFramework::<RenderQueue>::with(())
            .given(given.clone())
            .when(QueueCommand::Admit {
                job_id: "j1".into(),
                cap: 3,
                chat: None,
            })
            .then_expect_events(vec![]);
        let mut released = given;
        released.push(Event(RenderQueueEvent::Released(QueueReleased {
            job_id: "j0".into(),
        })));
        TestFramework::<RenderQueue>::with(())
            .given(released)
            .when(QueueCommand::Admit {
                job_id: "j3".into(),
                cap: 3,
                chat: None,
            })
            .then_expect_events(vec![Event(RenderQueueEvent::Admitted(QueueAdmitted {
                job_id: "j3".into(),
                chat_user: None,
            }))]);
    }

    #[test]
    fn chat_keeps_to_its_share_of_the_queue_and_each_user_to_their_limit() {
        let admitted = |job: &str, user: Option<&str>| {
            Event(RenderQueueEvent::Admitted(QueueAdmitted {
                job_id: job.into(),
                chat_user: user.map(str::to_owned),
            }))
        };
        let place = |user: &str| ChatPlace {
            user: user.into(),
            per_user: 1,
            share: 2,
        };
        let admit = |job: &str, chat: Option<ChatPlace>| QueueCommand::Admit {
            job_id: job.into(),
            cap: 10,
            chat,
        };
        let given = vec![admitted("d1", None), admitted("c1", Some("twitch:1"))];
        TestFramework::<RenderQueue>::with(())
            .given(given.clone())
            .when(admit("c2", Some(place("twitch:1"))))
            .then_expect_error(QueueError::UserFull { per_user: 1 });
        TestFramework::<RenderQueue>::with(())
            .given(given.clone())
            .when(admit("c2", Some(place("twitch:2"))))
            .then_expect_events(vec![admitted("c2", Some("twitch:2"))]);
        let mut full = given.clone();
        full.push(admitted("c2", Some("twitch:2")));
        TestFramework::<RenderQueue>::with(())
            .given(full.clone())
            .when(admit("c3", Some(place("twitch:3"))))
            .then_expect_error(QueueError::ChatShareFull { share: 2 });
        // The dashboard still has the rest of the queue.
        TestFramework::<RenderQueue>::with(())
            .given(full.clone())
            .when(admit("d2", None))
            .then_expect_events(vec![admitted("d2", None)]);
        // A released chat job gives its user and chat's share a place back.
        full.push(Event(RenderQueueEvent::Released(QueueReleased {
            job_id: "c1".into(),
        })));
        TestFramework::<RenderQueue>::with(())
            .given(full)
            .when(admit("c3", Some(place("twitch:1"))))
            .then_expect_events(vec![admitted("c3", Some("twitch:1"))]);
    }
}
