//! The worker processes of one chaos run (`sagaflow run`), which the
//! driver kills and starts again, and the environment every `sagaflow`
//! command of the run gets. The Redis server and the sandbox are the
//! shared test helpers; the AMQP broker is the machine's RabbitMQ.

use crate::broker::CONNECTION;
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

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

    /// The process ids of the running workers, by slot.
    #[allow(dead_code)] // the outage suite's
    pub fn pids(&self) -> Vec<u32> {
        self.slots
            .iter()
            .flatten()
            .map(|owned| owned.0.id())
            .collect()
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

    /// Ctrl-C to every worker, as an operator would stop them; panics with
    /// its log when one has not exited a minute later (a worker stops
    /// within its shutdown grace, seconds).
    pub fn stop(&mut self) {
        for owned in self.slots.iter_mut().flatten() {
            let _ = Command::new("kill")
                .args(["-INT", &owned.0.id().to_string()])
                .status();
        }
        let began = std::time::Instant::now();
        for slot in 0..self.slots.len() {
            let Some(owned) = self.slots[slot].as_mut() else {
                continue;
            };
            while owned.0.try_wait().unwrap().is_none() {
                if began.elapsed() > std::time::Duration::from_secs(60) {
                    let logs = logs_of(&self.data, slot);
                    panic!("worker {slot} had not stopped a minute after Ctrl-C:\n{logs}");
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
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
