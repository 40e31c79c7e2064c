//! The compensations: `payment.void` of a hold (a refund when it was
//! captured meanwhile) and `payment.refund` of a completed sale.

use super::answers::*;
use super::PaymentClient;
use sagaflow_workflows::{ActivityCall, ActivityError};
use serde_json::{json, Value};

impl PaymentClient {
    /// `payment.void`, the compensation of `payment.authorize`: cancels the
    /// authorization. Finds it in the outputs, or, when the authorize
    /// step's outcome is unknown, by searching for its idempotency key (see
    /// [`PaymentClient::find_lost_authorization`]); none means nothing to
    /// void (success). An intent already captured is refunded instead
    /// (status `"refunded"`). Output:
    /// `{"kind":"void","payment_intent":..,"status":"canceled"}`.
    pub async fn void(&self, call: &ActivityCall) -> Result<Value, ActivityError> {
        let pi = match find_output(call, "authorization", Some(&call.step)) {
            Some(authorization) => intent_id(authorization).to_owned(),
            None => match self.find_lost_authorization(call).await? {
                Some(pi) => pi,
                None => {
                    return Ok(json!({
                        "kind": "void",
                        "payment_intent": null,
                        "status": "nothing_to_void",
                    }))
                }
            },
        };
        check_id("void", &pi)?;
        let key = call.idempotency_key.as_str();
        let path = format!("/v1/payment_intents/{pi}/cancel");
        let answer = self
            .post(&path, key, &[("cancellation_reason", "abandoned")])
            .await?;
        if answer.is_success() {
            return match answer.body["status"].as_str() {
                Some("canceled") => Ok(void_output(&pi, "canceled")),
                _ => Err(bad_response("void", &answer.body)),
            };
        }
        let error = answer.error("void");
        let reconcile = answer.needs_reconcile();
        if !reconcile && !answer.is_unexpected_state() {
            return Err(error);
        }
        let intent = match self.get_intent(&pi).await {
            Ok(intent) => intent,
            Err(during) if reconcile => return Err(reconcile_failed(error, during)),
            Err(during) => return Err(during),
        };
        match intent["status"].as_str().unwrap_or("unknown") {
            "canceled" => Ok(void_output(&pi, "canceled")),
            "succeeded" => {
                let refund_key = format!("{key}/refund");
                match self.refund_intent(&pi, &refund_key).await? {
                    RefundResult::Refunded(refund) => Ok(json!({
                        "kind": "void",
                        "payment_intent": pi,
                        "status": "refunded",
                        "refund": refund["id"],
                    })),
                    RefundResult::AlreadyRefunded => Ok(void_output(&pi, "refunded")),
                    RefundResult::NotCaptured(status) => Err(ActivityError::retryable(
                        "payment_intent_unexpected_state",
                        format!(
                            "void: {pi} changed from succeeded to {status} while voiding; retry"
                        ),
                    )),
                }
            }
            _ if reconcile => Err(error),
            other => Err(ActivityError::business(
                "payment_intent_unexpected_state",
                format!("cannot void {pi}: it is {other}"),
            )),
        }
    }

    /// `payment.refund`: refunds what was captured of the order's intent
    /// (found in the outputs, a capture first, else the one a refund saga's
    /// order names, else by the order id). An
    /// intent never captured, or none at all, is nothing to refund
    /// (success). Output:
    /// `{"kind":"refund","payment_intent":..,"refund":"re_..","amount":N,"status":"refunded"}`.
    pub async fn refund(&self, call: &ActivityCall) -> Result<Value, ActivityError> {
        // A refund saga names the sale it undoes in its order.
        let of_refund = order(call)
            .ok()
            .and_then(|o| o.refund)
            .and_then(|r| r.payment_intent);
        let found = find_output(call, "capture", None)
            .or_else(|| find_output(call, "authorization", None))
            .map(|output| intent_id(output).to_owned())
            .or(of_refund);
        let pi = match found {
            Some(pi) => pi,
            None => {
                let order = order(call)?;
                let intents = self.search("order_id", &order.order_id).await?;
                let captured = intents
                    .iter()
                    .find(|i| i["status"] == "succeeded")
                    .and_then(|i| i["id"].as_str());
                match captured {
                    Some(pi) => pi.to_owned(),
                    None => {
                        return Ok(json!({
                            "kind": "refund",
                            "payment_intent": null,
                            "status": "nothing_to_refund",
                        }))
                    }
                }
            }
        };
        check_id("refund", &pi)?;
        match self.refund_intent(&pi, &call.idempotency_key).await? {
            RefundResult::Refunded(refund) => Ok(json!({
                "kind": "refund",
                "payment_intent": pi,
                "refund": refund["id"],
                "amount": refund["amount"],
                "status": "refunded",
            })),
            RefundResult::AlreadyRefunded => Ok(json!({
                "kind": "refund",
                "payment_intent": pi,
                "status": "already_refunded",
            })),
            RefundResult::NotCaptured(status) => Ok(json!({
                "kind": "refund",
                "payment_intent": pi,
                "status": "nothing_to_refund",
                "intent_status": status,
            })),
        }
    }

    /// POSTs a full refund of `pi` under `key` (also stored in the refund's
    /// metadata, so a lost answer can be found again).
    pub(super) async fn refund_intent(
        &self,
        pi: &str,
        key: &str,
    ) -> Result<RefundResult, ActivityError> {
        let form = [("payment_intent", pi), ("metadata[idempotency_key]", key)];
        let answer = self.post("/v1/refunds", key, &form).await?;
        if answer.is_success() {
            return match answer.body["id"].as_str() {
                Some(_) => Ok(RefundResult::Refunded(answer.body)),
                None => Err(bad_response("refund", &answer.body)),
            };
        }
        if answer.status == 400 && answer.error_code() == Some("charge_already_refunded") {
            return Ok(RefundResult::AlreadyRefunded);
        }
        let error = answer.error("refund");
        if answer.is_unexpected_state() {
            let intent = self.get_intent(pi).await?;
            return match intent["status"].as_str().unwrap_or("unknown") {
                "succeeded" => Err(error),
                other => Ok(RefundResult::NotCaptured(other.to_owned())),
            };
        }
        if !answer.needs_reconcile() {
            return Err(error);
        }
        let listed = self
            .get(
                &format!("/v1/refunds?payment_intent={pi}&limit=100"),
                "refund",
            )
            .await
            .and_then(|answer| {
                if answer.is_success() {
                    Ok(answer.body)
                } else {
                    Err(answer.error("refund: list refunds"))
                }
            });
        let list = match listed {
            Ok(list) => list,
            Err(during) => return Err(reconcile_failed(error, during)),
        };
        let mine = list["data"].as_array().and_then(|refunds| {
            refunds
                .iter()
                .find(|r| r["metadata"]["idempotency_key"].as_str() == Some(key))
        });
        match mine {
            Some(refund) => Ok(RefundResult::Refunded(refund.clone())),
            None => Err(error),
        }
    }
}
