//! The payment sandbox: a loopback HTTP server that answers like Stripe's
//! PaymentIntents API for the calls sagaflow makes, so the embedded profile
//! always exercises the real HTTP adapter ([`super::http`]).
//!
//! It serves, with form-encoded bodies and Stripe-shaped JSON:
//! `POST /v1/payment_intents` (manual capture, confirm=true; the test cards
//! `pm_card_chargeDeclined`, `pm_card_chargeDeclinedInsufficientFunds` and
//! `pm_card_chargeDeclinedFraudulent` decline with a 402, any other `pm_`
//! succeeds), `POST /v1/payment_intents/{id}/capture`,
//! (the sandbox-only test card [`CAPTURE_EXPIRES_CARD`] authorizes, but
//! its capture fails as a real one does after the authorization window:
//! 400 `charge_expired_for_capture`, stored),
//! `POST /v1/payment_intents/{id}/cancel`, `POST /v1/refunds`,
//! `GET /v1/payment_intents/{id}`, `GET /v1/refunds?payment_intent=..` and
//! `GET /v1/payment_intents/search?query=metadata['KEY']:'VALUE'`. Every
//! request needs `Authorization: Bearer sk_test_...`.
//!
//! Invariants:
//! - one SQLite connection behind a mutex serves every request, so requests
//!   are applied one at a time; two requests under the same
//!   `Idempotency-Key` never both apply;
//! - a POST's effect and the response stored under its idempotency key
//!   commit in one transaction (WAL, `synchronous=NORMAL`): after a SIGKILL
//!   either both are there or neither is;
//! - a key is bound to its first request's fingerprint (method, path, sorted
//!   form parameters): the same request is answered with the stored status
//!   and body (`Idempotent-Replayed: true`), another one with a 400
//!   `idempotency_error`;
//! - what is not stored: 401s, parameter validation errors (400 with
//!   `param`), unknown intents (404) and injected "before" failures; none of
//!   them changed anything, so retrying the same key may succeed;
//! - an intent is captured only from `requires_capture`; `capture_count`
//!   counts applied captures and [`read_ledger`] reports any intent above 1;
//! - injected failures (`error_rate`) hit POSTs only: half are "before"
//!   (500, nothing applied or stored, `Stripe-Should-Retry: true`), half
//!   "after" (the effect is applied and the 500 is stored under the key,
//!   `Stripe-Should-Retry: false`), so a client must reconcile with GETs.
//!
//! Not a payment provider: there are no charges, customers or webhooks,
//! idempotency keys never expire, amount limits are not enforced, and search
//! is immediately consistent (Stripe's lags by up to a minute).

use crate::sqlite::{now_ms, open_store};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS intents (
    id TEXT NOT NULL UNIQUE,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    capture_method TEXT NOT NULL,
    payment_method TEXT,
    metadata TEXT NOT NULL,
    amount_received INTEGER NOT NULL DEFAULT 0,
    amount_refunded INTEGER NOT NULL DEFAULT 0,
    capture_count INTEGER NOT NULL DEFAULT 0,
    decline_code TEXT,
    declined_payment_method TEXT,
    cancellation_reason TEXT,
    canceled_at INTEGER,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS intent_metadata (
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    intent_rowid INTEGER NOT NULL,
    PRIMARY KEY (key, value, intent_rowid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refunds (
    id TEXT NOT NULL UNIQUE,
    payment_intent TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    reason TEXT,
    metadata TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS refunds_by_intent ON refunds (payment_intent);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    should_retry INTEGER,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The columns [`IntentRow::from_row`] reads, in its order.
macro_rules! intent_columns {
    () => {
        "rowid, id, amount, currency, status, capture_method, payment_method, metadata, \
         amount_received, decline_code, declined_payment_method, cancellation_reason, \
         canceled_at, created"
    };
}

const DECLINE_MESSAGE: &str = "Your card was declined.";
/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Stripe's limit on `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// How to run a [`Sandbox`].
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// SQLite file holding intents, refunds and stored idempotent responses;
    /// created if missing, reused (with its contents) if present.
    pub db_path: PathBuf,
    /// Fraction of POSTs, from 0.0 to 1.0, answered with an injected 500.
    pub error_rate: f64,
    /// Delay added before handling each request, in ms.
    pub latency_ms: u64,
}

/// Why the sandbox could not start or its ledger could not be read. None of
/// these is retryable as is: each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `error_rate` is not a fraction.
    #[error(
        "sandbox error_rate {0} is not between 0 and 1; set [sandbox] error_rate to a fraction such as 0.05"
    )]
    InvalidErrorRate(f64),
    /// The store file could not be opened or its schema created.
    #[error(
        "cannot open the payment sandbox store {}: {source}; check that the data directory exists and is writable",
        path.display()
    )]
    Store {
        /// The store file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The listening socket could not be bound.
    #[error("cannot bind the payment sandbox to {addr}: {source}; pick a free port or use port 0")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// [`read_ledger`] was given a path with no file.
    #[error(
        "no payment sandbox ledger at {}; start the sandbox with this db_path first (it creates the file)",
        path.display()
    )]
    NoLedger {
        /// The path given.
        path: PathBuf,
    },
    /// [`read_ledger`] could not query the file.
    #[error(
        "cannot read the payment sandbox ledger {}: {source}; check that the path names the sandbox's database",
        path.display()
    )]
    Ledger {
        /// The path given.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

/// Totals over the sandbox's intents, for invariant checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PaymentLedger {
    /// Intents created (declined ones included).
    pub intents: u64,
    /// Intents authorized and neither captured nor canceled.
    pub requires_capture: u64,
    /// Intents captured (status `succeeded`, refunded ones included).
    pub succeeded: u64,
    /// Intents canceled.
    pub canceled: u64,
    /// Intents with at least one refund.
    pub refunded: u64,
    /// Intents declined with a 402 (status `requires_payment_method`).
    pub declined: u64,
    /// Sum of `amount_received` over all intents, in minor units.
    pub captured_amount: u64,
    /// Sum of refunds over all intents, in minor units.
    pub refunded_amount: u64,
    /// Intents captured more than once. Must be 0.
    pub double_captures: u64,
    /// `metadata[order_id]` values carried by more than one intent that is
    /// not canceled. Must be 0.
    pub orders_with_several_intents: u64,
}

