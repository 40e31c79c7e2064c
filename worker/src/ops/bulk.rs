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

use super::command::{embedded_check_and_queue, Verdict};
use super::refund::start_refund;
use super::source::{open_journal, Source};
use crate::config::Config;
use crate::engine::command::{Audit, CommandRequest};
use crate::engine::embedded::operator;
use crate::engine::filter::{Filter, Target};
use crate::engine::temporal::client::TemporalClient;
use anyhow::{bail, Context, Result};
use sagaflow_activities::clock::now_ms;
use sagaflow_workflows::Signal;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) mod checks;

/// Which command a bulk request sends.
#[derive(Debug, Clone)]
pub enum Bulk {
    /// retry, cancel or resolve: an operator signal.
    Signal(Signal),
    /// Start each saga's refund saga.
    Refund,
}

impl Bulk {
    /// The command's name.
    pub fn name(&self) -> &'static str {
        match self {
            Bulk::Signal(s) => s.name(),
            Bulk::Refund => "refund",
        }
    }
}

/// What a run sends each saga, with who and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BulkCommand {
    /// An operator signal (plans written before bulk refunds are these).
    Signal(CommandRequest),
    /// A refund.
    Refund {
        /// Who, why, and the run.
        refund: Audit,
    },
}

impl BulkCommand {
    /// Records `operator` and `reason` as who sends the run's commands and
    /// why (the bulk id stays, so no saga is commanded twice).
    fn set_audit(&mut self, operator: &str, reason: String) {
        let audit = match self {
            BulkCommand::Signal(c) => &mut c.audit,
            BulkCommand::Refund { refund } => refund,
        };
        audit.operator = operator.to_owned();
        audit.reason = reason;
    }

    /// The command's name.
    pub fn name(&self) -> &'static str {
        match self {
            BulkCommand::Signal(c) => c.signal.name(),
            BulkCommand::Refund { .. } => "refund",
        }
    }
}

/// A planned bulk run, as `DATA/bulk/ID.json` keeps it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Plan {
    bulk_id: String,
    /// The command, as the journal stores it (name, a resolve's step and
    /// output, operator, reason, bulk id), or a refund with its audit.
    command: BulkCommand,
    /// The `--where` it was planned from.
    filter: String,
    /// When it was planned.
    planned_ms: u64,
    /// The sagas, oldest first.
    targets: Vec<String>,
    /// Sagas the dry run listed that no longer matched when the run was
    /// planned: not commanded (id, why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<(String, String)>,
}

fn plan_path(data: &Path, bulk_id: &str) -> PathBuf {
    data.join("bulk").join(format!("{bulk_id}.json"))
}

/// The data directory plans live in: the journal's, or on Temporal the
/// profile's (or `--data`).
fn plans_dir(source: &Source, data: &Path) -> PathBuf {
    match source {
        Source::Journal(dir) => dir.clone(),
        Source::Temporal(_) | Source::Admin(_) => data.to_owned(),
    }
}

/// The sagas `filter` selects, oldest first, on either engine.
pub(crate) fn targets(source: &Source, filter: &Filter) -> Result<Vec<Target>> {
    Ok(match source {
        Source::Journal(data) => operator::targets(&open_journal(data)?, filter)?,
        Source::Temporal(settings) => crate::runtime::block_on(async {
            TemporalClient::connect(settings)
                .await?
                .targets(filter)
                .await
        })??,
        Source::Admin(client) => client.targets(filter)?,
    })
}

/// What a bulk request asks, from the CLI's flags or the admin API's body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BulkSpec {
    /// `--where`: the terms selecting the sagas (a new run).
    #[serde(rename = "where", default)]
    pub where_: Option<String>,
    /// `--resume`: the run to go on with.
    #[serde(default)]
    pub resume: Option<String>,
    /// List the sagas, send nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// At most this many commands per second.
    #[serde(default)]
    pub rate: Option<f64>,
    /// The new run's id [default: generated].
    #[serde(default)]
    pub bulk_id: Option<String>,
    /// Who.
    #[serde(default)]
    pub operator: String,
    /// Why (required for a new run).
    #[serde(default)]
    pub reason: Option<String>,
    /// Seconds to wait for the worker's verdicts at the end.
    #[serde(default)]
    pub wait: u64,
    /// The dry run's saga ids: the run commands exactly those that still
    /// match; sagas that started matching since are left alone, and the
    /// ones that no longer match are skipped and reported.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
    /// The number of sagas the run commands, confirmed by the operator:
    /// required above [`checks::MAX_TARGETS`].
    #[serde(default)]
    pub confirm_targets: Option<usize>,
}

/// A bulk request, planned: the sagas a dry run lists, or a run to execute.
pub enum Planned {
    /// What a dry run found; nothing was sent.
    Dry(Vec<Target>),
    /// A run, written down before its first command.
    Run(Box<Plan>),
}

