//! The standalone payment sandbox (`sagaflow sandbox`) as the tests that
//! share one provider between processes start it: on a free port, killed
//! when dropped.

use crate::common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `sagaflow sandbox`; dropping it kills it.
pub struct StandaloneSandbox {
    child: Child,
    /// `http://127.0.0.1:PORT`, what `[payment] base_url` takes.
    pub url: String,
    /// Its data directory (the ledger lives there).
    pub data: PathBuf,
}

impl Drop for StandaloneSandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl StandaloneSandbox {
    /// Starts it over `data` with `knobs` (flags such as `--latency 2s`),
    /// accepting `api_key`; waits until it prints where it listens.
    /// `SAGAFLOW_SANDBOX_BIN` runs it from another `sagaflow` binary:
    /// an older worker measured against today's sandbox and its logs.
    pub fn start(data: &Path, api_key: &str, knobs: &[&str]) -> StandaloneSandbox {
        let program = std::env::var_os("SAGAFLOW_SANDBOX_BIN").map_or_else(bin, PathBuf::from);
        let mut child = Command::new(program)
            .args(["sandbox", "--port", "0", "--json", "--data"])
            .arg(data)
            .args(knobs)
            .env_remove("SAGAFLOW_CONFIG")
            .env("SAGAFLOW_PAYMENT_API_KEY", api_key)
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
        StandaloneSandbox {
            url: started["base_url"].as_str().unwrap().to_owned(),
            child,
            data: data.to_owned(),
        }
    }

    /// `sandbox ledger --requests --json`: `{"ledger": totals, "requests":
    /// [the request log]}`, read from its file.
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
