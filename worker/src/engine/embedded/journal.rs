//! The journal: an append-only event log per saga in SQLite, and its one
//! writer thread with group commit.
//!
//! Assumptions: SQLite in WAL mode with `synchronous=FULL`, so a commit
//! returns only after the WAL is fsync'd; a committed transaction survives a
//! process kill and a power cut.
//!
//! Schema (its version and migrations are in `schema.rs`):
//! - `definitions(hash, name, body)`: each resolved saga definition once, by
//!   content hash; a saga replays the definition it started with;
//! - `sagas(id, saga, def_hash, status, reason, input, created_ms,
//!   updated_ms, ended_ms)`: one row per saga, its status kept current in
//!   the same transaction as the event that changed it;
//! - `events(saga_id, n, at_ms, kind, seq, body)`: the journal proper.
//!   `n` numbers a saga's events from 0 (`started`) without gaps; `seq` is
//!   the interpreter's operation number for `activity_*` and `timer_fired`;
//! - `inbox(id, saga_id, signal, at_ms, body, bulk_id)`: operator commands
//!   written by the CLI (`body` holds the command's arguments and audit),
//!   deleted in the same transaction that journals their delivery or
//!   refusal; `AUTOINCREMENT` so ids never repeat (the worker reads rows
//!   above the last id it has seen);
//! - `audit(id, at_ms, saga_id, command, operator, reason, bulk_id,
//!   outcome, detail, body, inbox_id)`: every inbox command, applied or
//!   refused (with the reason in `detail`), written in the transaction that
//!   takes it out of the inbox.
//!
//! - `counts(name, n)`: saga counts by status (`status:NAME`) and the
//!   number of events, kept by this writer in the transaction of every
//!   change ([`Tally`]: a few statements per commit, none per saga), so
//!   `stats` reads a few rows at any journal size.
//!
//! Retention (`retention.rs`) runs on this thread too, in small
//! transactions of its own between group commits.
//!
//! Commit protocol (group commit): the engine core hands the writer one
//! [`Batch`] per round; the writer takes every batch waiting, writes them in
//! one transaction, commits (one fsync) and reports their ids back. Nothing
//! that depends on a record (dispatching the next activity, acknowledging a
//! start, reporting an end) happens before the report. With group commit
//! off, every record gets its own transaction and fsync (for measuring).
//!
//! Invariants:
//! - records are the only things sagaflow writes to the journal, and only
//!   this thread writes;
//! - an activity result reaches any effect outside the process only after
//!   its row is committed;
//! - a failed commit stops the writer and is reported to the core, which
//!   stops the process: memory may be ahead of disk, and recovery from the
//!   journal is the only safe way on.

use super::retention::{Pruner, Retention};
use super::schema::{self, SchemaError};
use crate::engine::command::{Audit, CommandRequest};
use crate::engine::view::AttemptBody;
use rusqlite::{params, Connection};
use sagaflow_workflows::SagaStatus;
use serde_json::Value;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// Errors opening or writing the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite failed.
    #[error("journal database error: {0}; check that the data directory is writable and not on a full disk")]
    Db(#[from] rusqlite::Error),
    /// The file could not be brought to the current schema version.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// WAL pages written before the writer copies them back into the file
/// (SQLite's default is 1,000). Sagas in flight spread their events over
/// many pages; the longer the WAL, the more of a page's rewrites one copy
/// covers, and the fewer checkpoints (each with its own fsync) stall the
/// writer: with the sandbox's WAL lengthened alike, the checkout's worker
/// CPU per saga at 200 in flight fell about 9% (BENCHMARKS.md, "HTTP/2
/// to the provider"). The WAL then peaks near 32 MB.
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 8_192;

/// Opens the journal for writing (WAL, `synchronous=FULL`).
pub fn open_writer(path: &Path) -> Result<Connection, JournalError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    schema::migrate(&mut conn, path)?;
    Ok(conn)
}

/// Opens the journal for reading (the CLI; works while a worker writes). An
/// older file is upgraded like the writer would, so that the CLI can read a
/// journal no worker has opened yet.
pub fn open_reader(path: &Path) -> Result<Connection, JournalError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    schema::migrate(&mut conn, path)?;
    Ok(conn)
}

