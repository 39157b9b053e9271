//! Posts of the Stream Bot: requested once, then each destination delivered once, or given up
//! after its last failed attempt.

use std::collections::BTreeMap;

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::post::{Destination, PostDelivered, PostEvent, PostFailed, PostRequested};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone)]
pub enum PostCommand {
    Request(PostRequested),
    RecordDelivered {
        destination: Destination,
        remote_id: Option<String>,
        text: String,
    },
    RecordFailed {
        destination: Destination,
        error: String,
        will_retry: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    #[error("this post was already requested")]
    AlreadyRequested,
    #[error("no such post")]
    NotFound,
    #[error("{0} is not a destination of this post")]
    NotADestination(Destination),
    #[error("invalid post: {0}")]
    Invalid(String),
}

/// Where one destination stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Pending {
        attempts: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
    },
    Delivered {
        attempts: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        remote_id: Option<String>,
        text: String,
    },
    Failed {
        attempts: u32,
        error: String,
    },
}

impl Outcome {
    fn attempts(&self) -> u32 {
        match self {
            Outcome::Pending { attempts, .. }
            | Outcome::Delivered { attempts, .. }
            | Outcome::Failed { attempts, .. } => *attempts,
        }
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Post {
    pub requested: Option<PostRequested>,
    pub outcomes: BTreeMap<Destination, Outcome>,
}

impl Post {
    /// The destinations still to be delivered.
    pub fn pending(&self) -> Vec<Destination> {
        self.outcomes
            .iter()
            .filter(|(_, outcome)| matches!(outcome, Outcome::Pending { .. }))
            .map(|(destination, _)| *destination)
            .collect()
    }
}

/// What a post may say.
pub fn validate(requested: &PostRequested) -> Result<(), String> {
    let chars = requested.text.trim().chars().count();
    if chars == 0 {
        return Err("text must not be empty".into());
    }
    if chars > 500 {
        return Err(format!("text is {chars} characters; 500 at most"));
    }
    if requested.destinations.is_empty() {
        return Err("name at least one destination: twitch, youtube or kick".into());
    }
    let mut seen = requested.destinations.clone();
    seen.sort();
    seen.dedup();
    if seen.len() != requested.destinations.len() {
        return Err("a destination is named twice".into());
    }
    if let Some(sha) = &requested.artifact
        && !(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err("artifact must be a SHA-256 in hex".into());
    }
    if requested.share.is_some() && requested.artifact.is_none() {
        return Err("a share link needs the artifact it opens".into());
    }
    if let Some(token) = &requested.share
        && !crate::render::is_share_token(token)
    {
        return Err("share must be a share token (32 hex characters)".into());
    }
    Ok(())
}

impl Aggregate for Post {
    const TYPE: &'static str = "post";
    type Command = PostCommand;
    type Event = Event<PostEvent>;
    type Error = PostError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PostCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PostError> {
        let event = match command {
            PostCommand::Request(requested) => {
                if self.requested.is_some() {
                    return Err(PostError::AlreadyRequested);
                }
                validate(&requested).map_err(PostError::Invalid)?;
                PostEvent::Requested(requested)
            }
            PostCommand::RecordDelivered {
                destination,
                remote_id,
                text,
            } => {
                let outcome = self.outcome(destination)?;
                if matches!(outcome, Outcome::Delivered { .. }) {
                    return Ok(()); // recorded already (a redelivered attempt)
                }
                PostEvent::Delivered(PostDelivered {
                    destination,
                    remote_id,
                    text,
                    attempt: outcome.attempts() + 1,
                })
            }
            PostCommand::RecordFailed {
                destination,
                error,
                will_retry,
            } => {
                let outcome = self.outcome(destination)?;
                if !matches!(outcome, Outcome::Pending { .. }) {
                    return Ok(());
                }
                PostEvent::Failed(PostFailed {
                    destination,
                    error,
                    attempt: outcome.attempts() + 1,
                    will_retry,
                })
            }
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<PostEvent>) {
        match event.0 {
            PostEvent::Requested(requested) => {
                self.outcomes = requested
                    .destinations
                    .iter()
                    .map(|d| {
                        (
                            *d,
                            Outcome::Pending {
                                attempts: 0,
                                last_error: None,
                            },
                        )
                    })
                    .collect();
                self.requested = Some(requested);
            }
            PostEvent::Delivered(delivered) => {
                self.outcomes.insert(
                    delivered.destination,
                    Outcome::Delivered {
                        attempts: delivered.attempt,
                        remote_id: delivered.remote_id,
                        text: delivered.text,
                    },
                );
            }
            PostEvent::Failed(failed) => {
                let outcome = if failed.will_retry {
                    Outcome::Pending {
                        attempts: failed.attempt,
                        last_error: Some(failed.error),
                    }
                } else {
                    Outcome::Failed {
                        attempts: failed.attempt,
                        error: failed.error,
                    }
                };
                self.outcomes.insert(failed.destination, outcome);
            }
        }
    }
}

impl Post {
    fn outcome(&self, destination: Destination) -> Result<&Outcome, PostError> {
        if self.requested.is_none() {
            return Err(PostError::NotFound);
        }
        self.outcomes
            .get(&destination)
            .ok_or(PostError::NotADestination(destination))
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn requested() -> PostRequested {
        PostRequested {
            text: "live now".into(),
            artifact: None,
            destinations: vec![Destination::Twitch, Destination::Kick],
            share: None,
        }
    }

    type Posts = TestFramework<Post>;

    #[test]
    fn a_post_is_requested_once_and_checked() {
        Posts::with(())
            .given(vec![Event(PostEvent::Requested(requested()))])
            .when(PostCommand::Request(requested()))
            .then_expect_error(PostError::AlreadyRequested);
        Posts::with(())
            .given_no_previous_events()
            .when(PostCommand::Request(PostRequested {
                destinations: vec![Destination::Kick, Destination::Kick],
                ..requested()
            }))
            .then_expect_error(PostError::Invalid("a destination is named twice".into()));
        Posts::with(())
            .given_no_previous_events()
            .when(PostCommand::Request(PostRequested {
                share: Some("ab".repeat(16)),
                ..requested()
            }))
            .then_expect_error(PostError::Invalid(
                "a share link needs the artifact it opens".into(),
            ));
        Posts::with(())
            .given_no_previous_events()
            .when(PostCommand::Request(PostRequested {
                artifact: Some("ab".repeat(32)),
                share: Some("../etc".into()),
                ..requested()
            }))
            .then_expect_error(PostError::Invalid(
                "share must be a share token (32 hex characters)".into(),
            ));
    }

    #[test]
    fn attempts_count_and_a_delivery_is_recorded_once() {
        let failed = PostEvent::Failed(PostFailed {
            destination: Destination::Kick,
            error: "kick 503".into(),
            attempt: 1,
            will_retry: true,
        });
        Posts::with(())
            .given(vec![
                Event(PostEvent::Requested(requested())),
                Event(failed.clone()),
            ])
            .when(PostCommand::RecordDelivered {
                destination: Destination::Kick,
                remote_id: Some("m1".into()),
                text: "live now".into(),
            })
            .then_expect_events(vec![Event(PostEvent::Delivered(PostDelivered {
                destination: Destination::Kick,
                remote_id: Some("m1".into()),
                text: "live now".into(),
                attempt: 2,
            }))]);
        Posts::with(())
            .given(vec![
                Event(PostEvent::Requested(requested())),
                Event(PostEvent::Delivered(PostDelivered {
                    destination: Destination::Kick,
                    remote_id: None,
                    text: "live now".into(),
                    attempt: 1,
                })),
            ])
            .when(PostCommand::RecordFailed {
                destination: Destination::Kick,
                error: "late".into(),
                will_retry: false,
            })
            .then_expect_events(vec![]);
        Posts::with(())
            .given(vec![Event(PostEvent::Requested(requested()))])
            .when(PostCommand::RecordFailed {
                destination: Destination::Youtube,
                error: "x".into(),
                will_retry: false,
            })
            .then_expect_error(PostError::NotADestination(Destination::Youtube));
    }
}