/// A running sandbox server. Dropping it stops accepting connections and
/// closes idle ones; requests in flight finish.
pub struct Sandbox {
    base_url: String,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Opens (creating if needed) the store, binds `addr` (e.g.
    /// `127.0.0.1:0` for a free port) and serves on the current tokio
    /// runtime until the `Sandbox` is dropped.
    pub async fn start(config: SandboxConfig, addr: SocketAddr) -> Result<Sandbox, SandboxError> {
        check_error_rate(config.error_rate)?;
        let store_err = |source| SandboxError::Store {
            path: config.db_path.clone(),
            source,
        };
        let conn = open_store(&config.db_path, SCHEMA).map_err(store_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SandboxError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| SandboxError::Bind { addr, source })?;
        let shared = Arc::new(Shared::new(conn, &config));
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .tcp_nodelay(true)
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "payment sandbox server stopped");
            }
        });
        let host = match local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let base_url = format!("http://{}", SocketAddr::new(host, local_addr.port()));
        tracing::info!(%base_url, db = %config.db_path.display(), "payment sandbox listening");
        Ok(Sandbox {
            base_url,
            local_addr,
            shared,
            shutdown: Some(shutdown),
        })
    }

    /// Where to send requests, e.g. `http://127.0.0.1:41234` (no trailing
    /// slash; an unspecified bind address is reported as loopback).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sets the fraction of POSTs answered with an injected 500, from now
    /// on; values outside 0..=1 are clamped (NaN counts as 0).
    pub fn set_error_rate(&self, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.shared
            .error_rate_bits
            .store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Sets the delay added before handling each request, from now on.
    pub fn set_latency_ms(&self, ms: u64) {
        self.shared.latency_ms.store(ms, Ordering::Relaxed);
    }

    /// Forces injected failures to one side (`None`: half and half).
    #[cfg(test)]
    pub(crate) fn force_injection_side(&self, side: Option<InjectSide>) {
        let mode = match side {
            None => 0,
            Some(InjectSide::Before) => 1,
            Some(InjectSide::After) => 2,
        };
        self.shared.inject_mode.store(mode, Ordering::Relaxed);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Reads the sandbox's ledger for invariant checks. Opens the file without
/// creating it and only reads (one consistent snapshot), so it works while a
/// sandbox serves from it, in this process or another.
pub fn read_ledger(db_path: &Path) -> Result<PaymentLedger, SandboxError> {
    if !db_path.exists() {
        return Err(SandboxError::NoLedger {
            path: db_path.to_owned(),
        });
    }
    let ledger_err = |source| SandboxError::Ledger {
        path: db_path.to_owned(),
        source,
    };
    let mut conn = Connection::open_with_flags(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(ledger_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(ledger_err)?;
    let tx = conn.transaction().map_err(ledger_err)?;
    let mut ledger = tx
        .query_row(
            "SELECT COUNT(*),
                    COALESCE(SUM(status = 'requires_capture'), 0),
                    COALESCE(SUM(status = 'succeeded'), 0),
                    COALESCE(SUM(status = 'canceled'), 0),
                    COALESCE(SUM(amount_refunded > 0), 0),
                    COALESCE(SUM(decline_code IS NOT NULL), 0),
                    COALESCE(SUM(amount_received), 0),
                    COALESCE(SUM(amount_refunded), 0),
                    COALESCE(SUM(capture_count > 1), 0)
             FROM intents",
            [],
            |r| {
                Ok(PaymentLedger {
                    intents: r.get(0)?,
                    requires_capture: r.get(1)?,
                    succeeded: r.get(2)?,
                    canceled: r.get(3)?,
                    refunded: r.get(4)?,
                    declined: r.get(5)?,
                    captured_amount: r.get(6)?,
                    refunded_amount: r.get(7)?,
                    double_captures: r.get(8)?,
                    orders_with_several_intents: 0,
                })
            },
        )
        .map_err(ledger_err)?;
    ledger.orders_with_several_intents = tx
        .query_row(
            "SELECT COUNT(*) FROM (
                 SELECT m.value FROM intent_metadata m
                 JOIN intents i ON i.rowid = m.intent_rowid
                 WHERE m.key = 'order_id' AND i.status != 'canceled'
                 GROUP BY m.value HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .map_err(ledger_err)?;
    Ok(ledger)
}

fn check_error_rate(rate: f64) -> Result<(), SandboxError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(SandboxError::InvalidErrorRate(rate))
    }
}

/// Where an injected failure happens relative to the request's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InjectSide {
    /// Nothing applied, nothing stored.
    Before,
    /// Applied, and the 500 stored under the idempotency key.
    After,
}

/// State shared by every request.
struct Shared {
    conn: Mutex<Connection>,
    error_rate_bits: AtomicU64,
    latency_ms: AtomicU64,
    /// splitmix64 state: ids and failure injection.
    rng: AtomicU64,
    /// 0: injected failures are half "before", half "after"; 1: all
    /// "before"; 2: all "after".
    inject_mode: AtomicU8,
}

impl Shared {
    fn new(conn: Connection, config: &SandboxConfig) -> Shared {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Shared {
            conn: Mutex::new(conn),
            error_rate_bits: AtomicU64::new(config.error_rate.to_bits()),
            latency_ms: AtomicU64::new(config.latency_ms),
            rng: AtomicU64::new(nanos ^ (u64::from(std::process::id()) << 32)),
            inject_mode: AtomicU8::new(0),
        }
    }

    /// A poisoned lock only means a handler panicked; its transaction was
    /// rolled back when dropped, so the connection is still good.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// splitmix64: one atomic add per number, no lock.
    fn next_u64(&self) -> u64 {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self
            .rng
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn roll_injection(&self) -> Option<InjectSide> {
        let rate = f64::from_bits(self.error_rate_bits.load(Ordering::Relaxed));
        if rate <= 0.0 {
            return None;
        }
        let r = self.next_u64();
        let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
        if unit >= rate {
            return None;
        }
        Some(match self.inject_mode.load(Ordering::Relaxed) {
            1 => InjectSide::Before,
            2 => InjectSide::After,
            _ if r & 1 == 0 => InjectSide::Before,
            _ => InjectSide::After,
        })
    }

    /// A Stripe-looking id: `prefix` and 24 base62 characters.
    fn new_id(&self, prefix: &str) -> String {
        const ALPHABET: &[u8; 62] =
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut id = String::with_capacity(prefix.len() + 24);
        id.push_str(prefix);
        for _ in 0..3 {
            let mut word = self.next_u64();
            for _ in 0..8 {
                id.push(ALPHABET[(word % 62) as usize] as char);
                word /= 62;
            }
        }
        id
    }
}

// ---------------------------------------------------------------------------
// Requests and responses.

/// What a handler decided: an HTTP status and a JSON body.
struct Outcome {
    status: u16,
    body: Value,
}

/// `Ok`: the request was executed (its effects commit and the outcome is
/// stored under the key). `Err`: nothing was applied and nothing is stored.
type Exec = Result<Outcome, Outcome>;

impl Outcome {
    fn new(status: u16, body: Value) -> Outcome {
        Outcome { status, body }
    }
}

impl From<rusqlite::Error> for Outcome {
    fn from(error: rusqlite::Error) -> Outcome {
        tracing::error!(%error, "payment sandbox store failed");
        Outcome::new(
            500,
            error_body(
                "api_error",
                None,
                &format!(
                    "The sandbox store failed ({error}); nothing was applied. Retry the request."
                ),
                None,
            ),
        )
    }
}

/// What goes on the wire.
struct Reply {
    status: u16,
    body: String,
    should_retry: Option<bool>,
    replayed: bool,
}

impl Reply {
    fn from_outcome(outcome: Outcome) -> Reply {
        Reply {
            // Nothing is applied when a 5xx comes from a handler.
            should_retry: (outcome.status >= 500).then_some(true),
            status: outcome.status,
            body: outcome.body.to_string(),
            replayed: false,
        }
    }

    fn injected(side: InjectSide) -> Reply {
        let (detail, retry) = match side {
            InjectSide::Before => ("before applying the request", true),
            InjectSide::After => ("after applying the request", false),
        };
        Reply {
            status: 500,
            body: error_body(
                "api_error",
                None,
                &format!("An unknown error occurred (sandbox: failure injected {detail})."),
                None,
            )
            .to_string(),
            should_retry: Some(retry),
            replayed: false,
        }
    }

    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(retry) = self.should_retry {
            headers.insert(
                HeaderName::from_static("stripe-should-retry"),
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        if self.replayed {
            headers.insert(
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            );
        }
        response
    }
}

/// `{"error": {...}}` with Stripe's fields; absent ones are left out.
fn error_body(kind: &str, code: Option<&str>, message: &str, param: Option<&str>) -> Value {
    let mut error = Map::new();
    error.insert("type".into(), kind.into());
    if let Some(code) = code {
        error.insert("code".into(), code.into());
    }
    error.insert("message".into(), message.into());
    if let Some(param) = param {
        error.insert("param".into(), param.into());
    }
    json!({ "error": error })
}

/// A 400 `invalid_request_error` about one parameter (not stored).
fn invalid(param: &str, code: &str, message: String) -> Outcome {
    Outcome::new(
        400,
        error_body("invalid_request_error", Some(code), &message, Some(param)),
    )
}

fn missing(param: &str) -> Outcome {
    invalid(
        param,
        "parameter_missing",
        format!("Missing required param: {param}."),
    )
}

fn no_such_intent(id: &str, param: &str) -> Outcome {
    Outcome::new(
        404,
        error_body(
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such payment_intent: '{id}'"),
            Some(param),
        ),
    )
}

/// A 400 `payment_intent_unexpected_state` carrying the intent (stored).
fn unexpected_state(intent: &IntentRow, message: String) -> Outcome {
    let mut body = error_body(
        "invalid_request_error",
        Some("payment_intent_unexpected_state"),
        &message,
        None,
    );
    body["error"]["payment_intent"] = intent.to_json();
    Outcome::new(400, body)
}

/// The form parameters of a body or a query string.
struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    fn parse(bytes: &[u8]) -> Result<Form, Outcome> {
        serde_urlencoded::from_bytes(bytes)
            .map(|pairs| Form { pairs })
            .map_err(|e| {
                Outcome::new(
                    400,
                    error_body(
                        "invalid_request_error",
                        None,
                        &format!("Invalid form-encoded parameters ({e}); send application/x-www-form-urlencoded."),
                        None,
                    ),
                )
            })
    }

    /// The last value of `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Rejects parameters outside `allowed` (and `metadata[..]` unless
    /// `metadata` is set), as Stripe does.
    fn check_known(&self, allowed: &[&str], metadata: bool) -> Result<(), Outcome> {
        for (name, _) in &self.pairs {
            let known = allowed.contains(&name.as_str())
                || (metadata && name.starts_with("metadata[") && name.ends_with(']'));
            if !known {
                return Err(invalid(
                    name,
                    "parameter_unknown",
                    format!("Received unknown parameter: {name}"),
                ));
            }
        }
        Ok(())
    }

    /// A positive integer parameter, if present.
    fn positive(&self, name: &str) -> Result<Option<u64>, Outcome> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 && n <= i64::MAX as u64 => Ok(Some(n)),
                _ => Err(invalid(
                    name,
                    "parameter_invalid_integer",
                    format!("Invalid positive integer: {name}={v}"),
                )),
            },
        }
    }

    /// `metadata[KEY]=VALUE` pairs, checked against Stripe's limits; an
    /// empty value unsets a key, so it is left out.
    fn metadata(&self) -> Result<BTreeMap<String, String>, Outcome> {
        let mut metadata = BTreeMap::new();
        for (name, value) in &self.pairs {
            let Some(key) = name
                .strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
            else {
                continue;
            };
            if key.is_empty() || key.chars().count() > 40 || value.chars().count() > 500 {
                return Err(invalid(
                    name,
                    "parameter_invalid_string",
                    format!(
                        "Metadata keys must be 1 to 40 characters and values at most 500: {name}"
                    ),
                ));
            }
            if value.is_empty() {
                metadata.remove(key);
            } else {
                metadata.insert(key.to_owned(), value.clone());
            }
        }
        if metadata.len() > 50 {
            return Err(invalid(
                "metadata",
                "parameter_invalid_string",
                "Metadata can have at most 50 keys.".into(),
            ));
        }
        Ok(metadata)
    }

    /// FNV-1a over method, path and the sorted parameters.
    fn fingerprint(&self, method: &Method, path: &str) -> String {
        let mut pairs: Vec<&(String, String)> = self.pairs.iter().collect();
        pairs.sort();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(method.as_str().as_bytes());
        eat(b" ");
        eat(path.as_bytes());
        for (k, v) in pairs {
            eat(b"\n");
            eat(k.as_bytes());
            eat(b"=");
            eat(v.as_bytes());
        }
        format!("{hash:016x}")
    }
}

