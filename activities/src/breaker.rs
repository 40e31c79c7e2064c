//! Circuit breakers in front of the dependencies (payment provider, stock
//! store, order store).
//!
//! One [`Breaker`] per dependency, shared by every saga in the worker
//! process. It is a pure state machine: every method takes the time as an
//! argument (the caller reads the clock), and reports a state change as a
//! [`Transition`] for the caller to log, so its tests need no runtime.
//!
//! - **Closed**: calls go through. Outcomes are counted in a window of
//!   `window_ms` (it starts again when it has passed); when it holds at
//!   least `failures` counted failures and they are at least
//!   `failure_rate` of its calls, the breaker opens. Only retryable errors
//!   of the kinds `count` names are failures: a declined card or an
//!   out-of-stock answer means the dependency works.
//! - **Open** for `open_for_ms`: no call goes through; each is refused at
//!   once with a [`DependencyWait`] saying how long until probes are let
//!   through, so the saga waits durably instead of spending attempts.
//! - **Half-open**: at most `probes` calls at a time go through; the rest
//!   are refused for a short while. A probe that succeeds (or fails in a
//!   way that does not count) closes the breaker; one that fails opens it
//!   again for `open_for_ms`. So during an outage the dependency sees at
//!   most `probes` calls per open interval from this worker.

use sagaflow_workflows::{ActivityError, DependencyWait};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// How one breaker decides (`[breakers.NAME]` in `sagas.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// Counted failures within a window that open the breaker.
    pub failures: u32,
    /// ... provided they are at least this fraction of the window's calls.
    pub failure_rate: f64,
    /// Length of the counting window, in ms.
    pub window_ms: u64,
    /// How long the breaker stays open before it lets probes through.
    pub open_for_ms: u64,
    /// Calls let through at once while half-open.
    pub probes: u32,
    /// Error kinds that count as failures (a trailing `*` matches any
    /// suffix, e.g. `http_5*`); empty: every retryable error. Business
    /// errors never count.
    pub count: Vec<String>,
}

impl BreakerSettings {
    /// The defaults for `dependency`: open after 5 failures (at least half
    /// of the calls) within 10 s, stay open 5 s, one probe. The payment
    /// provider's count leaves out `http_409` (a request with the same
    /// key still in progress: the provider answered).
    pub fn default_for(dependency: &str) -> BreakerSettings {
        let count = match dependency {
            "payment" => ["timeout", "network", "http_429", "http_5*"]
                .map(String::from)
                .to_vec(),
            _ => Vec::new(),
        };
        BreakerSettings {
            failures: 5,
            failure_rate: 0.5,
            window_ms: 10_000,
            open_for_ms: 5_000,
            probes: 1,
            count,
        }
    }

    /// Whether `error` counts as a failure of the dependency.
    pub fn counts(&self, error: &ActivityError) -> bool {
        error.retryable
            && error.wait.is_none()
            && (self.count.is_empty() || self.count.iter().any(|k| kind_matches(k, &error.kind)))
    }
}

fn kind_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

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
    /// Set when the call failed and the breaker is open now: the saga
    /// waits for the dependency instead of counting the attempt.
    pub wait: Option<DependencyWait>,
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

/// How a call was let through: its outcome must be given back to
/// [`Breaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    /// An ordinary call (the breaker was closed).
    Call,
    /// A probe (the breaker was half-open): its outcome decides.
    Probe,
}

/// What `health` shows of one breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// The dependency.
    pub dependency: String,
    /// Its state now.
    pub state: BreakerState,
    /// Since when (ms since the Unix epoch): the state's start, and for
    /// open and half-open the moment the current outage began.
    pub since_ms: u64,
    /// Sagas refused recently that have not come back yet.
    pub waiting: usize,
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

