//! Publishing orders to the queue (`sagaflow send`, tests, benchmarks).

use super::endpoint::Endpoint;
use super::message::order_message;
use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::Sender;
use std::collections::VecDeque;

/// Sends at most this many messages ahead of their acknowledgements.
const WINDOW: usize = 512;

/// One message to send: its id and body.
pub struct Outgoing {
    /// Message id (the order id for orders, so Service Bus duplicate
    /// detection and our saga ids agree).
    pub id: String,
    /// JSON body.
    pub body: Vec<u8>,
}

/// Sends `messages` to `address`, pipelined, and returns once the broker
/// has accepted every one. `progress` is called with the count accepted
/// so far, now and then.
pub async fn send_all(
    endpoint: &Endpoint,
    address: &str,
    messages: Vec<Outgoing>,
    mut progress: impl FnMut(usize),
) -> Result<usize, String> {
    let mut link = endpoint
        .connect(&format!("sagaflow-send-{}", std::process::id()))
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let mut sender = Sender::attach(&mut link.session, "sagaflow-send", address.to_owned())
            .await
            .map_err(|e| format!("cannot send to {address}: {e}; check the queue exists"))?;
        let total = messages.len();
        let mut pending = VecDeque::with_capacity(WINDOW);
        let mut accepted = 0usize;
        for m in messages {
            if pending.len() >= WINDOW {
                check(pending.pop_front().expect("window is full")).await?;
                accepted += 1;
                if accepted.is_multiple_of(1000) {
                    progress(accepted);
                }
            }
            let fut = sender
                .send_batchable(order_message(&m.id, m.body))
                .await
                .map_err(|e| format!("sending {} failed: {e}", m.id))?;
            pending.push_back(fut);
        }
        for fut in pending {
            check(fut).await?;
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
) -> Result<(), String> {
    match fut.await {
        Ok(Outcome::Accepted(_)) => Ok(()),
        Ok(other) => Err(format!("the broker refused a message ({other:?})")),
        Err(e) => Err(format!("sending failed: {e}")),
    }
}
