//! What the provider holds for an order, for `sagaflow reconcile`: its
//! intents with what was captured and refunded, and the void of a hold
//! that no saga owns. Not the checkout path: each call searches or lists.

use super::answers::*;
use super::PaymentClient;
use sagaflow_workflows::ActivityError;
use serde::Serialize;

/// One payment intent as reconcile judges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntentBooks {
    /// `pi_...`.
    pub id: String,
    /// The provider's status: `requires_capture` (a hold on the card),
    /// `succeeded` (captured), `canceled`, `requires_payment_method`
    /// (declined), ...
    pub status: String,
    /// Authorized amount, minor units.
    pub amount: u64,
    /// Captured amount.
    pub amount_received: u64,
    /// Refunded amount (the sum of its refunds).
    pub amount_refunded: u64,
    /// When the provider created it (its `created`, seconds, as ms; 0
    /// when it does not say).
    pub created_ms: u64,
}

impl IntentBooks {
    /// An authorization holding funds on the card, neither captured nor
    /// voided.
    pub fn is_hold(&self) -> bool {
        self.status == "requires_capture"
    }

    /// What the shop keeps of it: captured and not refunded.
    pub fn kept(&self) -> u64 {
        self.amount_received.saturating_sub(self.amount_refunded)
    }
}

impl PaymentClient {
    /// Every intent whose `metadata[order_id]` is `order_id` (the provider's
    /// search, which trails its writes by up to `[payment] search_lag`),
    /// with the refunds of the captured ones.
    pub async fn intents_of_order(
        &self,
        order_id: &str,
    ) -> Result<Vec<IntentBooks>, ActivityError> {
        let mut books = Vec::new();
        for intent in self.search("order_id", order_id).await? {
            let number = |field: &str| intent[field].as_u64().unwrap_or(0);
            let id = intent["id"].as_str().unwrap_or_default().to_owned();
            let amount_received = number("amount_received");
            let amount_refunded = if amount_received > 0 {
                self.refunded(&id).await?
            } else {
                0
            };
            books.push(IntentBooks {
                status: intent["status"].as_str().unwrap_or("unknown").to_owned(),
                amount: number("amount"),
                amount_received,
                amount_refunded,
                created_ms: number("created").saturating_mul(1_000),
                id,
            });
        }
        Ok(books)
    }

    /// Voids the hold `pi` under `idempotency_key`; answers the intent's
    /// status afterwards (`canceled`, or what it had become: a hold
    /// captured meanwhile is left alone and answered `succeeded`).
    pub async fn void_hold(
        &self,
        pi: &str,
        idempotency_key: &str,
    ) -> Result<String, ActivityError> {
        check_id("void", pi)?;
        let path = format!("/v1/payment_intents/{pi}/cancel");
        let answer = self
            .post(
                &path,
                idempotency_key,
                &[("cancellation_reason", "abandoned")],
            )
            .await?;
        if answer.is_success() {
            return Ok(answer.body["status"]
                .as_str()
                .unwrap_or("canceled")
                .to_owned());
        }
        if answer.is_unexpected_state() || answer.needs_reconcile() {
            let intent = self.get_intent(pi).await?;
            return Ok(intent["status"].as_str().unwrap_or("unknown").to_owned());
        }
        Err(answer.error("void"))
    }

    /// The sum of `pi`'s succeeded refunds.
    async fn refunded(&self, pi: &str) -> Result<u64, ActivityError> {
        let answer = self
            .get(
                &format!("/v1/refunds?payment_intent={pi}&limit=100"),
                "refunds",
            )
            .await?;
        if !answer.is_success() {
            return Err(answer.error("list refunds"));
        }
        let refunds = answer.body["data"]
            .as_array()
            .ok_or_else(|| bad_response("list refunds", &answer.body))?;
        Ok(refunds
            .iter()
            .filter(|r| r["status"] == "succeeded")
            .filter_map(|r| r["amount"].as_u64())
            .sum())
    }
}
