//! The knobs: how badly the sandbox behaves, changeable while it serves.
//!
//! A [`Knobs`] value is what a sandbox starts with and what the admin call
//! `GET /_sandbox/knobs` answers; a [`KnobsPatch`] (`POST /_sandbox/knobs`,
//! [`crate::Sandbox::set_knobs`]) changes some of them from the next request
//! on. The live copy sits behind one mutex that every request reads once
//! (a copy of a few words), so a change never half-applies to a request.

use crate::SandboxError;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which side of a request's effect an injected 500 falls on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorSide {
    /// Half before, half after (a real provider's mix). The default.
    #[default]
    Both,
    /// Nothing applied, nothing stored (`Stripe-Should-Retry: true`).
    Before,
    /// Applied, and the 500 stored under the idempotency key
    /// (`Stripe-Should-Retry: false`): the client must reconcile.
    After,
}

/// Every knob, as a value. Rates are fractions of requests, 0.0 to 1.0.
/// The default is a well-behaved provider: every rate 0, no latency, no
/// outage; a spike then lasts 1 s and a held request 30 s (past the HTTP
/// adapter's default 5 s limit) once their rates are raised.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// Fraction of POSTs answered with an injected 500.
    pub error_rate: f64,
    /// Where injected 500s fall relative to the effect.
    pub error_side: ErrorSide,
    /// Delay added before handling each request, in ms.
    pub latency_ms: u64,
    /// When above `latency_ms`, each request's delay is drawn evenly
    /// between the two, in ms (a provider that is slow rather than down:
    /// every call 3 to 8 s, say). 0: every request waits `latency_ms`.
    pub latency_max_ms: u64,
    /// Fraction of requests delayed by a further `spike_ms` (a latency
    /// spike: the slow tail a provider has under load).
    pub spike_rate: f64,
    /// Extra delay of a spiking request, in ms. Default 1,000.
    pub spike_ms: u64,
    /// Fraction of requests held past the client's limit: the request is
    /// applied (as a provider that is slow to answer has) and its answer
    /// comes only after `timeout_ms`.
    pub timeout_rate: f64,
    /// How long a held request waits before it is answered, in ms.
    /// Default 30,000.
    pub timeout_ms: u64,
    /// An intent shows up in search results this long after it was
    /// created, in ms (Stripe documents that search lags writes).
    pub search_lag_ms: u64,
    /// Time left of the current outage, in ms (0: none). During an outage
    /// every API request is answered 503 with `Stripe-Should-Retry: true`
    /// and nothing is applied. Setting it starts an outage of that length
    /// from now; setting 0 ends one.
    pub outage_ms: u64,
    /// `Retry-After` sent with an outage's 503s, in ms, rounded up to
    /// whole seconds (0: none).
    pub retry_after_ms: u64,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs {
            error_rate: 0.0,
            error_side: ErrorSide::Both,
            latency_ms: 0,
            latency_max_ms: 0,
            spike_rate: 0.0,
            spike_ms: 1_000,
            timeout_rate: 0.0,
            timeout_ms: 30_000,
            search_lag_ms: 0,
            outage_ms: 0,
            retry_after_ms: 0,
        }
    }
}

/// Knobs to change; absent ones keep their value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is the Knobs field of the same name
pub struct KnobsPatch {
    pub error_rate: Option<f64>,
    pub error_side: Option<ErrorSide>,
    pub latency_ms: Option<u64>,
    pub latency_max_ms: Option<u64>,
    pub spike_rate: Option<f64>,
    pub spike_ms: Option<u64>,
    pub timeout_rate: Option<f64>,
    pub timeout_ms: Option<u64>,
    pub search_lag_ms: Option<u64>,
    pub outage_ms: Option<u64>,
    pub retry_after_ms: Option<u64>,
}

impl KnobsPatch {
    /// A patch that sets every knob to `knobs`.
    pub fn all(knobs: &Knobs) -> KnobsPatch {
        KnobsPatch {
            error_rate: Some(knobs.error_rate),
            error_side: Some(knobs.error_side),
            latency_ms: Some(knobs.latency_ms),
            latency_max_ms: Some(knobs.latency_max_ms),
            spike_rate: Some(knobs.spike_rate),
            spike_ms: Some(knobs.spike_ms),
            timeout_rate: Some(knobs.timeout_rate),
            timeout_ms: Some(knobs.timeout_ms),
            search_lag_ms: Some(knobs.search_lag_ms),
            outage_ms: Some(knobs.outage_ms),
            retry_after_ms: Some(knobs.retry_after_ms),
        }
    }

