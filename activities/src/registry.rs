//! The activity registry: the names `sagas.toml` may use, and what runs.

use crate::attempt::{run_attempt, Breakers};
use sagaflow_workflows::{ActivityCall, ActivityError, Phase};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Told about every attempt both engines run (the worker's metrics).
/// Called on the activity's task: it must not block.
pub trait AttemptObserver: Send + Sync {
    /// What records the attempts of `step`'s `activity` in `phase`: looked
    /// up before the attempt (the call then moves into the activity).
    fn recorder(&self, step: &str, activity: &str, phase: Phase) -> Arc<dyn AttemptRecorder>;
}

/// Records one step's attempts.
pub trait AttemptRecorder: Send + Sync {
    /// One attempt ended with `result` after `elapsed`.
    fn record(&self, result: &Result<Value, ActivityError>, elapsed: Duration);
}

/// What an activity returns.
pub type ActivityFuture = Pin<Box<dyn Future<Output = Result<Value, ActivityError>> + Send>>;

type ActivityFn = Arc<dyn Fn(ActivityCall) -> ActivityFuture + Send + Sync>;

/// Activity name -> function, and the circuit breakers in front of the
/// dependencies they call. Cloning is cheap.
#[derive(Clone, Default)]
pub struct Registry {
    activities: BTreeMap<String, ActivityFn>,
    breakers: Breakers,
    observer: Option<Arc<dyn AttemptObserver>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers `f` under `name`, replacing any earlier one.
    pub fn register<F, Fut>(&mut self, name: &str, f: F)
    where
        F: Fn(ActivityCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ActivityError>> + Send + 'static,
    {
        self.activities
            .insert(name.to_owned(), Arc::new(move |call| Box::pin(f(call))));
    }

    /// Puts `breakers` in front of the activities (none by default).
    pub fn set_breakers(&mut self, breakers: Breakers) {
        self.breakers = breakers;
    }

    /// The breakers in front of the activities.
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// Tells `observer` about every attempt (none by default).
    pub fn set_observer(&mut self, observer: Arc<dyn AttemptObserver>) {
        self.observer = Some(observer);
    }

    /// Runs one attempt as the engines do: through the dependency's
    /// breaker and under the call's time limit ([`run_attempt`]), told to
    /// the observer, if any.
    pub async fn attempt(&self, call: ActivityCall) -> Result<Value, ActivityError> {
        // The order's trace, continued by this attempt (`crate::trace`).
        let traceparent = call.input["order"]["traceparent"]
            .as_str()
            .and_then(|t| crate::trace::child(t, &call.idempotency_key, call.attempt));
        let Some(observer) = &self.observer else {
            return crate::trace::scope(traceparent, run_attempt(self, &self.breakers, call)).await;
        };
        let recorder = observer.recorder(&call.step, &call.activity, call.phase);
        let began = Instant::now();
        let result =
            crate::trace::scope(traceparent, run_attempt(self, &self.breakers, call)).await;
        recorder.record(&result, began.elapsed());
        result
    }

    /// Starts the activity named in `call`, with no breaker or time limit; an unknown name is a
    /// non-retryable error (loading `sagas.toml` rules it out).
    pub fn start(&self, call: ActivityCall) -> ActivityFuture {
        match self.activities.get(&call.activity) {
            Some(f) => f(call),
            None => {
                let name = call.activity.clone();
                Box::pin(async move {
                    Err(ActivityError::business(
                        "unregistered_activity",
                        format!("{name} is not a registered activity"),
                    ))
                })
            }
        }
    }

    /// Every registered name, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.activities.keys().map(String::as_str).collect()
    }

    /// True when `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.activities.contains_key(name)
    }
}

/// Every activity name sagaflow ships, for validating `sagas.toml` without
/// starting adapters (`sagaflow check-config`).
pub const BUILTIN_ACTIVITIES: [&str; 11] = [
    "noop.ok",
    "orders.cancel",
    "orders.create",
    "payment.authorize",
    "payment.capture",
    "payment.refund",
    "payment.void",
    "stock.commit",
    "stock.release",
    "stock.reserve",
    "stock.return",
];

/// Registers `noop.ok`: returns `{}` at once. The benchmark's
/// `--activities noop` mode uses it to measure the engine alone.
pub fn register_noop(registry: &mut Registry) {
    registry.register("noop.ok", |_call| async {
        Ok(Value::Object(Default::default()))
    });
}
