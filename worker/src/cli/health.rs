//! `sagaflow health`: what a running worker's circuit breakers and intake
//! are doing, read from its admin API (`GET /api/health`).
//!
//! The breakers live in the worker's memory (one set per process), so
//! this command always asks a running worker: `--admin URL`, or the
//! address `[admin] bind` names on this machine.

use crate::config::Config;
use crate::ops::remote::{client_token, AdminClient};
use anyhow::{bail, Result};
use std::io::Write;
use std::process::ExitCode;

/// Arguments of `sagaflow health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// One JSON document instead of the table
    #[arg(long)]
    pub json: bool,
}

/// `sagaflow health`: prints the worker's breakers; exit 0 when every
/// breaker is closed, 1 when one is open or half-open (a script can wait
/// on it), 2 when the worker could not be asked.
pub fn health(config: &Config, admin: Option<&str>, args: HealthArgs) -> Result<ExitCode> {
    let url = match (admin, config.admin.bind) {
        (Some(url), _) => url.to_owned(),
        (None, Some(bind)) => {
            let host = if bind.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                bind.ip().to_string()
            };
            format!("http://{host}:{}", bind.port())
        }
        (None, None) => bail!(
            "[admin] bind is \"off\", so the worker serves no health; pass --admin URL of a worker that serves its admin API"
        ),
    };
    let client = AdminClient::new(&url, client_token(&config.admin))?;
    let health = client.health()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&health)?)?;
    } else {
        writeln!(
            out,
            "{:<10} {:<10} {:<22} {:>9} {:>8} {:>7} {:>9} {:>7}",
            "BREAKER",
            "STATE",
            "SINCE (UTC)",
            "IN FLIGHT",
            "WAITING",
            "OPENED",
            "REFUSED",
            "PROBES"
        )?;
        for b in &health.breakers {
            // While it ramps up after an outage: "calls/limit".
            let in_flight = match b.ramp_limit {
                Some(limit) => format!("{}/{limit}", b.in_flight),
                None => b.in_flight.to_string(),
            };
            writeln!(
                out,
                "{:<10} {:<10} {:<22} {:>9} {:>8} {:>7} {:>9} {:>7}",
                b.dependency,
                b.state,
                super::inspect::ms_to_utc(b.since_ms),
                in_flight,
                b.waiting,
                b.opened_total,
                b.refused_total,
                b.probes_total
            )?;
        }
        if health.breakers.is_empty() {
            writeln!(out, "(no breakers: [breakers] enabled = false)")?;
        }
        match &health.intake_paused {
            Some(why) => writeln!(out, "intake: paused, {why}")?,
            None => writeln!(out, "intake: taking orders")?,
        }
    }
    let all_closed = health.breakers.iter().all(|b| b.state == "closed");
    Ok(if all_closed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
