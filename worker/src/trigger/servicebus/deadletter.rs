//! Dead letters on Service Bus and on a plain AMQP 1.0 broker.
//!
//! - Service Bus: the message is *rejected* with the condition
//!   `com.microsoft:dead-letter` and `DeadLetterReason` /
//!   `DeadLetterErrorDescription` in the error's info; the broker moves it
//!   to `QUEUE/$deadletterqueue` with those as application properties.
//! - A plain broker (RabbitMQ) drops a rejection's description, so the
//!   message is *forwarded*: a copy carrying the same properties is sent to
//!   the dead-letter queue, and only once the broker has accepted the copy
//!   is the original accepted. A crash in between redelivers the original
//!   and dead-letters it again: a duplicate dead letter, never a lost one.
//!
//! Operators read them with [`list`] and put one back with [`resubmit`].

use super::endpoint::{Endpoint, Flavour, Link};
use super::error::LinkError;
use super::message::{self, AmqpMessage};
use crate::config::ServiceBusSettings;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::types::definitions::{Error as AmqpError, ErrorCondition, Fields};
use fe2o3_amqp::types::messaging::{Body, Outcome};
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Receiver, Sender};
use sagaflow_activities::Rejection;
use serde::Serialize;
use std::time::Duration;

/// Dead-letters malformed messages the way the endpoint supports.
pub enum DeadLetterer {
    /// Service Bus: reject with the reason.
    Reject,
    /// Broker: forward a copy, then accept.
    Forward(Box<Sender>),
}

/// What to do when the dead-letter queue is missing.
const CREATE_DLQ: &str = "; create it (scripts/services.sh queue NAME declares NAME and NAME.dlq)";

impl DeadLetterer {
    /// Attaches what dead-lettering needs on `link`.
    pub async fn attach(
        link: &mut Link,
        name: &str,
        endpoint: &Endpoint,
        settings: &ServiceBusSettings,
    ) -> Result<DeadLetterer, LinkError> {
        match endpoint.flavour {
            Flavour::ServiceBus => Ok(DeadLetterer::Reject),
            Flavour::Broker => {
                let address =
                    endpoint.dead_letter_address(&settings.queue, &settings.dead_letter_queue);
                let sender =
                    Sender::attach(&mut link.session, format!("{name}-dlq"), address.clone())
                        .await
                        .map_err(|e| LinkError::Attach {
                            what: "send to the dead-letter queue",
                            address: address.clone(),
                            detail: e.to_string(),
                            hint: CREATE_DLQ,
                        })?;
                Ok(DeadLetterer::Forward(Box::new(sender)))
            }
        }
    }

    /// Dead-letters one received message. `Err` means the link broke (the
    /// message returns to the queue and is judged again).
    pub async fn dead_letter(
        &mut self,
        receiver: &Receiver,
        info: DeliveryInfo,
        message: AmqpMessage,
        rejection: &Rejection,
    ) -> Result<(), LinkError> {
        match self {
            DeadLetterer::Reject => {
                let mut info_fields = Fields::default();
                info_fields.insert(
                    Symbol::from(message::REASON),
                    Value::String(rejection.reason.to_owned()),
                );
                info_fields.insert(
                    Symbol::from(message::DESCRIPTION),
                    Value::String(rejection.description.clone()),
                );
                let error = AmqpError::new(
                    ErrorCondition::Custom(Symbol::from("com.microsoft:dead-letter")),
                    Some(rejection.description.clone()),
                    Some(info_fields),
                );
                receiver
                    .reject(info, error)
                    .await
                    .map_err(|e| LinkError::transfer("dead-lettering", e))
            }
            DeadLetterer::Forward(sender) => {
                let copy = message::with_dead_letter(
                    message,
                    Some((
                        rejection.reason,
                        &rejection.description,
                        sagaflow_activities::clock::now_ms(),
                    )),
                );
                match sender.send(copy).await {
                    Ok(Outcome::Accepted(_)) => receiver
                        .accept(info)
                        .await
                        .map_err(|e| LinkError::transfer("completing a dead-lettered message", e)),
                    Ok(other) => {
                        let _ = receiver.release(info).await;
                        Err(LinkError::Refused {
                            by: "the dead-letter queue",
                            outcome: format!("{other:?}"),
                        })
                    }
                    Err(e) => Err(LinkError::transfer("sending to the dead-letter queue", e)),
                }
            }
        }
    }
}

/// One dead-lettered message, as `sagaflow dlq list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The message id (what `dlq resubmit` takes).
    pub id: String,
    /// Short reason (`InvalidJson`, `InvalidOrder`, `MessageTooLarge`, or
    /// the broker's own, e.g. `delivery_limit`).
    pub reason: String,
    /// What is wrong.
    pub description: String,
    /// When it was dead-lettered, ms since the epoch (0 when unknown).
    pub dead_lettered_at_ms: u64,
    /// The body (lossy UTF-8).
    pub body: String,
}

