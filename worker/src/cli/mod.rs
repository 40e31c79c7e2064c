//! Command-line interface: one documented function per subcommand.

mod archive;
mod bench;
mod bench_queue;
mod bench_stock;
mod bulk;
mod command;
mod demo;
mod dlq;
mod health;
mod inspect;
mod reconcile;
mod run;
mod sandbox;
mod shown;
mod usage;

use crate::config::{Config, EngineKind};
use crate::ops::remote::{client_token, AdminClient};
use crate::ops::source::Source;
use anyhow::{anyhow, bail, Result};
use clap::{Parser, Subcommand};
use sagaflow_activities::registry::BUILTIN_ACTIVITIES;
use sagaflow_workflows::Signal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The shipped sagas.toml, used when no file is given and none is in the
/// working directory.
const BUILTIN_CONFIG: &str = include_str!("../../../sagas.toml");

/// One example per command; `sagaflow help COMMAND` says more.
const EXAMPLES: &str = "\
Examples:
  sagaflow demo                                   a flash sale on embedded defaults, books checked
  sagaflow run --until-idle                       the worker; Ctrl-C (or an empty queue) stops it
  sagaflow submit orders.jsonl                    queue orders on the embedded queue
  sagaflow send orders.jsonl                      publish orders to the [servicebus] queue
  sagaflow list --status parked                   sagas waiting for an operator
  sagaflow show o-1042                            one saga's timeline, commands and refund links
  sagaflow history o-1042 --json                  its raw journal (or Temporal history)
  sagaflow stats                                  counts by status, throughput, latency
  sagaflow health                                 a running worker's circuit breakers and intake
  sagaflow retry o-1042 --reason \"INC-7 over\"     run the parked step again
  sagaflow cancel o-1043 --reason \"customer call\" stop before the pivot and compensate
  sagaflow resolve o-1044 --step commit_stock --reason \"done in the WMS\"
  sagaflow refund o-1045 --reason \"goods returned\" undo a completed checkout
  sagaflow retry --where \"status=parked and step=commit_stock\" --dry-run
  sagaflow audit --since 2h                       who commanded what, when and why
  sagaflow reconcile                              do the stores agree with the sagas? (--fix repairs holds)
  sagaflow archive --out old.jsonl --delete       ended sagas to a file, out of the journal
  sagaflow --admin http://10.0.0.7:7070 list      the same, through a worker's admin API
  sagaflow stock set SKU-1=500                    set (or `stock show`) the stock
  sagaflow dlq list                               dead letters with their reasons
  sagaflow check-config sagas.toml                validate a config, with file:line errors
  sagaflow sandbox --port 12111 --data sb         the payment sandbox on its own
  sagaflow bench --activities checkout            sagas/s and latency of the embedded engine
  sagaflow bench-queue                            queue -> saga starts against the broker's rate
  sagaflow bench-stock                            Redis reservations/s against redis-benchmark";

/// Durable checkout sagas: reserve stock, authorize payment, write the
/// order, capture, commit; compensated in reverse when a step fails for good.
#[derive(Debug, Parser)]
#[command(name = "sagaflow", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Args {
    /// sagas.toml to use [default: ./sagas.toml if present, else the built-in one]
    #[arg(long, short = 'c', global = true, env = "SAGAFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides profile.data_dir)
    #[arg(long, short = 'd', global = true, env = "SAGAFLOW_DATA")]
    data: Option<PathBuf>,
    /// Engine (overrides profile.engine): embedded, or temporal ([temporal] in sagas.toml)
    #[arg(long, global = true, value_enum, env = "SAGAFLOW_ENGINE")]
    engine: Option<EngineArg>,
    /// Send list, show, history, stats, audit and the operator commands to a running worker's admin API at URL (token from [admin] token_env)
    #[arg(long, global = true, value_name = "URL", env = "SAGAFLOW_ADMIN_URL")]
    admin: Option<String>,
    /// Log lines on stderr: text for people, or json (one object per line,
    /// with the span fields: saga_id, step, ...) for a log pipeline
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SAGAFLOW_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

