//! Publishing orders to the queue (`sagaflow send`, tests, benchmarks).

use super::endpoint::Endpoint;
use super::error::LinkError;
use super::message::order_message;
use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::Sender;
use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

/// Sends at most this many messages ahead of their acknowledgements.
const WINDOW: usize = 512;

/// How long the broker may take to attach the link, take a message or
/// settle one before `send` gives up: a broker that blocks publishers
/// (a RabbitMQ memory or disk alarm, a throttled Service Bus namespace)
/// otherwise holds the command forever without a word.
const STALL: Duration = Duration::from_secs(30);

/// `fut`, or [`LinkError::Stalled`] once [`STALL`] has passed.
async fn within<T>(
    what: &'static str,
    fut: impl Future<Output = Result<T, LinkError>>,
) -> Result<T, LinkError> {
    super::error::within(STALL, fut, || LinkError::Stalled {
        what,
        waited_secs: STALL.as_secs(),
    })
    .await
}

/// One message to send: its id and body.
pub struct Outgoing {
    /// Message id (the order id for orders, so Service Bus duplicate
    /// detection and our saga ids agree).
    pub id: String,
    /// JSON body.
    pub body: Vec<u8>,
    /// String application properties.
    pub properties: Vec<(String, String)>,
}

/// Sends `messages` to `address`, pipelined, and returns once the broker
/// has accepted every one. `progress` is called with the count accepted
/// so far, now and then.
pub async fn send_all(
    endpoint: &Endpoint,
    address: &str,
    messages: Vec<Outgoing>,
    mut progress: impl FnMut(usize),
) -> Result<usize, LinkError> {
    let mut link = endpoint
        .connect(&format!("sagaflow-send-{}", std::process::id()))
        .await?;
    let result = async {
        let attach = async {
            Sender::attach(&mut link.session, "sagaflow-send", address.to_owned())
                .await
                .map_err(|e| LinkError::Attach {
                    what: "send to",
                    address: address.to_owned(),
                    detail: e.to_string(),
                    hint: "; check the queue exists",
                })
        };
        let mut sender = within("attaching the sender", attach).await?;
        let total = messages.len();
        let mut pending = VecDeque::with_capacity(WINDOW);
        let mut accepted = 0usize;
        for m in messages {
            if pending.len() >= WINDOW {
                within(
                    "waiting for the broker to accept a message",
                    check(pending.pop_front().expect("window is full")),
                )
                .await?;
                accepted += 1;
                if accepted.is_multiple_of(1000) {
                    progress(accepted);
                }
            }
            let send = async {
                sender
                    .send_batchable(order_message(&m.id, m.body, &m.properties))
                    .await
                    .map_err(|e| LinkError::transfer(format!("sending {}", m.id), e))
            };
            let fut = within("sending a message (no link credit)", send).await?;
            pending.push_back(fut);
        }
        for fut in pending {
            within("waiting for the broker to accept a message", check(fut)).await?;
            accepted += 1;
        }
        progress(accepted);
        let _ = sender.close().await;
        debug_assert_eq!(accepted, total);
        Ok(accepted)
    }
    .await;
    link.close().await;
    result
}

async fn check(
    fut: fe2o3_amqp::link::delivery::DeliveryFut<Result<Outcome, fe2o3_amqp::link::SendError>>,
) -> Result<(), LinkError> {
    match fut.await {
        Ok(Outcome::Accepted(_)) => Ok(()),
        Ok(other) => Err(LinkError::Refused {
            by: "the broker",
            outcome: format!("{other:?}"),
        }),
        Err(e) => Err(LinkError::transfer("sending", e)),
    }
}
