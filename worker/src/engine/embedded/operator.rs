//! Operator commands on the embedded journal, for the CLI (and the admin
//! API): check a command against the saga as the engine would see it,
//! queue it in the journal's inbox, learn the worker's verdict from the
//! audit table, and list the audit.
//!
//! The check is the engine's own decision, not a copy of it: the saga is
//! recovered from its journal into a [`State`] of its own and asked
//! ([`State::check`]). The worker decides again when it delivers the
//! command, since the saga may have moved in between; what it decides is in
//! the audit row of the inbox row, written in the transaction that takes
//! the row out of the inbox.

use super::recovery;
use super::state::{Effects, Input, State};
use super::EngineError;
use crate::engine::command::{CommandRequest, StartRequest};
use crate::engine::filter::{last_attempt, Filter, Target};
use crate::engine::view::AuditRow;
use rusqlite::{params, Connection, OptionalExtension};
use sagaflow_workflows::{SagaStatus, Signal, Stage};
use std::collections::HashSet;
use std::path::Path;

/// Whether `signal` applies to saga `id` now, or why not (`Ok(Err(why))`).
pub fn check(
    conn: &Connection,
    id: &str,
    signal: &Signal,
) -> Result<Result<(), String>, EngineError> {
    let Some(saga) = recovery::read_one(conn, id)? else {
        // Ended (or unknown): its status says all a command needs.
        let status: Option<(String, Option<String>)> = conn
            .query_row(
                "SELECT status, reason FROM sagas WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        return Ok(
            match status.and_then(|(s, r)| SagaStatus::from_parts(&s, r)) {
                Some(status) => signal.applies_to(&status, &Stage::default(), &[]),
                None => Err(format!("there is no saga {id}")),
            },
        );
    };
    let mut state = State::new(HashSet::new());
    let mut ignored: Effects<()> = Effects::default();
    state.apply(
        Input::Recover(Box::new(saga)),
        sagaflow_activities::clock::now_ms(),
        &mut ignored,
    );
    Ok(state.check(id, signal))
}

/// Queues a command for the worker; returns its inbox id. With a bulk id,
/// a saga already commanded in that bulk run (queued or audited) is not
/// queued again: `Ok(None)`.
pub fn queue(
    conn: &mut Connection,
    saga_id: &str,
    command: &CommandRequest,
    at_ms: u64,
) -> rusqlite::Result<Option<i64>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if let Some(bulk) = &command.audit.bulk {
        let seen: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM inbox WHERE bulk_id = ?1 AND saga_id = ?2)
                 OR EXISTS (SELECT 1 FROM audit WHERE bulk_id = ?1 AND saga_id = ?2)",
            params![bulk, saga_id],
            |r| r.get(0),
        )?;
        if seen {
            return Ok(None);
        }
    }
    tx.execute(
        "INSERT INTO inbox (saga_id, signal, at_ms, body, bulk_id) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            saga_id,
            command.signal.name(),
            at_ms as i64,
            command.encode(),
            command.audit.bulk
        ],
    )?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(Some(id))
}

/// Queues a start the worker carries out for command `name` on saga `of`
/// (a refund: `start` is the refund saga); returns its inbox id.
pub fn queue_start(
    conn: &mut Connection,
    of: &str,
    name: &str,
    start: &StartRequest,
    at_ms: u64,
) -> rusqlite::Result<i64> {
    let mut body = serde_json::to_value(start).expect("start requests serialize");
    body["signal"] = name.into();
    conn.execute(
        "INSERT INTO inbox (saga_id, signal, at_ms, body, bulk_id) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![of, name, at_ms as i64, body.to_string(), start.audit.bulk],
    )?;
    Ok(conn.last_insert_rowid())
}

