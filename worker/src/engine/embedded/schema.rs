//! The journal's schema version and its forward migrations.
//!
//! `PRAGMA user_version` holds the version a journal file is at; a new file
//! reads 0. [`MIGRATIONS`] lists one step per version: `MIGRATIONS[i]` takes
//! a file from version `i` to `i + 1`, so the version this sagaflow
//! writes is the number of steps. Opening a journal runs the missing steps, all of them in one
//! transaction together with the new version number: a crash or a failed
//! step leaves the file at its old version, untouched.
//!
//! To change the format: append a migration (never edit one that has
//! shipped; files in the field were made by it), say what it does in
//! ARCHITECTURE.md's journal table, and add a `journal-vN` fixture beside
//! `integration-tests/fixtures/journal-v1` made by the version before it.
//! New event kinds need no migration: `events.kind` is text, and
//! `EventKind` in `journal.rs` is the one place that reads and writes it.
//!
//! A file at a version above that was written by a newer sagaflow and
//! is refused rather than guessed at.

use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

/// One step of the journal format: the SQL that takes a file from the
/// version before it to the next.
pub struct Migration {
    /// What the step changes, for the log and the docs.
    pub what: &'static str,
    /// Statements run in the upgrade's transaction.
    pub sql: &'static str,
}

/// Every step from an empty file to the current version, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        what: "version 1: definitions, sagas, events, inbox",
        sql: V1,
    },
    Migration {
        what: "version 2: operator commands (inbox body and bulk id, audit)",
        sql: V2,
    },
    Migration {
        what: "version 3: indexes and counters for a journal of millions (retention)",
        sql: V3,
    },
];

const V1: &str = "
CREATE TABLE IF NOT EXISTS definitions (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sagas (
    id TEXT PRIMARY KEY,
    saga TEXT NOT NULL,
    def_hash TEXT NOT NULL REFERENCES definitions (hash),
    status TEXT NOT NULL,
    reason TEXT,
    input TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    ended_ms INTEGER
);
CREATE INDEX IF NOT EXISTS sagas_status ON sagas (status);
CREATE TABLE IF NOT EXISTS events (
    saga_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER,
    body TEXT NOT NULL,
    PRIMARY KEY (saga_id, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id TEXT NOT NULL,
    signal TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
";

/// Operator commands carry arguments and an audit (`inbox.body`), may
/// belong to a bulk run (at most one inbox row per saga and bulk run), and
/// every one taken out of the inbox is recorded in `audit`, applied or
/// refused.
const V2: &str = "
ALTER TABLE inbox ADD COLUMN body TEXT NOT NULL DEFAULT '{}';
ALTER TABLE inbox ADD COLUMN bulk_id TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS inbox_bulk ON inbox (bulk_id, saga_id) WHERE bulk_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    saga_id TEXT NOT NULL,
    command TEXT NOT NULL,
    operator TEXT NOT NULL,
    reason TEXT NOT NULL,
    bulk_id TEXT,
    outcome TEXT NOT NULL,
    detail TEXT,
    body TEXT NOT NULL,
    inbox_id INTEGER
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at_ms);
CREATE INDEX IF NOT EXISTS audit_saga ON audit (saga_id);
CREATE INDEX IF NOT EXISTS audit_inbox ON audit (inbox_id);
CREATE INDEX IF NOT EXISTS audit_bulk ON audit (bulk_id, saga_id) WHERE bulk_id IS NOT NULL;
";

/// A journal of millions of sagas: nothing a running worker or an
/// operator asks for scans every saga, and the hot path pays one more index
/// entry per saga. Retention and `stats` find the oldest and newest ended
/// sagas through `sagas_ended`; recovery and `list` use `sagas_status`,
/// whose entries are in start (rowid) order within a status; `stats` reads
/// its counts from `counts`, which the writer keeps in the transaction of
/// every change (`status:NAME` per status, `events`), and this step fills
/// from what the file holds.
const V3: &str = "
CREATE INDEX IF NOT EXISTS sagas_ended ON sagas (ended_ms, created_ms) WHERE ended_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS counts (
    name TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR REPLACE INTO counts (name, n) SELECT 'status:' || status, COUNT(*) FROM sagas GROUP BY status;
INSERT OR REPLACE INTO counts (name, n) SELECT 'events', COUNT(*) FROM events;
";

/// Why a journal could not be brought to the current version.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The file was written by a newer sagaflow.
    #[error("journal {path} has schema version {found}; this sagaflow reads versions up to {current}: upgrade sagaflow")]
    Newer {
        /// The journal file.
        path: String,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        current: i64,
    },
    /// SQLite refused a step; the file stays at `from`.
    #[error("journal {path}: upgrading from schema version {from} failed at \"{what}\": {source}; the file is unchanged, check that the data directory is writable and not on a full disk")]
    Step {
        /// The journal file.
        path: String,
        /// The version the file stays at.
        from: i64,
        /// The step that failed.
        what: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Reading or setting the version failed.
    #[error("journal {path}: cannot read or set its schema version: {source}; check that the file is a sagaflow journal and the directory is writable")]
    Version {
        /// The journal file.
        path: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
}

/// Brings the journal at `path` (open as `conn`) to the current version;
/// returns the version it was at.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<i64, SchemaError> {
    migrate_with(conn, path, MIGRATIONS)
}

/// [`migrate`] with a given list of steps (the tests add a step of their own
/// to prove an upgrade and a failed one).
pub(crate) fn migrate_with(
    conn: &mut Connection,
    path: &Path,
    migrations: &[Migration],
) -> Result<i64, SchemaError> {
    let current = migrations.len() as i64;
    let shown = || path.display().to_string();
    let version_error = |source| SchemaError::Version {
        path: shown(),
        source,
    };
    let found = user_version(conn).map_err(version_error)?;
    if found == current {
        return Ok(found);
    }
    if found > current {
        return Err(SchemaError::Newer {
            path: shown(),
            found,
            current,
        });
    }
    // Another process (a CLI beside a starting worker) may be upgrading the
    // same file: take the write lock first, then read the version again.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(version_error)?;
    let from = user_version(&tx).map_err(version_error)?;
    if from > current {
        return Err(SchemaError::Newer {
            path: shown(),
            found: from,
            current,
        });
    }
    for step in &migrations[from.max(0) as usize..] {
        tx.execute_batch(step.sql)
            .map_err(|source| SchemaError::Step {
                path: shown(),
                from,
                what: step.what,
                source,
            })?;
    }
    tx.pragma_update(None, "user_version", current)
        .map_err(version_error)?;
    tx.commit().map_err(version_error)?;
    if from > 0 {
        tracing::info!(
            journal = %path.display(),
            from,
            to = current,
            "journal schema upgraded"
        );
    }
    Ok(from)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

#[cfg(test)]
mod tests;
