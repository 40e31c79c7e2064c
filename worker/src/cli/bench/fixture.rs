//! What a run works on: the activities (noop or the embedded adapters with
//! stock for every saga), its orders, and the journal it grows.

use super::*;
use crate::app::{self, Adapters, DataPaths};
use crate::config::Config;
use crate::engine::Definition;
use anyhow::Result;
use sagaflow_activities::order::{Order, OrderLine};
use sagaflow_activities::registry::register_noop;
use sagaflow_activities::Registry;
use std::path::Path;
use std::sync::Arc;

/// What the activities run on: the noop registry, or the embedded adapters
/// (kept alive by the returned `Adapters`) with enough stock for every saga.
pub(super) async fn world(
    config: &Config,
    paths: &DataPaths,
    activities: Activities,
    sagas: usize,
) -> Result<(Arc<Registry>, Arc<Definition>, Option<Adapters>)> {
    Ok(match activities {
        Activities::Noop => {
            let mut r = Registry::new();
            register_noop(&mut r);
            (Arc::new(r), Definition::new(noop_saga()), None)
        }
        Activities::Checkout => {
            let adapters = app::start_adapters(config, paths).await?;
            adapters
                .stock
                .seed(&[("SKU-1".into(), sagas as i64)])
                .await?;
            let def = Definition::new(config.saga("checkout").map_err(anyhow::Error::msg)?.clone());
            (adapters.registry.clone(), def, Some(adapters))
        }
    })
}

/// A one-unit order paid with a card that succeeds.
pub(crate) fn order(id: &str) -> serde_json::Value {
    serde_json::to_value(Order {
        order_id: id.to_owned(),
        customer: "bench".into(),
        items: vec![OrderLine {
            sku: "SKU-1".into(),
            qty: 1,
        }],
        amount: 1999,
        currency: "usd".into(),
        payment_method: "pm_card_visa".into(),
        refund: None,
        traceparent: None,
    })
    .expect("orders serialize")
}

/// Sagas in the journal at `path` (0 when there is none yet).
pub(super) fn journal_sagas(path: &Path) -> Result<u64> {
    if !path.exists() {
        return Ok(0);
    }
    let conn = crate::engine::embedded::journal::open_reader(path)?;
    Ok(crate::engine::embedded::read::stats(&conn)?.total)
}

/// The journal's size on disk: the file and its write-ahead log, in MB.
pub(super) fn journal_mb(path: &Path) -> f64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let wal = path.with_extension("db-wal");
    ((size(path) + size(&wal)) as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}
