//! The engine core: one thread owns all live sagas.
//!
//! Each round the core takes every message waiting (start requests, activity
//! results, fired timers, signals, commit reports), applies them to the
//! sagas (journal record + poll the interpreter), and sends the round's
//! records to the writer as one batch. What a saga asked for in that round
//! (run an activity, start a timer, acknowledge a start, report an end) is
//! parked beside the batch and carried out only when the writer reports the
//! batch committed: deciding happens at once, doing waits for durability.
//!
//! Invariants:
//! - a saga has at most one outstanding operation (the interpreter is
//!   sequential), so results and timers for it arrive one at a time;
//! - a saga's events are numbered `n = 0, 1, 2, ...` in the order the core
//!   applied them, which is the order replay feeds them back;
//! - the set of known saga ids (live and ended) makes `start` idempotent:
//!   a duplicate start is acknowledged without creating anything;
//! - recovery replays each non-terminal saga's events into a fresh
//!   interpreter and re-dispatches exactly its outstanding operation.

use super::journal::{self, AttemptBody, Batch, CommitSink, EventKind, Record};
use rusqlite::Connection;
use sagaflow_activities::Registry;
use sagaflow_workflows::{
    run_saga, ActivityCall, ActivityError, Command, Phase, ReplayContext, Resolution, SagaDef,
    SagaOutcome, SagaStatus, Signal,
};
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};

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
    /// A saga in the journal names a definition that is not there.
    #[error("saga {saga} refers to definition {hash}, which is not in the journal; the journal is damaged")]
    MissingDefinition {
        /// Saga id.
        saga: String,
        /// Definition hash.
        hash: String,
    },
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

/// A saga definition with its hash and JSON form computed once.
#[derive(Debug)]
pub struct Definition {
    /// The definition.
    pub def: SagaDef,
    /// Content hash (stored with each saga).
    pub hash: String,
    /// Canonical JSON (stored once per hash).
    pub json: String,
}

impl Definition {
    /// Wraps a definition, computing its hash and JSON.
    pub fn new(def: SagaDef) -> Arc<Definition> {
        let json = serde_json::to_string(&def).expect("definitions serialize");
        let hash = def.hash();
        Arc::new(Definition { def, hash, json })
    }
}

/// The answer to a start request, once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// A new saga was journaled.
    Started,
    /// A saga with this id already exists; nothing was written.
    Duplicate,
}

/// A saga reached a terminal status (reported after the commit).
#[derive(Debug, Clone)]
pub struct Ended {
    /// Saga id.
    pub saga_id: Arc<str>,
    /// `Completed` or `Compensated`.
    pub status: SagaStatus,
}

enum Msg {
    Start {
        saga_id: String,
        def: Arc<Definition>,
        input: Value,
        ack: Option<oneshot::Sender<StartOutcome>>,
    },
    ActivityDone {
        saga_id: Arc<str>,
        seq: u32,
        started_ms: u64,
        finished_ms: u64,
        result: Result<Value, ActivityError>,
    },
    Signal {
        saga_id: String,
        signal: Signal,
        inbox_id: i64,
    },
    Committed(Vec<u64>),
    Shutdown,
}

struct Sink(Sender<Msg>);

impl CommitSink for Sink {
    fn committed(&self, ids: Vec<u64>) {
        let _ = self.0.send(Msg::Committed(ids));
    }
}

/// A cheap, clonable handle for starting sagas.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Msg>,
    live: Arc<AtomicUsize>,
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
            .send(Msg::Start {
                saga_id,
                def,
                input,
                ack: Some(ack),
            })
            .map_err(|_| EngineError::Stopped)?;
        done.await.map_err(|_| EngineError::Stopped)
    }

    /// Starts a saga without waiting for the acknowledgement (benchmarks
    /// and callers that learn of the saga's end another way).
    pub fn start_nowait(&self, saga_id: String, def: Arc<Definition>, input: Value) {
        let _ = self.tx.send(Msg::Start {
            saga_id,
            def,
            input,
            ack: None,
        });
    }

    /// Sagas in memory right now (running, compensating or parked).
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

/// A running embedded engine.
pub struct Engine {
    handle: EngineHandle,
    core: Option<JoinHandle<()>>,
    inbox: Option<JoinHandle<()>>,
    stop_inbox: Arc<AtomicBool>,
    /// Held for the engine's lifetime: one engine per journal.
    _lock: std::fs::File,
    /// Sagas recovered from the journal at start-up.
    pub recovered: usize,
}

