//! Exponential backoff with full jitter (the AWS "full jitter" scheme, as
//! Envoy and gRPC clients use): the n-th consecutive failure waits a uniform
//! random time in `[0, min(max, base * 2^n)]`.

use std::time::Duration;

/// Delay before the first retry grows from this...
pub const BASE: Duration = Duration::from_millis(100);
/// ...up to this ceiling.
pub const MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BASE, MAX)
    }
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// The upper bound of the next delay: `min(max, base * 2^failures)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay to wait now (uniform in `[0, ceiling]`); the next one may be longer.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=ms))
    }

    /// Back to the shortest delays (after a connection stayed healthy).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(10));
        }
        assert_eq!(
            ceilings,
            vec![100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(10));
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
            for _ in 0..3 {
                b.next_delay();
            }
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(800), "{d:?}");
            seen.insert(d.as_millis());
        }
        assert!(seen.len() > 20, "full jitter spreads delays: {seen:?}");
    }
}
