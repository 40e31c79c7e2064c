//! Running a Temporal worker: the saga workflow and every activity on the
//! configured task queue, until told to stop.

use super::activities::TemporalActivities;
use super::client::{TemporalClient, TemporalError};
use super::workflow::SagaWorkflow;
use sagaflow_activities::Registry;
use std::sync::Arc;
use std::time::Duration;
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

/// Runs a worker until `stop` resolves, then shuts it down gracefully.
///
/// The returned future is not `Send` (the SDK runs workflows on a local
/// task set): await it on the thread that made it.
pub async fn run_worker(
    client: &TemporalClient,
    registry: Arc<Registry>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), TemporalError> {
    let runtime = Runtime::from_current_tokio(RuntimeOptions::default())
        .map_err(|e| TemporalError::Request(e.to_string()))?;
    let options = WorkerOptions::new(client.settings.task_queue.clone())
        .register_workflow::<SagaWorkflow>()
        .map_err(|e| TemporalError::Request(e.to_string()))?
        .register_activities(TemporalActivities { registry })
        .graceful_shutdown_period(Duration::from_secs(5))
        .build();
    let mut worker = Worker::new(&runtime, client.client.clone(), options)
        .map_err(|e| TemporalError::Request(e.to_string()))?;
    let shutdown = worker.shutdown_handle();
    let run = worker.run();
    tokio::pin!(run);
    tokio::pin!(stop);
    tokio::select! {
        result = &mut run => result.map_err(|e| TemporalError::Request(e.to_string()))?,
        _ = &mut stop => {
            shutdown();
            run.await.map_err(|e| TemporalError::Request(e.to_string()))?;
        }
    }
    Ok(())
}
