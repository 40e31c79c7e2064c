//! How one breaker decides: [`BreakerSettings`], the `[breakers.NAME]`
//! table of `sagas.toml`, and which errors count as the dependency's
//! failures.

use sagaflow_workflows::ActivityError;

/// How one breaker decides (`[breakers.NAME]` in `sagas.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// Consecutive counted failures that open the breaker (0: this rule
    /// is off). The rule that reacts at any call rate: at 500 calls a
    /// second a rate over a window needs hundreds of failures, this one
    /// a handful.
    pub consecutive: u32,
    /// Counted failures within a window that open the breaker ...
    pub failures: u32,
    /// ... provided they are at least this fraction of the window's calls
    /// (the rule for a dependency that fails part of the time).
    pub failure_rate: f64,
    /// Length of the counting window, in ms.
    pub window_ms: u64,
    /// A call that takes at least this long counts as a failure, whatever
    /// it answered, in ms (0: off): a provider that answers in 4 s is as
    /// unusable at a sale's rate as one that answers 503.
    pub slow_call_ms: u64,
    /// How long the breaker stays open before it lets probes through (a
    /// `Retry-After` the dependency sent makes it longer).
    pub open_for_ms: u64,
    /// Calls let through at once while half-open.
    pub probes: u32,
    /// After it closes again, how long calls in flight take to grow back,
    /// evenly from `probes`, to the most this worker had in flight before
    /// the outage, in ms; they go on growing at that pace until four times
    /// it, then the limit ends (0: no ramp). The backlog an outage left is
    /// worked off without a stampede.
    pub ramp_ms: u64,
    /// Calls in flight to the dependency from this worker, at most (0: no
    /// cap); a call beyond it waits a moment without spending an attempt.
    pub max_in_flight: u32,
    /// After a quiet moment, calls that go out before the dependency
    /// answers one, at most; each healthy answer lets `burst` more be in
    /// flight (0: no limit). A call beyond it is held in memory for a few
    /// ms, until an answer makes room, instead of meeting an outage that
    /// began while the worker was quiet.
    pub burst: u32,
    /// Error kinds that count as failures (a trailing `*` matches any
    /// suffix, e.g. `http_5*`); empty: every retryable error. Business
    /// errors never count.
    pub count: Vec<String>,
}

impl BreakerSettings {
    /// The defaults for `dependency`: open after 5 consecutive failures,
    /// or 5 failures that are at least half of the calls within 10 s;
    /// stay open 5 s; one probe; a 10 s ramp; no cap; bursts of 5 after a
    /// quiet moment. The payment
    /// provider's calls also count as failures when they take 3 s or
    /// more, and its count leaves out `http_409` (a request with the same
    /// key still in progress: the provider answered).
    pub fn default_for(dependency: &str) -> BreakerSettings {
        let (count, slow_call_ms) = match dependency {
            "payment" => (
                ["timeout", "network", "http_429", "http_5*"]
                    .map(String::from)
                    .to_vec(),
                3_000,
            ),
            _ => (Vec::new(), 0),
        };
        BreakerSettings {
            consecutive: 5,
            failures: 5,
            failure_rate: 0.5,
            window_ms: 10_000,
            slow_call_ms,
            open_for_ms: 5_000,
            probes: 1,
            ramp_ms: 10_000,
            max_in_flight: 0,
            burst: 5,
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
