//! Retry-policy math: whether to retry and how long to wait, with jitter
//! that is a pure function of (saga id, step, attempt) so replays agree.

use crate::context::ActivityError;
use crate::model::RetryPolicy;

/// FNV-1a, 64 bit: a small, stable hash (unlike `std`'s, which is seeded).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl RetryPolicy {
    /// Decides whether a failed attempt is tried again. `attempt` is the
    /// 1-based number of the attempt that just failed.
    pub fn should_retry(&self, attempt: u32, error: &ActivityError) -> bool {
        error.retryable
            && !self.non_retryable.iter().any(|k| k == &error.kind)
            && (self.max_attempts == 0 || attempt < self.max_attempts)
    }

    /// The delay before attempt `attempt + 1`, in milliseconds: exponential
    /// backoff capped at the max interval, shortened by a deterministic
    /// jitter fraction drawn from `(saga_id, step, attempt)`.
    pub fn delay_ms(&self, attempt: u32, saga_id: &str, step: &str) -> u64 {
        let exp = self
            .backoff_coefficient
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = (self.initial_interval_ms as f64 * exp).min(self.max_interval_ms as f64);
        let mut seed = fnv1a64(saga_id.as_bytes());
        seed ^= fnv1a64(step.as_bytes()).rotate_left(17);
        seed ^= u64::from(attempt).rotate_left(41);
        let frac = (splitmix64(seed) >> 11) as f64 / (1u64 << 53) as f64;
        (base * (1.0 - self.jitter * frac)).round() as u64
    }
}

/// A wait of `base_ms` lengthened by up to a fifth, deterministically per
/// `(saga_id, key, n)`: the sagas an open breaker sent to wait come back
/// spread out instead of all at the instant it lets probes through.
pub fn spread_ms(base_ms: u64, saga_id: &str, key: &str, n: u32) -> u64 {
    let mut seed = fnv1a64(saga_id.as_bytes());
    seed ^= fnv1a64(key.as_bytes()).rotate_left(23);
    seed ^= u64::from(n).rotate_left(47);
    let frac = (splitmix64(seed) >> 11) as f64 / (1u64 << 53) as f64;
    base_ms + (base_ms as f64 * 0.2 * frac).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_interval_ms: 100,
            backoff_coefficient: 2.0,
            max_interval_ms: 1_000,
            max_attempts: 4,
            non_retryable: vec!["card_declined".into()],
            jitter: 0.0,
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        let p = policy();
        let d: Vec<u64> = (1..=6).map(|a| p.delay_ms(a, "s", "x")).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let p = RetryPolicy {
            jitter: 0.5,
            ..policy()
        };
        for a in 1..5 {
            let x = p.delay_ms(a, "order-1", "reserve_stock");
            assert_eq!(x, p.delay_ms(a, "order-1", "reserve_stock"));
            let base = policy().delay_ms(a, "order-1", "reserve_stock");
            assert!(x <= base && x >= base / 2, "{x} vs {base}");
        }
        let spread: std::collections::BTreeSet<u64> = (0..50)
            .map(|i| p.delay_ms(1, &format!("order-{i}"), "reserve_stock"))
            .collect();
        assert!(spread.len() > 10, "jitter should spread sagas: {spread:?}");
    }

    #[test]
    fn retry_decision() {
        let p = policy();
        let net = ActivityError::retryable("network", "connection refused");
        assert!(p.should_retry(1, &net));
        assert!(p.should_retry(3, &net));
        assert!(
            !p.should_retry(4, &net),
            "max_attempts counts the first attempt"
        );
        let declined = ActivityError::retryable("card_declined", "declined");
        assert!(!p.should_retry(1, &declined), "listed kinds never retry");
        let business = ActivityError::business("out_of_stock", "none left");
        assert!(!p.should_retry(1, &business));
        let unlimited = RetryPolicy {
            max_attempts: 0,
            ..policy()
        };
        assert!(unlimited.should_retry(1_000, &net));
    }
}
