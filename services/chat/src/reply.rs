//! What a platform must be able to say, and the words every platform shares.

use std::path::PathBuf;

use async_trait::async_trait;
use events::chat::{CommandReceived, Platform};
use events::render::Artifact;

/// A step of a job's life worth telling the user about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    Queued { position: usize },
    Started { node_id: String },
    Progress { value: u32, max: u32 },
}

/// One message to the user who typed the command.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The command will not run (cooldown, quota, switched off, not allowed, bad arguments).
    Rejected { text: String },
    /// The answer to a command that starts no job.
    Answer { text: String },
    /// Where the job stands (may replace the previous progress message, as Discord does).
    Progress { job_id: String, stage: Stage },
    /// The finished image: the artifact, where its bytes are, and where it can be seen.
    Image {
        job_id: String,
        artifact: Artifact,
        path: PathBuf,
        url: String,
        seed: u64,
    },
    /// The job ended without an image.
    Failed { job_id: String, text: String },
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ReplyError {
    pub message: String,
    /// Whether trying again later may work (a 429, a 5xx, a lost connection).
    pub retryable: bool,
}

impl ReplyError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// A platform's way of answering in the conversation a command came from.
#[async_trait]
pub trait Replier: Send + Sync + 'static {
    fn platform(&self) -> Platform;

    /// Sends `reply`; returns the text that was sent (recorded in the event log).
    async fn send(
        &self,
        command: &CommandReceived,
        reply_token: Option<&str>,
        reply: &Reply,
    ) -> Result<String, ReplyError>;

    /// How many more messages `channel` takes now without waiting for its send limit; `None`
    /// where the platform has no such limit worth heeding (Discord answers each interaction
    /// on its own token).
    fn room(&self, _channel: &str) -> Option<usize> {
        None
    }

    /// Whether [`Replier::post`] works here: a platform whose every reply belongs to one
    /// command (Discord's interactions must each be answered) cannot post summaries.
    fn can_post(&self) -> bool {
        false
    }

    /// Posts `text` to `channel`, answering no one command (a summary of refusals).
    async fn post(&self, _channel: &str, _text: &str) -> Result<(), ReplyError> {
        Err(ReplyError::permanent(format!(
            "{} cannot post outside a command",
            self.platform()
        )))
    }
}

/// What is kept of a channel's send budget for the replies that must go out (results, answers):
/// a best-effort message (a "queued" notice, progress) is skipped, and a refusal merged into the
/// summary, once no more than this many sends are left in the channel's window.
pub const RESERVE: usize = 5;

/// Whether `channel` is short of room for best-effort messages (see [`RESERVE`]).
pub fn short_of_room(replier: &dyn Replier, channel: &str) -> bool {
    replier.room(channel).is_some_and(|room| room <= RESERVE)
}

/// The words of a reply, as every platform says them (Twitch puts `@user` in front; Discord's
/// answer hangs under the user's command already, and attaches the image).
pub fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Rejected { text } | Reply::Answer { text } => text.clone(),
        Reply::Progress { stage, .. } => match stage {
            Stage::Queued { position } => format!("queued your image (position {position}) 🎨"),
            Stage::Started { node_id } => format!("rendering on {node_id}…"),
            Stage::Progress { value, max } => {
                let percent = u64::from(*value) * 100 / u64::from((*max).max(1));
                format!("rendering… {percent}%")
            }
        },
        Reply::Image { url, seed, .. } => format!("here it is: {url} (seed {seed})"),
        Reply::Failed { text, .. } => format!("sorry, no image this time: {text}"),
    }
}

/// A reply addressed to the user who typed the command: `@user …`.
pub fn text(command: &CommandReceived, reply: &Reply) -> String {
    format!("@{} {}", command.user_name, describe(reply))
}
