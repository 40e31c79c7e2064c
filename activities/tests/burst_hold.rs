//! The burst limit as the engines meet it, through `Registry::attempt`: a
//! batch of calls after a quiet moment goes out a burst at a time, the
//! rest held in memory (never refused while the dependency is healthy),
//! and a batch that meets an outage sends the dependency one burst.

use sagaflow_activities::breaker::BreakerSettings;
use sagaflow_activities::{Breakers, Registry};
use sagaflow_workflows::{ActivityCall, ActivityError, Phase};
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Provider {
    started: AtomicU32,
    answered: AtomicU32,
    /// Calls started before any had been answered.
    before_first_answer: AtomicU32,
}

fn registry(provider: Arc<Provider>, down: bool) -> Registry {
    let mut registry = Registry::new();
    registry.register("payment.authorize", move |_call: ActivityCall| {
        let p = provider.clone();
        async move {
            p.started.fetch_add(1, Ordering::SeqCst);
            if p.answered.load(Ordering::SeqCst) == 0 {
                p.before_first_answer.fetch_add(1, Ordering::SeqCst);
            }
            // A round trip, short while down (a 503 comes back at once)
            // but long enough that a batch is all sent before it.
            tokio::time::sleep(Duration::from_millis(if down { 5 } else { 20 })).await;
            if down {
                p.answered.fetch_add(1, Ordering::SeqCst);
                return Err(ActivityError::retryable("http_503", "unavailable"));
            }
            p.answered.fetch_add(1, Ordering::SeqCst);
            Ok(json!({"ok": true}))
        }
    });
    registry.set_breakers(Breakers::new([(
        "payment".to_owned(),
        BreakerSettings::default_for("payment"),
    )]));
    registry
}

fn call(i: usize) -> ActivityCall {
    ActivityCall {
        step: "authorize".into(),
        activity: "payment.authorize".into(),
        phase: Phase::Action,
        attempt: 1,
        timeout_ms: 5_000,
        idempotency_key: format!("s{i}:authorize"),
        input: json!({"saga_id": format!("s{i}")}),
    }
}

async fn batch(registry: &Registry, n: usize) -> Vec<Result<serde_json::Value, ActivityError>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let r = registry.clone();
            tokio::spawn(async move { r.attempt(call(i)).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_batch_goes_out_a_burst_at_a_time_and_none_is_refused() {
    let provider = Arc::new(Provider::default());
    let registry = registry(provider.clone(), false);
    let results = batch(&registry, 15).await;
    assert!(
        results.iter().all(|r| r.is_ok()),
        "held calls go once there is room: {results:?}"
    );
    assert_eq!(provider.started.load(Ordering::SeqCst), 15);
    assert_eq!(
        provider.before_first_answer.load(Ordering::SeqCst),
        5,
        "five calls before the first answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_meeting_an_outage_sends_one_burst_and_the_rest_wait() {
    let provider = Arc::new(Provider::default());
    let registry = registry(provider.clone(), true);
    let results = batch(&registry, 15).await;
    assert_eq!(
        provider.started.load(Ordering::SeqCst),
        5,
        "one burst reached the provider"
    );
    let waits = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(|e| e.wait.is_some()))
        .count();
    assert!(
        results.iter().all(|r| r.is_err()) && waits >= 10,
        "the held ones wait on the breaker without spending an attempt: {results:?}"
    );
    assert!(registry
        .breakers()
        .open_among(["payment.authorize"])
        .is_some());
}
