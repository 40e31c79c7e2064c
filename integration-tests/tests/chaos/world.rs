//! The production topology of one chaos run, as processes this test owns:
//! a Redis server it can kill, the standalone payment sandbox with its
//! fault knobs, and the worker processes (`sagaflow run`), which it kills
//! and starts again. The AMQP broker is the machine's RabbitMQ.

use crate::broker::CONNECTION;
use crate::common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The provider's key every process uses.
pub const API_KEY: &str = "sk_test_chaos";

/// Wall-clock ms, to line kills up with the sandbox's request log.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A child process killed when dropped.
pub struct Owned(pub Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of this run's own, append-only file fsync'd on every
/// write (how a stock ledger must be run), so a crash loses nothing
/// acknowledged and the machine's server on 6379 is left alone.
pub struct Redis {
    dir: PathBuf,
    port: u16,
    child: Option<Owned>,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        std::fs::create_dir_all(dir).unwrap();
        let mut redis = Redis {
            dir: dir.to_owned(),
            port: free_port(),
            child: None,
        };
        redis.spawn();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/services.sh redis installs it)");
        self.child = Some(Owned(child));
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A crash (SIGKILL), a pause, and the same server back on its files.
    pub fn crash_and_restart(&mut self, down: Duration) {
        self.child = None;
        std::thread::sleep(down);
        self.spawn();
    }
}

/// The standalone payment sandbox every worker shares, with the request
/// log on (which client sent which POST, when).
pub struct Sandbox {
    _child: Owned,
    pub url: String,
    pub data: PathBuf,
}

impl Sandbox {
    pub fn start(data: &Path, knobs: &[&str]) -> Sandbox {
        let mut child = Command::new(bin())
            .args(["sandbox", "--port", "0", "--json", "--data"])
            .arg(data)
            .args(knobs)
            .env("SAGAFLOW_PAYMENT_API_KEY", API_KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sagaflow sandbox");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let started: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("sagaflow sandbox printed {line:?}, not JSON: {e}"));
        Sandbox {
            url: started["base_url"].as_str().unwrap().to_owned(),
            _child: Owned(child),
            data: data.to_owned(),
        }
    }

    /// The ledger's totals and its request log.
    pub fn ledger(&self) -> Value {
        json_line(&sagaflow_ok(&[
            "sandbox",
            "ledger",
            "--requests",
            "--json",
            "--data",
            self.data.to_str().unwrap(),
        ]))
    }
}

/// The worker processes of one run and every pid each has had.
pub struct Workers {
    config: PathBuf,
    data: PathBuf,
    redis_url: String,
    slots: Vec<Option<Owned>>,
    starts: usize,
    /// (pid, killed at wall ms) of every kill.
    pub kills: Vec<(u32, u64)>,
}

impl Workers {
    pub fn start(n: usize, config: &Path, data: &Path, redis_url: &str) -> Workers {
        let mut workers = Workers {
            config: config.to_owned(),
            data: data.to_owned(),
            redis_url: redis_url.to_owned(),
            slots: (0..n).map(|_| None).collect(),
            starts: 0,
            kills: Vec::new(),
        };
        for slot in 0..n {
            workers.spawn(slot);
        }
        workers
    }

    /// A `sagaflow` command with this run's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        command(args, &self.config, &self.data, &self.redis_url)
    }

    fn spawn(&mut self, slot: usize) {
        self.starts += 1;
        let log = self.data.join(format!("worker-{slot}-{}.log", self.starts));
        let child = self
            .command(&["run", "--admin-bind", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start a worker");
        self.slots[slot] = Some(Owned(child));
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The slots whose worker is running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&slot| self.slots[slot].is_some())
            .collect()
    }

    /// SIGKILLs the running worker in `slot` (no chance to finish
    /// anything).
    pub fn kill(&mut self, slot: usize) {
        let mut owned = self.slots[slot].take().expect("a running worker");
        let pid = owned.0.id();
        owned.0.kill().unwrap();
        owned.0.wait().unwrap();
        self.kills.push((pid, wall_ms()));
    }

    /// Starts the worker of `slot` again (a new process, a new pid).
    pub fn restart(&mut self, slot: usize) {
        if self.slots[slot].is_none() {
            self.spawn(slot);
        }
    }

    /// Panics with its log when a worker exited by itself.
    pub fn check_alive(&mut self) {
        for (slot, owned) in self.slots.iter_mut().enumerate() {
            if let Some(owned) = owned {
                if let Some(status) = owned.0.try_wait().unwrap() {
                    let logs = logs_of(&self.data, slot);
                    panic!("worker {slot} exited by itself ({status}):\n{logs}");
                }
            }
        }
    }

    /// Ctrl-C to every worker, as an operator would stop them.
    pub fn stop(&mut self) {
        for owned in self.slots.iter_mut().flatten() {
            let _ = Command::new("kill")
                .args(["-INT", &owned.0.id().to_string()])
                .status();
        }
        for owned in self.slots.iter_mut().flatten() {
            let _ = owned.0.wait();
        }
        self.slots.iter_mut().for_each(|s| *s = None);
    }
}

/// The last lines of every log of `slot`.
pub fn logs_of(data: &Path, slot: usize) -> String {
    let mut out = String::new();
    let prefix = format!("worker-{slot}-");
    let mut names: Vec<PathBuf> = std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    names.sort();
    for name in names {
        let text = std::fs::read_to_string(&name).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        out.push_str(&format!("--- {}\n", name.display()));
        for line in tail.into_iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `sagaflow ARGS` with the run's config, data directory, broker, Redis
/// and provider key.
pub fn command(args: &[&str], config: &Path, data: &Path, redis_url: &str) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .env_remove("SAGAFLOW_CONFIG")
        .env_remove("SAGAFLOW_DATA")
        .env("SAGAFLOW_SERVICEBUS_CONNECTION", CONNECTION)
        .env("SAGAFLOW_REDIS_URL", redis_url)
        .env("SAGAFLOW_PAYMENT_API_KEY", API_KEY);
    c
}

/// Stops and starts the broker's application (every connection drops;
/// durable queues and their messages stay).
pub fn restart_broker(down: Duration) {
    let ctl = |args: &[&str]| {
        let out = Command::new("rabbitmqctl")
            .args(args)
            .output()
            .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ctl(&["stop_app"]);
    std::thread::sleep(down);
    ctl(&["start_app"]);
    ctl(&["await_startup"]);
}
