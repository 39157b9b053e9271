//! Summaries of refusals: in a flood, the refusals a channel's send budget cannot answer one by
//! one are merged, per channel, into one message every `every` ("41 commands refused in the
//! last 30 s: 35 cooldown, 6 quota — @ann @bob … and 12 more").
//!
//! Each merged refusal is recorded on its command (`chat.reply_withheld`) before it joins a
//! summary; a summary still gathering when the process stops is not sent.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use common::metrics::Registry;
use tokio_util::sync::CancellationToken;

use crate::reply::Replier;

/// Names at most this many users in one summary (Twitch messages end at 500 characters).
const NAMES: usize = 12;

pub(crate) struct Summaries {
    every: Duration,
    channels: Mutex<BTreeMap<String, Gathered>>,
}

/// The refusals of one channel since its last summary.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
struct Gathered {
    count: usize,
    /// User names, in the order they were first refused.
    users: Vec<String>,
    /// How many refusals gave each message's first words (the reason, in the user's terms).
    reasons: BTreeMap<String, usize>,
}

impl Summaries {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            channels: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Gathered>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one refusal (what the user would have been told) to `channel`'s next summary.
    pub(crate) fn add(&self, channel: &str, user: &str, told: &str) {
        let mut channels = self.lock();
        let gathered = channels.entry(channel.to_owned()).or_default();
        gathered.count += 1;
        if !gathered.users.iter().any(|u| u == user) {
            gathered.users.push(user.to_owned());
        }
        *gathered.reasons.entry(reason_of(told)).or_default() += 1;
    }

    /// Takes every channel's gathered refusals, as the messages to post.
    fn take(&self) -> Vec<(String, String)> {
        let every = self.every;
        std::mem::take(&mut *self.lock())
            .into_iter()
            .map(|(channel, gathered)| (channel, text(&gathered, every)))
            .collect()
    }

    /// Posts the summaries every `every` until `cancel` fires.
    pub(crate) async fn run(
        &self,
        replier: &dyn Replier,
        metrics: &Registry,
        cancel: CancellationToken,
    ) {
        let every = self.every;
        let platform = replier.platform();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            for (channel, text) in self.take() {
                match replier.post(&channel, &text).await {
                    Ok(()) => {
                        metrics.add(
                            "nebula_chat_summaries_total",
                            &[("platform", platform.as_str())],
                            1.0,
                        );
                        tracing::info!(%platform, channel, text, "summary of refusals posted");
                    }
                    Err(err) => {
                        tracing::warn!(%platform, channel, error = %err, "summary of refusals not posted");
                    }
                }
            }
        }
    }
}

/// The kind of a refusal, from what the user would have been told: its words up to the first
/// number or punctuation ("please wait", "this channel has used its").
fn reason_of(told: &str) -> String {
    let words: Vec<&str> = told
        .split_whitespace()
        .take_while(|w| w.chars().all(char::is_alphabetic) || w.ends_with("'s"))
        .take(5)
        .collect();
    if words.is_empty() {
        "refused".to_owned()
    } else {
        words.join(" ")
    }
}

fn text(gathered: &Gathered, every: Duration) -> String {
    let reasons: Vec<String> = gathered
        .reasons
        .iter()
        .map(|(reason, n)| format!("{n}× {reason}"))
        .collect();
    let mut names: Vec<String> = gathered
        .users
        .iter()
        .take(NAMES)
        .map(|u| format!("@{u}"))
        .collect();
    if gathered.users.len() > NAMES {
        names.push(format!("and {} more", gathered.users.len() - NAMES));
    }
    let commands = if gathered.count == 1 {
        "command"
    } else {
        "commands"
    };
    format!(
        "{} {commands} refused in the last {} s ({}): {}",
        gathered.count,
        every.as_secs(),
        reasons.join(", "),
        names.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_merge_per_channel_with_their_reasons_and_users() {
        let summaries = Summaries::new(Duration::from_secs(30));
        for n in 0..20 {
            summaries.add(
                "flood",
                &format!("user{n}"),
                "please wait 12 s before the next imagine",
            );
        }
        summaries.add("flood", "user0", "please wait 3 s before the next imagine");
        summaries.add(
            "flood",
            "late",
            "this channel has used its 20 images for now; more in 40 min",
        );
        summaries.add("calm", "ann", "please wait 5 s before the next imagine");
        let mut posts = summaries.take();
        posts.sort();
        assert_eq!(posts.len(), 2);
        assert_eq!(
            posts[0],
            (
                "calm".to_owned(),
                "1 command refused in the last 30 s (1× please wait): @ann".to_owned()
            )
        );
        let (channel, text) = &posts[1];
        assert_eq!(channel, "flood");
        assert!(
            text.starts_with(
                "22 commands refused in the last 30 s (21× please wait, 1× this channel has used its): @user0 @user1"
            ),
            "{text}"
        );
        assert!(text.ends_with("@user11 and 9 more"), "{text}");
        assert!(text.len() < 500);
        // Taken once: the next summary starts empty.
        assert!(summaries.take().is_empty());
    }
}
