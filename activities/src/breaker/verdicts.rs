//! What a breaker tells its callers: where it stands, whether a call may
//! go ([`Admission`], [`Ticket`]), what a call's outcome decided
//! ([`Recorded`], [`Transition`]) and what `health` shows
//! ([`BreakerSnapshot`]).

use sagaflow_workflows::DependencyWait;
use serde::Serialize;

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

/// A call let through: give it back to [`Breaker::record`](super::Breaker::record) with the
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

/// What [`Breaker::admit_or_hold`](super::Breaker::admit_or_hold) decides for one call.
#[derive(Debug)]
pub enum Admission {
    /// Make the call, and give the ticket back to [`Breaker::record`](super::Breaker::record).
    Go(Ticket),
    /// Hold it in memory until [`Breaker::released`](super::Breaker::released) says an answer made
    /// room (only when the caller offered to hold).
    Hold,
    /// Do not make it: the saga waits, durably, this long.
    Wait(DependencyWait),
}
