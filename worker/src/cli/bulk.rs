//! `retry|cancel|resolve|refund --where TERMS` from the command line: the
//! flags become a [`BulkSpec`], the operator service plans and runs it
//! ([`crate::ops::bulk`]), and [`output`] prints the answer.

use super::command::CommandArgs;
use crate::config::Config;
use crate::ops::bulk::{checks, execute, plan, Bulk, BulkAnswer, BulkSpec, Planned};
use crate::ops::command::operator_name;
use crate::ops::source::Source;
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

mod output;
use output::print;

/// Runs (or dry-runs, or resumes) a bulk command from the CLI. A refund
/// needs the config (its saga's definition).
pub fn run(
    source: &Source,
    data: &Path,
    what: Bulk,
    config: Option<&Config>,
    args: CommandArgs,
) -> Result<ExitCode> {
    let ids = match &args.ids {
        Some(path) => Some(checks::read_ids(path)?),
        None => None,
    };
    let spec = BulkSpec {
        where_: args.where_.clone(),
        resume: args.resume.clone(),
        dry_run: args.dry_run,
        rate: args.rate,
        bulk_id: args.bulk_id.clone(),
        operator: operator_name(args.operator.clone()),
        reason: args.reason.clone(),
        wait: args.wait,
        ids,
        confirm_targets: args.confirm_targets,
    };
    let name = what.name();
    let answer = match source {
        Source::Admin(client) => client.bulk(&what, &spec)?,
        _ => match plan(source, data, what, &spec, &mut |line| eprintln!("{line}"))? {
            Planned::Dry(found) => BulkAnswer::DryRun {
                command: name.to_owned(),
                targets: found,
            },
            Planned::Run(plan) => BulkAnswer::Done(execute(
                source,
                config,
                &plan,
                spec.rate,
                spec.wait,
                &mut |line| eprintln!("{line}"),
            )?),
        },
    };
    print(&answer, args.json)
}
