//! Issue 29: a Temporal worker dies right after the capture's answer and
//! before its result is in history (the test-only fault point
//! `SAGAFLOW_TEST_ABORT_AFTER`), and a second worker takes the saga over.
//!
//! In the default step mode (`checkpointed`) the second worker sends the
//! capture at most once more and no authorize, stock or order call: the
//! steps before the pivot were recorded when the pivot was scheduled. In
//! the all-local opt-in the second worker runs every step again (the test
//! sees the re-runs, so it can tell the modes apart), and the books still
//! balance: every effect is idempotent by its key. Both read the outcome
//! from the stores: the sandbox's ledger and request log, Redis, the order
//! store, and the second worker's own `/metrics`.

use crate::common::*;
use crate::sandbox::StandaloneSandbox;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const API_KEY: &str = "sk_test_temporal_kill";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Kills the process when the test ends, passing or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require_servers() {
    for (port, what, how) in [(7233, "Temporal", "temporal"), (6379, "Redis", "redis")] {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            panic!("{what} is not running on 127.0.0.1:{port}: start it with `scripts/services.sh {how}` (scripts/test.sh does)");
        }
    }
}

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(bin());
    command
        .args(args)
        .env_remove("SAGAFLOW_CONFIG")
        .env_remove("SAGAFLOW_DATA")
        .env_remove("SAGAFLOW_TEST_ABORT_AFTER")
        .env("SAGAFLOW_REDIS_URL", REDIS_URL)
        .env("SAGAFLOW_PAYMENT_API_KEY", API_KEY);
    command
}

fn ok(args: &[&str]) -> String {
    stdout_of_success(args, command(args).output().expect("run sagaflow"))
}

