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

mod settings;

pub use settings::BreakerSettings;

use sagaflow_workflows::{ActivityError, DependencyWait};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// No call goes through.
    Open,
    /// A few probes go through to see whether the dependency is back.
    HalfOpen,
}

impl BreakerState {
    /// "closed", "open" or "half_open".
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// What taking back a ticket decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The state change the outcome caused, for the caller to log.
    pub transition: Option<Transition>,
    /// Set when the call failed while the dependency was down (the breaker
    /// is open or half-open now, or it closed again while the call ran):
    /// the saga waits for it instead of counting the attempt.
    pub wait: Option<DependencyWait>,
    /// Set when the call failed in a way that counts and the breaker is
    /// still closed: when the run of failures it belongs to began. Should
    /// the breaker open on that run, its waits name the same moment.
    pub failing_since: Option<u64>,
}

/// A change of state, for the caller to log (once each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The dependency.
    pub dependency: String,
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// Why, for the log.
    pub why: String,
}

/// A call let through: give it back to [`Breaker::record`] with the
/// call's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// A probe (the breaker was half-open): its outcome decides.
    pub probe: bool,
    /// When the call was let through (its duration decides whether it was
    /// slow, and whether the breaker closed again while it ran).
    pub admitted_ms: u64,
    /// Calls in flight, this one included, when it was let through.
    pub in_flight: u32,
}

/// What `health` shows of one breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// The dependency.
    pub dependency: String,
    /// Its state now.
    pub state: BreakerState,
    /// Since when (ms since the Unix epoch): the state's start, and for
    /// open and half-open the moment the current outage began (its first
    /// failure).
    pub since_ms: u64,
    /// When it last opened from closed (0: never).
    pub last_opened_ms: u64,
    /// Sagas refused recently that have not come back yet.
    pub waiting: usize,
    /// Calls in flight to the dependency now.
    pub in_flight: u32,
    /// While it ramps up after an outage: the calls it lets be in flight
    /// now.
    pub ramp_limit: Option<u32>,
    /// Times it opened since the worker started.
    pub opened_total: u64,
    /// Calls it refused since the worker started.
    pub refused_total: u64,
    /// Probes it let through since the worker started.
    pub probes_total: u64,
}

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

/// The ramp after an outage ends when its limit is this many times the
/// peak before the outage.
const RAMP_ENDS_AT: u64 = 4;

#[derive(Debug, Clone, Copy)]
struct Ramp {
    from_ms: u64,
    /// The most calls in flight while healthy before the outage.
    peak: u32,
}

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
}

impl Breaker {
    /// A closed breaker for `dependency`, as of `now_ms`.
    pub fn new(dependency: &str, settings: BreakerSettings, now_ms: u64) -> Breaker {
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
                waiting: HashMap::new(),
                opened_total: 0,
                refused_total: 0,
                probes_total: 0,
            }),
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
    /// saga to; with the state change it caused, if any.
    pub fn admit(
        &self,
        now_ms: u64,
        saga_id: &str,
    ) -> (Result<Ticket, DependencyWait>, Option<Transition>) {
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
                let limits = [
                    self.ramp_limit(&mut inner, now_ms),
                    (self.settings.max_in_flight > 0).then_some(self.settings.max_in_flight),
                    self.suspect_limit(&inner),
                ];
                limits
                    .into_iter()
                    .flatten()
                    .min()
                    .filter(|limit| inner.in_flight >= *limit)
                    .map(|_| busy_retry_ms(saga_id, inner.refused_total))
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
                Ok(Ticket {
                    probe,
                    admitted_ms: now_ms,
                    in_flight: inner.in_flight,
                })
            }
            Some(retry_after_ms) => {
                inner.refused_total += 1;
                Err(self.send_to_wait(&mut inner, now_ms, saga_id, retry_after_ms))
            }
        };
        (verdict, transition)
    }

    /// While a run of failures is under way (no healthy call since its
    /// first), calls in flight are held to the failures still needed to
    /// open the breaker: a burst of calls at a sale's rate cannot all meet
    /// an outage before the breaker hears of it. The first healthy answer
    /// lifts it.
    fn suspect_limit(&self, inner: &Inner) -> Option<u32> {
        let needed = self.settings.consecutive;
        (needed > 0 && inner.run_failures > 0)
            .then(|| needed.saturating_sub(inner.run_failures).max(1))
    }

    /// The calls the ramp lets be in flight at `now_ms`, while it lasts:
    /// the earlier peak times the share of `ramp_ms` gone by (at least
    /// the probes), so it reaches the peak after `ramp_ms` and goes on
    /// growing at that pace, without a cliff where a backlog would rush
    /// in, until it is [`RAMP_ENDS_AT`] times the peak.
    fn ramp_limit(&self, inner: &mut Inner, now_ms: u64) -> Option<u32> {
        let ramp = inner.ramp?;
        let peak = u64::from(ramp.peak.max(1));
        let first = u64::from(self.settings.probes).clamp(1, peak);
        let grown = peak * now_ms.saturating_sub(ramp.from_ms) / self.settings.ramp_ms.max(1);
        if grown >= RAMP_ENDS_AT * peak {
            inner.ramp = None;
            return None;
        }
        Some(grown.max(first) as u32)
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
        let transition = if ticket.probe {
            self.take_back_probe(&mut inner, now_ms, failed, error, why)
        } else {
            self.take_back_call(&mut inner, &ticket, now_ms, failed, error, why)
        };
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
            BreakerState::Closed => self.ramp_limit(&mut inner, now_ms),
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
