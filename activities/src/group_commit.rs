//! Group commit for an embedded store's writes: the calls waiting when a
//! transaction starts all go into it, each under a savepoint of its own,
//! on a thread of the store's.
//!
//! Why: one transaction per call made the checkout's stock and order
//! writes a WAL append of the same pages and two POSIX lock calls each,
//! on the async runtime's threads, behind a mutex its other calls parked
//! on (the profile in BENCHMARKS.md). Batched, a page changed by a hundred
//! calls is written once, the runtime threads never block on SQLite, and
//! nothing changes for the caller: a call's effects are committed before
//! its answer, and a call that fails leaves nothing behind (its savepoint
//! is rolled back) while the others in its batch commit.

use rusqlite::Connection;
use sagaflow_workflows::ActivityError;
use serde_json::Value;
use std::sync::mpsc;

/// What a store runs inside the batch's transaction.
type Op = Box<dyn FnOnce(&Connection) -> Result<Value, ActivityError> + Send>;

struct Job {
    op: Op,
    reply: tokio::sync::oneshot::Sender<Result<Value, ActivityError>>,
}

/// At most this many calls share a transaction (the lock is held for the
/// batch, and other processes sharing the file wait that long).
const MAX_BATCH: usize = 256;

/// A store's write thread. Dropping the last handle ends the thread once
/// the calls already sent are done.
pub struct GroupCommit {
    jobs: mpsc::Sender<Job>,
    /// The error kind a failed commit is reported with (`stock_db`, ...).
    kind: &'static str,
}

impl GroupCommit {
    /// Starts the thread `name` over `conn` (opened by the store, in WAL
    /// mode with a busy timeout). Failures are reported as retryable
    /// errors of kind `kind`.
    pub fn start(conn: Connection, name: &str, kind: &'static str) -> std::io::Result<GroupCommit> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(conn, rx, kind))?;
        Ok(GroupCommit { jobs, kind })
    }

    /// Runs `op` in the next batch's transaction and answers once that
    /// transaction is committed (or with `op`'s own error, its changes
    /// rolled back).
    pub async fn run(
        &self,
        op: impl FnOnce(&Connection) -> Result<Value, ActivityError> + Send + 'static,
    ) -> Result<Value, ActivityError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let stopped = || {
            ActivityError::retryable(self.kind, "the store's write thread has stopped".to_owned())
        };
        self.jobs
            .send(Job {
                op: Box::new(op),
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn run(conn: Connection, rx: mpsc::Receiver<Job>, kind: &'static str) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut results: Vec<Result<Value, ActivityError>> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        batch.extend(rx.try_iter().take(MAX_BATCH - 1));
        let committed = conn.execute_batch("BEGIN IMMEDIATE").and_then(|()| {
            for job in batch.iter_mut() {
                let op = std::mem::replace(&mut job.op, Box::new(|_| Ok(Value::Null)));
                conn.execute_batch("SAVEPOINT call")?;
                let result = op(&conn);
                if result.is_err() {
                    conn.execute_batch("ROLLBACK TO call")?;
                }
                conn.execute_batch("RELEASE call")?;
                results.push(result);
            }
            conn.execute_batch("COMMIT")
        });
        if let Err(e) = committed {
            // Nothing of the batch is kept: every call hears so and may be
            // tried again (the stores' calls are idempotent).
            let _ = conn.execute_batch("ROLLBACK");
            results.clear();
            let error = ActivityError::retryable(kind, format!("store commit failed: {e}"));
            results.extend(batch.iter().map(|_| Err(error.clone())));
        }
        for (job, result) in batch.drain(..).zip(results.drain(..)) {
            let _ = job.reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str) -> (GroupCommit, Connection) {
        let dir =
            std::env::temp_dir().join(format!("sagaflow-group-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.db");
        let open = || {
            crate::sqlite::open_store(
                &path,
                "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, n INTEGER NOT NULL);",
            )
            .unwrap()
        };
        let writes = GroupCommit::start(open(), "test-writes", "test_db").unwrap();
        (writes, open())
    }

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_in_one_batch_commit_apart_and_a_failed_one_leaves_nothing() {
        let (writes, reader) = store("batch");
        let writes = std::sync::Arc::new(writes);
        let mut calls = Vec::new();
        for i in 0..200 {
            let w = writes.clone();
            calls.push(tokio::spawn(async move {
                w.run(move |tx| {
                    tx.execute("INSERT INTO t (k, n) VALUES (?1, 1)", [format!("k{i}")])
                        .map_err(|e| ActivityError::retryable("test_db", e.to_string()))?;
                    if i % 10 == 0 {
                        // After a change: the savepoint must undo it.
                        return Err(ActivityError::business("refused", format!("call {i}")));
                    }
                    Ok(Value::from(i))
                })
                .await
            }));
        }
        let mut ok = 0;
        for (i, call) in calls.into_iter().enumerate() {
            match call.await.unwrap() {
                Ok(v) => {
                    assert_eq!(v, Value::from(i));
                    ok += 1;
                }
                Err(e) => {
                    assert_eq!(i % 10, 0);
                    assert_eq!(e.kind, "refused");
                }
            }
        }
        assert_eq!(ok, 180);
        assert_eq!(
            count(&reader),
            180,
            "every refused call's insert rolled back"
        );
        let refused: i64 = reader
            .query_row("SELECT COUNT(*) FROM t WHERE k = 'k10'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(refused, 0);
    }

    #[tokio::test]
    async fn an_answer_comes_after_its_commit() {
        let (writes, reader) = store("after");
        writes
            .run(|tx| {
                tx.execute("INSERT INTO t (k, n) VALUES ('a', 1)", [])
                    .map_err(|e| ActivityError::retryable("test_db", e.to_string()))?;
                Ok(Value::Null)
            })
            .await
            .unwrap();
        // Another connection sees it: it was committed, not just written.
        assert_eq!(count(&reader), 1);
    }
}
