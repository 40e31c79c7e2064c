//! Doing: the safe repairs of `reconcile --fix` (void a hold no saga owns,
//! release a reservation no saga will use), each asked of the engine once
//! more just before it is made and recorded in the operator audit.
//!
//! The audit records of repairs live in `reconcile-audit.jsonl` in the data
//! directory, one JSON [`AuditRow`] per line, appended and synced before
//! the next repair; `sagaflow audit` shows them beside the engine's
//! commands on both engines.

use super::drift::{Drift, Fix};
use crate::engine::liveness::Liveness;
use crate::engine::view::AuditRow;
use sagaflow_activities::order::OrderLine;
use sagaflow_activities::payment::http::PaymentClient;
use sagaflow_activities::stock::Stock;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The audit file's name in the data directory.
const AUDIT_FILE: &str = "reconcile-audit.jsonl";

/// Where repairs are audited.
pub fn audit_path(data: &Path) -> PathBuf {
    data.join(AUDIT_FILE)
}

/// One repair made or skipped.
#[derive(Debug, Clone, Serialize)]
pub struct Repaired {
    /// The saga (= order) id.
    pub saga_id: String,
    /// What was to be done.
    #[serde(flatten)]
    pub fix: Fix,
    /// `applied`, or `skipped` when the saga lives again.
    pub outcome: &'static str,
    /// What the store answered, or why it was skipped.
    pub detail: String,
}

/// Why a repair could not be made or recorded.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The engine could not say whether the saga lives: nothing is repaired.
    #[error("{0}; nothing was repaired, run reconcile again once the engine answers")]
    Liveness(#[from] crate::engine::liveness::LivenessError),
    /// The audit file could not be written: the repairs stop.
    #[error("cannot write the audit record to {path}: {source}; the repairs stopped there (those before it are recorded)")]
    Audit {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A store refused or failed.
    #[error("{what} for saga {saga}: {reason}; run reconcile again to retry")]
    Store {
        /// The repair.
        what: &'static str,
        /// The saga.
        saga: String,
        /// What the store said.
        reason: String,
    },
}

/// Who repairs and why, for the audit.
pub struct Operator<'a> {
    /// The operator's name.
    pub name: &'a str,
    /// `--reason`.
    pub reason: &'a str,
}

/// Makes the repairs `drifts` carry, one at a time: asks the engine first
/// whether the saga lives again (a saga restarted from the dead letters, or
/// a Temporal listing that had not caught up), then voids or releases, then
/// appends its audit record.
pub async fn repair(
    drifts: &[Drift],
    liveness: &Liveness,
    stock: &Stock,
    payment: &PaymentClient,
    data: &Path,
    operator: &Operator<'_>,
) -> Result<Vec<Repaired>, RepairError> {
    let fixes: Vec<(&str, &Fix)> = drifts
        .iter()
        .filter_map(|d| d.fix.as_ref().map(|f| (d.saga_id.as_str(), f)))
        .collect();
    if fixes.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = fixes.iter().map(|(id, _)| *id).collect();
    let living = liveness.living(&ids).await?;
    let mut done = Vec::new();
    for (saga_id, fix) in fixes {
        let (outcome, detail) = if living.contains(saga_id) {
            ("skipped", "the saga lives now: left to it".to_owned())
        } else {
            ("applied", apply(saga_id, fix, stock, payment).await?)
        };
        let repaired = Repaired {
            saga_id: saga_id.to_owned(),
            fix: fix.clone(),
            outcome,
            detail,
        };
        record(data, operator, &repaired)?;
        done.push(repaired);
    }
    Ok(done)
}

async fn apply(
    saga_id: &str,
    fix: &Fix,
    stock: &Stock,
    payment: &PaymentClient,
) -> Result<String, RepairError> {
    match fix {
        Fix::VoidHold { payment_intent } => {
            let key = format!("reconcile/{payment_intent}/void");
            // One idempotency key for every try: a void whose answer was
            // lost is replayed, not repeated.
            let status = super::patiently(|| payment.void_hold(payment_intent, &key))
                .await
                .map_err(|e| RepairError::Store {
                    what: "void",
                    saga: saga_id.to_owned(),
                    reason: e.to_string(),
                })?;
            Ok(format!("{payment_intent} is {status}"))
        }
        Fix::ReleaseReservation { reservation, lines } => {
            let items: Vec<OrderLine> = lines
                .iter()
                .map(|(sku, qty)| OrderLine {
                    sku: sku.clone(),
                    qty: *qty,
                })
                .collect();
            let answer = super::patiently(|| stock.release(reservation, &items))
                .await
                .map_err(|e| RepairError::Store {
                    what: "release",
                    saga: saga_id.to_owned(),
                    reason: e.to_string(),
                })?;
            Ok(format!(
                "reservation {reservation} is {}",
                answer["state"].as_str().unwrap_or("released")
            ))
        }
    }
}

fn record(data: &Path, operator: &Operator<'_>, repaired: &Repaired) -> Result<(), RepairError> {
    let path = audit_path(data);
    let command = match repaired.fix {
        Fix::VoidHold { .. } => "reconcile-void",
        Fix::ReleaseReservation { .. } => "reconcile-release",
    };
    let row = AuditRow {
        at_ms: sagaflow_activities::clock::now_ms(),
        saga_id: repaired.saga_id.clone(),
        command: command.into(),
        operator: operator.name.to_owned(),
        reason: operator.reason.to_owned(),
        bulk_id: None,
        outcome: repaired.outcome.to_owned(),
        detail: Some(repaired.detail.clone()),
        body: serde_json::to_value(&repaired.fix).unwrap_or_default(),
    };
    let failed = |source| RepairError::Audit {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(failed)?;
    let mut line = serde_json::to_vec(&row).expect("an audit row serializes");
    line.push(b'\n');
    file.write_all(&line).map_err(failed)?;
    file.sync_data().map_err(failed)
}

/// The repairs' audit records since `since_ms`, of one saga if given,
/// oldest first. A missing file is no records; a line that does not parse
/// (a write cut short by a crash) is skipped.
pub fn audited(data: &Path, since_ms: u64, saga: Option<&str>) -> std::io::Result<Vec<AuditRow>> {
    let text = match std::fs::read_to_string(audit_path(data)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<AuditRow>(line).ok())
        .filter(|row| row.at_ms >= since_ms && saga.is_none_or(|s| row.saga_id == s))
        .collect())
}
