//! Reading: the engine's sagas and what the stock store, the payment
//! provider and the order store hold, gathered into [`Books`] for
//! [`super::drift::drifts`].
//!
//! The stores are read whole (an operator's check, not the checkout
//! path); the provider is searched once per order id, a few at a time.
//! The reads are not one instant: a saga that moves while they run may
//! look inconsistent, which is why live sagas are never judged and why a
//! repair asks the engine again first ([`super::repair`]).

use super::drift::{Books, Effects, Outcome, SagaFacts};
use crate::config::Config;
use crate::engine::view::SagaRow;
use futures::{StreamExt, TryStreamExt};
use sagaflow_activities::orders::Orders;
use sagaflow_activities::payment::http::PaymentClient;
use sagaflow_activities::stock::Stock;
use std::collections::BTreeSet;

/// How many provider searches run at once (each retried while it fails
/// retryably: [`super::patiently`]).
const SEARCHES_AT_ONCE: usize = 16;

/// Why the books could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BooksError {
    /// The stock store did not answer.
    #[error("cannot list the stock reservations: {0}")]
    Stock(#[from] sagaflow_activities::stock::StockError),
    /// The order store did not answer.
    #[error("cannot list the order documents: {0}")]
    Orders(#[from] sagaflow_activities::orders::OrdersError),
    /// A provider search failed.
    #[error("cannot search the payment provider for order {order}: {reason}")]
    Payment {
        /// The order searched for.
        order: String,
        /// What failed.
        reason: String,
    },
}

/// The engine's row for a saga, as reconcile judges it.
pub fn facts(row: &SagaRow) -> SagaFacts {
    let outcome = match row.status.as_str() {
        "completed" => Outcome::Completed,
        "compensated" => Outcome::Compensated,
        // Visibility still says live, but the workflow has closed
        // (terminated by hand, or timed out): nothing more runs for it.
        _ if row.ended_ms.is_some() => Outcome::Closed,
        _ => Outcome::Live,
    };
    SagaFacts {
        saga: row.saga.clone(),
        outcome,
        ended_ms: row.ended_ms,
    }
}

/// What a completed saga of each configured name leaves behind.
pub fn effects(config: &Config) -> std::collections::BTreeMap<String, Effects> {
    config
        .sagas
        .iter()
        .map(|(name, def)| {
            (
                name.clone(),
                Effects::of(def.steps.iter().map(|s| s.action.as_str())),
            )
        })
        .collect()
}

/// Reads the stores around `rows` (every saga the engine knows):
/// reservations, order documents, and the provider's intents of every order
/// id any of them mentions.
pub async fn read(
    config: &Config,
    rows: &[SagaRow],
    stock: &Stock,
    orders: &Orders,
    payment: &PaymentClient,
) -> Result<Books, BooksError> {
    let mut books = Books {
        sagas: rows.iter().map(|r| (r.id.clone(), facts(r))).collect(),
        lines: stock.reservations().await?,
        orders: orders.list().await?,
        effects: effects(config),
        ..Books::default()
    };
    let mut ids: BTreeSet<String> = BTreeSet::new();
    for row in rows {
        // A refund saga has no intent of its own: its sale's are searched.
        if !row.id.ends_with(crate::engine::command::REFUND_SUFFIX) {
            ids.insert(row.id.clone());
        }
    }
    ids.extend(books.lines.iter().map(|l| l.reservation.clone()));
    ids.extend(books.orders.iter().map(|o| o.id.clone()));
    books.intents = futures::stream::iter(ids)
        .map(|id| async move {
            match super::patiently(|| payment.intents_of_order(&id)).await {
                Ok(intents) => Ok((id, intents)),
                Err(e) => Err(BooksError::Payment {
                    order: id,
                    reason: e.to_string(),
                }),
            }
        })
        .buffer_unordered(SEARCHES_AT_ONCE)
        .try_filter(|(_, intents)| futures::future::ready(!intents.is_empty()))
        .try_collect()
        .await?;
    Ok(books)
}