impl Engine {
    /// Opens the journal, recovers every saga that had not ended, and starts
    /// the core, writer and inbox threads. Activities run on `runtime`.
    /// Each saga that ends is reported on `ended`, if given.
    pub fn start(
        config: EngineConfig,
        registry: Arc<Registry>,
        runtime: tokio::runtime::Handle,
        ended: Option<tokio::sync::mpsc::UnboundedSender<Ended>>,
    ) -> Result<Engine, EngineError> {
        let lock_path = config.journal_path.with_extension("lock");
        let lock = std::fs::File::create(&lock_path).map_err(|source| EngineError::LockFile {
            path: lock_path.display().to_string(),
            source,
        })?;
        if lock.try_lock().is_err() {
            return Err(EngineError::Locked {
                path: config.journal_path.display().to_string(),
            });
        }
        let writer_conn = journal::open_writer(&config.journal_path)?;
        let reader = journal::open_reader(&config.journal_path)?;
        let (tx, rx) = mpsc::channel();
        let (batch_tx, batch_rx) = mpsc::channel();
        let group_commit = config.group_commit;
        let config_inbox = config.clone();
        let sink = Sink(tx.clone());
        std::thread::Builder::new()
            .name("sagaflow-journal".into())
            .spawn(move || journal::run_writer(writer_conn, batch_rx, sink, group_commit))
            .expect("spawn journal writer");
        let live = Arc::new(AtomicUsize::new(0));
        // Live sagas are not `Send` (their futures hold `Rc`s): the core is
        // built, recovers and runs on its own thread, and reports recovery
        // back before taking messages.
        let (ready_tx, ready_rx) = mpsc::channel();
        let core_thread = {
            let tx = tx.clone();
            let live = live.clone();
            std::thread::Builder::new()
                .name("sagaflow-core".into())
                .spawn(move || {
                    let mut core = Core {
                        tx,
                        registry,
                        runtime,
                        semaphore: Arc::new(Semaphore::new(config.max_concurrent_activities)),
                        sagas: HashMap::new(),
                        known: HashSet::new(),
                        written_defs: HashSet::new(),
                        timers: BinaryHeap::new(),
                        round: Round::default(),
                        pending: VecDeque::new(),
                        next_batch: 0,
                        batches: batch_tx,
                        ended,
                        live,
                        waker: Waker::noop(),
                        stopping: false,
                    };
                    let recovered = core.recover(&reader);
                    drop(reader);
                    let ok = recovered.is_ok();
                    let _ = ready_tx.send(recovered);
                    if ok {
                        core.run(rx);
                    }
                })
                .expect("spawn engine core")
        };
        let recovered = match ready_rx.recv() {
            Ok(r) => r?,
            Err(_) => return Err(EngineError::Stopped),
        };
        let stop_inbox = Arc::new(AtomicBool::new(false));
        let inbox = {
            let config = config_inbox;
            let tx = tx.clone();
            let stop = stop_inbox.clone();
            let path = config.journal_path.clone();
            let every = config.inbox_poll;
            std::thread::Builder::new()
                .name("sagaflow-inbox".into())
                .spawn(move || poll_inbox(path, tx, stop, every))
                .expect("spawn inbox poller")
        };
        Ok(Engine {
            handle: EngineHandle { tx, live },
            core: Some(core_thread),
            inbox: Some(inbox),
            stop_inbox,
            _lock: lock,
            recovered,
        })
    }

