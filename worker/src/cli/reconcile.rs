//! `sagaflow reconcile [--json] [--fix --reason TEXT]`: compares the
//! engine's sagas with the stock store, the payment provider and the order
//! store (see [`crate::reconcile`]), prints every drift with what to do,
//! and exits 1 while any is left.

use crate::app::{open_orders, open_payment, open_stock, DataPaths};
use crate::config::{Config, EngineKind, PaymentKind};
use crate::engine::liveness::Liveness;
use crate::engine::temporal::client::TemporalClient;
use crate::ops::source::Source;
use crate::reconcile::books;
use crate::reconcile::drift::{self, Drift, Judged};
use crate::reconcile::guard;
use crate::reconcile::repair::{self, Operator, Repaired};
use anyhow::{bail, Context, Result};
use sagaflow_activities::clock::now_ms;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `reconcile`.
#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Print one JSON document instead of the report
    #[arg(long)]
    json: bool,
    /// Repair what is safe: void authorizations no saga will capture and release reservations no saga will commit (needs --reason; recorded in the audit)
    #[arg(long)]
    fix: bool,
    /// Why you repair (recorded in the audit with each repair)
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Who repairs [default: $SAGAFLOW_OPERATOR, else the OS user]
    #[arg(long, env = "SAGAFLOW_OPERATOR")]
    operator: Option<String>,
    /// With --fix: also repair when more than 3 order ids (or any, with an engine holding no saga) are unknown to the engine; only after checking it is the deployment that took them
    #[arg(long, requires = "fix")]
    fix_unknown: bool,
}

