//! Triggers: where orders come from. Each turns messages into saga starts
//! and settles a message only after its start is durable.

pub mod embedded;
pub mod servicebus;

use crate::engine::Starter;
use sagaflow_activities::{Breakers, Order};
use sagaflow_workflows::SagaDef;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// What a trigger has done, for logs, idle checks and benchmarks (the
/// connection fields are the Service Bus trigger's).
#[derive(Debug, Default)]
pub struct TriggerStats {
    /// True while a receiver link is attached.
    pub connected: AtomicBool,
    /// Starts running whose message is not settled yet.
    pub in_flight: AtomicUsize,
    /// Messages received (redeliveries included).
    pub received: AtomicU64,
    /// Messages accepted after a new saga started.
    pub started: AtomicU64,
    /// Messages accepted as duplicates of an existing saga.
    pub duplicates: AtomicU64,
    /// Of those, messages that reused an existing order id with a different
    /// body: logged, counted, not started (the first order stands).
    pub reused_ids: AtomicU64,
    /// Messages dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Messages released after a failed start.
    pub abandoned: AtomicU64,
    /// Connections opened (the first one included).
    pub connects: AtomicU64,
    /// When the last message arrived, ms since the epoch.
    pub last_message_ms: AtomicU64,
    /// When the current connection's receiver attached, ms since the epoch.
    pub connected_at_ms: AtomicU64,
    /// Why intake is paused now (`None`: taking messages).
    pub paused: Mutex<Option<Pause>>,
}

/// Why a trigger takes no messages for now: they stay on the queue, where
/// KEDA and operators see them, not in the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pause {
    /// A breaker new sagas would meet is open: they would only wait.
    BreakerOpen(String),
    /// `max_live` sagas are in progress.
    Full(usize),
    /// As many sagas are in progress as the cluster's task waits allow now
    /// (`[temporal] max_task_wait`), fewer than `max_live`.
    Window(usize),
}

impl std::fmt::Display for Pause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pause::BreakerOpen(dependency) => {
                write!(f, "the {dependency} circuit breaker is open")
            }
            Pause::Full(max) => write!(f, "{max} sagas are in progress (--max-live)"),
            Pause::Window(n) => write!(
                f,
                "{n} sagas are in progress, as many as the cluster's workflow-task waits allow now ([temporal] max_task_wait)"
            ),
        }
    }
}

/// How long a trigger sleeps while paused before it looks again: short
/// next to a breaker's open interval or a saga's run, long next to a
/// busy loop.
pub const PAUSE_POLL: Duration = Duration::from_millis(20);

/// Decides whether a trigger may take messages, and how many: the one
/// rule both triggers follow.
#[derive(Debug, Clone)]
pub struct Intake {
    /// Sagas in progress (not parked, not waiting for a breaker) above
    /// which no more messages are taken.
    pub max_live: usize,
    breakers: Breakers,
    /// The activities a new saga's forward steps call.
    actions: Vec<String>,
}

impl Intake {
    /// Intake for sagas of `def`, behind `breakers`.
    pub fn new(max_live: usize, breakers: Breakers, def: &SagaDef) -> Intake {
        Intake {
            max_live,
            breakers,
            actions: def.steps.iter().map(|s| s.action.clone()).collect(),
        }
    }

    /// How many more starts may be taken now, `unsettled` being those
    /// taken but not yet counted by the engine; or why none.
    pub fn room(&self, engine: &Starter, unsettled: usize) -> Result<usize, Pause> {
        if let Some(dependency) = self
            .breakers
            .open_among(self.actions.iter().map(String::as_str))
        {
            return Err(Pause::BreakerOpen(dependency.to_owned()));
        }
        let window = engine.window();
        let limit = self.max_live.min(window);
        match limit.checked_sub(engine.in_progress() + unsettled) {
            Some(room) if room > 0 => Ok(room),
            _ if window < self.max_live => {
                engine.note_window_met();
                Err(Pause::Window(window))
            }
            _ => Err(Pause::Full(self.max_live)),
        }
    }
}

impl TriggerStats {
    /// Records the trigger's pause (or `None`: resumed), logging a change
    /// once; a pause for a full worker is routine and logged at debug.
    pub fn note_pause(&self, now: Option<Pause>) {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        if *paused == now {
            return;
        }
        match (&*paused, &now) {
            (_, Some(p @ Pause::BreakerOpen(_))) => {
                tracing::warn!(
                    "intake paused: {p}; orders stay on the queue until it lets probes through"
                )
            }
            (Some(Pause::BreakerOpen(_)), _) => {
                tracing::info!("intake resumed: the breaker lets calls through")
            }
            (_, Some(p)) => tracing::debug!("intake paused: {p}"),
            _ => {}
        }
        *paused = now;
    }
}

impl TriggerStats {
    /// The message counters `/metrics` shows, as of now.
    pub fn queue_counts(&self) -> crate::metrics::QueueCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        crate::metrics::QueueCounts {
            received: get(&self.received),
            started: get(&self.started),
            duplicates: get(&self.duplicates),
            abandoned: get(&self.abandoned),
            dead_lettered: get(&self.dead_lettered),
        }
    }

    /// True when connected, nothing is in flight, and no message arrived
    /// for `quiet_ms` (nor since the receiver attached): the queue looks
    /// empty. A broker cannot say so outright without its management API.
    pub fn looks_drained(&self, now_ms: u64, quiet_ms: u64) -> bool {
        let last = self
            .last_message_ms
            .load(Ordering::Relaxed)
            .max(self.connected_at_ms.load(Ordering::Relaxed));
        self.connected.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && now_ms.saturating_sub(last) >= quiet_ms
    }
}

/// After a duplicate start: when the saga that holds this order id started
/// from a different body, says so once in the log and counts it. The
/// message is still settled (the first order stands; a second saga for one
/// order id would charge twice), but a sender that reuses order ids is a
/// bug someone must see.
pub(crate) async fn note_duplicate(starter: &Starter, order: &Order, stats: &TriggerStats) {
    let body = serde_json::to_value(order).expect("orders serialize");
    if starter.same_body(&order.order_id, &body).await == Some(false) {
        stats.reused_ids.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            order = order.order_id,
            "an order with this id already started with a different body; this one was not started and the first stands: the sender reused an order id (send a change as a new order with a new id)"
        );
    }
}
