//! What the operator sees of a saga on either engine: its row, its
//! events, its timeline, the commands it received, and the counts and
//! latencies of `stats`. The embedded engine reads them from its journal
//! ([`crate::engine::embedded::read`]), the Temporal client from visibility and
//! histories ([`crate::engine::temporal::history`]); the CLI, the admin API
//! and the dashboard print them without knowing which.

use sagaflow_workflows::{ActivityError, Phase, SagaDef, BREAKER_OPEN};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One saga row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SagaRow {
    /// Saga id (= order id).
    pub id: String,
    /// Saga name.
    pub saga: String,
    /// Status name.
    pub status: String,
    /// Parked reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Start time (ms since epoch).
    pub created_ms: u64,
    /// Last change.
    pub updated_ms: u64,
    /// End time, for terminal sagas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// Definition hash.
    pub def_hash: String,
}

/// An operator command a saga received, from its `signal` events.
#[derive(Debug, Clone, Serialize)]
pub struct CommandEntry {
    /// When it was delivered (ms since the epoch).
    pub at_ms: u64,
    /// retry, cancel or resolve.
    pub command: String,
    /// Who sent it.
    pub operator: String,
    /// Why.
    pub reason: String,
    /// A resolve's step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The bulk run, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulk: Option<String>,
}

/// The operator commands among a saga's events, in order.
pub fn commands(events: &[EventRow]) -> Vec<CommandEntry> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    events
        .iter()
        .filter(|e| e.kind == "signal")
        .map(|e| CommandEntry {
            at_ms: e.at_ms,
            command: text(&e.body["signal"]),
            operator: text(&e.body["operator"]),
            reason: text(&e.body["reason"]),
            step: e.body["step"].as_str().map(str::to_owned),
            bulk: e.body["bulk"].as_str().map(str::to_owned),
        })
        .collect()
}

/// One raw journal event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRow {
    /// Event number within the saga.
    pub n: u32,
    /// When it was recorded.
    pub at_ms: u64,
    /// started, activity_completed, activity_failed, timer_fired, signal, status.
    pub kind: String,
    /// Interpreter operation number, for activities and timers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u32>,
    /// The event's data.
    pub body: Value,
}

/// One line of a saga's timeline: a step's action or compensation.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    /// Step name.
    pub step: String,
    /// "action" or "compensation".
    pub phase: &'static str,
    /// Activity name.
    pub activity: String,
    /// ok, failed, running (attempts so far, none finished ok), resolved
    /// (done by hand, by an operator's `resolve`), or pending.
    pub status: &'static str,
    /// Attempts made (refusals by an open breaker are not attempts).
    pub attempts: u32,
    /// Times an open breaker refused it (each followed by a durable wait).
    #[serde(skip_serializing_if = "is_zero")]
    pub breaker_waits: u32,
    /// The last error, if any attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// From the first attempt's start to the last attempt's end, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a saga that is not over waits for, when its last attempt was
/// refused by an open circuit breaker: the dependency and since when the
/// breaker has been open (ms since the Unix epoch).
pub fn breaker_wait(events: &[EventRow], status: &str) -> Option<(String, u64)> {
    if status != "running" && status != "compensating" {
        return None;
    }
    let last = events
        .iter()
        .rev()
        .find(|e| e.kind == "activity_completed" || e.kind == "activity_failed")?;
    let wait = &last.body["error"]["wait"];
    Some((
        wait["dependency"].as_str()?.to_owned(),
        wait["since_ms"].as_u64()?,
    ))
}

/// The attempt an `activity_completed` or `activity_failed` event records
/// (a refusal by an open breaker too); `None` for any other event.
fn attempt(e: &EventRow) -> Option<AttemptBody> {
    if e.kind != "activity_completed" && e.kind != "activity_failed" {
        return None;
    }
    serde_json::from_value(e.body.clone()).ok()
}

