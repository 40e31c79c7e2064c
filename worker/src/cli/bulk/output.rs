//! How a bulk answer reads on a terminal: the dry run's table, a run's
//! summary with each refusal and failure (text from outside escaped), or
//! one JSON document.

use crate::cli::shown::shown;
use crate::engine::filter::Target;
use crate::ops::bulk::BulkAnswer;
use anyhow::Result;
use std::io::Write;
use std::process::ExitCode;

pub(super) fn print(answer: &BulkAnswer, json: bool) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match answer {
        BulkAnswer::DryRun { command, targets } => {
            dry_run(&mut out, targets, command, json)?;
            Ok(ExitCode::SUCCESS)
        }
        BulkAnswer::Done(summary) => {
            if json {
                writeln!(out, "{}", serde_json::to_string(summary)?)?;
            } else {
                for (id, why) in &summary.refusals {
                    let (id, why) = (shown(id), shown(why));
                    writeln!(out, "{} refused for saga {id}: {why}", summary.command)?;
                }
                for (id, why) in &summary.failures {
                    let (id, why) = (shown(id), shown(why));
                    writeln!(
                        out,
                        "{} for saga {id} failed: {why}; `--resume {}` tries it again",
                        summary.command, summary.bulk_id
                    )?;
                }
                writeln!(
                    out,
                    "bulk {} {}: {} saga(s): sent {}, refused {}, already commanded {}, failed {}",
                    summary.bulk_id,
                    summary.command,
                    summary.planned,
                    summary.sent,
                    summary.refused,
                    summary.already,
                    summary.failed
                )?;
                if let Some(w) = &summary.worker {
                    writeln!(
                        out,
                        "  the worker applied {} and refused {} of this run's commands so far{}",
                        w.applied,
                        w.refused,
                        if w.waiting > 0 {
                            format!("; {} wait in the inbox for a worker", w.waiting)
                        } else {
                            String::new()
                        }
                    )?;
                }
            }
            Ok(if summary.failed > 0 || summary.refused > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn dry_run(out: &mut impl Write, found: &[Target], command: &str, json: bool) -> Result<()> {
    if json {
        for t in found {
            writeln!(out, "{}", serde_json::to_string(t)?)?;
        }
        return Ok(());
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
            shown(&t.id),
            t.saga,
            t.status,
            t.step.as_deref().unwrap_or("-"),
            shown(t.error.as_deref().unwrap_or(""))
        )?;
    }
    Ok(())
}