/// One journal event.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// The saga began (n = 0).
    Started,
    /// An activity attempt finished.
    Attempt {
        /// Operation number.
        seq: u32,
        /// What ran and how it went.
        body: AttemptBody,
    },
    /// A durable timer fired.
    TimerFired {
        /// Operation number.
        seq: u32,
    },
    /// An operator command was delivered.
    Signal {
        /// The command, with who sent it and why.
        command: CommandRequest,
        /// Its inbox row, deleted (and audited) in the same transaction.
        inbox_id: Option<i64>,
    },
    /// The status changed.
    Status {
        /// New status name.
        status: &'static str,
        /// Parked reason.
        reason: Option<String>,
        /// Set when the saga ended.
        ended: bool,
        /// The status it replaces, for the writer's `counts` (not stored:
        /// `""` when read back).
        from: &'static str,
    },
}

impl EventKind {
    /// The event as stored: `(kind, seq, body)`. With [`EventKind::decode`]
    /// this is the one place that knows the on-disk form of each kind: a
    /// new kind is added to the enum and to both functions.
    pub fn encode(&self) -> (&'static str, Option<u32>, String) {
        match self {
            EventKind::Started => ("started", None, "{}".into()),
            EventKind::Attempt { seq, body } => (
                if body.error.is_some() {
                    "activity_failed"
                } else {
                    "activity_completed"
                },
                Some(*seq),
                serde_json::to_string(body).expect("attempt bodies serialize"),
            ),
            EventKind::TimerFired { seq } => ("timer_fired", Some(*seq), "{}".into()),
            EventKind::Signal { command, .. } => ("signal", None, command.encode()),
            EventKind::Status { status, reason, .. } => (
                "status",
                None,
                serde_json::json!({"status": status, "reason": reason}).to_string(),
            ),
        }
    }

    /// Reads a stored event back; `Err` says what is wrong with it.
    pub fn decode(kind: &str, seq: Option<u32>, body: &str) -> Result<EventKind, String> {
        let seq_of = |kind: &str| seq.ok_or_else(|| format!("a {kind} event without seq"));
        Ok(match kind {
            "started" => EventKind::Started,
            "activity_completed" | "activity_failed" => EventKind::Attempt {
                seq: seq_of(kind)?,
                body: serde_json::from_str(body)
                    .map_err(|e| format!("a {kind} body that is not an attempt ({e})"))?,
            },
            "timer_fired" => EventKind::TimerFired { seq: seq_of(kind)? },
            "signal" => EventKind::Signal {
                command: CommandRequest::decode(body)?,
                inbox_id: None,
            },
            "status" => {
                let v: Value = serde_json::from_str(body)
                    .map_err(|e| format!("a status body that is not JSON ({e})"))?;
                let name = v["status"].as_str().unwrap_or("");
                let status = SagaStatus::from_parts(name, v["reason"].as_str().map(str::to_owned))
                    .ok_or_else(|| format!("an unknown status {name:?}"))?;
                EventKind::Status {
                    status: status.name(),
                    reason: status.reason().map(str::to_owned),
                    ended: status.is_terminal(),
                    from: "",
                }
            }
            other => return Err(format!("an unknown event kind {other:?}")),
        })
    }
}

/// A record for the writer.
#[derive(Debug, Clone)]
pub enum Record {
    /// A definition (written once per process per hash; `INSERT OR IGNORE`).
    Definition {
        /// Content hash.
        hash: String,
        /// Saga name.
        name: String,
        /// The definition as JSON.
        body: String,
    },
    /// A new saga row.
    NewSaga {
        /// Saga id.
        id: String,
        /// Saga name.
        saga: String,
        /// Definition hash.
        def_hash: String,
        /// Input (the order) as JSON.
        input: String,
        /// Start time.
        at_ms: u64,
    },
    /// An event of a saga.
    Event {
        /// Saga id.
        saga_id: std::sync::Arc<str>,
        /// Event number.
        n: u32,
        /// When.
        at_ms: u64,
        /// What.
        kind: EventKind,
    },
    /// An inbox row whose command does not apply (the saga is not live,
    /// or not where the command needs it): removed without an event, and
    /// audited as refused with the reason.
    DropSignal {
        /// Inbox row id.
        inbox_id: i64,
        /// The saga it named.
        saga_id: String,
        /// The command, with who sent it and why (`None`: the row could
        /// not be read).
        command: Option<CommandRequest>,
        /// Why it does not apply.
        why: String,
        /// When it was refused.
        at_ms: u64,
    },
    /// An inbox command applied without an event (see [`Applied`]).
    Applied(Box<Applied>),
}

