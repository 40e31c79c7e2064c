//! Operator commands: `retry`, `cancel`, `resolve`, `refund`, and the
//! `audit` that records them, on both engines.
//!
//! A command is checked before it is sent and refused at once, with the
//! reason, when it does not apply: on the embedded engine by replaying the
//! saga from its journal (the engine's own decision), on Temporal by the
//! workflow Update's validator. Then the worker applies it exactly once and
//! records it with who sent it and why.

use super::inspect::{open_journal, Source};
use super::shown::shown;
use crate::app::DataPaths;
use crate::config::Config;
use crate::engine::command::{refund_id, Audit, CommandRequest, StartRequest};
use crate::engine::core::now_ms;
use crate::engine::operator::{self, AuditRow};
use crate::engine::read::EventRow;
use crate::engine::temporal::client::TemporalClient;
use crate::engine::Definition;
use anyhow::{bail, Context, Result};
use sagaflow_workflows::Signal;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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

/// The operator's name: the flag or variable, else the OS user.
pub(super) fn operator_name(given: Option<String>) -> String {
    given
        .filter(|s| !s.trim().is_empty())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .or_else(|| {
            std::process::Command::new("whoami")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".into())
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
        return super::bulk::run(source, data, super::bulk::Bulk::Signal(signal), None, args);
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

/// What became of one command.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The worker applied it.
    Applied,
    /// Queued for a worker that has not answered (embedded engine).
    Queued,
    /// Refused, with the reason.
    Refused(String),
}

impl Verdict {
    /// The outcome's name: applied, queued or refused.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Applied => "applied",
            Verdict::Queued => "queued",
            Verdict::Refused(_) => "refused",
        }
    }

    /// A Temporal Update's answer: applied, or refused by the validator
    /// before anything was recorded in the history.
    pub fn from_update(answer: Result<(), String>) -> Verdict {
        match answer {
            Ok(()) => Verdict::Applied,
            Err(why) => Verdict::Refused(format!("{why}; nothing was sent")),
        }
    }

    /// Reads the verdict back from a [`report`].
    pub fn from_report(v: &serde_json::Value) -> Option<Verdict> {
        match v["outcome"].as_str()? {
            "applied" => Some(Verdict::Applied),
            "queued" => Some(Verdict::Queued),
            "refused" => Some(Verdict::Refused(
                v["detail"].as_str().unwrap_or_default().to_owned(),
            )),
            _ => None,
        }
    }
}

/// One command's outcome as `--json` prints it and the admin API answers.
pub(super) fn report(id: &str, request: &CommandRequest, verdict: &Verdict) -> serde_json::Value {
    serde_json::json!({
        "saga_id": id,
        "command": request.signal.name(),
        "outcome": verdict.name(),
        "detail": match verdict {
            Verdict::Refused(why) => Some(why.as_str()),
            _ => None,
        },
        "operator": request.audit.operator,
        "reason": request.audit.reason,
    })
}

/// Sends one command to one saga on either engine and returns its verdict.
pub(super) fn one(
    source: &Source,
    id: &str,
    request: &CommandRequest,
    wait_secs: u64,
) -> Result<Verdict> {
    Ok(match source {
        Source::Journal(data) => embedded(data, id, request, wait_secs)?,
        Source::Temporal(settings) => {
            let verdict = super::inspect::block_on(async {
                TemporalClient::connect(settings)
                    .await?
                    .command(id, request, Duration::from_secs(wait_secs.max(1)))
                    .await
            })??;
            Verdict::from_update(verdict)
        }
        Source::Admin(client) => client.command(id, request, wait_secs)?,
    })
}

/// Checks against the replayed saga, queues, and waits up to `wait_secs`
/// for the running worker's verdict.
pub(super) fn embedded(
    data: &std::path::Path,
    id: &str,
    request: &CommandRequest,
    wait_secs: u64,
) -> Result<Verdict> {
    let inbox_id = match check_and_queue(data, id, request)? {
        Ok(inbox_id) => inbox_id.expect("a command outside a bulk run is always queued"),
        Err(refused) => return Ok(refused),
    };
    let conn = open_journal(data)?;
    let journal = DataPaths {
        dir: data.to_owned(),
    }
    .journal();
    wait_for_verdict(&conn, &journal, inbox_id, wait_secs)
}

/// Checks against the replayed saga and queues: the inbox id, `None` when
/// the command's bulk run commanded this saga already, or the refusal.
fn check_and_queue(
    data: &std::path::Path,
    id: &str,
    request: &CommandRequest,
) -> Result<Result<Option<i64>, Verdict>> {
    let mut conn = open_journal(data)?;
    if let Some(bulk) = &request.audit.bulk {
        if operator::commanded(&conn, bulk, id)? {
            return Ok(Ok(None));
        }
    }
    if let Err(why) = operator::check(&conn, id, &request.signal)? {
        return Ok(Err(Verdict::Refused(format!("{why}; nothing was sent"))));
    }
    Ok(Ok(operator::queue(&mut conn, id, request, now_ms())?))
}

