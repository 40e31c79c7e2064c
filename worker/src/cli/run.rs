//! `sagaflow run` (the worker) and `sagaflow submit` (the producer).

use crate::app::{self, Adapters, DataPaths};
use crate::config::{Config, EngineKind, TriggerKind};
use crate::engine::embedded::{Ended, Engine};
use crate::engine::liveness::Liveness;
use crate::engine::temporal::client::TemporalClient;
use crate::engine::temporal::intake::{self, OwnSagas, StartWindow};
use crate::engine::temporal::task_wait::TaskWait;
use crate::engine::temporal::worker::WorkerThread;
use crate::engine::{Definition, Starter};
use crate::ops::ready::{EngineCheck, Readiness};
use crate::runtime::runtime;
use crate::trigger::embedded::{self, TriggerConfig};
use crate::trigger::servicebus::ServiceBusTrigger;
use crate::trigger::{Intake, TriggerStats};
use anyhow::{bail, Context, Result};
use sagaflow_activities::queue::EmbeddedQueue;
use sagaflow_activities::Order;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Saga that each order starts
    #[arg(long, default_value = "checkout")]
    pub saga: String,
    /// Exit once the queue is empty and no saga is running or compensating (parked ones wait for an operator)
    #[arg(long)]
    pub until_idle: bool,
    /// Sagas in progress at most (parked ones and those waiting for an open breaker do not count); the trigger takes no more messages above it
    #[arg(long, default_value_t = 1000)]
    pub max_live: usize,
    /// Serve the admin API on this IP:PORT instead of [admin] bind (port 0 picks a free one; the log says which)
    #[arg(long, value_name = "ADDR", env = "SAGAFLOW_ADMIN_BIND")]
    pub admin_bind: Option<std::net::SocketAddr>,
}

/// Arguments of `submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// A file of orders (a JSON object, a JSON array, or JSON lines), or - for stdin
    pub file: PathBuf,
    /// Queue each line as it is, without checking it (the worker dead-letters malformed ones)
    #[arg(long)]
    pub raw: bool,
}

/// The engine a worker runs sagas on.
pub enum EngineRun {
    /// The embedded engine, in this process.
    Embedded {
        /// The engine.
        engine: Engine,
        /// A reader of its journal (idle checks).
        journal: rusqlite::Connection,
    },
    /// A Temporal worker on its own thread, polling the cluster.
    Temporal {
        /// Client for starts and idle checks.
        client: TemporalClient,
        /// The worker.
        worker: Option<WorkerThread>,
        /// Keeps the trigger's view of open sagas current.
        watcher: tokio::task::JoinHandle<()>,
    },
}

/// A running worker: adapters, engine, trigger, stock reaper.
pub struct Worker {
    /// The adapters (stock ledger, order store, sandbox), alive while the worker is.
    pub _adapters: Adapters,
    /// The engine.
    pub engine: EngineRun,
    /// The embedded queue, when the trigger consumes it.
    pub queue: Option<Arc<EmbeddedQueue>>,
    /// The Service Bus trigger's counters, when it runs (for idle checks).
    pub servicebus: Option<Arc<TriggerStats>>,
    /// What the trigger did, either kind.
    pub stats: Arc<TriggerStats>,
    /// What `/readyz` checks.
    pub readiness: Readiness,
    stop: Arc<AtomicBool>,
    trigger: tokio::task::JoinHandle<()>,
    reaper: tokio::task::JoinHandle<()>,
    idle_streak: u32,
}