/// An inbox command that was applied without an event of a live saga (a
/// refund, which starts a saga of its own): its inbox row is removed and
/// audited as applied, with what it did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Inbox row id.
    pub inbox_id: i64,
    /// The saga the command named.
    pub saga_id: String,
    /// The command's name.
    pub command: &'static str,
    /// Who and why.
    pub audit: Audit,
    /// What it did, e.g. "started o-1#refund".
    pub detail: String,
    /// The stored command.
    pub body: String,
    /// When.
    pub at_ms: u64,
}

/// A group of records from one core round.
pub struct Batch {
    /// Round id, reported back when committed.
    pub id: u64,
    /// The records.
    pub records: Vec<Record>,
}

/// Reports back to the core.
pub trait CommitSink: Send + 'static {
    /// Batches `ids` are durable.
    fn committed(&self, ids: Vec<u64>);
    /// A commit failed with `error`; the writer has stopped.
    fn failed(&self, error: String);
}

/// What a transaction changes in `counts`: added to it before the commit.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Sagas by status name: entered minus left.
    statuses: Vec<(&'static str, i64)>,
    events: i64,
}

impl Tally {
    /// A saga entered (`+1`) or left (`-1`) status `name`.
    pub(crate) fn status(&mut self, name: &'static str, by: i64) {
        match self.statuses.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += by,
            None => self.statuses.push((name, by)),
        }
    }

    /// `by` events were written (or removed, when negative).
    pub(crate) fn events(&mut self, by: i64) {
        self.events += by;
    }

    /// Adds what was tallied to `counts`, in the caller's transaction.
    pub(crate) fn apply(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let add = |name: &str, by: i64| -> rusqlite::Result<()> {
            if by != 0 {
                conn.prepare_cached(
                    "INSERT INTO counts (name, n) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET n = n + ?2",
                )?
                .execute(params![name, by])?;
            }
            Ok(())
        };
        for (status, by) in self.statuses.drain(..) {
            add(&format!("status:{status}"), by)?;
        }
        add("events", std::mem::take(&mut self.events))
    }
}

fn write_record(conn: &Connection, r: &Record, tally: &mut Tally) -> rusqlite::Result<()> {
    match r {
        Record::Definition { hash, name, body } => {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO definitions (hash, name, body) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![hash, name, body])?;
        }
        Record::NewSaga {
            id,
            saga,
            def_hash,
            input,
            at_ms,
        } => {
            conn.prepare_cached(
                "INSERT INTO sagas (id, saga, def_hash, status, input, created_ms, updated_ms) VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?5)",
            )?
            .execute(params![id, saga, def_hash, input, *at_ms as i64])?;
            tally.status("running", 1);
        }
        Record::Event {
            saga_id,
            n,
            at_ms,
            kind,
        } => {
            match kind {
                EventKind::Signal {
                    command,
                    inbox_id: Some(id),
                } => {
                    take_from_inbox(
                        conn,
                        TakenFromInbox {
                            inbox_id: *id,
                            saga_id,
                            at_ms: *at_ms,
                            command: command.signal.name(),
                            who: &command.audit,
                            body: &command.encode(),
                            outcome: "applied",
                            detail: None,
                        },
                    )?;
                }
                EventKind::Status {
                    status,
                    reason,
                    ended,
                    from,
                } => {
                    if from != status {
                        tally.status(from, -1);
                        tally.status(status, 1);
                    }
                    conn.prepare_cached(
                        "UPDATE sagas SET status = ?2, reason = ?3, updated_ms = ?4,
                         ended_ms = CASE WHEN ?5 THEN ?4 ELSE ended_ms END WHERE id = ?1",
                    )?
                    .execute(params![
                        &**saga_id,
                        status,
                        reason,
                        *at_ms as i64,
                        ended
                    ])?;
                }
                _ => {}
            }
            let (kind_name, seq, body) = kind.encode();
            conn.prepare_cached(
                "INSERT INTO events (saga_id, n, at_ms, kind, seq, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![&**saga_id, n, *at_ms as i64, kind_name, seq, body])?;
            tally.events(1);
        }
        Record::DropSignal {
            inbox_id,
            saga_id,
            command,
            why,
            at_ms,
        } => {
            let unreadable = Audit::default();
            let (name, who, body) = match command {
                Some(c) => (c.signal.name(), &c.audit, c.encode()),
                None => ("unreadable", &unreadable, "{}".to_owned()),
            };
            take_from_inbox(
                conn,
                TakenFromInbox {
                    inbox_id: *inbox_id,
                    saga_id,
                    at_ms: *at_ms,
                    command: name,
                    who,
                    body: &body,
                    outcome: "refused",
                    detail: Some(why),
                },
            )?;
        }
        Record::Applied(a) => take_from_inbox(
            conn,
            TakenFromInbox {
                inbox_id: a.inbox_id,
                saga_id: &a.saga_id,
                at_ms: a.at_ms,
                command: a.command,
                who: &a.audit,
                body: &a.body,
                outcome: "applied",
                detail: Some(&a.detail),
            },
        )?,
    }
    Ok(())
}

