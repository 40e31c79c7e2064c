//! `sagaflow bench`: sagas per second and latency on the embedded engine.
//!
//! A closed loop keeps `--in-flight` sagas running: each that ends starts
//! the next. Latency is from the start request to the end report (which
//! comes after the commit of the saga's last journal write), so it includes
//! every fsync on the way. Every journal commit is fsync'd
//! (`synchronous=FULL`); `--no-group-commit` gives each event its own
//! transaction and fsync.
//!
//! The checkout's payment provider is the sandbox, in this process by
//! default or, with `--provider separate`, a `sagaflow sandbox` child
//! process: then the worker's own CPU per saga is measured apart from the
//! provider's. `--provider-latency` sets the delay the provider adds to
//! every request (the latency a real one has).
//!
//! `--data DIR --keep-journal` runs on the journal earlier runs left in
//! `DIR` (each run's saga ids are its own), so a run can be measured on a
//! journal of millions of ended sagas; `--retention` overrides `[embedded]
//! retention` for the run, and the progress lines show the journal's size.

use crate::app::{self, DataPaths, SANDBOX_KEY};
use crate::config::{Config, EngineKind, PaymentKind, StepMode};
use crate::engine::view::percentile;
use crate::runtime::runtime;
use anyhow::Result;
use sagaflow_workflows::duration::parse_duration_ms;
use sagaflow_workflows::{RetryPolicy, SagaDef, SagaStatus, StepDef};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod fixture;
mod provider;
mod temporal;

pub(super) use fixture::order;
use fixture::{journal_mb, journal_sagas, world};
use provider::{Meter, SeparateProvider};
use temporal::bench_temporal;

/// What the activities do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activities {
    /// Five steps that return at once: the engine's own ceiling
    Noop,
    /// The checkout saga with the embedded adapters and the payment sandbox over HTTP
    Checkout,
}

/// Where the checkout's payment provider runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// The payment sandbox in this process, over loopback HTTP (as `run` starts it)
    InProcess,
    /// A `sagaflow sandbox` child process: the worker's CPU is measured apart from the provider's
    Separate,
}

/// How a Temporal benchmark's saga steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TemporalSteps {
    /// Local chains on each side of the pivot, the pivot an activity task (`[temporal] steps = "checkpointed"`)
    Checkpointed,
    /// Every step a local activity, results recorded as markers (`steps = "local"`)
    Local,
    /// One activity task per step (`steps = "activities"`)
    Activities,
}

impl TemporalSteps {
    fn mode(self) -> StepMode {
        match self {
            TemporalSteps::Checkpointed => StepMode::Checkpointed,
            TemporalSteps::Local => StepMode::Local,
            TemporalSteps::Activities => StepMode::Activities,
        }
    }

    fn of(mode: StepMode) -> TemporalSteps {
        match mode {
            StepMode::Checkpointed => TemporalSteps::Checkpointed,
            StepMode::Local => TemporalSteps::Local,
            StepMode::Activities => TemporalSteps::Activities,
        }
    }
}

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which activities run
    #[arg(long, value_enum, default_value_t = Activities::Noop)]
    pub activities: Activities,
    /// Sagas to run [default: 20000 for noop, 10000 for checkout]
    #[arg(long)]
    pub sagas: Option<usize>,
    /// Sagas kept in flight (activities may run for all of them at once:
    /// [embedded] max_concurrent_activities is raised to this when lower)
    #[arg(long, default_value_t = 200)]
    pub in_flight: usize,
    /// Activities running at once, at most ([embedded]
    /// max_concurrent_activities; on Temporal, [temporal] activity_slots and
    /// local_activity_slots) [default: --in-flight, or the config's when
    /// higher]
    #[arg(long, value_name = "N")]
    pub max_activities: Option<usize>,
    /// One transaction and fsync per journal event instead of group commit
    #[arg(long)]
    pub no_group_commit: bool,
    /// Where the checkout's payment sandbox runs
    #[arg(long, value_enum, default_value_t = Provider::InProcess)]
    pub provider: Provider,
    /// Delay the payment provider adds to every request, e.g. 150ms [default: [sandbox] latency]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub provider_latency: Option<u64>,
    /// With --data: keep the journal (and stores) already in DIR instead of
    /// starting from empty ones; this run's saga ids do not collide with
    /// earlier runs'
    #[arg(long)]
    pub keep_journal: bool,
    /// Remove ended sagas this long after their end during the run
    /// ("off": keep them) [default: [embedded] retention]
    #[arg(long, value_name = "DURATION|off", value_parser = parse_retention)]
    pub retention: Option<Retention>,
    /// On Temporal: how the steps run [default: [temporal] steps]
    #[arg(long, value_enum, value_name = "HOW")]
    pub temporal_steps: Option<TemporalSteps>,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// A `--retention` value: a duration, or "off".
