//! Twitch's send limits: 20 messages per 30 seconds, or 100 in channels where the bot is a
//! moderator (or the broadcaster), counted per channel, so a flood in one channel never spends
//! another's budget. A send over the limit waits for the window to move on; it is never
//! dropped. [`SendLimiter::room`] says how many may go now, so a sender can choose to hold back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

pub struct SendLimiter {
    window: Duration,
    normal: usize,
    moderator: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When each message of the last window went out, by channel.
    sent: HashMap<String, VecDeque<Instant>>,
    moderated: HashSet<String>,
}

impl State {
    fn limit(&self, limiter: &SendLimiter, channel: &str) -> usize {
        if self.moderated.contains(channel) {
            limiter.moderator
        } else {
            limiter.normal
        }
    }

    /// The sends of `channel` still inside the window.
    fn recent(&mut self, window: Duration, channel: &str, now: Instant) -> &mut VecDeque<Instant> {
        let sent = self.sent.entry(channel.to_owned()).or_default();
        while sent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= window)
        {
            sent.pop_front();
        }
        sent
    }
}

impl SendLimiter {
    pub fn new(window: Duration, normal: usize, moderator: usize) -> Self {
        Self {
            window,
            normal,
            moderator,
            state: Mutex::new(State::default()),
        }
    }

    /// Twitch counts its 30 s window by when a message arrives; ours counts by when it is sent,
    /// so the window is a second longer: a message held up in transit (twitch-irc sends through
    /// a pool of connections) never lands inside the window of one sent later.
    pub fn twitch() -> Self {
        Self::new(Duration::from_secs(31), 20, 100)
    }

    pub fn set_moderator(&self, channel: &str, moderator: bool) {
        let mut state = self.lock();
        if moderator {
            state.moderated.insert(channel.to_owned());
        } else {
            state.moderated.remove(channel);
        }
    }

    /// Waits until one more message may go to `channel`, and counts it.
    pub async fn acquire(&self, channel: &str) {
        loop {
            let wait = {
                let mut state = self.lock();
                let limit = state.limit(self, channel);
                let now = Instant::now();
                let sent = state.recent(self.window, channel, now);
                if sent.len() < limit {
                    sent.push_back(now);
                    return;
                }
                // The send that makes room is the one `limit` places from the end.
                let index = sent.len() - limit;
                sent[index] + self.window - now
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// How many messages may go to `channel` now without waiting.
    pub fn room(&self, channel: &str) -> usize {
        let mut state = self.lock();
        let limit = state.limit(self, channel);
        let sent = state.recent(self.window, channel, Instant::now()).len();
        limit.saturating_sub(sent)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn twenty_per_window_unless_moderator() {
        let limiter = SendLimiter::twitch();
        let start = Instant::now();
        for _ in 0..20 {
            limiter.acquire("chan").await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.acquire("chan").await;
        assert_eq!(start.elapsed(), Duration::from_secs(31));

        let limiter = SendLimiter::twitch();
        limiter.set_moderator("modded", true);
        let start = Instant::now();
        for _ in 0..100 {
            limiter.acquire("modded").await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(limiter.room("modded"), 0);
        // Another channel keeps its own budget.
        assert_eq!(limiter.room("other"), 20);
        for _ in 0..20 {
            limiter.acquire("other").await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(limiter.room("other"), 0);
        limiter.acquire("modded").await;
        assert_eq!(start.elapsed(), Duration::from_secs(31));
        assert_eq!(limiter.room("other"), 20);
    }
}