    /// A handle for starting sagas.
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Stops accepting work, waits for pending journal writes, and stops the
    /// threads. Activities still running are abandoned; recovery runs them
    /// again (they are idempotent).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop_inbox.store(true, Ordering::Relaxed);
        let _ = self.handle.tx.send(Msg::Shutdown);
        if let Some(t) = self.core.take() {
            let _ = t.join();
        }
        if let Some(t) = self.inbox.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn poll_inbox(path: PathBuf, tx: Sender<Msg>, stop: Arc<AtomicBool>, every: Duration) {
    let Ok(conn) = journal::open_reader(&path) else {
        return;
    };
    let mut last = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let rows: Vec<(i64, String, String)> = conn
            .prepare_cached("SELECT id, saga_id, signal FROM inbox WHERE id > ?1 ORDER BY id")
            .and_then(|mut s| {
                s.query_map([last], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .unwrap_or_default();
        for (id, saga_id, signal) in rows {
            last = id;
            match Signal::parse(&signal) {
                Some(signal) => {
                    let _ = tx.send(Msg::Signal {
                        saga_id,
                        signal,
                        inbox_id: id,
                    });
                }
                None => tracing::warn!(saga_id, signal, "unknown signal in the inbox; ignored"),
            }
        }
        std::thread::sleep(every);
    }
}

/// Wall-clock ms since the epoch (the engine may read clocks; workflows may not).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type SagaFuture = Pin<Box<dyn Future<Output = SagaOutcome>>>;

struct Live {
    id: Arc<str>,
    ctx: ReplayContext,
    fut: SagaFuture,
    next_n: u32,
    /// The activity attempt in flight: what to journal when it returns.
    inflight: Option<(u32, ActivityCallMeta)>,
}

struct ActivityCallMeta {
    step: String,
    activity: String,
    phase: Phase,
    attempt: u32,
}

enum Action {
    Dispatch {
        saga_id: Arc<str>,
        seq: u32,
        call: ActivityCall,
    },
    Timer {
        fire_at_ms: u64,
        saga_id: Arc<str>,
        seq: u32,
    },
    Ack(oneshot::Sender<StartOutcome>, StartOutcome),
    Ended(Ended),
}

#[derive(Default)]
struct Round {
    records: Vec<Record>,
    actions: Vec<Action>,
}

struct Core {
    tx: Sender<Msg>,
    registry: Arc<Registry>,
    runtime: tokio::runtime::Handle,
    semaphore: Arc<Semaphore>,
    sagas: HashMap<Arc<str>, Live>,
    known: HashSet<Arc<str>>,
    written_defs: HashSet<String>,
    timers: BinaryHeap<Reverse<(u64, Arc<str>, u32)>>,
    round: Round,
    pending: VecDeque<(u64, Vec<Action>)>,
    next_batch: u64,
    batches: Sender<Batch>,
    ended: Option<tokio::sync::mpsc::UnboundedSender<Ended>>,
    live: Arc<AtomicUsize>,
    waker: &'static Waker,
    stopping: bool,
}

const MAX_ROUND: usize = 4096;

impl Core {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let wait = self
                .timers
                .peek()
                .map(|Reverse((at, _, _))| Duration::from_millis(at.saturating_sub(now_ms())))
                .unwrap_or(Duration::from_millis(500))
                .min(Duration::from_millis(500));
            match rx.recv_timeout(wait) {
                Ok(m) => self.handle(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let deadline = Instant::now() + Duration::from_millis(2);
            for _ in 0..MAX_ROUND {
                match rx.try_recv() {
                    Ok(m) => self.handle(m),
                    Err(_) => break,
                }
                if Instant::now() > deadline {
                    break;
                }
            }
            self.fire_due_timers();
            self.flush();
            self.live.store(self.sagas.len(), Ordering::Relaxed);
            if self.stopping && self.pending.is_empty() {
                break;
            }
        }
    }

    /// Applies one message.
    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Start {
                saga_id,
                def,
                input,
                ack,
            } => self.start(saga_id, def, input, ack),
            Msg::ActivityDone {
                saga_id,
                seq,
                started_ms,
                finished_ms,
                result,
            } => self.activity_done(&saga_id, seq, started_ms, finished_ms, result),
            Msg::Signal {
                saga_id,
                signal,
                inbox_id,
            } => self.signal(&saga_id, signal, inbox_id),
            Msg::Committed(ids) => self.committed(&ids),
            Msg::Shutdown => self.stopping = true,
        }
    }

    fn start(
        &mut self,
        saga_id: String,
        def: Arc<Definition>,
        input: Value,
        ack: Option<oneshot::Sender<StartOutcome>>,
    ) {
        if self.known.contains(saga_id.as_str()) {
            if let Some(ack) = ack {
                self.round
                    .actions
                    .push(Action::Ack(ack, StartOutcome::Duplicate));
            }
            return;
        }
        let id: Arc<str> = Arc::from(saga_id);
        let now = now_ms();
        if !self.written_defs.contains(&def.hash) {
            self.written_defs.insert(def.hash.clone());
            self.round.records.push(Record::Definition {
                hash: def.hash.clone(),
                name: def.def.name.clone(),
                body: def.json.clone(),
            });
        }
        self.round.records.push(Record::NewSaga {
            id: id.to_string(),
            saga: def.def.name.clone(),
            def_hash: def.hash.clone(),
            input: input.to_string(),
            at_ms: now,
        });
        self.round.records.push(Record::Event {
            saga_id: id.clone(),
            n: 0,
            at_ms: now,
            kind: EventKind::Started,
        });
        if let Some(ack) = ack {
            self.round
                .actions
                .push(Action::Ack(ack, StartOutcome::Started));
        }
        let live = new_live(id.clone(), def, input, now, 1);
        self.known.insert(id.clone());
        self.sagas.insert(id.clone(), live);
        self.advance(&id);
    }

    fn activity_done(
        &mut self,
        saga_id: &Arc<str>,
        seq: u32,
        started_ms: u64,
        finished_ms: u64,
        result: Result<Value, ActivityError>,
    ) {
        let Some(live) = self.sagas.get_mut(saga_id) else {
            return;
        };
        let Some((want, meta)) = live.inflight.take() else {
            return;
        };
        if want != seq {
            live.inflight = Some((want, meta));
            return;
        }
        let (output, error) = match &result {
            Ok(v) => (Some(v.clone()), None),
            Err(e) => (None, Some(e.clone())),
        };
        let n = live.next_n;
        live.next_n += 1;
        live.ctx.resolve(
            seq,
            Resolution::Activity {
                activity: meta.activity.clone(),
                result,
                at_ms: finished_ms,
            },
        );
        self.round.records.push(Record::Event {
            saga_id: live.id.clone(),
            n,
            at_ms: finished_ms,
            kind: EventKind::Attempt {
                seq,
                body: AttemptBody {
                    step: meta.step,
                    activity: meta.activity,
                    phase: meta.phase,
                    attempt: meta.attempt,
                    started_ms,
                    output,
                    error,
                },
            },
        });
        self.advance(saga_id);
    }

    fn timer_fired(&mut self, saga_id: &Arc<str>, seq: u32, at_ms: u64) {
        let Some(live) = self.sagas.get_mut(saga_id) else {
            return;
        };
        let n = live.next_n;
        live.next_n += 1;
        live.ctx.resolve(seq, Resolution::Timer { at_ms });
        self.round.records.push(Record::Event {
            saga_id: live.id.clone(),
            n,
            at_ms,
            kind: EventKind::TimerFired { seq },
        });
        self.advance(saga_id);
    }

    fn signal(&mut self, saga_id: &str, signal: Signal, inbox_id: i64) {
        let Some(live) = self.sagas.get_mut(saga_id) else {
            tracing::warn!(
                saga_id,
                signal = signal.name(),
                "signal for a saga that is not running (unknown or ended); dropped"
            );
            self.round.records.push(Record::DropSignal { inbox_id });
            return;
        };
        let now = now_ms();
        let n = live.next_n;
        live.next_n += 1;
        live.ctx.push_signal(signal, now);
        self.round.records.push(Record::Event {
            saga_id: live.id.clone(),
            n,
            at_ms: now,
            kind: EventKind::Signal {
                signal,
                inbox_id: Some(inbox_id),
            },
        });
        let id = live.id.clone();
        self.advance(&id);
    }

    /// Polls a saga after something was delivered to it; journals a status
    /// change and queues what it asks for until the round commits.
    fn advance(&mut self, saga_id: &str) {
        let Some(live) = self.sagas.get_mut(saga_id) else {
            return;
        };
        let poll = live.fut.as_mut().poll(&mut Context::from_waker(self.waker));
        if let Some(why) = live.ctx.divergence() {
            tracing::error!(
                saga_id,
                why,
                "replay diverged from the journal; the saga is stuck until the definition matches"
            );
        }
        if let Some(status) = live.ctx.take_status_change() {
            let n = live.next_n;
            live.next_n += 1;
            self.round.records.push(Record::Event {
                saga_id: live.id.clone(),
                n,
                at_ms: now_ms(),
                kind: EventKind::Status {
                    status: status.name(),
                    reason: status.reason().map(str::to_owned),
                    ended: status.is_terminal(),
                },
            });
        }
        take_commands(live, &mut self.round.actions);
        if let Poll::Ready(outcome) = poll {
            let live = self.sagas.remove(saga_id).expect("present above");
            self.round.actions.push(Action::Ended(Ended {
                saga_id: live.id,
                status: outcome.status,
            }));
        }
    }

    fn fire_due_timers(&mut self) {
        let now = now_ms();
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Reverse((at, saga_id, seq)) = self.timers.pop().expect("peeked");
            self.timer_fired(&saga_id, seq, at.max(now));
        }
    }