/// The endpoints served.
enum Route<'a> {
    CreateIntent,
    Capture(&'a str),
    Cancel(&'a str),
    CreateRefund,
    GetIntent(&'a str),
    SearchIntents,
    ListRefunds,
}

impl<'a> Route<'a> {
    fn parse(method: &Method, path: &'a str) -> Option<Route<'a>> {
        let rest = path.strip_prefix("/v1/")?.trim_end_matches('/');
        let mut segments = rest.split('/');
        let parts = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        );
        let post = *method == Method::POST;
        let get = *method == Method::GET;
        Some(match parts {
            (Some("payment_intents"), None, _, _) if post => Route::CreateIntent,
            (Some("payment_intents"), Some("search"), None, _) if get => Route::SearchIntents,
            (Some("payment_intents"), Some(id), None, _) if get && !id.is_empty() => {
                Route::GetIntent(id)
            }
            (Some("payment_intents"), Some(id), Some("capture"), None) if post => {
                Route::Capture(id)
            }
            (Some("payment_intents"), Some(id), Some("cancel"), None) if post => Route::Cancel(id),
            (Some("refunds"), None, _, _) if post => Route::CreateRefund,
            (Some("refunds"), None, _, _) if get => Route::ListRefunds,
            _ => return None,
        })
    }
}

/// The one handler: auth, latency, routing, injection, idempotency.
async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let latency = shared.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if !authorized(&parts.headers) {
        let mut response = Reply::from_outcome(Outcome::new(
            401,
            error_body(
                "authentication_error",
                None,
                "Invalid API Key provided. The sandbox accepts any key starting with sk_test_, \
                 sent as `Authorization: Bearer sk_test_...`.",
                None,
            ),
        ))
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"Stripe\""),
        );
        return response;
    }
    let path = parts.uri.path();
    let Some(route) = Route::parse(&parts.method, path) else {
        let message = format!(
            "Unrecognized request URL ({}: {path}). The sandbox serves only the PaymentIntents and Refunds calls sagaflow makes.",
            parts.method
        );
        return Reply::from_outcome(Outcome::new(
            404,
            error_body("invalid_request_error", None, &message, None),
        ))
        .into_response();
    };
    if parts.method == Method::GET {
        let query = match Form::parse(parts.uri.query().unwrap_or("").as_bytes()) {
            Ok(query) => query,
            Err(outcome) => return Reply::from_outcome(outcome).into_response(),
        };
        return execute_get(&shared, &route, &query).into_response();
    }
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let outcome = Outcome::new(
                400,
                error_body(
                    "invalid_request_error",
                    None,
                    "The request body could not be read or is larger than 64 KiB.",
                    None,
                ),
            );
            return Reply::from_outcome(outcome).into_response();
        }
    };
    let form = match Form::parse(&bytes) {
        Ok(form) => form,
        Err(outcome) => return Reply::from_outcome(outcome).into_response(),
    };
    let key = match idempotency_key(&parts.headers) {
        Ok(key) => key,
        Err(outcome) => return Reply::from_outcome(outcome).into_response(),
    };
    let injected = shared.roll_injection();
    if injected == Some(InjectSide::Before) {
        return Reply::injected(InjectSide::Before).into_response();
    }
    let fingerprint = form.fingerprint(&parts.method, path);
    let fail_after = injected == Some(InjectSide::After);
    execute_post(&shared, &route, &form, key, &fingerprint, fail_after).into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|key| {
            key.trim().len() > "sk_test_".len() && key.trim().starts_with("sk_test_")
        })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Outcome> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = |message: &str| {
        Outcome::new(
            400,
            error_body("invalid_request_error", None, message, None),
        )
    };
    let key = value
        .to_str()
        .map_err(|_| bad("The Idempotency-Key header must be visible ASCII."))?;
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(bad(
            "The Idempotency-Key header must be 1 to 255 characters.",
        ));
    }
    Ok(Some(key))
}

fn execute_get(shared: &Shared, route: &Route<'_>, query: &Form) -> Reply {
    let conn = shared.lock();
    let result = match route {
        Route::GetIntent(id) => get_intent(&conn, id),
        Route::SearchIntents => search_intents(&conn, query),
        Route::ListRefunds => list_refunds(&conn, query),
        _ => unreachable!("Route::parse only gives GET routes for GET"),
    };
    Reply::from_outcome(result.unwrap_or_else(|outcome| outcome))
}

fn execute_post(
    shared: &Shared,
    route: &Route<'_>,
    form: &Form,
    key: Option<&str>,
    fingerprint: &str,
    fail_after: bool,
) -> Reply {
    let mut conn = shared.lock();
    post_in_transaction(&mut conn, shared, route, form, key, fingerprint, fail_after)
        .unwrap_or_else(Reply::from_outcome)
}

