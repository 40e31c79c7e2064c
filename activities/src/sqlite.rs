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

/// Opens (creating if needed) a store file in WAL mode with
/// `synchronous=NORMAL` and a busy timeout, and runs `schema`.
pub fn open_store(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

/// Wall-clock milliseconds since the Unix epoch (activities may read clocks;
/// workflows may not).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
