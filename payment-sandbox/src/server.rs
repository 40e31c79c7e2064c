//! The server: binding, the one request handler, and the [`Sandbox`] handle
//! that owns it.
//!
//! A request's life: admin paths (`/_sandbox/...`) go to [`crate::admin`]
//! untouched by faults; every other request rolls its faults
//! ([`crate::faults`]), is authenticated (`Authorization: Bearer
//! sk_test_...`), routed ([`crate::wire::Route`]), and executed under the
//! one store connection: GETs read, POSTs go through
//! [`crate::idempotency`].

use crate::faults::{injected_reply, outage_reply, Faults, InjectSide, Rng};
use crate::idempotency::{execute_post, Post};
use crate::intents::get_intent;
use crate::knobs::{ErrorSide, Knobs, KnobsPatch, LiveKnobs};
use crate::refunds::list_refunds;
use crate::search::search_intents;
use crate::wire::{error_body, Form, Outcome, Reply, Route};
use crate::{store, SandboxError};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rusqlite::Connection;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Stripe's limit on `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;
/// Concurrent HTTP/2 streams one connection may carry (hyper's default,
/// 200, would queue a worker's calls behind a few connections at 2,000 in
/// flight; a client meeting a real provider's lower limit opens more
/// connections, `[payment] connections`).
const MAX_STREAMS_PER_CONNECTION: u32 = 1_000;

/// How to run a [`Sandbox`].
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// SQLite file holding intents, refunds, stored idempotent responses and
    /// the request log; created if missing, reused (with its contents) if
    /// present.
    pub db_path: PathBuf,
    /// The knobs it starts with (all off by default).
    pub knobs: Knobs,
    /// Keep the request log (`requests`, read by
    /// [`crate::read_requests`]): who sent which POST. Worth its cost when
    /// several workers share the sandbox; `sagaflow sandbox` turns it on.
    pub request_log: bool,
}

/// State shared by every request.
pub(crate) struct Shared {
    conn: Mutex<Connection>,
    pub(crate) knobs: LiveKnobs,
    pub(crate) rng: Rng,
    request_log: bool,
    /// Every API request an outage turned away: when, and from whom.
    pub(crate) turned_away: Mutex<TurnedAway>,
    /// The W3C trace context of every API request that carried one.
    pub(crate) traced: Mutex<Traced>,
    /// Every API request, when and how it was answered (with the
    /// request log on).
    pub(crate) calls: Mutex<Calls>,
}

/// Every API request (the first [`TURNED_AWAY_KEPT`]) with when it
/// arrived and when it was answered, so a test can tell how many calls
/// were in flight at any moment: after an outage, say.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Calls {
    /// The `User-Agent`s seen, indexed by the requests.
    pub agents: Vec<String>,
    /// `(arrived ms, answered ms since the Unix epoch, status, agent index,
    /// "METHOD /path")` of each, in the order they were answered.
    pub requests: Vec<(u64, u64, u16, usize, String)>,
    /// How many more were answered after the list was full.
    pub not_kept: u64,
}

impl Calls {
    fn record(&mut self, arrived: u64, parts: (&str, &str), status: u16) {
        if self.requests.len() >= TURNED_AWAY_KEPT {
            self.not_kept += 1;
            return;
        }
        let (agent, call) = parts;
        let index = match self.agents.iter().position(|a| a == agent) {
            Some(index) => index,
            None => {
                self.agents.push(agent.to_owned());
                self.agents.len() - 1
            }
        };
        self.requests
            .push((arrived, wall_ms(), status, index, call.to_owned()));
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `traceparent` headers of the API requests that carried one (the
/// first [`TURNED_AWAY_KEPT`]), so a test can follow an order's trace
/// from its queue message to the provider.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Traced {
    /// `(ms since the Unix epoch, "METHOD /path", traceparent)` of each,
    /// in arrival order.
    pub requests: Vec<(u64, String, String)>,
}

/// The requests an outage turned away (the first [`TURNED_AWAY_KEPT`]),
/// so a test can count how many calls each client made while the provider
/// was down: a circuit breaker's probes.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TurnedAway {
    /// `(ms since the Unix epoch, User-Agent, "METHOD /path")` of each,
    /// in arrival order.
    pub requests: Vec<(u64, String, String)>,
    /// How many more were turned away after the list was full.
    pub not_kept: u64,
}

/// Turned-away requests kept in memory, at most.
pub const TURNED_AWAY_KEPT: usize = 200_000;

impl Shared {
    fn turn_away(&self, parts: &axum::http::request::Parts) -> Response {
        let agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut log = self.turned_away.lock().unwrap_or_else(|e| e.into_inner());
        if log.requests.len() < TURNED_AWAY_KEPT {
            let call = format!("{} {}", parts.method, parts.uri.path());
            log.requests.push((at, agent, call));
        } else {
            log.not_kept += 1;
        }
        let mut response = outage_reply().into_response();
        let retry_after_ms = self.knobs.get().retry_after_ms;
        if retry_after_ms > 0 {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_ms.div_ceil(1_000)),
            );
        }
        response
    }
}