/// Builds the timeline of a saga from its definition and events: every
/// step's action in order, then the compensations that ran, in the order
/// they ran.
pub fn timeline(def: &SagaDef, events: &[EventRow], status: &str) -> Vec<TimelineEntry> {
    let mut entries: Vec<TimelineEntry> = Vec::new();
    let mut first_start: Vec<u64> = Vec::new();
    for e in events {
        if e.kind == "signal" && e.body["signal"] == "resolve" {
            // Done by hand: the step (or compensation) it was parked on.
            let step = e.body["step"].as_str().unwrap_or_default();
            if let Some(t) = entries.iter_mut().rev().find(|t| t.step == step) {
                t.status = "resolved";
            }
            continue;
        }
        let Some(b) = attempt(e) else {
            continue;
        };
        let phase = b.phase.name();
        let i = match entries
            .iter()
            .position(|t| t.step == b.step && t.phase == phase)
        {
            Some(i) => i,
            None => {
                entries.push(TimelineEntry {
                    step: b.step.clone(),
                    phase,
                    activity: b.activity.clone(),
                    status: "running",
                    attempts: 0,
                    breaker_waits: 0,
                    last_error: None,
                    duration_ms: None,
                });
                first_start.push(b.started_ms);
                entries.len() - 1
            }
        };
        let t = &mut entries[i];
        if b.error.as_ref().is_some_and(|e| e.wait.is_some()) {
            t.breaker_waits += 1;
        }
        // Refused by an open breaker: a wait, not an attempt.
        if b.error.as_ref().is_some_and(|e| e.kind == BREAKER_OPEN) {
            t.duration_ms = Some(e.at_ms.saturating_sub(first_start[i]));
            if t.status != "ok" && t.status != "failed" {
                t.status = "running";
            }
            continue;
        }
        t.attempts += 1;
        t.duration_ms = Some(e.at_ms.saturating_sub(first_start[i]));
        match &b.error {
            Some(err) => {
                t.last_error = Some(err.to_string());
                t.status = "failed";
            }
            None => t.status = "ok",
        }
    }
    // A failed entry of a saga that is still running or compensating is
    // being retried; for an ended or parked saga the failure stands.
    if status == "running" || status == "compensating" {
        if let Some(last) = entries.last_mut() {
            if last.status == "failed" {
                last.status = "running";
            }
        }
    }
    // Steps never reached are listed as pending so the whole plan shows.
    for step in &def.steps {
        if !entries
            .iter()
            .any(|t| t.step == step.name && t.phase == Phase::Action.name())
        {
            let at = entries
                .iter()
                .position(|t| t.phase == Phase::Compensation.name())
                .unwrap_or(entries.len());
            entries.insert(
                at,
                TimelineEntry {
                    step: step.name.clone(),
                    phase: Phase::Action.name(),
                    activity: step.action.clone(),
                    status: "pending",
                    attempts: 0,
                    breaker_waits: 0,
                    last_error: None,
                    duration_ms: None,
                },
            );
        }
    }
    entries
}

/// Counts and latencies over the whole journal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Sagas in all.
    pub total: u64,
    /// Running.
    pub running: u64,
    /// Compensating.
    pub compensating: u64,
    /// Completed.
    pub completed: u64,
    /// Compensated.
    pub compensated: u64,
    /// Parked.
    pub parked: u64,
    /// Ended sagas per second, first start to last end.
    pub sagas_per_sec: f64,
    /// Median start-to-end time of ended sagas, ms.
    pub p50_ms: u64,
    /// 99th percentile start-to-end time of ended sagas, ms.
    pub p99_ms: u64,
    /// How many ended sagas the throughput and latencies cover: the most
    /// recent [`JOURNAL_LATENCY_SAMPLE`] on the embedded engine, the most
    /// recent [`LATENCY_SAMPLE`] on Temporal (whose visibility store counts
    /// cheaply but lists slowly).
    #[serde(default)]
    pub latency_over: u64,
    /// Journal events; on Temporal, the history events of the sagas
    /// `latency_over` covers.
    pub events: u64,
    /// Signals waiting in the inbox.
    pub inbox: u64,
}

/// How many of the most recently ended sagas Temporal's `stats` reads
/// for throughput and latency.
pub const LATENCY_SAMPLE: usize = 1_000;

/// The value at quantile `q` of sorted data (nearest rank), 0 when empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The body of an `activity_completed` / `activity_failed` event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptBody {
    /// Saga step.
    pub step: String,
    /// Activity name.
    pub activity: String,
    /// Action or compensation.
    pub phase: Phase,
    /// 1-based attempt number.
    pub attempt: u32,
    /// When the attempt started (wall clock, ms).
    pub started_ms: u64,
    /// The output, for a completed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The error, for a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ActivityError>,
}

/// One operator command as the audit holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRow {
    /// When the worker applied or refused it (ms since the epoch).
    pub at_ms: u64,
    /// The saga.
    pub saga_id: String,
    /// retry, cancel, resolve (or unreadable).
    pub command: String,
    /// Who.
    pub operator: String,
    /// Why.
    pub reason: String,
    /// The bulk run, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulk_id: Option<String>,
    /// applied or refused.
    pub outcome: String,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The command as sent (a resolve's step and output).
    pub body: serde_json::Value,
}

mod spans;
pub use spans::spans;

#[cfg(test)]
mod tests;
