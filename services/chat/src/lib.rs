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
mod restore;
mod summary;

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
    /// Percent of the render queue's places chat commands may hold at once, so chat cannot
    /// starve the dashboard.
    pub queue_share_percent: u32,
    /// Commands a platform decides at once (a user's own commands always in order).
    pub lanes: usize,
    /// How often refusals merged in a flood are posted as one summary per channel, in seconds.
    pub summary_every_secs: u64,
    /// How long a command waits for Redis or NATS to come back before its delivery counts
    /// as failed, in seconds.
    pub outage_wait_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            redis_prefix: "nebula:chat".to_owned(),
            queue_share_percent: 50,
            lanes: 8,
            summary_every_secs: 30,
            outage_wait_secs: 600,
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
        if !(1..=100).contains(&self.queue_share_percent) {
            problems.push(format!(
                "queue_share_percent must be 1..=100, got {}",
                self.queue_share_percent
            ));
        }
        if !(1..=64).contains(&self.lanes) {
            problems.push(format!("lanes must be 1..=64, got {}", self.lanes));
        }
        if !(1..=3600).contains(&self.summary_every_secs) {
            problems.push(format!(
                "summary_every_secs must be 1..=3600, got {}",
                self.summary_every_secs
            ));
        }
        if self.outage_wait_secs > 86_400 {
            problems.push(format!(
                "outage_wait_secs must be at most 86400, got {}",
                self.outage_wait_secs
            ));
        }
        problems
    }

    /// Chat's places in a queue of `cap`: its share, at least one.
    pub fn chat_share(&self, cap: usize) -> usize {
        (cap * self.queue_share_percent as usize)
            .div_ceil(100)
            .max(1)
    }
}

/// What a chat user of one platform may ask for (`[chat.twitch.limits]`, `[chat.discord.limits]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatLimits {
    /// The longest side of an image, in pixels.
    pub max_side: u32,
    /// Sampling steps at most.
    pub max_steps: u32,
    /// Jobs one user may have waiting in the queue at once.
    pub max_queued_per_user: usize,
}

impl Default for ChatLimits {
    fn default() -> Self {
        Self {
            max_side: 1024,
            max_steps: 40,
            max_queued_per_user: 2,
        }
    }
}

impl ChatLimits {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(64..=4096).contains(&self.max_side) {
            problems.push(format!(
                "limits.max_side must be 64..=4096, got {}",
                self.max_side
            ));
        }
        if !(1..=150).contains(&self.max_steps) {
            problems.push(format!(
                "limits.max_steps must be 1..=150, got {}",
                self.max_steps
            ));
        }
        if !(1..=100).contains(&self.max_queued_per_user) {
            problems.push(format!(
                "limits.max_queued_per_user must be 1..=100, got {}",
                self.max_queued_per_user
            ));
        }
        problems
    }

    /// `params` when within these limits, or what the user is told.
    pub fn check(
        &self,
        params: events::render::RenderParams,
    ) -> Result<events::render::RenderParams, String> {
        if params.width.max(params.height) > self.max_side {
            return Err(format!(
                "images here are at most {max}×{max}; ask for a smaller --size",
                max = self.max_side
            ));
        }
        if params.steps > self.max_steps {
            return Err(format!(
                "at most {} steps here; ask for fewer --steps",
                self.max_steps
            ));
        }
        Ok(params)
    }
}

/// Starts what a platform's bot needs besides its listener: the intake that decides its
/// commands (within `limits`) and the follower that reports their jobs, both talking through
/// `replier` (progress at most every `progress_every`).
pub async fn start_platform(
    ctx: &Context,
    config: &Config,
    limits: &ChatLimits,
    replier: Arc<dyn Replier>,
    progress_every: Duration,
) -> anyhow::Result<()> {
    let site = &ctx.site;
    let counts = Limits::connect(&site.redis_url, &config.redis_prefix)
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
        counts.clone(),
        &site.redis_url,
        intake::IntakeConfig {
            queue_cap: site.render_queue_cap,
            chat_share: config.chat_share(site.render_queue_cap),
            max_attempts: config.max_attempts,
            lanes: config.lanes,
            limits: limits.clone(),
            outage_wait: Duration::from_secs(config.outage_wait_secs),
            summary_every: Duration::from_secs(config.summary_every_secs),
        },
    ));
    let follower = Arc::new(follower::Follower::new(
        ctx.bus.clone(),
        replier,
        counts,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_gets_its_share_of_the_queue_and_users_their_limits() {
        let config = Config::default();
        assert_eq!(config.chat_share(100), 50);
        assert_eq!(config.chat_share(1), 1);
        let tight = Config {
            queue_share_percent: 10,
            ..Config::default()
        };
        assert_eq!(tight.chat_share(15), 2);
        assert!(Config::default().validate().is_empty());
        let bad = Config {
            queue_share_percent: 0,
            lanes: 0,
            ..Config::default()
        };
        assert_eq!(bad.validate().len(), 2);

        let limits = ChatLimits::default();
        let mut params = events::render::RenderParams::default();
        (params.width, params.height, params.steps) = (1024, 512, 40);
        assert!(limits.check(params.clone()).is_ok());
        params.height = 1025;
        assert!(
            limits
                .check(params.clone())
                .unwrap_err()
                .contains("at most 1024×1024")
        );
        (params.height, params.steps) = (512, 41);
        assert!(
            limits
                .check(params)
                .unwrap_err()
                .contains("at most 40 steps")
        );
        assert_eq!(
            ChatLimits {
                max_side: 10,
                max_steps: 0,
                max_queued_per_user: 0
            }
            .validate()
            .len(),
            3
        );
    }
}
