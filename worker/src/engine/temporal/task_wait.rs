//! How long the cluster keeps this worker's workflow tasks waiting
//! (schedule-to-start, from the server's own timestamps on each task the
//! worker polls): the signal the intake's window follows
//! ([`super::intake::StartWindow`]).
//!
//! A saga's first workflow task, a fired timer and an operator's Update
//! all wait in the same task queues; when new sagas arrive faster than the
//! cluster dispatches their tasks, every one of those waits grows, and a
//! `sagaflow cancel` waits behind the backlog like the rest. The SDK
//! measures the wait of every task it receives and hands it to the
//! runtime's metrics meter; [`TaskWaitMeter`] is that meter, keeping the
//! longest wait per interval and discarding every other metric.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, Gauge, GaugeF64, Histogram, HistogramDuration, HistogramDurationBase,
    HistogramF64, MetricAttributable, MetricAttributes, MetricParameters, NewAttributes,
    NoOpCoreMeter, UpDownCounter,
};

/// The SDK's name for the histogram, after the runtime's metric prefix.
const SCHEDULE_TO_START: &str = "workflow_task_schedule_to_start_latency";

/// The longest workflow-task wait seen since the last [`TaskWait::take`].
#[derive(Debug, Default)]
pub struct TaskWait {
    worst_ms: AtomicU64,
    tasks: AtomicU64,
}

impl TaskWait {
    /// Notes one task's wait.
    pub fn note(&self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.worst_ms.fetch_max(ms, Ordering::Relaxed);
        self.tasks.fetch_add(1, Ordering::Relaxed);
    }

    /// The longest wait since the last call, `None` when no task arrived;
    /// starts a new interval.
    pub fn take(&self) -> Option<u64> {
        let tasks = self.tasks.swap(0, Ordering::Relaxed);
        let worst = self.worst_ms.swap(0, Ordering::Relaxed);
        (tasks > 0).then_some(worst)
    }
}

/// The Temporal runtime's metrics meter: records the workflow tasks'
/// schedule-to-start waits into a [`TaskWait`], and nothing else (the
/// worker's own `/metrics` covers what operators read).
#[derive(Debug)]
pub struct TaskWaitMeter {
    wait: Arc<TaskWait>,
}

impl TaskWaitMeter {
    /// A meter that feeds `wait`.
    pub fn new(wait: Arc<TaskWait>) -> TaskWaitMeter {
        TaskWaitMeter { wait }
    }
}

struct Recorder(Arc<TaskWait>);

impl MetricAttributable<Box<dyn HistogramDurationBase>> for Recorder {
    fn with_attributes(
        &self,
        _: &MetricAttributes,
    ) -> Result<Box<dyn HistogramDurationBase>, Box<dyn std::error::Error>> {
        Ok(Box::new(Recorder(self.0.clone())))
    }
}

impl HistogramDurationBase for Recorder {
    fn records(&self, value: Duration) {
        self.0.note(value);
    }
}

impl CoreMeter for TaskWaitMeter {
    fn new_attributes(&self, attribs: NewAttributes) -> MetricAttributes {
        NoOpCoreMeter.new_attributes(attribs)
    }

    fn extend_attributes(
        &self,
        existing: MetricAttributes,
        attribs: NewAttributes,
    ) -> MetricAttributes {
        NoOpCoreMeter.extend_attributes(existing, attribs)
    }

    fn counter(&self, params: MetricParameters) -> Counter {
        NoOpCoreMeter.counter(params)
    }

    fn histogram(&self, params: MetricParameters) -> Histogram {
        NoOpCoreMeter.histogram(params)
    }

    fn histogram_f64(&self, params: MetricParameters) -> HistogramF64 {
        NoOpCoreMeter.histogram_f64(params)
    }

    fn histogram_duration(&self, params: MetricParameters) -> HistogramDuration {
        if params.name.ends_with(SCHEDULE_TO_START) {
            HistogramDuration::new(Arc::new(Recorder(self.wait.clone())))
        } else {
            NoOpCoreMeter.histogram_duration(params)
        }
    }

    fn gauge(&self, params: MetricParameters) -> Gauge {
        NoOpCoreMeter.gauge(params)
    }

    fn gauge_f64(&self, params: MetricParameters) -> GaugeF64 {
        NoOpCoreMeter.gauge_f64(params)
    }

    fn up_down_counter(&self, params: MetricParameters) -> UpDownCounter {
        NoOpCoreMeter.up_down_counter(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_keeps_the_longest_schedule_to_start_wait_per_interval() {
        let wait = Arc::new(TaskWait::default());
        let meter = TaskWaitMeter::new(wait.clone());
        assert_eq!(wait.take(), None, "no task, no news");
        let hist = meter.histogram_duration(MetricParameters::from(
            "temporal_workflow_task_schedule_to_start_latency",
        ));
        let other = meter.histogram_duration(MetricParameters::from(
            "temporal_activity_schedule_to_start_latency",
        ));
        hist.records(Duration::from_millis(40));
        hist.records(Duration::from_millis(900));
        hist.records(Duration::from_millis(120));
        other.records(Duration::from_secs(60));
        assert_eq!(wait.take(), Some(900));
        assert_eq!(wait.take(), None, "each interval starts over");
        hist.records(Duration::ZERO);
        assert_eq!(wait.take(), Some(0), "a task that did not wait is news");
    }
}
