//! The worker's admin HTTP API: the CLI's own reads and operator commands
//! (list, show, history, stats, audit; retry, cancel, resolve, refund, and
//! their bulk forms) as JSON, served by `sagaflow run` on `[admin] bind`.
//!
//! Invariants:
//! - every answer comes from the same functions the CLI prints from, over
//!   the same journal or cluster, so the API and the CLI never disagree;
//! - loopback by default; any other bind needs the bearer token of the
//!   variable `[admin] token_env` names, or the worker does not start;
//!   a token that is set is required on every `/api` route, compared in
//!   constant time, and never written to a log line or an error;
//! - no web page but the dashboard reaches the API: without a token only
//!   requests addressed to loopback names or the bound address are
//!   served (DNS rebinding), and `/api` refuses other origins
//!   ([`origin`]);
//! - operations block (SQLite reads, the Temporal client on its own
//!   runtime), so they run on the blocking pool, never on the runtime
//!   threads the sagas' activities use.
//!
//! The routes are documented, with examples, in `docs/admin-api.md`.

pub mod auth;
mod origin;
mod routes;
mod ui;

use crate::config::{Config, EngineKind};
use crate::ops::health::HealthView;
use crate::ops::remote::Token;
use crate::ops::source::Source;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// What every handler reads: where the sagas are, the config (the refund
/// saga's definition), the data directory (bulk plans) and the token.
pub(crate) struct AdminState {
    source: Source,
    config: Config,
    data: std::path::PathBuf,
    token: Option<Token>,
    /// The address the API listens on: without a token, the one name
    /// besides loopback's that requests may be addressed to.
    bound: SocketAddr,
    /// The running worker's breakers and intake, once it has started.
    health: Arc<HealthView>,
}

/// A running admin server; dropping it stops it.
pub struct AdminServer {
    task: tokio::task::JoinHandle<()>,
    /// Where the worker makes its breakers and intake visible.
    pub health: Arc<HealthView>,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the admin API on `bind` (else `[admin] bind`), or returns
/// `None` when it is off, or when the default port is held by another
/// worker on this machine (a warning says so). Refuses, with what to do,
/// a bind other than loopback without a token.
pub async fn start(
    config: &Config,
    data: &Path,
    bind: Option<SocketAddr>,
) -> Result<Option<AdminServer>> {
    let explicit = bind.is_some() || config.admin.bind_explicit;
    let Some(bind) = bind.or(config.admin.bind) else {
        return Ok(None);
    };
    let token = auth::token_for(&config.admin, bind)?;
    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && !explicit => {
            tracing::warn!(
                %bind,
                "admin API not served: the default port is in use (another worker on this machine?); set [admin] bind or --admin-bind to serve it elsewhere"
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot listen on {bind} for the admin API; pick another [admin] bind or --admin-bind (port 0 picks a free one), or \"off\"")
            })
        }
    };
    let addr = listener.local_addr()?;
    let source = match config.profile.engine {
        EngineKind::Embedded => Source::Journal(data.to_owned()),
        EngineKind::Temporal => Source::Temporal(config.temporal.clone()),
    };
    let state = Arc::new(AdminState {
        source,
        config: config.clone(),
        data: data.to_owned(),
        token,
        bound: addr,
        health: Arc::default(),
    });
    let health = state.health.clone();
    tracing::info!(
        address = %addr,
        token_required = state.token.is_some(),
        "admin API listening on http://{addr}"
    );
    let app = routes::router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok(Some(AdminServer { task, health }))
}
