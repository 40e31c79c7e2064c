//! The HTTP payment adapter: `payment.authorize`, `payment.capture`,
//! `payment.void` and `payment.refund` over Stripe's PaymentIntents API
//! (Stripe itself, or the payment sandbox, `sagaflow-payment-sandbox`).
//!
//! Invariants:
//! - every POST carries `Idempotency-Key` = the call's idempotency key, so
//!   retries and crash replays of one step have the effect of one request;
//!   the only other key used is `<key>/refund`, for the refund a void falls
//!   back to when the intent was already captured (the provider has the
//!   cancel's answer stored under `<key>`, so reusing it would be an
//!   `idempotency_error`);
//! - an answer that leaves the outcome unknown (any 5xx, or a 409/429 with
//!   `Stripe-Should-Retry: false`) is reconciled by reading the provider's
//!   state before anything is reported: an effect that did happen is
//!   reported as success, one that did not as a retryable error;
//! - authorizations carry `metadata[idempotency_key]` and
//!   `metadata[order_id]`, so an authorization whose answer was lost can be
//!   found again by search (Stripe's search lags writes by up to a minute;
//!   until then the retryable error stands and the saga retries);
//! - errors: a decline is the business error `card_declined`; other 4xx
//!   answers are business errors named by the provider's code; network
//!   errors, timeouts, 409, 429 and 5xx are retryable (`network`,
//!   `timeout`, `http_<status>`);
//! - compensations treat "nothing to undo" as success;
//! - the api key only travels in the `Authorization` header (marked
//!   sensitive); it is never logged, printed by `Debug`, or put in an error.

use crate::order::Order;
use crate::registry::Registry;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use sagaflow_workflows::{ActivityCall, ActivityError};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// How to reach the payment provider.
#[derive(Clone, PartialEq, Eq)]
pub struct PaymentClientConfig {
    /// Provider base URL without the `/v1` part, e.g.
    /// `https://api.stripe.com` or the sandbox's `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// Secret key, sent as `Authorization: Bearer ...`.
    pub api_key: String,
    /// ISO currency code used when an order carries none.
    pub currency: String,
    /// Time limit of one HTTP request, in ms (connect included).
    pub request_timeout_ms: u64,
}

impl std::fmt::Debug for PaymentClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentClientConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("currency", &self.currency)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

/// Why a [`PaymentClient`] could not be built. Each is a configuration
/// mistake: fix `sagas.toml` or the environment, then restart.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// `base_url` is not an http(s) URL.
    #[error(
        "payment base_url {0:?} is not an http(s) URL; set [payment] base_url, e.g. \"https://api.stripe.com\""
    )]
    InvalidBaseUrl(String),
    /// The key is empty or cannot go in an HTTP header.
    #[error(
        "the payment api key is empty or not printable ASCII; set the environment variable named by [payment] api_key_env to the provider's secret key"
    )]
    InvalidApiKey,
    /// `request_timeout_ms` is 0.
    #[error("payment request_timeout_ms is 0; set [payment] request_timeout_ms to a positive number of milliseconds")]
    InvalidTimeout,
    /// reqwest could not build its client (TLS backend setup).
    #[error("cannot build the payment HTTP client: {0}; check the TLS setup of this machine")]
    Client(reqwest::Error),
}

/// The adapter: a keep-alive pooled HTTP client and the provider's address.
/// Share it behind an `Arc`; it is safe to use from many tasks.
pub struct PaymentClient {
    http: reqwest::Client,
    base_url: String,
    currency: String,
}

impl std::fmt::Debug for PaymentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentClient")
            .field("base_url", &self.base_url)
            .field("currency", &self.currency)
            .finish_non_exhaustive()
    }
}

/// Registers `payment.authorize`, `payment.capture`, `payment.void` and
/// `payment.refund`, all served by `client`.
pub fn register(registry: &mut Registry, client: Arc<PaymentClient>) {
    let c = Arc::clone(&client);
    registry.register("payment.authorize", move |call| {
        let c = Arc::clone(&c);
        async move { c.authorize(&call).await }
    });
    let c = Arc::clone(&client);
    registry.register("payment.capture", move |call| {
        let c = Arc::clone(&c);
        async move { c.capture(&call).await }
    });
    let c = Arc::clone(&client);
    registry.register("payment.void", move |call| {
        let c = Arc::clone(&c);
        async move { c.void(&call).await }
    });
    registry.register("payment.refund", move |call| {
        let c = Arc::clone(&client);
        async move { c.refund(&call).await }
    });
}

