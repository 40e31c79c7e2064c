//! Operator views over the journal: list, show, history, stats, signal.

use super::shown::shown;
use crate::app::DataPaths;
use crate::config::{Config, StockKind, TemporalSettings};
use crate::engine::journal;
use crate::engine::read;
use crate::engine::temporal::client::TemporalClient;
use anyhow::{bail, Context, Result};
use rusqlite::Connection;
use sagaflow_workflows::{SagaDef, SagaStatus};
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

/// `--json`.
#[derive(Debug, clap::Args)]
pub struct JsonArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only sagas with this status: running, compensating, completed, compensated, parked
    #[arg(long, short = 's', value_parser = clap::builder::PossibleValuesParser::new(SagaStatus::NAMES))]
    pub status: Option<String>,
    /// At most this many rows
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON lines instead of a table
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Saga id (the order id)
    pub id: String,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Saga id (the order id)
    pub id: String,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Temporal only: write the workflow's Temporal history to FILE in the SDK's replayable JSON form (for replay tests)
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
}

/// Opens the journal of a data directory for reading, with a helpful error
/// when there is none.
pub fn open_journal(data: &Path) -> Result<Connection> {
    let paths = DataPaths {
        dir: data.to_owned(),
    };
    if !paths.journal().exists() {
        bail!(
            "no journal at {}; run `sagaflow run` or `sagaflow demo` first, or pass --data DIR",
            paths.journal().display()
        );
    }
    Ok(journal::open_reader(&paths.journal())?)
}

fn find_saga(conn: &Connection, id: &str, data: &Path) -> Result<read::SagaRow> {
    read::saga(conn, id)?.with_context(|| {
        format!(
            "no saga {id} in {}; `sagaflow list` shows the ids",
            data.display()
        )
    })
}

/// Where the operator views read from: the embedded journal in a data
/// directory, or a Temporal cluster. Both give the same rows, so every
/// command prints the same way on both engines.
pub enum Source {
    /// The embedded engine's journal under this data directory.
    Journal(PathBuf),
    /// A Temporal cluster.
    Temporal(TemporalSettings),
    /// A running worker's admin API (`--admin URL`), which answers from
    /// one of the two above.
    Admin(super::admin::client::AdminClient),
}

/// One saga with everything `show` and `history` print.
pub(super) struct SagaView {
    pub(super) row: read::SagaRow,
    pub(super) def: SagaDef,
    pub(super) input: Option<Value>,
    pub(super) events: Vec<read::EventRow>,
}

pub(super) fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}

impl Source {
    /// Sagas, newest first, optionally of one status.
    pub(super) fn list(&self, status: Option<&str>, limit: usize) -> Result<Vec<read::SagaRow>> {
        match self {
            Source::Journal(data) => Ok(read::list(&open_journal(data)?, status, limit)?),
            Source::Temporal(settings) => block_on(async {
                TemporalClient::connect(settings)
                    .await?
                    .list(status, limit)
                    .await
            })?
            .map_err(Into::into),
            Source::Admin(client) => client.list(status, limit),
        }
    }

    /// One saga with its definition, input and journal.
    pub(super) fn saga(&self, id: &str) -> Result<SagaView> {
        match self {
            Source::Journal(data) => {
                let conn = open_journal(data)?;
                let row = find_saga(&conn, id, data)?;
                let def = read::definition(&conn, &row.def_hash)?.with_context(|| {
                    format!(
                        "the definition {} of saga {} is missing from the journal",
                        row.def_hash, row.id
                    )
                })?;
                Ok(SagaView {
                    input: read::input(&conn, id)?,
                    events: read::events(&conn, id)?,
                    row,
                    def,
                })
            }
            Source::Temporal(settings) => {
                let saga =
                    block_on(async { TemporalClient::connect(settings).await?.saga(id).await })??;
                Ok(SagaView {
                    row: saga.row,
                    def: saga.def,
                    input: Some(saga.order),
                    events: saga.events,
                })
            }
            Source::Admin(client) => client.saga(id),
        }
    }

    /// Counts by status and latency percentiles.
    pub(super) fn stats(&self) -> Result<read::Stats> {
        match self {
            Source::Journal(data) => Ok(read::stats(&open_journal(data)?)?),
            Source::Temporal(settings) => Ok(block_on(async {
                TemporalClient::connect(settings).await?.stats().await
            })??),
            Source::Admin(client) => client.stats(),
        }
    }
}

/// The refund link, both ways: a refund saga names the sale it undoes in
/// its input; a refunded sale has a saga at its refund id.
pub(super) fn refund_links(
    source: &Source,
    id: &str,
    input: Option<&Value>,
) -> (Option<Value>, Option<Value>) {
    let refund_of = input.and_then(|i| i.get("refund")).cloned();
    let refunded_by = match &refund_of {
        Some(_) => None,
        None => source
            .saga(&crate::engine::command::refund_id(id))
            .ok()
            .map(|r| serde_json::json!({"id": r.row.id, "status": r.row.status})),
    };
    (refund_of, refunded_by)
}