// Parsed once per process: the size of the largest variant (`sandbox`, with
// its knob flags) costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the worker: consume orders, run sagas, recover after a crash
    ///
    /// Example: sagaflow run --until-idle
    Run(run::RunArgs),
    /// Queue orders (a JSON object, an array, or JSON lines) from FILE or - for stdin
    ///
    /// Example: sagaflow submit orders.jsonl
    Submit(run::SubmitArgs),
    /// Publish orders to the [servicebus] queue (Service Bus or a local AMQP 1.0 broker)
    ///
    /// Example: sagaflow send orders.jsonl
    Send(dlq::SendArgs),
    /// List sagas, newest first
    ///
    /// Example: sagaflow list --status parked --json
    List(inspect::ListArgs),
    /// Show one saga's timeline: each step and compensation with status, attempts, last error, duration
    ///
    /// Example: sagaflow show o-1042
    Show(inspect::ShowArgs),
    /// Print one saga's raw journal
    ///
    /// Example: sagaflow history o-1042 --json
    History(inspect::HistoryArgs),
    /// Counts by status and latency percentiles
    ///
    /// Example: sagaflow stats --json
    Stats(inspect::JsonArgs),
    /// A running worker's circuit breakers (state, since when, sagas waiting) and intake, from its admin API
    ///
    /// Exit 0 when every breaker is closed, 1 when one is open or half-open.
    ///
    /// Example: sagaflow health --json
    Health(health::HealthArgs),
    /// Retry the step or compensation a parked saga is parked on, with a fresh retry budget
    ///
    /// Example: sagaflow retry o-1042 --reason "payment provider back after INC-7"
    Retry(command::CommandArgs),
    /// Cancel a saga before its pivot: the step in progress finishes, then what it completed is compensated in reverse
    ///
    /// Example: sagaflow cancel o-1042 --reason "customer called to cancel"
    Cancel(command::CommandArgs),
    /// Record the step a parked saga is parked on as done by hand, with its output, and go on
    ///
    /// Example: sagaflow resolve o-1042 --step commit_stock --output '{}' --reason "committed in the WMS by hand"
    Resolve(command::ResolveArgs),
    /// Undo a completed checkout with its refund saga ([sagas.refund]): refund the payment, return the units, cancel the order
    ///
    /// Example: sagaflow refund o-1042 --reason "customer returned the goods"
    Refund(command::CommandArgs),
    /// List operator commands (who, when, why, applied or refused), oldest first
    ///
    /// Example: sagaflow audit --since 2h --json
    Audit(command::AuditArgs),
    /// Compare the sagas with the stock store, the payment provider and the order store; exit 1 on drift
    ///
    /// Reports a captured payment of an order not sold, an authorization still held after its saga
    /// ended, stock reserved without a live saga or sold without a sale, an order document without a
    /// completed saga, and a completed saga missing its capture, stock commit or order document.
    /// `--fix --reason TEXT` voids the holds and releases the reservations (the safe repairs) and
    /// records each in the audit.
    ///
    /// Example: sagaflow reconcile --fix --reason "after INC-7"
    Reconcile(reconcile::ReconcileArgs),
    /// Write ended sagas (row, input, events) to a JSON-lines file before retention removes them
    ///
    /// Appends every saga that ended more than --older-than ago (default: [embedded] retention)
    /// to FILE, oldest end first; with --delete, removes them from the journal once the file is
    /// synced (safe beside a running worker: only ended sagas are touched).
    ///
    /// Example: sagaflow archive --older-than 2d --out archive-2026-12.jsonl --delete
    Archive(archive::ArchiveArgs),
    /// Same as `retry` (kept for scripts written before it): sagaflow signal ID retry --reason TEXT
    #[command(hide = true)]
    Signal(command::SignalArgs),
    /// Show or set the stock (the embedded ledger, or Redis with profile.stock = "redis")
    ///
    /// Example: sagaflow stock set SKU-1=500
    #[command(subcommand)]
    Stock(inspect::StockCommand),
    /// Dead-lettered messages: list them with their reasons, or resubmit one
    ///
    /// Example: sagaflow dlq list
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Same as `dlq list`
    #[command(hide = true)]
    DeadLetters(dlq::DlqListArgs),
    /// Validate a sagas.toml and print what it defines
    ///
    /// Example: sagaflow check-config sagas.toml
    CheckConfig(CheckArgs),
    /// Run a flash sale on embedded defaults and check the invariants
    ///
    /// Example: sagaflow demo
    Demo(demo::DemoArgs),
    /// The payment sandbox standalone (`sagaflow sandbox --port P --data DIR`), its knobs, its ledger
    ///
    /// Example: sagaflow sandbox --port 12111 --data sandbox-data
    Sandbox(sandbox::SandboxArgs),
    /// Measure the embedded engine: sagas per second and latency
    ///
    /// Example: sagaflow bench --activities checkout --sagas 10000 --in-flight 200
    Bench(bench::BenchArgs),
    /// Measure the Service Bus trigger: queue -> durable saga starts, next to the broker's own rate
    ///
    /// Example: sagaflow bench-queue
    BenchQueue(bench_queue::BenchQueueArgs),
    /// Measure the Redis stock adapter: reservations per second next to redis-benchmark on the same script
    ///
    /// Example: sagaflow bench-stock
    BenchStock(bench_stock::BenchStockArgs),
}

