//! `/readyz`: whether this worker can do its work now. Kubernetes takes a
//! pod that is not ready out of its Service, and an operator sees which
//! part is missing.
//!
//! Ready means every part the profile uses answers: the engine (the
//! embedded core takes and journals work; on Temporal, the cluster's
//! visibility answered within the last few seconds), the broker connection
//! (Service Bus trigger), Redis (stock = "redis") and the order store
//! (orders = "cosmos"). Each check is bounded by [`CHECK_TIMEOUT`], and
//! they run at once, so a probe answers within it whatever is down.

use crate::engine::EngineHandle;
use crate::trigger::TriggerStats;
use sagaflow_activities::orders::Orders;
use sagaflow_activities::stock::Stock;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The longest a single check may take before it counts as not answering.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// On Temporal: visibility must have answered within this long.
const TEMPORAL_STALE_MS: u64 = 5_000;

/// How the engine's part is checked.
#[derive(Clone)]
pub enum EngineCheck {
    /// The embedded engine: its core runs (it stops when a journal commit
    /// fails).
    Embedded(EngineHandle),
    /// A Temporal cluster: when (ms since the Unix epoch) its visibility
    /// last answered the worker's in-progress count (0: not yet), and that
    /// count.
    Temporal {
        /// When visibility last answered.
        answered_at: Arc<AtomicU64>,
        /// Sagas in progress as it said.
        live: Arc<AtomicUsize>,
    },
}

/// The parts `/readyz` checks, attached once the worker has started.
#[derive(Clone)]
pub struct Readiness {
    /// The engine.
    pub engine: EngineCheck,
    /// The trigger's counters when it is the Service Bus trigger.
    pub broker: Option<Arc<TriggerStats>>,
    /// The stock store.
    pub stock: Stock,
    /// The order store.
    pub orders: Orders,
}

/// One part's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// "engine", "broker", "stock" or "orders".
    pub name: &'static str,
    /// Whether it answered.
    pub ok: bool,
    /// What was seen, or what is wrong.
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, result: Result<String, String>) -> Check {
        match result {
            Ok(detail) => Check {
                name,
                ok: true,
                detail,
            },
            Err(detail) => Check {
                name,
                ok: false,
                detail,
            },
        }
    }
}

impl Readiness {
    /// Every part's answer, in a fixed order.
    pub async fn check(&self) -> Vec<Check> {
        let (stock, orders) = tokio::join!(
            bounded(async {
                self.stock
                    .ping()
                    .await
                    .map(|()| "answers".to_owned())
                    .map_err(|e| e.to_string())
            }),
            bounded(async {
                self.orders
                    .ping()
                    .await
                    .map(|()| "answers".to_owned())
                    .map_err(|e| e.to_string())
            }),
        );
        let mut checks = vec![Check::new("engine", self.engine())];
        if let Some(stats) = &self.broker {
            checks.push(Check::new(
                "broker",
                if stats.connected.load(Ordering::Relaxed) {
                    Ok("connected".to_owned())
                } else {
                    Err(
                        "not connected to the Service Bus queue; the trigger is reconnecting"
                            .to_owned(),
                    )
                },
            ));
        }
        checks.push(Check::new("stock", stock));
        checks.push(Check::new("orders", orders));
        checks
    }

    /// Sagas in progress now (the `/metrics` gauge).
    pub fn in_progress(&self) -> usize {
        match &self.engine {
            EngineCheck::Embedded(handle) => handle.in_progress(),
            EngineCheck::Temporal { live, .. } => live.load(Ordering::Relaxed),
        }
    }

    fn engine(&self) -> Result<String, String> {
        match &self.engine {
            EngineCheck::Embedded(handle) if handle.is_running() => {
                Ok("embedded: journal writable".to_owned())
            }
            EngineCheck::Embedded(_) => Err(
                "embedded: the engine has stopped (a journal commit failed?); see the worker's log and restart it"
                    .to_owned(),
            ),
            EngineCheck::Temporal { answered_at, .. } => {
                let at = answered_at.load(Ordering::Relaxed);
                let ago = sagaflow_activities::clock::now_ms().saturating_sub(at);
                if at > 0 && ago <= TEMPORAL_STALE_MS {
                    Ok(format!("temporal: answered {ago} ms ago"))
                } else if at == 0 {
                    Err("temporal: the cluster has not answered yet".to_owned())
                } else {
                    Err(format!(
                        "temporal: the cluster has not answered for {ago} ms; check [temporal] address"
                    ))
                }
            }
        }
    }
}

async fn bounded(
    check: impl std::future::Future<Output = Result<String, String>>,
) -> Result<String, String> {
    tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())))
}
