//! Two worker processes share one standalone payment sandbox, as they would
//! share a real provider: on the Temporal engine, with stock in Redis and
//! one order store, a saga is authorized while worker A runs, A is killed
//! with its capture in flight, and worker B captures it. The sandbox's own
//! ledger and request log show one intent, captured once, with requests
//! from both workers.

use crate::common::*;
use crate::sandbox::StandaloneSandbox;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Kills the process when the test ends, passing or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const API_KEY: &str = "sk_test_shared_sandbox";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

fn require_servers() {
    if std::net::TcpStream::connect("127.0.0.1:7233").is_err() {
        panic!("Temporal is not running on 127.0.0.1:7233: start it with `scripts/services.sh temporal` (scripts/test.sh does)");
    }
    if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
        panic!("Redis is not running on 127.0.0.1:6379: start it with `scripts/services.sh redis` (scripts/test.sh does)");
    }
}

/// `sagaflow ARGS` with the shared environment (Redis URL, API key).
fn command(args: &[&str]) -> Command {
    let mut command = Command::new(bin());
    command
        .args(args)
        .env_remove("SAGAFLOW_CONFIG")
        .env_remove("SAGAFLOW_DATA")
        .env("SAGAFLOW_REDIS_URL", REDIS_URL)
        .env("SAGAFLOW_PAYMENT_API_KEY", API_KEY);
    command
}

fn ok(args: &[&str]) -> String {
    stdout_of_success(args, command(args).output().expect("run sagaflow"))
}

fn start_worker(config: &Path, data: &Path, log: PathBuf) -> Killed {
    let child = command(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ])
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log).unwrap())
    .spawn()
    .expect("start a worker");
    Killed(child)
}

/// Polls `probe` every 50 ms until it answers `Some`, for at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let began = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(began.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_saga_authorized_through_one_worker_is_captured_by_another_after_a_kill() {
    require_servers();
    let unique = format!(
        "shared-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dir = data_dir("shared-sandbox");
    let provider = dir.join("provider");
    // Every sandbox answer takes 2 s (see below).
    let sandbox = StandaloneSandbox::start(&provider, API_KEY, &["--latency", "2000ms"]);
    let url = sandbox.url.clone();
    let workers = dir.join("workers");
    std::fs::create_dir_all(&workers).unwrap();
    let task_queue = format!("task_queue = \"{unique}\"");
    let key_prefix = format!("key_prefix = \"{unique}:\"");
    let base_url = format!("base_url = \"{url}\"");
    let config = config_with(
        &workers,
        &[
            ("engine = \"embedded\"", "engine = \"temporal\""),
            ("task_queue = \"sagaflow\"", &task_queue),
            ("stock = \"embedded\"", "stock = \"redis\""),
            ("key_prefix = \"sagaflow:\"", &key_prefix),
            ("payment = \"sandbox\"", "payment = \"http\""),
            ("base_url = \"\"", &base_url),
        ],
    );
    let c = config.to_str().unwrap();
    let d = workers.to_str().unwrap();
    ok(&["stock", "set", "SKU-1=5", "--config", c, "--data", d]);
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

    // Worker A authorizes; every sandbox answer takes 2 s, so A's capture
    // is still waiting in the sandbox when the authorization shows up.
    let mut a = start_worker(&config, &workers, dir.join("worker-a.log"));
    let a_pid = a.0.id();
    wait_for(
        "the authorization through worker A",
        Duration::from_secs(90),
        || (sandbox.ledger()["ledger"]["requires_capture"] == 1).then_some(()),
    );
    // The provider goes down before A's capture is executed, then A dies.
    ok(&[
        "sandbox", "knobs", "--url", &url, "--outage", "10m", "--config", c,
    ]);
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    ok(&[
        "sandbox",
        "knobs",
        "--url",
        &url,
        "--outage",
        "0ms",
        "--latency",
        "0ms",
        "--config",
        c,
    ]);

    let b = start_worker(&config, &workers, dir.join("worker-b.log"));
    let b_pid = b.0.id();
    let status = wait_for(
        "the saga to end on worker B",
        Duration::from_secs(120),
        || {
            let out = command(&["show", &id, "--json", "--config", c, "--data", d])
                .output()
                .unwrap();
            let show: Value = serde_json::from_slice(&out.stdout).ok()?;
            let status = show["saga"]["status"].as_str()?.to_owned();
            (status != "running").then_some(status)
        },
    );
    drop(b);
    let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    assert_eq!(
        status,
        "completed",
        "worker A:\n{}\nworker B:\n{}",
        log("worker-a.log"),
        log("worker-b.log")
    );

    // The provider's books: one intent, captured once, for the order's amount.
    let books = sandbox.ledger();
    let l = &books["ledger"];
    assert_eq!(l["intents"], 1, "{books}");
    assert_eq!(l["succeeded"], 1, "{books}");
    assert_eq!(l["double_captures"], 0, "{books}");
    assert_eq!(l["captured_amount"], 1999, "{books}");
    // Its request log: A authorized, B captured.
    let requests = books["requests"].as_array().unwrap();
    let from = |pid: u32| format!("pid {pid})");
    let authorized_by_a = requests.iter().any(|r| {
        r["path"] == "/v1/payment_intents"
            && r["status"] == 200
            && r["client"].as_str().unwrap().ends_with(&from(a_pid))
    });
    let captures: Vec<&Value> = requests
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with("/capture") && r["status"] == 200)
        .collect();
    assert!(authorized_by_a, "no authorization from worker A: {books}");
    assert_eq!(captures.len(), 1, "{books}");
    assert_eq!(captures[0]["replayed"], false, "{books}");
    assert!(
        captures[0]["client"]
            .as_str()
            .unwrap()
            .ends_with(&from(b_pid)),
        "the capture did not come from worker B (pid {b_pid}): {books}"
    );
    // The shared stock in Redis: the unit is sold, nothing held.
    let stock: Value =
        serde_json::from_str(ok(&["stock", "show", "--json", "--config", c, "--data", d]).trim())
            .unwrap();
    assert_eq!(
        (stock["sold"].as_i64(), stock["reserved"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(stock["inconsistent"], false);
}
