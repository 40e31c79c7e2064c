//! The Service Bus trigger: an AMQP 1.0 queue -> saga starts.
//!
//! Peek-lock over AMQP: deliveries arrive unsettled (receiver settle mode
//! first, the broker keeps each one locked until we settle it).
//! - A valid order becomes `engine.start(order_id)`; the message is
//!   accepted (completed) only once the start is durable. A start of an id
//!   that exists is a duplicate and is accepted too, so a redelivered or
//!   re-sent order never runs twice.
//! - A start that fails (engine or cluster unavailable) releases
//!   (abandons) the message: the broker delivers it again.
//! - A message that cannot be an order is dead-lettered with a reason
//!   ([`deadletter`]) and the trigger goes on.
//! - If the connection drops, every unsettled message goes back to the
//!   queue by itself; the trigger reconnects with exponential backoff.
//!
//! So a crash at any instant loses nothing: each message either became a
//! saga (whose start was durable before the accept) or is still on the
//! queue, or in the dead-letter queue with its reason.

pub mod deadletter;
pub mod endpoint;
pub mod error;
pub mod message;
pub mod send;

use self::deadletter::DeadLetterer;
use self::endpoint::{Endpoint, EndpointError, Link};
use self::error::LinkError;
use self::message::body_bytes;
use super::{note_duplicate, Intake, Pause, TriggerStats, PAUSE_POLL};
use crate::config::ServiceBusSettings;
use crate::engine::{Definition, StartOutcome, Starter};
use backon::BackoffBuilder;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::Receiver;
use sagaflow_activities::{Order, Rejection};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long one operation on an open link (granting credit, settling a
/// message, forwarding a dead letter) may take before the link is taken
/// as lost. fe2o3 does not always notice a connection the broker dropped
/// (a broker restart while a dead letter was being forwarded left the
/// trigger waiting for its outcome for good: no more intake, and Ctrl-C
/// never finished); the reconnect that follows a lost link brings back
/// every unsettled message.
const LINK_OP_TIMEOUT: Duration = Duration::from_secs(10);

/// `fut`, or a lost link once [`LINK_OP_TIMEOUT`] has passed.
async fn on_link<T>(
    what: &'static str,
    fut: impl Future<Output = Result<T, LinkError>>,
) -> Result<T, LinkError> {
    error::within(LINK_OP_TIMEOUT, fut, || {
        LinkError::transfer(
            what,
            format!(
                "no answer within {} s; the connection is taken as lost",
                LINK_OP_TIMEOUT.as_secs()
            ),
        )
    })
    .await
}

/// How the trigger consumes.
#[derive(Debug, Clone)]
pub struct ServiceBusTrigger {
    /// Where.
    pub endpoint: Endpoint,
    /// Queue and limits.
    pub settings: ServiceBusSettings,
    /// When and how many messages may be taken.
    pub intake: Intake,
}

/// Reconnect delays: 100 ms doubling to 10 s, with jitter, forever.
fn reconnect_delays() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

impl ServiceBusTrigger {
    /// Reads the endpoint from the environment and checks the broker
    /// answers and the queue exists, so a bad setup fails at start-up and
    /// not at the first order.
    pub async fn connect_check(
        settings: &ServiceBusSettings,
        intake: Intake,
    ) -> Result<ServiceBusTrigger, EndpointError> {
        let endpoint = Endpoint::from_env(&settings.connection_env)?;
        if let Some(path) = &endpoint.entity_path {
            if path != &settings.queue {
                return Err(EndpointError::Connect {
                    endpoint: endpoint.to_string(),
                    why: format!(
                        "the connection string's EntityPath is {path} but [servicebus] queue is {}; make them the same",
                        settings.queue
                    ),
                });
            }
        }
        let mut link = endpoint.connect("sagaflow-check").await?;
        let address = endpoint.queue_address(&settings.queue);
        let probe = Receiver::builder()
            .name("sagaflow-check")
            .source(address.clone())
            .credit_mode(CreditMode::Manual)
            .attach(&mut link.session)
            .await;
        let result = match probe {
            Ok(r) => {
                let _ = r.close().await;
                Ok(())
            }
            Err(e) => Err(EndpointError::Connect {
                endpoint: endpoint.to_string(),
                why: format!("cannot receive from queue {address}: {e}; create it (scripts/services.sh queue NAME declares one on the local broker)"),
            }),
        };
        link.close().await;
        result.map(|()| ServiceBusTrigger {
            endpoint,
            settings: settings.clone(),
            intake,
        })
    }

    /// Consumes until `stop` is set, reconnecting whenever the connection
    /// drops. Returns after the starts in flight have settled.
    pub async fn run(
        self,
        engine: Starter,
        def: Arc<Definition>,
        stop: Arc<AtomicBool>,
        stats: Arc<TriggerStats>,
    ) {
        let mut delays = reconnect_delays();
        while !stop.load(Ordering::Relaxed) {
            let connected_before = stats.connects.load(Ordering::Relaxed);
            match self.consume(&engine, &def, &stop, &stats).await {
                Ok(()) => break,
                Err(e) => {
                    stats.connected.store(false, Ordering::Relaxed);
                    let was_up = stats.connects.load(Ordering::Relaxed) > connected_before;
                    if was_up {
                        // It worked for a while: start the backoff over.
                        delays = reconnect_delays();
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(10));
                    if was_up {
                        tracing::warn!(error = %e, retry_in = ?delay, "Service Bus connection lost; unsettled messages return to the queue; reconnecting");
                    } else {
                        tracing::warn!(error = %e, retry_in = ?delay, "Service Bus unreachable; reconnecting");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
        stats.connected.store(false, Ordering::Relaxed);
    }

    /// One connection's life. `Ok` when stopped, `Err` when the link broke.
    async fn consume(
        &self,
        engine: &Starter,
        def: &Arc<Definition>,
        stop: &AtomicBool,
        stats: &Arc<TriggerStats>,
    ) -> Result<(), LinkError> {
        let name = format!("sagaflow-{}", std::process::id());
        let mut link = self.endpoint.connect(&name).await?;
        let result = self
            .consume_on(&mut link, &name, engine, def, stop, stats)
            .await;
        // Settle what is in flight while the link still exists (each
        // settlement is bounded, so this ends).
        while stats.in_flight.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        link.close().await;
        result
    }

    async fn consume_on(
        &self,
        link: &mut Link,
        name: &str,
        engine: &Starter,
        def: &Arc<Definition>,
        stop: &AtomicBool,
        stats: &Arc<TriggerStats>,
    ) -> Result<(), LinkError> {
        let address = self.endpoint.queue_address(&self.settings.queue);
        let mut receiver = link
            .peek_lock_receiver(format!("{name}-orders"), &address, CreditMode::Manual)
            .await?;
        let mut dead = DeadLetterer::attach(link, name, &self.endpoint, &self.settings).await?;
        stats
            .connected_at_ms
            .store(sagaflow_activities::clock::now_ms(), Ordering::Relaxed);
        stats.connected.store(true, Ordering::Relaxed);
        stats.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(endpoint = %self.endpoint, queue = %address, prefetch = self.settings.prefetch, "consuming orders");
        let disposer = receiver.disposer();
        let max_bytes = self.settings.max_message_bytes as usize;
        // Credit is ours to grant (manual mode): fe2o3's automatic refill
        // races with settlements made from other tasks and then rejects the
        // broker's transfers as over the limit. Grant up to `prefetch`
        // unsettled messages, topping up once half is used.
        let prefetch = self.settings.prefetch;
        let mut credit = 0u32;
        loop {
            if stop.load(Ordering::Relaxed) {
                // Let the starts in flight settle on this link first, so a
                // graceful stop leaves no duplicate to redeliver.
                while stats.in_flight.load(Ordering::Relaxed) > 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let _ = tokio::time::timeout(LINK_OP_TIMEOUT, receiver.close()).await;
                return Ok(());
            }
            // Starts not yet acknowledged count too: the broker hands over a
            // whole prefetch in microseconds, long before the engine has
            // registered any of them.
            match self
                .intake
                .room(engine, stats.in_flight.load(Ordering::Relaxed))
            {
                Ok(_) => stats.note_pause(None),
                Err(pause) => {
                    if matches!(pause, Pause::BreakerOpen(_)) && credit > 0 {
                        // Stop the broker pushing more: new orders wait on
                        // the queue, visible to KEDA and operators, not in
                        // this worker's buffer. Credit is granted again
                        // when intake resumes.
                        on_link("withdrawing credit", async {
                            receiver
                                .set_credit(0)
                                .await
                                .map_err(|e| LinkError::transfer("withdrawing credit", e))
                        })
                        .await?;
                        credit = 0;
                    }
                    stats.note_pause(Some(pause));
                    tokio::time::sleep(PAUSE_POLL).await;
                    continue;
                }
            }
            let unsettled = stats.in_flight.load(Ordering::Relaxed) as u32;
            let room = prefetch.saturating_sub(unsettled);
            if credit <= prefetch / 2 && room > credit {
                on_link("granting credit", async {
                    receiver
                        .set_credit(room)
                        .await
                        .map_err(|e| LinkError::transfer("granting credit", e))
                })
                .await?;
                credit = room;
            }
            if credit == 0 {
                // Every message granted is still being started.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let delivery = tokio::select! {
                d = receiver.recv::<Body<Value>>() => d.map_err(|e| LinkError::transfer("receive", e))?,
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
            };
            // Messages already on the wire when credit was withdrawn
            // still arrive.
            credit = credit.saturating_sub(1);
            stats.received.fetch_add(1, Ordering::Relaxed);
            stats
                .last_message_ms
                .store(sagaflow_activities::clock::now_ms(), Ordering::Relaxed);
            let (info, message) = delivery.into_parts();
            let message_id = message::message_id(&message);
            let parsed = match body_bytes(&message.body) {
                Some(bytes) => Order::from_message(&bytes, message_id.as_deref(), max_bytes),
                None => Err(Rejection::new(
                    "UnsupportedBody",
                    "the body is an AMQP list or number; send the order as JSON in a data section or string value",
                )),
            };
            match parsed {
                Ok(mut order) => {
                    // The producer's trace, as W3C or the Azure SDKs send it.
                    if order.traceparent.is_none() {
                        order.traceparent = ["traceparent", "Diagnostic-Id"]
                            .iter()
                            .filter_map(|key| message::app_property(&message, key))
                            .find(|t| sagaflow_activities::trace::is_valid(t));
                    }
                    stats.in_flight.fetch_add(1, Ordering::Relaxed);
                    let (engine, def, disposer, stats) =
                        (engine.clone(), def.clone(), disposer.clone(), stats.clone());
                    tokio::spawn(async move {
                        let input = serde_json::to_value(&order).expect("orders serialize");
                        let id = order.order_id.clone();
                        let settled = match engine.start(id.clone(), def, input).await {
                            Ok(outcome) => {
                                let counter = match outcome {
                                    StartOutcome::Started => &stats.started,
                                    StartOutcome::Duplicate => {
                                        note_duplicate(&engine, &order, &stats).await;
                                        &stats.duplicates
                                    }
                                };
                                counter.fetch_add(1, Ordering::Relaxed);
                                on_link("accepting", async {
                                    disposer
                                        .accept(info)
                                        .await
                                        .map_err(|e| LinkError::transfer("accepting", e))
                                })
                                .await
                            }
                            Err(e) => {
                                tracing::warn!(order = id, error = %e, "saga start failed; the message is released and will be delivered again");
                                stats.abandoned.fetch_add(1, Ordering::Relaxed);
                                on_link("releasing", async {
                                    disposer
                                        .release(info)
                                        .await
                                        .map_err(|e| LinkError::transfer("releasing", e))
                                })
                                .await
                            }
                        };
                        if let Err(e) = settled {
                            // The link is gone: the broker redelivers it,
                            // and the redelivery is a harmless duplicate.
                            tracing::debug!(order = id, error = %e, "settling failed; the message will be delivered again");
                        }
                        stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                Err(rejection) => {
                    tracing::warn!(message = message_id.as_deref().unwrap_or("-"), reason = rejection.reason, description = %rejection.description, "malformed order dead-lettered");
                    on_link(
                        "dead-lettering",
                        dead.dead_letter(&receiver, info, message, &rejection),
                    )
                    .await?;
                    stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
