//! The admin API's routes: each parses its request, runs the CLI's own
//! operation on the blocking pool, and answers JSON (errors as
//! `{"error": "..."}` with a status that says whose fault it was).

use super::AdminState;
use crate::engine::command::{Audit, CommandRequest};
use crate::engine::filter::{last_attempt, Filter, Target};
use crate::ops::audit::{audit_rows, parse_since};
use crate::ops::bulk::{self, Bulk, BulkAnswer, BulkSpec, Planned};
use crate::ops::command::{self, Verdict};
use crate::ops::refund::start_refund;
use crate::ops::source::saga_document;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sagaflow_activities::clock::now_ms;
use sagaflow_workflows::{SagaStatus, Signal};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

type Shared = Arc<AdminState>;

/// Every route: `/api` behind the token check; the probes without it, as
/// the kubelet and scrapers call them, exposing no saga data; all of them
/// behind the `Host`/`Origin` check ([`super::origin`]).
pub(super) fn router(state: Shared) -> Router {
    let probes = Router::new()
        .route("/ui", get(super::ui::page))
        .route("/ui/", get(super::ui::page))
        .route("/ui/:asset", get(super::ui::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    Router::new()
        .route("/api/sagas", get(list))
        .route("/api/sagas/:id", get(saga))
        .route("/api/sagas/:id/history", get(history))
        .route("/api/sagas/:id/:command", post(command))
        .route("/api/stats", get(stats))
        .route("/api/sale", get(sale))
        .route("/api/health", get(health))
        .route("/api/audit", get(audit))
        .route("/api/bulk/:command", post(bulk_command))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state.clone())
        .merge(probes)
        .layer(middleware::from_fn_with_state(state, guard_browser))
}

/// Refuses what a browser page other than the dashboard could send
/// ([`super::origin::check`]), before the token is looked at.
async fn guard_browser(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let verdict = {
        let headers = req.headers();
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let host =
            text(header::HOST.as_str()).or_else(|| req.uri().authority().map(|a| a.as_str()));
        super::origin::check(
            host,
            text(header::ORIGIN.as_str()),
            text("sec-fetch-site"),
            state.bound,
            state.token.is_some(),
            req.uri().path().starts_with("/api"),
        )
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(why) => ApiError(StatusCode::FORBIDDEN, why.to_string()).into_response(),
    }
}

/// `GET /metrics`: the worker's metrics in OpenMetrics text
/// (`crate::metrics`), the scrape-time figures read now.
async fn metrics(State(state): State<Shared>) -> Response {
    let parts = state.health.parts();
    let scrape = crate::metrics::Scrape {
        trigger: parts.map(|(_, stats)| stats.queue_counts()),
        breakers: parts.map(|(breakers, _)| breakers),
        in_progress: state.health.readiness().map(|r| r.in_progress()),
    };
    let text = crate::metrics::global().render(&scrape);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// `GET /healthz`: the process answers.
async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
}

/// `GET /readyz`: 200 when every part the profile uses answers, else 503;
/// either way each part's check (`crate::ops::ready`). When the worker has
/// a token, a caller without it (the kubelet) gets each check's name and
/// verdict only: a store's error text names hosts and users.
async fn readyz(State(state): State<Shared>, headers: axum::http::HeaderMap) -> Response {
    let detailed = state
        .token
        .as_ref()
        .is_none_or(|token| token.admits(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())));
    let Some(readiness) = state.health.readiness() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "checks": [{"name": "worker", "ok": false, "detail": "starting"}]})),
        )
            .into_response();
    };
    let checks = readiness.check().await;
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let checks = if detailed {
        json!(checks)
    } else {
        json!(checks
            .iter()
            .map(|c| json!({"name": c.name, "ok": c.ok}))
            .collect::<Vec<_>>())
    };
    (status, Json(json!({"ready": ready, "checks": checks}))).into_response()
}

/// An answer that is not a success.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.0, Json(json!({"error": self.1}))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        res
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// An operation's failure: "no saga" is the caller's 404; the rest is ours.
fn failed(e: anyhow::Error) -> ApiError {
    let text = format!("{e:#}");
    if text.starts_with("no saga") || text.contains("there is no saga") {
        ApiError(StatusCode::NOT_FOUND, text)
    } else {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, text)
    }
}

type Answer = Result<Response, ApiError>;

/// Runs a blocking operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    state: &Shared,
    f: impl FnOnce(&AdminState) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(failed)
}

