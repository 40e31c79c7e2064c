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
//! - an answer that leaves the outcome unknown (a 5xx not marked
//!   `Stripe-Should-Retry: true`, or a 409/429 marked `false`) is
//!   reconciled by reading the provider's state before anything is
//!   reported: an effect that did happen is reported as success, one that
//!   did not as a retryable error; `Retry-After` travels with the error;
//! - authorizations carry `metadata[idempotency_key]` and
//!   `metadata[order_id]`, so an authorization whose answer was lost can be
//!   found again by search (Stripe's search lags writes by up to a minute;
//!   until then the retryable error stands and the saga retries);
//! - errors: a decline is the business error `card_declined`; other 4xx
//!   answers are business errors named by the provider's code; network
//!   errors, timeouts, 409, 429 and 5xx are retryable (`network`,
//!   `timeout`, `http_<status>`);
//! - compensations treat "nothing to undo" as success; a void whose
//!   authorization's answer was lost says "nothing to void" only once the
//!   search has had `search_lag_ms` to show it (from when the saga saw the
//!   outcome become unknown), searching again until then, so a hold is
//!   never left on a card because the search trailed the write;
//! - requests go over HTTP/1.1 (a connection per concurrent request) or
//!   HTTP/2 (multiplexed over [`PaymentClientConfig::connections`]
//!   connections, taken in turn), as [`HttpVersion`] says; the choice
//!   changes nothing above the transport;
//! - the api key only travels in the `Authorization` header (marked
//!   sensitive); it is never logged, printed by `Debug`, or put in an error.

mod answers;
mod books;

use self::answers::*;
pub use self::books::IntentBooks;
use crate::attempt::wall_ms;
use crate::registry::Registry;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use sagaflow_workflows::{ActivityCall, ActivityError};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a void looks again for an authorization the search does not
/// show yet.
const LOST_SEARCH_EVERY_MS: u64 = 1_000;

/// What a void keeps of its attempt's time limit for the search and the
/// cancel after its last wait.
const LOST_SEARCH_MARGIN_MS: u64 = 2_000;

/// Which HTTP version the client speaks to the provider.
///
/// At 2,000 concurrent calls HTTP/1.1 holds 2,000 connections, on both
/// sides, each with its buffers, socket and wake-ups; HTTP/2 carries them
/// as streams over a few connections (BENCHMARKS.md, "HTTP/2 to the
/// provider").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersion {
    /// Over `https`: HTTP/2 when the provider offers it in the TLS
    /// handshake (ALPN), HTTP/1.1 otherwise. Over plain `http`: HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only; over plain `http` without negotiation ("prior
    /// knowledge", h2c), which the payment sandbox serves.
    Http2,
}

