//! The embedded trigger: the SQLite queue -> saga starts.
//!
//! Peek-lock, like Service Bus: a batch is received (locked), each valid
//! order becomes a saga start, and only once the starts are durable are the
//! messages completed. A malformed message is dead-lettered with the reason;
//! a start that fails leaves the message to be delivered again. So every
//! message either becomes a saga or is dead-lettered, and a crash at any
//! point loses nothing (a redelivered message is a harmless duplicate start:
//! the saga id is the order id).

use super::{note_duplicate, Intake, TriggerStats, PAUSE_POLL};
use crate::engine::{Definition, StartOutcome, Starter};
use sagaflow_activities::queue::EmbeddedQueue;
use sagaflow_activities::Order;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Deliveries before a message that never settles is dead-lettered.
pub const MAX_DELIVERIES: u32 = 10;

/// Bodies above this are dead-lettered (Service Bus standard's limit).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// How the trigger paces itself.
#[derive(Debug, Clone)]
pub struct TriggerConfig {
    /// When and how many messages may be taken.
    pub intake: Intake,
    /// Messages per receive.
    pub batch: usize,
    /// Lock duration of a received message.
    pub lock: Duration,
}

/// Consumes the queue until `stop` is set.
pub async fn run(
    queue: Arc<EmbeddedQueue>,
    engine: Starter,
    def: Arc<Definition>,
    config: TriggerConfig,
    stop: Arc<std::sync::atomic::AtomicBool>,
    stats: Arc<TriggerStats>,
) {
    // One worker owns an embedded data directory: locks left by a killed
    // worker are released at once instead of waiting for them to expire.
    if let Err(e) = queue.release_locks() {
        tracing::warn!(error = %e, "could not release queue locks; they expire on their own");
    }
    let mut idle_wait = Duration::from_millis(5);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let room = match config.intake.room(&engine, 0) {
            Ok(room) => {
                stats.note_pause(None);
                room.min(config.batch)
            }
            Err(pause) => {
                stats.note_pause(Some(pause));
                tokio::time::sleep(PAUSE_POLL).await;
                continue;
            }
        };
        let q = queue.clone();
        let lock_ms = config.lock.as_millis() as u64;
        let deliveries = match tokio::task::spawn_blocking(move || q.receive(room, lock_ms)).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "receiving from the embedded queue failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => return,
        };
        if deliveries.is_empty() {
            tokio::time::sleep(idle_wait).await;
            idle_wait = (idle_wait * 2).min(Duration::from_millis(100));
            continue;
        }
        idle_wait = Duration::from_millis(5);
        stats
            .received
            .fetch_add(deliveries.len() as u64, Ordering::Relaxed);
        let mut starts = Vec::with_capacity(deliveries.len());
        let mut settled = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            match Order::from_message(&d.body, None, MAX_MESSAGE_BYTES) {
                Ok(order) => {
                    let input = serde_json::to_value(&order).expect("orders serialize");
                    let (engine, def, stats) = (engine.clone(), def.clone(), stats.clone());
                    starts.push((
                        d.id,
                        tokio::spawn(async move {
                            let outcome = engine.start(order.order_id.clone(), def, input).await;
                            if let Ok(StartOutcome::Duplicate) = outcome {
                                note_duplicate(&engine, &order, &stats).await;
                            }
                            outcome
                        }),
                    ));
                }
                Err(rejection) => {
                    tracing::warn!(message = d.id, reason = rejection.reason, description = %rejection.description, "malformed order dead-lettered");
                    match queue.dead_letter(d.id, &rejection.to_string()) {
                        Ok(_) => {
                            stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "dead-lettering failed; the message will be delivered again")
                        }
                    }
                }
            }
        }
        for (id, start) in starts {
            match start.await {
                Ok(Ok(outcome)) => {
                    let counter = match outcome {
                        StartOutcome::Started => &stats.started,
                        StartOutcome::Duplicate => &stats.duplicates,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    settled.push(id);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, message = id, "saga start failed; the message will be delivered again");
                    stats.abandoned.fetch_add(1, Ordering::Relaxed);
                    let _ = queue.abandon(id);
                }
                Err(_) => return,
            }
        }
        if let Err(e) = queue.complete(&settled) {
            tracing::warn!(error = %e, "completing messages failed; they will be delivered again (harmless duplicates)");
        }
    }
}
