//! The worker's Prometheus metrics, served on the admin port at `/metrics`
//! (OpenMetrics text, which Prometheus scrapes natively).
//!
//! One set per process ([`global`]). Where each figure comes from:
//! - step attempts, failures, breaker refusals and durations: every
//!   attempt either engine runs ([`Registry::attempt`] tells the
//!   [`AttemptObserver`]); the labels' handles are cached per step, so an
//!   attempt costs two counter adds and a histogram observation, with no
//!   allocation (a failure allocates its kind's label once per call);
//! - sagas started, ended (with their end-to-end duration) and parked:
//!   the embedded engine, after the journal commit that made them true;
//! - journal commit batch sizes and latencies: the journal writer;
//! - queue messages, sagas in progress and breaker states: read when
//!   `/metrics` is scraped from the trigger's counters, the engine and the
//!   breakers.
//!
//! On the Temporal engine the saga counters are the cluster's (Temporal's
//! own metrics); this worker exports its attempts, queue and breakers.
//!
//! [`Registry::attempt`]: sagaflow_activities::Registry::attempt

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use sagaflow_activities::breaker::BreakerState;
use sagaflow_activities::{AttemptObserver, AttemptRecorder, Breakers};
use sagaflow_workflows::{ActivityError, Phase, BREAKER_OPEN};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// The OpenMetrics content type `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SagaLabels {
    saga: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    saga: Arc<str>,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ParkLabels {
    saga: Arc<str>,
    step: Arc<str>,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: Arc<str>,
    activity: Arc<str>,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    step: Arc<str>,
    activity: Arc<str>,
    phase: &'static str,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    dependency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerStateLabels {
    dependency: String,
    state: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Step -> activity -> [action, compensation]: looked up by `&str`, so a
/// hit allocates nothing.
type RecorderCache = HashMap<String, HashMap<String, [Option<Arc<StepRecorder>>; 2]>>;

/// Step attempts: 1 ms to about 33 s.
fn step_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// A saga from start to end: 5 ms to about 45 min (parked sagas end late).
fn saga_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 20))
}

/// Every metric of the worker.
pub struct Metrics {
    registry: Registry,
    sagas_started: Family<SagaLabels, Counter>,
    sagas_ended: Family<EndLabels, Counter>,
    sagas_parked: Family<ParkLabels, Counter>,
    saga_duration: Histograms<EndLabels>,
    step_attempts: Family<StepLabels, Counter>,
    step_failures: Family<FailureLabels, Counter>,
    step_refusals: Family<StepLabels, Counter>,
    step_duration: Histograms<StepLabels>,
    journal_batch: Histogram,
    journal_commit: Histogram,
    journal_removed: Counter,
    queue_received: Counter,
    queue_completed: Family<ReasonLabels, Counter>,
    queue_abandoned: Counter,
    queue_dead_lettered: Counter,
    sagas_in_progress: Gauge,
    breaker_state: Family<BreakerStateLabels, Gauge>,
    breaker_waiting: Family<DependencyLabels, Gauge>,
    breaker_opened: Family<DependencyLabels, Counter>,
    breaker_refused: Family<DependencyLabels, Counter>,
    breaker_probes: Family<DependencyLabels, Counter>,
    recorders: RwLock<RecorderCache>,
    /// Serialises scrapes: each copies the scrape-time figures in, then
    /// encodes.
    scrape: std::sync::Mutex<()>,
}

/// The process's metrics.
pub fn global() -> &'static Arc<Metrics> {
    static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
    METRICS.get_or_init(|| Arc::new(Metrics::new()))
}

/// The trigger's message counters, as `/metrics` shows them (read from
/// the trigger at scrape time; a value here so that metrics, which the
/// engine calls, knows nothing of triggers).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages received (redeliveries included).
    pub received: u64,
    /// Messages settled after a new saga started.
    pub started: u64,
    /// Messages settled as duplicates of an existing saga.
    pub duplicates: u64,
    /// Messages released after a failed start.
    pub abandoned: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
}

