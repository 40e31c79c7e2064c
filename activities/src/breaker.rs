//! Circuit breakers in front of the dependencies (payment provider, stock
//! store, order store).
//!
//! One [`Breaker`] per dependency, shared by every saga in the worker
//! process. It is a pure state machine: every method takes the time as an
//! argument (the caller reads the clock), and reports a state change as a
//! [`Transition`] for the caller to log, so its tests need no runtime.
//!
//! - **Closed**: calls go through; once a call has failed, no more are
//!   let be in flight than the failures still needed to open, until a
//!   healthy answer. It opens on whichever rule fires first:
//!   `consecutive` counted failures in a row (reacts within a handful of
//!   calls at any rate), or at least `failures` counted failures that are
//!   at least `failure_rate` of a `window_ms` window's calls (a dependency
//!   failing part of the time). Only retryable errors of the kinds
//!   `count` names are failures, and calls slower than `slow_call_ms`
//!   (a declined card means the dependency works; a 6 s answer means it
//!   does not).
//! - **Open** for `open_for_ms` (longer when the dependency sent
//!   `Retry-After`): no call goes through; each is refused at once with a
//!   [`DependencyWait`], so the saga waits durably instead of spending
//!   attempts.
//! - **Half-open**: at most `probes` calls at a time go through. One that
//!   succeeds closes the breaker; one that fails opens it again. So during
//!   an outage the dependency sees at most `probes` calls per open
//!   interval from this worker.
//! - **Ramp**: after it closes, calls in flight are limited, from `probes`
//!   growing evenly to the most this worker had in flight while the
//!   dependency was healthy before the outage, reached after `ramp_ms`,
//!   and on at that pace until four times it; calls beyond the limit wait
//!   a moment, spread out. For `ramp_ms` the backlog an outage left never
//!   puts more calls in flight than before it, and after it there is no
//!   cliff where the rest would rush in. `max_in_flight` caps calls in
//!   flight at all times.
//! - **Burst**: after a quiet moment, at most `burst` calls go out before
//!   the dependency answers one, growing by `burst` per healthy answer; a
//!   call beyond it is held in memory ([`Admission::Hold`]) until an
//!   answer makes room, so a sale's batch does not all meet an outage
//!   that began while the worker was quiet ([`limits`]).
//!
//! What a failure costs the saga (the [`Recorded`] of its call):
//! - one that finds the breaker open, or that began before the breaker
//!   last closed, carries a wait: the dependency was down, the attempt is
//!   not counted;
//! - one counted while the breaker is still closed carries the moment its
//!   run of failures began ([`Recorded::failing_since`]); if the breaker
//!   opens on that run, its waits carry the same moment
//!   ([`DependencyWait::since_ms`]) and the interpreter takes back the
//!   attempts that failed in the run: those failed in the moments before
//!   the breaker opened, not because of the step.

mod limits;
mod settings;
mod verdicts;

pub use settings::BreakerSettings;
pub use verdicts::{Admission, BreakerSnapshot, BreakerState, Recorded, Ticket, Transition};

use limits::{Burst, Ramp};

use sagaflow_workflows::{ActivityError, DependencyWait};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

/// How long a saga refused while the probes are out waits before it asks
/// again (capped by `open_for_ms`).
const HALF_OPEN_RETRY_MS: u64 = 1_000;

/// A saga refused because calls in flight are at their limit (ramp or
/// cap) asks again after this long, plus up to [`BUSY_SPREAD_MS`] drawn
/// per saga: the refused come back spread out, not in a herd.
const BUSY_RETRY_MS: u64 = 250;
const BUSY_SPREAD_MS: u64 = 1_000;

/// A `Retry-After` longer than this opens the breaker for this long only:
/// its probes find out sooner whether the dependency is back.
const RETRY_AFTER_CAP_MS: u64 = 10 * 60 * 1_000;

/// A refused saga counts as waiting until this long past the moment it was
/// told to come back (it may have been cancelled, or its worker stopped).
const WAITING_GRACE_MS: u64 = 5_000;

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// When the state began (closed), or the outage began (open, half-open).
    since_ms: u64,
    open_until_ms: u64,
    last_opened_ms: u64,
    window_start_ms: u64,
    window_calls: u32,
    window_failures: u32,
    /// The current run of counted failures (no healthy call between):
    /// when it began and how long it is.
    run_since: Option<u64>,
    run_failures: u32,
    in_flight: u32,
    probes_out: u32,
    /// The most calls in flight, as seen by healthy calls when let
    /// through, in this window and the one before.
    peak_now: u32,
    peak_before: u32,
    ramp: Option<Ramp>,
    burst: Burst,
    /// Saga id -> when it should have come back.
    waiting: HashMap<String, u64>,
    opened_total: u64,
    refused_total: u64,
    probes_total: u64,
}