/// One HTTP answer from the provider.
struct Answer {
    status: u16,
    should_retry: Option<bool>,
    /// The JSON body, or `Null` when it was not JSON.
    body: Value,
}

impl Answer {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The provider's error code, or its error type when there is no code.
    fn error_code(&self) -> Option<&str> {
        let error = &self.body["error"];
        error["code"].as_str().or_else(|| error["type"].as_str())
    }

    fn is_unexpected_state(&self) -> bool {
        self.status == 400 && self.error_code() == Some("payment_intent_unexpected_state")
    }

    /// True when the request may have taken effect although the answer is
    /// an error: read the provider's state before reporting.
    fn needs_reconcile(&self) -> bool {
        self.status >= 500 || (matches!(self.status, 409 | 429) && self.should_retry == Some(false))
    }

    /// Maps an error answer to an activity error.
    fn error(&self, what: &str) -> ActivityError {
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
            409 | 429 | 500..=599 => {
                ActivityError::retryable(format!("http_{status}"), format!("{what}: {message}"))
            }
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

/// A transport failure: nothing usable came back.
fn transport_error(what: &str, error: &reqwest::Error) -> ActivityError {
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

/// `sagaflow/VERSION (host H; pid P)`: the provider's request log (the
/// sandbox's `requests`) then tells which worker process sent what.
fn user_agent() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    format!(
        "sagaflow/{} (host {host}; pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    )
}

/// The original retryable error, noting that reconciling failed too.
fn reconcile_failed(error: ActivityError, during: ActivityError) -> ActivityError {
    ActivityError::retryable(
        error.kind,
        format!(
            "{}; reconciling with the provider failed too ({during})",
            error.message
        ),
    )
}

fn bad_response(what: &str, body: &Value) -> ActivityError {
    ActivityError::retryable(
        "bad_response",
        format!("{what}: the provider answered 2xx with an unexpected body: {body}"),
    )
}

fn bad_input(what: &str, detail: impl std::fmt::Display) -> ActivityError {
    ActivityError::business(
        "invalid_input",
        format!("{what}: the activity input is not {{saga_id, order, outputs}} ({detail})"),
    )
}

/// Stripe ids are `[A-Za-z0-9_]`; anything else must not reach a URL path.
fn check_id(what: &str, id: &str) -> Result<(), ActivityError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(())
    } else {
        Err(ActivityError::business(
            "invalid_input",
            format!("{what}: {id:?} is not a payment intent id"),
        ))
    }
}

fn saga_id(call: &ActivityCall) -> Result<&str, ActivityError> {
    call.input
        .get("saga_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_input(&call.activity, "saga_id is missing"))
}

fn order(call: &ActivityCall) -> Result<Order, ActivityError> {
    let value = call
        .input
        .get("order")
        .ok_or_else(|| bad_input(&call.activity, "order is missing"))?;
    Order::deserialize(value).map_err(|e| bad_input(&call.activity, e))
}

/// The earlier step outputs with `"kind": kind`, `step`'s first when given.
fn find_output<'a>(
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

fn intent_id(output: &Map<String, Value>) -> &str {
    output
        .get("payment_intent")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// What `payment.authorize` reports for an intent, or the business error it
/// stands for.
fn authorization_output(intent: &Value) -> Result<Value, ActivityError> {
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

fn capture_output(intent: &Value) -> Result<Value, ActivityError> {
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

fn void_output(payment_intent: &str, status: &str) -> Value {
    json!({"kind": "void", "payment_intent": payment_intent, "status": status})
}

/// How a refund request ended.
enum RefundResult {
    /// A refund object (new, replayed or found by reconciling).
    Refunded(Value),
    /// Nothing left to refund: someone already refunded it all.
    AlreadyRefunded,
    /// The intent has no captured charge; its status.
    NotCaptured(String),
}

/// Escapes a value for a `'...'` search query.
fn quote(value: &str) -> String {
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

impl PaymentClient {
    /// Builds the client (keep-alive pool, `TCP_NODELAY`, per-request
    /// timeout). Sends nothing yet.
    pub fn new(config: PaymentClientConfig) -> Result<Self, PaymentError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base_url)
            .map_err(|_| PaymentError::InvalidBaseUrl(config.base_url.clone()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(PaymentError::InvalidBaseUrl(config.base_url));
        }
        if config.api_key.is_empty() {
            return Err(PaymentError::InvalidApiKey);
        }
        if config.request_timeout_ms == 0 {
            return Err(PaymentError::InvalidTimeout);
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", config.api_key))
            .map_err(|_| PaymentError::InvalidApiKey)?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .user_agent(user_agent())
            .build()
            .map_err(PaymentError::Client)?;
        Ok(PaymentClient {
            http,
            base_url,
            currency: config.currency.to_ascii_lowercase(),
        })
    }

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

    /// `payment.void`, the compensation of `payment.authorize`: cancels the
    /// authorization. Finds it in the outputs, or, when the authorize
    /// step's outcome is unknown, by searching for its idempotency key;
    /// none means nothing to void (success). An intent already captured is
    /// refunded instead (status `"refunded"`). Output:
    /// `{"kind":"void","payment_intent":..,"status":"canceled"}`.
    pub async fn void(&self, call: &ActivityCall) -> Result<Value, ActivityError> {
        let pi = match find_output(call, "authorization", Some(&call.step)) {
            Some(authorization) => intent_id(authorization).to_owned(),
            None => {
                let authorize_key = format!("{}/{}", saga_id(call)?, call.step);
                match self.search_one("idempotency_key", &authorize_key).await? {
                    Some(intent) => intent["id"].as_str().unwrap_or_default().to_owned(),
                    None => {
                        return Ok(json!({
                            "kind": "void",
                            "payment_intent": null,
                            "status": "nothing_to_void",
                        }))
                    }
                }
            }
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
    /// (found in the outputs, a capture first, else by the order id). An
    /// intent never captured, or none at all, is nothing to refund
    /// (success). Output:
    /// `{"kind":"refund","payment_intent":..,"refund":"re_..","amount":N,"status":"refunded"}`.
    pub async fn refund(&self, call: &ActivityCall) -> Result<Value, ActivityError> {
        let found = find_output(call, "capture", None)
            .or_else(|| find_output(call, "authorization", None))
            .map(|output| intent_id(output).to_owned());
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
    async fn refund_intent(&self, pi: &str, key: &str) -> Result<RefundResult, ActivityError> {
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

    /// GET one intent; a non-2xx answer is an error.
    async fn get_intent(&self, pi: &str) -> Result<Value, ActivityError> {
        let answer = self
            .get(&format!("/v1/payment_intents/{pi}"), "reconcile")
            .await?;
        if answer.is_success() {
            Ok(answer.body)
        } else {
            Err(answer.error("get payment intent"))
        }
    }

    /// Intents whose `metadata[key]` is `value`, newest first.
    async fn search(&self, key: &str, value: &str) -> Result<Vec<Value>, ActivityError> {
        let query = format!("metadata[{}]:{}", quote(key), quote(value));
        let request = self
            .http
            .get(format!("{}/v1/payment_intents/search", self.base_url))
            .query(&[("query", query.as_str())]);
        let answer = self.send(request, "search").await?;
        if !answer.is_success() {
            return Err(answer.error("search"));
        }
        match answer.body {
            Value::Object(mut body) => match body.remove("data") {
                Some(Value::Array(data)) => Ok(data),
                _ => Err(bad_response("search", &Value::Object(body))),
            },
            other => Err(bad_response("search", &other)),
        }
    }

    /// The newest intent whose `metadata[key]` is `value`.
    async fn search_one(&self, key: &str, value: &str) -> Result<Option<Value>, ActivityError> {
        Ok(self.search(key, value).await?.into_iter().next())
    }

    async fn post(
        &self,
        path: &str,
        key: &str,
        form: &[(&str, &str)],
    ) -> Result<Answer, ActivityError> {
        let request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("Idempotency-Key", key)
            .form(form);
        self.send(request, path).await
    }

    async fn get(&self, path_and_query: &str, what: &str) -> Result<Answer, ActivityError> {
        let request = self.http.get(format!("{}{path_and_query}", self.base_url));
        self.send(request, what).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Answer, ActivityError> {
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(what, &e))?;
        let status = response.status().as_u16();
        let should_retry = response
            .headers()
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.eq_ignore_ascii_case("true"));
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(what, &e))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            should_retry,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagaflow_payment_sandbox::testing::{start, TempDb};
    use sagaflow_payment_sandbox::{read_ledger, ErrorSide, PaymentLedger, Sandbox};
    use sagaflow_workflows::Phase;

    struct Fixture {
        db: TempDb,
        sandbox: Sandbox,
        client: PaymentClient,
    }

    impl Fixture {
        async fn new(name: &str) -> Fixture {
            let db = TempDb::new(name);
            let sandbox = start(&db).await;
            let client = PaymentClient::new(config(sandbox.base_url(), "sk_test_adapter")).unwrap();
            Fixture {
                db,
                sandbox,
                client,
            }
        }

        fn ledger(&self) -> PaymentLedger {
            read_ledger(&self.db.path).unwrap()
        }

        async fn intent(&self, pi: &str) -> Value {
            self.client.get_intent(pi).await.unwrap()
        }
    }

    fn config(base_url: &str, api_key: &str) -> PaymentClientConfig {
        PaymentClientConfig {
            base_url: base_url.into(),
            api_key: api_key.into(),
            currency: "usd".into(),
            request_timeout_ms: 5_000,
        }
    }

    fn order(id: &str, payment_method: &str, amount: u64) -> Value {
        json!({
            "order_id": id,
            "customer": "c1",
            "items": [{"sku": "A", "qty": 1}],
            "amount": amount,
            "currency": "USD",
            "payment_method": payment_method,
        })
    }

    fn call(saga: &str, step: &str, activity: &str, phase: Phase, input: Value) -> ActivityCall {
        let key = match phase {
            Phase::Action => format!("{saga}/{step}"),
            Phase::Compensation => format!("{saga}/{step}/compensate"),
        };
        ActivityCall {
            step: step.into(),
            activity: activity.into(),
            phase,
            attempt: 1,
            timeout_ms: 5_000,
            idempotency_key: key,
            input,
        }
    }

    fn input(saga: &str, order: Value, outputs: Value) -> Value {
        json!({"saga_id": saga, "order": order, "outputs": outputs})
    }

    fn authorize_call(saga: &str, pm: &str) -> ActivityCall {
        let input = input(
            saga,
            order(saga, pm, 1250),
            json!({"reserve_stock": {"kind": "reservation"}}),
        );
        call(
            saga,
            "authorize_payment",
            "payment.authorize",
            Phase::Action,
            input,
        )
    }

    fn capture_call(saga: &str, authorization: &Value) -> ActivityCall {
        let outputs = json!({"authorize_payment": authorization});
        let input = input(saga, order(saga, "pm_card_visa", 1250), outputs);
        call(
            saga,
            "capture_payment",
            "payment.capture",
            Phase::Action,
            input,
        )
    }

    fn void_call(saga: &str, outputs: Value) -> ActivityCall {
        let input = input(saga, order(saga, "pm_card_visa", 1250), outputs);
        call(
            saga,
            "authorize_payment",
            "payment.void",
            Phase::Compensation,
            input,
        )
    }

    #[tokio::test]
    async fn authorize_holds_the_order_amount() {
        let f = Fixture::new("http-authorize").await;
        let out = f
            .client
            .authorize(&authorize_call("o1", "pm_card_visa"))
            .await
            .unwrap();
        assert_eq!(out["kind"], "authorization");
        assert_eq!(out["status"], "requires_capture");
        assert_eq!(out["amount"], 1250);
        let pi = out["payment_intent"].as_str().unwrap();
        assert!(pi.starts_with("pi_"));
        let intent = f.intent(pi).await;
        assert_eq!(intent["currency"], "usd");
        assert_eq!(intent["capture_method"], "manual");
        assert_eq!(intent["payment_method"], "pm_card_visa");
        assert_eq!(intent["metadata"]["order_id"], "o1");
        assert_eq!(
            intent["metadata"]["idempotency_key"],
            "o1/authorize_payment"
        );
        let ledger = f.ledger();
        assert_eq!((ledger.intents, ledger.requires_capture), (1, 1));
    }

    #[tokio::test]
    async fn a_declined_card_is_a_business_error() {
        let f = Fixture::new("http-decline").await;
        let call = authorize_call("o1", "pm_card_chargeDeclinedInsufficientFunds");
        let error = f.client.authorize(&call).await.unwrap_err();
        assert_eq!(error.kind, "card_declined");
        assert!(!error.retryable);
        assert_eq!(error.message, "card declined (insufficient_funds)");
        // A retry replays the stored 402.
        assert_eq!(f.client.authorize(&call).await.unwrap_err(), error);
        assert_eq!(f.ledger().declined, 1);
        assert_eq!(f.ledger().intents, 1);
    }

    #[tokio::test]
    async fn authorize_twice_with_one_key_makes_one_intent() {
        let f = Fixture::new("http-replay").await;
        let call = authorize_call("o1", "pm_card_visa");
        let first = f.client.authorize(&call).await.unwrap();
        let mut retry = call.clone();
        retry.attempt = 2;
        let second = f.client.authorize(&retry).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(f.ledger().intents, 1);
    }

    #[tokio::test]
    async fn one_key_with_other_params_is_a_non_retryable_idempotency_error() {
        let f = Fixture::new("http-idem").await;
        let call = authorize_call("o1", "pm_card_visa");
        f.client.authorize(&call).await.unwrap();
        let mut changed = call.clone();
        changed.input["order"]["amount"] = json!(999);
        let error = f.client.authorize(&changed).await.unwrap_err();
        assert_eq!(error.kind, "idempotency_error");
        assert!(!error.retryable);
        assert_eq!(f.ledger().intents, 1);
    }

    #[tokio::test]
    async fn capture_is_idempotent_per_call_and_across_keys() {
        let f = Fixture::new("http-capture").await;
        let auth = f
            .client
            .authorize(&authorize_call("o1", "pm_card_visa"))
            .await
            .unwrap();
        let capture = capture_call("o1", &auth);
        let first = f.client.capture(&capture).await.unwrap();
        assert_eq!(first["kind"], "capture");
        assert_eq!(first["status"], "succeeded");
        assert_eq!(first["amount_received"], 1250);
        assert_eq!(first["payment_intent"], auth["payment_intent"]);
        assert_eq!(f.client.capture(&capture).await.unwrap(), first);
        // Another key: the provider says unexpected_state, the adapter
        // reads the intent and reports the earlier capture.
        let mut other = capture.clone();
        other.idempotency_key = "o1/capture_payment-manual".into();
        assert_eq!(f.client.capture(&other).await.unwrap(), first);
        let ledger = f.ledger();
        assert_eq!(ledger.succeeded, 1);
        assert_eq!(ledger.captured_amount, 1250);
        assert_eq!(ledger.double_captures, 0);
    }

    #[tokio::test]
    async fn capture_of_a_canceled_intent_is_a_business_error() {
        let f = Fixture::new("http-capture-canceled").await;
        let auth = f
            .client
            .authorize(&authorize_call("o1", "pm_card_visa"))
            .await
            .unwrap();
        f.client
            .void(&void_call("o1", json!({"authorize_payment": auth})))
            .await
            .unwrap();
        let error = f
            .client
            .capture(&capture_call("o1", &auth))
            .await
            .unwrap_err();
        assert_eq!(error.kind, "payment_intent_unexpected_state");
        assert!(!error.retryable);
        assert_eq!(f.ledger().succeeded, 0);
    }

    #[tokio::test]
    async fn void_cancels_the_authorization_from_the_outputs() {
        let f = Fixture::new("http-void").await;
        let auth = f
            .client
            .authorize(&authorize_call("o1", "pm_card_visa"))
            .await
            .unwrap();
        let void = void_call("o1", json!({"authorize_payment": auth}));
        let out = f.client.void(&void).await.unwrap();
        assert_eq!(
            out,
            void_output(auth["payment_intent"].as_str().unwrap(), "canceled")
        );
        // Again (retry, or already canceled by another key): still success.
        assert_eq!(f.client.void(&void).await.unwrap(), out);
        let mut other = void.clone();
        other.idempotency_key = "o1/other".into();
        assert_eq!(f.client.void(&other).await.unwrap(), out);
        let ledger = f.ledger();
        assert_eq!((ledger.canceled, ledger.requires_capture), (1, 0));
    }

    #[tokio::test]
    async fn void_finds_an_authorization_whose_output_was_lost() {
        let f = Fixture::new("http-void-search").await;
        let auth = f
            .client
            .authorize(&authorize_call("o1", "pm_card_visa"))
            .await
            .unwrap();
        // The authorize step timed out as far as the saga knows: no output.
        let out = f.client.void(&void_call("o1", json!({}))).await.unwrap();
        assert_eq!(out["status"], "canceled");
        assert_eq!(out["payment_intent"], auth["payment_intent"]);
        assert_eq!(f.ledger().canceled, 1);
    }

    #[tokio::test]
    async fn void_with_no_authorization_has_nothing_to_do() {
        let f = Fixture::new("http-void-none").await;
        let out = f.client.void(&void_call("o1", json!({}))).await.unwrap();
        assert_eq!(
            out,
            json!({"kind": "void", "payment_intent": null, "status": "nothing_to_void"})
        );
        assert_eq!(f.ledger().intents, 0);
    }

    #[tokio::test]
    async fn void_of_a_captured_intent_refunds_it() {
        let f = Fixture::new("http-void-captured").await;
        let auth = f
            .client
            .authorize(&authorize_call("o1", "pm_card_visa"))
            .await
            .unwrap();
        f.client.capture(&capture_call("o1", &auth)).await.unwrap();
        let void = void_call("o1", json!({"authorize_payment": auth}));
        let out = f.client.void(&void).await.unwrap();
        assert_eq!(out["status"], "refunded");
        assert!(out["refund"].as_str().unwrap().starts_with("re_"));
        assert_eq!(f.client.void(&void).await.unwrap(), out);
        let ledger = f.ledger();
        assert_eq!((ledger.refunded, ledger.refunded_amount), (1, 1250));
    }

    #[tokio::test]
    async fn refund_returns_the_captured_amount_once() {
        let f = Fixture::new("http-refund").await;
        let auth = f
            .client
            .authorize(&authorize_call("o1", "pm_card_visa"))
            .await
            .unwrap();
        let capture = f.client.capture(&capture_call("o1", &auth)).await.unwrap();
        let outputs = json!({"authorize_payment": auth, "capture_payment": capture});
        let input = input("o1", order("o1", "pm_card_visa", 1250), outputs);
        let refund = call(
            "o1",
            "capture_payment",
            "payment.refund",
            Phase::Compensation,
            input,
        );
        let out = f.client.refund(&refund).await.unwrap();
        assert_eq!(out["status"], "refunded");
        assert_eq!(out["amount"], 1250);
        assert_eq!(f.client.refund(&refund).await.unwrap(), out);
        let mut other = refund.clone();
        other.idempotency_key = "o1/other".into();
        assert_eq!(
            f.client.refund(&other).await.unwrap()["status"],
            "already_refunded"
        );
        // Without outputs it finds the captured intent by order id.
        let mut bare = other.clone();
        bare.input["outputs"] = json!({});
        bare.idempotency_key = "o1/bare".into();
        assert_eq!(
            f.client.refund(&bare).await.unwrap()["status"],
            "already_refunded"
        );
        assert_eq!(f.ledger().refunded_amount, 1250);
    }

    #[tokio::test]
    async fn refund_of_an_uncaptured_intent_has_nothing_to_do() {
        let f = Fixture::new("http-refund-none").await;
        let auth = f
            .client
            .authorize(&authorize_call("o1", "pm_card_visa"))
            .await
            .unwrap();
        let input = input(
            "o1",
            order("o1", "pm_card_visa", 1250),
            json!({"authorize_payment": auth}),
        );
        let refund = call("o1", "refund", "payment.refund", Phase::Action, input);
        let out = f.client.refund(&refund).await.unwrap();
        assert_eq!(out["status"], "nothing_to_refund");
        assert_eq!(f.ledger().refunded, 0);
    }

    #[tokio::test]
    async fn failures_before_the_effect_are_retryable_and_the_retry_applies_once() {
        let f = Fixture::new("http-before").await;
        f.sandbox.set_error_rate(1.0);
        f.sandbox.set_error_side(ErrorSide::Before);
        let call = authorize_call("o1", "pm_card_visa");
        let error = f.client.authorize(&call).await.unwrap_err();
        assert_eq!(error.kind, "http_500");
        assert!(error.retryable);
        assert_eq!(f.ledger().intents, 0);
        f.sandbox.set_error_rate(0.0);
        let auth = f.client.authorize(&call).await.unwrap();
        assert_eq!(auth["status"], "requires_capture");
        f.sandbox.set_error_rate(1.0);
        let capture = capture_call("o1", &auth);
        let error = f.client.capture(&capture).await.unwrap_err();
        assert!(error.retryable, "{error}");
        assert_eq!(f.ledger().succeeded, 0);
        f.sandbox.set_error_rate(0.0);
        assert_eq!(
            f.client.capture(&capture).await.unwrap()["status"],
            "succeeded"
        );
        let ledger = f.ledger();
        assert_eq!(
            (ledger.intents, ledger.succeeded, ledger.double_captures),
            (1, 1, 0)
        );
    }

    #[tokio::test]
    async fn failures_after_the_effect_are_reconciled_into_success() {
        let f = Fixture::new("http-after").await;
        f.sandbox.set_error_rate(1.0);
        f.sandbox.set_error_side(ErrorSide::After);
        let call = authorize_call("o1", "pm_card_visa");
        let auth = f.client.authorize(&call).await.unwrap();
        assert_eq!(auth["status"], "requires_capture");
        // The stored 500 replays; reconciling finds the same intent.
        f.sandbox.set_error_rate(0.0);
        assert_eq!(f.client.authorize(&call).await.unwrap(), auth);
        f.sandbox.set_error_rate(1.0);
        let captured = f.client.capture(&capture_call("o1", &auth)).await.unwrap();
        assert_eq!(captured["status"], "succeeded");
        let declined = f
            .client
            .authorize(&authorize_call("o2", "pm_card_chargeDeclined"))
            .await
            .unwrap_err();
        assert_eq!(declined.kind, "card_declined");
        assert_eq!(declined.message, "card declined (generic_decline)");
        let auth3 = f
            .client
            .authorize(&authorize_call("o3", "pm_card_visa"))
            .await
            .unwrap();
        let voided = f
            .client
            .void(&void_call("o3", json!({"authorize_payment": auth3})))
            .await
            .unwrap();
        assert_eq!(voided["status"], "canceled");
        let ledger = f.ledger();
        assert_eq!(ledger.intents, 3);
        assert_eq!(
            (ledger.succeeded, ledger.canceled, ledger.declined),
            (1, 1, 1)
        );
        assert_eq!(ledger.double_captures, 0);
        assert_eq!(ledger.orders_with_several_intents, 0);
    }

    #[tokio::test]
    async fn refund_after_an_injected_failure_is_found_by_listing() {
        let f = Fixture::new("http-refund-after").await;
        let auth = f
            .client
            .authorize(&authorize_call("o1", "pm_card_visa"))
            .await
            .unwrap();
        let capture = f.client.capture(&capture_call("o1", &auth)).await.unwrap();
        f.sandbox.set_error_rate(1.0);
        f.sandbox.set_error_side(ErrorSide::After);
        let input = input(
            "o1",
            order("o1", "pm_card_visa", 1250),
            json!({"capture_payment": capture}),
        );
        let refund = call(
            "o1",
            "capture_payment",
            "payment.refund",
            Phase::Compensation,
            input,
        );
        let out = f.client.refund(&refund).await.unwrap();
        assert_eq!(out["status"], "refunded");
        assert_eq!(f.ledger().refunded_amount, 1250);
    }

    #[tokio::test]
    async fn random_failures_end_with_one_intent_per_order() {
        let f = Fixture::new("http-random").await;
        f.sandbox.set_error_rate(1.0);
        let mut reconciled = 0;
        let mut retryable = 0;
        for i in 0..20 {
            match f
                .client
                .authorize(&authorize_call(&format!("o{i}"), "pm_card_visa"))
                .await
            {
                Ok(_) => reconciled += 1,
                Err(error) => {
                    assert!(error.retryable, "{error}");
                    retryable += 1;
                }
            }
        }
        assert!(
            reconciled > 0 && retryable > 0,
            "{reconciled} / {retryable}"
        );
        f.sandbox.set_error_rate(0.0);
        for i in 0..20 {
            let out = f
                .client
                .authorize(&authorize_call(&format!("o{i}"), "pm_card_visa"))
                .await;
            assert_eq!(out.unwrap()["status"], "requires_capture");
        }
        let ledger = f.ledger();
        assert_eq!((ledger.intents, ledger.requires_capture), (20, 20));
        assert_eq!(ledger.orders_with_several_intents, 0);
    }

    #[tokio::test]
    async fn a_rejected_key_is_a_business_error_without_the_key() {
        let f = Fixture::new("http-auth").await;
        let client = PaymentClient::new(config(f.sandbox.base_url(), "sk_live_secret123")).unwrap();
        let error = client
            .authorize(&authorize_call("o1", "pm_card_visa"))
            .await
            .unwrap_err();
        assert_eq!(error.kind, "authentication_error");
        assert!(!error.retryable);
        assert!(!error.message.contains("secret123"));
        assert!(!format!("{client:?}").contains("secret123"));
        assert!(!format!("{:?}", config("http://x", "sk_live_secret123")).contains("secret123"));
        assert_eq!(f.ledger().intents, 0);
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_a_retryable_network_error() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client =
            PaymentClient::new(config(&format!("http://127.0.0.1:{port}"), "sk_test_x")).unwrap();
        let error = client
            .authorize(&authorize_call("o1", "pm_card_visa"))
            .await
            .unwrap_err();
        assert_eq!(error.kind, "network");
        assert!(error.retryable);
    }

    #[tokio::test]
    async fn registered_activities_run_through_the_registry() {
        let f = Fixture::new("http-registry").await;
        let client =
            Arc::new(PaymentClient::new(config(f.sandbox.base_url(), "sk_test_r")).unwrap());
        let mut registry = Registry::new();
        register(&mut registry, client);
        for name in [
            "payment.authorize",
            "payment.capture",
            "payment.void",
            "payment.refund",
        ] {
            assert!(registry.contains(name), "{name}");
        }
        let out = registry
            .start(authorize_call("o1", "pm_card_visa"))
            .await
            .unwrap();
        assert_eq!(out["kind"], "authorization");
    }

    #[test]
    fn new_rejects_bad_config() {
        assert!(matches!(
            PaymentClient::new(config("ftp://x", "sk_test_x")),
            Err(PaymentError::InvalidBaseUrl(_))
        ));
        assert!(matches!(
            PaymentClient::new(config("http://x", "")),
            Err(PaymentError::InvalidApiKey)
        ));
        assert!(matches!(
            PaymentClient::new(config("http://x", "sk\ntest")),
            Err(PaymentError::InvalidApiKey)
        ));
        let mut zero = config("http://x", "sk_test_x");
        zero.request_timeout_ms = 0;
        assert!(matches!(
            PaymentClient::new(zero),
            Err(PaymentError::InvalidTimeout)
        ));
    }

    #[test]
    fn search_values_are_quoted() {
        assert_eq!(quote("o'1\\x"), r"'o\'1\\x'");
    }
}
