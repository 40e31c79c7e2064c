//! `sagaflow bench-queue`: messages per second from the Service Bus queue
//! to durably started sagas, next to the broker's own rate.
//!
//! Both runs move the same N order messages through the same queue with the
//! same sender (pipelined, running at the same time as the consumer):
//! - **broker**: a bare AMQP receiver accepts each message as it arrives
//!   (send + receive + accept, nothing else);
//! - **sagaflow**: the Service Bus trigger parses each message, starts its
//!   saga on the embedded engine (one fsync'd journal commit, shared by
//!   whatever is waiting) and accepts it only after that.
//!
//! The ratio sagaflow / broker is the figure: what the durable start costs
//! on top of the broker. Each message starts a noop saga of `--steps` steps
//! (default 1: the start path alone; with 5, running the sagas' journal
//! writes competes with the starts on the same two cores).

use super::bench::{noop_saga, order};
use crate::app::{self, DataPaths};
use crate::config::Config;
use crate::engine::{Definition, Starter};
use crate::runtime::runtime;
use crate::trigger::servicebus::endpoint::Endpoint;
use crate::trigger::servicebus::error::LinkError;
use crate::trigger::servicebus::send::{send_all, Outgoing};
use crate::trigger::servicebus::ServiceBusTrigger;
use crate::trigger::Intake;
use crate::trigger::TriggerStats;
use anyhow::{anyhow, Result};
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use sagaflow_activities::registry::register_noop;
use sagaflow_activities::Breakers;
use sagaflow_activities::Registry;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `bench-queue`.
#[derive(Debug, clap::Args)]
pub struct BenchQueueArgs {
    /// Messages per run
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Queue to use instead of [servicebus] queue (it is drained first)
    #[arg(long)]
    pub queue: Option<String>,
    /// Steps of the noop saga each message starts: 1 measures the start
    /// path alone; 5 adds the journal work of running the sagas meanwhile
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub steps: u8,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// The two rates and their ratio.
#[derive(Debug, Serialize)]
struct QueueBench {
    messages: usize,
    saga_steps: u8,
    prefetch: u32,
    broker_msgs_per_sec: f64,
    sagaflow_msgs_per_sec: f64,
    ratio: f64,
    broker_elapsed_s: f64,
    sagaflow_elapsed_s: f64,
    drained_before: usize,
}

fn bodies(run: &str, n: usize) -> Vec<Outgoing> {
    (0..n)
        .map(|i| {
            let id = format!("bq-{run}-{i:07}");
            let body = serde_json::to_vec(&order(&id)).expect("orders serialize");
            Outgoing {
                id,
                body,
                properties: Vec::new(),
            }
        })
        .collect()
}

/// Sends `msgs` on a task of its own, so the consumer runs meanwhile.
fn spawn_sender(
    endpoint: &Endpoint,
    address: &str,
    msgs: Vec<Outgoing>,
) -> tokio::task::JoinHandle<Result<usize, LinkError>> {
    let (endpoint, address) = (endpoint.clone(), address.to_owned());
    tokio::spawn(async move { send_all(&endpoint, &address, msgs, |_| {}).await })
}

/// Receives and accepts `n` messages (or, with `n = usize::MAX`, until
/// the queue is quiet for a while). Returns how many.
async fn receive_accept(
    endpoint: &Endpoint,
    address: &str,
    n: usize,
    prefetch: u32,
) -> Result<usize, String> {
    let mut link = endpoint
        .connect("sagaflow-bench-rx")
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let mut receiver = link
            .peek_lock_receiver(
                "sagaflow-bench-rx".into(),
                address,
                CreditMode::Auto(prefetch),
            )
            .await
            .map_err(|e| e.to_string())?;
        let quiet = if n == usize::MAX {
            Duration::from_millis(700)
        } else {
            Duration::from_secs(30)
        };
        let mut got = 0;
        while got < n {
            match tokio::time::timeout(quiet, receiver.recv::<Body<Value>>()).await {
                Ok(Ok(d)) => {
                    receiver.accept(&d).await.map_err(|e| e.to_string())?;
                    got += 1;
                }
                Ok(Err(e)) => return Err(format!("receive failed: {e}")),
                Err(_) if n == usize::MAX => break,
                Err(_) => return Err(format!("only {got} of {n} messages arrived")),
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), receiver.close()).await;
        Ok(got)
    }
    .await;
    link.close().await;
    result
}

