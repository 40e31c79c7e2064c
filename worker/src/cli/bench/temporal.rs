//! `bench --engine temporal`: the same closed loop on a Temporal cluster.

use super::*;
use crate::app::DataPaths;
use crate::config::Config;
use crate::engine::temporal::client::TemporalClient;
use crate::engine::temporal::worker::WorkerThread;
use crate::engine::view::percentile;
use anyhow::Result;
use sagaflow_workflows::SagaStatus;
use std::sync::Arc;
use std::time::Instant;

/// The same closed loop on a Temporal cluster: a worker in this process
/// (same adapters), `in_flight` clients each starting a saga and waiting
/// for its result.
pub(super) async fn bench_temporal(
    config: &Config,
    paths: &DataPaths,
    args: &BenchArgs,
    (sagas, in_flight): (usize, usize),
    provider_pid: Option<u32>,
) -> Result<BenchResult> {
    let (registry, def, _adapters) = world(config, paths, args.activities, sagas).await?;
    let client = TemporalClient::connect(&config.temporal).await?;
    client.check_search_attributes().await?;
    let worker = WorkerThread::spawn(&config.temporal, registry, Arc::default()).await?;
    let run = format!(
        "bench-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let meter = Meter::start(provider_pid);
    let begin = Instant::now();
    let mut tasks = Vec::with_capacity(in_flight);
    for _ in 0..in_flight.min(sagas) {
        let (client, def, next, run) = (client.clone(), def.clone(), next.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= sagas {
                    return anyhow::Ok(latencies);
                }
                let id = format!("{run}-{i:08}");
                let t = Instant::now();
                client
                    .start(client.saga_input(id.clone(), &def, order(&id)))
                    .await?;
                let outcome = client.wait(&id).await?;
                if outcome.status != SagaStatus::Completed {
                    anyhow::bail!(
                        "saga {id} ended {}; the measurement is void",
                        outcome.status.name()
                    );
                }
                latencies.push(t.elapsed().as_micros() as u64);
            }
        }));
    }
    let mut latencies = Vec::with_capacity(sagas);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = begin.elapsed();
    let used = meter.per_saga(latencies.len());
    tokio::task::spawn_blocking(move || worker.stop())
        .await?
        .map_err(anyhow::Error::msg)?;
    latencies.sort_unstable();
    Ok(BenchResult {
        engine: "temporal",
        activities: args.activities,
        group_commit: None,
        sagas: latencies.len(),
        in_flight,
        // Activity and local-activity slots alike (`--max-activities`).
        max_concurrent_activities: Some(config.temporal.activity_slots),
        sagas_per_sec: (latencies.len() as f64 / elapsed.as_secs_f64() * 10.0).round() / 10.0,
        p50_ms: percentile(&latencies, 0.50) as f64 / 1000.0,
        p99_ms: percentile(&latencies, 0.99) as f64 / 1000.0,
        elapsed_s: (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        fsync: "the Temporal server's persistence (dev server: SQLite file)",
        provider: None,
        provider_latency_ms: None,
        worker_cpu_ms_per_saga: used.worker_cpu_ms,
        provider_cpu_ms_per_saga: used.provider_cpu_ms,
        peak_rss_mb: used.peak_rss_mb,
        journal_sagas_before: None,
        first_saga_ms: None,
        journal_mb: None,
        temporal_steps: Some(TemporalSteps::of(config.temporal.steps)),
        history_events_per_saga: Some(
            history_events_per_saga(&client.scoped(&run), latencies.len()).await?,
        ),
    })
}

/// The run's history events per saga (visibility's `HistoryLength`
/// summed), once all `sagas` show as ended there: visibility trails the
/// workflows' ends by a moment.
pub(super) async fn history_events_per_saga(client: &TemporalClient, sagas: usize) -> Result<f64> {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (ended, events) = client.history_events(sagas).await?;
        if ended as usize >= sagas {
            return Ok((events as f64 / ended as f64 * 100.0).round() / 100.0);
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "visibility did not show all {sagas} sagas of the run as ended within 30 s"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
