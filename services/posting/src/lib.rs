//! The Stream Bot: posts an announcement, or a finished artifact's link, to Twitch (a chat
//! announcement through Helix), YouTube (the live chat, through the Data API) and Kick (the
//! channel's chat, through its public API).
//!
//! A post is requested on the `post` aggregate (`POST /api/posts`); the [`Poster`] follows
//! `post.requested` events with a durable consumer, tries each destination still pending, and
//! records every outcome as an event (`post.delivered`, `post.failed` with `will_retry`). A 429,
//! a 5xx or a lost connection is tried again with backoff, up to `post.max_attempts`; a refusal
//! (a bad token, a chat that is not live) is final at once. Every API base is configurable:
//! the same path reaches the platform, a proxy or a local fake.

mod platforms;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use bus::consumer::{ConsumerSpec, Delivery, Outcome};
use bus::store::{CommandMeta, Commands, JetStreamStore, commands, execute};
use bus::{Bus, StreamName};
use cqrs_es::{AggregateError, EventStore};
use domain::post::{Post, PostCommand, PostError};
use events::post::{Destination, PostEvent, PostRequested};
use events::{Actor, EventEnvelope};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use platforms::{HelixConfig, KickConfig, YoutubeConfig};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub twitch: HelixConfig,
    pub youtube: YoutubeConfig,
    pub kick: KickConfig,
    /// Attempts per destination before a post there is given up.
    pub max_attempts: u32,
    /// A post not out this long after it was requested is given up (an announcement hours
    /// late is worse than none); 0: no limit.
    pub max_age_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            twitch: HelixConfig::default(),
            youtube: YoutubeConfig::default(),
            kick: KickConfig::default(),
            max_attempts: 5,
            max_age_secs: 3600,
        }
    }
}

impl Config {
    /// Whether the Stream Bot runs (some destination has a token).
    pub fn enabled(&self) -> bool {
        self.twitch.token.is_some() || self.youtube.token.is_some() || self.kick.token.is_some()
    }

    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, url) in [
            ("twitch.api_url", &self.twitch.api_url),
            ("youtube.api_url", &self.youtube.api_url),
            ("kick.api_url", &self.kick.api_url),
            ("twitch.token_url", &self.twitch.token_url),
            ("youtube.token_url", &self.youtube.token_url),
            ("kick.token_url", &self.kick.token_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!("{name} must be an http(s) url, got {url:?}"));
            }
        }
        if self.max_attempts == 0 {
            problems.push("max_attempts must be at least 1".to_owned());
        }
        problems
    }
}

/// Starts the Stream Bot: it sends every requested post, with links under the site's public
/// URL, keeping refreshed tokens in the site's state directory.
pub fn start(ctx: &service::Context, config: Config) -> anyhow::Result<()> {
    let poster = Arc::new(Poster::new(
        ctx.bus.clone(),
        config,
        ctx.site.public_url.clone(),
        Some(&ctx.site.state_dir),
    )?);
    ctx.spawn("stream-bot", move |cancel| Arc::clone(&poster).run(cancel));
    Ok(())
}

/// Why a post to one destination did not happen.
#[derive(Debug, Clone)]
pub(crate) struct PostFailure {
    pub(crate) message: String,
    pub(crate) retryable: bool,
    /// The platform answered 401: a refreshed token may do.
    pub(crate) unauthorized: bool,
}

impl PostFailure {
    pub(crate) fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            unauthorized: false,
        }
    }

    pub(crate) fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            unauthorized: false,
        }
    }
}

struct Poster {
    bus: Bus,
    http: reqwest::Client,
    config: Arc<Config>,
    public_url: String,
    posts: Commands<Post>,
    post_state: JetStreamStore<Post>,
    tokens: tokens::Tokens,
}