/// Looks up the key, executes, stores the answer and commits, all in one
/// transaction. `Err` means nothing was applied.
fn post_in_transaction(
    conn: &mut Connection,
    shared: &Shared,
    route: &Route<'_>,
    form: &Form,
    key: Option<&str>,
    fingerprint: &str,
    fail_after: bool,
) -> Result<Reply, Outcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(key) = key {
        let stored = tx
            .prepare_cached(
                "SELECT fingerprint, status, should_retry, body FROM idempotency WHERE key = ?1",
            )?
            .query_row([key], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u16>(1)?,
                    r.get::<_, Option<bool>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .optional()?;
        if let Some((stored_fingerprint, status, should_retry, body)) = stored {
            if stored_fingerprint != fingerprint {
                let message = format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. \
                     Try using a key other than '{key}' if you meant to execute a different request."
                );
                return Err(Outcome::new(
                    400,
                    error_body("idempotency_error", None, &message, None),
                ));
            }
            return Ok(Reply {
                status,
                body,
                should_retry,
                replayed: true,
            });
        }
    }
    let outcome = match route {
        Route::CreateIntent => create_intent(&tx, shared, form),
        Route::Capture(id) => capture_intent(&tx, id, form),
        Route::Cancel(id) => cancel_intent(&tx, id, form),
        Route::CreateRefund => create_refund(&tx, shared, form),
        _ => unreachable!("Route::parse only gives POST routes for POST"),
    }?;
    let reply = if fail_after {
        Reply::injected(InjectSide::After)
    } else {
        Reply::from_outcome(outcome)
    };
    if let Some(key) = key {
        tx.prepare_cached(
            "INSERT INTO idempotency (key, fingerprint, status, should_retry, body, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            key,
            fingerprint,
            reply.status,
            reply.should_retry,
            reply.body,
            now_ms()
        ])?;
    }
    tx.commit()?;
    Ok(reply)
}

// ---------------------------------------------------------------------------
// Intents.

/// One row of `intents`.
struct IntentRow {
    rowid: i64,
    id: String,
    amount: u64,
    currency: String,
    status: String,
    capture_method: String,
    payment_method: Option<String>,
    metadata: String,
    amount_received: u64,
    decline_code: Option<String>,
    declined_payment_method: Option<String>,
    cancellation_reason: Option<String>,
    canceled_at: Option<u64>,
    created: u64,
}

impl IntentRow {
    /// Reads the columns of `intent_columns!()`.
    fn from_row(r: &Row<'_>) -> rusqlite::Result<IntentRow> {
        Ok(IntentRow {
            rowid: r.get(0)?,
            id: r.get(1)?,
            amount: r.get(2)?,
            currency: r.get(3)?,
            status: r.get(4)?,
            capture_method: r.get(5)?,
            payment_method: r.get(6)?,
            metadata: r.get(7)?,
            amount_received: r.get(8)?,
            decline_code: r.get(9)?,
            declined_payment_method: r.get(10)?,
            cancellation_reason: r.get(11)?,
            canceled_at: r.get(12)?,
            created: r.get(13)?,
        })
    }

    /// The Stripe PaymentIntent object.
    fn to_json(&self) -> Value {
        let metadata: Value = serde_json::from_str(&self.metadata).unwrap_or_else(|_| json!({}));
        let last_payment_error = self.decline_code.as_ref().map(|code| {
            json!({
                "type": "card_error",
                "code": "card_declined",
                "decline_code": code,
                "message": DECLINE_MESSAGE,
                "payment_method": {
                    "id": self.declined_payment_method,
                    "object": "payment_method",
                },
            })
        });
        let capturable = if self.status == "requires_capture" {
            self.amount
        } else {
            0
        };
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": capturable,
            "amount_received": self.amount_received,
            "canceled_at": self.canceled_at,
            "cancellation_reason": self.cancellation_reason,
            "capture_method": self.capture_method,
            "confirmation_method": "automatic",
            "created": self.created,
            "currency": self.currency,
            "last_payment_error": last_payment_error,
            "livemode": false,
            "metadata": metadata,
            "payment_method": self.payment_method,
            "status": self.status,
        })
    }
}

fn load_intent(conn: &Connection, id: &str) -> rusqlite::Result<Option<IntentRow>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        intent_columns!(),
        " FROM intents WHERE id = ?1"
    ))?
    .query_row([id], IntentRow::from_row)
    .optional()
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

/// The decline code of Stripe's declining test cards.
fn decline_code(payment_method: &str) -> Option<&'static str> {
    match payment_method {
        "pm_card_chargeDeclined" => Some("generic_decline"),
        "pm_card_chargeDeclinedInsufficientFunds" => Some("insufficient_funds"),
        "pm_card_chargeDeclinedFraudulent" => Some("fraudulent"),
        _ => None,
    }
}

fn create_intent(conn: &Connection, shared: &Shared, form: &Form) -> Exec {
    form.check_known(
        &[
            "amount",
            "currency",
            "capture_method",
            "confirm",
            "payment_method",
            "description",
        ],
        true,
    )?;
    let amount = form.positive("amount")?.ok_or_else(|| missing("amount"))?;
    let currency = form.get("currency").ok_or_else(|| missing("currency"))?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid(
            "currency",
            "parameter_invalid_string",
            format!("Invalid currency: {currency}. Use a three-letter ISO code such as usd."),
        ));
    }
    let currency = currency.to_ascii_lowercase();
    let capture_method = form.get("capture_method").unwrap_or("automatic");
    let manual = match capture_method {
        "manual" => true,
        "automatic" | "automatic_async" => false,
        other => {
            return Err(invalid(
                "capture_method",
                "parameter_invalid_string",
                format!("Invalid capture_method: must be one of manual, automatic or automatic_async (got {other})."),
            ))
        }
    };
    if form.get("confirm") != Some("true") {
        return Err(invalid(
            "confirm",
            "parameter_invalid_string",
            "The sandbox only creates confirmed PaymentIntents; send confirm=true.".into(),
        ));
    }
    let payment_method = form
        .get("payment_method")
        .ok_or_else(|| missing("payment_method"))?;
    if !payment_method.starts_with("pm_") || payment_method.len() <= 3 {
        return Err(invalid(
            "payment_method",
            "resource_missing",
            format!("No such PaymentMethod: '{payment_method}'"),
        ));
    }
    let metadata = form.metadata()?;
    let metadata_json = serde_json::to_string(&metadata).unwrap_or_else(|_| "{}".into());
    let declined = decline_code(payment_method);
    let (status, received, captures) = match (declined, manual) {
        (Some(_), _) => ("requires_payment_method", 0, 0),
        (None, true) => ("requires_capture", 0, 0),
        (None, false) => ("succeeded", amount, 1),
    };
    let mut intent = IntentRow {
        rowid: 0,
        id: shared.new_id("pi_"),
        amount,
        currency,
        status: status.into(),
        capture_method: capture_method.into(),
        payment_method: declined.is_none().then(|| payment_method.to_owned()),
        metadata: metadata_json,
        amount_received: received,
        decline_code: declined.map(str::to_owned),
        declined_payment_method: declined.map(|_| payment_method.to_owned()),
        cancellation_reason: None,
        canceled_at: None,
        created: now_secs(),
    };
    conn.prepare_cached(
        "INSERT INTO intents (id, amount, currency, status, capture_method, payment_method,
             metadata, amount_received, capture_count, decline_code, declined_payment_method, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        intent.id,
        intent.amount,
        intent.currency,
        intent.status,
        intent.capture_method,
        intent.payment_method,
        intent.metadata,
        intent.amount_received,
        captures,
        intent.decline_code,
        intent.declined_payment_method,
        intent.created,
    ])?;
    intent.rowid = conn.last_insert_rowid();
    if !metadata.is_empty() {
        let mut insert = conn.prepare_cached(
            "INSERT INTO intent_metadata (key, value, intent_rowid) VALUES (?1, ?2, ?3)",
        )?;
        for (key, value) in &metadata {
            insert.execute(params![key, value, intent.rowid])?;
        }
    }
    let body = intent.to_json();
    match intent.decline_code {
        None => Ok(Outcome::new(200, body)),
        Some(code) => Ok(Outcome::new(
            402,
            json!({
                "error": {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": code,
                    "message": DECLINE_MESSAGE,
                    "payment_intent": body,
                }
            }),
        )),
    }
}

