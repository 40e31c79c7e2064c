//! A Temporal deployment as a shop runs one, for the tests that start
//! several worker processes: its own task queue on the dev server, stock in
//! Redis under its own key prefix, one order store, and a standalone
//! payment sandbox they all call.

use crate::common::*;
use crate::sandbox::StandaloneSandbox;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const API_KEY: &str = "sk_test_deployment";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A worker process, killed when dropped (passing or not).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The deployment: its directories, config and provider.
pub struct Deployment {
    /// Where the test keeps logs.
    pub dir: PathBuf,
    /// The workers' shared data directory (the order store, the queue).
    pub data: PathBuf,
    /// Its `sagas.toml`.
    pub config: PathBuf,
    /// The provider every worker calls.
    pub sandbox: StandaloneSandbox,
    /// Prefix of its order ids.
    pub unique: String,
}

/// Fails (never skips) when the servers are not there.
fn require_servers() {
    for (port, what, how) in [(7233, "Temporal", "temporal"), (6379, "Redis", "redis")] {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            panic!("{what} is not running on 127.0.0.1:{port}: start it with `scripts/services.sh {how}` (scripts/test.sh does)");
        }
    }
}

impl Deployment {
    /// A deployment named `name` whose sagas run with `[temporal] steps =
    /// steps`, its sandbox started with `knobs` (e.g. `--latency 2s`).
    pub fn new(name: &str, steps: &str, knobs: &[&str]) -> Deployment {
        require_servers();
        let unique = format!(
            "{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let dir = data_dir(name);
        let sandbox = StandaloneSandbox::start(&dir.join("provider"), API_KEY, knobs);
        let data = dir.join("workers");
        std::fs::create_dir_all(&data).unwrap();
        let task_queue = format!("task_queue = \"{unique}\"");
        let key_prefix = format!("key_prefix = \"{unique}:\"");
        let base_url = format!("base_url = \"{}\"", sandbox.url);
        let steps = format!("steps = \"{steps}\"");
        let config = config_with(
            &data,
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
        Deployment {
            dir,
            data,
            config,
            sandbox,
            unique,
        }
    }

    /// `sagaflow ARGS` on this deployment (config, data, Redis, API key).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin());
        command
            .args(args)
            .args(["--config", self.config.to_str().unwrap()])
            .args(["--data", self.data.to_str().unwrap()])
            .env_remove("SAGAFLOW_CONFIG")
            .env_remove("SAGAFLOW_DATA")
            .env_remove("SAGAFLOW_TEST_ABORT_AFTER")
            .env("SAGAFLOW_REDIS_URL", REDIS_URL)
            .env("SAGAFLOW_PAYMENT_API_KEY", API_KEY);
        command
    }

    /// Runs `sagaflow ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        stdout_of_success(args, self.command(args).output().expect("run sagaflow"))
    }

    /// Queues orders `{unique}-o1..=count` of one unit of SKU-1 each.
    pub fn submit(&self, count: usize) -> Vec<String> {
        let ids: Vec<String> = (1..=count)
            .map(|i| format!("{}-o{i}", self.unique))
            .collect();
        let lines: Vec<String> = ids
            .iter()
            .map(|id| format!(
                r#"{{"order_id":"{id}","customer":"c1","items":[{{"sku":"SKU-1","qty":1}}],"amount":1999,"currency":"usd","payment_method":"pm_card_visa"}}"#
            ))
            .collect();
        let file = self.data.join(format!("orders-{}.jsonl", ids.len()));
        std::fs::write(&file, lines.join("\n")).unwrap();
        self.ok(&["submit", file.to_str().unwrap()]);
        ids
    }

    /// Starts `sagaflow run` with `flags` and `vars`, logging to `log` in
    /// the test's directory, its admin API on a free loopback port.
    pub fn worker(&self, log: &str, flags: &[&str], vars: &[(&str, &str)]) -> (Killed, PathBuf) {
        let log = self.dir.join(log);
        let mut args = vec!["run", "--admin-bind", "127.0.0.1:0"];
        args.extend(flags);
        let child = self
            .command(&args)
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start a worker");
        (Killed(child), log)
    }

    /// Saga `id`'s status, once it is no longer `running`.
    pub fn wait_ended(&self, id: &str, limit: Duration) -> String {
        wait_for("the saga to end", limit, || {
            let out = self.command(&["show", id, "--json"]).output().unwrap();
            let show: Value = serde_json::from_slice(&out.stdout).ok()?;
            let status = show["saga"]["status"].as_str()?.to_owned();
            (status != "running").then_some(status)
        })
    }

    /// `stock show --json`: the Redis stock of this deployment.
    pub fn stock(&self) -> Value {
        serde_json::from_str(self.ok(&["stock", "show", "--json"]).trim()).unwrap()
    }
}

/// Polls `probe` every 100 ms until it answers `Some`, for at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let began = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(began.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The text of a log file (empty when missing).
pub fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}