fn describe(message: &AmqpMessage) -> DeadLetter {
    let reason = message::app_property(message, message::REASON)
        .or_else(|| message::broker_death_reason(message))
        .unwrap_or_else(|| "unknown".into());
    DeadLetter {
        id: message::message_id(message).unwrap_or_default(),
        reason,
        description: message::app_property(message, message::DESCRIPTION).unwrap_or_default(),
        dead_lettered_at_ms: message::app_property_u64(message, message::DEAD_LETTERED_AT)
            .unwrap_or(0),
        body: message::body_bytes(&message.body)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|| format!("{:?}", message.body)),
    }
}

/// Locks every dead letter (up to `limit`) on a receiver. They stay locked
/// until settled or the link closes, so each is seen once.
async fn lock_all(
    link: &mut Link,
    endpoint: &Endpoint,
    settings: &ServiceBusSettings,
    limit: usize,
) -> Result<(Receiver, Vec<(DeliveryInfo, AmqpMessage)>), LinkError> {
    let address = endpoint.dead_letter_address(&settings.queue, &settings.dead_letter_queue);
    // Settled only after the receiving stops, from this task: automatic
    // credit is safe here.
    let mut receiver = link
        .peek_lock_receiver(
            format!("sagaflow-dlq-{}", std::process::id()),
            &address,
            CreditMode::Auto(limit.clamp(1, 1000) as u32),
        )
        .await?;
    let mut out = Vec::new();
    // The first delivery may take a round trip or two; after that, a
    // quiet gap means the queue is drained.
    let mut wait = Duration::from_secs(2);
    while out.len() < limit {
        match tokio::time::timeout(wait, receiver.recv::<Body<Value>>()).await {
            Ok(Ok(d)) => {
                let (info, message) = d.into_parts();
                out.push((info, message));
                wait = Duration::from_millis(500);
            }
            Ok(Err(e)) => return Err(LinkError::transfer("reading the dead-letter queue", e)),
            Err(_) => break,
        }
    }
    Ok((receiver, out))
}

/// Reads up to `limit` dead letters without removing them.
pub async fn list(
    endpoint: &Endpoint,
    settings: &ServiceBusSettings,
    limit: usize,
) -> Result<Vec<DeadLetter>, LinkError> {
    let mut link = endpoint.connect("sagaflow-dlq").await?;
    let result = async {
        let (receiver, locked) = lock_all(&mut link, endpoint, settings, limit).await?;
        let listed = locked.iter().map(|(_, m)| describe(m)).collect();
        let infos: Vec<DeliveryInfo> = locked.into_iter().map(|(i, _)| i).collect();
        if !infos.is_empty() {
            receiver
                .release_all(infos)
                .await
                .map_err(|e| LinkError::transfer("releasing dead letters", e))?;
        }
        let _ = receiver.close().await;
        Ok(listed)
    }
    .await;
    link.close().await;
    result
}

/// Puts the dead letter with message id `id` back on the orders queue,
/// with `body` in place of its own when given, and removes it from the
/// dead-letter queue once the queue has accepted the copy.
pub async fn resubmit(
    endpoint: &Endpoint,
    settings: &ServiceBusSettings,
    id: &str,
    body: Option<Vec<u8>>,
) -> Result<DeadLetter, LinkError> {
    let mut link = endpoint.connect("sagaflow-dlq").await?;
    let result = async {
        let (receiver, locked) = lock_all(&mut link, endpoint, settings, 10_000).await?;
        let mut found = None;
        let mut others = Vec::new();
        for (info, m) in locked {
            if found.is_none() && message::message_id(&m).as_deref() == Some(id) {
                found = Some((info, m));
            } else {
                others.push(info);
            }
        }
        if !others.is_empty() {
            let _ = receiver.release_all(others).await;
        }
        let Some((info, m)) = found else {
            let _ = receiver.close().await;
            return Err(LinkError::NoSuchDeadLetter { id: id.to_owned() });
        };
        let shown = describe(&m);
        let mut copy = message::with_dead_letter(m, None);
        if let Some(body) = body {
            copy.body = Body::Data(vec![fe2o3_amqp::types::messaging::Data(body.into())].into());
        }
        let address = endpoint.queue_address(&settings.queue);
        let mut sender = Sender::attach(&mut link.session, "sagaflow-resubmit", address.clone())
            .await
            .map_err(|e| LinkError::Attach {
                what: "send to",
                address: address.clone(),
                detail: e.to_string(),
                hint: "",
            })?;
        let outcome = sender.send(copy).await;
        let _ = sender.close().await;
        match outcome {
            Ok(Outcome::Accepted(_)) => {
                receiver
                    .accept(info)
                    .await
                    .map_err(|e| LinkError::DeadLetterKept {
                        detail: e.to_string(),
                    })?;
            }
            Ok(other) => {
                let _ = receiver.release(info).await;
                return Err(LinkError::NotResubmitted {
                    why: format!("the queue refused the message ({other:?})"),
                });
            }
            Err(e) => {
                let _ = receiver.release(info).await;
                return Err(LinkError::NotResubmitted {
                    why: format!("sending failed ({e})"),
                });
            }
        }
        let _ = receiver.close().await;
        Ok(shown)
    }
    .await;
    link.close().await;
    result
}
