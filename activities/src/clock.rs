//! The one wall clock of a sagaflow process.
//!
//! Every time that is journaled, compared across processes or shown to an
//! operator (saga and step times, breaker intervals, reservation deadlines,
//! retention, the trigger's last answer) is read here, in milliseconds
//! since the Unix epoch. Code that decides on time takes `now_ms` as an
//! argument instead of reading it (the engine's state machine, the
//! breakers, retention, reconcile), so its tests set the time; only the
//! edges that act call this. Durations measured inside one process (a
//! request's latency, a wait) use `Instant`, which no clock change moves.
//! Workflow code never reads a clock: the engine passes it the journaled
//! time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch now; 0 for a clock set before 1970.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
