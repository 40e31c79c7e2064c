//! Operator commands: `retry`, `cancel`, `resolve`, and the `audit` that
//! records them, on both engines.
//!
//! A command is checked before it is sent and refused at once, with the
//! reason, when it does not apply: on the embedded engine by replaying the
//! saga from its journal (the engine's own decision), on Temporal by the
//! workflow Update's validator. Then the worker applies it exactly once and
//! records it with who sent it and why.

use super::inspect::{open_journal, Source};
use crate::app::DataPaths;
use crate::engine::command::{Audit, CommandRequest};
use crate::engine::core::now_ms;
use crate::engine::operator::{self, AuditRow};
use crate::engine::temporal::client::TemporalClient;
use anyhow::{bail, Context, Result};
use sagaflow_workflows::Signal;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// What every command takes besides the saga.
#[derive(Debug, clap::Args)]
pub struct CommandArgs {
    /// Saga id (the order id)
    pub id: String,
    /// Why: recorded with the command in the saga's history and the audit (required)
    #[arg(long, short = 'r')]
    pub reason: String,
    /// Who sends it [default: $SAGAFLOW_OPERATOR, else the OS user]
    #[arg(long, env = "SAGAFLOW_OPERATOR")]
    pub operator: Option<String>,
    /// Seconds to wait for the running worker's verdict; on the embedded engine 0 returns once queued
    #[arg(long, default_value_t = 10)]
    pub wait: u64,
    /// Print the outcome as JSON
    #[arg(long)]
    pub json: bool,
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
            id: self.id,
            reason: self.reason,
            operator: self.operator,
            wait: 10,
            json: false,
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
fn operator_name(given: Option<String>) -> String {
    given
        .filter(|s| !s.trim().is_empty())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// `sagaflow retry|cancel ID`.
pub fn simple(source: &Source, signal: Signal, args: CommandArgs) -> Result<ExitCode> {
    send(source, signal, args)
}

/// `sagaflow resolve ID --step STEP [--output JSON]`.
pub fn resolve(source: &Source, args: ResolveArgs) -> Result<ExitCode> {
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
    send(source, signal, args.common)
}

fn send(source: &Source, signal: Signal, args: CommandArgs) -> Result<ExitCode> {
    if args.reason.trim().is_empty() {
        bail!("--reason is empty; say why, e.g. --reason \"provider outage INC-1234 over\"");
    }
    let request = CommandRequest {
        signal,
        audit: Audit {
            operator: operator_name(args.operator),
            reason: args.reason,
            bulk: None,
        },
    };
    let name = request.signal.name();
    let verdict = match source {
        Source::Journal(data) => embedded(data, &args.id, &request, args.wait)?,
        Source::Temporal(settings) => {
            let verdict = super::inspect::block_on(async {
                TemporalClient::connect(settings)
                    .await?
                    .command(&args.id, &request, Duration::from_secs(args.wait.max(1)))
                    .await
            })??;
            match verdict {
                Ok(()) => Verdict::Applied,
                // Refused before anything was recorded in the history.
                Err(why) => Verdict::Refused(format!("{why}; nothing was sent")),
            }
        }
    };
    let mut out = std::io::stdout().lock();
    let (outcome, detail) = match &verdict {
        Verdict::Applied => ("applied", None),
        Verdict::Queued => ("queued", None),
        Verdict::Refused(why) => ("refused", Some(why.as_str())),
    };
    if args.json {
        let v = serde_json::json!({
            "saga_id": args.id,
            "command": name,
            "outcome": outcome,
            "detail": detail,
            "operator": request.audit.operator,
            "reason": request.audit.reason,
        });
        writeln!(out, "{v}")?;
    } else {
        match &verdict {
            Verdict::Applied => writeln!(
                out,
                "{name} applied to saga {} (by {}: {})",
                args.id, request.audit.operator, request.audit.reason
            )?,
            Verdict::Queued => writeln!(
                out,
                "{name} queued for saga {}: no worker is running on this journal, or it has not answered yet; the worker checks it again and applies or refuses it (see `sagaflow audit --saga {}`)",
                args.id, args.id
            )?,
            Verdict::Refused(why) => {
                drop(out);
                eprintln!("sagaflow: {name} refused for saga {}: {why}", args.id);
            }
        }
    }
    Ok(match verdict {
        Verdict::Refused(_) => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

enum Verdict {
    Applied,
    Queued,
    Refused(String),
}

/// Checks against the replayed saga, queues, and waits up to `wait_secs`
/// for the running worker's verdict.
fn embedded(
    data: &std::path::Path,
    id: &str,
    request: &CommandRequest,
    wait_secs: u64,
) -> Result<Verdict> {
    let mut conn = open_journal(data)?;
    if let Err(why) = operator::check(&conn, id, &request.signal)? {
        return Ok(Verdict::Refused(format!("{why}; nothing was sent")));
    }
    let inbox_id = operator::queue(&mut conn, id, request, now_ms())?
        .expect("a command outside a bulk run is always queued");
    let journal = DataPaths {
        dir: data.to_owned(),
    }
    .journal();
    if wait_secs == 0 || !operator::worker_running(&journal) {
        return Ok(Verdict::Queued);
    }
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    while Instant::now() < deadline {
        if let Some(row) = operator::outcome(&conn, inbox_id)? {
            return Ok(match row.outcome.as_str() {
                "applied" => Verdict::Applied,
                _ => Verdict::Refused(row.detail.unwrap_or_default()),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Verdict::Queued)
}

/// `sagaflow audit`: every operator command, oldest first.
pub fn audit(source: &Source, args: AuditArgs) -> Result<ExitCode> {
    let since_ms = match &args.since {
        None => 0,
        Some(s) => parse_since(s, now_ms())?,
    };
    let rows: Vec<AuditRow> = match source {
        Source::Journal(data) => operator::audit(
            &open_journal(data)?,
            since_ms,
            args.saga.as_deref(),
            args.limit,
        )?,
        Source::Temporal(settings) => super::inspect::block_on(async {
            TemporalClient::connect(settings)
                .await?
                .audit(since_ms, args.saga.as_deref(), args.limit)
                .await
        })??,
    };
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
            r.saga_id,
            r.command,
            r.outcome,
            r.operator,
            r.reason,
            r.detail
                .as_deref()
                .map(|d| format!(" (refused: {d})"))
                .unwrap_or_default()
        )?;
    }
    if rows.is_empty() {
        writeln!(out, "(no operator commands)")?;
    }
    Ok(ExitCode::SUCCESS)
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
