//! What can go wrong once the Service Bus endpoint is known: connecting,
//! attaching links, moving messages. The trigger treats each as a lost
//! link (unsettled messages return to the queue; it reconnects with
//! backoff); the CLI commands (`send`, `dlq`) print it and stop.

use super::endpoint::EndpointError;

/// A failure on the AMQP connection or one of its links.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The connection could not be opened.
    #[error(transparent)]
    Connect(#[from] EndpointError),
    /// A link could not be attached: the queue may not exist, or the
    /// credentials lack the right.
    #[error("cannot {what} {address}: {detail}{hint}")]
    Attach {
        /// "receive from", "send to", ...
        what: &'static str,
        /// The queue's address.
        address: String,
        /// What the broker said.
        detail: String,
        /// What to do, starting with "; " (or empty).
        hint: &'static str,
    },
    /// An operation on an attached link failed; the link is gone.
    #[error("{what} failed: {detail}")]
    Transfer {
        /// What was being done ("receive", "granting credit", ...).
        what: String,
        /// What fe2o3 or the broker said.
        detail: String,
    },
    /// The peer did not accept a message it was sent.
    #[error("{by} refused the message ({outcome})")]
    Refused {
        /// "the broker", "the dead-letter queue".
        by: &'static str,
        /// The outcome it answered.
        outcome: String,
    },
    /// The broker answered nothing for a while: it may be blocking
    /// publishers. Messages it had not accepted were not sent.
    #[error("the broker answered nothing for {waited_secs} s while {what}: a RabbitMQ memory or disk alarm blocks publishers (`rabbitmqctl status` shows alarms), a Service Bus namespace over its quota throttles them; messages it had not accepted were not sent, and sending again is safe (a saga starts once per order id)")]
    Stalled {
        /// What `send` was waiting for.
        what: &'static str,
        /// How long it waited, in seconds.
        waited_secs: u64,
    },
    /// `dlq resubmit`: no dead letter has this id.
    #[error("no dead-lettered message has id {id}; `sagaflow dlq list` shows the ids")]
    NoSuchDeadLetter {
        /// The id asked for.
        id: String,
    },
    /// `dlq resubmit`: the copy was not queued; the dead letter stays.
    #[error("{why}; it stays dead-lettered")]
    NotResubmitted {
        /// What happened to the copy.
        why: String,
    },
    /// `dlq resubmit`: the copy was queued, but the dead letter could not
    /// be removed.
    #[error("the message was queued again, but removing it from the dead-letter queue failed ({detail}); it may show up there once more")]
    DeadLetterKept {
        /// What the broker said.
        detail: String,
    },
}

impl LinkError {
    /// A failed operation on an open link.
    pub fn transfer(what: impl Into<String>, detail: impl std::fmt::Display) -> LinkError {
        LinkError::Transfer {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// `fut`, or the error `timed_out` makes once `limit` has passed: the
/// one time limit on an operation the peer must answer (fe2o3 does not
/// always notice a connection the broker dropped, and then waits for good).
pub(super) async fn within<T>(
    limit: std::time::Duration,
    fut: impl std::future::Future<Output = Result<T, LinkError>>,
    timed_out: impl FnOnce() -> LinkError,
) -> Result<T, LinkError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}