impl Command {
    /// Whether `--admin URL` can carry it.
    fn speaks_admin(&self) -> bool {
        matches!(
            self,
            Command::List(_)
                | Command::Show(_)
                | Command::History(_)
                | Command::Stats(_)
                | Command::Health(_)
                | Command::Audit(_)
                | Command::Retry(_)
                | Command::Cancel(_)
                | Command::Resolve(_)
                | Command::Refund(_)
                | Command::Signal(_)
        )
    }
}

/// `--engine`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EngineArg {
    /// The embedded SQLite journal
    Embedded,
    /// A Temporal cluster
    Temporal,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The file to check [default: the --config file, ./sagas.toml, or the built-in one]
    file: Option<PathBuf>,
}

/// Parses the command line.
pub fn parse() -> Args {
    Args::parse()
}

/// Runs one subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
    init_tracing(matches!(args.command, Command::Run(_)), args.log_format);
    let config_path = args.config.clone();
    let engine = args.engine;
    let load = |p: Option<&Path>| -> Result<Config> {
        let mut config = load_config(p.or(config_path.as_deref()))?;
        match engine {
            Some(EngineArg::Embedded) => config.profile.engine = EngineKind::Embedded,
            Some(EngineArg::Temporal) => config.profile.engine = EngineKind::Temporal,
            None => {}
        }
        Ok(config)
    };
    let remote = args.admin.clone();
    if remote.is_some() && !args.command.speaks_admin() {
        bail!("--admin applies to list, show, history, stats, health, audit, retry, cancel, resolve and refund; run this command on the worker's machine without --admin");
    }
    let source = |config: &Config, data: Option<PathBuf>| -> Result<Source> {
        Ok(match (&remote, config.profile.engine) {
            (Some(url), _) => Source::Admin(AdminClient::new(url, client_token(&config.admin))?),
            (None, EngineKind::Embedded) => Source::Journal(data_dir(config, data)),
            (None, EngineKind::Temporal) => Source::Temporal(config.temporal.clone()),
        })
    };
    // The operator commands read the engine and keep bulk plans in the
    // data directory.
    type WithData<'a> = Box<dyn FnOnce(&Source, &Path) -> Result<ExitCode> + 'a>;
    let data_flag = args.data.clone();
    let with_data = |f: WithData<'_>| {
        let config = load(None)?;
        let data = data_dir(&config, data_flag);
        f(&source(&config, Some(data.clone()))?, &data)
    };
    match args.command {
        Command::CheckConfig(c) => check_config(c.file.as_deref().or(config_path.as_deref())),
        Command::Run(r) => {
            let config = load(None)?;
            let data = data_dir(&config, args.data);
            run::run(config, &data, r)
        }
        Command::Submit(s) => {
            let config = load(None)?;
            run::submit(&data_dir(&config, args.data), s)
        }
        Command::List(l) => inspect::list(&source(&load(None)?, args.data)?, l),
        Command::Show(s) => inspect::show(&source(&load(None)?, args.data)?, s),
        Command::History(s) => inspect::history(&source(&load(None)?, args.data)?, s),
        Command::Stats(s) => inspect::stats(&source(&load(None)?, args.data)?, s),
        Command::Health(h) => health::health(&load(None)?, remote.as_deref(), h),
        Command::Retry(c) => with_data(Box::new(|source, data| {
            command::simple(source, data, Signal::Retry, c)
        })),
        Command::Cancel(c) => with_data(Box::new(|source, data| {
            command::simple(source, data, Signal::Cancel, c)
        })),
        Command::Resolve(c) => {
            with_data(Box::new(|source, data| command::resolve(source, data, c)))
        }
        Command::Refund(c) => {
            let config = load(None)?;
            let data = data_dir(&config, args.data);
            command::refund(&source(&config, Some(data.clone()))?, &data, &config, c)
        }
        Command::Audit(a) => {
            let config = load(None)?;
            let data = data_dir(&config, args.data);
            command::audit(&source(&config, Some(data.clone()))?, &data, a)
        }
        Command::Reconcile(r) => {
            let config = load(None)?;
            let data = data_dir(&config, args.data);
            reconcile::reconcile(&config, &source(&config, Some(data.clone()))?, &data, r)
        }
        Command::Archive(a) => {
            let config = load(None)?;
            let data = data_dir(&config, args.data);
            archive::archive(&config, &data, a)
        }
        Command::Signal(s) => with_data(Box::new(|source, data| {
            command::simple(source, data, Signal::Retry, s.into_retry())
        })),
        Command::Stock(c) => {
            let config = load(None)?;
            let data = data_dir(&config, args.data);
            inspect::stock(&config, &data, c)
        }
        Command::Send(s) => dlq::send(&load(None)?, s),
        Command::Dlq(c) => {
            let config = load(None)?;
            let data = data_dir(&config, args.data);
            dlq::dlq(&config, &data, c)
        }
        Command::DeadLetters(a) => {
            let config = load(None)?;
            let data = data_dir(&config, args.data);
            dlq::dlq(&config, &data, dlq::DlqCommand::List(a))
        }
        Command::Demo(d) => {
            let config = load(None)?;
            demo::demo(config, args.data, d)
        }
        Command::Sandbox(s) => {
            let config = load(None)?;
            let data = data_dir(&config, args.data);
            sandbox::sandbox(&config, &data, s)
        }
        Command::Bench(b) => bench::bench(load(None)?, args.data, b),
        Command::BenchQueue(b) => bench_queue::bench_queue(load(None)?, args.data, b),
        Command::BenchStock(b) => bench_stock::bench_stock(load(None)?, b),
    }
}