#[derive(Debug, Clone, Copy)]
pub struct Retention(Option<u64>);

fn parse_retention(text: &str) -> Result<Retention, String> {
    if text == "off" {
        return Ok(Retention(None));
    }
    parse_duration_ms(text).map(|ms| Retention(Some(ms)))
}

/// One benchmark result.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    engine: &'static str,
    activities: Activities,
    /// Embedded only.
    group_commit: Option<bool>,
    sagas: usize,
    in_flight: usize,
    /// Embedded only: activities running at once, at most.
    max_concurrent_activities: Option<usize>,
    sagas_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    elapsed_s: f64,
    fsync: &'static str,
    /// Checkout only: where the provider ran, and its added latency.
    provider: Option<Provider>,
    provider_latency_ms: Option<u64>,
    /// CPU time of this process per saga (with `--provider separate`, the
    /// worker's own: the provider's is apart).
    worker_cpu_ms_per_saga: f64,
    /// CPU time of the separate provider per saga.
    provider_cpu_ms_per_saga: Option<f64>,
    /// The most resident memory this process held during the run, in MB.
    peak_rss_mb: f64,
    /// Embedded only: sagas the journal held before the run.
    journal_sagas_before: Option<u64>,
    /// Embedded only: from opening the engine (recovery included) to the
    /// end of the run's first saga, in ms.
    first_saga_ms: Option<f64>,
    /// Embedded only: the journal's size on disk after the run (file and
    /// write-ahead log), in MB.
    journal_mb: Option<f64>,
    /// Temporal only: how the steps ran.
    temporal_steps: Option<TemporalSteps>,
    /// Temporal only: history events per saga, read back from the
    /// cluster's visibility once every saga of the run shows there.
    history_events_per_saga: Option<f64>,
}

pub(super) fn noop_saga() -> SagaDef {
    let step = |i: usize, compensation: bool| StepDef {
        name: format!("step{i}"),
        action: "noop.ok".into(),
        compensation: compensation.then(|| "noop.ok".into()),
        timeout_ms: 10_000,
        compensation_timeout_ms: None,
        max_wait_ms: None,
        settle_ms: None,
        retry: RetryPolicy::default(),
    };
    SagaDef {
        name: "noop".into(),
        steps: vec![
            step(1, true),
            step(2, true),
            step(3, true),
            step(4, false),
            step(5, false),
        ],
        pivot: Some(3),
        compensation_retry: RetryPolicy::default(),
    }
}

