//! Triggers: where orders come from. Each turns messages into saga starts
//! and settles a message only after its start is durable.

pub mod embedded;
pub mod servicebus;

use crate::engine::Starter;
use sagaflow_activities::Order;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

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
}

impl TriggerStats {
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
