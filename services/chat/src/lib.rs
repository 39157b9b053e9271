//! What every chat platform shares: commands parsed from chat, the per-server rules and limits,
//! turning a command into a render job, and following that job back into the conversation.
//!
//! A platform service (Discord, Twitch) does only the talking: it receives messages, publishes
//! each as an [`Incoming`] on the WORK stream (message id as `Nats-Msg-Id`), and implements
//! [`Replier`]. The [`intake`] consumer decides (events on the `chat_command` aggregate, a render
//! job, an immediate reply); the [`follower`] watches the render jobs chat started and reports
//! their progress and result through the same [`Replier`].

pub mod command;
mod follower;
mod intake;
pub mod limits;
pub mod reply;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use service::Context;

pub use command::{Incoming, hand_over, imagine, parse_imagine, parse_prefixed};
pub use limits::{Limited, Limits};
pub use reply::{Replier, Reply, ReplyError, Stage};

/// What every chat platform shares (`[chat]`; each platform has its own section inside it).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Attempts a chat-started render job gets.
    pub max_attempts: u32,
    /// Prefix of the Redis keys for cooldowns, quotas and reply tokens.
    pub redis_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            redis_prefix: "nebula:chat".to_owned(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=20).contains(&self.max_attempts) {
            problems.push(format!(
                "max_attempts must be 1..=20, got {}",
                self.max_attempts
            ));
        }
        if self.redis_prefix.trim().is_empty() {
            problems.push("redis_prefix is empty".to_owned());
        }
        problems
    }
}

/// Starts what a platform's bot needs besides its listener: the intake that decides its
/// commands and the follower that reports their jobs, both talking through `replier`
/// (progress at most every `progress_every`).
pub async fn start_platform(
    ctx: &Context,
    config: &Config,
    replier: Arc<dyn Replier>,
    progress_every: Duration,
) -> anyhow::Result<()> {
    let site = &ctx.site;
    let limits = Limits::connect(&site.redis_url, &config.redis_prefix)
        .await
        .with_context(|| {
            format!(
                "failed to connect to redis at {}",
                common::redact_url(&site.redis_url)
            )
        })?;
    let artifacts = artifacts::ArtifactStore::open(&site.artifacts_dir).with_context(|| {
        format!(
            "failed to open the artifact store at {}",
            site.artifacts_dir.display()
        )
    })?;
    let (intake_part, follower_part) = match replier.platform() {
        events::chat::Platform::Discord => ("chat-intake-discord", "chat-follow-discord"),
        events::chat::Platform::Twitch => ("chat-intake-twitch", "chat-follow-twitch"),
    };
    let intake = Arc::new(intake::Intake::new(
        ctx.bus.clone(),
        replier.clone(),
        limits.clone(),
        intake::IntakeConfig {
            queue_cap: site.render_queue_cap,
            max_attempts: config.max_attempts,
        },
    ));
    let follower = Arc::new(follower::Follower::new(
        ctx.bus.clone(),
        replier,
        limits,
        artifacts,
        follower::FollowerConfig {
            progress_every,
            public_url: site.public_url.clone(),
        },
    ));
    ctx.spawn(intake_part, move |cancel| Arc::clone(&intake).run(cancel));
    ctx.spawn(follower_part, move |cancel| {
        Arc::clone(&follower).run(cancel)
    });
    Ok(())
}