impl Poster {
    /// `public_url`: where the gateway's `/share/<token>.png` links are reachable;
    /// `state_dir`: where refreshed tokens are kept (`post-tokens.json`).
    fn new(
        bus: Bus,
        config: Config,
        public_url: String,
        state_dir: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("nebula-command/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let tokens = tokens::Tokens::load(
            [
                (
                    Destination::Twitch,
                    config.twitch.token.clone(),
                    config.twitch.refresh_token.clone(),
                ),
                (
                    Destination::Youtube,
                    config.youtube.token.clone(),
                    config.youtube.refresh_token.clone(),
                ),
                (
                    Destination::Kick,
                    config.kick.token.clone(),
                    config.kick.refresh_token.clone(),
                ),
            ],
            state_dir.map(|dir| dir.join("post-tokens.json")),
        );
        Ok(Self {
            tokens,
            posts: commands(bus.clone(), ()),
            post_state: JetStreamStore::new(bus.clone()),
            bus,
            http,
            config: Arc::new(config),
            public_url,
        })
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut spec = ConsumerSpec::new(StreamName::Events, "post-worker");
        spec.filter_subject = Some(events::subjects::event("post", "*"));
        // The post's own attempt count decides when to give up; the consumer allows more.
        spec.max_deliver = i64::from(self.config.max_attempts) + 3;
        // One post at a time, kept alive while it is sent (see `deliver`): a post must never be
        // handed to a second worker while the first is still sending it.
        spec.max_ack_pending = 1;
        spec.ack_wait = Duration::from_secs(60);
        spec.backoff = vec![
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(15),
            Duration::from_secs(60),
        ];
        let this = &*self;
        self.bus
            .consume_commits(spec, cancel, move |commit, delivery| {
                let delivery = delivery.clone();
                async move { this.handle(commit, &delivery).await }
            })
            .await?;
        Ok(())
    }

    async fn handle(&self, commit: Vec<EventEnvelope>, delivery: &Delivery) -> Outcome {
        for envelope in &commit {
            if let Ok(PostEvent::Requested(_)) = envelope.decode::<PostEvent>()
                && let Err(reason) = self.deliver(envelope, delivery).await
            {
                return Outcome::Retry(reason);
            }
        }
        Outcome::Ack
    }

    /// Tries every destination still pending; `Err` when one is to be tried again.
    async fn deliver(&self, envelope: &EventEnvelope, delivery: &Delivery) -> Result<(), String> {
        let post_id = &envelope.aggregate_id;
        let post = self
            .post_state
            .load_aggregate(post_id)
            .await
            .map_err(|err| err.to_string())?;
        let post = post.state();
        let Some(requested) = &post.requested else {
            return Ok(());
        };
        let meta = CommandMeta::caused_by(envelope, Actor::Service("stream-bot".into()));
        let age = (chrono::Utc::now() - envelope.occurred_at)
            .to_std()
            .unwrap_or_default();
        let too_old = self.config.max_age_secs > 0 && age.as_secs() >= self.config.max_age_secs;
        let mut again = Vec::new();
        for destination in post.pending() {
            let attempts = match post.outcomes.get(&destination) {
                Some(domain::post::Outcome::Pending { attempts, .. }) => *attempts,
                _ => continue,
            };
            if too_old {
                let command = PostCommand::RecordFailed {
                    destination,
                    error: format!(
                        "too old to post: requested {} s ago (post.max_age_secs is {})",
                        age.as_secs(),
                        self.config.max_age_secs
                    ),
                    will_retry: false,
                };
                execute(&self.posts, post_id, command, meta.clone(), 5)
                    .await
                    .map_err(|err| err.to_string())?;
                continue;
            }
            let text = compose(requested, &self.public_url, destination);
            if let Err(err) = delivery.in_progress().await {
                return Err(format!("could not extend the delivery: {err}"));
            }
            let command = match self.send(destination, &text).await {
                Ok(remote_id) => {
                    tracing::info!(%post_id, %destination, "posted");
                    PostCommand::RecordDelivered {
                        destination,
                        remote_id,
                        text,
                    }
                }
                Err(failure) => {
                    let will_retry = failure.retryable && attempts + 1 < self.config.max_attempts;
                    tracing::warn!(%post_id, %destination, error = %failure.message, will_retry, "post failed");
                    self.bus.metrics().add(
                        "nebula_post_failures_total",
                        &[("destination", destination.as_str())],
                        1.0,
                    );
                    if will_retry {
                        again.push(destination.as_str());
                    }
                    PostCommand::RecordFailed {
                        destination,
                        error: failure.message,
                        will_retry,
                    }
                }
            };
            match execute(&self.posts, post_id, command, meta.clone(), 5).await {
                Ok(()) => {}
                Err(AggregateError::UserError(PostError::NotADestination(_))) => {}
                Err(err) => return Err(err.to_string()),
            }
        }
        if again.is_empty() {
            Ok(())
        } else {
            Err(format!("to try again: {}", again.join(", ")))
        }
    }

