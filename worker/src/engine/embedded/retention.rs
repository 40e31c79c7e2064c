//! Retention: the journal's writer removes ended sagas older than
//! `[embedded] retention`, and audit rows older than `audit_retention`, in
//! small batches between its commits.
//!
//! Why in the writer: SQLite has one writer at a time, so a pruner on a
//! connection of its own would wait for the writer's lock, and make the
//! writer wait for its own (the busy handler sleeps). In the writer thread a
//! batch is one short transaction of its own between two group commits,
//! bounded by [`BATCH`] sagas; the batches the core sends meanwhile wait
//! that long and are then committed together. A backlog (retention turned
//! on for a full journal) is worked off a batch every [`CATCH_UP`], so the
//! writer spends at most a small share of its time on it.
//!
//! What goes: an ended saga (completed or compensated: `ended_ms` is set)
//! whose end is older than the retention, with all its events; audit rows
//! older than theirs. Live and parked sagas are never removed, however
//! old. The `counts` table follows in the same transaction, so `stats`
//! stays exact.
//!
//! What follows for users: a removed saga's id can be started again (the
//! duplicate-start window is the retention, like Service Bus's duplicate
//! detection window), and `show`, `refund` and `reconcile` no longer know
//! it. `sagaflow archive` writes ended sagas to a file before that.

use super::journal::Tally;
use rusqlite::{params, Connection, OptionalExtension};
use sagaflow_workflows::SagaStatus;
use std::time::{Duration, Instant};

/// Sagas removed in one transaction, at most.
pub const BATCH: usize = 500;
/// Audit rows removed in one transaction, at most.
const AUDIT_BATCH: usize = 1_000;
/// How often the writer looks for expired sagas when there were none.
pub const EVERY: Duration = Duration::from_secs(1);
/// The pause between two batches while a backlog is worked off.
pub const CATCH_UP: Duration = Duration::from_millis(20);

/// How long ended sagas and audit rows are kept (`None`: forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Ended sagas, counted from their end.
    pub sagas_ms: Option<u64>,
    /// Operator audit records, counted from the command.
    pub audit_ms: Option<u64>,
}

impl Retention {
    /// Whether anything is ever removed.
    pub fn any(&self) -> bool {
        self.sagas_ms.is_some() || self.audit_ms.is_some()
    }
}

/// What one batch removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Sagas (with their events).
    pub sagas: usize,
    /// Events of those sagas.
    pub events: usize,
    /// Audit rows.
    pub audit: usize,
}

impl Pruned {
    /// Whether the batch was full, so more may be waiting.
    fn full(&self) -> bool {
        self.sagas >= BATCH || self.audit >= AUDIT_BATCH
    }
}

/// When the writer prunes next.
pub struct Pruner {
    retention: Retention,
    next: Instant,
}

impl Pruner {
    /// A pruner keeping `retention`; its first batch is due at once.
    pub fn new(retention: Retention) -> Pruner {
        Pruner {
            retention,
            next: Instant::now(),
        }
    }

    /// How long the writer may wait for work before a batch is due
    /// (`None`: nothing is ever pruned).
    pub fn wait(&self) -> Option<Duration> {
        self.retention
            .any()
            .then(|| self.next.saturating_duration_since(Instant::now()))
    }

    /// Runs a batch when one is due, at wall-clock time `now_ms`.
    pub fn run_if_due(&mut self, conn: &mut Connection, now_ms: u64) -> rusqlite::Result<Pruned> {
        if !self.retention.any() || Instant::now() < self.next {
            return Ok(Pruned::default());
        }
        let pruned = prune(conn, self.retention, now_ms)?;
        self.next = Instant::now() + if pruned.full() { CATCH_UP } else { EVERY };
        if pruned.sagas > 0 || pruned.audit > 0 {
            crate::metrics::global().journal_removed(pruned.sagas);
            tracing::debug!(
                sagas = pruned.sagas,
                events = pruned.events,
                audit = pruned.audit,
                "retention removed ended sagas"
            );
        }
        Ok(pruned)
    }
}

/// Removes one batch of what `retention` lets go at `now_ms`, in one
/// transaction.
pub fn prune(conn: &mut Connection, retention: Retention, now_ms: u64) -> rusqlite::Result<Pruned> {
    let tx = conn.transaction()?;
    let mut pruned = Pruned::default();
    if let Some(keep) = retention.sagas_ms {
        let before = now_ms.saturating_sub(keep) as i64;
        let ids: Vec<String> = tx
            .prepare_cached(
                "SELECT id FROM sagas INDEXED BY sagas_ended
                 WHERE ended_ms IS NOT NULL AND ended_ms < ?1 ORDER BY ended_ms LIMIT ?2",
            )?
            .query_map(params![before, BATCH as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        pruned.events = remove(&tx, &ids)?;
        pruned.sagas = ids.len();
    }
    if let Some(keep) = retention.audit_ms {
        let before = now_ms.saturating_sub(keep) as i64;
        pruned.audit = tx
            .prepare_cached(
                "DELETE FROM audit WHERE id IN
                 (SELECT id FROM audit WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2)",
            )?
            .execute(params![before, AUDIT_BATCH as i64])?;
    }
    tx.commit()?;
    Ok(pruned)
}

/// Removes ended sagas `ids` and their events in the caller's transaction
/// (the counts follow); returns how many events went. A saga that has not
/// ended is left alone.
pub fn remove(tx: &rusqlite::Transaction<'_>, ids: &[String]) -> rusqlite::Result<usize> {
    let mut events = 0;
    let mut tally = Tally::default();
    for id in ids {
        let status: Option<String> = tx
            .prepare_cached(
                "DELETE FROM sagas WHERE id = ?1 AND ended_ms IS NOT NULL RETURNING status",
            )?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let Some(status) = status else { continue };
        match SagaStatus::from_parts(&status, None) {
            Some(known) => tally.status(known.name(), -1),
            None => tracing::warn!(saga_id = id, status, "removed a saga of an unknown status"),
        }
        events += tx
            .prepare_cached("DELETE FROM events WHERE saga_id = ?1")?
            .execute([id])?;
    }
    tally.events(-(events as i64));
    tally.apply(tx)?;
    Ok(events)
}

#[cfg(test)]
mod tests;
