//! Read-only queries of the journal for the operator: list, show, history
//! and stats, as the engine-neutral rows of [`crate::engine::view`] (the
//! Temporal client produces the same). Operator commands are in
//! `operator`.
//!
//! Everything here opens its own connection and works while a worker is
//! writing (WAL readers do not block the writer).

use crate::engine::view::{percentile, EventRow, SagaRow, Stats};
use rusqlite::{params, Connection, OptionalExtension};
use sagaflow_workflows::SagaDef;
use serde_json::Value;

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

/// How many of the most recently ended sagas the journal's `stats` reads
/// for throughput and latency (through the `sagas_ended` index: the cost
/// does not grow with the journal).
pub const JOURNAL_LATENCY_SAMPLE: usize = 20_000;

/// Computes [`Stats`]: counts from the `counts` table (kept in the
/// transactions that change them), throughput and latency over the most
/// recent [`JOURNAL_LATENCY_SAMPLE`] ended sagas.
pub fn stats(conn: &Connection) -> rusqlite::Result<Stats> {
    let mut s = Stats::default();
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