/// A sandbox-only test payment method: it authorizes, and capturing it
/// fails with Stripe's `charge_expired_for_capture`, as a capture after the
/// authorization window does. It lets tests fail a saga at its pivot.
pub const CAPTURE_EXPIRES_CARD: &str = "pm_card_sandboxCaptureExpires";

fn capture_intent(conn: &Connection, id: &str, form: &Form) -> Exec {
    form.check_known(&["amount_to_capture"], false)?;
    let amount_to_capture = form.positive("amount_to_capture")?;
    let mut intent = load_intent(conn, id)?.ok_or_else(|| no_such_intent(id, "intent"))?;
    if intent.status == "requires_capture"
        && intent.payment_method.as_deref() == Some(CAPTURE_EXPIRES_CARD)
    {
        let mut body = error_body(
            "invalid_request_error",
            Some("charge_expired_for_capture"),
            "The charge expired before it was captured: the authorization window has passed.",
            None,
        );
        body["error"]["payment_intent"] = intent.to_json();
        return Ok(Outcome::new(400, body));
    }
    if intent.status != "requires_capture" {
        let message = format!(
            "This PaymentIntent could not be captured because it has a status of {}. \
             Only a PaymentIntent with one of the following statuses may be captured: requires_capture.",
            intent.status
        );
        return Ok(unexpected_state(&intent, message));
    }
    let amount = amount_to_capture.unwrap_or(intent.amount);
    if amount > intent.amount {
        return Err(invalid(
            "amount_to_capture",
            "amount_too_large",
            format!(
                "The amount to capture ({amount}) is greater than the amount authorized ({}).",
                intent.amount
            ),
        ));
    }
    conn.prepare_cached(
        "UPDATE intents SET status = 'succeeded', amount_received = ?2,
             capture_count = capture_count + 1
         WHERE rowid = ?1",
    )?
    .execute(params![intent.rowid, amount])?;
    intent.status = "succeeded".into();
    intent.amount_received = amount;
    Ok(Outcome::new(200, intent.to_json()))
}

fn cancel_intent(conn: &Connection, id: &str, form: &Form) -> Exec {
    form.check_known(&["cancellation_reason"], false)?;
    let reason = form.get("cancellation_reason");
    if let Some(reason) = reason {
        if !matches!(
            reason,
            "duplicate" | "fraudulent" | "requested_by_customer" | "abandoned"
        ) {
            return Err(invalid(
                "cancellation_reason",
                "parameter_invalid_string",
                format!("Invalid cancellation_reason: must be one of duplicate, fraudulent, requested_by_customer or abandoned (got {reason})."),
            ));
        }
    }
    let mut intent = load_intent(conn, id)?.ok_or_else(|| no_such_intent(id, "intent"))?;
    const CANCELABLE: [&str; 5] = [
        "requires_payment_method",
        "requires_capture",
        "requires_confirmation",
        "requires_action",
        "processing",
    ];
    if !CANCELABLE.contains(&intent.status.as_str()) {
        let message = format!(
            "You cannot cancel this PaymentIntent because it has a status of {}. \
             Only a PaymentIntent with one of the following statuses may be canceled: {}.",
            intent.status,
            CANCELABLE.join(", ")
        );
        return Ok(unexpected_state(&intent, message));
    }
    let now = now_secs();
    conn.prepare_cached(
        "UPDATE intents SET status = 'canceled', cancellation_reason = ?2, canceled_at = ?3
         WHERE rowid = ?1",
    )?
    .execute(params![intent.rowid, reason, now])?;
    intent.status = "canceled".into();
    intent.cancellation_reason = reason.map(str::to_owned);
    intent.canceled_at = Some(now);
    Ok(Outcome::new(200, intent.to_json()))
}

// ---------------------------------------------------------------------------
// Refunds.

fn refund_json(
    id: &str,
    payment_intent: &str,
    amount: u64,
    currency: &str,
    reason: Option<&str>,
    metadata: &str,
    created: u64,
) -> Value {
    let metadata: Value = serde_json::from_str(metadata).unwrap_or_else(|_| json!({}));
    json!({
        "id": id,
        "object": "refund",
        "amount": amount,
        "created": created,
        "currency": currency,
        "metadata": metadata,
        "payment_intent": payment_intent,
        "reason": reason,
        "status": "succeeded",
    })
}

fn create_refund(conn: &Connection, shared: &Shared, form: &Form) -> Exec {
    form.check_known(&["payment_intent", "amount", "reason"], true)?;
    let payment_intent = form
        .get("payment_intent")
        .ok_or_else(|| missing("payment_intent"))?;
    let amount = form.positive("amount")?;
    let reason = form.get("reason");
    if let Some(reason) = reason {
        if !matches!(reason, "duplicate" | "fraudulent" | "requested_by_customer") {
            return Err(invalid(
                "reason",
                "parameter_invalid_string",
                format!("Invalid reason: must be one of duplicate, fraudulent or requested_by_customer (got {reason})."),
            ));
        }
    }
    let metadata = serde_json::to_string(&form.metadata()?).unwrap_or_else(|_| "{}".into());
    let intent = load_intent(conn, payment_intent)?
        .ok_or_else(|| no_such_intent(payment_intent, "payment_intent"))?;
    if intent.status != "succeeded" {
        let message = format!(
            "This PaymentIntent ({}) does not have a successful charge to refund: its status is {}.",
            intent.id, intent.status
        );
        return Ok(unexpected_state(&intent, message));
    }
    let refunded: u64 = conn
        .prepare_cached("SELECT amount_refunded FROM intents WHERE rowid = ?1")?
        .query_row([intent.rowid], |r| r.get(0))?;
    let remaining = intent.amount_received.saturating_sub(refunded);
    if remaining == 0 {
        return Ok(Outcome::new(
            400,
            error_body(
                "invalid_request_error",
                Some("charge_already_refunded"),
                &format!(
                    "The charge of PaymentIntent {} has already been refunded.",
                    intent.id
                ),
                None,
            ),
        ));
    }
    let amount = amount.unwrap_or(remaining);
    if amount > remaining {
        return Ok(Outcome::new(
            400,
            error_body(
                "invalid_request_error",
                Some("amount_too_large"),
                &format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})."),
                Some("amount"),
            ),
        ));
    }
    let id = shared.new_id("re_");
    let created = now_secs();
    conn.prepare_cached(
        "INSERT INTO refunds (id, payment_intent, amount, currency, reason, metadata, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        intent.id,
        amount,
        intent.currency,
        reason,
        metadata,
        created
    ])?;
    conn.prepare_cached(
        "UPDATE intents SET amount_refunded = amount_refunded + ?2 WHERE rowid = ?1",
    )?
    .execute(params![intent.rowid, amount])?;
    Ok(Outcome::new(
        200,
        refund_json(
            &id,
            &intent.id,
            amount,
            &intent.currency,
            reason,
            &metadata,
            created,
        ),
    ))
}

// ---------------------------------------------------------------------------
// Reads.

fn get_intent(conn: &Connection, id: &str) -> Exec {
    let intent = load_intent(conn, id)?.ok_or_else(|| no_such_intent(id, "intent"))?;
    Ok(Outcome::new(200, intent.to_json()))
}

/// `limit` as Stripe reads it: 1 to 100, default 10.
fn list_limit(query: &Form) -> Result<u64, Outcome> {
    match query.positive("limit")? {
        None => Ok(10),
        Some(n) if n <= 100 => Ok(n),
        Some(_) => Err(invalid(
            "limit",
            "parameter_invalid_integer",
            "limit must be between 1 and 100.".into(),
        )),
    }
}

