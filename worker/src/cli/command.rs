//! `retry`, `cancel`, `resolve`, `refund` and `audit` on a terminal: their
//! flags, one command sent through the operator service
//! ([`crate::ops::command`], [`crate::ops::refund`]) or a bulk run
//! ([`super::bulk`]), and the verdict printed.

use super::shown::shown;
use crate::config::Config;
use crate::engine::command::{Audit, CommandRequest};
use crate::ops::audit::{audit_rows, parse_since, rfc3339};
use crate::ops::bulk::Bulk;
use crate::ops::command::{one, operator_name, report, Verdict};
use crate::ops::refund::start_refund;
use crate::ops::source::Source;
use anyhow::{bail, Context, Result};
use sagaflow_activities::clock::now_ms;
use sagaflow_workflows::Signal;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// What every command takes besides the saga.
#[derive(Debug, clap::Args)]
pub struct CommandArgs {
    /// Saga id (the order id); or select many with --where
    #[arg(required_unless_present_any = ["where_", "resume"])]
    pub id: Option<String>,
    /// Why: recorded with the command in the saga's history and the audit (required)
    #[arg(long, short = 'r', required_unless_present = "dry_run")]
    pub reason: Option<String>,
    /// Who sends it [default: $SAGAFLOW_OPERATOR, else the OS user]
    #[arg(long, env = "SAGAFLOW_OPERATOR")]
    pub operator: Option<String>,
    /// Seconds to wait for the running worker's verdict; on the embedded engine 0 returns once queued
    #[arg(long, default_value_t = 10)]
    pub wait: u64,
    /// Print the outcome as JSON
    #[arg(long)]
    pub json: bool,
    /// Bulk: command every saga these terms select, e.g. "status=parked and step=commit_stock and error~timeout" (terms: status=, saga=, step=, error~TEXT, started<RFC3339, started>RFC3339)
    #[arg(long = "where", value_name = "TERMS", conflicts_with = "id")]
    pub where_: Option<String>,
    /// Bulk: list exactly the sagas that would be commanded, and send nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Bulk: at most N commands per second
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// Bulk: the run's id [default: generated]; a run never commands a saga twice
    #[arg(long, value_name = "ID", requires = "where_")]
    pub bulk_id: Option<String>,
    /// Bulk: resume the run with this id (after Ctrl-C or a crash): the same sagas and command; the ones it commanded already are skipped; audited under this --operator and --reason
    #[arg(long, value_name = "ID", conflicts_with_all = ["id", "where_"])]
    pub resume: Option<String>,
    /// Bulk: command only the sagas a dry run listed (FILE: its --json output, or one id per line) that still match; others that match now are left alone
    #[arg(long, value_name = "FILE", requires = "where_")]
    pub ids: Option<std::path::PathBuf>,
    /// Bulk: the number of sagas the run commands, as the dry run showed; required above 1000
    #[arg(long, value_name = "N", requires = "where_")]
    pub confirm_targets: Option<usize>,
}

impl CommandArgs {
    /// The one saga, for the commands that take no filter.
    fn single_id(&self, command: &str) -> Result<&str> {
        match (&self.id, &self.where_, &self.resume) {
            (Some(_), _, _) if self.dry_run => bail!(
                "--dry-run lists the sagas a bulk {command} would touch: give --where TERMS (or --resume ID) instead of one id"
            ),
            (Some(id), _, _) => Ok(id),
            _ => bail!("{command} takes one saga id here"),
        }
    }

    /// The reason, refused when empty.
    pub(super) fn reason_text(&self) -> Result<String> {
        match self.reason.as_deref().map(str::trim) {
            Some(r) if !r.is_empty() => Ok(r.to_owned()),
            _ => {
                bail!("--reason is empty; say why, e.g. --reason \"provider outage INC-1234 over\"")
            }
        }
    }
}

/// Arguments of `resolve`.
#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    pub common: CommandArgs,
    /// The step the saga is parked on (its action, or its compensation when parked compensating)
    #[arg(long)]
    pub step: String,
    /// The step's output as JSON, as later steps will read it
    #[arg(long, default_value = "{}")]
    pub output: String,
}

/// Arguments of the hidden `signal ID retry` (the form before `retry`).
#[derive(Debug, clap::Args)]
pub struct SignalArgs {
    /// Saga id
    pub id: String,
    /// retry (the only signal there was)
    #[arg(value_parser = ["retry"])]
    pub signal: String,
    /// Why (required)
    #[arg(long, short = 'r')]
    pub reason: String,
    /// Who sends it [default: $SAGAFLOW_OPERATOR, else the OS user]
    #[arg(long, env = "SAGAFLOW_OPERATOR")]
    pub operator: Option<String>,
}

