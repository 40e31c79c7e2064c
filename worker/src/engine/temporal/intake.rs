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
//!
//! Below `--max-live`, a window ([`StartWindow`]) follows how long the
//! cluster keeps this worker's workflow tasks waiting
//! ([`super::task_wait`]): a cluster that cannot dispatch tasks as fast as
//! sagas arrive queues them, and a saga's first task, its timers and an
//! operator's `cancel` all wait in that queue. The window shrinks when
//! the longest wait of an interval passes `[temporal] max_task_wait` and
//! grows again while waits stay under half of it, so the backlog, and with
//! it the answer time of every command, stays near that bound at any load;
//! orders wait on the queue instead, where KEDA sees them.

use super::client::{TemporalClient, TemporalError};
use super::scope::literal;
use super::task_wait::TaskWait;
use super::workflow::WORKFLOW_TYPE;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
#[derive(Debug)]
pub struct OwnSagas {
    /// The last count plus the starts since its query was sent.
    pub in_progress: Arc<AtomicUsize>,
    /// Sagas this process started (new, not duplicates), ever.
    pub started: AtomicUsize,
    /// The most sagas in progress the cluster's task waits allow now
    /// ([`StartWindow`]; `usize::MAX` when `max_task_wait` is off).
    pub window: Arc<AtomicUsize>,
    /// Whether intake met the window since [`watch`] last looked: only a
    /// window in use says anything about what the cluster can take.
    pub window_met: AtomicBool,
}

impl OwnSagas {
    /// Nothing started yet; the window starts at `window`.
    pub fn new(window: usize) -> OwnSagas {
        OwnSagas {
            in_progress: Arc::default(),
            started: AtomicUsize::new(0),
            window: Arc::new(AtomicUsize::new(window)),
            window_met: AtomicBool::new(false),
        }
    }

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
            "WorkflowType = '{WORKFLOW_TYPE}' AND TaskQueue = {} AND SagaWorker = {} \
             AND SagaStatus IN ('running', 'compensating')",
            literal(&self.settings.task_queue),
            literal(worker_id())
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
/// waiting for an open breaker), and `own.window` following `wait` (when
/// `window` is given), until dropped; `answered` is told the wall time of
/// each answer (for `/readyz`).
pub async fn watch(
    client: TemporalClient,
    own: Arc<OwnSagas>,
    mut window: Option<(StartWindow, Arc<TaskWait>)>,
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
        if let Some((window, wait)) = &mut window {
            let live = own.in_progress.load(Ordering::Relaxed);
            let before = window.limit();
            let worst = wait.take();
            let met = own.window_met.swap(false, Ordering::Relaxed);
            let now = window.update(worst, met);
            if now != before {
                tracing::debug!(
                    window = now,
                    worst_wait_ms = worst,
                    in_progress = live,
                    "intake window changed (it follows the cluster's workflow-task waits: [temporal] max_task_wait)"
                );
            }
            own.window.store(now, Ordering::Relaxed);
        }
        tokio::time::sleep(COUNT_INTERVAL).await;
    }
}

/// The window a worker starts with: small, so that a worker started on a
/// full queue does not hand the cluster a burst of `--max-live` first
/// tasks at once; it grows by a quarter an interval while intake meets it
/// and tasks wait less than `max_task_wait` (from 16 to 1,000 in about
/// 19 s).
pub const INITIAL_WINDOW: usize = 16;
/// The smallest window: a slow cluster still gets new sagas.
const MIN_WINDOW: usize = 4;
/// The most intervals a cut waits before another: the waits seen right
/// after a cut belong to tasks scheduled before it.
const MAX_HOLD: u64 = 10;

/// How many sagas this worker may have in progress for the cluster to
/// dispatch their workflow tasks within a bound: additive-increase,
/// multiplicative-decrease on the longest task wait of each interval
/// ([`COUNT_INTERVAL`]), as TCP does on round-trip times. Deciding only:
/// [`watch`] feeds it and publishes the limit.
#[derive(Debug, Clone)]
pub struct StartWindow {
    limit: usize,
    max_wait_ms: u64,
    tick: u64,
    hold_until: u64,
}

impl StartWindow {
    /// A window for tasks that should wait at most `max_wait_ms`.
    pub fn new(max_wait_ms: u64) -> StartWindow {
        StartWindow {
            limit: INITIAL_WINDOW,
            max_wait_ms,
            tick: 0,
            hold_until: 0,
        }
    }

    /// The sagas in progress allowed now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// One interval's news: the longest workflow-task wait (`None`: no
    /// task arrived) and whether intake met the window (it stopped taking
    /// orders there). Returns the new limit.
    pub fn update(&mut self, worst_wait_ms: Option<u64>, met: bool) -> usize {
        self.tick += 1;
        let Some(wait) = worst_wait_ms else {
            return self.limit;
        };
        if wait > self.max_wait_ms {
            if self.tick >= self.hold_until {
                // From the window, not from the count in progress: that
                // count trails visibility and dips as sagas end, and a cut
                // from a dip starves the worker for many intervals.
                self.limit = (self.limit * 3 / 4).max(MIN_WINDOW);
                let interval = COUNT_INTERVAL.as_millis() as u64;
                self.hold_until = self.tick + wait.div_ceil(interval).clamp(1, MAX_HOLD);
            }
        } else if met {
            // Grow only a window in use: an idle worker's would say
            // nothing about the cluster.
            self.limit = self.limit.saturating_add((self.limit / 4).max(1));
        }
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_while_tasks_wait_little_and_only_when_in_use() {
        let mut w = StartWindow::new(1_000);
        assert_eq!(w.limit(), INITIAL_WINDOW);
        assert_eq!(w.update(Some(50), true), 20, "in use, tasks quick: +1/4");
        assert_eq!(
            w.update(Some(50), false),
            20,
            "not met: no news about the cluster"
        );
        assert_eq!(w.update(None, true), 20, "no task arrived: no news");
        assert_eq!(
            w.update(Some(1_000), true),
            25,
            "at the bound: still within it"
        );
        let mut limit = 25;
        for _ in 0..18 {
            limit = w.update(Some(10), true);
        }
        assert!(
            limit > 1_000,
            "from 16 to 1,000 in about 19 intervals: {limit}"
        );
    }

    #[test]
    fn a_long_wait_cuts_the_window_once_per_backlog_and_never_below_the_floor() {
        let mut w = StartWindow::new(1_000);
        for _ in 0..10 {
            w.update(Some(10), true);
        }
        assert_eq!(w.limit(), 140);
        assert_eq!(w.update(Some(3_000), true), 105, "over the bound: -1/4");
        // The next two intervals still see tasks scheduled before the cut.
        assert_eq!(w.update(Some(3_000), true), 105);
        assert_eq!(w.update(Some(2_500), false), 105);
        assert_eq!(
            w.update(Some(2_000), false),
            78,
            "still slow after the hold: cut again"
        );
        assert_eq!(
            w.update(Some(900), true),
            97,
            "within the bound again: grow"
        );
        for _ in 0..200 {
            w.update(Some(60_000), true);
        }
        assert_eq!(w.limit(), MIN_WINDOW, "a slow cluster still gets new sagas");
    }
}