fn search_intents(conn: &Connection, query: &Form) -> Exec {
    query.check_known(&["query", "limit"], false)?;
    let text = query.get("query").ok_or_else(|| missing("query"))?;
    let limit = list_limit(query)?;
    let (key, value) = parse_metadata_query(text).ok_or_else(|| {
        invalid(
            "query",
            "parameter_invalid_string",
            format!("Unsupported search query {text:?}: the sandbox supports only metadata['KEY']:'VALUE'."),
        )
    })?;
    let mut statement = conn.prepare_cached(concat!(
        "SELECT ",
        intent_columns!(),
        " FROM intents WHERE rowid IN
             (SELECT intent_rowid FROM intent_metadata WHERE key = ?1 AND value = ?2)
         ORDER BY rowid DESC LIMIT ?3"
    ))?;
    let mut data = statement
        .query_map(params![key, value, limit + 1], |r| {
            IntentRow::from_row(r).map(|intent| intent.to_json())
        })?
        .collect::<rusqlite::Result<Vec<Value>>>()?;
    let has_more = data.len() as u64 > limit;
    data.truncate(limit as usize);
    Ok(Outcome::new(
        200,
        json!({
            "object": "search_result",
            "data": data,
            "has_more": has_more,
            "next_page": null,
            "url": "/v1/payment_intents/search",
        }),
    ))
}

/// Parses `metadata['KEY']:'VALUE'` (either quote, `\` escapes).
fn parse_metadata_query(text: &str) -> Option<(String, String)> {
    fn quoted(s: &str) -> Option<(String, &str)> {
        let mut chars = s.char_indices();
        let (_, quote) = chars.next()?;
        if quote != '\'' && quote != '"' {
            return None;
        }
        let mut out = String::new();
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                out.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == quote {
                return Some((out, &s[i + c.len_utf8()..]));
            } else {
                out.push(c);
            }
        }
        None
    }
    let rest = text.trim().strip_prefix("metadata[")?;
    let (key, rest) = quoted(rest)?;
    let rest = rest.strip_prefix("]:")?;
    let (value, rest) = quoted(rest)?;
    rest.trim().is_empty().then_some((key, value))
}

