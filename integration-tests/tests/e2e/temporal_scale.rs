//! Issue 29: on Temporal each worker's `--max-live` limits the sagas it
//! started itself, so a deployment scaled out admits more. Before, every
//! worker compared its limit with the deployment-wide count, and two
//! workers admitted what one did.
//!
//! Each run: a provider that answers in 1.5 s (so sagas stay in progress),
//! 16 orders on the embedded queue, workers with `--max-live 3`; the peak
//! of sagas running at once is read from the cluster (`list --status
//! running`), not from the workers.

use crate::deployment::{read, Deployment};
use std::time::{Duration, Instant};

const LIMIT: usize = 3;
const ORDERS: usize = 16;

/// The most sagas seen running at once while `workers` workers run
/// `ORDERS` orders to their end.
fn peak_running(workers: usize) -> usize {
    let deployment = Deployment::new(
        &format!("temporal-scale-{workers}"),
        "checkpointed",
        &["--latency", "1500ms"],
    );
    deployment.ok(&["stock", "set", "SKU-1=100"]);
    let ids = deployment.submit(ORDERS);
    let limit = LIMIT.to_string();
    let running: Vec<_> = (0..workers)
        .map(|n| deployment.worker(&format!("worker-{n}.log"), &["--max-live", &limit], &[]))
        .collect();
    let count = |status: &str| {
        deployment
            .ok(&["list", "--status", status, "--limit", "1000", "--json"])
            .lines()
            .filter(|l| ids.iter().any(|id| l.contains(id.as_str())))
            .count()
    };
    let began = Instant::now();
    let mut peak = 0;
    loop {
        peak = peak.max(count("running"));
        if count("completed") == ORDERS {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(150),
            "the orders did not end in 150 s (peak {peak}); worker 0:\n{}",
            read(&running[0].1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{workers} worker(s), --max-live {LIMIT}: at most {peak} running at once; {ORDERS} orders in {:?}",
        began.elapsed()
    );
    peak
}

#[test]
fn two_workers_admit_twice_what_one_admits() {
    let one = peak_running(1);
    assert!(
        (LIMIT - 1..=LIMIT + 1).contains(&one),
        "one worker ran {one} at once with --max-live {LIMIT}"
    );
    let two = peak_running(2);
    assert!(
        two > LIMIT + 1 && two <= 2 * LIMIT + 2,
        "two workers ran {two} at once with --max-live {LIMIT} each: about {} expected",
        2 * LIMIT
    );
}
