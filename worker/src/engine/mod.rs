//! Where sagas run: the [`embedded`] engine (a journal on SQLite, in this
//! process) or a [`temporal`] cluster, and what both share.
//!
//! - [`model`]: a definition and the answer to a start; [`view`]: the rows
//!   the operator sees (list, show, history, stats, audit), which both
//!   engines produce; [`command`]: operator commands as journaled or sent
//!   as Temporal Updates; [`filter`]: the `--where` of bulk commands;
//!   [`liveness`]: which sagas have not ended, for the stock reaper;
//! - [`Starter`]: where a trigger's starts go, on either engine.
//!
//! Neither engine imports the other: `embedded` knows nothing of
//! `temporal`, and `temporal` only the shared modules above.

pub mod command;
pub mod embedded;
pub mod filter;
pub mod liveness;
pub mod model;
pub mod temporal;
pub mod view;

pub use self::embedded::{EngineError, EngineHandle};
pub use self::model::{Definition, StartOutcome};

use self::temporal::client::{TemporalClient, TemporalError};
use self::temporal::intake::OwnSagas;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why a saga could not be started. Either way nothing was started, so a
/// trigger leaves its message to be delivered again.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The embedded engine refused or has stopped.
    #[error(transparent)]
    Embedded(#[from] EngineError),
    /// The Temporal cluster did not take the start.
    #[error(transparent)]
    Temporal(#[from] TemporalError),
}

/// Where saga starts go: the embedded engine or a Temporal cluster.
#[derive(Clone)]
pub enum Starter {
    /// The embedded engine in this process.
    Embedded(EngineHandle),
    /// A Temporal cluster, and the sagas this worker started that are in
    /// progress (kept current by a watcher; approximate).
    Temporal(TemporalClient, Arc<OwnSagas>),
}

impl Starter {
    /// Starts a saga; resolves once the start is durable. Starting an id
    /// that exists is a harmless duplicate on both engines.
    pub async fn start(
        &self,
        saga_id: String,
        def: Arc<Definition>,
        order: Value,
    ) -> Result<StartOutcome, StartError> {
        Ok(match self {
            Starter::Embedded(h) => h.start(saga_id, def, order).await?,
            Starter::Temporal(c, own) => {
                let outcome = c.start(c.saga_input(saga_id, &def, order)).await?;
                if outcome == StartOutcome::Started {
                    own.note_start();
                }
                outcome
            }
        })
    }

    /// Whether the saga `saga_id` started from `order`: `None` when that
    /// cannot be told (no such saga yet, its start not yet readable, or
    /// the store did not answer).
    pub async fn same_body(&self, saga_id: &str, order: &Value) -> Option<bool> {
        let first = match self {
            Starter::Embedded(h) => h.started_input(saga_id).await,
            Starter::Temporal(c, _) => c.started_order(saga_id).await.ok().flatten(),
        }?;
        // The trace a message carried is not part of the order: a producer
        // that sends the same order again in a new trace sends the same order.
        let without_trace = |v: &Value| {
            let mut v = v.clone();
            if let Some(fields) = v.as_object_mut() {
                fields.remove("traceparent");
            }
            v
        };
        Some(without_trace(&first) == without_trace(order))
    }

    /// Sagas in progress, which the trigger's `max_live` limits: neither
    /// parked nor waiting for an open breaker. On the embedded engine the
    /// core's count; on Temporal, the sagas this worker started that are
    /// running or compensating (as visibility last said, plus its starts
    /// since) less those its breakers refused and that have not come back.
    pub fn in_progress(&self) -> usize {
        match self {
            Starter::Embedded(h) => h.in_progress(),
            Starter::Temporal(_, own) => own.in_progress.load(Ordering::Relaxed),
        }
    }

    /// The most sagas in progress the engine takes now, below `--max-live`:
    /// on Temporal, the window the cluster's task waits allow
    /// ([`temporal::intake::StartWindow`]); unbounded on the embedded
    /// engine, whose journal applies its own back-pressure.
    pub fn window(&self) -> usize {
        match self {
            Starter::Embedded(_) => usize::MAX,
            Starter::Temporal(_, own) => own.window.load(Ordering::Relaxed),
        }
    }

    /// Tells the engine that intake stopped at [`Starter::window`] with
    /// orders waiting: the window is in use, and may grow.
    pub fn note_window_met(&self) {
        if let Starter::Temporal(_, own) = self {
            own.window_met.store(true, Ordering::Relaxed);
        }
    }
}