impl SignalArgs {
    /// As the arguments of `retry`.
    pub fn into_retry(self) -> CommandArgs {
        CommandArgs {
            id: Some(self.id),
            reason: Some(self.reason),
            operator: self.operator,
            wait: 10,
            json: false,
            where_: None,
            dry_run: false,
            rate: None,
            bulk_id: None,
            resume: None,
            ids: None,
            confirm_targets: None,
        }
    }
}

/// Arguments of `audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only commands since this time: RFC 3339 (2026-11-30T18:00:00Z) or an age (15m, 2h, 7d)
    #[arg(long)]
    pub since: Option<String>,
    /// Only this saga's commands
    #[arg(long)]
    pub saga: Option<String>,
    /// At most this many rows
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// Print JSON lines instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `sagaflow retry|cancel ID`.
pub fn simple(source: &Source, data: &Path, signal: Signal, args: CommandArgs) -> Result<ExitCode> {
    send(source, data, signal, args)
}

/// `sagaflow resolve ID --step STEP [--output JSON]`.
pub fn resolve(source: &Source, data: &Path, args: ResolveArgs) -> Result<ExitCode> {
    let output: serde_json::Value = serde_json::from_str(&args.output).with_context(|| {
        format!(
            "--output {:?} is not JSON; write the step's output, e.g. --output '{{\"committed\": true}}'",
            args.output
        )
    })?;
    let signal = Signal::Resolve {
        step: args.step,
        output,
    };
    send(source, data, signal, args.common)
}

fn send(source: &Source, data: &Path, signal: Signal, args: CommandArgs) -> Result<ExitCode> {
    if args.where_.is_some() || args.resume.is_some() {
        return super::bulk::run(source, data, Bulk::Signal(signal), None, args);
    }
    let id = args.single_id(signal.name())?.to_owned();
    let request = CommandRequest {
        signal,
        audit: Audit {
            operator: operator_name(args.operator.clone()),
            reason: args.reason_text()?,
            bulk: None,
        },
    };
    let name = request.signal.name();
    let verdict = one(source, &id, &request, args.wait)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", report(&id, &request, &verdict))?;
    } else {
        match &verdict {
            Verdict::Applied => writeln!(
                out,
                "{name} applied to saga {} (by {}: {})",
                shown(&id),
                shown(&request.audit.operator),
                shown(&request.audit.reason)
            )?,
            Verdict::Queued => writeln!(
                out,
                "{name} queued for saga {id}: no worker is running on this journal, or it has not answered yet; the worker checks it again and applies or refuses it (see `sagaflow audit --saga {id}`)",
            )?,
            Verdict::Refused(why) => {
                drop(out);
                eprintln!(
                    "sagaflow: {name} refused for saga {}: {}",
                    shown(&id),
                    shown(why)
                );
            }
        }
    }
    Ok(match verdict {
        Verdict::Refused(_) => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

/// `sagaflow refund ID`: starts the refund saga of a completed checkout;
/// with `--where` or `--resume`, of every saga selected.
pub fn refund(
    source: &Source,
    data: &Path,
    config: &Config,
    args: CommandArgs,
) -> Result<ExitCode> {
    if args.where_.is_some() || args.resume.is_some() {
        return super::bulk::run(source, data, Bulk::Refund, Some(config), args);
    }
    let audit = Audit {
        operator: operator_name(args.operator.clone()),
        reason: args.reason_text()?,
        bulk: None,
    };
    let id = args.single_id("refund")?.to_owned();
    let done = match source {
        Source::Admin(client) => client.refund(&id, &audit, args.wait)?,
        _ => start_refund(source, config, &id, audit, args.wait)?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&done)?);
    } else if done.outcome == "refused" {
        eprintln!("sagaflow: refund refused for saga {id}: {}", done.detail);
    } else {
        println!("{}", done.detail);
    }
    Ok(if done.outcome == "refused" {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `sagaflow audit`: every operator command, oldest first.
pub fn audit(source: &Source, data: &Path, args: AuditArgs) -> Result<ExitCode> {
    let since_ms = match &args.since {
        None => 0,
        Some(s) => parse_since(s, now_ms())?,
    };
    let rows = audit_rows(
        source,
        Some(data),
        since_ms,
        args.saga.as_deref(),
        args.limit,
    )?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for r in &rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<24} {:<24} {:<8} {:<8} {:<12} REASON",
        "AT(UTC)", "SAGA", "COMMAND", "OUTCOME", "OPERATOR"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<24} {:<24} {:<8} {:<8} {:<12} {}{}",
            rfc3339(r.at_ms),
            shown(&r.saga_id),
            r.command,
            r.outcome,
            shown(&r.operator),
            shown(&r.reason),
            match (r.outcome.as_str(), r.detail.as_deref()) {
                ("refused", Some(d)) => format!(" (refused: {})", shown(d)),
                (_, Some(d)) => format!(" ({})", shown(d)),
                _ => String::new(),
            }
        )?;
    }
    if rows.is_empty() {
        writeln!(out, "(no operator commands)")?;
    }
    Ok(ExitCode::SUCCESS)
}
