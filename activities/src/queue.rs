//! The embedded order queue: peek-lock delivery and a dead-letter table.
//!
//! Stands in for the Service Bus queue in the embedded profile and has its
//! semantics: a received message is locked, not removed; the receiver
//! completes it (delete), abandons it (unlock) or dead-letters it with a
//! reason. A message whose lock expires is delivered again, and one
//! delivered `max_deliveries` times is dead-lettered automatically, so no
//! message is ever silently dropped.

use crate::clock::now_ms;
use crate::sqlite::open_store;
use rusqlite::{params, Connection, TransactionBehavior};
use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;

/// The queue file's layout, `PRAGMA user_version` 2. Ids are
/// `AUTOINCREMENT` so that none is ever used twice: a dead letter keeps the
/// id of the message it was (`message_id`) and has its own, which
/// `dlq resubmit` takes.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    locked_until_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    dead_lettered_ms INTEGER NOT NULL
);
PRAGMA user_version = 2;
";

/// Version 1 (no `user_version`) reused ids once the queue was empty, and
/// a dead letter took its message's id with `INSERT OR REPLACE`, so a later
/// dead letter replaced an older one. The upgrade keeps every row and id
/// and starts new message ids above every id either table has used.
/// Version 1 (no `user_version`) reused ids once the queue was empty, and
/// a dead letter took its message's id with `INSERT OR REPLACE`, so a later
/// dead letter replaced an older one. The upgrade moves the old tables
/// aside, creates [`SCHEMA`]'s, copies every row with its id, and starts new
/// message ids above every id either old table used.
const RENAME_V1: &str = "
ALTER TABLE messages RENAME TO messages_v1;
ALTER TABLE dead_letters RENAME TO dead_letters_v1;
";
const COPY_V1: &str = "
INSERT INTO messages (id, body, enqueued_ms, deliveries, locked_until_ms)
    SELECT id, body, enqueued_ms, deliveries, locked_until_ms FROM messages_v1;
INSERT INTO dead_letters (id, message_id, body, reason, deliveries, dead_lettered_ms)
    SELECT id, id, body, reason, deliveries, dead_lettered_ms FROM dead_letters_v1;
DELETE FROM sqlite_sequence WHERE name = 'messages';
INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', MAX(
    COALESCE((SELECT MAX(id) FROM messages_v1), 0),
    COALESCE((SELECT MAX(id) FROM dead_letters_v1), 0)));
DROP TABLE messages_v1;
DROP TABLE dead_letters_v1;
";

/// Opens the queue file, creating it or upgrading a version-1 file in one
/// transaction.
fn open_queue_store(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = open_store(path, "")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let has_v1_tables: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'messages'",
        [],
        |r| r.get(0),
    )?;
    if version < 2 {
        if has_v1_tables {
            tx.execute_batch(RENAME_V1)?;
        }
        tx.execute_batch(SCHEMA)?;
        if has_v1_tables {
            tx.execute_batch(COPY_V1)?;
        }
    }
    tx.commit()?;
    Ok(conn)
}

/// Errors of the queue's own plumbing.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The SQLite file could not be opened or written.
    #[error("embedded queue database error: {0}; check the data directory is writable")]
    Db(#[from] rusqlite::Error),
}

/// A locked message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Message id (for complete / abandon / dead-letter).
    pub id: i64,
    /// The raw message body.
    pub body: Vec<u8>,
    /// How many times it has been delivered, this one included.
    pub deliveries: u32,
}

/// Queue depth, for progress and invariant checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    /// Messages waiting or locked.
    pub pending: i64,
    /// Messages dead-lettered.
    pub dead_lettered: i64,
}

/// A dead-lettered message.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The dead letter's id (what `resubmit` takes); never reused.
    pub id: i64,
    /// The id the message had in the queue.
    pub message_id: i64,
    /// When it was dead-lettered, ms since the epoch.
    pub dead_lettered_ms: u64,
    /// Why it was dead-lettered.
    pub reason: String,
    /// The body, as text (lossy).
    pub body: String,
}

/// The embedded queue.
pub struct EmbeddedQueue {
    conn: Mutex<Connection>,
    max_deliveries: u32,
}

impl EmbeddedQueue {
    /// Opens (creating if needed) the queue file. A message is
    /// dead-lettered on its `max_deliveries + 1`-th receive.
    pub fn open(path: &Path, max_deliveries: u32) -> Result<EmbeddedQueue, QueueError> {
        Ok(EmbeddedQueue {
            conn: Mutex::new(open_queue_store(path)?),
            max_deliveries,
        })
    }

