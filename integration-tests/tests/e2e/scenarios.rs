//! The interpreter's scenarios, end to end, on both engines from one suite:
//! happy path, declined card, retry exhaustion, a compensation that keeps
//! failing (parks; an operator's retry finishes it after a restart), and a
//! failure at the pivot. Each runs the real binary with the shipped
//! `sagas.toml` plus the tweaks the scenario needs.

use crate::common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// A timeline entry: (step, phase, status, attempts, last error).
pub(crate) type Entry = (String, String, String, u64, String);

/// One scenario's world: its data directory, config and order-id prefix.
pub(crate) struct Env {
    pub(crate) dir: PathBuf,
    pub(crate) config: PathBuf,
    prefix: String,
}

/// Fails (never skips) when the Temporal dev server is not there.
fn require_temporal() {
    if std::net::TcpStream::connect("127.0.0.1:7233").is_err() {
        panic!("Temporal is not running on 127.0.0.1:7233: start it with `scripts/services.sh temporal` (scripts/test.sh does)");
    }
}

impl Env {
    pub(crate) fn new(name: &str, engine: &str, tweaks: &[(&str, &str)]) -> Env {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let unique = format!("{name}-{engine}-{}-{nanos}", std::process::id());
        let dir = data_dir(&format!("{name}-{engine}"));
        let mut all: Vec<(String, String)> = tweaks
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        if engine == "temporal" {
            require_temporal();
            all.push((
                "engine = \"embedded\"".into(),
                "engine = \"temporal\"".into(),
            ));
            // Each scenario gets its own task queue: its worker must only
            // take its own sagas (their stores live in its data directory).
            all.push((
                "task_queue = \"sagaflow\"".into(),
                format!("task_queue = \"{unique}\""),
            ));
        }
        let pairs: Vec<(&str, &str)> = all.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let config = config_with(&dir, &pairs);
        Env {
            dir,
            config,
            prefix: format!("{unique}-"),
        }
    }