/// A bulk run's step on the embedded engine: check and queue without
/// waiting; `None` when the run commanded this saga already.
pub(super) fn embedded_check_and_queue(
    data: &std::path::Path,
    id: &str,
    request: &CommandRequest,
) -> Result<Option<Verdict>> {
    Ok(match check_and_queue(data, id, request)? {
        Ok(Some(_)) => Some(Verdict::Queued),
        Ok(None) => None,
        Err(refused) => Some(refused),
    })
}

/// Waits up to `wait_secs` for the running worker's verdict on inbox row
/// `inbox_id`; `Queued` when no worker runs or none answered in time.
fn wait_for_verdict(
    conn: &rusqlite::Connection,
    journal: &std::path::Path,
    inbox_id: i64,
    wait_secs: u64,
) -> Result<Verdict> {
    if wait_secs == 0 || !operator::worker_running(journal) {
        return Ok(Verdict::Queued);
    }
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    while Instant::now() < deadline {
        if let Some(row) = operator::outcome(conn, inbox_id)? {
            return Ok(match row.outcome.as_str() {
                "applied" => Verdict::Applied,
                _ => Verdict::Refused(row.detail.unwrap_or_default()),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Verdict::Queued)
}

/// The saga name `sagaflow refund` starts.
pub const REFUND_SAGA: &str = "refund";

/// What became of a refund request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundOutcome {
    /// The saga refunded.
    pub saga_id: String,
    /// applied (started), queued (for a worker), exists (started before:
    /// nothing done), or refused.
    pub outcome: String,
    /// The refund saga's id.
    pub refund_saga: String,
    /// What happened, in words.
    pub detail: String,
}

/// Starts the refund saga of completed saga `id` on either engine, or
/// says why not. A second request finds the first refund and does nothing.
pub(super) fn start_refund(
    source: &Source,
    config: &Config,
    id: &str,
    audit: Audit,
    wait: u64,
) -> Result<RefundOutcome> {
    let refund = refund_id(id);
    let outcome = |outcome: &str, detail: String| RefundOutcome {
        saga_id: id.to_owned(),
        outcome: outcome.to_owned(),
        refund_saga: refund.clone(),
        detail,
    };
    let def = config.sagas.get(REFUND_SAGA).cloned().with_context(|| {
        format!(
            "{} defines no [sagas.{REFUND_SAGA}]; add it (the shipped sagas.toml has one: refund the payment, return the stock, cancel the order)",
            config.file.display()
        )
    })?;
    let saga = match source.saga(id) {
        Ok(saga) => saga,
        Err(e) if matches!(source, Source::Journal(_)) && e.to_string().starts_with("no saga") => {
            return Ok(outcome("refused", not_in_journal(config, id)));
        }
        Err(e) => return Err(e),
    };
    let refunds = saga
        .input
        .as_ref()
        .and_then(|i| i["refund"]["saga_id"].as_str());
    if let Some(of) = refunds {
        return Ok(outcome(
            "refused",
            format!("it is itself the refund of saga {of}; nothing was sent"),
        ));
    }
    if saga.row.status != "completed" {
        return Ok(outcome(
            "refused",
            format!(
                "refund applies only to a completed saga, and this one is {}; {}; nothing was sent",
                saga.row.status,
                match saga.row.status.as_str() {
                    "running" => "before its pivot `sagaflow cancel` stops it",
                    "parked" => "finish it first (`sagaflow retry` or `resolve`)",
                    _ => "nothing was sold",
                }
            ),
        ));
    }
    if let Ok(existing) = source.saga(&refund) {
        return Ok(outcome(
            "exists",
            format!(
                "saga {id} has a refund already: {refund} ({}); nothing was started",
                existing.row.status
            ),
        ));
    }
    let mut input = saga
        .input
        .clone()
        .with_context(|| format!("the journal of saga {id} holds no readable order"))?;
    input["refund"] = serde_json::json!({
        "saga_id": id,
        "payment_intent": captured_intent(&saga.events),
        "operator": audit.operator,
        "reason": audit.reason,
    });
    let request = StartRequest {
        saga_id: refund.clone(),
        def,
        input,
        audit,
    };
    let applied = match source {
        Source::Journal(data) => {
            let mut conn = open_journal(data)?;
            let inbox_id = operator::queue_start(&mut conn, id, "refund", &request, now_ms())?;
            let journal = DataPaths {
                dir: data.to_owned(),
            }
            .journal();
            wait_for_verdict(&conn, &journal, inbox_id, wait)?
        }
        Source::Temporal(settings) => {
            super::inspect::block_on(async {
                let client = TemporalClient::connect(settings).await?;
                let def = Definition::new(request.def);
                client
                    .start(client.saga_input(request.saga_id, &def, request.input))
                    .await
            })??;
            Verdict::Applied
        }
        Source::Admin(client) => return client.refund(id, &request.audit, wait),
    };
    Ok(match applied {
        Verdict::Applied => outcome(
            "applied",
            format!("refund of saga {id} started as saga {refund}; `sagaflow show {refund}` follows it"),
        ),
        Verdict::Queued => outcome(
            "queued",
            format!("refund of saga {id} queued as saga {refund}: no worker is running on this journal, or it has not answered yet; it starts when one runs"),
        ),
        Verdict::Refused(why) => outcome("refused", why),
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
        return super::bulk::run(source, data, super::bulk::Bulk::Refund, Some(config), args);
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

/// Why a refund of a saga the journal does not hold is refused: it never
/// ran here, or retention removed it (the journal no longer knows what it
/// captured, reserved and wrote, which the refund saga undoes).
fn not_in_journal(config: &Config, id: &str) -> String {
    match config.embedded.retention_ms {
        Some(ms) => format!(
            "the journal holds no saga {id}: it never ran here, or it ended more than {} ago and [embedded] retention removed it; a refund needs its journal (the payment it captured, the stock it took), so refund it at the provider and return its stock by hand, with the saga from your `sagaflow archive` file; nothing was sent",
            sagaflow_workflows::duration::format_duration_ms(ms)
        ),
        None => format!("the journal holds no saga {id} (`sagaflow list` shows the ids); nothing was sent"),
    }
}

/// The payment intent a checkout captured, from its journal.
fn captured_intent(events: &[EventRow]) -> Option<String> {
    events
        .iter()
        .filter(|e| e.kind == "activity_completed")
        .filter_map(|e| e.body.get("output"))
        .find(|o| o["kind"] == "capture")
        .and_then(|o| o["payment_intent"].as_str())
        .map(str::to_owned)
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

/// Operator commands since `since_ms`, oldest first, on either engine;
/// with `data`, `reconcile --fix`'s repairs recorded there too.
pub(super) fn audit_rows(
    source: &Source,
    data: Option<&Path>,
    since_ms: u64,
    saga: Option<&str>,
    limit: usize,
) -> Result<Vec<AuditRow>> {
    // `reconcile --fix`'s repairs, recorded in the data directory.
    let repairs = match data {
        Some(data) => {
            crate::reconcile::repair::audited(data, since_ms, saga).with_context(|| {
                format!(
                    "cannot read {}",
                    crate::reconcile::repair::audit_path(data).display()
                )
            })?
        }
        None => Vec::new(),
    };
    let engine_rows = match source {
        Source::Journal(data) => Ok(operator::audit(
            &open_journal(data)?,
            since_ms,
            saga,
            limit,
        )?),
        Source::Temporal(settings) => super::inspect::block_on(async {
            TemporalClient::connect(settings)
                .await?
                .audit(since_ms, saga, limit)
                .await
        })?
        .map_err(anyhow::Error::from),
        // The worker behind the admin API adds its own repairs.
        Source::Admin(client) => return client.audit(since_ms, saga, limit),
    };
    let mut rows = match engine_rows {
        Ok(rows) => rows,
        // A saga the cluster does not know (an orphan reservation's id)
        // can still have repairs: they are its whole audit.
        Err(_) if saga.is_some() && !repairs.is_empty() => Vec::new(),
        Err(e) => return Err(e),
    };
    if !repairs.is_empty() {
        rows.extend(repairs);
        rows.sort_by_key(|r| r.at_ms);
        rows.truncate(limit);
    }
    Ok(rows)
}

/// A time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// `--since`: an RFC 3339 time, or an age before `now_ms` (`15m`, `2h`, `7d`).
pub fn parse_since(s: &str, now_ms: u64) -> Result<u64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis().max(0) as u64);
    }
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().ok().filter(|_| !digits.is_empty()).with_context(|| {
        format!("--since {s:?} is neither an RFC 3339 time (2026-11-30T18:00:00Z) nor an age (15m, 2h, 7d)")
    })?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("--since {s:?}: the age's unit must be s, m, h or d (e.g. 15m)"),
    };
    Ok(now_ms.saturating_sub(n.saturating_mul(unit_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_an_age() {
        assert_eq!(
            parse_since("2026-11-30T18:00:00Z", 0).unwrap(),
            1_796_061_600_000
        );
        assert_eq!(
            parse_since("15m", 1_000_000_000).unwrap(),
            1_000_000_000 - 900_000
        );
        assert_eq!(parse_since("7d", 1_000).unwrap(), 0);
        let err = parse_since("yesterday", 0).unwrap_err().to_string();
        assert!(err.contains("neither an RFC 3339 time"), "{err}");
        let err = parse_since("5y", 0).unwrap_err().to_string();
        assert!(err.contains("must be s, m, h or d"), "{err}");
        assert_eq!(rfc3339(1_796_061_600_123), "2026-11-30T18:00:00.123Z");
    }
}