impl Worker {
    /// Starts everything the profile selects; on the embedded engine
    /// recovery runs first.
    pub async fn start(
        config: &Config,
        paths: &DataPaths,
        saga: &str,
        max_live: usize,
        ended: Option<tokio::sync::mpsc::UnboundedSender<Ended>>,
    ) -> Result<Worker> {
        let def = Definition::new(config.saga(saga).map_err(anyhow::Error::msg)?.clone());
        // Before the engine: it asks whether sagas report for traces.
        crate::telemetry::start(&config.telemetry)?;
        let adapters = app::start_adapters(config, paths).await?;
        for saga in config.sagas.values() {
            for step in &saga.steps {
                for name in std::iter::once(&step.action).chain(step.compensation.as_ref()) {
                    if !adapters.registry.contains(name) {
                        bail!(
                            "saga {} step {} uses {name}, which this worker does not register; registered: {}",
                            saga.name,
                            step.name,
                            adapters.registry.names().join(", ")
                        );
                    }
                }
            }
        }
        let (engine, starter, engine_check) = match config.profile.engine {
            EngineKind::Embedded => {
                let engine =
                    app::start_engine(config, paths, adapters.registry.clone(), ended, None)?;
                if engine.recovered > 0 {
                    tracing::info!(
                        sagas = engine.recovered,
                        "recovered open sagas from the journal"
                    );
                }
                let starter = Starter::Embedded(engine.handle());
                let check = EngineCheck::Embedded(engine.handle());
                let journal = crate::engine::embedded::journal::open_reader(&paths.journal())?;
                (EngineRun::Embedded { engine, journal }, starter, check)
            }
            EngineKind::Temporal => {
                let client = TemporalClient::connect(&config.temporal).await?;
                client.check_search_attributes().await?;
                let wait = Arc::new(TaskWait::default());
                let worker =
                    WorkerThread::spawn(&config.temporal, adapters.registry.clone(), wait.clone())
                        .await?;
                tracing::info!(
                    address = config.temporal.address,
                    task_queue = config.temporal.task_queue,
                    steps = config.temporal.steps.name(),
                    "Temporal worker polling"
                );
                let window = config
                    .temporal
                    .max_task_wait_ms
                    .map(|ms| (StartWindow::new(ms), wait));
                let own = Arc::new(OwnSagas::new(
                    window.as_ref().map_or(usize::MAX, |(w, _)| w.limit()),
                ));
                let live = own.in_progress.clone();
                let answered_at = Arc::new(AtomicU64::new(0));
                let breakers = adapters.registry.breakers().clone();
                let answered = answered_at.clone();
                let watcher = tokio::spawn(intake::watch(
                    client.clone(),
                    own.clone(),
                    window,
                    move || breakers.snapshots().iter().map(|b| b.waiting).sum(),
                    move || answered.store(sagaflow_activities::clock::now_ms(), Ordering::Relaxed),
                ));
                let starter = Starter::Temporal(client.clone(), own);
                (
                    EngineRun::Temporal {
                        client,
                        worker: Some(worker),
                        watcher,
                    },
                    starter,
                    EngineCheck::Temporal { answered_at, live },
                )
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(TriggerStats::default());
        let intake = Intake::new(max_live, adapters.registry.breakers().clone(), &def.def);
        let (queue, servicebus, trigger) = match config.profile.trigger {
            TriggerKind::Embedded => {
                let queue = Arc::new(app::open_queue(paths)?);
                let trigger = tokio::spawn(embedded::run(
                    queue.clone(),
                    starter,
                    def,
                    TriggerConfig {
                        intake: intake.clone(),
                        batch: 256,
                        lock: Duration::from_secs(60),
                    },
                    stop.clone(),
                    stats.clone(),
                ));
                (Some(queue), None, trigger)
            }
            TriggerKind::ServiceBus => {
                let sb = ServiceBusTrigger::connect_check(&config.servicebus, intake).await?;
                let trigger = tokio::spawn(sb.run(starter, def, stop.clone(), stats.clone()));
                (None, Some(stats.clone()), trigger)
            }
        };
        let liveness = match &engine {
            EngineRun::Embedded { .. } => Liveness::Journal(paths.journal()),
            EngineRun::Temporal { client, .. } => Liveness::Temporal(client.clone()),
        };
        let reaper = app::spawn_stock_reaper(
            adapters.stock.clone(),
            liveness,
            config.stock.reservation_ttl_ms,
        );
        let readiness = Readiness {
            engine: engine_check,
            broker: servicebus.clone(),
            stock: adapters.stock.clone(),
            orders: adapters.orders.clone(),
        };
        Ok(Worker {
            readiness,
            _adapters: adapters,
            engine,
            queue,
            servicebus,
            stats,
            stop,
            trigger,
            reaper,
            idle_streak: 0,
        })
    }

    /// True when the queue is empty, no saga is running or compensating,
    /// and no operator signal waits for delivery (parked sagas wait for an
    /// operator, so they do not keep the worker busy). On Temporal,
    /// visibility lags a little, so idleness must hold for three checks in
    /// a row.
    pub async fn is_idle(&mut self) -> Result<bool> {
        let pending = match (&self.queue, &self.servicebus) {
            (Some(queue), _) => queue.counts()?.pending,
            (None, Some(stats)) => i64::from(
                !stats.looks_drained(sagaflow_activities::clock::now_ms(), SERVICE_BUS_QUIET_MS),
            ),
            (None, None) => 0,
        };
        let (open, needed) = match &self.engine {
            EngineRun::Embedded { journal, .. } => {
                let open: i64 = journal.query_row(
                    "SELECT (SELECT COUNT(*) FROM sagas WHERE status IN ('running', 'compensating'))
                          + (SELECT COUNT(*) FROM inbox)",
                    [],
                    |r| r.get(0),
                )?;
                (open as u64, 1)
            }
            EngineRun::Temporal { client, worker, .. } => {
                if worker.as_ref().is_some_and(WorkerThread::is_finished) {
                    bail!("the Temporal worker stopped; see the log above");
                }
                let mut open = client.count(Some("running")).await?
                    + client.count(Some("compensating")).await?;
                if open == 0 && client.parked_with_pending_work().await? {
                    open = 1;
                }
                (open, 3)
            }
        };
        if pending == 0 && open == 0 {
            self.idle_streak += 1;
        } else {
            self.idle_streak = 0;
        }
        Ok(self.idle_streak >= needed)
    }

    /// Stops the trigger, then the engine (pending journal writes finish;
    /// the Temporal worker shuts down gracefully).
    pub async fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.trigger.await;
        let s = &self.stats;
        tracing::info!(
            started = s.started.load(Ordering::Relaxed),
            duplicates = s.duplicates.load(Ordering::Relaxed),
            reused_ids = s.reused_ids.load(Ordering::Relaxed),
            dead_lettered = s.dead_lettered.load(Ordering::Relaxed),
            "trigger stopped (reused_ids: messages whose order id was already taken by a different order; each was logged)"
        );
        self.reaper.abort();
        match self.engine {
            EngineRun::Embedded { engine, journal } => {
                drop(journal);
                let _ = tokio::task::spawn_blocking(move || engine.stop()).await;
            }
            EngineRun::Temporal {
                mut worker,
                watcher,
                ..
            } => {
                watcher.abort();
                if let Some(worker) = worker.take() {
                    tokio::task::spawn_blocking(move || worker.stop())
                        .await?
                        .map_err(anyhow::Error::msg)?;
                }
            }
        }
        let _ = tokio::task::spawn_blocking(crate::telemetry::flush).await;
        Ok(())
    }
}

/// With the Service Bus trigger, the queue counts as empty after this long
/// without a message.
const SERVICE_BUS_QUIET_MS: u64 = 1500;

/// `sagaflow run`: the worker, until Ctrl-C (or idle with `--until-idle`).
pub fn run(config: Config, data: &Path, args: RunArgs) -> Result<ExitCode> {
    let paths = DataPaths::new(data)?;
    let rt = runtime()?;
    rt.block_on(async {
        // First: a bind without its token refuses before anything starts.
        let _admin = crate::admin::start(&config, data, args.admin_bind).await?;
        let mut worker = Worker::start(&config, &paths, &args.saga, args.max_live, None).await?;
        if let Some(admin) = &_admin {
            admin.health.attach(
                worker._adapters.registry.breakers().clone(),
                worker.stats.clone(),
                worker.readiness.clone(),
            );
        }
        tracing::info!(data = %data.display(), saga = args.saga, engine = ?config.profile.engine, "worker running; Ctrl-C (or SIGTERM) stops it");
        let mut terminate = terminate_signal()?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                // What Kubernetes, systemd and `docker stop` send.
                _ = terminate.recv() => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if args.until_idle && worker.is_idle().await? {
                        break;
                    }
                }
            }
        }
        tracing::info!("stopping");
        worker.stop().await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGTERM, where there is one.
#[cfg(unix)]
fn terminate_signal() -> Result<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::terminate()).context("cannot listen for SIGTERM")
}

