//! The embedded engine's API: its configuration and errors, and the
//! handle triggers use to start sagas. The messages the core thread takes are here too: every
//! other thread talks to the core only through them.

use super::journal::{self, CommitSink};
use super::state::Input;
use crate::engine::model::{Definition, StartOutcome};
use sagaflow_workflows::SagaStatus;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How the embedded engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The journal file.
    pub journal_path: PathBuf,
    /// Group commit (true) or one fsync per event (false).
    pub group_commit: bool,
    /// Activities running at once, at most.
    pub max_concurrent_activities: usize,
    /// How often the operator inbox is read.
    pub inbox_poll: Duration,
    /// What the journal keeps, and for how long.
    pub retention: super::retention::Retention,
}

/// Errors starting or talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The journal could not be opened or read.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// A journal query failed.
    #[error("journal read failed: {0}")]
    Db(#[from] rusqlite::Error),
    /// The engine has stopped.
    #[error("the engine has stopped; restart the worker")]
    Stopped,
    /// Another process runs an engine on the same journal.
    #[error("another sagaflow worker is using {path}; stop it first, or give this one another --data directory")]
    Locked {
        /// The lock file.
        path: String,
    },
    /// The lock file could not be created.
    #[error(
        "cannot create the lock file {path}: {source}; check that the data directory is writable"
    )]
    LockFile {
        /// The lock file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A saga reached a terminal status (reported after the commit).
#[derive(Debug, Clone)]
pub struct Ended {
    /// Saga id.
    pub saga_id: Arc<str>,
    /// `Completed` or `Compensated`.
    pub status: SagaStatus,
    /// The saga's name.
    pub saga: Arc<str>,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
}

/// How the core answers a start: the caller's end of a oneshot.
pub(crate) type Ack = oneshot::Sender<StartOutcome>;

/// A message for the core thread: an input for the state machine, or one of
/// the two things only the loop handles (a commit report, a stop).
pub(crate) enum Msg {
    /// Applied to the state as is (starts, results, signals, a failed commit).
    Apply(Input<Ack>),
    /// The writer committed these batches: carry out what waited for them.
    Committed(Vec<u64>),
    /// Stop once what is in flight is durable.
    Shutdown,
}

/// The writer's reports, as messages for the core.
pub(crate) struct Sink(pub(crate) Sender<Msg>);

impl CommitSink for Sink {
    fn committed(&self, ids: Vec<u64>) {
        let _ = self.0.send(Msg::Committed(ids));
    }

    fn failed(&self, error: String) {
        let _ = self.0.send(Msg::Apply(Input::CommitFailed { error }));
    }
}

/// A cheap, clonable handle for starting sagas.
#[derive(Clone)]
pub struct EngineHandle {
    pub(crate) tx: Sender<Msg>,
    pub(crate) live: Arc<AtomicUsize>,
    /// False once the core has stopped (asked to, or a journal commit
    /// failed): the worker's `/readyz`.
    pub(crate) running: Arc<std::sync::atomic::AtomicBool>,
    /// The journal, for reading what a saga started from.
    pub(crate) journal: Arc<std::path::Path>,
}

impl EngineHandle {
    /// Starts a saga; resolves once its start is durable (or it already
    /// existed). Safe to call twice with the same id.
    pub async fn start(
        &self,
        saga_id: String,
        def: Arc<Definition>,
        input: Value,
    ) -> Result<StartOutcome, EngineError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Apply(Input::Start {
                saga_id,
                def,
                input,
                ack: Some(ack),
                journaled: false,
            }))
            .map_err(|_| EngineError::Stopped)?;
        done.await.map_err(|_| EngineError::Stopped)
    }

    /// Starts a saga without waiting for the acknowledgement (benchmarks
    /// and callers that learn of the saga's end another way).
    pub fn start_nowait(&self, saga_id: String, def: Arc<Definition>, input: Value) {
        let _ = self.tx.send(Msg::Apply(Input::Start {
            saga_id,
            def,
            input,
            ack: None,
            journaled: false,
        }));
    }

    /// The input saga `saga_id` started from, read from the journal on a
    /// connection of its own; `None` when it is not there (yet) or the
    /// journal cannot be read. Off the hot path: only duplicates ask.
    pub async fn started_input(&self, saga_id: &str) -> Option<Value> {
        let (journal, id) = (self.journal.clone(), saga_id.to_owned());
        tokio::task::spawn_blocking(move || {
            let conn = super::journal::open_reader(&journal).ok()?;
            super::read::input(&conn, &id).ok().flatten()
        })
        .await
        .ok()
        .flatten()
    }

    /// Sagas in progress right now: running or compensating, neither
    /// parked nor waiting for an open breaker.
    pub fn in_progress(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Whether the engine takes and journals work: false once its core has
    /// stopped, asked to or because a journal commit failed.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}
