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
mod forward;
mod transport;
mod undo;

pub use self::books::IntentBooks;
use crate::registry::Registry;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use std::sync::atomic::AtomicUsize;
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
}

#[cfg(test)]
mod tests;
