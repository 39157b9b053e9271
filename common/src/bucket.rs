//! A token bucket: the one rate limit of bytes a second (a followed log at the agent and at
//! each viewer).

use std::time::Instant;

/// A token bucket: `rate` bytes a second, up to one second's worth at once.
pub struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: u64) -> Self {
        Self {
            rate: rate as f64,
            tokens: rate as f64,
            at: Instant::now(),
        }
    }

    /// Whether `bytes` may go now (and takes them).
    pub fn take(&mut self, bytes: u64) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_bucket_lets_a_second_through_then_the_rate() {
        let mut bucket = Bucket::new(1000);
        assert!(bucket.take(600));
        assert!(bucket.take(400));
        assert!(!bucket.take(100));
        bucket.at -= Duration::from_millis(200);
        assert!(bucket.take(150));
        assert!(!bucket.take(100));
    }
}