/// No SIGTERM here: a stream that never yields.
#[cfg(not(unix))]
fn terminate_signal() -> Result<NeverSignal> {
    Ok(NeverSignal)
}

#[cfg(not(unix))]
struct NeverSignal;

#[cfg(not(unix))]
impl NeverSignal {
    async fn recv(&mut self) -> Option<()> {
        std::future::pending().await
    }
}

/// Reads FILE, or stdin for `-`.
pub fn read_input(file: &Path) -> Result<String> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read from stdin")?;
    } else {
        text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    Ok(text)
}

/// Splits submit input into messages: a JSON array, one object, or lines.
pub fn split_messages(text: &str) -> Vec<(usize, String)> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        if let Ok(serde_json::Value::Array(items)) =
            serde_json::from_str::<serde_json::Value>(trimmed)
        {
            return items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i + 1, v.to_string()))
                .collect();
        }
    }
    if let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str::<serde_json::Value>(trimmed)
    {
        return vec![(1, v.to_string())];
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.to_owned()))
        .collect()
}

/// `sagaflow submit FILE|-`: queues orders for the worker.
pub fn submit(data: &Path, args: SubmitArgs) -> Result<ExitCode> {
    let text = read_input(&args.file)?;
    let messages = split_messages(&text);
    let mut bad = Vec::new();
    if !args.raw {
        for (line, m) in &messages {
            if let Err(e) = Order::parse(m.as_bytes()) {
                bad.push(format!("{}:{line}: {e}", args.file.display()));
            }
        }
    }
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("{b}");
        }
        bail!(
            "{} of {} orders are invalid; nothing was queued. Fix them, or pass --raw to queue them anyway (the worker dead-letters invalid ones)",
            bad.len(),
            messages.len()
        );
    }
    let paths = DataPaths::new(data)?;
    let queue = app::open_queue(&paths)?;
    let bodies: Vec<&str> = messages.iter().map(|(_, m)| m.as_str()).collect();
    queue.send_batch(&bodies)?;
    println!(
        "queued {} order(s) in {}",
        bodies.len(),
        paths.queue().display()
    );
    Ok(ExitCode::SUCCESS)
}