fn init_tracing(worker: bool, format: LogFormat) {
    let default = if worker { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // Colours only on a terminal: a log file or a pipe gets plain text.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

fn data_dir(config: &Config, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| config.profile.data_dir.clone())
}

/// Loads and validates the config: the given file, else ./sagas.toml, else
/// the built-in copy.
pub fn load_config(path: Option<&Path>) -> Result<Config> {
    let result = match path {
        Some(p) => Config::load_file(p, &BUILTIN_ACTIVITIES),
        None if Path::new("sagas.toml").exists() => {
            Config::load_file(Path::new("sagas.toml"), &BUILTIN_ACTIVITIES)
        }
        None => Config::parse(
            BUILTIN_CONFIG,
            Path::new("<built-in sagas.toml>"),
            &BUILTIN_ACTIVITIES,
        ),
    };
    result.map_err(|e| anyhow!("{e}"))
}

/// `sagaflow check-config [FILE]`: validates and summarizes.
fn check_config(path: Option<&Path>) -> Result<ExitCode> {
    match load_config(path) {
        Ok(config) => {
            println!("{}: ok", config.file.display());
            println!(
                "profile: engine={:?} trigger={:?} stock={:?} orders={:?} payment={:?} data_dir={}",
                config.profile.engine,
                config.profile.trigger,
                config.profile.stock,
                config.profile.orders,
                config.profile.payment,
                config.profile.data_dir.display()
            );
            for (name, saga) in &config.sagas {
                let steps: Vec<String> = saga
                    .steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let pivot = if saga.pivot == Some(i) {
                            " (pivot)"
                        } else {
                            ""
                        };
                        format!("{}{pivot}", s.name)
                    })
                    .collect();
                println!("saga {name}: {}", steps.join(" -> "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}
