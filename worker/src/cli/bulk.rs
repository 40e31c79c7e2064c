//! Bulk operator commands: `retry|cancel|resolve --where TERMS`, with a
//! dry run, a rate, progress, and resume after an interruption.
//!
//! A run is planned once: the sagas the filter selects are written, with
//! the command, to `DATA/bulk/ID.json` before the first is sent, so
//! `--resume ID` goes over exactly the same sagas. Each command carries the
//! run's id, and each engine applies a run's command to a saga at most
//! once: the embedded inbox takes one row per saga and run (checked
//! against the inbox and the audit in one transaction), and on Temporal
//! the run's id is the Update id, which the server deduplicates per
//! workflow. So a run killed half way and resumed commands no saga twice.

use super::command::{embedded_check_and_queue, one, operator_name, CommandArgs, Verdict};
use super::inspect::{open_journal, Source};
use crate::engine::command::{Audit, CommandRequest};
use crate::engine::core::now_ms;
use crate::engine::filter::{Filter, Target};
use crate::engine::operator;
use crate::engine::temporal::client::TemporalClient;
use anyhow::{bail, Context, Result};
use sagaflow_workflows::Signal;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// A planned bulk run, as `DATA/bulk/ID.json` keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Plan {
    bulk_id: String,
    /// The command, as the journal stores it (name, a resolve's step and
    /// output, operator, reason, bulk id).
    command: CommandRequest,
    /// The `--where` it was planned from.
    filter: String,
    /// When it was planned.
    planned_ms: u64,
    /// The sagas, oldest first.
    targets: Vec<String>,
}

fn plan_path(data: &Path, bulk_id: &str) -> PathBuf {
    data.join("bulk").join(format!("{bulk_id}.json"))
}

/// The data directory plans live in: the journal's, or on Temporal the
/// profile's (or `--data`).
fn plans_dir(source: &Source, data: &Path) -> PathBuf {
    match source {
        Source::Journal(dir) => dir.clone(),
        Source::Temporal(_) => data.to_owned(),
    }
}

fn targets(source: &Source, filter: &Filter) -> Result<Vec<Target>> {
    Ok(match source {
        Source::Journal(data) => operator::targets(&open_journal(data)?, filter)?,
        Source::Temporal(settings) => super::inspect::block_on(async {
            TemporalClient::connect(settings)
                .await?
                .targets(filter)
                .await
        })??,
    })
}

/// Runs (or dry-runs, or resumes) a bulk command.
pub fn run(source: &Source, data: &Path, signal: Signal, args: CommandArgs) -> Result<ExitCode> {
    let dir = plans_dir(source, data);
    let plan = match (&args.resume, &args.where_) {
        (Some(bulk_id), _) => {
            let path = plan_path(&dir, bulk_id);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "no bulk run {bulk_id} at {}; `ls {}` lists the runs planned here",
                    path.display(),
                    dir.join("bulk").display()
                )
            })?;
            let plan: Plan = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a bulk plan", path.display()))?;
            if plan.command.signal.name() != signal.name() {
                bail!(
                    "bulk run {bulk_id} is a {}, not a {}; resume it with `sagaflow {} --resume {bulk_id}`",
                    plan.command.signal.name(),
                    signal.name(),
                    plan.command.signal.name()
                );
            }
            eprintln!(
                "resuming bulk run {bulk_id}: {} of {} saga(s) selected by {:?}",
                plan.command.signal.name(),
                plan.targets.len(),
                plan.filter
            );
            plan
        }
        (None, Some(terms)) => {
            let filter = Filter::parse(terms).map_err(anyhow::Error::msg)?;
            let found = targets(source, &filter)?;
            if args.dry_run {
                return dry_run(&found, signal.name(), args.json);
            }
            let bulk_id = args
                .bulk_id
                .clone()
                .unwrap_or_else(|| format!("b{}", now_ms()));
            let path = plan_path(&dir, &bulk_id);
            if path.exists() {
                bail!(
                    "bulk run {bulk_id} exists already ({}); resume it with --resume {bulk_id}, or pick another --bulk-id",
                    path.display()
                );
            }
            let plan = Plan {
                command: CommandRequest {
                    signal,
                    audit: Audit {
                        operator: operator_name(args.operator.clone()),
                        reason: args.reason_text()?,
                        bulk: Some(bulk_id.clone()),
                    },
                },
                bulk_id,
                filter: terms.clone(),
                planned_ms: now_ms(),
                targets: found.into_iter().map(|t| t.id).collect(),
            };
            std::fs::create_dir_all(path.parent().expect("a plan has a directory"))?;
            std::fs::write(&path, serde_json::to_vec_pretty(&plan)?)
                .with_context(|| format!("cannot write the bulk plan {}", path.display()))?;
            eprintln!(
                "bulk run {}: {} to {} saga(s); if interrupted, resume with `sagaflow {} --resume {}`",
                plan.bulk_id,
                plan.command.signal.name(),
                plan.targets.len(),
                plan.command.signal.name(),
                plan.bulk_id
            );
            plan
        }
        (None, None) => unreachable!("clap requires an id, --where or --resume"),
    };
    execute(source, &plan, &args)
}