async fn require_token(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !token.admits(given) {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                format!(
                    "missing or wrong bearer token: send \"Authorization: Bearer TOKEN\" with the token in ${}",
                    state.config.admin.token_env
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such route; see docs/admin-api.md (GET /api/sagas, /api/sagas/{id}, /api/sagas/{id}/history, /api/stats, /api/audit; POST /api/sagas/{id}/{retry|cancel|resolve|refund}, /api/bulk/{command})".into(),
    )
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    #[serde(rename = "where")]
    where_: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// `GET /api/sagas[?status=S][&limit=N][&offset=K]`: saga rows, newest
/// first; `?where=TERMS`: the sagas a bulk command with those terms would
/// touch, oldest first. `offset` skips that many (the dashboard's pages).
async fn list(State(state): State<Shared>, Query(q): Query<ListQuery>) -> Answer {
    if let Some(s) = &q.status {
        if !SagaStatus::NAMES.contains(&s.as_str()) {
            return Err(bad(format!(
                "status {s:?} is not one of {}",
                SagaStatus::NAMES.join(", ")
            )));
        }
    }
    let offset = q.offset.unwrap_or(0);
    if let Some(terms) = q.where_ {
        let filter = Filter::parse(&terms).map_err(bad)?;
        let found = blocking(&state, move |s| bulk::targets(&s.source, &filter)).await?;
        let page: Vec<_> = match q.limit {
            Some(limit) => found.into_iter().skip(offset).take(limit).collect(),
            None => found.into_iter().skip(offset).collect(),
        };
        return Ok(Json(page).into_response());
    }
    let limit = q.limit.unwrap_or(50);
    let rows = blocking(&state, move |s| {
        s.source
            .list(q.status.as_deref(), offset.saturating_add(limit))
    })
    .await?;
    let page: Vec<_> = rows.into_iter().skip(offset).collect();
    Ok(Json(page).into_response())
}

/// `GET /api/sagas/{id}`: what `show --json` prints, with the definition.
async fn saga(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let doc = blocking(&state, move |s| {
        let view = s.source.saga(&id)?;
        Ok(saga_document(&s.source, &view))
    })
    .await?;
    Ok(Json(doc).into_response())
}

/// `GET /api/sagas/{id}/history`: the raw journal (or history) events.
async fn history(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let events = blocking(&state, move |s| Ok(s.source.saga(&id)?.events)).await?;
    Ok(Json(events).into_response())
}

/// `GET /api/health`: the worker's breakers and intake (503 while it is
/// still starting).
async fn health(State(state): State<Shared>) -> Response {
    match state.health.now() {
        Some(health) => Json(health).into_response(),
        None => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "the worker is still starting; ask again in a moment"})),
        )
            .into_response(),
    }
}

/// `GET /api/stats`.
async fn stats(State(state): State<Shared>) -> Answer {
    let stats = blocking(&state, |s| s.source.stats()).await?;
    Ok(Json(stats).into_response())
}

