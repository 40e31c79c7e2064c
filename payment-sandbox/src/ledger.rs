//! Ledger reads: what the sandbox holds, for invariant checks and tests.
//!
//! Both readers open the file without creating it and read one consistent
//! snapshot, so they work while a sandbox serves from it, in this process
//! or another (a standalone sandbox that several workers share).

use crate::SandboxError;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// Totals over the sandbox's intents, for invariant checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PaymentLedger {
    /// Intents created (declined ones included).
    pub intents: u64,
    /// Intents authorized and neither captured nor canceled.
    pub requires_capture: u64,
    /// Intents captured (status `succeeded`, refunded ones included).
    pub succeeded: u64,
    /// Intents canceled.
    pub canceled: u64,
    /// Intents with at least one refund.
    pub refunded: u64,
    /// Intents declined with a 402 (status `requires_payment_method`).
    pub declined: u64,
    /// Sum of `amount_received` over all intents, in minor units.
    pub captured_amount: u64,
    /// Sum of refunds over all intents, in minor units.
    pub refunded_amount: u64,
    /// Intents captured more than once. Must be 0.
    pub double_captures: u64,
    /// `metadata[order_id]` values carried by more than one intent that is
    /// not canceled. Must be 0.
    pub orders_with_several_intents: u64,
}

/// One POST that executed or replayed (`requests` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// When it was answered, ms since the Unix epoch.
    pub at_ms: u64,
    /// `POST`.
    pub method: String,
    /// The path, e.g. `/v1/payment_intents/pi_../capture`.
    pub path: String,
    /// Its `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// The client's `User-Agent` (sagaflow sends `sagaflow/VERSION (host H; pid P)`).
    pub client: String,
    /// The status answered.
    pub status: u16,
    /// True when the answer was a stored one (`Idempotent-Replayed`).
    pub replayed: bool,
    /// The intent it was about, if any.
    pub intent: Option<String>,
}

/// Opens `db_path` for reading (never creating it).
fn open_existing(db_path: &Path) -> Result<Connection, SandboxError> {
    if !db_path.exists() {
        return Err(SandboxError::NoLedger {
            path: db_path.to_owned(),
        });
    }
    let ledger_err = |source| SandboxError::Ledger {
        path: db_path.to_owned(),
        source,
    };
    let conn = Connection::open_with_flags(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(ledger_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(ledger_err)?;
    Ok(conn)
}

/// Reads the sandbox's ledger for invariant checks. Opens the file without
/// creating it and only reads (one consistent snapshot), so it works while a
/// sandbox serves from it, in this process or another.
pub fn read_ledger(db_path: &Path) -> Result<PaymentLedger, SandboxError> {
    let mut conn = open_existing(db_path)?;
    let ledger_err = |source| SandboxError::Ledger {
        path: db_path.to_owned(),
        source,
    };
    let tx = conn.transaction().map_err(ledger_err)?;
    let mut ledger = tx
        .query_row(
            "SELECT COUNT(*),
                    COALESCE(SUM(status = 'requires_capture'), 0),
                    COALESCE(SUM(status = 'succeeded'), 0),
                    COALESCE(SUM(status = 'canceled'), 0),
                    COALESCE(SUM(amount_refunded > 0), 0),
                    COALESCE(SUM(decline_code IS NOT NULL), 0),
                    COALESCE(SUM(amount_received), 0),
                    COALESCE(SUM(amount_refunded), 0),
                    COALESCE(SUM(capture_count > 1), 0)
             FROM intents",
            [],
            |r| {
                Ok(PaymentLedger {
                    intents: r.get(0)?,
                    requires_capture: r.get(1)?,
                    succeeded: r.get(2)?,
                    canceled: r.get(3)?,
                    refunded: r.get(4)?,
                    declined: r.get(5)?,
                    captured_amount: r.get(6)?,
                    refunded_amount: r.get(7)?,
                    double_captures: r.get(8)?,
                    orders_with_several_intents: 0,
                })
            },
        )
        .map_err(ledger_err)?;
    ledger.orders_with_several_intents = tx
        .query_row(
            "SELECT COUNT(*) FROM (
                 SELECT m.value FROM intent_metadata m
                 JOIN intents i ON i.rowid = m.intent_rowid
                 WHERE m.key = 'order_id' AND i.status != 'canceled'
                 GROUP BY m.value HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .map_err(ledger_err)?;
    Ok(ledger)
}

/// The POSTs the sandbox executed or replayed, oldest first; only those
/// about `intent` when it is given. Empty unless the sandbox ran with
/// [`crate::SandboxConfig::request_log`] on.
pub fn read_requests(
    db_path: &Path,
    intent: Option<&str>,
) -> Result<Vec<RequestRecord>, SandboxError> {
    let conn = open_existing(db_path)?;
    let ledger_err = |source| SandboxError::Ledger {
        path: db_path.to_owned(),
        source,
    };
    let mut statement = conn
        .prepare(
            "SELECT at_ms, method, path, idempotency_key, client, status, replayed, intent
             FROM requests WHERE ?1 IS NULL OR intent = ?1 ORDER BY id",
        )
        .map_err(ledger_err)?;
    let rows = statement
        .query_map([intent], |r| {
            Ok(RequestRecord {
                at_ms: r.get(0)?,
                method: r.get(1)?,
                path: r.get(2)?,
                idempotency_key: r.get(3)?,
                client: r.get(4)?,
                status: r.get(5)?,
                replayed: r.get(6)?,
                intent: r.get(7)?,
            })
        })
        .map_err(ledger_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(ledger_err)
}