/// What a run did, as the CLI prints and the admin API answers it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// The run.
    pub bulk_id: String,
    /// The command.
    pub command: String,
    /// Sagas in the plan.
    pub planned: usize,
    /// Commands sent now (queued or applied).
    pub sent: usize,
    /// Refused, with the reasons in `refusals`.
    pub refused: usize,
    /// Commanded by this run before (a resume): skipped.
    pub already: usize,
    /// Failed to send (the reasons in `failures`); resuming tries them again.
    pub failed: usize,
    /// Each refusal: saga id and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<(String, String)>,
    /// Each failure: saga id and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<(String, String)>,
    /// Sagas the dry run listed that no longer matched: not commanded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<(String, String)>,
    /// On the embedded engine, the worker's verdicts on this run's
    /// commands when the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerVerdicts>,
}

/// The embedded worker's verdicts on a run's commands.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerVerdicts {
    /// Applied.
    pub applied: u64,
    /// Refused when delivered.
    pub refused: u64,
    /// Still in the inbox (no worker, or not yet).
    pub waiting: u64,
}

/// Plans a bulk request: a dry run's list, a new run written to
/// `DATA/bulk/ID.json`, or the run `resume` names. `note` gets the lines
/// an operator should see as it goes.
pub fn plan(
    source: &Source,
    data: &Path,
    what: Bulk,
    spec: &BulkSpec,
    note: &mut dyn FnMut(String),
) -> Result<Planned> {
    let dir = plans_dir(source, data);
    checks::rate(spec.rate)?;
    Ok(match (&spec.resume, &spec.where_) {
        (Some(bulk_id), _) => {
            // The id names a file: checked before it is used as a path.
            checks::bulk_id(bulk_id)?;
            let path = plan_path(&dir, bulk_id);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "no bulk run {bulk_id} in the data directory (bulk/{bulk_id}.json); the runs planned here are the files in its bulk/ directory"
                )
            })?;
            let mut plan: Plan = serde_json::from_str(&text)
                .with_context(|| format!("bulk/{bulk_id}.json is not a bulk plan"))?;
            if plan.command.name() != what.name() {
                bail!(
                    "bulk run {bulk_id} is a {}, not a {}; resume it with `sagaflow {} --resume {bulk_id}`",
                    plan.command.name(),
                    what.name(),
                    plan.command.name()
                );
            }
            if spec.dry_run {
                return Ok(Planned::Dry(
                    plan.targets.iter().map(|id| Target::planned(id)).collect(),
                ));
            }
            // Each resume is audited under who resumed it, and why.
            plan.command
                .set_audit(&spec.operator, required_reason(spec)?);
            note(format!(
                "resuming bulk run {bulk_id}: {} of {} saga(s) selected by {:?}",
                plan.command.name(),
                plan.targets.len(),
                plan.filter
            ));
            Planned::Run(Box::new(plan))
        }
        (None, Some(terms)) => {
            let filter = Filter::parse(terms).map_err(anyhow::Error::msg)?;
            let found = targets(source, &filter)?;
            if spec.dry_run {
                return Ok(Planned::Dry(found));
            }
            let reason = required_reason(spec)?;
            let (found, skipped) = checks::only_listed(found, spec.ids.as_deref());
            checks::size(found.len(), spec.confirm_targets)?;
            let bulk_id = spec
                .bulk_id
                .clone()
                .unwrap_or_else(|| format!("b{}", now_ms()));
            checks::bulk_id(&bulk_id)?;
            let path = plan_path(&dir, &bulk_id);
            if path.exists() {
                bail!(
                    "bulk run {bulk_id} exists already ({}); resume it with --resume {bulk_id}, or pick another --bulk-id",
                    path.display()
                );
            }
            let audit = Audit {
                operator: spec.operator.clone(),
                reason,
                bulk: Some(bulk_id.clone()),
            };
            let plan = Plan {
                command: match what {
                    Bulk::Signal(signal) => BulkCommand::Signal(CommandRequest { signal, audit }),
                    Bulk::Refund => BulkCommand::Refund { refund: audit },
                },
                bulk_id,
                filter: terms.clone(),
                planned_ms: now_ms(),
                targets: found.into_iter().map(|t| t.id).collect(),
                skipped,
            };
            std::fs::create_dir_all(path.parent().expect("a plan has a directory"))?;
            std::fs::write(&path, serde_json::to_vec_pretty(&plan)?)
                .with_context(|| format!("cannot write the bulk plan {}", path.display()))?;
            note(format!(
                "bulk run {}: {} to {} saga(s); if interrupted, resume with `sagaflow {} --resume {}`",
                plan.bulk_id,
                plan.command.name(),
                plan.targets.len(),
                plan.command.name(),
                plan.bulk_id
            ));
            Planned::Run(Box::new(plan))
        }
        (None, None) => {
            bail!("a bulk command needs `where` (the sagas to select) or `resume` (a run's id)")
        }
    })
}

/// The run's reason: required, for a new run and a resume alike.
fn required_reason(spec: &BulkSpec) -> Result<String> {
    match spec.reason.as_deref().map(str::trim) {
        Some(r) if !r.is_empty() => Ok(r.to_owned()),
        _ => bail!(
            "a bulk run needs a reason; say why, e.g. --reason \"provider outage INC-1234 over\""
        ),
    }
}

