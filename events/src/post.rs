//! The Stream Bot: an announcement, or a finished artifact, posted to Twitch (a chat
//! announcement through Helix), YouTube (the live chat, through the Data API) and Kick (the
//! channel's chat, through its public API). A post is its own aggregate: what was asked, then
//! one outcome per destination and attempt.

use serde::{Deserialize, Serialize};

use crate::DomainEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    Twitch,
    Youtube,
    Kick,
}

impl Destination {
    pub fn as_str(self) -> &'static str {
        match self {
            Destination::Twitch => "twitch",
            Destination::Youtube => "youtube",
            Destination::Kick => "kick",
        }
    }

    /// The longest message the platform takes, in characters.
    pub fn max_chars(self) -> usize {
        match self {
            Destination::Twitch | Destination::Kick => 500,
            Destination::Youtube => 200,
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostRequested {
    pub text: String,
    /// A finished artifact to share with the post (its SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    pub destinations: Vec<Destination>,
    /// The share token of `artifact` (`render.job_shared`): the post carries its link,
    /// `<public_url>/share/<token>.png`. A post without one carries no link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostDelivered {
    pub destination: Destination,
    /// The platform's id for the message, where it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    /// Exactly what was posted.
    pub text: String,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostFailed {
    pub destination: Destination,
    pub error: String,
    pub attempt: u32,
    /// Whether it is tried again (a 429, a 5xx, a lost connection, attempts left).
    pub will_retry: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PostEvent {
    #[serde(rename = "post.requested")]
    Requested(PostRequested),
    #[serde(rename = "post.delivered")]
    Delivered(PostDelivered),
    #[serde(rename = "post.failed")]
    Failed(PostFailed),
}

impl DomainEvent for PostEvent {
    const AGGREGATE_TYPE: &'static str = "post";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] =
        &["post.requested", "post.delivered", "post.failed"];

    fn event_type(&self) -> &'static str {
        match self {
            PostEvent::Requested(_) => "post.requested",
            PostEvent::Delivered(_) => "post.delivered",
            PostEvent::Failed(_) => "post.failed",
        }
    }
}