    /// Enqueues messages in one transaction: all or none.
    pub fn send_batch<B: AsRef<[u8]>>(&self, bodies: &[B]) -> Result<(), QueueError> {
        let mut conn = self.conn.lock().expect("queue lock");
        let tx = conn.transaction()?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO messages (body, enqueued_ms) VALUES (?1, ?2)")?;
            let now = now_ms() as i64;
            for b in bodies {
                stmt.execute(params![b.as_ref(), now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Locks up to `max` messages for `lock_ms` and returns them, oldest
    /// first. Messages over the delivery limit are dead-lettered instead.
    pub fn receive(&self, max: usize, lock_ms: u64) -> Result<Vec<Delivery>, QueueError> {
        let mut conn = self.conn.lock().expect("queue lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms() as i64;
        let rows: Vec<Delivery> = tx
            .prepare_cached(
                "SELECT id, body, deliveries FROM messages WHERE locked_until_ms <= ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map(params![now, max as i64], |r| {
                Ok(Delivery {
                    id: r.get(0)?,
                    body: r.get(1)?,
                    deliveries: r.get::<_, u32>(2)? + 1,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for d in rows {
            if d.deliveries > self.max_deliveries {
                dead_letter(
                    &tx,
                    d.id,
                    &format!(
                        "delivered {} times without being settled (max_deliveries = {})",
                        d.deliveries - 1,
                        self.max_deliveries
                    ),
                )?;
                continue;
            }
            tx.prepare_cached(
                "UPDATE messages SET deliveries = ?2, locked_until_ms = ?3 WHERE id = ?1",
            )?
            .execute(params![d.id, d.deliveries, now + lock_ms as i64])?;
            out.push(d);
        }
        tx.commit()?;
        Ok(out)
    }

    /// Unlocks every locked message (for a single consumer restarting after
    /// a crash; delivery counts are kept).
    pub fn release_locks(&self) -> Result<(), QueueError> {
        let conn = self.conn.lock().expect("queue lock");
        conn.execute(
            "UPDATE messages SET locked_until_ms = 0 WHERE locked_until_ms > 0",
            [],
        )?;
        Ok(())
    }

    /// Deletes settled messages.
    pub fn complete(&self, ids: &[i64]) -> Result<(), QueueError> {
        let mut conn = self.conn.lock().expect("queue lock");
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
            for id in ids {
                stmt.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Unlocks a message so it is delivered again.
    pub fn abandon(&self, id: i64) -> Result<(), QueueError> {
        let conn = self.conn.lock().expect("queue lock");
        conn.execute(
            "UPDATE messages SET locked_until_ms = 0 WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// Moves a message to the dead-letter table with a reason.
    pub fn dead_letter(&self, id: i64, reason: &str) -> Result<(), QueueError> {
        let mut conn = self.conn.lock().expect("queue lock");
        let tx = conn.transaction()?;
        dead_letter(&tx, id, reason)?;
        tx.commit()?;
        Ok(())
    }

    /// Pending and dead-lettered counts.
    pub fn counts(&self) -> Result<QueueCounts, QueueError> {
        counts(&self.conn.lock().expect("queue lock"))
    }

    /// Reads the counts from a queue file.
    pub fn read_counts(path: &Path) -> Result<QueueCounts, QueueError> {
        counts(&open_queue_store(path)?)
    }

    /// The dead-lettered messages, newest first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let conn = self.conn.lock().expect("queue lock");
        let rows = conn
            .prepare(
                "SELECT id, message_id, reason, body, dead_lettered_ms FROM dead_letters ORDER BY id DESC LIMIT ?1",
            )?
            .query_map([limit as i64], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    message_id: r.get(1)?,
                    reason: r.get(2)?,
                    body: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(3)?).into_owned(),
                    dead_lettered_ms: r.get::<_, i64>(4)?.max(0) as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

impl EmbeddedQueue {
    /// Moves dead letter `id` back to the queue, with `body` in place of
    /// its own when given. Returns false when there is no such dead letter.
    pub fn resubmit(&self, id: i64, body: Option<&[u8]>) -> Result<bool, QueueError> {
        let mut conn = self.conn.lock().expect("queue lock");
        let tx = conn.transaction()?;
        let moved = tx.execute(
            "INSERT INTO messages (body, enqueued_ms)
             SELECT COALESCE(?2, body), ?3 FROM dead_letters WHERE id = ?1",
            params![id, body, now_ms() as i64],
        )?;
        tx.execute("DELETE FROM dead_letters WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(moved == 1)
    }
}

fn counts(conn: &Connection) -> Result<QueueCounts, QueueError> {
    Ok(QueueCounts {
        pending: conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))?,
        dead_lettered: conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))?,
    })
}

fn dead_letter(tx: &Connection, id: i64, reason: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO dead_letters (message_id, body, reason, deliveries, dead_lettered_ms)
         SELECT id, body, ?2, deliveries, ?3 FROM messages WHERE id = ?1",
        params![id, reason, now_ms() as i64],
    )?;
    tx.execute("DELETE FROM messages WHERE id = ?1", [id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sagaflow-queue-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("queue.db")
    }

    fn reasons(q: &EmbeddedQueue) -> Vec<String> {
        q.dead_letters(10)
            .unwrap()
            .into_iter()
            .map(|d| d.reason)
            .collect()
    }

    /// Before the fix the second message took the emptied queue's id 1 and
    /// its dead letter replaced the first.
    #[test]
    fn a_dead_letter_never_replaces_an_older_one() {
        let q = EmbeddedQueue::open(&scratch("replace"), 3).unwrap();
        q.send_batch(&["not json"]).unwrap();
        let first = q.receive(1, 60_000).unwrap();
        q.dead_letter(first[0].id, "first").unwrap();
        q.send_batch(&["still not json"]).unwrap();
        let second = q.receive(1, 60_000).unwrap();
        assert_ne!(second[0].id, first[0].id, "a message id is never reused");
        q.dead_letter(second[0].id, "second").unwrap();
        assert_eq!(reasons(&q), ["second", "first"]);
        assert_eq!(q.counts().unwrap().dead_lettered, 2);
    }

    #[test]
    fn a_version_1_file_is_upgraded_keeping_its_rows_and_ids() {
        let path = scratch("v1");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE messages (id INTEGER PRIMARY KEY, body BLOB NOT NULL,
                     enqueued_ms INTEGER NOT NULL, deliveries INTEGER NOT NULL DEFAULT 0,
                     locked_until_ms INTEGER NOT NULL DEFAULT 0);
                 CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, body BLOB NOT NULL,
                     reason TEXT NOT NULL, deliveries INTEGER NOT NULL,
                     dead_lettered_ms INTEGER NOT NULL);
                 INSERT INTO dead_letters VALUES (7, CAST('old' AS BLOB), 'old reason', 1, 1);
                 INSERT INTO messages (id, body, enqueued_ms) VALUES (3, CAST('waiting' AS BLOB), 1);",
            )
            .unwrap();
        }
        let q = EmbeddedQueue::open(&path, 3).unwrap();
        let old = q.dead_letters(10).unwrap();
        assert_eq!((old[0].id, old[0].message_id), (7, 7));
        let waiting = q.receive(1, 60_000).unwrap();
        assert_eq!(
            (waiting[0].id, waiting[0].body.as_slice()),
            (3, &b"waiting"[..])
        );
        q.complete(&[3]).unwrap();
        q.send_batch(&["new"]).unwrap();
        let new = q.receive(1, 60_000).unwrap();
        assert!(
            new[0].id > 7,
            "new ids start above every id used: {}",
            new[0].id
        );
        q.dead_letter(new[0].id, "new reason").unwrap();
        assert_eq!(reasons(&q), ["new reason", "old reason"]);
        drop(q);
        // Opening again changes nothing.
        let q = EmbeddedQueue::open(&path, 3).unwrap();
        assert_eq!(reasons(&q), ["new reason", "old reason"]);
    }

    #[test]
    fn peek_lock_complete_abandon_and_dead_letter() {
        let dir = std::env::temp_dir().join(format!("sagaflow-queue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let q = EmbeddedQueue::open(&dir.join("queue.db"), 2).unwrap();
        q.send_batch(&["a", "b", "c"]).unwrap();
        let got = q.receive(10, 60_000).unwrap();
        assert_eq!(got.len(), 3);
        assert!(
            q.receive(10, 60_000).unwrap().is_empty(),
            "locked messages are not redelivered"
        );
        q.complete(&[got[0].id]).unwrap();
        q.abandon(got[1].id).unwrap();
        q.dead_letter(got[2].id, "not json").unwrap();
        let again = q.receive(10, 0).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].body, b"b");
        assert_eq!(again[0].deliveries, 2);
        // Third delivery exceeds max_deliveries = 2: dead-lettered, not returned.
        assert!(q.receive(10, 0).unwrap().is_empty());
        assert_eq!(
            q.counts().unwrap(),
            QueueCounts {
                pending: 0,
                dead_lettered: 2
            }
        );
        let dl = q.dead_letters(10).unwrap();
        assert!(dl.iter().any(|d| d.reason == "not json"));
        let bad = dl.iter().find(|d| d.reason == "not json").unwrap().id;
        assert!(q.resubmit(bad, Some(b"fixed")).unwrap());
        assert!(
            !q.resubmit(bad, None).unwrap(),
            "a dead letter goes back once"
        );
        let back = q.receive(10, 60_000).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].body, b"fixed");
        assert_eq!(q.counts().unwrap().dead_lettered, 1);
        assert!(dl.iter().any(|d| d.reason.contains("delivered 2 times")));
    }
}
