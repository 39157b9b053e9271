//! Twitch's send limits: 20 messages per 30 seconds, or 100 in channels where the bot is a
//! moderator (or the broadcaster). A send over the limit waits for the window to move on;
//! it is never dropped.

use std::collections::{HashSet, VecDeque};
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
    sent: VecDeque<Instant>,
    moderated: HashSet<String>,
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

    /// Twitch's own numbers.
    pub fn twitch() -> Self {
        Self::new(Duration::from_secs(30), 20, 100)
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
                let now = Instant::now();
                while state
                    .sent
                    .front()
                    .is_some_and(|at| now.duration_since(*at) >= self.window)
                {
                    state.sent.pop_front();
                }
                let limit = if state.moderated.contains(channel) {
                    self.moderator
                } else {
                    self.normal
                };
                if state.sent.len() < limit {
                    state.sent.push_back(now);
                    return;
                }
                // The send that makes room is the one `limit` places from the end.
                let index = state.sent.len() - limit;
                state.sent[index] + self.window - now
            };
            tokio::time::sleep(wait).await;
        }
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
        assert_eq!(start.elapsed(), Duration::from_secs(30));

        let limiter = SendLimiter::twitch();
        limiter.set_moderator("modded", true);
        let start = Instant::now();
        for _ in 0..100 {
            limiter.acquire("modded").await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The non-moderated limit still counts what went out everywhere.
        limiter.acquire("other").await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }
}
