//! Fault injection: what the knobs do to one request.
//!
//! Each request rolls its faults once, before anything else happens
//! ([`Faults::roll`]), from the knobs it runs under, so a knob changed
//! mid-request does not half-apply. The one exception is an outage: one
//! that begins while a request waits out its latency fails that request
//! too (the server checks again after the wait; nothing was applied yet).
//! The order of a request's life: outage (503, nothing applied) -> latency
//! and spike (wait) -> outage again -> an injected 500 "before" (nothing
//! applied) -> execute -> an injected 500 "after" (applied, 500 stored) ->
//! held past the client's limit -> answer.
//!
//! Random numbers come from splitmix64 over one atomic counter (no lock);
//! they also make the intents' and refunds' ids.

use crate::knobs::{Current, ErrorSide};
use crate::wire::{error_body, Reply};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where an injected failure happens relative to the request's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InjectSide {
    /// Nothing applied, nothing stored.
    Before,
    /// Applied, and the 500 stored under the idempotency key.
    After,
}

/// The faults one request gets.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Faults {
    /// Answer 503 at once, apply nothing.
    pub(crate) outage: bool,
    /// Wait this long before handling (latency plus any spike).
    pub(crate) delay: Duration,
    /// An injected 500 (POSTs only).
    pub(crate) inject: Option<InjectSide>,
    /// Hold the answer this long after executing.
    pub(crate) hold: Duration,
}

impl Faults {
    /// Rolls the faults of one request; `post` says whether it may get an
    /// injected 500 (GETs never do).
    pub(crate) fn roll(current: &Current, rng: &Rng, post: bool) -> Faults {
        let k = &current.knobs;
        if current.in_outage {
            return Faults {
                outage: true,
                ..Faults::default()
            };
        }
        let mut delay = Duration::from_millis(match k.latency_max_ms {
            max if max > k.latency_ms => k.latency_ms + rng.next_u64() % (max - k.latency_ms + 1),
            _ => k.latency_ms,
        });
        if rng.chance(k.spike_rate) {
            delay += Duration::from_millis(k.spike_ms);
        }
        let inject = if post && rng.chance(k.error_rate) {
            Some(match k.error_side {
                ErrorSide::Before => InjectSide::Before,
                ErrorSide::After => InjectSide::After,
                ErrorSide::Both if rng.next_u64() & 1 == 0 => InjectSide::Before,
                ErrorSide::Both => InjectSide::After,
            })
        } else {
            None
        };
        let hold = if rng.chance(k.timeout_rate) {
            Duration::from_millis(k.timeout_ms)
        } else {
            Duration::ZERO
        };
        Faults {
            outage: false,
            delay,
            inject,
            hold,
        }
    }
}

/// The 500 of an injected failure.
pub(crate) fn injected_reply(side: InjectSide) -> Reply {
    let (detail, retry) = match side {
        InjectSide::Before => ("before applying the request", true),
        InjectSide::After => ("after applying the request", false),
    };
    Reply {
        status: 500,
        body: error_body(
            "api_error",
            None,
            &format!("An unknown error occurred (sandbox: failure injected {detail})."),
            None,
        )
        .to_string(),
        should_retry: Some(retry),
        replayed: false,
    }
}

/// The 503 every request gets during an outage.
pub(crate) fn outage_reply() -> Reply {
    Reply {
        status: 503,
        body: error_body(
            "api_error",
            None,
            "The payment provider is unavailable (sandbox: outage); nothing was applied. Retry later.",
            None,
        )
        .to_string(),
        should_retry: Some(true),
        replayed: false,
    }
}

/// splitmix64: one atomic add per number, no lock.
pub(crate) struct Rng {
    state: AtomicU64,
}

impl Rng {
    /// Seeded from the clock and the process id, so two sandboxes (or two
    /// runs) do not make the same ids.
    pub(crate) fn from_clock() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng {
            state: AtomicU64::new(nanos ^ (u64::from(std::process::id()) << 32)),
        }
    }

    pub(crate) fn next_u64(&self) -> u64 {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `rate` (no draw when the rate is 0).
    fn chance(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < rate
    }

    /// A Stripe-looking id: `prefix` and 24 base62 characters.
    pub(crate) fn new_id(&self, prefix: &str) -> String {
        const ALPHABET: &[u8; 62] =
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut id = String::with_capacity(prefix.len() + 24);
        id.push_str(prefix);
        for _ in 0..3 {
            let mut word = self.next_u64();
            for _ in 0..8 {
                id.push(ALPHABET[(word % 62) as usize] as char);
                word /= 62;
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knobs::Knobs;

    fn current(knobs: Knobs) -> Current {
        Current {
            knobs,
            in_outage: false,
        }
    }

    #[test]
    fn an_outage_overrides_every_other_fault() {
        let rng = Rng::from_clock();
        let c = Current {
            knobs: Knobs {
                error_rate: 1.0,
                latency_ms: 50,
                ..Knobs::default()
            },
            in_outage: true,
        };
        let f = Faults::roll(&c, &rng, true);
        assert!(f.outage);
        assert_eq!(f.delay, Duration::ZERO);
        assert!(f.inject.is_none());
    }

    #[test]
    fn gets_never_get_an_injected_500() {
        let rng = Rng::from_clock();
        let c = current(Knobs {
            error_rate: 1.0,
            ..Knobs::default()
        });
        assert!((0..100).all(|_| Faults::roll(&c, &rng, false).inject.is_none()));
        assert!((0..100).all(|_| Faults::roll(&c, &rng, true).inject.is_some()));
    }

    #[test]
    fn a_latency_spread_draws_every_delay_between_its_ends() {
        let rng = Rng::from_clock();
        let c = current(Knobs {
            latency_ms: 3_000,
            latency_max_ms: 8_000,
            ..Knobs::default()
        });
        let delays: Vec<u128> = (0..2_000)
            .map(|_| Faults::roll(&c, &rng, true).delay.as_millis())
            .collect();
        assert!(delays.iter().all(|d| (3_000..=8_000).contains(d)));
        let low = delays.iter().filter(|d| **d < 5_500).count();
        assert!(
            (800..1_200).contains(&low),
            "{low} of 2000 below the middle"
        );
    }

    #[test]
    fn spikes_and_holds_hit_about_their_rate() {
        let rng = Rng::from_clock();
        let c = current(Knobs {
            latency_ms: 5,
            spike_rate: 0.25,
            spike_ms: 100,
            timeout_rate: 0.5,
            timeout_ms: 1_000,
            ..Knobs::default()
        });
        let rolls: Vec<Faults> = (0..4_000).map(|_| Faults::roll(&c, &rng, true)).collect();
        let spikes = rolls.iter().filter(|f| f.delay.as_millis() == 105).count();
        let plain = rolls.iter().filter(|f| f.delay.as_millis() == 5).count();
        let held = rolls.iter().filter(|f| f.hold.as_millis() == 1_000).count();
        assert_eq!(spikes + plain, 4_000);
        assert!((800..1_200).contains(&spikes), "{spikes} spikes of 4000");
        assert!((1_800..2_200).contains(&held), "{held} held of 4000");
    }
}
