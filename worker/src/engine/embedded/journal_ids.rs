//! Which saga ids the journal holds: the duplicate-start check for ids the
//! core's memory does not answer for.
//!
//! The core keeps only live sagas in memory (and ended ones until their end
//! is committed), so neither start-up nor memory grows with the journal. A
//! start of any other id is looked up here, on the core thread, before the
//! state decides ([`super::state::Input::Start::journaled`]): one indexed
//! read of the `sagas` primary key. A round's lookups share one read
//! transaction (begun at the first, ended by [`JournalIds::end_round`]),
//! so a start costs a B-tree descent, not a transaction.
//!
//! Why no start is missed: the state lets go of a saga only once its
//! records are committed, and the core applies those releases between
//! rounds, after the round's read transaction ended; the next round's
//! snapshot is taken after that commit, so it holds the saga. A saga
//! removed by retention is no longer found: the duplicate window equals
//! the retention.

use rusqlite::{Connection, OptionalExtension};

/// A read connection to the journal, used for id lookups only.
pub(crate) struct JournalIds {
    conn: Connection,
    /// A read transaction is open (this round looked something up).
    reading: bool,
}

impl JournalIds {
    /// Looks ids up through `conn` (a reader of the journal).
    pub(crate) fn new(conn: Connection) -> JournalIds {
        JournalIds {
            conn,
            reading: false,
        }
    }

    /// Whether the journal holds a saga `id`, as of the round's snapshot.
    pub(crate) fn contains(&mut self, id: &str) -> rusqlite::Result<bool> {
        if !self.reading {
            self.conn.execute_batch("BEGIN")?;
            self.reading = true;
        }
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM sagas WHERE id = ?1")?
            .query_row([id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Ends the round's read transaction, if one is open: the next lookup
    /// sees every commit made until then.
    pub(crate) fn end_round(&mut self) -> rusqlite::Result<()> {
        if std::mem::take(&mut self.reading) {
            self.conn.execute_batch("COMMIT")?;
        }
        Ok(())
    }
}
