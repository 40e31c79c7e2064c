//! The forward steps: `payment.authorize` (and finding an authorization
//! whose answer was lost) and `payment.capture`.

use super::answers::*;
use super::{PaymentClient, LOST_SEARCH_EVERY_MS, LOST_SEARCH_MARGIN_MS};
use crate::clock::now_ms;
use sagaflow_workflows::{ActivityCall, ActivityError};
use serde_json::Value;
use std::time::Duration;

impl PaymentClient {
    /// `payment.authorize`: creates a confirmed, manually captured intent
    /// for the order. Output:
    /// `{"kind":"authorization","payment_intent":"pi_..","amount":N,"status":"requires_capture"}`.
    /// A decline is the business error `card_declined`.
    pub async fn authorize(&self, call: &ActivityCall) -> Result<Value, ActivityError> {
        let order = order(call)?;
        let key = call.idempotency_key.as_str();
        let currency = if order.currency.is_empty() {
            self.currency.clone()
        } else {
            order.currency.to_ascii_lowercase()
        };
        let amount = order.amount.to_string();
        let form = [
            ("amount", amount.as_str()),
            ("currency", currency.as_str()),
            ("capture_method", "manual"),
            ("confirm", "true"),
            ("payment_method", order.payment_method.as_str()),
            ("metadata[order_id]", order.order_id.as_str()),
            ("metadata[idempotency_key]", key),
        ];
        let answer = self.post("/v1/payment_intents", key, &form).await?;
        if answer.is_success() {
            return authorization_output(&answer.body);
        }
        let error = answer.error("authorize");
        if !answer.needs_reconcile() {
            return Err(error);
        }
        tracing::debug!(
            key,
            status = answer.status,
            "authorize: reconciling by search"
        );
        match self.search_one("idempotency_key", key).await {
            Ok(Some(intent)) => authorization_output(&intent),
            Ok(None) => Err(error),
            Err(during) => Err(reconcile_failed(error, during)),
        }
    }

    /// The intent an authorize whose answer was lost may have created,
    /// found by searching for its idempotency key. The provider's search
    /// trails its writes (Stripe: under a minute), so "none" is the answer
    /// only once `search_lag_ms` has passed since the outcome became
    /// unknown (`unknown_since_ms` in the input; without it, from now).
    /// Until then it searches again every second, within this attempt's
    /// time limit, and then fails as retryable so the next attempt goes on
    /// looking: a hold it cannot see yet is never left on the card.
    pub(super) async fn find_lost_authorization(
        &self,
        call: &ActivityCall,
    ) -> Result<Option<String>, ActivityError> {
        let authorize_key = format!("{}/{}", saga_id(call)?, call.step);
        let started = now_ms();
        let unknown_since = call
            .input
            .get("unknown_since_ms")
            .and_then(Value::as_u64)
            .unwrap_or(started);
        let visible_by = unknown_since.saturating_add(self.search_lag_ms);
        // Leave room for the last search and the cancel in this attempt.
        let attempt_ends = started + call.timeout_ms - call.timeout_ms.min(LOST_SEARCH_MARGIN_MS);
        loop {
            if let Some(intent) = self.search_one("idempotency_key", &authorize_key).await? {
                return Ok(Some(intent["id"].as_str().unwrap_or_default().to_owned()));
            }
            let now = now_ms();
            if now >= visible_by {
                return Ok(None);
            }
            let next = now + LOST_SEARCH_EVERY_MS.min(visible_by - now);
            if next >= attempt_ends {
                return Err(ActivityError::retryable(
                    "authorization_not_visible_yet",
                    format!(
                        "no authorization found for {authorize_key} yet, but the provider's search may trail its writes by up to {} ms ([payment] search_lag); the next attempt looks again ({} ms more) before concluding there is nothing to void",
                        self.search_lag_ms,
                        visible_by - now
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(next - now)).await;
        }
    }

    /// `payment.capture`: captures the authorized amount of the intent an
    /// earlier step authorized. Capturing an intent that is already
    /// captured succeeds with the same output:
    /// `{"kind":"capture","payment_intent":..,"amount_received":N,"status":"succeeded"}`.
    pub async fn capture(&self, call: &ActivityCall) -> Result<Value, ActivityError> {
        let authorization = find_output(call, "authorization", None).ok_or_else(|| {
            ActivityError::business(
                "missing_authorization",
                "payment.capture found no authorization among earlier outputs; \
                 put a payment.authorize step before it in sagas.toml",
            )
        })?;
        let pi = intent_id(authorization);
        check_id("capture", pi)?;
        let amount = authorization.get("amount").and_then(Value::as_u64);
        let key = call.idempotency_key.as_str();
        let amount = amount.map(|a| a.to_string());
        let form: Vec<(&str, &str)> = amount
            .iter()
            .map(|a| ("amount_to_capture", a.as_str()))
            .collect();
        let path = format!("/v1/payment_intents/{pi}/capture");
        let answer = self.post(&path, key, &form).await?;
        if answer.is_success() {
            return capture_output(&answer.body);
        }
        let error = answer.error("capture");
        let reconcile = answer.needs_reconcile();
        if !reconcile && !answer.is_unexpected_state() {
            return Err(error);
        }
        let intent = match self.get_intent(pi).await {
            Ok(intent) => intent,
            Err(during) if reconcile => return Err(reconcile_failed(error, during)),
            Err(during) => return Err(during),
        };
        match intent["status"].as_str().unwrap_or("unknown") {
            "succeeded" => capture_output(&intent),
            "requires_capture" if reconcile => Err(error),
            other => Err(ActivityError::business(
                "payment_intent_unexpected_state",
                format!("cannot capture {pi}: it is {other}, not requires_capture"),
            )),
        }
    }
}