/// `GET /api/sale`: what the dashboard's sale view shows, in one answer:
/// the counts and latencies of `stats`, this worker's breakers and intake
/// (`null` while it starts), stock per SKU and the trigger's counters.
async fn sale(State(state): State<Shared>) -> Answer {
    let stats = blocking(&state, |s| s.source.stats()).await?;
    let stock = match state.health.readiness() {
        // The embedded ledger reads SQLite: on the blocking pool, as every
        // other read here.
        Some(ready) => {
            let stock = ready.stock.clone();
            let runtime = tokio::runtime::Handle::current();
            match tokio::task::spawn_blocking(move || runtime.block_on(stock.levels())).await {
                Ok(Ok(levels)) => json!(levels),
                Ok(Err(e)) => json!({"error": e.to_string()}),
                Err(e) => json!({"error": e.to_string()}),
            }
        }
        None => Value::Null,
    };
    let intake = state.health.parts().map(|(_, t)| {
        use std::sync::atomic::Ordering::Relaxed;
        json!({
            "received": t.received.load(Relaxed),
            "started": t.started.load(Relaxed),
            "duplicates": t.duplicates.load(Relaxed),
            "dead_lettered": t.dead_lettered.load(Relaxed),
        })
    });
    Ok(Json(json!({
        "at_ms": now_ms(),
        "engine": match state.config.profile.engine {
            crate::config::EngineKind::Embedded => "embedded",
            crate::config::EngineKind::Temporal => "temporal",
        },
        "stats": stats,
        "health": state.health.now(),
        "stock": stock,
        "intake": intake,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    since: Option<String>,
    since_ms: Option<u64>,
    saga: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/audit[?since=T|since_ms=MS][&saga=ID][&limit=N]`.
async fn audit(State(state): State<Shared>, Query(q): Query<AuditQuery>) -> Answer {
    let since_ms = match (&q.since, q.since_ms) {
        (Some(t), _) => parse_since(t, now_ms()).map_err(|e| bad(format!("{e:#}")))?,
        (None, ms) => ms.unwrap_or(0),
    };
    let limit = q.limit.unwrap_or(1000);
    let rows = blocking(&state, move |s| {
        audit_rows(&s.source, Some(&s.data), since_ms, q.saga.as_deref(), limit)
    })
    .await?;
    Ok(Json(rows).into_response())
}

/// The body of a command: who, why, and a resolve's step and output.
#[derive(Deserialize)]
struct CommandBody {
    operator: Option<String>,
    reason: Option<String>,
    step: Option<String>,
    output: Option<Value>,
    /// Seconds to wait for the worker's verdict.
    wait: Option<u64>,
    /// Only say what the command would touch; send nothing.
    #[serde(default)]
    dry_run: bool,
}

fn required(what: &str, value: Option<&str>) -> Result<String, ApiError> {
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(bad(format!(
            "\"{what}\" is required: {}",
            if what == "reason" {
                "say why, e.g. \"provider outage INC-1234 over\""
            } else {
                "say who sends it, e.g. \"alice\""
            }
        ))),
    }
}

/// The commands a saga takes.
const COMMANDS: [&str; 4] = ["retry", "cancel", "resolve", "refund"];

fn unknown_command(name: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!(
            "no command {name:?}; the commands are {}",
            COMMANDS.join(", ")
        ),
    )
}

/// The command a route names; a resolve needs its step.
fn signal(name: &str, step: Option<String>, output: Option<Value>) -> Result<Signal, ApiError> {
    match name {
        "retry" => Ok(Signal::Retry),
        "cancel" => Ok(Signal::Cancel),
        "resolve" => Ok(Signal::Resolve {
            step: step
                .ok_or_else(|| bad("resolve needs \"step\": the step the saga is parked on"))?,
            output: output.unwrap_or_else(|| json!({})),
        }),
        other => Err(unknown_command(other)),
    }
}

/// `POST /api/sagas/{id}/{retry|cancel|resolve|refund}`: 200 when applied
/// or queued, 409 when refused (with why), as the CLI's `--json` says it.
async fn command(
    State(state): State<Shared>,
    Path((id, name)): Path<(String, String)>,
    Json(body): Json<CommandBody>,
) -> Answer {
    if body.dry_run {
        if !COMMANDS.contains(&name.as_str()) {
            return Err(unknown_command(&name));
        }
        let target = blocking(&state, move |s| {
            let view = s.source.saga(&id)?;
            let (step, error) =
                last_attempt(view.events.iter().map(|e| (e.kind.as_str(), &e.body)));
            Ok(Target {
                id: view.row.id,
                saga: view.row.saga,
                status: view.row.status,
                step,
                error,
                created_ms: view.row.created_ms,
            })
        })
        .await?;
        return Ok(Json(json!({"command": name, "targets": [target]})).into_response());
    }
    let audit = Audit {
        operator: required("operator", body.operator.as_deref())?,
        reason: required("reason", body.reason.as_deref())?,
        bulk: None,
    };
    let wait = body.wait.unwrap_or(10).min(60);
    if name == "refund" {
        let done = blocking(&state, move |s| {
            start_refund(&s.source, &s.config, &id, audit, wait)
        })
        .await?;
        let status = if done.outcome == "refused" {
            StatusCode::CONFLICT
        } else {
            StatusCode::OK
        };
        return Ok((status, Json(done)).into_response());
    }
    let request = CommandRequest {
        signal: signal(&name, body.step, body.output)?,
        audit,
    };
    let (report, refused) = blocking(&state, move |s| {
        let verdict = command::one(&s.source, &id, &request, wait)?;
        Ok((
            command::report(&id, &request, &verdict),
            matches!(verdict, Verdict::Refused(_)),
        ))
    })
    .await?;
    let status = if refused {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    Ok((status, Json(report)).into_response())
}

/// The body of a bulk command: the CLI's flags, and a resolve's step and
/// output.
#[derive(Deserialize)]
struct BulkBody {
    #[serde(flatten)]
    spec: BulkSpec,
    step: Option<String>,
    output: Option<Value>,
}

/// `POST /api/bulk/{retry|cancel|resolve|refund}`: a dry run's list, or the run's
/// summary once it has sent every command (resumable by its `bulk_id`).
async fn bulk_command(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<BulkBody>,
) -> Answer {
    let what = match name.as_str() {
        "refund" => Bulk::Refund,
        _ => Bulk::Signal(signal(&name, body.step, body.output)?),
    };
    let mut spec = body.spec;
    if !spec.dry_run {
        // A resume too: each is audited under who sent it, and why.
        spec.operator = required("operator", Some(&spec.operator))?;
        spec.reason = Some(required("reason", spec.reason.as_deref())?);
    }
    spec.wait = spec.wait.min(60);
    let answer = blocking(&state, move |s| {
        let mut log = |line: String| tracing::info!("{line}");
        Ok(
            match bulk::plan(&s.source, &s.data, what.clone(), &spec, &mut log)? {
                Planned::Dry(targets) => BulkAnswer::DryRun {
                    command: what.name().to_owned(),
                    targets,
                },
                Planned::Run(plan) => BulkAnswer::Done(bulk::execute(
                    &s.source,
                    Some(&s.config),
                    &plan,
                    spec.rate,
                    spec.wait,
                    &mut log,
                )?),
            },
        )
    })
    .await
    .map_err(|e| match e.0 {
        StatusCode::INTERNAL_SERVER_ERROR => bad(e.1),
        _ => e,
    })?;
    Ok(Json(answer).into_response())
}
