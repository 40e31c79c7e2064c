//! The checkout's payment provider as a separate process (`--provider
//! separate`), and the CPU a run used, the worker's apart from the
//! provider's.

use super::super::usage;
use crate::config::Config;
use anyhow::Result;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `sagaflow sandbox` child process serving the checkout's payments;
/// killed when dropped.
pub(super) struct SeparateProvider {
    pub(super) child: Child,
    pub(super) url: String,
}

impl SeparateProvider {
    /// Starts this binary's `sandbox` over `data` with the configuration's
    /// knobs (`--provider-latency` included) and waits for its address.
    pub(super) fn start(config: &Config, data: &Path) -> Result<SeparateProvider> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        // Without a file (the built-in sagas.toml) the child finds the
        // same built-in one: it starts in this directory and environment.
        if config.file.is_file() {
            command.arg("--config").arg(&config.file);
        }
        let mut child = command
            .arg("--data")
            .arg(data)
            .args(["sandbox", "--port", "0", "--json", "--no-request-log"])
            .arg("--latency")
            .arg(format!("{}ms", config.sandbox.latency_ms))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start `sagaflow sandbox` for --provider separate: {e}")
            })?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .map_err(|e| anyhow::anyhow!("`sagaflow sandbox` said nothing: {e}"))?;
        let url = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["base_url"].as_str().map(str::to_owned));
        match url {
            Some(url) => Ok(SeparateProvider { child, url }),
            None => {
                let _ = child.kill();
                anyhow::bail!("`sagaflow sandbox` did not start (it printed {line:?})")
            }
        }
    }
}

impl Drop for SeparateProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU used from the start of a run to its end, this process's and the
/// separate provider's.
pub(super) struct Meter {
    own: usage::Usage,
    provider: Option<(u32, Duration)>,
}

/// What a run used per saga.
pub(super) struct Used {
    pub(super) worker_cpu_ms: f64,
    pub(super) provider_cpu_ms: Option<f64>,
    pub(super) peak_rss_mb: f64,
}

impl Meter {
    pub(super) fn start(provider_pid: Option<u32>) -> Meter {
        Meter {
            own: usage::own(),
            provider: provider_pid.and_then(|pid| usage::cpu_of(pid).map(|cpu| (pid, cpu))),
        }
    }

    pub(super) fn per_saga(&self, sagas: usize) -> Used {
        let now = usage::own();
        let n = sagas.max(1) as f64;
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0 / n * 1000.0).round() / 1000.0;
        Used {
            worker_cpu_ms: ms(now.cpu.saturating_sub(self.own.cpu)),
            provider_cpu_ms: self.provider.and_then(|(pid, before)| {
                usage::cpu_of(pid).map(|after| ms(after.saturating_sub(before)))
            }),
            peak_rss_mb: (now.peak_rss_bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0,
        }
    }
}