/// `sagaflow bench-queue`.
pub fn bench_queue(
    mut config: Config,
    data: Option<PathBuf>,
    args: BenchQueueArgs,
) -> Result<ExitCode> {
    if let Some(q) = args.queue {
        config.servicebus.queue = q;
    }
    let n = args.messages.max(1);
    let endpoint = Endpoint::from_env(&config.servicebus.connection_env)?;
    let address = endpoint.queue_address(&config.servicebus.queue);
    let prefetch = config.servicebus.prefetch;
    let dir = data.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sagaflow-bench-queue-{}", std::process::id()))
    });
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let paths = DataPaths::new(&dir)?;
    let run = format!("{:x}", sagaflow_activities::clock::now_ms());
    let rt = runtime()?;
    let result = rt.block_on(async {
        let drained_before = receive_accept(&endpoint, &address, usize::MAX, prefetch)
            .await
            .map_err(anyhow::Error::msg)?;
        if !args.json {
            eprintln!("broker: send + receive + accept of {n} messages ...");
        }
        let began = Instant::now();
        let sender = spawn_sender(&endpoint, &address, bodies(&format!("{run}-b"), n));
        receive_accept(&endpoint, &address, n, prefetch)
            .await
            .map_err(anyhow::Error::msg)?;
        sender.await?.map_err(anyhow::Error::msg)?;
        let broker_elapsed = began.elapsed().as_secs_f64();

        if !args.json {
            eprintln!(
                "sagaflow: send + trigger -> durable saga start + accept of {n} messages ..."
            );
        }
        let mut registry = Registry::new();
        register_noop(&mut registry);
        let engine = app::start_engine(&config, &paths, Arc::new(registry), None, None)?;
        let mut saga = noop_saga();
        if args.steps < 5 {
            // Keep the first `steps` steps; the last one is the pivot.
            saga.steps.truncate(args.steps as usize);
            saga.pivot = Some(saga.steps.len() - 1);
            saga.steps
                .last_mut()
                .expect("at least one step")
                .compensation = None;
        }
        let def = Definition::new(saga);
        let stats = Arc::new(TriggerStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let trigger = ServiceBusTrigger {
            endpoint: endpoint.clone(),
            settings: config.servicebus.clone(),
            intake: Intake::new(usize::MAX / 2, Breakers::none(), &def.def),
        };
        let began = Instant::now();
        let sender = spawn_sender(&endpoint, &address, bodies(&format!("{run}-s"), n));
        let consumer = tokio::spawn(trigger.run(
            Starter::Embedded(engine.handle()),
            def,
            stop.clone(),
            stats.clone(),
        ));
        let started =
            || stats.started.load(Ordering::Relaxed) + stats.duplicates.load(Ordering::Relaxed);
        while started() < n as u64 {
            if began.elapsed() > Duration::from_secs(300) {
                return Err(anyhow!("only {} of {n} sagas started in 300 s", started()));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sagaflow_elapsed = began.elapsed().as_secs_f64();
        sender.await?.map_err(anyhow::Error::msg)?;
        stop.store(true, Ordering::Relaxed);
        let _ = consumer.await;
        let _ = tokio::task::spawn_blocking(move || engine.stop()).await;
        let broker_rate = n as f64 / broker_elapsed;
        let sagaflow_rate = n as f64 / sagaflow_elapsed;
        anyhow::Ok(QueueBench {
            messages: n,
            saga_steps: args.steps,
            prefetch,
            broker_msgs_per_sec: broker_rate,
            sagaflow_msgs_per_sec: sagaflow_rate,
            ratio: sagaflow_rate / broker_rate,
            broker_elapsed_s: broker_elapsed,
            sagaflow_elapsed_s: sagaflow_elapsed,
            drained_before,
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    let r = result?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "broker (send+receive+accept)           {:>9.0} msgs/s  ({:.2} s)",
            r.broker_msgs_per_sec, r.broker_elapsed_s
        );
        println!(
            "sagaflow (queue -> durable saga start) {:>9.0} msgs/s  ({:.2} s)",
            r.sagaflow_msgs_per_sec, r.sagaflow_elapsed_s
        );
        println!(
            "ratio {:.2} (target >= 0.5); {} messages, prefetch {}, {}-step noop saga",
            r.ratio, r.messages, r.prefetch, r.saga_steps
        );
    }
    Ok(ExitCode::SUCCESS)
}
