//! What one Temporal worker has in progress, for its intake limit
//! (`sagaflow run --max-live`).
//!
//! Each saga carries the keyword search attribute `SagaWorker`: the
//! identity of the worker process that started it ([`worker_id`]). A
//! worker counts the sagas it started that are running or compensating
//! (not parked, not ended) with one visibility count query a second, plus
//! the sagas it started since that query was sent (visibility trails
//! starts). So every worker admits up to its own limit, however many
//! there are, and what a worker asks of the cluster stays one count query
//! a second.
//!
//! A worker that dies leaves its sagas to the others, which run them but
//! do not count them against their own limits; a pod restarted under the
//! same name (and so the same identity) counts them again.

use super::client::{TemporalClient, TemporalError};
use super::workflow::WORKFLOW_TYPE;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use temporalio_client::WorkflowCountOptions;

/// How often a worker asks the cluster what it has in progress.
pub const COUNT_INTERVAL: Duration = Duration::from_secs(1);

/// The longest identity a keyword search attribute holds comfortably.
const MAX_ID: usize = 200;

/// This process's identity as `SagaWorker`: the host name (the pod's name
/// on Kubernetes) and the process id, `SAGAFLOW_WORKER_ID` when set.
pub fn worker_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let id = std::env::var("SAGAFLOW_WORKER_ID")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME")
                    .ok()
                    .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "host".into());
                format!("{host}/{}", std::process::id())
            });
        // Quotes would end the visibility query's string.
        id.chars()
            .filter(|c| *c != '\'' && *c != '"' && *c != '\\')
            .take(MAX_ID)
            .collect()
    })
}

/// Sagas this worker started and has in progress, as [`watch`] keeps it,
/// and the starts since its last query.
#[derive(Debug, Default)]
pub struct OwnSagas {
    /// The last count plus the starts since its query was sent.
    pub in_progress: Arc<AtomicUsize>,
    /// Sagas this process started (new, not duplicates), ever.
    pub started: AtomicUsize,
}

impl OwnSagas {
    /// Notes a new saga this worker started, so intake counts it before
    /// visibility does.
    pub fn note_start(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_progress.fetch_add(1, Ordering::Relaxed);
    }
}

impl TemporalClient {
    /// How many sagas this worker started that are running or
    /// compensating, as visibility says now.
    pub async fn count_own_in_progress(&self) -> Result<u64, TemporalError> {
        let query = format!(
            "WorkflowType = '{WORKFLOW_TYPE}' AND TaskQueue = '{}' AND SagaWorker = '{}' \
             AND SagaStatus IN ('running', 'compensating')",
            self.settings.task_queue,
            worker_id()
        );
        let n = self
            .client
            .count_workflows(query, WorkflowCountOptions::default())
            .await
            .map_err(|e| TemporalError::Request(e.to_string()))?;
        Ok(n.count() as u64)
    }
}

/// Keeps `own.in_progress` current, less `waiting()` (this worker's sagas
/// waiting for an open breaker), until dropped; `answered` is told the
/// wall time of each answer (for `/readyz`).
pub async fn watch(
    client: TemporalClient,
    own: Arc<OwnSagas>,
    waiting: impl Fn() -> usize,
    answered: impl Fn(),
) {
    loop {
        let started_before = own.started.load(Ordering::Relaxed);
        if let Ok(n) = client.count_own_in_progress().await {
            answered();
            let since = own.started.load(Ordering::Relaxed) - started_before;
            let live = (n as usize + since).saturating_sub(waiting());
            own.in_progress.store(live, Ordering::Relaxed);
        }
        tokio::time::sleep(COUNT_INTERVAL).await;
    }
}