/// One dependency's circuit breaker. Shared (behind an `Arc`) by every
/// saga in the worker.
#[derive(Debug)]
pub struct Breaker {
    dependency: String,
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    released: Notify,
}

impl Breaker {
    /// A closed breaker for `dependency`, as of `now_ms`.
    pub fn new(dependency: &str, settings: BreakerSettings, now_ms: u64) -> Breaker {
        let burst = Burst::new(settings.burst);
        Breaker {
            dependency: dependency.to_owned(),
            settings,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                since_ms: now_ms,
                open_until_ms: 0,
                last_opened_ms: 0,
                window_start_ms: now_ms,
                window_calls: 0,
                window_failures: 0,
                run_since: None,
                run_failures: 0,
                in_flight: 0,
                probes_out: 0,
                peak_now: 0,
                peak_before: 0,
                ramp: None,
                burst,
                waiting: HashMap::new(),
                opened_total: 0,
                refused_total: 0,
                probes_total: 0,
            }),
            released: Notify::new(),
        }
    }

    /// The dependency it guards.
    pub fn dependency(&self) -> &str {
        &self.dependency
    }

    /// Its settings.
    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned lock is still sound.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks to call the dependency for saga `saga_id` at `now_ms`: a
    /// ticket to give back to [`Breaker::record`], or the wait to send the
    /// saga to (the burst limit too sends it to wait); with the state
    /// change it caused, if any. The tests' shorthand: the engines hold
    /// calls ([`Breaker::admit_or_hold`]).
    #[cfg(test)]
    pub(crate) fn admit(
        &self,
        now_ms: u64,
        saga_id: &str,
    ) -> (Result<Ticket, DependencyWait>, Option<Transition>) {
        let (admission, transition) = self.admit_or_hold(now_ms, saga_id, false);
        let verdict = match admission {
            Admission::Go(ticket) => Ok(ticket),
            Admission::Wait(wait) => Err(wait),
            Admission::Hold => unreachable!("a call that may not be held is never held"),
        };
        (verdict, transition)
    }

    /// Notified as answers make room under the burst limit (one waiter
    /// per call that may go), and when the breaker opens (every waiter):
    /// a held call asks again then.
    pub fn released(&self) -> &Notify {
        &self.released
    }

    /// As [`Breaker::admit`], but a call beyond the burst limit is held
    /// ([`Admission::Hold`]) when `may_hold`: the caller waits on
    /// [`Breaker::released`] and asks again.
    pub fn admit_or_hold(
        &self,
        now_ms: u64,
        saga_id: &str,
        may_hold: bool,
    ) -> (Admission, Option<Transition>) {
        let mut inner = self.lock();
        let mut transition = None;
        if inner.state == BreakerState::Open && now_ms >= inner.open_until_ms {
            inner.state = BreakerState::HalfOpen;
            transition = Some(self.transition(
                BreakerState::Open,
                BreakerState::HalfOpen,
                "open interval over: letting probes through".to_owned(),
            ));
        }
        let refused_for = match inner.state {
            BreakerState::Open => Some(inner.open_until_ms - now_ms),
            BreakerState::HalfOpen if inner.probes_out < self.settings.probes => None,
            BreakerState::HalfOpen => Some(HALF_OPEN_RETRY_MS.min(self.settings.open_for_ms)),
            BreakerState::Closed => {
                let s = &self.settings;
                let in_flight = inner.in_flight;
                let limits = [
                    limits::ramp(&mut inner.ramp, s.probes, s.ramp_ms, now_ms),
                    (s.max_in_flight > 0).then_some(s.max_in_flight),
                    limits::suspect(s.consecutive, inner.run_failures),
                ];
                let full = |limit: Option<u32>| limit.is_some_and(|l| in_flight >= l);
                if full(limits.into_iter().flatten().min()) {
                    Some(busy_retry_ms(saga_id, inner.refused_total))
                } else if full(inner.burst.limit(in_flight, now_ms)) {
                    if may_hold {
                        return (Admission::Hold, transition);
                    }
                    Some(busy_retry_ms(saga_id, inner.refused_total))
                } else {
                    None
                }
            }
        };
        let verdict = match refused_for {
            None => {
                if !inner.waiting.is_empty() {
                    inner.waiting.remove(saga_id);
                }
                let probe = inner.state == BreakerState::HalfOpen;
                if probe {
                    inner.probes_out += 1;
                    inner.probes_total += 1;
                }
                inner.in_flight += 1;
                Admission::Go(Ticket {
                    probe,
                    admitted_ms: now_ms,
                    in_flight: inner.in_flight,
                })
            }
            Some(retry_after_ms) => {
                inner.refused_total += 1;
                Admission::Wait(self.send_to_wait(&mut inner, now_ms, saga_id, retry_after_ms))
            }
        };
        (verdict, transition)
    }

    /// Counts `saga_id` among the sagas waiting until it should be back,
    /// and tells it how long to wait.
    fn send_to_wait(
        &self,
        inner: &mut Inner,
        now_ms: u64,
        saga_id: &str,
        retry_after_ms: u64,
    ) -> DependencyWait {
        let back_by = now_ms + retry_after_ms + retry_after_ms / 5 + WAITING_GRACE_MS;
        if inner.waiting.len() >= 4096 && !inner.waiting.contains_key(saga_id) {
            inner.waiting.retain(|_, by| *by >= now_ms);
        }
        inner.waiting.insert(saga_id.to_owned(), back_by);
        DependencyWait {
            dependency: self.dependency.clone(),
            since_ms: inner.since_ms,
            retry_after_ms,
        }
    }

    /// Takes back `ticket` with its call's outcome (`None`: success) at
    /// `now_ms`, for saga `saga_id`: the state change it caused, and what
    /// the failure, if any, costs the saga (see the module's doc).
    pub fn record(
        &self,
        ticket: Ticket,
        now_ms: u64,
        saga_id: &str,
        error: Option<&ActivityError>,
    ) -> Recorded {
        let took = now_ms.saturating_sub(ticket.admitted_ms);
        let slow = self.settings.slow_call_ms > 0 && took >= self.settings.slow_call_ms;
        let counted = error.is_some_and(|e| self.settings.counts(e));
        let failed = counted || slow;
        let mut inner = self.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
        let why = || match error {
            Some(e) if counted => e.kind.clone(),
            _ => format!("a call took {took} ms"),
        };
        inner.burst.answered(!failed, now_ms);
        let transition = if ticket.probe {
            self.take_back_probe(&mut inner, now_ms, failed, error, why)
        } else {
            self.take_back_call(&mut inner, &ticket, now_ms, failed, error, why)
        };
        if transition
            .as_ref()
            .is_some_and(|t| t.to == BreakerState::Open)
        {
            self.released.notify_waiters();
        } else if self.settings.burst > 0 {
            // Room for one call (this one's end), and after a healthy
            // answer for `burst` more (the limit grew).
            let room = 1 + if failed { 0 } else { self.settings.burst };
            for _ in 0..room {
                self.released.notify_one();
            }
        }
        let mut recorded = Recorded {
            transition,
            wait: None,
            failing_since: None,
        };
        if !counted {
            return recorded;
        }
        let down_for = match inner.state {
            BreakerState::Open => Some(inner.open_until_ms.saturating_sub(now_ms)),
            BreakerState::HalfOpen => Some(HALF_OPEN_RETRY_MS.min(self.settings.open_for_ms)),
            // It closed again while the call ran: the call met the outage.
            BreakerState::Closed if inner.since_ms > ticket.admitted_ms => {
                Some(busy_retry_ms(saga_id, inner.refused_total))
            }
            BreakerState::Closed => None,
        };
        match down_for {
            Some(ms) => {
                recorded.wait = Some(self.send_to_wait(&mut inner, now_ms, saga_id, ms.max(1)))
            }
            None => recorded.failing_since = inner.run_since,
        }
        recorded
    }

    fn take_back_probe(
        &self,
        inner: &mut Inner,
        now_ms: u64,
        failed: bool,
        error: Option<&ActivityError>,
        why: impl Fn() -> String,
    ) -> Option<Transition> {
        inner.probes_out = inner.probes_out.saturating_sub(1);
        if inner.state != BreakerState::HalfOpen {
            return None;
        }
        if failed {
            let open_for = self.open_for(error);
            inner.state = BreakerState::Open;
            inner.open_until_ms = now_ms + open_for;
            inner.opened_total += 1;
            return Some(self.transition(
                BreakerState::HalfOpen,
                BreakerState::Open,
                format!("a probe failed ({}); open again for {open_for} ms", why()),
            ));
        }
        let since = inner.since_ms;
        inner.state = BreakerState::Closed;
        inner.since_ms = now_ms;
        inner.window_start_ms = now_ms;
        inner.window_calls = 0;
        inner.window_failures = 0;
        inner.run_since = None;
        inner.run_failures = 0;
        let peak = inner.peak_before;
        let ramp = (self.settings.ramp_ms > 0).then_some(Ramp {
            from_ms: now_ms,
            peak,
        });
        inner.ramp = ramp;
        let ramp = match ramp {
            Some(_) => format!(
                "; calls in flight ramp up, back to {} (the peak before) after {} ms",
                peak.max(1),
                self.settings.ramp_ms
            ),
            None => String::new(),
        };
        Some(self.transition(
            BreakerState::HalfOpen,
            BreakerState::Closed,
            format!(
                "a probe succeeded; the dependency is back after {} ms{ramp}",
                now_ms.saturating_sub(since)
            ),
        ))
    }

    fn take_back_call(
        &self,
        inner: &mut Inner,
        ticket: &Ticket,
        now_ms: u64,
        failed: bool,
        error: Option<&ActivityError>,
        why: impl Fn() -> String,
    ) -> Option<Transition> {
        // A call let through before the breaker opened says nothing
        // about the dependency now: only outcomes of calls let through
        // since it last closed count (a slow call from the outage that
        // ends after it must not open it again).
        if inner.state != BreakerState::Closed || ticket.admitted_ms < inner.since_ms {
            return None;
        }
        if now_ms.saturating_sub(inner.window_start_ms) >= self.settings.window_ms {
            inner.window_start_ms = now_ms;
            inner.window_calls = 0;
            inner.window_failures = 0;
            inner.peak_before = inner.peak_now;
            inner.peak_now = 0;
        }
        inner.window_calls += 1;
        if !failed {
            inner.run_since = None;
            inner.run_failures = 0;
            inner.peak_now = inner.peak_now.max(ticket.in_flight);
            return None;
        }
        inner.window_failures += 1;
        inner.run_failures += 1;
        let run_since = *inner.run_since.get_or_insert(now_ms);
        let s = &self.settings;
        let (failures, calls) = (inner.window_failures, inner.window_calls);
        let rule = if s.consecutive > 0 && inner.run_failures >= s.consecutive {
            format!("{} failures in a row", inner.run_failures)
        } else if failures >= s.failures && f64::from(failures) / f64::from(calls) >= s.failure_rate
        {
            format!(
                "{failures} of {calls} calls failed within {} ms",
                s.window_ms
            )
        } else {
            return None;
        };
        let open_for = self.open_for(error);
        inner.state = BreakerState::Open;
        inner.since_ms = run_since;
        inner.open_until_ms = now_ms + open_for;
        inner.last_opened_ms = now_ms;
        inner.opened_total += 1;
        inner.peak_before = inner.peak_before.max(inner.peak_now);
        inner.ramp = None;
        Some(self.transition(
            BreakerState::Closed,
            BreakerState::Open,
            format!("{rule} (last: {}); open for {open_for} ms", why()),
        ))
    }

    /// How long to stay open after `error`: `open_for_ms`, or the
    /// dependency's `Retry-After` when that is longer (capped).
    fn open_for(&self, error: Option<&ActivityError>) -> u64 {
        let asked = error.and_then(|e| e.retry_after_ms).unwrap_or(0);
        self.settings.open_for_ms.max(asked.min(RETRY_AFTER_CAP_MS))
    }

    /// The state as of `now_ms` (an open breaker past its interval shows
    /// as half-open, as the next call will find it).
    pub fn snapshot(&self, now_ms: u64) -> BreakerSnapshot {
        let mut inner = self.lock();
        let state = match inner.state {
            BreakerState::Open if now_ms >= inner.open_until_ms => BreakerState::HalfOpen,
            s => s,
        };
        let ramp_limit = match state {
            BreakerState::Closed => limits::ramp(
                &mut inner.ramp,
                self.settings.probes,
                self.settings.ramp_ms,
                now_ms,
            ),
            _ => None,
        };
        BreakerSnapshot {
            dependency: self.dependency.clone(),
            state,
            since_ms: inner.since_ms,
            last_opened_ms: inner.last_opened_ms,
            waiting: inner.waiting.values().filter(|by| **by >= now_ms).count(),
            in_flight: inner.in_flight,
            ramp_limit,
            opened_total: inner.opened_total,
            refused_total: inner.refused_total,
            probes_total: inner.probes_total,
        }
    }

    /// True while the breaker refuses every call (open, not yet past its
    /// interval): the trigger takes no new orders then.
    pub fn is_open(&self, now_ms: u64) -> bool {
        let inner = self.lock();
        inner.state == BreakerState::Open && now_ms < inner.open_until_ms
    }

    fn transition(&self, from: BreakerState, to: BreakerState, why: String) -> Transition {
        Transition {
            dependency: self.dependency.clone(),
            from,
            to,
            why,
        }
    }
}

/// How long a saga refused because calls in flight are at their limit
/// waits: [`BUSY_RETRY_MS`] and a share of [`BUSY_SPREAD_MS`] drawn from
/// the saga's id and a counter, so the refused come back spread out.
fn busy_retry_ms(saga_id: &str, n: u64) -> u64 {
    let seed = sagaflow_workflows::retry::fnv1a64(saga_id.as_bytes()) ^ n.rotate_left(29);
    BUSY_RETRY_MS + seed % BUSY_SPREAD_MS
}

#[cfg(test)]
mod tests;