/// An inbox command leaving the inbox: its row is deleted and its audit
/// row written, in the transaction of whatever it caused.
struct TakenFromInbox<'a> {
    inbox_id: i64,
    saga_id: &'a str,
    at_ms: u64,
    command: &'a str,
    who: &'a Audit,
    body: &'a str,
    /// `applied` or `refused`.
    outcome: &'static str,
    /// Why it was refused, or what it did.
    detail: Option<&'a str>,
}

fn take_from_inbox(conn: &Connection, t: TakenFromInbox<'_>) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM inbox WHERE id = ?1")?
        .execute([t.inbox_id])?;
    conn.prepare_cached(
        "INSERT INTO audit (at_ms, saga_id, command, operator, reason, bulk_id, outcome, detail, body, inbox_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        t.at_ms as i64,
        t.saga_id,
        t.command,
        t.who.operator,
        t.who.reason,
        t.who.bulk,
        t.outcome,
        t.detail,
        t.body,
        t.inbox_id
    ])?;
    Ok(())
}

/// The writer thread's loop: group commit until the channel closes, and
/// retention's batches when they are due.
pub fn run_writer(
    mut conn: Connection,
    batches: Receiver<Batch>,
    sink: impl CommitSink,
    group_commit: bool,
    retention: Retention,
) {
    let mut waiting: Vec<Batch> = Vec::new();
    let mut pruner = Pruner::new(retention);
    loop {
        let first = match pruner.wait() {
            None => batches.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(wait) => batches.recv_timeout(wait),
        };
        let first = match first {
            Ok(first) => first,
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = pruner.run_if_due(&mut conn, sagaflow_activities::clock::now_ms()) {
                    sink.failed(format!("retention: {e}"));
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        waiting.push(first);
        while let Ok(more) = batches.try_recv() {
            waiting.push(more);
        }
        let began = std::time::Instant::now();
        let result = if group_commit {
            write_group(&mut conn, &waiting)
        } else {
            write_each(&mut conn, &waiting)
        };
        if let Err(e) = result {
            // Memory is ahead of disk now; the core decides what follows
            // (it stops the process) and nothing more is written.
            sink.failed(e.to_string());
            return;
        }
        let records = waiting.iter().map(|b| b.records.len()).sum();
        crate::metrics::global().journal_committed(records, began.elapsed());
        sink.committed(waiting.drain(..).map(|b| b.id).collect());
        // After the report: the sagas waiting on that commit go on while
        // this batch runs.
        if let Err(e) = pruner.run_if_due(&mut conn, sagaflow_activities::clock::now_ms()) {
            sink.failed(format!("retention: {e}"));
            return;
        }
    }
}

fn write_group(conn: &mut Connection, batches: &[Batch]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let mut tally = Tally::default();
    for b in batches {
        for r in &b.records {
            write_record(&tx, r, &mut tally)?;
        }
    }
    tally.apply(&tx)?;
    tx.commit()
}

fn write_each(conn: &mut Connection, batches: &[Batch]) -> rusqlite::Result<()> {
    let mut tally = Tally::default();
    for b in batches {
        for r in &b.records {
            let tx = conn.transaction()?;
            write_record(&tx, r, &mut tally)?;
            tally.apply(&tx)?;
            tx.commit()?;
        }
    }
    Ok(())
}
