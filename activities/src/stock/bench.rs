//! Measuring the stock backend alone: reservations per second with a fixed
//! number in flight, as a flash sale's hot SKU sees them. The worker exposes
//! it as a command; the tests run it small on both backends.
//!
//! It seeds its own SKU (named by the caller, so it never touches real
//! stock) with as many units as there are reservations, so every reserve
//! succeeds and measures the taking path, then releases them all.

use super::{Stock, StockError};
use crate::order::OrderLine;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct StockBenchConfig {
    /// The SKU to seed and reserve; pick one no order uses, e.g.
    /// `bench-<timestamp>`.
    pub sku: String,
    /// Reservations to make (one unit each).
    pub reservations: usize,
    /// Reservations in flight at once (64 is what a busy worker keeps).
    pub in_flight: usize,
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct StockBenchReport {
    /// Reservations made.
    pub reservations: usize,
    /// In flight at once.
    pub in_flight: usize,
    /// Wall time of the reserve phase, in milliseconds.
    pub elapsed_ms: u64,
    /// Reservations per second.
    pub per_second: f64,
    /// Median latency of one reserve, in microseconds.
    pub p50_us: u64,
    /// 99th-percentile latency, in microseconds.
    pub p99_us: u64,
}

/// Seeds `config.sku`, makes the reservations with `config.in_flight` at
/// once, releases them, and reports. A reserve that fails stops the run
/// with its error (the seeded units make failures a sign of trouble).
pub async fn bench_reserve(
    stock: &Stock,
    config: &StockBenchConfig,
) -> Result<StockBenchReport, StockError> {
    let in_flight = config.in_flight.max(1);
    stock
        .seed(&[(config.sku.clone(), config.reservations as i64)])
        .await?;
    let line = vec![OrderLine {
        sku: config.sku.clone(),
        qty: 1,
    }];
    let id = |i: usize| format!("{}-r{i}", config.sku);
    let started = Instant::now();
    let results: Vec<_> = stream::iter(0..config.reservations)
        .map(|i| {
            let (stock, line, id) = (stock, &line, id(i));
            async move {
                let t = Instant::now();
                let r = stock.reserve(&id, line, u64::MAX / 2).await;
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut latencies = Vec::with_capacity(results.len());
    for (took, r) in results {
        r.map_err(|e| StockError::Bench(e.to_string()))?;
        latencies.push(took);
    }
    // Put the units back so a repeated run starts from the same books.
    stream::iter(0..config.reservations)
        .map(|i| {
            let (stock, line, id) = (stock, &line, id(i));
            async move { stock.release(&id, line).await }
        })
        .buffer_unordered(in_flight)
        .for_each(|_| async {})
        .await;
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(Duration::ZERO)
            .as_micros() as u64
    };
    Ok(StockBenchReport {
        reservations: config.reservations,
        in_flight,
        elapsed_ms: elapsed.as_millis() as u64,
        per_second: config.reservations as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_us: at(0.50),
        p99_us: at(0.99),
    })
}
