//! SIGKILL the worker at random instants during a flash sale, restart it
//! each time, and check the books directly: every order became a saga that
//! ended, no step's effect was applied twice, no oversell, no double charge.

use crate::books::{check_books, check_journal};
use crate::common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// One crash run's shape.
struct Plan {
    engine: &'static str,
    orders: usize,
    stock: usize,
    in_flight: usize,
    latency_ms: u64,
    kills: usize,
    /// Each run is killed after a random wait in this range (ms).
    window: (u64, u64),
}

fn crash_run(plan: &Plan) {
    let dir = data_dir(&format!("crash-{}", plan.engine));
    let d = dir.to_str().unwrap().to_owned();
    let mut config_tweaks = vec![];
    let queue;
    if plan.engine == "temporal" {
        if std::net::TcpStream::connect("127.0.0.1:7233").is_err() {
            panic!("Temporal is not running on 127.0.0.1:7233: start it with `scripts/services.sh temporal` (scripts/test.sh does)");
        }
        queue = format!("task_queue = \"crash-{}\"", std::process::id());
        config_tweaks.push(("engine = \"embedded\"", "engine = \"temporal\""));
        config_tweaks.push(("task_queue = \"sagaflow\"", queue.as_str()));
    }
    let config = config_with(&dir, &config_tweaks);
    let args: Vec<String> = [
        "demo",
        "--orders",
        &plan.orders.to_string(),
        "--stock",
        &plan.stock.to_string(),
        "--decline-rate",
        "0.05",
        "--data",
        &d,
        "--config",
        config.to_str().unwrap(),
        "--json",
        "--in-flight",
        &plan.in_flight.to_string(),
        "--sandbox-latency-ms",
        &plan.latency_ms.to_string(),
        "--sandbox-error-rate",
        "0.02",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test ({}) seed {seed}", plan.engine);
    let mut kills = 0;
    while kills < plan.kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_millis(plan.window.0 + seed % (plan.window.1 - plan.window.0));
        let log_path = dir.join(format!("run-{kills}.log"));
        let mut child = Command::new(bin())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let began = Instant::now();
        while began.elapsed() < wait {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&log_path).unwrap();
                panic!(
                    "run {kills} ended by itself ({status}) before it was killed; the sale must last \
                     for {} kills (raise the sandbox latency):\n{log}",
                    plan.kills
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SIGKILL: no chance to flush or clean up.
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }

    // A last run without interference finishes the sale.
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = json_line(&sagaflow_ok(&refs));
    assert_eq!(s["invariants_ok"], true, "{s}");
    assert_eq!(s["orders"], plan.orders);
    assert_eq!(s["parked"], 0, "{s}");
    let completed = s["completed"].as_u64().unwrap();
    assert_eq!(
        completed + s["compensated"].as_u64().unwrap(),
        plan.orders as u64
    );
    assert_eq!(s["payments_captured"].as_u64(), Some(completed));
    if plan.engine == "embedded" {
        check_journal(&dir, plan.orders);
    }
    check_books(&dir, plan.stock, completed);
}

#[test]
fn embedded_sigkill_at_random_instants_loses_and_repeats_nothing() {
    crash_run(&Plan {
        engine: "embedded",
        orders: 1_000,
        stock: 900,
        in_flight: 3,
        latency_ms: 25,
        kills: 12,
        window: (250, 1_150),
    });
}

#[test]
fn temporal_sigkill_mid_run_loses_and_repeats_nothing() {
    crash_run(&Plan {
        engine: "temporal",
        orders: 500,
        stock: 400,
        in_flight: 20,
        latency_ms: 10,
        kills: 3,
        window: (3_000, 6_000),
    });
}
