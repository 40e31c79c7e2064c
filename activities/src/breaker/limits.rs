//! The limits on calls in flight while a breaker is closed, each a pure
//! function of the breaker's counters and the time it is given:
//!
//! - **burst**: after a quiet moment (nothing in flight, no answer for
//!   [`QUIET_MS`]), at most `burst` calls go out before the dependency
//!   answers one; each healthy answer lets `burst` more be in flight, so
//!   the limit grows sixfold per round trip while the answers are good
//!   (a worker starting 2,000 sagas against a 150 ms provider is past the
//!   limit in four round trips; one more call per answer, TCP's slow
//!   start, took nine and cost the benchmark 13%). Without it,
//!   a sale's batch of orders sends its whole batch into an outage that
//!   began while the worker was quiet, all in one millisecond, before the
//!   first 503 can come back. Calls beyond it are held in memory, not
//!   sent to wait (see `attempt::run_attempt`).
//! - **suspect**: once a call has failed, no more calls in flight than the
//!   failures still needed to open, until a healthy answer.
//! - **ramp**: after an outage, from `probes` back to the earlier peak.

/// Nothing in flight and no answer for this long: the next calls go out
/// `burst` at a time again. Shorter than a sale's quiet gaps (a batch of
/// orders every 250 ms, answered in 50 ms, leaves 200 ms), longer than a
/// group commit's round trip (a few ms), so a worker under steady load
/// never restarts.
pub(super) const QUIET_MS: u64 = 100;

/// The ramp after an outage ends when its limit is this many times the
/// peak before the outage.
const RAMP_ENDS_AT: u64 = 4;

/// The burst limit's state.
#[derive(Debug, Clone, Copy)]
pub(super) struct Burst {
    /// The setting: calls after a quiet moment, and the growth per
    /// healthy answer (0: no limit).
    burst: u32,
    limit: u32,
    last_answer_ms: u64,
}

impl Burst {
    /// A limit that starts at `burst` (the first calls a worker makes
    /// come after a quiet moment).
    pub(super) fn new(burst: u32) -> Burst {
        Burst {
            burst,
            limit: burst,
            last_answer_ms: 0,
        }
    }

    /// The calls it lets be in flight at `now_ms` with `in_flight` out
    /// (`None`: `burst` is 0, no limit).
    pub(super) fn limit(&mut self, in_flight: u32, now_ms: u64) -> Option<u32> {
        if self.burst == 0 {
            return None;
        }
        if in_flight == 0 && now_ms.saturating_sub(self.last_answer_ms) >= QUIET_MS {
            self.limit = self.burst;
        }
        Some(self.limit)
    }

    /// An answer came at `now_ms`; a healthy one lets `burst` more calls
    /// be in flight.
    pub(super) fn answered(&mut self, healthy: bool, now_ms: u64) {
        self.last_answer_ms = now_ms;
        if healthy {
            self.limit = self.limit.saturating_add(self.burst);
        }
    }
}

/// While a run of `run_failures` counted failures is under way, calls in
/// flight are held to the failures still needed to open (`consecutive`):
/// a burst of calls cannot all meet an outage before the breaker hears of
/// it. The first healthy answer ends the run.
pub(super) fn suspect(consecutive: u32, run_failures: u32) -> Option<u32> {
    (consecutive > 0 && run_failures > 0).then(|| consecutive.saturating_sub(run_failures).max(1))
}

/// The ramp after an outage: since `from_ms`, from the breaker closing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ramp {
    pub(super) from_ms: u64,
    /// The most calls in flight while healthy before the outage.
    pub(super) peak: u32,
}

/// The calls the ramp lets be in flight at `now_ms`, while it lasts: the
/// earlier peak times the share of `ramp_ms` gone by (at least `probes`),
/// so it reaches the peak after `ramp_ms` and goes on growing at that
/// pace, without a cliff where a backlog would rush in, until it is
/// [`RAMP_ENDS_AT`] times the peak; then the ramp ends (`*ramp = None`).
pub(super) fn ramp(ramp: &mut Option<Ramp>, probes: u32, ramp_ms: u64, now_ms: u64) -> Option<u32> {
    let r = (*ramp)?;
    let peak = u64::from(r.peak.max(1));
    let first = u64::from(probes).clamp(1, peak);
    let grown = peak * now_ms.saturating_sub(r.from_ms) / ramp_ms.max(1);
    if grown >= RAMP_ENDS_AT * peak {
        *ramp = None;
        return None;
    }
    Some(grown.max(first) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_after_quiet_goes_out_a_few_at_a_time_and_grows_sixfold_per_round_trip() {
        let mut b = Burst::new(5);
        assert_eq!(b.limit(0, 1_000), Some(5));
        // Five answers in one round trip: thirty may be in flight.
        for _ in 0..5 {
            b.answered(true, 1_050);
        }
        assert_eq!(b.limit(0, 1_050), Some(30));
        // Under steady load the limit stays; a quiet moment restarts it.
        assert_eq!(b.limit(0, 1_050 + QUIET_MS - 1), Some(30));
        assert_eq!(b.limit(3, 5_000), Some(30));
        assert_eq!(b.limit(0, 1_050 + QUIET_MS), Some(5));
    }

    #[test]
    fn failed_answers_do_not_grow_the_burst_and_zero_turns_it_off() {
        let mut b = Burst::new(5);
        b.answered(false, 10);
        assert_eq!(b.limit(1, 10), Some(5));
        assert_eq!(Burst::new(0).limit(0, 10), None);
    }

    #[test]
    fn the_suspect_hold_is_the_failures_still_needed() {
        assert_eq!(suspect(5, 0), None);
        assert_eq!(suspect(5, 1), Some(4));
        assert_eq!(suspect(5, 7), Some(1));
        assert_eq!(suspect(0, 3), None);
    }
}