fn start_worker(config: &Path, data: &Path, log: &Path, abort_after: Option<&str>) -> Killed {
    let mut command = command(&[
        "run",
        "--admin-bind",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    if let Some(activity) = abort_after {
        command.env("SAGAFLOW_TEST_ABORT_AFTER", activity);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start a worker");
    Killed(child)
}

fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let began = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(began.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of one sample line of a Prometheus text page (0 if absent).
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What the second worker did for the saga.
struct Takeover {
    /// Its attempts per step's action, from its `/metrics`.
    attempts: Vec<(&'static str, f64)>,
    /// Its requests to the provider: (authorizations, captures).
    requests: (usize, usize),
}

const STEPS: [(&str, &str); 5] = [
    ("reserve_stock", "stock.reserve"),
    ("authorize_payment", "payment.authorize"),
    ("create_order", "orders.create"),
    ("capture_payment", "payment.capture"),
    ("commit_stock", "stock.commit"),
];

/// Runs one order in a sold-out sale (one unit) under `[temporal] steps =
/// mode`: worker A aborts right after the capture answers, worker B
/// finishes the saga. Checks the books; returns what B did.
fn kill_after_capture(mode: &str) -> Takeover {
    require_servers();
    let unique = format!(
        "kill-{mode}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dir = data_dir(&format!("temporal-kill-{mode}"));
    let sandbox = StandaloneSandbox::start(&dir.join("provider"), API_KEY, &[]);
    let workers: PathBuf = dir.join("workers");
    std::fs::create_dir_all(&workers).unwrap();
    let task_queue = format!("task_queue = \"{unique}\"");
    let key_prefix = format!("key_prefix = \"{unique}:\"");
    let base_url = format!("base_url = \"{}\"", sandbox.url);
    let steps = format!("steps = \"{mode}\"");
    let config = config_with(
        &workers,
        &[
            ("engine = \"embedded\"", "engine = \"temporal\""),
            ("task_queue = \"sagaflow\"", &task_queue),
            ("steps = \"checkpointed\"", &steps),
            ("stock = \"embedded\"", "stock = \"redis\""),
            ("key_prefix = \"sagaflow:\"", &key_prefix),
            ("payment = \"sandbox\"", "payment = \"http\""),
            ("base_url = \"\"", &base_url),
        ],
    );
    let (c, d) = (config.to_str().unwrap(), workers.to_str().unwrap());
    ok(&["stock", "set", "SKU-1=1", "--config", c, "--data", d]);
    let id = format!("{unique}-o1");
    let order = workers.join("order.json");
    std::fs::write(
        &order,
        format!(
            r#"{{"order_id":"{id}","customer":"c1","items":[{{"sku":"SKU-1","qty":1}}],"amount":1999,"currency":"usd","payment_method":"pm_card_visa"}}"#
        ),
    )
    .unwrap();
    ok(&[
        "submit",
        order.to_str().unwrap(),
        "--config",
        c,
        "--data",
        d,
    ]);

    // Worker A runs the saga up to the capture's answer, and dies.
    let log_a = dir.join("worker-a.log");
    let mut a = start_worker(&config, &workers, &log_a, Some("payment.capture"));
    let a_status = wait_for("worker A to abort", Duration::from_secs(120), || {
        a.0.try_wait().unwrap()
    });
    assert!(!a_status.success(), "worker A should have aborted");
    let a_log = std::fs::read_to_string(&log_a).unwrap_or_default();
    assert!(
        a_log.contains("SAGAFLOW_TEST_ABORT_AFTER=payment.capture"),
        "worker A died elsewhere: {a_log}"
    );
    let seen_before = sandbox.ledger()["requests"].as_array().unwrap().len();
    assert_eq!(
        sandbox.ledger()["ledger"]["succeeded"],
        1,
        "A's capture went through"
    );

    // Worker B takes over.
    let log_b = dir.join("worker-b.log");
    let mut b = start_worker(&config, &workers, &log_b, None);
    let b_pid = b.0.id();
    let admin = admin_address(&log_b, &mut b.0);
    let began = Instant::now();
    let status = wait_for(
        "the saga to end on worker B",
        Duration::from_secs(180),
        || {
            let out = command(&["show", &id, "--json", "--config", c, "--data", d])
                .output()
                .unwrap();
            let show: Value = serde_json::from_slice(&out.stdout).ok()?;
            let status = show["saga"]["status"].as_str()?.to_owned();
            (status != "running").then_some(status)
        },
    );
    eprintln!(
        "{mode}: worker B ended the saga {:?} after it started",
        began.elapsed()
    );
    let (_, _, metrics) = http_get(&admin, "/metrics");
    drop(b);
    assert_eq!(
        status,
        "completed",
        "worker B:\n{}",
        std::fs::read_to_string(&log_b).unwrap_or_default()
    );

    // The provider's books: one intent, captured once.
    let books = sandbox.ledger();
    let l = &books["ledger"];
    assert_eq!(
        (l["intents"].as_i64(), l["succeeded"].as_i64()),
        (Some(1), Some(1)),
        "{books}"
    );
    assert_eq!(l["double_captures"], 0, "{books}");
    assert_eq!(l["captured_amount"], 1999, "{books}");
    // The stock in Redis: the one unit sold, nothing held.
    let stock: Value =
        serde_json::from_str(ok(&["stock", "show", "--json", "--config", c, "--data", d]).trim())
            .unwrap();
    assert_eq!(
        (
            stock["sold"].as_i64(),
            stock["reserved"].as_i64(),
            stock["available"].as_i64()
        ),
        (Some(1), Some(0), Some(0)),
        "{stock}"
    );
    assert_eq!(stock["inconsistent"], false);
    // One live order document.
    let orders = rusqlite::Connection::open(workers.join("orders.db")).unwrap();
    let created: i64 = orders
        .query_row(
            "SELECT COUNT(*) FROM orders WHERE status = 'created'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(created, 1);

    let from_b = format!("pid {b_pid})");
    let after = &books["requests"].as_array().unwrap()[seen_before..];
    let by_b = |path: &dyn Fn(&str) -> bool| {
        after
            .iter()
            .filter(|r| {
                path(r["path"].as_str().unwrap())
                    && r["client"].as_str().unwrap_or("").ends_with(&from_b)
            })
            .count()
    };
    let requests = (
        by_b(&|p| p == "/v1/payment_intents"),
        by_b(&|p| p.ends_with("/capture")),
    );
    let attempts = STEPS
        .iter()
        .map(|(step, activity)| {
            let series = format!(
                r#"sagaflow_step_attempts_total{{step="{step}",activity="{activity}",phase="action"}}"#
            );
            (*step, sample(&metrics, &series))
        })
        .collect();
    Takeover { attempts, requests }
}

fn attempts(t: &Takeover, step: &str) -> f64 {
    t.attempts.iter().find(|(s, _)| *s == step).unwrap().1
}

#[test]
fn checkpointed_a_takeover_after_the_capture_re_runs_nothing_before_it() {
    let t = kill_after_capture("checkpointed");
    let (authorizations, captures) = t.requests;
    assert_eq!(authorizations, 0, "worker B authorized again");
    assert!(captures <= 1, "worker B captured {captures} times");
    for step in ["reserve_stock", "authorize_payment", "create_order"] {
        assert_eq!(
            attempts(&t, step),
            0.0,
            "worker B ran {step}: {:?}",
            t.attempts
        );
    }
    assert!(attempts(&t, "capture_payment") <= 1.0, "{:?}", t.attempts);
    assert_eq!(attempts(&t, "commit_stock"), 1.0, "{:?}", t.attempts);
}

#[test]
fn all_local_a_takeover_after_the_capture_re_runs_the_chain() {
    let t = kill_after_capture("local");
    let (authorizations, captures) = t.requests;
    assert!(authorizations >= 1, "worker B did not authorize again");
    assert!(captures >= 1, "worker B did not capture again");
    for step in [
        "reserve_stock",
        "authorize_payment",
        "create_order",
        "capture_payment",
    ] {
        assert!(
            attempts(&t, step) >= 1.0,
            "worker B did not re-run {step}: {:?}",
            t.attempts
        );
    }
}