/// `show --json`'s document, with the definition, as the admin API's
/// `GET /api/sagas/{id}` answers.
pub(super) fn saga_document(source: &Source, view: &SagaView) -> Value {
    let (refund_of, refunded_by) = refund_links(source, &view.row.id, view.input.as_ref());
    serde_json::json!({
        "saga": view.row,
        "input": view.input,
        "timeline": read::timeline(&view.def, &view.events, &view.row.status),
        "spans": read::spans(&view.events, &view.row.status),
        "commands": read::commands(&view.events),
        "refund_of": refund_of,
        "refunded_by": refunded_by,
        "definition": view.def,
    })
}

pub(crate) fn ms_to_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

/// `sagaflow list`.
pub fn list(source: &Source, args: ListArgs) -> Result<ExitCode> {
    let rows = source.list(args.status.as_deref(), args.limit)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for r in &rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Long ids (refunds, generated ones) widen the column, not the row.
    let w = rows.iter().map(|r| r.id.len()).max().unwrap_or(0).max(24);
    writeln!(
        out,
        "{:<w$} {:<10} {:<13} {:>9}  {:<12}  REASON",
        "ID", "SAGA", "STATUS", "DURATION", "STARTED(UTC)"
    )?;
    for r in &rows {
        let duration = r
            .ended_ms
            .map(|e| format!("{}ms", e.saturating_sub(r.created_ms)))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<w$} {:<10} {:<13} {:>9}  {:<12}  {}",
            shown(&r.id),
            r.saga,
            r.status,
            duration,
            ms_to_utc(r.created_ms),
            shown(r.reason.as_deref().unwrap_or(""))
        )?;
    }
    if rows.is_empty() {
        writeln!(
            out,
            "(no sagas{})",
            args.status
                .map(|s| format!(" with status {s}"))
                .unwrap_or_default()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `sagaflow show ID`: the timeline.
pub fn show(source: &Source, args: ShowArgs) -> Result<ExitCode> {
    let SagaView {
        row: saga,
        def,
        input,
        events,
    } = source.saga(&args.id)?;
    let timeline = read::timeline(&def, &events, &saga.status);
    let waiting = read::breaker_wait(&events, &saga.status);
    let commands = read::commands(&events);
    let (refund_of, refunded_by) = refund_links(source, &saga.id, input.as_ref());
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({
            "saga": saga,
            "input": input,
            "timeline": timeline,
            "commands": commands,
            "refund_of": refund_of,
            "refunded_by": refunded_by,
            "waiting": waiting.as_ref().map(|(dependency, since_ms)| serde_json::json!({
                "for": "breaker",
                "dependency": dependency,
                "since_ms": since_ms,
            })),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "saga {} ({}) status {}",
        shown(&saga.id),
        saga.saga,
        saga.status
    )?;
    if let Some(r) = &saga.reason {
        writeln!(out, "  reason: {}", shown(r))?;
    }
    if let Some((dependency, since)) = &waiting {
        writeln!(
            out,
            "  waiting: {dependency} breaker open since {} UTC (no attempt is spent while it waits, up to the step's max_wait)",
            ms_to_utc(*since)
        )?;
    }
    if let Some(of) = &refund_of {
        let text = |k: &str| shown(of[k].as_str().unwrap_or("?")).into_owned();
        writeln!(
            out,
            "  refund of: saga {} (asked by {}: {})",
            text("saga_id"),
            text("operator"),
            text("reason")
        )?;
    }
    if let Some(by) = &refunded_by {
        writeln!(
            out,
            "  refunded by: saga {} ({})",
            by["id"].as_str().unwrap_or("?"),
            by["status"].as_str().unwrap_or("?")
        )?;
    }
    let total = saga
        .ended_ms
        .map(|e| format!("{}ms", e.saturating_sub(saga.created_ms)))
        .unwrap_or_else(|| "still open".into());
    writeln!(
        out,
        "  started {} UTC, {}; {} journal events",
        ms_to_utc(saga.created_ms),
        total,
        events.len()
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "  {:<20} {:<13} {:<18} {:<8} {:>8} {:>9}  LAST ERROR",
        "STEP", "PHASE", "ACTIVITY", "STATUS", "ATTEMPTS", "DURATION"
    )?;
    for t in &timeline {
        writeln!(
            out,
            "  {:<20} {:<13} {:<18} {:<8} {:>8} {:>9}  {}",
            t.step,
            t.phase,
            t.activity,
            t.status,
            t.attempts,
            t.duration_ms
                .map(|d| format!("{d}ms"))
                .unwrap_or_else(|| "-".into()),
            shown(t.last_error.as_deref().unwrap_or(""))
        )?;
    }
    if !commands.is_empty() {
        writeln!(out)?;
        writeln!(out, "  operator commands:")?;
        for c in &commands {
            writeln!(
                out,
                "  {} UTC  {}{} by {}: {}{}",
                ms_to_utc(c.at_ms),
                c.command,
                c.step
                    .as_deref()
                    .map(|s| format!(" --step {s}"))
                    .unwrap_or_default(),
                if c.operator.is_empty() {
                    "(unknown)".into()
                } else {
                    shown(&c.operator)
                },
                shown(&c.reason),
                c.bulk
                    .as_deref()
                    .map(|b| format!(" (bulk {b})"))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sagaflow history ID`: the raw journal.
pub fn history(source: &Source, args: HistoryArgs) -> Result<ExitCode> {
    if let Some(file) = &args.export {
        let Source::Temporal(settings) = source else {
            bail!("--export writes a Temporal history; pass --engine temporal (the embedded journal is `history --json`)");
        };
        let json = block_on(async {
            TemporalClient::connect(settings)
                .await?
                .history_json(&args.id)
                .await
        })??;
        std::fs::write(file, json).with_context(|| format!("cannot write {}", file.display()))?;
        println!("wrote the history of {} to {}", args.id, file.display());
        return Ok(ExitCode::SUCCESS);
    }
    let events = source.saga(&args.id)?.events;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&events)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    for e in &events {
        let seq = e.seq.map(|s| format!("op {s}")).unwrap_or_default();
        writeln!(
            out,
            "{:>4} {} {:<19} {:<6} {}",
            e.n,
            ms_to_utc(e.at_ms),
            e.kind,
            seq,
            e.body
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `sagaflow stats`.
pub fn stats(source: &Source, args: JsonArgs) -> Result<ExitCode> {
    let s = source.stats()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "sagas        {}", s.total)?;
    writeln!(out, "  running      {}", s.running)?;
    writeln!(out, "  compensating {}", s.compensating)?;
    writeln!(out, "  completed    {}", s.completed)?;
    writeln!(out, "  compensated  {}", s.compensated)?;
    writeln!(out, "  parked       {}", s.parked)?;
    // Temporal reads only the most recently ended sagas for these.
    let over = if s.latency_over < s.completed + s.compensated {
        format!(", the last {} ended", s.latency_over)
    } else {
        String::new()
    };
    writeln!(
        out,
        "throughput   {} sagas/s (first start to last end{over})",
        s.sagas_per_sec
    )?;
    writeln!(
        out,
        "latency      p50 {}ms  p99 {}ms (start to end{over})",
        s.p50_ms, s.p99_ms
    )?;
    writeln!(
        out,
        "journal      {} events, {} signals waiting",
        s.events, s.inbox
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `sagaflow stock ...`.
#[derive(Debug, clap::Subcommand)]
pub enum StockCommand {
    /// Print the ledger's totals
    Show(JsonArgs),
    /// Set the stock of SKUs, e.g. `sagaflow stock set SKU-1=100 SKU-2=50` (replaces their counts)
    Set {
        /// SKU=UNITS pairs
        #[arg(required = true)]
        levels: Vec<String>,
    },
}

/// `sagaflow stock show|set`: the stock backend `profile.stock` selects.
pub fn stock(config: &Config, data: &Path, command: StockCommand) -> Result<ExitCode> {
    let paths = DataPaths::new(data)?;
    let rt = super::run::runtime()?;
    let ledger = rt.block_on(crate::app::open_stock(config, &paths))?;
    let where_ = match config.profile.stock {
        StockKind::Embedded => paths.stock().display().to_string(),
        StockKind::Redis => format!("Redis (keys {}*)", config.redis.key_prefix),
    };
    match command {
        StockCommand::Show(args) => {
            let s = rt.block_on(ledger.snapshot())?;
            if args.json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!(
                    "initial {}  available {}  reserved {}  sold {}{}",
                    s.initial,
                    s.available,
                    s.reserved,
                    s.sold,
                    if s.inconsistent {
                        "  (INCONSISTENT)"
                    } else {
                        ""
                    }
                );
            }
        }
        StockCommand::Set { levels } => {
            let mut parsed = Vec::new();
            for l in &levels {
                let Some((sku, units)) = l.split_once('=') else {
                    bail!("{l} is not SKU=UNITS; write e.g. SKU-1=100");
                };
                let units: i64 = units
                    .parse()
                    .ok()
                    .filter(|u| *u >= 0)
                    .with_context(|| format!("{l}: units must be a whole number >= 0"))?;
                parsed.push((sku.to_owned(), units));
            }
            rt.block_on(ledger.seed(&parsed))?;
            println!("stock set for {} SKU(s) in {where_}", parsed.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
