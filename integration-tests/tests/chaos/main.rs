//! Chaos on the production topology (issue 12): orders arrive over AMQP,
//! stock lives in Redis, workers share one standalone payment sandbox that
//! answers 10% of POSTs with a 500, holds 5% of requests past the client's
//! time limit and adds latency spikes, and one order store (the embedded
//! store in one data directory, which every worker process opens: SQLite in
//! WAL mode takes one writer at a time across processes). A driver SIGKILLs
//! random workers at random instants and starts them again, crashes and
//! restarts Redis once and the broker once, and prints its seed.
//!
//! Then, from the stores themselves: every message became a saga or a dead
//! letter; every saga ended (completed or compensated: the faults are
//! transient, so none stays parked); at least one saga was handed from a
//! killed worker to another (the sandbox's request log: a request from the
//! killed pid before its kill and one from another pid after it);
//! `sagaflow reconcile` finds no drift; nothing is oversold or left
//! reserved; no payment is captured twice.
//!
//! Two runs: three workers on the Temporal engine, and one worker on the
//! embedded engine. CI runs the reduced form (300 and 2,000 orders, 5 kills
//! each); the full run is
//! `SAGAFLOW_CHAOS=full cargo test --release -p sagaflow-integration-tests --test chaos -- --nocapture`
//! (RELIABILITY.md has its figures). `SAGAFLOW_CHAOS_SEED=N` replays a
//! seed's schedule (the processes' timing still varies).

// Shared with the e2e binary, which uses the rest of them.
#[allow(dead_code)]
#[path = "../shared/broker.rs"]
mod broker;
#[allow(dead_code)]
#[path = "../shared/common.rs"]
mod common;
#[path = "../shared/redis_server.rs"]
mod redis_server;
#[path = "../shared/sandbox.rs"]
mod sandbox;
mod world;

use broker::{delete_queues, depth, fresh_queue, restart_broker, servicebus_config};
use redis_server::RedisServer;
use sandbox::StandaloneSandbox;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use world::*;

/// The runs restart the machine's broker: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// How big a run is.
struct Scale {
    orders: usize,
    kills: usize,
}

impl Scale {
    /// `(orders, kills)` for the full run (`SAGAFLOW_CHAOS=full`), else the
    /// reduced one CI runs.
    fn pick(full_run: (usize, usize), ci: (usize, usize)) -> Scale {
        let (orders, kills) = if full() { full_run } else { ci };
        Scale { orders, kills }
    }
}

fn full() -> bool {
    std::env::var("SAGAFLOW_CHAOS").is_ok_and(|v| v == "full")
}