/// `sagaflow bench`.
pub fn bench(mut config: Config, data: Option<PathBuf>, args: BenchArgs) -> Result<ExitCode> {
    let checkout = args.activities == Activities::Checkout;
    if !checkout && (args.provider == Provider::Separate || args.provider_latency.is_some()) {
        anyhow::bail!("--provider and --provider-latency apply to --activities checkout (noop calls no provider)");
    }
    if checkout && config.profile.payment == PaymentKind::Http {
        anyhow::bail!(
            "profile.payment is \"http\": the benchmark would call the provider at {}; set payment = \"sandbox\" (and use --provider separate for a sandbox in its own process)",
            config.payment.base_url
        );
    }
    if let Some(ms) = args.provider_latency {
        config.sandbox.latency_ms = ms;
    }
    if let Some(steps) = args.temporal_steps {
        if config.profile.engine != EngineKind::Temporal {
            anyhow::bail!("--temporal-steps applies to --engine temporal");
        }
        config.temporal.steps = steps.mode();
    }
    let sagas = args.sagas.unwrap_or(match args.activities {
        Activities::Noop => 20_000,
        Activities::Checkout => 10_000,
    });
    let in_flight = args.in_flight.max(1);
    // A saga runs one activity at a time: every saga in flight may have its
    // activity running, or a slow provider would measure the cap instead.
    config.embedded.max_concurrent_activities = match args.max_activities {
        Some(n) => n.max(1),
        None => config.embedded.max_concurrent_activities.max(in_flight),
    };
    if let Some(n) = args.max_activities {
        config.temporal.activity_slots = n.max(1);
        config.temporal.local_activity_slots = n.max(1);
    }
    if args.keep_journal && data.is_none() {
        anyhow::bail!("--keep-journal keeps the journal in --data DIR; pass --data");
    }
    if let Some(Retention(ms)) = args.retention {
        config.embedded.retention_ms = ms;
        if let (Some(sagas), Some(audit)) = (ms, config.embedded.audit_retention_ms) {
            config.embedded.audit_retention_ms = Some(audit.max(sagas));
        }
    }
    let temp = data.is_none();
    let dir = data.unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "sagaflow-bench-{}-{:?}",
            std::process::id(),
            args.activities
        ))
    });
    if dir.exists() && !args.keep_journal {
        std::fs::remove_dir_all(&dir)?;
    }
    let paths = DataPaths::new(&dir)?;
    let journal_sagas_before = match config.profile.engine {
        EngineKind::Embedded => Some(journal_sagas(&paths.journal())?),
        EngineKind::Temporal => None,
    };
    let group_commit = !args.no_group_commit;
    let provider = match (checkout, args.provider) {
        (true, Provider::Separate) => {
            Some(SeparateProvider::start(&config, &dir.join("provider"))?)
        }
        _ => None,
    };
    if let Some(p) = &provider {
        config.profile.payment = PaymentKind::Http;
        config.payment.base_url = p.url.clone();
        // The child is this process's own sandbox, as the in-process one
        // is in app.rs.
        config.payment.http = config.payment.http.toward_own_sandbox();
        // The standalone sandbox takes any sk_test_ key; no thread runs yet.
        if std::env::var_os(&config.payment.api_key_env).is_none() {
            std::env::set_var(&config.payment.api_key_env, SANDBOX_KEY);
        }
    }
    let provider_pid = provider.as_ref().map(|p| p.child.id());
    let rt = runtime()?;
    let result = if config.profile.engine == EngineKind::Temporal {
        rt.block_on(bench_temporal(
            &config,
            &paths,
            &args,
            (sagas, in_flight),
            provider_pid,
        ))?
    } else {
        rt.block_on(async {
        let (registry, def, _adapters) = world(&config, &paths, args.activities, sagas).await?;
        let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel();
        let opening = Instant::now();
        let engine = app::start_engine(
            &config,
            &paths,
            registry,
            Some(ended_tx),
            Some(group_commit),
        )?;
        let handle = engine.handle();
        let meter = Meter::start(provider_pid);
        let mut started_at: HashMap<Arc<str>, Instant> = HashMap::with_capacity(in_flight * 2);
        let mut latencies: Vec<u64> = Vec::with_capacity(sagas);
        let mut not_completed = 0usize;
        let mut first_saga = None;
        // Ids of their own, so a run on a kept journal starts new sagas.
        let run = sagaflow_activities::clock::now_ms();
        let launch = |i: usize, started_at: &mut HashMap<Arc<str>, Instant>| {
            let id = format!("bench-{run:x}-{i:08}");
            let input = order(&id);
            started_at.insert(Arc::from(id.as_str()), Instant::now());
            handle.start_nowait(id, def.clone(), input);
        };
        let begin = Instant::now();
        let mut next = 0;
        while next < in_flight.min(sagas) {
            launch(next, &mut started_at);
            next += 1;
        }
        let mut last_progress = Instant::now();
        while latencies.len() < sagas {
            let Some(ended) = ended_rx.recv().await else {
                break;
            };
            if ended.status != SagaStatus::Completed {
                not_completed += 1;
            }
            if let Some(t) = started_at.remove(&ended.saga_id) {
                latencies.push(t.elapsed().as_micros() as u64);
            }
            first_saga.get_or_insert_with(|| opening.elapsed());
            if next < sagas {
                launch(next, &mut started_at);
                next += 1;
            }
            if last_progress.elapsed() >= Duration::from_secs(2) && !args.json {
                last_progress = Instant::now();
                eprintln!(
                    "bench: {}/{} sagas ended, journal {:.1} MB",
                    latencies.len(),
                    sagas,
                    journal_mb(&paths.journal())
                );
            }
        }
        let elapsed = begin.elapsed();
        let used = meter.per_saga(latencies.len());
        tokio::task::spawn_blocking(move || engine.stop()).await?;
        latencies.sort_unstable();
        if not_completed > 0 {
            anyhow::bail!("{not_completed} sagas did not complete; the measurement is void (see the journal with --data)");
        }
        anyhow::Ok(BenchResult {
            engine: "embedded",
            activities: args.activities,
            group_commit: Some(group_commit),
            sagas: latencies.len(),
            in_flight,
            max_concurrent_activities: Some(config.embedded.max_concurrent_activities),
            sagas_per_sec: (latencies.len() as f64 / elapsed.as_secs_f64()).round(),
            p50_ms: percentile(&latencies, 0.50) as f64 / 1000.0,
            p99_ms: percentile(&latencies, 0.99) as f64 / 1000.0,
            elapsed_s: (elapsed.as_secs_f64() * 100.0).round() / 100.0,
            fsync: "every journal commit (WAL, synchronous=FULL)",
            provider: None,
            provider_latency_ms: None,
            worker_cpu_ms_per_saga: used.worker_cpu_ms,
            provider_cpu_ms_per_saga: used.provider_cpu_ms,
            peak_rss_mb: used.peak_rss_mb,
            journal_sagas_before,
            first_saga_ms: first_saga.map(|d| (d.as_secs_f64() * 1e5).round() / 100.0),
            journal_mb: Some(journal_mb(&paths.journal())),
            temporal_steps: None,
            history_events_per_saga: None,
        })
    })?
    };
    let mut result = result;
    if checkout {
        result.provider = Some(args.provider);
        result.provider_latency_ms = Some(config.sandbox.latency_ms);
    }
    drop(provider);
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&result)?)?;
    } else {
        writeln!(
            out,
            "{} engine, {:?} activities, group commit {}, {} sagas, {} in flight: {} sagas/s, p50 {:.3} ms, p99 {:.3} ms ({} s)",
            result.engine,
            result.activities,
            match result.group_commit {
                Some(true) => "on",
                Some(false) => "off",
                None => "n/a",
            },
            result.sagas,
            result.in_flight,
            result.sagas_per_sec,
            result.p50_ms,
            result.p99_ms,
            result.elapsed_s
        )?;
        let provider = match (result.provider, result.provider_latency_ms) {
            (Some(p), Some(ms)) => format!(
                "provider {} (+{ms} ms per request{}), ",
                match p {
                    Provider::InProcess => "in this process",
                    Provider::Separate => "in its own process",
                },
                result
                    .provider_cpu_ms_per_saga
                    .map_or(String::new(), |c| format!(", {c:.3} ms CPU per saga"))
            ),
            _ => String::new(),
        };
        writeln!(
            out,
            "  {provider}this process {:.3} ms CPU per saga, peak RSS {:.1} MB",
            result.worker_cpu_ms_per_saga, result.peak_rss_mb
        )?;
        if let (Some(before), Some(first), Some(mb)) = (
            result.journal_sagas_before,
            result.first_saga_ms,
            result.journal_mb,
        ) {
            writeln!(
                out,
                "  journal: {before} sagas before the run, first saga ended {first:.1} ms after opening it, {mb:.1} MB after the run"
            )?;
        }
        if let (Some(steps), Some(events)) = (result.temporal_steps, result.history_events_per_saga)
        {
            let steps = match steps {
                TemporalSteps::Checkpointed => "checkpointed local chains",
                TemporalSteps::Local => "local activities",
                TemporalSteps::Activities => "activity tasks",
            };
            writeln!(out, "  steps as {steps}: {events} history events per saga")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