const AUDIT_COLUMNS: &str =
    "at_ms, saga_id, command, operator, reason, bulk_id, outcome, detail, body";

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    let body: String = r.get(8)?;
    Ok(AuditRow {
        at_ms: r.get(0)?,
        saga_id: r.get(1)?,
        command: r.get(2)?,
        operator: r.get(3)?,
        reason: r.get(4)?,
        bulk_id: r.get(5)?,
        outcome: r.get(6)?,
        detail: r.get(7)?,
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    })
}

/// The worker's verdict on inbox row `inbox_id`, once it has one.
pub fn outcome(conn: &Connection, inbox_id: i64) -> rusqlite::Result<Option<AuditRow>> {
    conn.query_row(
        &format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE inbox_id = ?1"),
        [inbox_id],
        audit_row,
    )
    .optional()
}

/// Audited commands since `since_ms`, oldest first; of one saga if given.
pub fn audit(
    conn: &Connection,
    since_ms: u64,
    saga_id: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<AuditRow>> {
    conn.prepare(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit WHERE at_ms >= ?1 AND (?2 IS NULL OR saga_id = ?2)
         ORDER BY id LIMIT ?3"
    ))?
    .query_map(params![since_ms as i64, saga_id, limit as i64], audit_row)?
    .collect()
}

/// The sagas `filter` selects, oldest first.
pub fn targets(conn: &Connection, filter: &Filter) -> rusqlite::Result<Vec<Target>> {
    let rows: Vec<(String, String, String, u64)> = conn
        .prepare(
            "SELECT id, saga, status, created_ms FROM sagas
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR saga = ?2)
               AND (?3 IS NULL OR created_ms > ?3) AND (?4 IS NULL OR created_ms < ?4)
             ORDER BY created_ms, id",
        )?
        .query_map(
            params![
                filter.status,
                filter.saga,
                filter.started_after.map(|t| t as i64),
                filter.started_before.map(|t| t as i64)
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?
        .collect::<Result<_, _>>()?;
    let mut last = conn.prepare(
        "SELECT kind, body FROM events WHERE saga_id = ?1 AND kind IN ('activity_completed', 'activity_failed')
         ORDER BY n DESC LIMIT 1",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, saga, status, created_ms) in rows {
        let event: Option<(String, String)> = last
            .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (step, error) = match event {
            Some((kind, body)) => {
                let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                last_attempt(std::iter::once((kind.as_str(), &body)))
            }
            None => (None, None),
        };
        if filter.matches_attempt(step.as_deref(), error.as_deref()) {
            out.push(Target {
                id,
                saga,
                status,
                step,
                error,
                created_ms,
            });
        }
    }
    Ok(out)
}

/// True when bulk run `bulk` commanded saga `saga_id` already (queued,
/// applied or refused by the worker): a resumed run skips it.
pub fn commanded(conn: &Connection, bulk: &str, saga_id: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM inbox WHERE bulk_id = ?1 AND saga_id = ?2)
             OR EXISTS (SELECT 1 FROM audit WHERE bulk_id = ?1 AND saga_id = ?2)",
        params![bulk, saga_id],
        |r| r.get(0),
    )
}

/// Audit outcomes of bulk run `bulk`: (applied, refused).
pub fn bulk_outcomes(conn: &Connection, bulk: &str) -> rusqlite::Result<(u64, u64)> {
    conn.query_row(
        "SELECT COALESCE(SUM(outcome = 'applied'), 0), COALESCE(SUM(outcome = 'refused'), 0)
         FROM audit WHERE bulk_id = ?1",
        [bulk],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// True when a worker holds the journal at `journal` (its lock file is
/// locked), so a queued command is delivered now rather than at its start.
pub fn worker_running(journal: &Path) -> bool {
    let Ok(lock) = std::fs::File::options()
        .read(true)
        .write(true)
        .open(journal.with_extension("lock"))
    else {
        return false;
    };
    match lock.try_lock() {
        Ok(()) => {
            let _ = lock.unlock();
            false
        }
        Err(_) => true,
    }
}