    /// Ends the round: records go to the writer; actions wait for them.
    fn flush(&mut self) {
        let round = std::mem::take(&mut self.round);
        if round.records.is_empty() {
            if round.actions.is_empty() {
                return;
            }
            match self.pending.back_mut() {
                Some((_, later)) => later.extend(round.actions),
                None => {
                    for a in round.actions {
                        self.carry_out(a);
                    }
                }
            }
            return;
        }
        self.next_batch += 1;
        let id = self.next_batch;
        if self
            .batches
            .send(Batch {
                id,
                records: round.records,
            })
            .is_err()
        {
            eprintln!("sagaflow: the journal writer stopped; exiting so that recovery can resume");
            std::process::exit(70);
        }
        self.pending.push_back((id, round.actions));
    }

    fn committed(&mut self, ids: &[u64]) {
        let Some(&last) = ids.iter().max() else {
            return;
        };
        while self.pending.front().is_some_and(|(id, _)| *id <= last) {
            let (_, actions) = self.pending.pop_front().expect("checked");
            for a in actions {
                self.carry_out(a);
            }
        }
    }

    fn carry_out(&mut self, action: Action) {
        match action {
            // Stopping: no new work, so the pending commits drain. What is
            // not dispatched now is re-dispatched by recovery.
            Action::Dispatch { .. } | Action::Timer { .. } if self.stopping => {}
            Action::Dispatch { saga_id, seq, call } => self.dispatch(saga_id, seq, call),
            Action::Timer {
                fire_at_ms,
                saga_id,
                seq,
            } => self.timers.push(Reverse((fire_at_ms, saga_id, seq))),
            Action::Ack(ack, outcome) => {
                let _ = ack.send(outcome);
            }
            Action::Ended(e) => {
                if let Some(tx) = &self.ended {
                    let _ = tx.send(e);
                }
            }
        }
    }