    /// Posts `text`; a 401 gets the token refreshed (where that is configured) and one more try.
    async fn send(
        &self,
        destination: Destination,
        text: &str,
    ) -> Result<Option<String>, PostFailure> {
        let Some(token) = self.tokens.access(destination) else {
            return Err(platforms::not_configured(&format!(
                "{destination} (post.{destination}.token)"
            )));
        };
        let first = self.call(destination, &token, text).await;
        let refresh = match destination {
            Destination::Twitch => self.config.twitch.refresh(),
            Destination::Youtube => self.config.youtube.refresh(),
            Destination::Kick => self.config.kick.refresh(),
        };
        match (first, refresh) {
            (Err(failure), Some(spec)) if failure.unauthorized => {
                self.tokens
                    .refresh(destination, &self.http, &spec)
                    .await
                    .map_err(|refresh| PostFailure {
                        message: format!("{}; {}", failure.message, refresh.message),
                        ..refresh
                    })?;
                let token = self.tokens.access(destination).unwrap_or(token);
                self.call(destination, &token, text).await
            }
            (outcome, _) => outcome,
        }
    }

    async fn call(
        &self,
        destination: Destination,
        token: &str,
        text: &str,
    ) -> Result<Option<String>, PostFailure> {
        match destination {
            Destination::Twitch => {
                platforms::twitch(&self.http, &self.config.twitch, token, text).await
            }
            Destination::Youtube => {
                platforms::youtube(&self.http, &self.config.youtube, token, text).await
            }
            Destination::Kick => platforms::kick(&self.http, &self.config.kick, token, text).await,
        }
    }
}

/// The message for `destination`: the text, then the artifact's share link, within the
/// platform's length (the text is shortened, never the link).
pub fn compose(requested: &PostRequested, public_url: &str, destination: Destination) -> String {
    let max = destination.max_chars();
    let text = requested.text.trim();
    let Some(token) = &requested.share else {
        return shorten(text, max);
    };
    let link = format!("{}/share/{token}.png", public_url.trim_end_matches('/'));
    let room = max.saturating_sub(link.chars().count() + 1);
    if room < 2 {
        return link; // no room for words beside the link
    }
    format!("{} {link}", shorten(text, room))
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_fits_each_platform_with_its_link_whole() {
        let requested = PostRequested {
            text: "x".repeat(300),
            artifact: Some("ab".repeat(32)),
            destinations: vec![Destination::Youtube],
            share: Some("cd".repeat(16)),
        };
        let youtube = compose(
            &requested,
            "https://nebula.example.com/",
            Destination::Youtube,
        );
        assert_eq!(youtube.chars().count(), 200);
        assert!(youtube.ends_with(&format!(
            "https://nebula.example.com/share/{}.png",
            "cd".repeat(16)
        )));
        assert!(youtube.contains("x… https://"));
        let kick = compose(&requested, "https://nebula.example.com", Destination::Kick);
        assert!(kick.starts_with(&"x".repeat(300)));
        let plain = PostRequested {
            artifact: None,
            share: None,
            text: "  live now  ".into(),
            ..requested
        };
        assert_eq!(compose(&plain, "http://h", Destination::Twitch), "live now");
    }
}