impl HttpVersion {
    /// The version to speak to a payment sandbox this process started
    /// itself: it serves HTTP/2 without TLS, so `Auto` becomes `Http2`; an
    /// explicit choice stands.
    pub fn toward_own_sandbox(self) -> HttpVersion {
        match self {
            HttpVersion::Auto => HttpVersion::Http2,
            chosen => chosen,
        }
    }
}

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
    /// How long the provider's search may trail its writes, in ms: a void
    /// whose authorization's outcome is unknown concludes "nothing to
    /// void" only this long after that outcome became unknown.
    pub search_lag_ms: u64,
    /// HTTP version to speak.
    pub http: HttpVersion,
    /// HTTP/2 connections to open, at least 1; calls take them in turn, so
    /// the provider's limit of concurrent streams per connection
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`, often 100 to 250) is
    /// multiplied by this. Unused when HTTP/1.1 is spoken.
    pub connections: usize,
}

impl std::fmt::Debug for PaymentClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentClientConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("currency", &self.currency)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("search_lag_ms", &self.search_lag_ms)
            .field("http", &self.http)
            .field("connections", &self.connections)
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
    /// `connections` is 0.
    #[error("payment connections is 0; set [payment] connections to 1 or more")]
    InvalidConnections,
    /// reqwest could not build its client (TLS backend setup).
    #[error("cannot build the payment HTTP client: {0}; check the TLS setup of this machine")]
    Client(reqwest::Error),
}

/// The adapter: keep-alive pooled HTTP clients and the provider's address.
/// Share it behind an `Arc`; it is safe to use from many tasks.
pub struct PaymentClient {
    /// One client under HTTP/1.1 (its pool opens a connection per
    /// concurrent request); one per HTTP/2 connection otherwise (a
    /// reqwest client keeps one HTTP/2 connection per host).
    http: Vec<reqwest::Client>,
    /// The next client to use, modulo `http.len()`.
    turn: AtomicUsize,
    base_url: String,
    currency: String,
    search_lag_ms: u64,
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

impl PaymentClient {
    /// Builds the client (keep-alive pool, `TCP_NODELAY`, per-request
    /// timeout, the HTTP version asked for). Sends nothing yet.
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
        if config.connections == 0 {
            return Err(PaymentError::InvalidConnections);
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", config.api_key))
            .map_err(|_| PaymentError::InvalidApiKey)?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let plain = parsed.scheme() == "http";
        // HTTP/1.1 multiplexes nothing: one client, whose pool holds a
        // connection per concurrent call.
        let clients = match (config.http, plain) {
            (HttpVersion::Http1, _) | (HttpVersion::Auto, true) => 1,
            _ => config.connections,
        };
        let agent = user_agent();
        let http = (0..clients)
            .map(|_| {
                let builder = reqwest::Client::builder()
                    .default_headers(headers.clone())
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .tcp_nodelay(true)
                    .pool_idle_timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(256)
                    .user_agent(agent.as_str());
                match (config.http, plain) {
                    (HttpVersion::Http1, _) | (HttpVersion::Auto, true) => builder.http1_only(),
                    (HttpVersion::Http2, _) => builder.http2_prior_knowledge(),
                    (HttpVersion::Auto, false) => builder,
                }
                .build()
                .map_err(PaymentError::Client)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PaymentClient {
            http,
            turn: AtomicUsize::new(0),
            base_url,
            currency: config.currency.to_ascii_lowercase(),
            search_lag_ms: config.search_lag_ms,
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

    /// The intent an authorize whose answer was lost may have created,
    /// found by searching for its idempotency key. The provider's search
    /// trails its writes (Stripe: under a minute), so "none" is the answer
    /// only once `search_lag_ms` has passed since the outcome became
    /// unknown (`unknown_since_ms` in the input; without it, from now).
    /// Until then it searches again every second, within this attempt's
    /// time limit, and then fails as retryable so the next attempt goes on
    /// looking: a hold it cannot see yet is never left on the card.
    async fn find_lost_authorization(
        &self,
        call: &ActivityCall,
    ) -> Result<Option<String>, ActivityError> {
        let authorize_key = format!("{}/{}", saga_id(call)?, call.step);
        let started = wall_ms();
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
            let now = wall_ms();
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

    /// Intents whose `metadata[key]` is `value`, newest first (at most 100,
    /// the provider's page limit: one order has one or a few).
    async fn search(&self, key: &str, value: &str) -> Result<Vec<Value>, ActivityError> {
        let query = format!("metadata[{}]:{}", quote(key), quote(value));
        let request = self
            .client()
            .get(format!("{}/v1/payment_intents/search", self.base_url))
            .query(&[("query", query.as_str()), ("limit", "100")]);
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

    /// The client for the next call: the HTTP/2 connections in turn.
    fn client(&self) -> &reqwest::Client {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        &self.http[turn % self.http.len()]
    }

    async fn post(
        &self,
        path: &str,
        key: &str,
        form: &[(&str, &str)],
    ) -> Result<Answer, ActivityError> {
        let request = self
            .client()
            .post(format!("{}{path}", self.base_url))
            .header("Idempotency-Key", key)
            .form(form);
        self.send(request, path).await
    }

    async fn get(&self, path_and_query: &str, what: &str) -> Result<Answer, ActivityError> {
        let request = self
            .client()
            .get(format!("{}{path_and_query}", self.base_url));
        self.send(request, what).await
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Answer, ActivityError> {
        if let Some(traceparent) = crate::trace::current() {
            request = request.header("traceparent", traceparent);
        }
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
        let retry_after_ms = retry_after_ms(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(what, &e))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            should_retry,
            retry_after_ms,
            body,
        })
    }
}

#[cfg(test)]
mod tests;