    fn dispatch(&self, saga_id: Arc<str>, seq: u32, call: ActivityCall) {
        let registry = self.registry.clone();
        let semaphore = self.semaphore.clone();
        let tx = self.tx.clone();
        self.runtime.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let mut report = Report {
                tx,
                saga_id,
                seq,
                started_ms: now_ms(),
                sent: false,
            };
            let limit = Duration::from_millis(call.timeout_ms);
            let result = match tokio::time::timeout(limit, registry.start(call)).await {
                Ok(r) => r,
                Err(_) => Err(ActivityError::retryable(
                    "timeout",
                    format!("no result within {}ms", limit.as_millis()),
                )),
            };
            report.send(result);
        });
    }

    /// Rebuilds every saga that had not ended from its journal events and
    /// queues its outstanding operation. Returns how many were recovered.
    fn recover(&mut self, conn: &Connection) -> Result<usize, EngineError> {
        let mut defs: HashMap<String, Arc<Definition>> = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT hash, body FROM definitions")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (hash, body) = row?;
                if let Ok(def) = serde_json::from_str::<SagaDef>(&body) {
                    self.written_defs.insert(hash.clone());
                    defs.insert(
                        hash.clone(),
                        Arc::new(Definition {
                            def,
                            hash,
                            json: body,
                        }),
                    );
                }
            }
        }
        {
            let mut stmt = conn.prepare("SELECT id FROM sagas")?;
            let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
            for id in ids {
                self.known.insert(Arc::from(id?));
            }
        }
        let open: Vec<(String, String, String, u64)> = conn
            .prepare(
                "SELECT id, def_hash, input, created_ms FROM sagas
                 WHERE status NOT IN ('completed', 'compensated') ORDER BY created_ms",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let mut events = conn.prepare(
            "SELECT n, at_ms, kind, seq, body FROM events WHERE saga_id = ?1 ORDER BY n",
        )?;
        for (id, hash, input, created_ms) in &open {
            let def = defs
                .get(hash)
                .cloned()
                .ok_or_else(|| EngineError::MissingDefinition {
                    saga: id.clone(),
                    hash: hash.clone(),
                })?;
            let input: Value = serde_json::from_str(input).unwrap_or(Value::Null);
            let id: Arc<str> = self
                .known
                .get(id.as_str())
                .cloned()
                .unwrap_or_else(|| Arc::from(id.as_str()));
            let mut live = new_live(id.clone(), def, input, *created_ms, 0);
            let mut last_status: Option<SagaStatus> = None;
            let rows = events.query_map([&*id], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, u64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<u32>>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?;
            for row in rows {
                let (n, at_ms, kind, seq, body) = row?;
                live.next_n = n + 1;
                match (kind.as_str(), seq) {
                    ("activity_completed" | "activity_failed", Some(seq)) => {
                        let b: AttemptBody = serde_json::from_str(&body).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                4,
                                rusqlite::types::Type::Text,
                                Box::new(e),
                            )
                        })?;
                        let result = match (b.output, b.error) {
                            (_, Some(e)) => Err(e),
                            (Some(v), None) => Ok(v),
                            (None, None) => Ok(Value::Null),
                        };
                        live.ctx.resolve(
                            seq,
                            Resolution::Activity {
                                activity: b.activity,
                                result,
                                at_ms,
                            },
                        );
                    }
                    ("timer_fired", Some(seq)) => {
                        live.ctx.resolve(seq, Resolution::Timer { at_ms })
                    }
                    ("signal", _) => {
                        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        if let Some(s) = v["signal"].as_str().and_then(Signal::parse) {
                            live.ctx.push_signal(s, at_ms);
                        }
                    }
                    ("status", _) => {
                        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        last_status = SagaStatus::from_parts(
                            v["status"].as_str().unwrap_or("running"),
                            v["reason"].as_str().map(str::to_owned),
                        );
                    }
                    _ => {}
                }
            }
            // Replay: one poll runs the saga through its recorded history.
            let poll = live.fut.as_mut().poll(&mut Context::from_waker(self.waker));
            if let Some(why) = live.ctx.divergence() {
                tracing::error!(saga_id = &*id, why, "replay diverged from the journal");
            }
            let replayed_status = live.ctx.take_status_change();
            let status_now = live.ctx.status();
            let recorded = last_status.unwrap_or(SagaStatus::Running);
            if replayed_status.is_some() && status_now != recorded {
                // The status change was decided but its commit did not happen.
                let n = live.next_n;
                live.next_n += 1;
                self.round.records.push(Record::Event {
                    saga_id: id.clone(),
                    n,
                    at_ms: now_ms(),
                    kind: EventKind::Status {
                        status: status_now.name(),
                        reason: status_now.reason().map(str::to_owned),
                        ended: status_now.is_terminal(),
                    },
                });
            }
            take_commands(&mut live, &mut self.round.actions);
            match poll {
                Poll::Ready(outcome) => self.round.actions.push(Action::Ended(Ended {
                    saga_id: id.clone(),
                    status: outcome.status,
                })),
                Poll::Pending => {
                    self.sagas.insert(id, live);
                }
            }
        }
        self.live.store(self.sagas.len(), Ordering::Relaxed);
        self.flush();
        Ok(open.len())
    }
}

