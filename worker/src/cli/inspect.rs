//! `list`, `show`, `history`, `stats` and `stock` on a terminal: their
//! flags, and the rows of the operator service ([`crate::ops::source`])
//! printed as tables or JSON.

use super::shown::shown;
use crate::app::DataPaths;
use crate::config::{Config, StockKind};
use crate::engine::view;
use crate::ops::source::{refund_links, SagaView, Source};
use anyhow::{bail, Context, Result};
use sagaflow_workflows::SagaStatus;
use std::io::Write;
use std::path::{Path, PathBuf};
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
    let timeline = view::timeline(&def, &events, &saga.status);
    let waiting = view::breaker_wait(&events, &saga.status);
    let commands = view::commands(&events);
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
        let json = source.replayable_history(&args.id)?;
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
    let rt = crate::runtime::runtime()?;
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