/// Runs reconcile on this machine's stores and `source`'s sagas.
pub fn reconcile(
    config: &Config,
    source: &Source,
    data: &Path,
    args: ReconcileArgs,
) -> Result<ExitCode> {
    let reason = match (&args.reason, args.fix) {
        (Some(r), true) if !r.trim().is_empty() => Some(r.clone()),
        (_, true) => bail!(
            "--fix needs --reason TEXT: every repair is recorded in the audit with why it was made"
        ),
        _ => None,
    };
    let started = std::time::Instant::now();
    if !args.json {
        eprintln!("reconcile: listing the engine's sagas ...");
    }
    let rows = source.list(None, usize::MAX)?;
    let paths = DataPaths::new(data)?;
    let rt = crate::runtime::runtime()?;
    let report = rt.block_on(async {
        let stock = open_stock(config, &paths).await?;
        let orders = open_orders(config, &paths).await?;
        // Reconcile's own requests must see the provider as it is: the
        // in-process sandbox starts with every fault knob off.
        let (_sandbox, payment) = open_payment(config, &paths, Default::default(), 0).await?;
        let liveness = match config.profile.engine {
            EngineKind::Embedded => Liveness::Journal(paths.journal()),
            EngineKind::Temporal => Liveness::Temporal(
                TemporalClient::connect(&config.temporal)
                    .await
                    .context("cannot reach Temporal")?,
            ),
        };
        if !args.json {
            eprintln!(
                "reconcile: {} sagas; reading the stock store, the order store and the payment provider ...",
                rows.len()
            );
        }
        let books = books::read(config, &rows, &stock, &orders, &payment).await?;
        let search_lag_ms = match config.profile.payment {
            PaymentKind::Sandbox => 0,
            PaymentKind::Http => config.payment.search_lag_ms,
        };
        // On the embedded engine retention removes ended sagas; on
        // Temporal the namespace's retention does, which sagaflow cannot
        // see: either way an unknown id may be a removed saga.
        let retained = match config.profile.engine {
            EngineKind::Embedded => config.embedded.retention_ms.is_some(),
            EngineKind::Temporal => true,
        };
        let (mut drifts, mut judged) = drift::drifts(&books, now_ms(), search_lag_ms, retained);
        // The listing may trail the engine (Temporal's visibility): an id it
        // did not show may belong to a saga that started meanwhile.
        let unknown: Vec<&str> = drifts
            .iter()
            .filter(|d| d.saga_status == "unknown")
            .map(|d| d.saga_id.as_str())
            .collect();
        let living = liveness.living(&unknown).await?;
        if !living.is_empty() {
            drifts.retain(|d| !living.contains(&d.saga_id));
            judged.in_flight += living.len();
            judged.judged -= living.len().min(judged.judged);
        }
        // Longest step, so a hold a saga has not recorded yet is spared.
        let longest_step = config
            .sagas
            .values()
            .flat_map(|s| s.steps.iter().map(|st| st.timeout_ms))
            .max()
            .unwrap_or(0);
        guard::spare_young_holds(&mut drifts, &books, now_ms(), search_lag_ms + longest_step);
        let refused = reason
            .as_ref()
            .and_then(|_| guard::refusal(&drifts, rows.len(), args.fix_unknown));
        let repaired = match (&reason, &refused) {
            (Some(reason), None) => {
                let name = crate::ops::command::operator_name(args.operator.clone());
                let operator = Operator {
                    name: &name,
                    reason,
                };
                repair::repair(&drifts, &liveness, &stock, &payment, data, &operator).await?
            }
            _ => Vec::new(),
        };
        let covers = match config.profile.engine {
            EngineKind::Embedded => match config.embedded.retention_ms {
                Some(ms) => format!(
                    "the sagas in the journal: every live or parked one, and those that ended within the last {} ([embedded] retention)",
                    sagaflow_workflows::duration::format_duration_ms(ms)
                ),
                None => "every saga the journal holds ([embedded] retention is off)".to_owned(),
            },
            EngineKind::Temporal => "the saga workflows the cluster still holds (closed ones for the namespace's retention period)".to_owned(),
        };
        anyhow::Ok(Report {
            covers,
            sagas: rows.len(),
            intents: books.intents.values().map(Vec::len).sum(),
            reservations: books.lines.len(),
            orders: books.orders.len(),
            judged,
            drifts,
            repaired,
            refused,
        })
    })?;
    let left = report.left();
    if args.json {
        println!("{}", report.json(started.elapsed().as_secs_f64()));
    } else {
        report.print(&mut std::io::stdout().lock())?;
    }
    Ok(if left.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What one run found and did.
struct Report {
    /// Which sagas the engine still holds, so which orders can be judged.
    covers: String,
    sagas: usize,
    intents: usize,
    reservations: usize,
    orders: usize,
    judged: Judged,
    drifts: Vec<Drift>,
    repaired: Vec<Repaired>,
    /// Why `--fix` repaired nothing ([`guard::refusal`]).
    refused: Option<String>,
}

impl Report {
    /// The drifts a repair did not settle.
    fn left(&self) -> Vec<&Drift> {
        self.drifts
            .iter()
            .filter(|d| {
                !self
                    .repaired
                    .iter()
                    .any(|r| r.outcome == "applied" && d.fix.as_ref() == Some(&r.fix))
            })
            .collect()
    }

    fn json(&self, seconds: f64) -> serde_json::Value {
        json!({
            "covers": self.covers,
            "read": {
                "sagas": self.sagas,
                "payment_intents": self.intents,
                "reservation_lines": self.reservations,
                "order_documents": self.orders,
            },
            "judged": self.judged,
            "drifts": self.drifts,
            "repaired": self.repaired,
            "fix_refused": self.refused,
            "left": self.left().len(),
            "seconds": seconds,
        })
    }

    fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "read {} sagas, {} payment intents, {} reservation lines, {} order documents",
            self.sagas, self.intents, self.reservations, self.orders
        )?;
        writeln!(out, "covers {}", self.covers)?;
        writeln!(
            out,
            "judged {} orders ({} in flight not judged{}{})",
            self.judged.judged,
            self.judged.in_flight,
            if self.judged.too_recent_for_payment > 0 {
                format!(
                    "; {} ended within [payment] search_lag, their payments not judged yet",
                    self.judged.too_recent_for_payment
                )
            } else {
                String::new()
            },
            if self.judged.outside_retention > 0 {
                format!(
                    "; {} with no saga left in the engine, booked like an ended one (retention removed it), not judged",
                    self.judged.outside_retention
                )
            } else {
                String::new()
            }
        )?;
        for d in &self.drifts {
            writeln!(
                out,
                "DRIFT {:<40} {} ({}): {}\n      do: {}",
                d.kind.phrase(),
                d.saga_id,
                d.saga_status,
                d.detail,
                d.action
            )?;
        }
        for r in &self.repaired {
            writeln!(out, "FIXED {} {}: {}", r.saga_id, r.outcome, r.detail)?;
        }
        if let Some(why) = &self.refused {
            writeln!(out, "NOT FIXED: {why}")?;
        }
        let left = self.left().len();
        if left == 0 {
            writeln!(out, "no drift: the books agree")
        } else {
            let fixable = self.left().iter().filter(|d| d.fix.is_some()).count();
            writeln!(
                out,
                "{left} drift(s) left{}",
                if fixable > 0 {
                    format!("; {fixable} can be repaired with --fix --reason TEXT")
                } else {
                    String::new()
                }
            )
        }
    }
}