fn new_live(
    id: Arc<str>,
    def: Arc<Definition>,
    input: Value,
    started_ms: u64,
    next_n: u32,
) -> Live {
    let ctx = ReplayContext::new(&id, started_ms);
    let saga_ctx = ctx.clone();
    let fut: SagaFuture = Box::pin(async move { run_saga(&saga_ctx, &def.def, &input).await });
    Live {
        id,
        ctx,
        fut,
        next_n,
        inflight: None,
    }
}

fn take_commands(live: &mut Live, actions: &mut Vec<Action>) {
    for command in live.ctx.take_commands() {
        match command {
            Command::Activity { seq, call } => {
                live.inflight = Some((
                    seq,
                    ActivityCallMeta {
                        step: call.step.clone(),
                        activity: call.activity.clone(),
                        phase: call.phase,
                        attempt: call.attempt,
                    },
                ));
                actions.push(Action::Dispatch {
                    saga_id: live.id.clone(),
                    seq,
                    call,
                });
            }
            Command::Timer { seq, fire_at_ms } => actions.push(Action::Timer {
                fire_at_ms,
                saga_id: live.id.clone(),
                seq,
            }),
            Command::WaitSignal => {}
        }
    }
}

/// Sends an activity's result back to the core exactly once, even if the
/// activity panics (the report is then a retryable "panic" error).
struct Report {
    tx: Sender<Msg>,
    saga_id: Arc<str>,
    seq: u32,
    started_ms: u64,
    sent: bool,
}

impl Report {
    fn send(&mut self, result: Result<Value, ActivityError>) {
        self.sent = true;
        let _ = self.tx.send(Msg::ActivityDone {
            saga_id: self.saga_id.clone(),
            seq: self.seq,
            started_ms: self.started_ms,
            finished_ms: now_ms(),
            result,
        });
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.sent {
            self.send(Err(ActivityError::retryable(
                "panic",
                "the activity panicked or was cancelled; see the worker log",
            )));
        }
    }
}
