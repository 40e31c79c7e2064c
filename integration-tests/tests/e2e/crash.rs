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
    /// `[temporal] steps` (what a kill can make the next run repeat).
    steps: &'static str,
    orders: usize,
    stock: usize,
    in_flight: usize,
    latency_ms: u64,
    kills: usize,
    /// Each run is killed after a random wait in this range (ms).
    window: (u64, u64),
}

fn crash_run(plan: &Plan) {
    let dir = data_dir(&format!("crash-{}-{}", plan.engine, plan.steps));
    let d = dir.to_str().unwrap().to_owned();
    let mut config_tweaks = vec![];
    let (queue, steps);
    if plan.engine == "temporal" {
        if std::net::TcpStream::connect("127.0.0.1:7233").is_err() {
            panic!("Temporal is not running on 127.0.0.1:7233: start it with `scripts/services.sh temporal` (scripts/test.sh does)");
        }
        queue = format!(
            "task_queue = \"crash-{}-{}\"",
            plan.steps,
            std::process::id()
        );
        steps = format!("steps = \"{}\"", plan.steps);
        config_tweaks.push(("engine = \"embedded\"", "engine = \"temporal\""));
        config_tweaks.push(("task_queue = \"sagaflow\"", queue.as_str()));
        config_tweaks.push(("steps = \"checkpointed\"", steps.as_str()));
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
    let mut s = json_line(&sagaflow_ok(&refs));
    assert_eq!(s["invariants_ok"], true, "{s}");
    assert_eq!(s["orders"], plan.orders);
    if plan.steps == "local" {
        s = settle_past_pivot_parks(&config, &d);
    }
    assert_eq!(s["parked"], 0, "{s}");
    let completed = s["completed"].as_u64().unwrap();
    assert_eq!(
        completed + s["compensated"].as_u64().unwrap(),
        plan.orders as u64
    );
    if plan.steps != "local" {
        assert_eq!(s["payments_captured"].as_u64(), Some(completed));
    }
    if plan.engine == "embedded" {
        check_journal(&dir, plan.orders);
    }
    check_books(&dir, plan.stock, completed);
}

/// With every step local (`[temporal] steps = "local"`), a run after a
/// kill that would compensate a chain that may have passed the pivot parks
/// (any other park fails the test). The operator's procedure, with a
/// worker running: `retry` (forward: each step idempotent, so a step an
/// earlier run passed succeeds now); a step that fails the same way again
/// never happened, so `cancel` compensates. Returns `stats --json` once
/// every saga has ended.
fn settle_past_pivot_parks(config: &std::path::Path, data: &str) -> serde_json::Value {
    let c = config.to_str().unwrap();
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(&["--config", c, "--data", data])
            .map(|a| a.to_string())
            .collect()
    };
    let run = |args: &[&str]| {
        let all = with(args);
        sagaflow(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let mut worker = Command::new(bin())
        .args(with(&["run"]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut retried = std::collections::BTreeSet::new();
    let began = Instant::now();
    let stats = loop {
        let out = run(&["stats", "--json"]);
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stats: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        if n("running") + n("compensating") + n("parked") == 0 {
            break stats;
        }
        let parked = run(&["list", "--status", "parked", "--json", "--limit", "100000"]);
        for line in String::from_utf8_lossy(&parked.stdout).lines() {
            let row = json_line(line);
            let reason = row["reason"].as_str().unwrap_or("");
            assert!(reason.contains("may have passed the pivot"), "{row}");
            let id = row["id"].as_str().unwrap().to_owned();
            let verb = if retried.insert(id.clone()) {
                "retry"
            } else {
                "cancel"
            };
            run(&[
                verb,
                &id,
                "--reason",
                "crash test: a re-run that may have passed the pivot",
            ]);
        }
        assert!(
            began.elapsed() < Duration::from_secs(180),
            "sagas still open after the operator's commands: {stats}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = worker.kill();
    let _ = worker.wait();
    eprintln!(
        "{} saga(s) parked past a possible pivot, settled by an operator",
        retried.len()
    );
    stats
}

#[test]
fn embedded_sigkill_at_random_instants_loses_and_repeats_nothing() {
    crash_run(&Plan {
        engine: "embedded",
        steps: "checkpointed",
        orders: 1_000,
        stock: 900,
        in_flight: 3,
        latency_ms: 25,
        kills: 12,
        window: (250, 1_150),
    });
}

/// The default step mode: a kill re-runs at most the chain in progress on
/// one side of the pivot.
#[test]
fn temporal_sigkill_mid_run_loses_and_repeats_nothing() {
    crash_run(&Plan {
        engine: "temporal",
        steps: "checkpointed",
        orders: 500,
        stock: 400,
        in_flight: 20,
        latency_ms: 10,
        kills: 3,
        window: (3_000, 6_000),
    });
}

/// The all-local opt-in: a kill can make the next run repeat every step
/// since the last recorded workflow task, the capture included; the books
/// still balance (a smaller sale: the default's test carries the load).
#[test]
fn temporal_all_local_sigkill_mid_run_loses_and_repeats_nothing() {
    crash_run(&Plan {
        engine: "temporal",
        steps: "local",
        orders: 250,
        stock: 200,
        in_flight: 20,
        latency_ms: 10,
        kills: 2,
        window: (3_000, 6_000),
    });
}