impl Shared {
    /// A poisoned lock only means a handler panicked; its transaction was
    /// rolled back when dropped, so the connection is still good.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
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
        let knobs = LiveKnobs::new(&config.knobs)?;
        let conn = store::open(&config.db_path).map_err(|source| SandboxError::Store {
            path: config.db_path.clone(),
            source,
        })?;
        conn.set_prepared_statement_cache_capacity(64);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SandboxError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| SandboxError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            conn: Mutex::new(conn),
            knobs,
            rng: Rng::from_clock(),
            request_log: config.request_log,
            turned_away: Mutex::new(TurnedAway::default()),
            calls: Mutex::new(Calls::default()),
            traced: Mutex::new(Traced::default()),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, app, stopped));
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

    /// The requests outages turned away so far.
    pub fn turned_away(&self) -> TurnedAway {
        self.shared
            .turned_away
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The knobs as of now.
    pub fn knobs(&self) -> Knobs {
        self.shared.knobs.get()
    }

    /// Changes the knobs `patch` names, from the next request on; refuses a
    /// rate outside 0..=1 and changes nothing then.
    pub fn set_knobs(&self, patch: &KnobsPatch) -> Result<Knobs, SandboxError> {
        self.shared.knobs.apply(patch)
    }

    /// Sets the fraction of POSTs answered with an injected 500, from now
    /// on; values outside 0..=1 are clamped (NaN counts as 0).
    pub fn set_error_rate(&self, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.patch(KnobsPatch {
            error_rate: Some(rate),
            ..KnobsPatch::default()
        });
    }

    /// Sets which side of the effect injected 500s fall on.
    pub fn set_error_side(&self, side: ErrorSide) {
        self.patch(KnobsPatch {
            error_side: Some(side),
            ..KnobsPatch::default()
        });
    }

    /// Sets the delay added before handling each request, from now on.
    pub fn set_latency_ms(&self, ms: u64) {
        self.patch(KnobsPatch {
            latency_ms: Some(ms),
            ..KnobsPatch::default()
        });
    }

    /// Applies a patch that cannot be refused (no rates out of range).
    fn patch(&self, patch: KnobsPatch) {
        if let Err(error) = self.shared.knobs.apply(&patch) {
            unreachable!("a checked patch was refused: {error}");
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Accepts connections until `stopped`, each served as HTTP/1.1 or, when
/// it opens with HTTP/2's preface, as HTTP/2 without TLS ("prior
/// knowledge", h2c); then stops accepting, lets requests in flight finish
/// and closes idle connections.
async fn serve(listener: TcpListener, app: Router, mut stopped: oneshot::Receiver<()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: wait for some
                    // to close rather than spin.
                    tracing::warn!(%error, "payment sandbox cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that goes away mid-request is its own business.
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The one handler: admin, faults, auth, routing, idempotency; each API
/// request logged with its times when the request log is on.
async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if request.uri().path().starts_with(crate::admin::PREFIX) {
        return crate::admin::handle(&shared, request).await;
    }
    if !shared.request_log {
        return handle_api(&shared, request).await;
    }
    let arrived = wall_ms();
    let agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let call = format!("{} {}", request.method(), request.uri().path());
    let response = handle_api(&shared, request).await;
    let status = response.status().as_u16();
    let mut calls = shared.calls.lock().unwrap_or_else(|e| e.into_inner());
    calls.record(arrived, (&agent, &call), status);
    response
}

/// An API request: faults, auth, routing, idempotency.
async fn handle_api(shared: &Shared, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Some(traceparent) = parts
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut traced = shared.traced.lock().unwrap_or_else(|e| e.into_inner());
        if traced.requests.len() < TURNED_AWAY_KEPT {
            let call = format!("{} {}", parts.method, parts.uri.path());
            traced.requests.push((at, call, traceparent.to_owned()));
        }
    }
    let current = shared.knobs.current();
    let post = parts.method == Method::POST;
    let faults = Faults::roll(&current, &shared.rng, post);
    if faults.outage {
        return shared.turn_away(&parts);
    }
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
        // An outage that began while this request waited fails it too:
        // it has not been executed yet.
        if shared.knobs.current().in_outage {
            return shared.turn_away(&parts);
        }
    }
    if !authorized(&parts.headers) {
        return unauthorized();
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
    let reply = if post {
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
        if faults.inject == Some(InjectSide::Before) {
            return injected_reply(InjectSide::Before).into_response();
        }
        let fingerprint = form.fingerprint(&parts.method, path);
        let client = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let post = Post {
            route: &route,
            path,
            form: &form,
            key,
            fingerprint: &fingerprint,
            client: shared.request_log.then_some(client),
            fail_after: faults.inject == Some(InjectSide::After),
        };
        execute_post(&mut shared.lock(), &shared.rng, &post)
    } else {
        match Form::parse(parts.uri.query().unwrap_or("").as_bytes()) {
            Ok(query) => execute_get(shared, &route, &query, current.knobs.search_lag_ms),
            Err(outcome) => Reply::from_outcome(outcome),
        }
    };
    if !faults.hold.is_zero() {
        // Held past the client's limit: the effect is already applied.
        tokio::time::sleep(faults.hold).await;
    }
    reply.into_response()
}

/// Any key starting with `sk_test_` (and something after it).
pub(crate) fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|key| {
            key.trim().len() > "sk_test_".len() && key.trim().starts_with("sk_test_")
        })
}

/// The 401 of a request without a test key.
pub(crate) fn unauthorized() -> Response {
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
    response
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

fn execute_get(shared: &Shared, route: &Route<'_>, query: &Form, search_lag_ms: u64) -> Reply {
    let conn = shared.lock();
    let result = match route {
        Route::GetIntent(id) => get_intent(&conn, id),
        Route::SearchIntents => search_intents(&conn, query, search_lag_ms),
        Route::ListRefunds => list_refunds(&conn, query),
        _ => unreachable!("Route::parse only gives GET routes for GET"),
    };
    Reply::from_outcome(result.unwrap_or_else(|outcome| outcome))
}
