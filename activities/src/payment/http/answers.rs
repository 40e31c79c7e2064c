//! What the provider's answers and an activity's input mean: the answer
//! type, the errors each kind of failure becomes, the activity outputs read
//! from a PaymentIntent, and the search query that finds a lost
//! authorization.

use crate::order::Order;
use sagaflow_workflows::{ActivityCall, ActivityError};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// One HTTP answer from the provider.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) should_retry: Option<bool>,
    /// `Retry-After`, in ms (delta-seconds; an HTTP date is not read).
    pub(super) retry_after_ms: Option<u64>,
    /// The JSON body, or `Null` when it was not JSON.
    pub(super) body: Value,
}

impl Answer {
    pub(super) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The provider's error code, or its error type when there is no code.
    pub(super) fn error_code(&self) -> Option<&str> {
        let error = &self.body["error"];
        error["code"].as_str().or_else(|| error["type"].as_str())
    }

    pub(super) fn is_unexpected_state(&self) -> bool {
        self.status == 400 && self.error_code() == Some("payment_intent_unexpected_state")
    }

    /// True when the request may have taken effect although the answer is
    /// an error: read the provider's state before reporting. A 5xx the
    /// provider marks `Stripe-Should-Retry: true` (nothing was applied: a
    /// 503 while it is down) is not read back: the next attempt, under
    /// the same key, is the reconciliation, and a provider in trouble gets
    /// one request per attempt rather than two.
    pub(super) fn needs_reconcile(&self) -> bool {
        (self.status >= 500 && self.should_retry != Some(true))
            || (matches!(self.status, 409 | 429) && self.should_retry == Some(false))
    }

    /// Maps an error answer to an activity error.
    pub(super) fn error(&self, what: &str) -> ActivityError {
        let error = &self.body["error"];
        let message = error["message"].as_str().unwrap_or("no error message");
        let status = self.status;
        match status {
            402 => {
                let code = error["decline_code"]
                    .as_str()
                    .or_else(|| error["code"].as_str())
                    .unwrap_or("unknown");
                ActivityError::business("card_declined", format!("card declined ({code})"))
            }
            401 => ActivityError::business(
                "authentication_error",
                "the payment provider rejected the api key; set the environment variable named by \
                 [payment] api_key_env to a valid secret key",
            ),
            409 | 429 | 500..=599 => ActivityError {
                retry_after_ms: self.retry_after_ms,
                ..ActivityError::retryable(format!("http_{status}"), format!("{what}: {message}"))
            },
            _ if self.should_retry == Some(true) => {
                ActivityError::retryable(format!("http_{status}"), format!("{what}: {message}"))
            }
            _ => {
                let kind = self
                    .error_code()
                    .map_or_else(|| format!("http_{status}"), str::to_owned);
                ActivityError::business(kind, format!("{what}: {message} (HTTP {status})"))
            }
        }
    }
}

/// `Retry-After` as delta-seconds, in ms; `None` when absent or an HTTP
/// date (providers that send one send seconds).
pub(super) fn retry_after_ms(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: u64 = value.trim().parse().ok()?;
    Some(seconds.saturating_mul(1_000))
}

/// A transport failure: nothing usable came back.
pub(super) fn transport_error(what: &str, error: &reqwest::Error) -> ActivityError {
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_builder() {
        ActivityError::business(
            "invalid_request",
            format!("{what}: the request could not be built ({detail}); check the idempotency key and ids are printable ASCII"),
        )
    } else if error.is_timeout() {
        ActivityError::retryable(
            "timeout",
            format!("{what}: no answer within the request timeout ({detail})"),
        )
    } else {
        ActivityError::retryable("network", format!("{what}: {detail}"))
    }
}

/// The original retryable error, noting that reconciling failed too.
pub(super) fn reconcile_failed(error: ActivityError, during: ActivityError) -> ActivityError {
    ActivityError::retryable(
        error.kind,
        format!(
            "{}; reconciling with the provider failed too ({during})",
            error.message
        ),
    )
}

pub(super) fn bad_response(what: &str, body: &Value) -> ActivityError {
    ActivityError::retryable(
        "bad_response",
        format!("{what}: the provider answered 2xx with an unexpected body: {body}"),
    )
}

