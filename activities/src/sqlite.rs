//! Opening the embedded stores' SQLite files the same way everywhere.
//!
//! The embedded stock ledger, order store, queue and payment sandbox stand in
//! for Redis, Cosmos DB, Service Bus and a payment provider. They run in WAL
//! mode with `synchronous=NORMAL`: a commit survives the process being
//! killed (the crash tests' fault model), not a power cut. The engine's
//! journal, which is sagaflow's own durability, uses `synchronous=FULL`.

use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// How long a store waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens (creating if needed) a store file in WAL mode with
/// `synchronous=NORMAL` and a busy timeout, and runs `schema`.
///
/// Several processes open one store (workers sharing a data directory, a
/// worker restarted beside the others). SQLite answers some lock
/// conflicts at once, without its busy handler (a connection that finds a
/// killed writer's WAL and must recover it, a schema read that races a
/// writer), so the whole open is tried again until [`BUSY_TIMEOUT`]: a
/// worker starting beside busy ones waits instead of exiting. Found by the
/// chaos run: a worker restarted beside two others exited at once with
/// "database is locked" on the shared order store (the exact conflict was
/// not reproduced by hand; the retry covers every immediate `BUSY`).
pub fn open_store(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
    let began = std::time::Instant::now();
    loop {
        match try_open(path, schema) {
            Err(e) if is_busy(&e) && began.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            done => return done,
        }
    }
}

fn try_open(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