    /// `args` with this environment's config and data directory.
    pub(crate) fn with_env<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--config",
            self.config.to_str().unwrap(),
            "--data",
            self.dir.to_str().unwrap(),
        ]);
        all
    }

    pub(crate) fn sagaflow(&self, args: &[&str]) -> String {
        sagaflow_ok(&self.with_env(args))
    }

    /// Runs a command that must fail; returns its stderr.
    pub(crate) fn sagaflow_fails(&self, args: &[&str]) -> String {
        let all = self.with_env(args);
        let out = sagaflow(&all);
        assert!(!out.status.success(), "{all:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub(crate) fn id(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    pub(crate) fn submit(&self, suffix: &str, payment_method: &str) -> String {
        let id = self.id(suffix);
        let file = self.dir.join(format!("{suffix}.json"));
        std::fs::write(
            &file,
            format!(
                r#"{{"order_id":"{id}","customer":"c1","items":[{{"sku":"SKU-1","qty":1}}],"amount":1999,"currency":"usd","payment_method":"{payment_method}"}}"#
            ),
        )
        .unwrap();
        self.sagaflow(&["submit", file.to_str().unwrap()]);
        id
    }

    pub(crate) fn run_until_idle(&self) {
        self.sagaflow(&["run", "--until-idle"]);
    }

    /// A worker (`sagaflow run`) in the background until dropped; its log
    /// goes to `worker-N.log` in the data directory. Its admin API listens
    /// on a free loopback port.
    pub(crate) fn worker(&self) -> Worker {
        self.worker_with(&[], &[])
    }

    /// A worker with more `run` flags and environment variables.
    pub(crate) fn worker_with(&self, flags: &[&str], vars: &[(&str, &str)]) -> Worker {
        let n = std::fs::read_dir(&self.dir).map_or(0, |d| d.count());
        let log = self.dir.join(format!("worker-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut args = vec!["run"];
        if !flags.contains(&"--admin-bind") {
            args.extend(["--admin-bind", "127.0.0.1:0"]);
        }
        args.extend(flags);
        let child = std::process::Command::new(bin())
            .args(self.with_env(&args))
            .envs(vars.iter().copied())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let worker = Worker { child, log };
        // Commands sent before it holds the journal would only be queued.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !worker.log().contains("worker running") {
            assert!(
                std::time::Instant::now() < deadline,
                "the worker did not start within a minute: {}",
                worker.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        worker
    }

    /// Waits (up to a minute) until saga `id` has `status`; returns its
    /// `show --json`.
    pub(crate) fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_until(id, |show| show["saga"]["status"] == status)
    }

    /// Waits (up to a minute) until `ready` holds for saga `id`'s
    /// `show --json`, and returns it.
    pub(crate) fn wait_until(&self, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let out = sagaflow(&self.with_env(&["show", id, "--json"]));
            if out.status.success() {
                let show: Value = serde_json::from_slice(&out.stdout).unwrap();
                if ready(&show) {
                    return show;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "saga {id} is not there after a minute: {show}"
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no saga {id} after a minute"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    pub(crate) fn show(&self, id: &str) -> Value {
        serde_json::from_str(&self.sagaflow(&["show", id, "--json"])).unwrap()
    }

    pub(crate) fn stock(&self) -> Value {
        serde_json::from_str(self.sagaflow(&["stock", "show", "--json"]).trim()).unwrap()
    }

    /// (step, phase, status, attempts, last error) for each timeline entry.
    pub(crate) fn timeline(&self, id: &str) -> (String, Vec<Entry>) {
        let show = self.show(id);
        let status = show["saga"]["status"].as_str().unwrap().to_owned();
        let rows = show["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["step"].as_str().unwrap().to_owned(),
                    t["phase"].as_str().unwrap().to_owned(),
                    t["status"].as_str().unwrap().to_owned(),
                    t["attempts"].as_u64().unwrap(),
                    t["last_error"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        (status, rows)
    }
}

/// A background worker: stopped with SIGINT (as an operator would) when
/// dropped.
pub(crate) struct Worker {
    child: std::process::Child,
    log: PathBuf,
}

impl Worker {
    /// What it has logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its admin API's base URL, as it logged it.
    pub(crate) fn admin_url(&self) -> String {
        let log = self.log();
        let at = log
            .find("admin API listening on ")
            .unwrap_or_else(|| panic!("the worker logged no admin address: {log}"));
        log[at + "admin API listening on ".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    }
}

impl Worker {
    /// SIGKILLs it, as a crash would.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn entry<'a>(rows: &'a [Entry], step: &str, phase: &str) -> &'a Entry {
    rows.iter()
        .find(|r| r.0 == step && r.1 == phase)
        .unwrap_or_else(|| panic!("no {step} {phase} in {rows:?}"))
}

/// The provider answers after 300ms; authorize gives up after 100ms, twice.
pub(crate) const SLOW_PROVIDER: [(&str, &str); 2] = [
    ("latency = \"0ms\"", "latency = \"300ms\""),
    (
        "timeout = \"10s\"\nretry = { initial_interval = \"100ms\", backoff_coefficient = 2.0, max_interval = \"5s\", max_attempts = 5, non_retryable = [\"card_declined\"] }",
        "timeout = \"100ms\"\nretry = { initial_interval = \"10ms\", max_attempts = 2, non_retryable = [\"card_declined\"] }",
    ),
];

/// [`SLOW_PROVIDER`], and the void gives up after two attempts too: the
/// saga parks on the compensation of authorize_payment. The payment
/// breaker is off: with it, a dozen sagas timing out would open it, and a
/// saga whose dependency is down waits (up to `max_wait`, 15 minutes)
/// instead of spending the attempts these tests need it to spend.
pub(crate) const VOID_PARKS: [(&str, &str); 4] = [
    SLOW_PROVIDER[0],
    SLOW_PROVIDER[1],
    (
        "compensation_retry = { initial_interval = \"100ms\", backoff_coefficient = 2.0, max_interval = \"5s\", max_attempts = 10 }",
        "compensation_retry = { initial_interval = \"10ms\", max_attempts = 2 }",
    ),
    (
        "[breakers.payment]\nconsecutive = 5",
        "[breakers.payment]\nenabled = false\nconsecutive = 5",
    ),
];

fn happy_path(engine: &str) {
    let env = Env::new("happy", engine, &[]);
    env.sagaflow(&["stock", "set", "SKU-1=2"]);
    let id = env.submit("o1", "pm_card_visa");
    env.run_until_idle();
    let (status, rows) = env.timeline(&id);
    assert_eq!(status, "completed", "{rows:?}");
    let steps: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        steps,
        [
            "reserve_stock",
            "authorize_payment",
            "create_order",
            "capture_payment",
            "commit_stock"
        ]
    );
    assert!(rows.iter().all(|r| r.2 == "ok" && r.3 == 1), "{rows:?}");
    let stock = env.stock();
    assert_eq!(
        (stock["sold"].as_i64(), stock["available"].as_i64()),
        (Some(1), Some(1)),
        "{stock}"
    );
    // A retry for a saga that is not parked is refused at once, not kept;
    // so is a cancel after the pivot, naming refund.
    let err = env.sagaflow_fails(&["retry", &id, "--reason", "just in case"]);
    assert!(
        err.contains("retry applies only to a parked saga, and this one is completed; it has ended, nothing is left to retry; nothing was sent"),
        "{err}"
    );
    let err = env.sagaflow_fails(&["cancel", &id, "--reason", "customer called"]);
    assert!(
        err.contains("cancel refused for saga")
            && err.contains("`sagaflow refund ID` undoes a completed checkout; nothing was sent"),
        "{err}"
    );
    let err = env.sagaflow_fails(&["retry", &id]);
    assert!(err.contains("--reason"), "the reason is required: {err}");
}

fn declined_card(engine: &str) {
    let env = Env::new("declined", engine, &[]);
    env.sagaflow(&["stock", "set", "SKU-1=2"]);
    let id = env.submit("o1", "pm_card_chargeDeclined");
    env.run_until_idle();
    let (status, rows) = env.timeline(&id);
    assert_eq!(status, "compensated", "{rows:?}");
    let auth = entry(&rows, "authorize_payment", "action");
    assert_eq!(
        (auth.2.as_str(), auth.3),
        ("failed", 1),
        "a decline is not retried: {rows:?}"
    );
    assert!(auth.4.contains("card_declined"), "{rows:?}");
    assert_eq!(entry(&rows, "reserve_stock", "compensation").2, "ok");
    assert!(
        !rows
            .iter()
            .any(|r| r.0 == "authorize_payment" && r.1 == "compensation"),
        "nothing was authorized, so nothing is voided: {rows:?}"
    );
    let stock = env.stock();
    assert_eq!(
        (stock["available"].as_i64(), stock["reserved"].as_i64()),
        (Some(2), Some(0)),
        "{stock}"
    );
}

fn retry_exhaustion(engine: &str) {
    let mut tweaks = SLOW_PROVIDER.to_vec();
    // The void may take its time: only the authorize attempts time out.
    tweaks.push((
        "compensation = \"payment.void\"",
        "compensation = \"payment.void\"\ncompensation_timeout = \"10s\"",
    ));
    let env = Env::new("exhaust", engine, &tweaks);
    env.sagaflow(&["stock", "set", "SKU-1=2"]);
    let id = env.submit("o1", "pm_card_visa");
    env.run_until_idle();
    let (status, rows) = env.timeline(&id);
    assert_eq!(status, "compensated", "{rows:?}");
    let auth = entry(&rows, "authorize_payment", "action");
    assert_eq!(
        (auth.2.as_str(), auth.3),
        ("failed", 2),
        "two attempts, then give up: {rows:?}"
    );
    assert!(auth.4.contains("timeout"), "{rows:?}");
    // The outcome of a timed-out authorize is unknown, so it is voided too.
    assert_eq!(
        entry(&rows, "authorize_payment", "compensation").2,
        "ok",
        "{rows:?}"
    );
    assert_eq!(
        entry(&rows, "reserve_stock", "compensation").2,
        "ok",
        "{rows:?}"
    );
    let stock = env.stock();
    assert_eq!(
        (stock["available"].as_i64(), stock["reserved"].as_i64()),
        (Some(2), Some(0)),
        "{stock}"
    );
}

fn compensation_failure_parks(engine: &str) {
    let env = Env::new("park", engine, &VOID_PARKS);
    env.sagaflow(&["stock", "set", "SKU-1=3"]);
    let id = env.submit("o1", "pm_card_visa");
    env.run_until_idle();

    let parked = env.sagaflow(&["list", "--status", "parked", "--json", "--limit", "1000"]);
    let row: Value = parked
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} is not listed as parked: {parked}"));
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("compensation of step authorize_payment (payment.void) failed after 2 attempt(s): timeout"),
        "{reason}"
    );
    // Parked holds the stock: nothing is released behind the operator's back.
    assert_eq!(env.stock()["reserved"].as_i64(), Some(1));

    // The operator fixes the provider (the shipped latency) and retries.
    let fixed = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("latency = \"300ms\"", "latency = \"0ms\"");
    std::fs::write(&env.config, fixed).unwrap();
    let worker = env.worker();
    let applied = env.sagaflow(&[
        "retry",
        &id,
        "--reason",
        "provider latency back to normal",
        "--operator",
        "alice",
    ]);
    assert!(applied.starts_with("retry applied to saga"), "{applied}");
    let show = env.wait_status(&id, "compensated");
    drop(worker);
    assert_eq!(
        show["commands"],
        serde_json::json!([{"at_ms": show["commands"][0]["at_ms"], "command": "retry",
            "operator": "alice", "reason": "provider latency back to normal"}]),
        "{show}"
    );
    let (status, rows) = env.timeline(&id);
    assert_eq!(status, "compensated", "{rows:?}");
    let void = entry(&rows, "authorize_payment", "compensation");
    assert_eq!(
        (void.2.as_str(), void.3),
        ("ok", 3),
        "two timed out, the operator's retry succeeded: {rows:?}"
    );
    assert_eq!(entry(&rows, "reserve_stock", "compensation").2, "ok");
    let stock = env.stock();
    assert_eq!(
        (stock["available"].as_i64(), stock["reserved"].as_i64()),
        (Some(3), Some(0)),
        "{stock}"
    );
}

fn pivot_failure(engine: &str) {
    let env = Env::new("pivot", engine, &[]);
    env.sagaflow(&["stock", "set", "SKU-1=2"]);
    let id = env.submit("o1", "pm_card_sandboxCaptureExpires");
    env.run_until_idle();
    let (status, rows) = env.timeline(&id);
    assert_eq!(status, "compensated", "{rows:?}");
    let capture = entry(&rows, "capture_payment", "action");
    assert_eq!(capture.2, "failed");
    assert!(capture.4.contains("charge_expired_for_capture"), "{rows:?}");
    let undone: Vec<&str> = rows
        .iter()
        .filter(|r| r.1 == "compensation")
        .map(|r| r.0.as_str())
        .collect();
    assert_eq!(
        undone,
        ["create_order", "authorize_payment", "reserve_stock"],
        "reverse order: {rows:?}"
    );
    assert!(rows
        .iter()
        .filter(|r| r.1 == "compensation")
        .all(|r| r.2 == "ok"));
    assert!(
        !rows
            .iter()
            .any(|r| r.0 == "commit_stock" && r.2 != "pending"),
        "{rows:?}"
    );
    let stock = env.stock();
    assert_eq!(
        (stock["available"].as_i64(), stock["sold"].as_i64()),
        (Some(2), Some(0)),
        "{stock}"
    );
}

/// One test per engine for each scenario function `fn(engine: &str)`.
macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $( #[test] fn $scenario() { super::$scenario("embedded") } )*
        }
        mod temporal {
            $( #[test] fn $scenario() { super::$scenario("temporal") } )*
        }
    };
}
pub(crate) use on_both_engines;

on_both_engines!(
    happy_path,
    declined_card,
    retry_exhaustion,
    compensation_failure_parks,
    pivot_failure,
);