/// A refused saga counts as waiting until this long past the moment it was
/// told to come back (it may have been cancelled, or its worker stopped).
const WAITING_GRACE_MS: u64 = 5_000;

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// When the state began (closed), or the outage began (open, half-open).
    since_ms: u64,
    open_until_ms: u64,
    window_start_ms: u64,
    window_calls: u32,
    window_failures: u32,
    probes_out: u32,
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
                window_start_ms: now_ms,
                window_calls: 0,
                window_failures: 0,
                probes_out: 0,
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
                format!(
                    "open for {} ms: letting probes through",
                    self.settings.open_for_ms
                ),
            ));
        }
        let refused_for = match inner.state {
            BreakerState::Closed => None,
            BreakerState::Open => Some(inner.open_until_ms - now_ms),
            BreakerState::HalfOpen if inner.probes_out < self.settings.probes => None,
            BreakerState::HalfOpen => Some(HALF_OPEN_RETRY_MS.min(self.settings.open_for_ms)),
        };
        let verdict = match refused_for {
            None => {
                if !inner.waiting.is_empty() {
                    inner.waiting.remove(saga_id);
                }
                if inner.state == BreakerState::HalfOpen {
                    inner.probes_out += 1;
                    inner.probes_total += 1;
                    Ok(Ticket::Probe)
                } else {
                    Ok(Ticket::Call)
                }
            }
            Some(retry_after_ms) => {
                inner.refused_total += 1;
                Err(self.send_to_wait(&mut inner, now_ms, saga_id, retry_after_ms))
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

    /// Takes back a ticket with its call's outcome (`None`: success) at
    /// `now_ms`, for saga `saga_id`: the state change it caused, if any,
    /// and, when the call failed in a way that counts and the breaker is
    /// open now (this failure opened it, reopened it as a failed probe, or
    /// others did while the call ran), the wait to send the saga to. The
    /// dependency is down: the saga should wait for it rather than spend
    /// its retry attempts.
    pub fn record(
        &self,
        ticket: Ticket,
        now_ms: u64,
        saga_id: &str,
        error: Option<&ActivityError>,
    ) -> Recorded {
        let failed = error.is_some_and(|e| self.settings.counts(e));
        let mut inner = self.lock();
        let transition = self.take_back(&mut inner, ticket, now_ms, failed, error);
        let open_for = inner.open_until_ms.saturating_sub(now_ms);
        let wait = (failed && inner.state == BreakerState::Open && open_for > 0)
            .then(|| self.send_to_wait(&mut inner, now_ms, saga_id, open_for));
        Recorded { transition, wait }
    }

    fn take_back(
        &self,
        inner: &mut Inner,
        ticket: Ticket,
        now_ms: u64,
        failed: bool,
        error: Option<&ActivityError>,
    ) -> Option<Transition> {
        match ticket {
            Ticket::Probe => {
                inner.probes_out = inner.probes_out.saturating_sub(1);
                if inner.state != BreakerState::HalfOpen {
                    return None;
                }
                if failed {
                    inner.state = BreakerState::Open;
                    inner.open_until_ms = now_ms + self.settings.open_for_ms;
                    inner.opened_total += 1;
                    Some(self.transition(
                        BreakerState::HalfOpen,
                        BreakerState::Open,
                        format!(
                            "a probe failed ({}); open again for {} ms",
                            error.map_or("", |e| e.kind.as_str()),
                            self.settings.open_for_ms
                        ),
                    ))
                } else {
                    let since = inner.since_ms;
                    inner.state = BreakerState::Closed;
                    inner.since_ms = now_ms;
                    inner.window_start_ms = now_ms;
                    inner.window_calls = 0;
                    inner.window_failures = 0;
                    Some(self.transition(
                        BreakerState::HalfOpen,
                        BreakerState::Closed,
                        format!(
                            "a probe succeeded; the dependency is back after {} ms",
                            now_ms.saturating_sub(since)
                        ),
                    ))
                }
            }
            // A call let through before the breaker opened says nothing
            // about the dependency now: only closed-state outcomes count.
            Ticket::Call if inner.state != BreakerState::Closed => None,
            Ticket::Call => {
                if now_ms.saturating_sub(inner.window_start_ms) >= self.settings.window_ms {
                    inner.window_start_ms = now_ms;
                    inner.window_calls = 0;
                    inner.window_failures = 0;
                }
                inner.window_calls += 1;
                if !failed {
                    return None;
                }
                inner.window_failures += 1;
                let rate = f64::from(inner.window_failures) / f64::from(inner.window_calls);
                if inner.window_failures < self.settings.failures
                    || rate < self.settings.failure_rate
                {
                    return None;
                }
                inner.state = BreakerState::Open;
                inner.since_ms = now_ms;
                inner.open_until_ms = now_ms + self.settings.open_for_ms;
                inner.opened_total += 1;
                let (failures, calls) = (inner.window_failures, inner.window_calls);
                Some(self.transition(
                    BreakerState::Closed,
                    BreakerState::Open,
                    format!(
                        "{failures} of {calls} calls failed within {} ms (last: {}); open for {} ms",
                        self.settings.window_ms,
                        error.map_or("", |e| e.kind.as_str()),
                        self.settings.open_for_ms
                    ),
                ))
            }
        }
    }

    /// The state as of `now_ms` (an open breaker past its interval shows
    /// as half-open, as the next call will find it).
    pub fn snapshot(&self, now_ms: u64) -> BreakerSnapshot {
        let inner = self.lock();
        let state = match inner.state {
            BreakerState::Open if now_ms >= inner.open_until_ms => BreakerState::HalfOpen,
            s => s,
        };
        BreakerSnapshot {
            dependency: self.dependency.clone(),
            state,
            since_ms: inner.since_ms,
            waiting: inner.waiting.values().filter(|by| **by >= now_ms).count(),
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

#[cfg(test)]
mod tests;