/// A bulk request's answer: the dry run's list, or the run's summary.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BulkAnswer {
    /// Nothing was sent; these would be.
    DryRun {
        /// The command.
        command: String,
        /// The sagas.
        targets: Vec<Target>,
    },
    /// The run ended.
    Done(Summary),
}

/// A run's connection to Temporal: one runtime and one client for all its
/// commands (a connection per command held a run to a few per second).
struct TemporalRun {
    rt: tokio::runtime::Runtime,
    client: TemporalClient,
}

impl TemporalRun {
    fn connect(settings: &crate::config::TemporalSettings) -> Result<TemporalRun> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = rt.block_on(TemporalClient::connect(settings))?;
        Ok(TemporalRun { rt, client })
    }

    /// One command of the run, unless the saga's history shows the run
    /// commanded it already (`None`). The Update id is the run's id as
    /// well, so even a race with an earlier, interrupted send applies once.
    fn once(
        &self,
        id: &str,
        bulk_id: &str,
        command: &CommandRequest,
        wait: u64,
    ) -> Result<Option<Verdict>> {
        self.rt.block_on(async {
            if self.client.commanded(id, bulk_id).await? {
                return Ok(None);
            }
            let verdict = self
                .client
                .command(id, command, Duration::from_secs(wait.max(1)))
                .await?;
            Ok(Some(Verdict::from_update(verdict)))
        })
    }
}

/// One refund of a run: a refund that exists already (this run's, before
/// it was interrupted, or anyone's) counts as done (`None`); the refund id
/// is derived from the saga's, so no saga is refunded twice.
fn refund_once(
    source: &Source,
    config: &Config,
    id: &str,
    audit: &Audit,
    wait: u64,
) -> Result<Option<Verdict>> {
    let done = start_refund(source, config, id, audit.clone(), wait)?;
    Ok(match done.outcome.as_str() {
        "exists" => None,
        "applied" => Some(Verdict::Applied),
        "queued" => Some(Verdict::Queued),
        _ => Some(Verdict::Refused(done.detail)),
    })
}

/// Sends a planned run's commands, at most `rate` per second, skipping the
/// sagas it commanded before; `note` gets a progress line each second.
pub fn execute(
    source: &Source,
    config: Option<&Config>,
    plan: &Plan,
    rate: Option<f64>,
    wait: u64,
    note: &mut dyn FnMut(String),
) -> Result<Summary> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let name = plan.command.name();
    let mut tally = Summary {
        bulk_id: plan.bulk_id.clone(),
        command: name.to_owned(),
        planned: plan.targets.len(),
        skipped: plan.skipped.clone(),
        ..Summary::default()
    };
    let temporal = match source {
        Source::Temporal(settings) => Some(TemporalRun::connect(settings)?),
        _ => None,
    };
    for (i, id) in plan.targets.iter().enumerate() {
        if let Some(rate) = rate.filter(|r| *r > 0.0) {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let verdict = match (&plan.command, source) {
            (BulkCommand::Refund { refund }, _) => {
                let config = config.context("a bulk refund needs the config's [sagas.refund]")?;
                refund_once(source, config, id, refund, wait)
            }
            (BulkCommand::Signal(command), Source::Journal(data)) => {
                embedded_check_and_queue(data, id, command)
            }
            (BulkCommand::Signal(command), Source::Temporal(_)) => temporal
                .as_ref()
                .expect("connected above")
                .once(id, &plan.bulk_id, command, wait),
            (_, Source::Admin(_)) => {
                bail!("a bulk run through the admin API runs in the worker")
            }
        };
        match verdict {
            Ok(None) => tally.already += 1,
            Ok(Some(Verdict::Applied | Verdict::Queued)) => tally.sent += 1,
            Ok(Some(Verdict::Refused(why))) => {
                tally.refused += 1;
                tally.refusals.push((id.clone(), why));
            }
            Err(e) => {
                tally.failed += 1;
                tally.failures.push((id.clone(), format!("{e:#}")));
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            note(format!(
                "bulk {}: {}/{} done (sent {}, refused {}, already {}, failed {})",
                plan.bulk_id,
                i + 1,
                tally.planned,
                tally.sent,
                tally.refused,
                tally.already,
                tally.failed
            ));
        }
    }
    // The embedded worker applies queued commands asynchronously: wait for
    // its verdicts (the audit) before summing up.
    if let Source::Journal(data) = source {
        let conn = open_journal(data)?;
        let deadline = Instant::now() + Duration::from_secs(wait);
        loop {
            let waiting: u64 = conn.query_row(
                "SELECT COUNT(*) FROM inbox WHERE bulk_id = ?1",
                [&plan.bulk_id],
                |r| r.get(0),
            )?;
            if waiting == 0 || Instant::now() >= deadline {
                let (applied, refused) = operator::bulk_outcomes(&conn, &plan.bulk_id)?;
                tally.worker = Some(WorkerVerdicts {
                    applied,
                    refused,
                    waiting,
                });
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(tally)
}
