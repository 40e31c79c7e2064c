//! The embedded engine's threads: start (lock the journal, recover, spawn
//! the writer, core and inbox threads) and stop (drain what is being
//! committed, join the threads).

use super::api::{Ended, EngineConfig, EngineError, EngineHandle, Msg, Sink};
use super::dispatch::Dispatcher;
use super::event_loop::Core;
use super::journal_ids::JournalIds;
use super::state::State;
use super::{inbox, journal, recovery};
use sagaflow_activities::Registry;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

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
        let retention = config.retention;
        let config_inbox = config.clone();
        let sink = Sink(tx.clone());
        std::thread::Builder::new()
            .name("sagaflow-journal".into())
            .spawn(move || {
                journal::run_writer(writer_conn, batch_rx, sink, group_commit, retention)
            })
            .expect("spawn journal writer");
        let live = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicBool::new(true));
        // Live sagas are not `Send` (their futures hold `Rc`s): the core is
        // built, recovers and runs on its own thread, and reports recovery
        // back before taking messages.
        let (ready_tx, ready_rx) = mpsc::channel();
        let core_thread = {
            let tx = tx.clone();
            let live = live.clone();
            let running = running.clone();
            std::thread::Builder::new()
                .name("sagaflow-core".into())
                .spawn(move || {
                    let recovered = recovery::read(&reader).map(|journal| {
                        let opened = journal.open.len();
                        let dispatcher = Dispatcher::new(
                            tx.clone(),
                            registry,
                            runtime,
                            config.max_concurrent_activities,
                        );
                        let mut state = State::new(journal.written_defs);
                        state.trace(crate::telemetry::enabled());
                        let ids = JournalIds::new(reader);
                        let mut core = Core::new(state, dispatcher, ids, batch_tx, ended, live);
                        core.recover(journal.open);
                        (core, opened)
                    });
                    match recovered {
                        Ok((core, opened)) => {
                            let _ = ready_tx.send(Ok(opened));
                            core.run(rx);
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                        }
                    }
                    // Stopped, or a journal commit failed: not ready.
                    running.store(false, Ordering::Relaxed);
                })
                .expect("spawn engine core")
        };
        let recovered = match ready_rx.recv() {
            Ok(r) => r?,
            Err(_) => return Err(EngineError::Stopped),
        };
        let stop_inbox = Arc::new(AtomicBool::new(false));
        let journal_path: Arc<std::path::Path> = Arc::from(config_inbox.journal_path.as_path());
        let inbox = {
            let config = config_inbox;
            let tx = tx.clone();
            let stop = stop_inbox.clone();
            let path = config.journal_path.clone();
            let every = config.inbox_poll;
            std::thread::Builder::new()
                .name("sagaflow-inbox".into())
                .spawn(move || inbox::poll(path, tx, stop, every))
                .expect("spawn inbox poller")
        };
        Ok(Engine {
            handle: EngineHandle {
                tx,
                live,
                running,
                journal: journal_path,
            },
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
