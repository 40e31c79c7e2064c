//! What the outage suite measures of one sale, and what the breakers
//! promise of a sale that had them on.

use crate::world::logs_of;
use crate::{Fault, Sale};
use serde_json::Value;
use std::path::PathBuf;

/// The most requests a worker may send the provider from its first
/// failed answer until the worker's breaker opens (issue 31).
pub const MOST_BEFORE_OPENING: usize = 10;

/// What one sale measured.
#[derive(Debug)]
pub struct Figures {
    pub orders: usize,
    pub completed: u64,
    pub compensated: u64,
    pub parked: u64,
    pub parked_on_void: usize,
    pub lost_to_outage: i64,
    /// Per worker: requests from the provider's first failed answer until
    /// the worker's breaker opened.
    pub before_opening: Vec<usize>,
    pub calls_during_outage: usize,
    pub allowed_probes: usize,
    pub peak_before: usize,
    pub peak_after: usize,
    pub drained_s: f64,
    pub seconds: f64,
}

/// What the breakers promise, checked on a sale that had them on.
pub fn check_breakers(
    sale: &Sale,
    figures: &Figures,
    stats: &Value,
    healths: &[Option<std::process::Output>],
    rows: &[Value],
    datas: &[PathBuf],
    turned: &Value,
) {
    let name = sale.name();
    let n = |k: &str| stats[k].as_u64().unwrap_or(0);
    assert_eq!(
        n("total"),
        figures.orders as u64,
        "{name}: one saga per order: {stats}"
    );
    assert_eq!(n("parked"), 0, "{name}: every saga ended: {stats}");
    let logs: String = datas.iter().map(|d| logs_of(d, 0)).collect();
    assert_eq!(
        figures.lost_to_outage, 0,
        "{name}: only declined cards compensate: {stats}\n{logs}"
    );
    for (health, row) in healths.iter().zip(rows) {
        let health = health
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: a worker logged no admin address"));
        assert!(
            health.status.success(),
            "{name}: every breaker closed again after the sale: {}",
            String::from_utf8_lossy(&health.stdout)
        );
        assert!(
            row["opened_total"].as_u64() >= Some(1),
            "{name}: the breaker opened during the outage: {row}"
        );
    }
    if sale.fault != Fault::Payment {
        return;
    }
    assert!(
        figures.calls_during_outage <= figures.allowed_probes,
        "{name}: the provider saw {} calls during the outage, more than the breakers' {} probes: {turned}",
        figures.calls_during_outage,
        figures.allowed_probes
    );
    for (worker, before) in figures.before_opening.iter().enumerate() {
        assert!(
            *before <= MOST_BEFORE_OPENING,
            "{name}: worker {worker} sent the provider {before} requests from its first failed answer until its breaker opened, more than {MOST_BEFORE_OPENING} (defect 1)"
        );
    }
    assert!(
        figures.peak_after <= figures.peak_before,
        "{name}: {} calls in flight at once in the 10 s after the outage, more than the {} before it (defect 2: a stampede)",
        figures.peak_after,
        figures.peak_before
    );
}
