//! Exponential backoff with jitter, as a pure function of the attempt number
//! and a random sample, so it can be tested without clocks or RNG state.

use std::time::Duration;

/// Delay policy between reconnect attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound of every delay, jitter included.
    pub max: Duration,
    /// Growth factor per failed attempt.
    pub multiplier: f64,
    /// Relative spread: a delay `d` becomes uniform in `d·(1-jitter) .. d·(1+jitter)`.
    pub jitter: f64,
}

impl Backoff {
    /// The reference's remote policy: 1 s, ×1.6, ±20 %, capped at 15 s.
    pub const REMOTE: Self = Self {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(15),
        multiplier: 1.6,
        jitter: 0.2,
    };

    /// For a local socket: retry quickly, a local server restarts fast.
    pub const LOCAL: Self = Self {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        multiplier: 2.0,
        jitter: 0.2,
    };

    /// Delay before retry number `attempt` (0-based); `sample` is uniform in `[0, 1)`.
    pub fn delay(&self, attempt: u32, sample: f64) -> Duration {
        let base = self.initial.as_secs_f64() * self.multiplier.powi(attempt.min(64) as i32);
        let base = base.min(self.max.as_secs_f64());
        let spread = self.jitter.clamp(0.0, 1.0) * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((base * (1.0 + spread)).clamp(0.0, self.max.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_with_bounded_jitter() {
        let b = Backoff::REMOTE;
        assert_eq!(b.delay(0, 0.5), Duration::from_secs(1));
        assert_eq!(b.delay(1, 0.5), Duration::from_secs_f64(1.6));
        assert_eq!(b.delay(30, 0.5), Duration::from_secs(15));
        assert_eq!(b.delay(u32::MAX, 0.999), Duration::from_secs(15));
        let low = b.delay(2, 0.0).as_secs_f64();
        let high = b.delay(2, 0.999_999).as_secs_f64();
        assert!((low - 2.56 * 0.8).abs() < 1e-6, "{low}");
        assert!((high - 2.56 * 1.2).abs() < 1e-4, "{high}");
    }
}