/// What `/metrics` reads at scrape time.
#[derive(Default)]
pub struct Scrape<'a> {
    /// The trigger's counters.
    pub trigger: Option<QueueCounts>,
    /// The worker's breakers.
    pub breakers: Option<&'a Breakers>,
    /// Sagas in progress now.
    pub in_progress: Option<usize>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sagaflow");
        let m = Metrics {
            registry: Registry::default(),
            sagas_started: Family::default(),
            sagas_ended: Family::default(),
            sagas_parked: Family::default(),
            saga_duration: Family::new_with_constructor(saga_buckets),
            step_attempts: Family::default(),
            step_failures: Family::default(),
            step_refusals: Family::default(),
            step_duration: Family::new_with_constructor(step_buckets),
            journal_batch: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            journal_commit: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            journal_removed: Counter::default(),
            queue_received: Counter::default(),
            queue_completed: Family::default(),
            queue_abandoned: Counter::default(),
            queue_dead_lettered: Counter::default(),
            sagas_in_progress: Gauge::default(),
            breaker_state: Family::default(),
            breaker_waiting: Family::default(),
            breaker_opened: Family::default(),
            breaker_refused: Family::default(),
            breaker_probes: Family::default(),
            recorders: RwLock::default(),
            scrape: std::sync::Mutex::default(),
        };
        registry.register(
            "sagas_started",
            "Sagas started (embedded engine), by saga",
            m.sagas_started.clone(),
        );
        registry.register(
            "sagas_ended",
            "Sagas that ended, by saga and status (completed, compensated)",
            m.sagas_ended.clone(),
        );
        registry.register(
            "sagas_parked",
            "Times a saga parked for an operator, by saga and the step (and phase) it parked on",
            m.sagas_parked.clone(),
        );
        registry.register_with_unit(
            "saga_duration",
            "Sagas from start to end, by saga and status",
            Unit::Seconds,
            m.saga_duration.clone(),
        );
        registry.register(
            "step_attempts",
            "Activity attempts made, by step, activity and phase (refusals by an open breaker are not attempts)",
            m.step_attempts.clone(),
        );
        registry.register(
            "step_failures",
            "Activity attempts that failed, by step, activity, phase and error kind",
            m.step_failures.clone(),
        );
        registry.register(
            "step_breaker_refusals",
            "Attempts an open circuit breaker refused (not made), by step, activity and phase",
            m.step_refusals.clone(),
        );
        registry.register_with_unit(
            "step_duration",
            "Activity attempts' durations, by step, activity and phase",
            Unit::Seconds,
            m.step_duration.clone(),
        );
        registry.register(
            "journal_commit_batch_records",
            "Records per journal commit (group commit), embedded engine",
            m.journal_batch.clone(),
        );
        registry.register_with_unit(
            "journal_commit_duration",
            "Journal commit latency (write and fsync), embedded engine",
            Unit::Seconds,
            m.journal_commit.clone(),
        );
        registry.register(
            "journal_sagas_removed",
            "Ended sagas removed from the journal by retention, embedded engine",
            m.journal_removed.clone(),
        );
        registry.register(
            "queue_messages_received",
            "Messages the trigger received (redeliveries included)",
            m.queue_received.clone(),
        );
        registry.register(
            "queue_messages_completed",
            "Messages settled as done, by reason (started: a new saga; duplicate: its saga already existed)",
            m.queue_completed.clone(),
        );
        registry.register(
            "queue_messages_abandoned",
            "Messages released to the queue after a failed start (delivered again)",
            m.queue_abandoned.clone(),
        );
        registry.register(
            "queue_messages_dead_lettered",
            "Messages dead-lettered (malformed, too large, or refused), with a reason on the message",
            m.queue_dead_lettered.clone(),
        );
        registry.register(
            "sagas_in_progress",
            "Sagas in progress now: running or compensating, neither parked nor waiting for an open breaker",
            m.sagas_in_progress.clone(),
        );
        registry.register(
            "breaker_state",
            "Circuit breaker state: 1 for the current state of each dependency, 0 for the others",
            m.breaker_state.clone(),
        );
        registry.register(
            "breaker_waiting_sagas",
            "Sagas waiting for an open breaker, by dependency",
            m.breaker_waiting.clone(),
        );
        registry.register(
            "breaker_opened",
            "Times a breaker opened, by dependency",
            m.breaker_opened.clone(),
        );
        registry.register(
            "breaker_refused",
            "Calls a breaker refused, by dependency",
            m.breaker_refused.clone(),
        );
        registry.register(
            "breaker_probes",
            "Probes a half-open breaker let through, by dependency",
            m.breaker_probes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A saga of `saga` started (its start is durable).
    pub fn saga_started(&self, saga: &Arc<str>) {
        self.sagas_started
            .get_or_create(&SagaLabels { saga: saga.clone() })
            .inc();
    }

    /// A saga of `saga` ended with `status` after `took`.
    pub fn saga_ended(&self, saga: &Arc<str>, status: &'static str, took: Duration) {
        let labels = EndLabels {
            saga: saga.clone(),
            status,
        };
        self.sagas_ended.get_or_create(&labels).inc();
        self.saga_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// A saga of `saga` parked on `step` in `phase`.
    pub fn saga_parked(&self, saga: &Arc<str>, step: &Arc<str>, phase: Phase) {
        self.sagas_parked
            .get_or_create(&ParkLabels {
                saga: saga.clone(),
                step: step.clone(),
                phase: phase.name(),
            })
            .inc();
    }

    /// The journal committed `records` records in `took`.
    pub fn journal_committed(&self, records: usize, took: Duration) {
        self.journal_batch.observe(records as f64);
        self.journal_commit.observe(took.as_secs_f64());
    }

    /// Retention removed `sagas` ended sagas from the journal.
    pub fn journal_removed(&self, sagas: usize) {
        self.journal_removed.inc_by(sagas as u64);
    }

    /// The metrics in OpenMetrics text, the scrape-time figures read from
    /// `scrape` first.
    pub fn render(&self, scrape: &Scrape<'_>) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = scrape.trigger {
            let set = |c: &Counter, v: u64| c.inner().store(v, Ordering::Relaxed);
            set(&self.queue_received, t.received);
            set(
                &self
                    .queue_completed
                    .get_or_create(&ReasonLabels { reason: "started" }),
                t.started,
            );
            set(
                &self.queue_completed.get_or_create(&ReasonLabels {
                    reason: "duplicate",
                }),
                t.duplicates,
            );
            set(&self.queue_abandoned, t.abandoned);
            set(&self.queue_dead_lettered, t.dead_lettered);
        }
        if let Some(n) = scrape.in_progress {
            self.sagas_in_progress.set(n as i64);
        }
        if let Some(breakers) = scrape.breakers {
            for b in breakers.snapshots() {
                for state in [
                    BreakerState::Closed,
                    BreakerState::Open,
                    BreakerState::HalfOpen,
                ] {
                    self.breaker_state
                        .get_or_create(&BreakerStateLabels {
                            dependency: b.dependency.clone(),
                            state: state.name(),
                        })
                        .set(i64::from(state == b.state));
                }
                let dep = DependencyLabels {
                    dependency: b.dependency.clone(),
                };
                self.breaker_waiting
                    .get_or_create(&dep)
                    .set(b.waiting as i64);
                let set = |f: &Family<DependencyLabels, Counter>, v: u64| {
                    f.get_or_create(&dep).inner().store(v, Ordering::Relaxed)
                };
                set(&self.breaker_opened, b.opened_total);
                set(&self.breaker_refused, b.refused_total);
                set(&self.breaker_probes, b.probes_total);
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// One step's handles: what an attempt of it updates.
struct StepRecorder {
    labels: StepLabels,
    attempts: Counter,
    refusals: Counter,
    duration: Histogram,
    failures: Family<FailureLabels, Counter>,
}

impl AttemptRecorder for StepRecorder {
    fn record(&self, result: &Result<Value, ActivityError>, elapsed: Duration) {
        match result {
            Err(e) if e.kind == BREAKER_OPEN && e.wait.is_some() => {
                self.refusals.inc();
            }
            Ok(_) => {
                self.attempts.inc();
                self.duration.observe(elapsed.as_secs_f64());
            }
            Err(e) => {
                self.attempts.inc();
                self.duration.observe(elapsed.as_secs_f64());
                self.failures
                    .get_or_create(&FailureLabels {
                        step: self.labels.step.clone(),
                        activity: self.labels.activity.clone(),
                        phase: self.labels.phase,
                        kind: e.kind.clone(),
                    })
                    .inc();
            }
        }
    }
}

impl AttemptObserver for Metrics {
    fn recorder(&self, step: &str, activity: &str, phase: Phase) -> Arc<dyn AttemptRecorder> {
        let slot = usize::from(phase == Phase::Compensation);
        if let Some(found) = self
            .recorders
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(step)
            .and_then(|by_activity| by_activity.get(activity))
            .and_then(|phases| phases[slot].clone())
        {
            return found;
        }
        let labels = StepLabels {
            step: Arc::from(step),
            activity: Arc::from(activity),
            phase: phase.name(),
        };
        let recorder = Arc::new(StepRecorder {
            attempts: self.step_attempts.get_or_create_owned(&labels),
            refusals: self.step_refusals.get_or_create_owned(&labels),
            duration: self.step_duration.get_or_create_owned(&labels),
            failures: self.step_failures.clone(),
            labels,
        });
        let mut recorders = self.recorders.write().unwrap_or_else(|e| e.into_inner());
        let phases = recorders
            .entry(step.to_owned())
            .or_default()
            .entry(activity.to_owned())
            .or_default();
        phases[slot].get_or_insert(recorder).clone()
    }
}

#[cfg(test)]
mod tests;
