//! Read-only views of the journal for the CLI: list, show (timeline),
//! history (raw events), stats. (Operator commands are in `operator`.)
//!
//! Everything here opens its own connection and works while a worker is
//! writing (WAL readers do not block the writer).

use super::journal::AttemptBody;
use rusqlite::{params, Connection, OptionalExtension};
use sagaflow_workflows::{Phase, SagaDef, BREAKER_OPEN};
use serde::Serialize;
use serde_json::Value;

/// One saga row.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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

fn saga_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SagaRow> {
    Ok(SagaRow {
        id: r.get(0)?,
        saga: r.get(1)?,
        status: r.get(2)?,
        reason: r.get(3)?,
        created_ms: r.get(4)?,
        updated_ms: r.get(5)?,
        ended_ms: r.get(6)?,
        def_hash: r.get(7)?,
    })
}

const SAGA_COLUMNS: &str = "id, saga, status, reason, created_ms, updated_ms, ended_ms, def_hash";

/// Sagas, newest first (in the order they were started, which is rowid
/// order), optionally of one status. Each form walks the table or the
/// `sagas_status` index (whose entries are in rowid order within a
/// status) from its newest end, so a page costs the same at any journal
/// size.
pub fn list(
    conn: &Connection,
    status: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<SagaRow>> {
    let limit = limit as i64;
    match status {
        None => conn
            .prepare(&format!(
                "SELECT {SAGA_COLUMNS} FROM sagas ORDER BY rowid DESC LIMIT ?1"
            ))?
            .query_map(params![limit], saga_row)?
            .collect(),
        Some(status) => conn
            .prepare(&format!(
                "SELECT {SAGA_COLUMNS} FROM sagas INDEXED BY sagas_status WHERE status = ?1 ORDER BY rowid DESC LIMIT ?2"
            ))?
            .query_map(params![status, limit], saga_row)?
            .collect(),
    }
}

/// Ended sagas whose end is before `before_ms`, oldest end first, after
/// the one `after` names (`(ended_ms, id)`; `None`: from the oldest); at
/// most `limit`. Walks the `sagas_ended` index (`sagaflow archive`).
pub fn ended_before(
    conn: &Connection,
    before_ms: u64,
    after: Option<(u64, &str)>,
    limit: usize,
) -> rusqlite::Result<Vec<SagaRow>> {
    let (after_ms, after_id) = after.map_or((-1, ""), |(ms, id)| (ms as i64, id));
    conn.prepare_cached(&format!(
        "SELECT {SAGA_COLUMNS} FROM sagas INDEXED BY sagas_ended
         WHERE ended_ms IS NOT NULL AND ended_ms < ?1 AND (ended_ms, id) > (?2, ?3)
         ORDER BY ended_ms, id LIMIT ?4"
    ))?
    .query_map(
        params![before_ms as i64, after_ms, after_id, limit as i64],
        saga_row,
    )?
    .collect()
}

/// One saga.
pub fn saga(conn: &Connection, id: &str) -> rusqlite::Result<Option<SagaRow>> {
    conn.query_row(
        &format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = ?1"),
        [id],
        saga_row,
    )
    .optional()
}

/// The definition a saga runs.
pub fn definition(conn: &Connection, hash: &str) -> rusqlite::Result<Option<SagaDef>> {
    let body: Option<String> = conn
        .query_row(
            "SELECT body FROM definitions WHERE hash = ?1",
            [hash],
            |r| r.get(0),
        )
        .optional()?;
    Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
}

/// The input (order) a saga started with.
pub fn input(conn: &Connection, id: &str) -> rusqlite::Result<Option<Value>> {
    let body: Option<String> = conn
        .query_row("SELECT input FROM sagas WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
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
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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

/// A saga's journal, in order.
pub fn events(conn: &Connection, id: &str) -> rusqlite::Result<Vec<EventRow>> {
    conn.prepare("SELECT n, at_ms, kind, seq, body FROM events WHERE saga_id = ?1 ORDER BY n")?
        .query_map([id], |r| {
            let body: String = r.get(4)?;
            Ok(EventRow {
                n: r.get(0)?,
                at_ms: r.get(1)?,
                kind: r.get(2)?,
                seq: r.get(3)?,
                body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
            })
        })?
        .collect()
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
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
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

/// How many of the most recently ended sagas the journal's `stats` reads
/// for throughput and latency (through the `sagas_ended` index: the cost
/// does not grow with the journal).
pub const JOURNAL_LATENCY_SAMPLE: usize = 20_000;

/// Computes [`Stats`]: counts from the `counts` table (kept in the
/// transactions that change them), throughput and latency over the most
/// recent [`JOURNAL_LATENCY_SAMPLE`] ended sagas.
pub fn stats(conn: &Connection) -> rusqlite::Result<Stats> {
    let mut s = Stats {
        total: 0,
        running: 0,
        compensating: 0,
        completed: 0,
        compensated: 0,
        parked: 0,
        sagas_per_sec: 0.0,
        p50_ms: 0,
        p99_ms: 0,
        latency_over: 0,
        events: 0,
        inbox: 0,
    };
    let mut stmt = conn.prepare("SELECT name, n FROM counts")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (name, n) = row?;
        let n = n.max(0) as u64;
        match name.strip_prefix("status:") {
            Some(status) => {
                s.total += n;
                match status {
                    "running" => s.running = n,
                    "compensating" => s.compensating = n,
                    "completed" => s.completed = n,
                    "compensated" => s.compensated = n,
                    "parked" => s.parked = n,
                    _ => {}
                }
            }
            None if name == "events" => s.events = n,
            None => {}
        }
    }
    let mut first = u64::MAX;
    let mut last = 0;
    let mut lat: Vec<u64> = conn
        .prepare(
            "SELECT created_ms, ended_ms FROM sagas INDEXED BY sagas_ended
             WHERE ended_ms IS NOT NULL ORDER BY ended_ms DESC LIMIT ?1",
        )?
        .query_map([JOURNAL_LATENCY_SAMPLE as i64], |r| {
            Ok((r.get::<_, u64>(0)?, r.get::<_, u64>(1)?))
        })?
        .map(|row| {
            row.map(|(created, ended)| {
                first = first.min(created);
                last = last.max(ended);
                ended.saturating_sub(created)
            })
        })
        .collect::<Result<_, _>>()?;
    lat.sort_unstable();
    s.p50_ms = percentile(&lat, 0.50);
    s.p99_ms = percentile(&lat, 0.99);
    s.latency_over = lat.len() as u64;
    if !lat.is_empty() {
        let secs = (last.saturating_sub(first)).max(1) as f64 / 1000.0;
        s.sagas_per_sec = (lat.len() as f64 / secs * 10.0).round() / 10.0;
    }
    s.inbox = conn.query_row("SELECT COUNT(*) FROM inbox", [], |r| r.get(0))?;
    Ok(s)
}

/// The value at quantile `q` of sorted data (nearest rank), 0 when empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

mod spans;
pub use spans::spans;

#[cfg(test)]
mod tests;
