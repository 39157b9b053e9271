//! Exponential backoff: the one way a loop waits before trying again.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Waits of `initial`, then twice as long each time, up to `max`. [`Backoff::reset`] after a
/// success starts again from `initial`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait [`Backoff::next_delay`] would give now.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// The wait before the next try; the one after it is twice as long (at most `max`).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max).max(self.initial);
        delay
    }

    /// Back to `initial` (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// Sleeps the next delay.
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Sleeps the next delay unless `cancel` fires first; `false` when it did.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Backoff;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(350));
        let waits: Vec<_> = (0..4).map(|_| backoff.next_delay()).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(350), ms(350)]);
        backoff.reset();
        assert_eq!(backoff.peek(), ms(100));
    }

    #[tokio::test]
    async fn a_cancelled_wait_returns_at_once() {
        let cancel = tokio_util::sync::CancellationToken::new();
        cancel.cancel();
        let mut backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        assert!(!backoff.wait(&cancel).await);
    }
}
