//! The sandbox's SQLite file: schema, forward migrations, how it is opened.
//!
//! Assumptions: WAL mode with `synchronous=NORMAL`, as the embedded stores
//! run. A commit survives the process being killed (the crash tests' fault
//! model), not a power cut: the sandbox stands in for a provider, it is not
//! one. Several processes may read the file while one sandbox serves it
//! (`read_ledger`, `read_requests`).
//!
//! Tables:
//! - `intents`: one row per PaymentIntent; `capture_count` counts applied
//!   captures (a double capture is a bug the ledger reports);
//! - `intent_metadata`: `metadata[KEY]=VALUE` of each intent, for search;
//! - `refunds`: one row per refund;
//! - `idempotency`: the first answer stored under each `Idempotency-Key`
//!   with the fingerprint of its request;
//! - `requests`: when the request log is on, every POST that executed or
//!   replayed, with the client's `User-Agent`, so a test can tell which
//!   worker asked for what. Rows are never deleted (ids only grow) and it
//!   has no index: each logged POST writes one more page to the WAL, which
//!   costs the in-process sandbox about a tenth of the checkout's
//!   throughput, so only the standalone server logs by default.
//!
//! Version 1 had no `intents.created_ms` and no `requests`; [`open`]
//! upgrades such a file in place (files written by earlier sagaflow
//! releases keep opening).

use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// Version 2 of the schema, for a new file.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS intents (
    id TEXT NOT NULL UNIQUE,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    capture_method TEXT NOT NULL,
    payment_method TEXT,
    metadata TEXT NOT NULL,
    amount_received INTEGER NOT NULL DEFAULT 0,
    amount_refunded INTEGER NOT NULL DEFAULT 0,
    capture_count INTEGER NOT NULL DEFAULT 0,
    decline_code TEXT,
    declined_payment_method TEXT,
    cancellation_reason TEXT,
    canceled_at INTEGER,
    created INTEGER NOT NULL,
    created_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS intent_metadata (
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    intent_rowid INTEGER NOT NULL,
    PRIMARY KEY (key, value, intent_rowid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refunds (
    id TEXT NOT NULL UNIQUE,
    payment_intent TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    reason TEXT,
    metadata TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS refunds_by_intent ON refunds (payment_intent);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    should_retry INTEGER,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    idempotency_key TEXT,
    client TEXT NOT NULL,
    status INTEGER NOT NULL,
    replayed INTEGER NOT NULL,
    intent TEXT
);
";

/// Opens (creating if needed) the sandbox's file in WAL mode with
/// `synchronous=NORMAL` and a busy timeout, creates the schema and upgrades
/// a version-1 file.
pub(crate) fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Intents and stored answers land on pages all over the file (random
    // ids); copying the WAL back every 1,000 pages (SQLite's default) under
    // the one connection's lock held every request behind each copy.
    conn.pragma_update(None, "wal_autocheckpoint", 8_192)?;
    // A version-1 file has `intents` without `created_ms`: add the column
    // before the schema's CREATE IF NOT EXISTS statements run (they skip
    // existing tables). Its rows keep 0, i.e. visible to search at once.
    let has_intents: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'intents'",
        [],
        |r| r.get(0),
    )?;
    if has_intents {
        let has_created_ms: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('intents') WHERE name = 'created_ms'",
            [],
            |r| r.get(0),
        )?;
        if !has_created_ms {
            conn.execute_batch(
                "ALTER TABLE intents ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0",
            )?;
        }
    }
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Wall-clock seconds since the Unix epoch (Stripe's `created`).
pub(crate) fn now_secs() -> u64 {
    now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDb;

    #[test]
    fn a_version_1_file_is_upgraded_and_keeps_its_rows() {
        let db = TempDb::new("store-v1");
        {
            let conn = Connection::open(&db.path).unwrap();
            conn.execute_batch(
                "CREATE TABLE intents (
                     id TEXT NOT NULL UNIQUE, amount INTEGER NOT NULL, currency TEXT NOT NULL,
                     status TEXT NOT NULL, capture_method TEXT NOT NULL, payment_method TEXT,
                     metadata TEXT NOT NULL, amount_received INTEGER NOT NULL DEFAULT 0,
                     amount_refunded INTEGER NOT NULL DEFAULT 0,
                     capture_count INTEGER NOT NULL DEFAULT 0, decline_code TEXT,
                     declined_payment_method TEXT, cancellation_reason TEXT,
                     canceled_at INTEGER, created INTEGER NOT NULL);
                 INSERT INTO intents (id, amount, currency, status, capture_method, metadata, created)
                 VALUES ('pi_old', 5, 'usd', 'requires_capture', 'manual', '{}', 1);",
            )
            .unwrap();
        }
        let conn = open(&db.path).unwrap();
        let (id, created_ms): (String, u64) = conn
            .query_row("SELECT id, created_ms FROM intents", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((id.as_str(), created_ms), ("pi_old", 0));
        let requests: u64 = conn
            .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
            .unwrap();
        assert_eq!(requests, 0);
        drop(conn);
        // Opening again is a no-op.
        open(&db.path).unwrap();
    }
}