    /// Sets the knobs this patch names in `knobs` (no checks: see
    /// [`KnobsPatch::check`]).
    pub fn apply_to(&self, knobs: &mut Knobs) {
        let k = knobs;
        k.error_rate = self.error_rate.unwrap_or(k.error_rate);
        k.error_side = self.error_side.unwrap_or(k.error_side);
        k.latency_ms = self.latency_ms.unwrap_or(k.latency_ms);
        k.latency_max_ms = self.latency_max_ms.unwrap_or(k.latency_max_ms);
        k.spike_rate = self.spike_rate.unwrap_or(k.spike_rate);
        k.spike_ms = self.spike_ms.unwrap_or(k.spike_ms);
        k.timeout_rate = self.timeout_rate.unwrap_or(k.timeout_rate);
        k.timeout_ms = self.timeout_ms.unwrap_or(k.timeout_ms);
        k.search_lag_ms = self.search_lag_ms.unwrap_or(k.search_lag_ms);
        k.outage_ms = self.outage_ms.unwrap_or(k.outage_ms);
        k.retry_after_ms = self.retry_after_ms.unwrap_or(k.retry_after_ms);
    }

    /// Refuses a rate outside 0..=1 (NaN included), naming the knob.
    pub fn check(&self) -> Result<(), SandboxError> {
        if let Some(rate) = self.error_rate {
            if !(0.0..=1.0).contains(&rate) {
                return Err(SandboxError::InvalidErrorRate(rate));
            }
        }
        for (name, rate) in [
            ("spike_rate", self.spike_rate),
            ("timeout_rate", self.timeout_rate),
        ] {
            if let Some(rate) = rate {
                if !(0.0..=1.0).contains(&rate) {
                    return Err(SandboxError::InvalidRate { name, rate });
                }
            }
        }
        Ok(())
    }
}

/// The knobs one request runs under (a snapshot).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Current {
    pub(crate) knobs: Knobs,
    pub(crate) in_outage: bool,
}

/// The live knobs of a running sandbox.
pub(crate) struct LiveKnobs {
    inner: Mutex<Live>,
}

#[derive(Clone, Copy)]
struct Live {
    knobs: Knobs,
    outage_until: Option<Instant>,
}

impl LiveKnobs {
    /// Checked knobs; `outage_ms` > 0 starts an outage now.
    pub(crate) fn new(knobs: &Knobs) -> Result<LiveKnobs, SandboxError> {
        let live = LiveKnobs {
            inner: Mutex::new(Live {
                knobs: Knobs::default(),
                outage_until: None,
            }),
        };
        live.apply(&KnobsPatch::all(knobs))?;
        Ok(live)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        // The lock only guards plain values: a panic cannot leave them torn.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The knobs as of now (`outage_ms`: what is left of the outage).
    pub(crate) fn get(&self) -> Knobs {
        self.current().knobs
    }

    /// The snapshot a request runs under.
    pub(crate) fn current(&self) -> Current {
        let live = *self.lock();
        let now = Instant::now();
        let left = live
            .outage_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        let mut knobs = live.knobs;
        knobs.outage_ms = left.as_millis() as u64;
        Current {
            knobs,
            in_outage: !left.is_zero(),
        }
    }

    /// Checks and applies `patch`; answers the knobs after it.
    pub(crate) fn apply(&self, patch: &KnobsPatch) -> Result<Knobs, SandboxError> {
        patch.check()?;
        {
            let mut live = self.lock();
            patch.apply_to(&mut live.knobs);
            if let Some(ms) = patch.outage_ms {
                live.outage_until = (ms > 0).then(|| Instant::now() + Duration::from_millis(ms));
            }
        }
        Ok(self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let live = LiveKnobs::new(&Knobs {
            latency_ms: 7,
            ..Knobs::default()
        })
        .unwrap();
        let after = live
            .apply(&KnobsPatch {
                spike_rate: Some(0.5),
                spike_ms: Some(100),
                ..KnobsPatch::default()
            })
            .unwrap();
        assert_eq!(after.latency_ms, 7);
        assert_eq!((after.spike_rate, after.spike_ms), (0.5, 100));
    }

    #[test]
    fn rates_outside_0_to_1_are_refused_by_name() {
        let live = LiveKnobs::new(&Knobs::default()).unwrap();
        let error = live
            .apply(&KnobsPatch {
                timeout_rate: Some(2.0),
                ..KnobsPatch::default()
            })
            .unwrap_err();
        assert!(error.to_string().contains("timeout_rate"), "{error}");
        assert!(live
            .apply(&KnobsPatch {
                error_rate: Some(f64::NAN),
                ..KnobsPatch::default()
            })
            .is_err());
    }

    #[test]
    fn an_outage_counts_down_and_zero_ends_it() {
        let live = LiveKnobs::new(&Knobs::default()).unwrap();
        assert!(!live.current().in_outage);
        let knobs = live
            .apply(&KnobsPatch {
                outage_ms: Some(60_000),
                ..KnobsPatch::default()
            })
            .unwrap();
        assert!(knobs.outage_ms > 59_000 && knobs.outage_ms <= 60_000);
        assert!(live.current().in_outage);
        live.apply(&KnobsPatch {
            outage_ms: Some(0),
            ..KnobsPatch::default()
        })
        .unwrap();
        assert!(!live.current().in_outage);
        assert_eq!(live.get().outage_ms, 0);
    }
}
