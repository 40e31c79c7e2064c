//! One activity attempt as both engines run it: the dependency's circuit
//! breaker first, then the activity under the step's time limit, then the
//! outcome back to the breaker.
//!
//! [`Breakers`] holds one [`Breaker`] per dependency for the whole worker
//! (on Temporal, per worker process); an activity belongs to the
//! dependency its name starts with (`payment.authorize` -> `payment`).

use crate::breaker::{
    Admission, Breaker, BreakerSettings, BreakerSnapshot, Recorded, Ticket, Transition,
};
use crate::clock::now_ms;
use crate::Registry;
use sagaflow_workflows::{ActivityCall, ActivityError, DependencyWait};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a call beyond its breaker's burst limit is held in memory,
/// waiting for an answer to make room, before it is sent to wait durably
/// like any call beyond a limit. An answer that takes longer is a slow
/// dependency, and the saga's task should not hold on to it; shorter
/// than the second a Temporal activity is given past the call's own
/// timeout.
const HOLD_MS: u64 = 500;

/// The dependencies a breaker may guard, as activity name prefixes.
pub const DEPENDENCIES: [&str; 3] = ["payment", "stock", "orders"];

/// The worker's breakers, by dependency. Cloning is cheap.
#[derive(Clone, Default, Debug)]
pub struct Breakers {
    by_dependency: BTreeMap<String, Arc<Breaker>>,
}

impl Breakers {
    /// No breakers: every call goes through (`[breakers] enabled = false`).
    pub fn none() -> Breakers {
        Breakers::default()
    }

    /// One closed breaker per `(dependency, settings)`.
    pub fn new(settings: impl IntoIterator<Item = (String, BreakerSettings)>) -> Breakers {
        let now = now_ms();
        Breakers {
            by_dependency: settings
                .into_iter()
                .map(|(dep, s)| {
                    let breaker = Arc::new(Breaker::new(&dep, s, now));
                    (dep, breaker)
                })
                .collect(),
        }
    }

    /// The breaker guarding `activity`, if any.
    pub fn for_activity(&self, activity: &str) -> Option<&Breaker> {
        let dependency = activity.split('.').next()?;
        self.by_dependency.get(dependency).map(|b| &**b)
    }

    /// Every breaker's state now, by dependency.
    pub fn snapshots(&self) -> Vec<BreakerSnapshot> {
        let now = now_ms();
        self.by_dependency
            .values()
            .map(|b| b.snapshot(now))
            .collect()
    }

    /// The first breaker among those guarding `activities` that refuses
    /// every call now: new sagas would only wait on it.
    pub fn open_among<'a>(&self, activities: impl IntoIterator<Item = &'a str>) -> Option<&str> {
        let now = now_ms();
        activities
            .into_iter()
            .filter_map(|a| self.for_activity(a))
            .find(|b| b.is_open(now))
            .map(Breaker::dependency)
    }
}

/// Runs one attempt of `call`: refused at once while its dependency's
/// breaker is open (the error carries the wait), else run under the
/// call's time limit (`timeout` when it passes), its outcome given back
/// to the breaker.
pub async fn run_attempt(
    registry: &Registry,
    breakers: &Breakers,
    call: ActivityCall,
) -> Result<Value, ActivityError> {
    let limit = Duration::from_millis(call.timeout_ms);
    let Some(breaker) = breakers.for_activity(&call.activity) else {
        return timed(registry, call, limit).await;
    };
    // Owned: the call moves into the activity, and a saga sent to wait is
    // remembered by id.
    let saga_id = call.input["saga_id"].as_str().unwrap_or("").to_owned();
    let ticket = match admit(breaker, &saga_id).await {
        Ok(ticket) => ticket,
        Err(wait) => return Err(ActivityError::breaker_open(wait)),
    };
    let mut outcome = Outcome {
        breaker,
        ticket,
        saga_id: &saga_id,
        recorded: false,
    };
    let mut result = timed(registry, call, limit).await;
    let recorded = outcome.record(result.as_ref().err());
    if let Err(error) = &mut result {
        // The dependency is down: the saga waits for it, as a refused one
        // does, instead of spending its attempts on the outage; or it may
        // be going down, and the interpreter takes the attempt back if
        // the breaker opens on this run of failures.
        error.wait = recorded.wait.map(Box::new);
        error.failing_since_ms = recorded.failing_since;
    }
    result
}

/// Asks `breaker` until it lets the call go or sends the saga to wait,
/// holding the call in memory meanwhile while the burst limit is full
/// (at most [`HOLD_MS`]).
async fn admit(breaker: &Breaker, saga_id: &str) -> Result<Ticket, DependencyWait> {
    let hold_until = Instant::now() + Duration::from_millis(HOLD_MS);
    loop {
        let may_hold = Instant::now() < hold_until;
        if let Some(verdict) = ask(breaker, saga_id, may_hold) {
            return verdict;
        }
        // Held. Listening, then asking again: room an answer made since
        // the first ask is not missed, and a call that is let through at
        // once never touches the listeners' list.
        let released = breaker.released().notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if let Some(verdict) = ask(breaker, saga_id, may_hold) {
            return verdict;
        }
        let _ = tokio::time::timeout_at(hold_until, released).await;
    }
}

/// One ask: `None` when the call is held.
fn ask(breaker: &Breaker, saga_id: &str, may_hold: bool) -> Option<Result<Ticket, DependencyWait>> {
    let (admission, transition) = breaker.admit_or_hold(now_ms(), saga_id, may_hold);
    log(transition);
    match admission {
        Admission::Go(ticket) => Some(Ok(ticket)),
        Admission::Wait(wait) => Some(Err(wait)),
        Admission::Hold => None,
    }
}

async fn timed(
    registry: &Registry,
    call: ActivityCall,
    limit: Duration,
) -> Result<Value, ActivityError> {
    match tokio::time::timeout(limit, registry.start(call)).await {
        Ok(result) => result,
        Err(_) => Err(ActivityError::retryable(
            "timeout",
            format!("no result within {}ms", limit.as_millis()),
        )),
    }
}

/// Gives a ticket back exactly once: an attempt dropped before its end (a
/// panic, a cancelled task) counts as a timeout, so a probe is never lost
/// and the breaker never stays half-open with its probes "out".
struct Outcome<'a> {
    breaker: &'a Breaker,
    ticket: Ticket,
    saga_id: &'a str,
    recorded: bool,
}

impl Outcome<'_> {
    fn record(&mut self, error: Option<&ActivityError>) -> Recorded {
        self.recorded = true;
        let mut recorded = self
            .breaker
            .record(self.ticket, now_ms(), self.saga_id, error);
        log(recorded.transition.take());
        recorded
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.record(Some(&ActivityError::retryable(
                "timeout",
                "the attempt was dropped before its end",
            )));
        }
    }
}

/// Each state change is logged once, where it happens.
fn log(transition: Option<Transition>) {
    if let Some(t) = transition {
        let (from, to) = (t.from.name(), t.to.name());
        if t.to == crate::breaker::BreakerState::Open {
            tracing::warn!(dependency = %t.dependency, from, to, "circuit breaker opened: {}", t.why);
        } else {
            tracing::info!(dependency = %t.dependency, from, to, "circuit breaker {to}: {}", t.why);
        }
    }
}