pub(super) fn bad_input(what: &str, detail: impl std::fmt::Display) -> ActivityError {
    ActivityError::business(
        "invalid_input",
        format!("{what}: the activity input is not {{saga_id, order, outputs}} ({detail})"),
    )
}

/// Stripe ids are `[A-Za-z0-9_]`; anything else must not reach a URL path.
pub(super) fn check_id(what: &str, id: &str) -> Result<(), ActivityError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(())
    } else {
        Err(ActivityError::business(
            "invalid_input",
            format!("{what}: {id:?} is not a payment intent id"),
        ))
    }
}

pub(super) fn saga_id(call: &ActivityCall) -> Result<&str, ActivityError> {
    call.input
        .get("saga_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_input(&call.activity, "saga_id is missing"))
}

pub(super) fn order(call: &ActivityCall) -> Result<Order, ActivityError> {
    let value = call
        .input
        .get("order")
        .ok_or_else(|| bad_input(&call.activity, "order is missing"))?;
    Order::deserialize(value).map_err(|e| bad_input(&call.activity, e))
}

/// The earlier step outputs with `"kind": kind`, `step`'s first when given.
pub(super) fn find_output<'a>(
    call: &'a ActivityCall,
    kind: &str,
    step: Option<&str>,
) -> Option<&'a Map<String, Value>> {
    let outputs = call.input.get("outputs")?.as_object()?;
    let of_kind = |v: &'a Value| {
        v.as_object().filter(|o| {
            o.get("kind").and_then(Value::as_str) == Some(kind)
                && o.get("payment_intent").is_some_and(Value::is_string)
        })
    };
    step.and_then(|s| outputs.get(s))
        .and_then(of_kind)
        .or_else(|| outputs.values().find_map(of_kind))
}

pub(super) fn intent_id(output: &Map<String, Value>) -> &str {
    output
        .get("payment_intent")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// What `payment.authorize` reports for an intent, or the business error it
/// stands for.
pub(super) fn authorization_output(intent: &Value) -> Result<Value, ActivityError> {
    let (Some(id), Some(amount), Some(status)) = (
        intent["id"].as_str(),
        intent["amount"].as_u64(),
        intent["status"].as_str(),
    ) else {
        return Err(bad_response("authorize", intent));
    };
    match status {
        "requires_capture" | "succeeded" => Ok(json!({
            "kind": "authorization",
            "payment_intent": id,
            "amount": amount,
            "status": status,
        })),
        "requires_payment_method" => {
            let error = &intent["last_payment_error"];
            let code = error["decline_code"]
                .as_str()
                .or_else(|| error["code"].as_str())
                .unwrap_or("unknown");
            Err(ActivityError::business(
                "card_declined",
                format!("card declined ({code})"),
            ))
        }
        "canceled" => Err(ActivityError::business(
            "payment_intent_canceled",
            format!("authorization {id} was canceled before this step finished; the order must be paid again"),
        )),
        other => Err(ActivityError::business(
            "authorization_incomplete",
            format!("authorization {id} is {other}; this adapter supports only payment methods that need no customer action"),
        )),
    }
}

pub(super) fn capture_output(intent: &Value) -> Result<Value, ActivityError> {
    match (
        intent["id"].as_str(),
        intent["amount_received"].as_u64(),
        intent["status"].as_str(),
    ) {
        (Some(id), Some(received), Some("succeeded")) => Ok(json!({
            "kind": "capture",
            "payment_intent": id,
            "amount_received": received,
            "status": "succeeded",
        })),
        _ => Err(bad_response("capture", intent)),
    }
}

pub(super) fn void_output(payment_intent: &str, status: &str) -> Value {
    json!({"kind": "void", "payment_intent": payment_intent, "status": status})
}

/// How a refund request ended.
pub(super) enum RefundResult {
    /// A refund object (new, replayed or found by reconciling).
    Refunded(Value),
    /// Nothing left to refund: someone already refunded it all.
    AlreadyRefunded,
    /// The intent has no captured charge; its status.
    NotCaptured(String),
}

/// Escapes a value for a `'...'` search query.
pub(super) fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}