fn dry_run(found: &[Target], command: &str, json: bool) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if json {
        for t in found {
            writeln!(out, "{}", serde_json::to_string(t)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{command} would be sent to {} saga(s) (dry run: nothing sent)",
        found.len()
    )?;
    writeln!(
        out,
        "{:<32} {:<10} {:<13} {:<20} LAST ERROR",
        "ID", "SAGA", "STATUS", "STEP"
    )?;
    for t in found {
        writeln!(
            out,
            "{:<32} {:<10} {:<13} {:<20} {}",
            t.id,
            t.saga,
            t.status,
            t.step.as_deref().unwrap_or("-"),
            t.error.as_deref().unwrap_or("")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One command of a run on Temporal, unless the saga's history shows the
/// run commanded it already (`None`). The Update id is the run's id as
/// well, so even a race with an earlier, interrupted send applies once.
fn temporal_once(
    source: &Source,
    settings: &crate::config::TemporalSettings,
    id: &str,
    plan: &Plan,
    wait: u64,
) -> Result<Option<Verdict>> {
    let done = super::inspect::block_on(async {
        TemporalClient::connect(settings)
            .await?
            .commanded(id, &plan.bulk_id)
            .await
    })??;
    if done {
        return Ok(None);
    }
    one(source, id, &plan.command, wait).map(Some)
}

/// What a run did, for the progress line and the summary.
#[derive(Debug, Default, Serialize)]
struct Tally {
    /// Sagas in the plan.
    planned: usize,
    /// Commands sent now (queued or applied).
    sent: usize,
    /// Refused (with the reasons printed as they come).
    refused: usize,
    /// Commanded by this run before (a resume): skipped.
    already: usize,
    /// Failed to send (the reason printed); resuming tries them again.
    failed: usize,
}

fn execute(source: &Source, plan: &Plan, args: &CommandArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut tally = Tally {
        planned: plan.targets.len(),
        ..Tally::default()
    };
    let name = plan.command.signal.name();
    for (i, id) in plan.targets.iter().enumerate() {
        if let Some(rate) = args.rate.filter(|r| *r > 0.0) {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let verdict = match source {
            Source::Journal(data) => embedded_check_and_queue(data, id, &plan.command),
            Source::Temporal(settings) => temporal_once(source, settings, id, plan, args.wait),
        };
        match verdict {
            Ok(None) => tally.already += 1,
            Ok(Some(Verdict::Applied | Verdict::Queued)) => tally.sent += 1,
            Ok(Some(Verdict::Refused(why))) => {
                tally.refused += 1;
                eprintln!("{name} refused for saga {id}: {why}");
            }
            Err(e) => {
                tally.failed += 1;
                eprintln!(
                    "{name} for saga {id} failed: {e:#}; `--resume {}` tries it again",
                    plan.bulk_id
                );
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!(
                "bulk {}: {}/{} done (sent {}, refused {}, already {}, failed {})",
                plan.bulk_id,
                i + 1,
                tally.planned,
                tally.sent,
                tally.refused,
                tally.already,
                tally.failed
            );
        }
    }
    // The embedded worker applies queued commands asynchronously: wait for
    // its verdicts (the audit) before summing up.
    let mut applied = None;
    if let Source::Journal(data) = source {
        let conn = open_journal(data)?;
        let deadline = Instant::now() + Duration::from_secs(args.wait);
        loop {
            let waiting: u64 = conn.query_row(
                "SELECT COUNT(*) FROM inbox WHERE bulk_id = ?1",
                [&plan.bulk_id],
                |r| r.get(0),
            )?;
            if waiting == 0 || Instant::now() >= deadline {
                let (ok, refused) = operator::bulk_outcomes(&conn, &plan.bulk_id)?;
                applied = Some((ok, refused, waiting));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = serde_json::to_value(&tally)?;
        v["bulk_id"] = plan.bulk_id.clone().into();
        v["command"] = name.into();
        if let Some((ok, refused, waiting)) = applied {
            v["worker"] =
                serde_json::json!({"applied": ok, "refused": refused, "waiting": waiting});
        }
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "bulk {} {name}: {} saga(s): sent {}, refused {}, already commanded {}, failed {}",
            plan.bulk_id, tally.planned, tally.sent, tally.refused, tally.already, tally.failed
        )?;
        if let Some((ok, refused, waiting)) = applied {
            writeln!(
                out,
                "  the worker applied {ok} and refused {refused} of this run's commands so far{}",
                if waiting > 0 {
                    format!("; {waiting} wait in the inbox for a worker")
                } else {
                    String::new()
                }
            )?;
        }
    }
    Ok(if tally.failed > 0 || tally.refused > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