fn seed() -> u64 {
    std::env::var("SAGAFLOW_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| wall_ms() ^ u64::from(std::process::id()) << 32)
}

/// splitmix64: a seeded schedule without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn ms(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}

/// The fault knobs of the shared sandbox.
const FAULTS: &[&str] = &[
    "--error-rate",
    "0.10",
    "--timeout-rate",
    "0.05",
    "--timeout-hold",
    "3s",
    "--spike-rate",
    "0.05",
    "--spike-latency",
    "1s",
];

const SKUS: usize = 8;

/// How long one `sagaflow` command of the driver may take (each takes
/// seconds at most, even while the broker or Redis is down): past it the
/// run fails naming the command, rather than hanging until CI's limit.
const CALL_LIMIT: Duration = Duration::from_secs(120);

/// One valid order; every tenth has a second line (two SKUs: the
/// multi-line reserve and its undo), about one in 23 is declined.
fn order(id: &str, n: usize) -> String {
    let card = if n % 23 == 7 {
        "pm_card_chargeDeclined"
    } else {
        "pm_card_visa"
    };
    let mut items = format!(r#"{{"sku":"sku-{}","qty":1}}"#, n % SKUS);
    if n % 10 == 3 {
        items.push_str(&format!(r#",{{"sku":"sku-{}","qty":1}}"#, (n + 1) % SKUS));
    }
    format!(
        r#"{{"order_id":"{id}","customer":"cust-{}","items":[{items}],"amount":1999,"currency":"usd","payment_method":"{card}"}}"#,
        n % 97
    )
}

/// One order the worker must refuse at the door (no lines).
fn invalid(id: &str) -> String {
    format!(
        r#"{{"order_id":"{id}","customer":"c","items":[],"amount":1999,"currency":"usd","payment_method":"pm_card_visa"}}"#
    )
}

#[test]
fn three_temporal_workers_survive_kills_and_restarts_and_the_books_agree() {
    let scale = Scale::pick((2_000, 20), (300, 5));
    require_temporal();
    chaos("temporal", 3, &scale, "checkpointed");
}

/// The all-local opt-in (`[temporal] steps = "local"`), where a kill can
/// make the next worker repeat the capture: a smaller sale in CI.
#[test]
fn three_temporal_workers_with_every_step_local_survive_kills_and_the_books_agree() {
    let scale = Scale::pick((2_000, 20), (150, 3));
    require_temporal();
    chaos("temporal", 3, &scale, "local");
}

fn require_temporal() {
    if std::net::TcpStream::connect("127.0.0.1:7233").is_err() {
        panic!("Temporal is not running on 127.0.0.1:7233: start it with `scripts/services.sh temporal` (scripts/test.sh does)");
    }
}

#[test]
fn one_embedded_worker_survives_kills_and_restarts_and_the_books_agree() {
    let scale = Scale::pick((10_000, 20), (2_000, 5));
    chaos("embedded", 1, &scale, "checkpointed");
}

/// `mode`: `[temporal] steps` (ignored by the embedded engine).
fn chaos(engine: &str, worker_count: usize, scale: &Scale, mode: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed();
    eprintln!("chaos {engine}: seed {seed} (SAGAFLOW_CHAOS_SEED={seed} replays the schedule)");
    let mut rng = Rng(seed);
    let began = Instant::now();
    let dir = common::data_dir(&format!("chaos-{engine}-{mode}"));
    let mut redis = RedisServer::start(&dir.join("redis"));
    let sandbox = StandaloneSandbox::start(&dir.join("provider"), API_KEY, FAULTS);
    let queue = fresh_queue(&format!("chaos-{engine}-{mode}"));
    let unique = format!("chaos-{engine}-{mode}-{}-{seed}", std::process::id());
    let data = dir.join("workers");
    std::fs::create_dir_all(&data).unwrap();
    let base_url = format!("base_url = \"{}\"", sandbox.url);
    let key_prefix = format!("key_prefix = \"{unique}:\"");
    let task_queue = format!("task_queue = \"{unique}\"");
    let steps = format!("steps = \"{mode}\"");
    let mut replace = vec![
        ("stock = \"embedded\"", "stock = \"redis\""),
        ("key_prefix = \"sagaflow:\"", key_prefix.as_str()),
        ("payment = \"sandbox\"", "payment = \"http\""),
        ("base_url = \"\"", base_url.as_str()),
        // A held request fails after 2 s, not 5: the run stays short.
        ("request_timeout = \"5s\"", "request_timeout = \"2s\""),
        // The sandbox's search does not trail its writes here.
        ("search_lag = \"1m\"", "search_lag = \"0ms\""),
        // Lines a killed attempt of a multi-line reserve left under a saga
        // that then ended (a failed attempt gives back only its own claims:
        // the other one may be a live attempt) go back through the reaper
        // at their deadline: a short one, so the run can wait for it.
        ("reservation_ttl = \"15m\"", "reservation_ttl = \"3s\""),
    ];
    if engine == "temporal" {
        replace.push(("engine = \"embedded\"", "engine = \"temporal\""));
        replace.push(("task_queue = \"sagaflow\"", task_queue.as_str()));
        replace.push(("steps = \"checkpointed\"", steps.as_str()));
    }
    let config = servicebus_config(&data, &queue, &replace);
    let redis_url = redis.url();
    let run = |args: &[&str]| command(args, &config, &data, &redis_url);
    let ok = |args: &[&str]| -> String {
        let out = common::output_within(&mut run(args), CALL_LIMIT);
        common::stdout_of_success(args, out)
    };

    // Demand above supply: some orders sell out and are compensated.
    let units = scale.orders * 4 / 5;
    let mut seed_args = vec!["stock".to_owned(), "set".to_owned()];
    for s in 0..SKUS {
        seed_args.push(format!("sku-{s}={}", units / SKUS));
    }
    let seed_refs: Vec<&str> = seed_args.iter().map(String::as_str).collect();
    ok(&seed_refs);

    // The orders, in batches sent while the chaos goes on.
    let invalid_every = 100;
    let mut valid: Vec<String> = Vec::new();
    let mut refused: BTreeSet<String> = BTreeSet::new();
    let mut lines = Vec::new();
    for n in 0..scale.orders {
        let id = format!("{unique}-{n:05}");
        lines.push(order(&id, n));
        valid.push(id);
        if n % invalid_every == 50 {
            let bad = format!("{unique}-bad-{n:05}");
            lines.push(invalid(&bad));
            refused.insert(bad);
        }
    }
    let batches = (scale.kills * 2).max(4);
    let per_batch = lines.len().div_ceil(batches);
    let files: Vec<std::path::PathBuf> = lines
        .chunks(per_batch)
        .enumerate()
        .map(|(i, chunk)| {
            let file = dir.join(format!("batch-{i:03}.jsonl"));
            std::fs::write(&file, chunk.join("\n")).unwrap();
            file
        })
        .collect();

    let mut workers = Workers::start(worker_count, &config, &data, &redis_url);
    // The schedule: a batch every 0.5-1.5 s; a kill every 1-3 s, the
    // killed worker back after 0.2-1.5 s; Redis and the broker once each,
    // at kills chosen by the seed.
    let redis_at = rng.below(scale.kills as u64) as usize;
    let broker_at = (redis_at + 1 + rng.below(scale.kills as u64 - 1) as usize) % scale.kills;
    let mut next_batch = Instant::now();
    let mut next_kill = Instant::now() + rng.ms(1_500, 3_000);
    let mut restarts: Vec<(Instant, usize)> = Vec::new();
    let (mut sent, mut killed) = (0, 0);
    let (mut redis_restarts, mut broker_restarts) = (0, 0);
    while sent < files.len() || killed < scale.kills || !restarts.is_empty() {
        let now = Instant::now();
        if sent < files.len() && now >= next_batch {
            let file = files[sent].to_str().unwrap();
            // Every line was checked when written; the invalid ones are
            // meant to be dead-lettered by the worker.
            let mut tries = 0;
            while !common::output_within(&mut run(&["send", "--raw", file]), CALL_LIMIT)
                .status
                .success()
            {
                tries += 1;
                assert!(tries < 20, "cannot send {file} to the broker");
                std::thread::sleep(Duration::from_millis(500));
            }
            sent += 1;
            next_batch = now + rng.ms(500, 1_500);
        }
        let running = workers.running();
        // A kill lands on a running worker: with every worker down (one
        // worker, not back yet), it waits.
        if killed < scale.kills && now >= next_kill && !running.is_empty() {
            let slot = running[rng.below(running.len() as u64) as usize];
            workers.kill(slot);
            restarts.push((now + rng.ms(200, 1_500), slot));
            killed += 1;
            eprintln!(
                "chaos {engine}: kill {killed} (worker {slot}) at {:?}",
                began.elapsed()
            );
            if killed - 1 == redis_at {
                redis.crash_and_restart(rng.ms(300, 1_500));
                redis_restarts += 1;
                eprintln!("chaos {engine}: Redis crashed and restarted");
            }
            if killed - 1 == broker_at {
                restart_broker(rng.ms(1_000, 3_000));
                broker_restarts += 1;
                eprintln!("chaos {engine}: broker restarted");
            }
            next_kill = Instant::now() + rng.ms(1_000, 3_000);
        }
        restarts.retain(|(at, slot)| {
            if Instant::now() >= *at {
                workers.restart(*slot);
                false
            } else {
                true
            }
        });
        workers.check_alive();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        workers.kills.len(),
        scale.kills,
        "every kill hit a running worker"
    );
    eprintln!(
        "chaos {engine}: every batch sent, {killed} kills done at {:?}; waiting for every saga to end",
        began.elapsed()
    );

    // Every valid order a saga that ended; the queue drained.
    let limit = Duration::from_secs(if full() { 1_200 } else { 300 });
    let waited = Instant::now();
    // Sagas an operator sent forward, and commands sent (all-local only).
    let mut retried: BTreeSet<String> = BTreeSet::new();
    let mut operator_commands = 0;
    let stats = loop {
        workers.check_alive();
        let stats: Value = serde_json::from_str(ok(&["stats", "--json"]).trim()).unwrap();
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        let ended = n("completed") + n("compensated");
        if ended == valid.len() as u64 && depth(&queue) == (0, 0) {
            break stats;
        }
        // With every step local, a re-run that would compensate a chain
        // that may have passed the pivot parks instead. The operator's
        // procedure: `retry` (forward: each step idempotent, so if the
        // earlier run passed the step it succeeds now); a step that fails
        // the same way again never happened, so `cancel` compensates.
        let mut commanded = false;
        if mode == "local" && n("parked") > 0 {
            for line in ok(&["list", "--status", "parked", "--json", "--limit", "100000"]).lines() {
                let row: Value = serde_json::from_str(line).unwrap();
                if !row["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("may have passed the pivot")
                {
                    continue;
                }
                let id = row["id"].as_str().unwrap().to_owned();
                let verb = if retried.insert(id.clone()) {
                    "retry"
                } else {
                    "cancel"
                };
                let why = "chaos: a re-run that may have passed the pivot";
                let _ = common::output_within(&mut run(&[verb, &id, "--reason", why]), CALL_LIMIT);
                operator_commands += 1;
                commanded = true;
            }
        }
        let stuck = n("parked") > 0 && n("running") + n("compensating") == 0 && !commanded;
        if waited.elapsed() > limit || stuck {
            let parked = ok(&["list", "--status", "parked"]);
            let logs: String = (0..workers.len()).map(|s| logs_of(&data, s)).collect();
            panic!("chaos {engine} (seed {seed}): not every saga ended after {limit:?}: {stats}\nparked:\n{parked}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // The reaper returns what interrupted attempts of ended sagas held.
    let drained = Instant::now();
    loop {
        workers.check_alive();
        let stock: Value = serde_json::from_str(ok(&["stock", "show", "--json"]).trim()).unwrap();
        if stock["reserved"] == 0 {
            break;
        }
        assert!(
            drained.elapsed() < Duration::from_secs(60),
            "stock still reserved a minute after every saga ended: {stock}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    workers.stop();
    let elapsed = began.elapsed();
    let n = |k: &str| stats[k].as_u64().unwrap_or(0);
    assert_eq!(
        n("total"),
        valid.len() as u64,
        "one saga per valid order: {stats}"
    );
    assert_eq!(n("parked"), 0, "none parked: {stats}");

    // Every invalid message is a dead letter with a reason.
    let letters: Vec<Value> = ok(&["dlq", "list", "--json", "--limit", "100000"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut dead: BTreeSet<String> = BTreeSet::new();
    for letter in &letters {
        assert!(
            !letter["reason"].as_str().unwrap_or("").is_empty(),
            "a dead letter without a reason: {letter}"
        );
        let body: Value = serde_json::from_str(letter["body"].as_str().unwrap()).unwrap();
        dead.insert(body["order_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        dead, refused,
        "every invalid message dead-lettered, no valid one"
    );

    // The provider's books: no double capture, one live intent per order,
    // one capture per completed saga.
    let books = sandbox.ledger();
    let l = &books["ledger"];
    assert_eq!(l["double_captures"], 0, "{l}");
    assert_eq!(l["orders_with_several_intents"], 0, "{l}");
    assert_eq!(l["succeeded"].as_u64(), Some(n("completed")), "{l}");
    assert_eq!(l["requires_capture"], 0, "no hold left on a card: {l}");

    // The stock in Redis: nothing oversold, nothing left reserved.
    let stock: Value = serde_json::from_str(ok(&["stock", "show", "--json"]).trim()).unwrap();
    assert_eq!(stock["inconsistent"], false, "{stock}");
    assert_eq!(stock["reserved"], 0, "{stock}");
    assert!(stock["sold"].as_i64().unwrap() <= units as i64, "{stock}");
    assert_eq!(
        stock["committed_reservations"].as_u64(),
        Some(n("completed")),
        "{stock}"
    );

    // Reconcile agrees, store by store and saga by saga.
    let out = common::output_within(&mut run(&["reconcile", "--json"]), CALL_LIMIT);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "reconcile printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "reconcile found drift: {report:#}");
    assert_eq!(report["drifts"], serde_json::json!([]), "{report:#}");

    // A hand-over: a saga's payment touched by a worker before it was
    // killed, and by another worker process after.
    let requests = books["requests"].as_array().unwrap();
    let pid_of = |r: &Value| -> Option<u32> {
        let client = r["client"].as_str()?;
        client
            .rsplit_once("pid ")?
            .1
            .trim_end_matches(')')
            .parse()
            .ok()
    };
    let handed: BTreeSet<&str> = workers
        .kills
        .iter()
        .flat_map(|&(pid, at)| {
            let before: BTreeSet<&str> = requests
                .iter()
                .filter(|r| pid_of(r) == Some(pid) && r["at_ms"].as_u64() <= Some(at))
                .filter_map(|r| r["intent"].as_str())
                .collect();
            requests
                .iter()
                .filter(move |r| {
                    pid_of(r).is_some_and(|p| p != pid) && r["at_ms"].as_u64() > Some(at)
                })
                .filter_map(|r| r["intent"].as_str())
                .filter(move |i| before.contains(i))
                .collect::<Vec<&str>>()
        })
        .collect();
    assert!(
        !handed.is_empty(),
        "no saga was handed from a killed worker to another (kills: {:?})",
        workers.kills
    );
    let injected = requests.iter().filter(|r| r["status"] == 500).count();
    let summary = serde_json::json!({
        "engine": engine,
        "workers": worker_count,
        "seed": seed,
        "orders": valid.len(),
        "invalid_messages": refused.len(),
        "completed": n("completed"),
        "compensated": n("compensated"),
        "parked": n("parked"),
        "steps": mode,
        "operator_commands": operator_commands,
        "kills": workers.kills.len(),
        "redis_restarts": redis_restarts,
        "broker_restarts": broker_restarts,
        "provider_posts": requests.len(),
        "provider_500s": injected,
        "handed_over": handed.len(),
        "drift": report["drifts"].as_array().map_or(0, Vec::len),
        "seconds": elapsed.as_secs_f64().round(),
    });
    eprintln!("chaos {engine}: {summary}");
    delete_queues(&queue);
}
