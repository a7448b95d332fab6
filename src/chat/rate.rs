//! The chat's rate limit: a token bucket per session.
//!
//! Capacity B, refilled continuously at R tokens per second, full when the
//! session first enters the room and kept across `/leave` and re-entry (it goes
//! on refilling meanwhile), so leaving and coming back is no way to refill it.

use crate::config::ChatLimits;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn full(limits: &ChatLimits, now: Instant) -> Self {
        let capacity = f64::from(limits.burst);
        TokenBucket {
            tokens: capacity,
            capacity,
            per_second: limits.rate,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(&ChatLimits::default(), t0);
        for _ in 0..10 {
            assert!(b.take(t0));
        }
        assert!(!b.take(t0));
        // 5 per second: one token after 200 ms, not before.
        assert!(!b.take(t0 + Duration::from_millis(150)));
        assert!(b.take(t0 + Duration::from_millis(210)));
        assert!(!b.take(t0 + Duration::from_millis(220)));
    }

    #[test]
    fn refill_stops_at_the_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(&ChatLimits::default(), t0);
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..10 {
            assert!(b.take(later));
        }
        assert!(!b.take(later));
    }
}