fn list_refunds(conn: &Connection, query: &Form) -> Exec {
    query.check_known(&["payment_intent", "limit"], false)?;
    let payment_intent = query
        .get("payment_intent")
        .ok_or_else(|| missing("payment_intent"))?;
    let limit = list_limit(query)?;
    let mut statement = conn.prepare_cached(
        "SELECT id, payment_intent, amount, currency, reason, metadata, created
         FROM refunds WHERE payment_intent = ?1 ORDER BY rowid DESC LIMIT ?2",
    )?;
    let mut data = statement
        .query_map(params![payment_intent, limit + 1], |r| {
            Ok(refund_json(
                &r.get::<_, String>(0)?,
                &r.get::<_, String>(1)?,
                r.get(2)?,
                &r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?.as_deref(),
                &r.get::<_, String>(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<Value>>>()?;
    let has_more = data.len() as u64 > limit;
    data.truncate(limit as usize);
    Ok(Outcome::new(
        200,
        json!({
            "object": "list",
            "data": data,
            "has_more": has_more,
            "url": "/v1/refunds",
        }),
    ))
}

/// Test helpers shared with the adapter's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Sandbox, SandboxConfig};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A sandbox database under the temp dir, removed on drop.
    pub(crate) struct TempDb {
        pub(crate) path: PathBuf,
    }

    impl TempDb {
        pub(crate) fn new(name: &str) -> TempDb {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "sagaflow-payment-{name}-{}-{}-{}.db",
                std::process::id(),
                crate::sqlite::now_ms(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            TempDb { path }
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = self.path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
    }

    /// Starts a sandbox on a free loopback port with no latency or errors.
    pub(crate) async fn start(db: &TempDb) -> Sandbox {
        let config = SandboxConfig {
            db_path: db.path.clone(),
            error_rate: 0.0,
            latency_ms: 0,
        };
        Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("the sandbox starts on a free loopback port")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{start, TempDb};
    use super::*;

    const KEY: &str = "sk_test_sandbox";

    struct Fixture {
        db: TempDb,
        sandbox: Sandbox,
        http: reqwest::Client,
    }

    struct Answer {
        status: u16,
        headers: reqwest::header::HeaderMap,
        body: Value,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }

        fn code(&self) -> &str {
            self.body["error"]["code"].as_str().unwrap_or("")
        }
    }

    impl Fixture {
        async fn new(name: &str) -> Fixture {
            let db = TempDb::new(name);
            let sandbox = start(&db).await;
            Fixture {
                db,
                sandbox,
                http: reqwest::Client::new(),
            }
        }

        async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
            let response = request.send().await.expect("the sandbox answers");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.json().await.expect("the sandbox answers JSON");
            Answer {
                status,
                headers,
                body,
            }
        }

        async fn post(&self, path: &str, key: Option<&str>, form: &[(&str, &str)]) -> Answer {
            let mut request = self
                .http
                .post(format!("{}{path}", self.sandbox.base_url()))
                .bearer_auth(KEY)
                .form(form);
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            self.send(request).await
        }

        async fn get(&self, path: &str) -> Answer {
            let request = self
                .http
                .get(format!("{}{path}", self.sandbox.base_url()))
                .bearer_auth(KEY);
            self.send(request).await
        }

        async fn create(&self, key: &str, order_id: &str, pm: &str) -> Answer {
            self.post(
                "/v1/payment_intents",
                Some(key),
                &[
                    ("amount", "1250"),
                    ("currency", "usd"),
                    ("capture_method", "manual"),
                    ("confirm", "true"),
                    ("payment_method", pm),
                    ("metadata[order_id]", order_id),
                    ("metadata[idempotency_key]", key),
                ],
            )
            .await
        }

        fn ledger(&self) -> PaymentLedger {
            read_ledger(&self.db.path).expect("the ledger is readable")
        }
    }

    fn id(answer: &Answer) -> String {
        answer.body["id"].as_str().expect("an id").to_owned()
    }

    #[tokio::test]
    async fn requests_without_a_test_key_get_401() {
        let f = Fixture::new("auth").await;
        let url = format!("{}/v1/payment_intents/pi_x", f.sandbox.base_url());
        for request in [
            f.http.get(&url),
            f.http.get(&url).bearer_auth("sk_live_abc"),
            f.http.get(&url).bearer_auth("sk_test_"),
            f.http
                .post(format!("{}/v1/payment_intents", f.sandbox.base_url()))
                .form(&[("amount", "1")]),
        ] {
            let answer = f.send(request).await;
            assert_eq!(answer.status, 401);
            assert_eq!(answer.body["error"]["type"], "authentication_error");
        }
        assert_eq!(f.ledger().intents, 0);
    }

    #[tokio::test]
    async fn create_authorizes_and_get_reads_it_back() {
        let f = Fixture::new("create").await;
        let created = f.create("s1/authorize", "o1", "pm_card_visa").await;
        assert_eq!(created.status, 200, "{}", created.body);
        let body = &created.body;
        assert!(body["id"].as_str().unwrap().starts_with("pi_"));
        assert_eq!(body["object"], "payment_intent");
        assert_eq!(body["status"], "requires_capture");
        assert_eq!(body["amount"], 1250);
        assert_eq!(body["amount_capturable"], 1250);
        assert_eq!(body["amount_received"], 0);
        assert_eq!(body["capture_method"], "manual");
        assert_eq!(body["currency"], "usd");
        assert_eq!(body["payment_method"], "pm_card_visa");
        assert_eq!(body["metadata"]["order_id"], "o1");
        assert_eq!(created.header("idempotent-replayed"), None);
        let got = f
            .get(&format!("/v1/payment_intents/{}", id(&created)))
            .await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, created.body);
        let missing = f.get("/v1/payment_intents/pi_nope").await;
        assert_eq!(missing.status, 404);
        assert_eq!(missing.code(), "resource_missing");
        let ledger = f.ledger();
        assert_eq!((ledger.intents, ledger.requires_capture), (1, 1));
    }

    #[tokio::test]
    async fn decline_test_cards_answer_402_and_are_stored() {
        let f = Fixture::new("decline").await;
        for (i, (pm, code)) in [
            ("pm_card_chargeDeclined", "generic_decline"),
            (
                "pm_card_chargeDeclinedInsufficientFunds",
                "insufficient_funds",
            ),
            ("pm_card_chargeDeclinedFraudulent", "fraudulent"),
        ]
        .into_iter()
        .enumerate()
        {
            let key = format!("d{i}/authorize");
            let answer = f.create(&key, &format!("d{i}"), pm).await;
            assert_eq!(answer.status, 402);
            let error = &answer.body["error"];
            assert_eq!(error["type"], "card_error");
            assert_eq!(error["code"], "card_declined");
            assert_eq!(error["decline_code"], code);
            assert_eq!(error["message"], "Your card was declined.");
            assert_eq!(error["payment_intent"]["status"], "requires_payment_method");
            let replay = f.create(&key, &format!("d{i}"), pm).await;
            assert_eq!(replay.status, 402);
            assert_eq!(replay.header("idempotent-replayed"), Some("true"));
            assert_eq!(replay.body, answer.body);
        }
        let mastercard = f.create("m/authorize", "m", "pm_card_mastercard").await;
        assert_eq!(mastercard.body["status"], "requires_capture");
        let ledger = f.ledger();
        assert_eq!((ledger.intents, ledger.declined), (4, 3));
    }

    #[tokio::test]
    async fn invalid_parameters_get_400_with_param_and_are_not_stored() {
        let f = Fixture::new("invalid").await;
        let no_amount = f
            .post(
                "/v1/payment_intents",
                Some("k1"),
                &[
                    ("currency", "usd"),
                    ("confirm", "true"),
                    ("payment_method", "pm_card_visa"),
                ],
            )
            .await;
        assert_eq!(no_amount.status, 400);
        assert_eq!(no_amount.body["error"]["type"], "invalid_request_error");
        assert_eq!(no_amount.body["error"]["param"], "amount");
        let bad_amount = f
            .post("/v1/payment_intents", Some("k2"), &[("amount", "-3")])
            .await;
        assert_eq!(bad_amount.body["error"]["param"], "amount");
        let unknown = f
            .post("/v1/payment_intents", Some("k3"), &[("colour", "red")])
            .await;
        assert_eq!(unknown.code(), "parameter_unknown");
        assert_eq!(unknown.body["error"]["param"], "colour");
        // Nothing was stored under k1: the corrected request goes through.
        let fixed = f.create("k1", "o1", "pm_card_visa").await;
        assert_eq!(fixed.status, 200);
        assert_eq!(f.ledger().intents, 1);
    }

    #[tokio::test]
    async fn same_key_replays_and_other_params_are_an_idempotency_error() {
        let f = Fixture::new("idem").await;
        let first = f.create("s/authorize", "o", "pm_card_visa").await;
        let second = f.create("s/authorize", "o", "pm_card_visa").await;
        assert_eq!(second.status, 200);
        assert_eq!(second.header("idempotent-replayed"), Some("true"));
        assert_eq!(second.body, first.body);
        let other = f.create("s/authorize", "o", "pm_card_mastercard").await;
        assert_eq!(other.status, 400);
        assert_eq!(other.body["error"]["type"], "idempotency_error");
        // Another endpoint under the same key is another request too.
        let cancel = f
            .post(
                &format!("/v1/payment_intents/{}/cancel", id(&first)),
                Some("s/authorize"),
                &[],
            )
            .await;
        assert_eq!(cancel.body["error"]["type"], "idempotency_error");
        let ledger = f.ledger();
        assert_eq!((ledger.intents, ledger.requires_capture), (1, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_with_one_key_apply_once() {
        let f = Arc::new(Fixture::new("concurrent").await);
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let f = Arc::clone(&f);
                tokio::spawn(async move { id(&f.create("c/authorize", "c", "pm_card_visa").await) })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap());
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "every answer names the same intent");
        assert_eq!(f.ledger().intents, 1);
    }

    #[tokio::test]
    async fn capture_applies_once_and_a_second_capture_is_unexpected_state() {
        let f = Fixture::new("capture").await;
        let pi = id(&f.create("s/authorize", "o", "pm_card_visa").await);
        let path = format!("/v1/payment_intents/{pi}/capture");
        let too_much = f
            .post(&path, Some("s/capture0"), &[("amount_to_capture", "1251")])
            .await;
        assert_eq!(too_much.status, 400);
        assert_eq!(too_much.body["error"]["param"], "amount_to_capture");
        let first = f
            .post(&path, Some("s/capture"), &[("amount_to_capture", "1000")])
            .await;
        assert_eq!(first.status, 200);
        assert_eq!(first.body["status"], "succeeded");
        assert_eq!(first.body["amount_received"], 1000);
        let replay = f
            .post(&path, Some("s/capture"), &[("amount_to_capture", "1000")])
            .await;
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.body, first.body);
        let second = f
            .post(
                &path,
                Some("s/capture-again"),
                &[("amount_to_capture", "1000")],
            )
            .await;
        assert_eq!(second.status, 400);
        assert_eq!(second.body["error"]["type"], "invalid_request_error");
        assert_eq!(second.code(), "payment_intent_unexpected_state");
        assert_eq!(
            second.body["error"]["payment_intent"]["status"],
            "succeeded"
        );
        let ledger = f.ledger();
        assert_eq!(ledger.succeeded, 1);
        assert_eq!(ledger.captured_amount, 1000);
        assert_eq!(ledger.double_captures, 0);
    }

    #[tokio::test]
    async fn cancel_only_from_cancelable_states() {
        let f = Fixture::new("cancel").await;
        let pi = id(&f.create("s/authorize", "o", "pm_card_visa").await);
        let path = format!("/v1/payment_intents/{pi}/cancel");
        let canceled = f
            .post(
                &path,
                Some("s/void"),
                &[("cancellation_reason", "abandoned")],
            )
            .await;
        assert_eq!(canceled.status, 200);
        assert_eq!(canceled.body["status"], "canceled");
        assert_eq!(canceled.body["cancellation_reason"], "abandoned");
        let again = f.post(&path, Some("s/void2"), &[]).await;
        assert_eq!(again.code(), "payment_intent_unexpected_state");
        let capture = f
            .post(
                &format!("/v1/payment_intents/{pi}/capture"),
                Some("s/capture"),
                &[],
            )
            .await;
        assert_eq!(capture.code(), "payment_intent_unexpected_state");
        let ledger = f.ledger();
        assert_eq!(
            (ledger.canceled, ledger.succeeded, ledger.requires_capture),
            (1, 0, 0)
        );
    }

    #[tokio::test]
    async fn refunds_only_what_was_captured() {
        let f = Fixture::new("refund").await;
        let pi = id(&f.create("s/authorize", "o", "pm_card_visa").await);
        let early = f
            .post(
                "/v1/refunds",
                Some("r0"),
                &[("payment_intent", pi.as_str())],
            )
            .await;
        assert_eq!(early.code(), "payment_intent_unexpected_state");
        f.post(&format!("/v1/payment_intents/{pi}/capture"), Some("c"), &[])
            .await;
        let part = f
            .post(
                "/v1/refunds",
                Some("r1"),
                &[
                    ("payment_intent", pi.as_str()),
                    ("amount", "250"),
                    ("metadata[idempotency_key]", "r1"),
                ],
            )
            .await;
        assert_eq!(part.status, 200);
        assert_eq!(part.body["object"], "refund");
        assert_eq!(part.body["status"], "succeeded");
        assert_eq!(part.body["amount"], 250);
        assert_eq!(part.body["payment_intent"], pi.as_str());
        assert!(part.body["id"].as_str().unwrap().starts_with("re_"));
        let too_much = f
            .post(
                "/v1/refunds",
                Some("r2"),
                &[("payment_intent", pi.as_str()), ("amount", "1001")],
            )
            .await;
        assert_eq!(too_much.status, 400);
        assert_eq!(too_much.code(), "amount_too_large");
        let rest = f
            .post(
                "/v1/refunds",
                Some("r3"),
                &[("payment_intent", pi.as_str())],
            )
            .await;
        assert_eq!(rest.body["amount"], 1000);
        let none_left = f
            .post(
                "/v1/refunds",
                Some("r4"),
                &[("payment_intent", pi.as_str())],
            )
            .await;
        assert_eq!(none_left.code(), "charge_already_refunded");
        let list = f.get(&format!("/v1/refunds?payment_intent={pi}")).await;
        assert_eq!(list.body["data"].as_array().unwrap().len(), 2);
        assert_eq!(list.body["data"][1]["metadata"]["idempotency_key"], "r1");
        let ledger = f.ledger();
        assert_eq!((ledger.refunded, ledger.refunded_amount), (1, 1250));
    }

    #[tokio::test]
    async fn search_finds_intents_by_metadata() {
        let f = Fixture::new("search").await;
        let a = id(&f.create("a/authorize", "order-a", "pm_card_visa").await);
        f.create("b/authorize", "order-b", "pm_card_visa").await;
        let url = |q: &str| {
            format!(
                "/v1/payment_intents/search?{}",
                serde_urlencoded::to_string([("query", q)]).unwrap()
            )
        };
        let found = f.get(&url("metadata['order_id']:'order-a'")).await;
        assert_eq!(found.status, 200);
        assert_eq!(found.body["object"], "search_result");
        assert_eq!(found.body["has_more"], false);
        let data = found.body["data"].as_array().unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data[0]["id"], a.as_str());
        let by_key = f
            .get(&url("metadata[\"idempotency_key\"]:\"a/authorize\""))
            .await;
        assert_eq!(by_key.body["data"][0]["id"], a.as_str());
        let none = f.get(&url("metadata['order_id']:'order-z'")).await;
        assert_eq!(none.body["data"].as_array().unwrap().len(), 0);
        let unsupported = f.get(&url("status:'succeeded'")).await;
        assert_eq!(unsupported.status, 400);
        assert_eq!(unsupported.body["error"]["param"], "query");
    }

    #[test]
    fn metadata_queries_parse_with_either_quote_and_escapes() {
        assert_eq!(
            parse_metadata_query("metadata['k']:'v'"),
            Some(("k".into(), "v".into()))
        );
        assert_eq!(
            parse_metadata_query(r#" metadata["k"]:"it\"s" "#),
            Some(("k".into(), "it\"s".into()))
        );
        assert_eq!(
            parse_metadata_query(r"metadata['k']:'o\'brien/step'"),
            Some(("k".into(), "o'brien/step".into()))
        );
        assert_eq!(parse_metadata_query("metadata['k']:'v' AND x"), None);
        assert_eq!(parse_metadata_query("metadata['k']:v"), None);
    }

    #[tokio::test]
    async fn injected_before_failures_change_nothing() {
        let f = Fixture::new("before").await;
        f.sandbox.set_error_rate(1.0);
        f.sandbox.force_injection_side(Some(InjectSide::Before));
        let failed = f.create("s/authorize", "o", "pm_card_visa").await;
        assert_eq!(failed.status, 500);
        assert_eq!(failed.body["error"]["type"], "api_error");
        assert_eq!(failed.header("stripe-should-retry"), Some("true"));
        assert_eq!(f.ledger().intents, 0);
        // GETs never fail by injection.
        let search = f
            .get("/v1/payment_intents/search?query=metadata%5B%27order_id%27%5D%3A%27o%27")
            .await;
        assert_eq!(search.status, 200);
        f.sandbox.set_error_rate(0.0);
        let retried = f.create("s/authorize", "o", "pm_card_visa").await;
        assert_eq!(retried.status, 200);
        assert_eq!(retried.header("idempotent-replayed"), None);
        assert_eq!(f.ledger().intents, 1);
    }

    #[tokio::test]
    async fn injected_after_failures_apply_and_replay_the_500() {
        let f = Fixture::new("after").await;
        f.sandbox.set_error_rate(1.0);
        f.sandbox.force_injection_side(Some(InjectSide::After));
        let failed = f.create("s/authorize", "o", "pm_card_visa").await;
        assert_eq!(failed.status, 500);
        assert_eq!(failed.header("stripe-should-retry"), Some("false"));
        assert_eq!(f.ledger().requires_capture, 1, "the effect was applied");
        f.sandbox.set_error_rate(0.0);
        let replay = f.create("s/authorize", "o", "pm_card_visa").await;
        assert_eq!(replay.status, 500);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.header("stripe-should-retry"), Some("false"));
        assert_eq!(f.ledger().intents, 1);
    }

    #[tokio::test]
    async fn random_injection_hits_both_sides() {
        let f = Fixture::new("random").await;
        f.sandbox.set_error_rate(1.0);
        let mut sides = (0, 0);
        for i in 0..64 {
            let answer = f
                .create(&format!("s{i}/authorize"), &format!("o{i}"), "pm_card_visa")
                .await;
            assert_eq!(answer.status, 500);
            match answer.header("stripe-should-retry") {
                Some("true") => sides.0 += 1,
                Some("false") => sides.1 += 1,
                other => panic!("unexpected Stripe-Should-Retry {other:?}"),
            }
        }
        assert!(sides.0 > 0 && sides.1 > 0, "{sides:?}");
        assert_eq!(f.ledger().intents, sides.1);
        f.sandbox.set_error_rate(0.5);
        let mut ok = 0;
        for i in 0..64 {
            let answer = f
                .create(&format!("t{i}/authorize"), &format!("t{i}"), "pm_card_visa")
                .await;
            ok += u32::from(answer.status == 200);
        }
        assert!(
            (8..=56).contains(&ok),
            "about half succeed at rate 0.5, got {ok}"
        );
    }

    #[tokio::test]
    async fn the_store_survives_a_restart() {
        let db = TempDb::new("restart");
        let pi = {
            let sandbox = start(&db).await;
            let answer = reqwest::Client::new()
                .post(format!("{}/v1/payment_intents", sandbox.base_url()))
                .bearer_auth(KEY)
                .header("Idempotency-Key", "s/authorize")
                .form(&[
                    ("amount", "5"),
                    ("currency", "eur"),
                    ("capture_method", "manual"),
                    ("confirm", "true"),
                    ("payment_method", "pm_card_visa"),
                ])
                .send()
                .await
                .unwrap();
            answer.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let sandbox = start(&db).await;
        let got: Value = reqwest::Client::new()
            .get(format!("{}/v1/payment_intents/{pi}", sandbox.base_url()))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got["status"], "requires_capture");
        assert_eq!(got["currency"], "eur");
        assert_eq!(read_ledger(&db.path).unwrap().intents, 1);
    }

    #[test]
    fn read_ledger_names_a_missing_file() {
        let db = TempDb::new("missing");
        let error = read_ledger(&db.path).unwrap_err();
        assert!(matches!(error, SandboxError::NoLedger { .. }));
        assert!(error.to_string().contains("start the sandbox"));
    }

    #[tokio::test]
    async fn start_rejects_an_error_rate_outside_0_to_1() {
        let db = TempDb::new("rate");
        let config = SandboxConfig {
            db_path: db.path.clone(),
            error_rate: 1.5,
            latency_ms: 0,
        };
        let error = Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(error, SandboxError::InvalidErrorRate(_)));
    }

    #[tokio::test]
    async fn latency_delays_answers() {
        let f = Fixture::new("latency").await;
        f.sandbox.set_latency_ms(80);
        let started = std::time::Instant::now();
        f.get("/v1/payment_intents/pi_x").await;
        assert!(started.elapsed() >= Duration::from_millis(80));
    }
}
