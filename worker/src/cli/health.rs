//! `sagaflow health`: what a running worker's circuit breakers and intake
//! are doing, read from its admin API (`GET /api/health`).
//!
//! The breakers live in the worker's memory (one set per process), so
//! this command always asks a running worker: `--admin URL`, or the
//! address `[admin] bind` names on this machine.

use crate::config::Config;
use crate::trigger::TriggerStats;
use anyhow::{bail, Result};
use sagaflow_activities::breaker::BreakerSnapshot;
use sagaflow_activities::Breakers;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

/// What the admin API answers: each breaker and the intake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// One row per breaker, in dependency order.
    pub breakers: Vec<BreakerRow>,
    /// Why the trigger takes no messages now; `None`: it takes them.
    pub intake_paused: Option<String>,
}

/// One breaker as `health` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BreakerRow {
    /// "payment", "stock" or "orders".
    pub dependency: String,
    /// "closed", "open" or "half_open".
    pub state: String,
    /// Since when (ms since the Unix epoch): the state's start; for open
    /// and half-open, when the outage began.
    pub since_ms: u64,
    /// When it last opened from closed (0: never).
    #[serde(default)]
    pub last_opened_ms: u64,
    /// Sagas waiting on it.
    pub waiting: usize,
    /// Calls in flight to the dependency now.
    #[serde(default)]
    pub in_flight: u32,
    /// While it ramps up after an outage: the calls it lets be in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_limit: Option<u32>,
    /// Times it opened since the worker started.
    pub opened_total: u64,
    /// Calls it refused since the worker started.
    pub refused_total: u64,
    /// Probes it let through since the worker started.
    pub probes_total: u64,
}

impl From<BreakerSnapshot> for BreakerRow {
    fn from(s: BreakerSnapshot) -> BreakerRow {
        BreakerRow {
            dependency: s.dependency,
            state: s.state.name().to_owned(),
            since_ms: s.since_ms,
            last_opened_ms: s.last_opened_ms,
            waiting: s.waiting,
            in_flight: s.in_flight,
            ramp_limit: s.ramp_limit,
            opened_total: s.opened_total,
            refused_total: s.refused_total,
            probes_total: s.probes_total,
        }
    }
}

/// The running worker's breakers and trigger, for the admin API; empty
/// until the worker has started (the API starts first).
#[derive(Default)]
pub struct HealthView {
    parts: OnceLock<(Breakers, Arc<TriggerStats>)>,
    ready: OnceLock<super::ready::Readiness>,
}

impl HealthView {
    /// Makes the worker's breakers and trigger visible, and what `/readyz`
    /// checks.
    pub fn attach(
        &self,
        breakers: Breakers,
        stats: Arc<TriggerStats>,
        ready: super::ready::Readiness,
    ) {
        let _ = self.parts.set((breakers, stats));
        let _ = self.ready.set(ready);
    }

    /// The worker's breakers and trigger counters, once it has started.
    pub fn parts(&self) -> Option<&(Breakers, Arc<TriggerStats>)> {
        self.parts.get()
    }

    /// What `/readyz` checks, once the worker has started.
    pub fn readiness(&self) -> Option<&super::ready::Readiness> {
        self.ready.get()
    }

    /// Now, or `None` while the worker is starting.
    pub fn now(&self) -> Option<Health> {
        let (breakers, stats) = self.parts.get()?;
        let paused = stats
            .paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(ToString::to_string);
        Some(Health {
            breakers: breakers
                .snapshots()
                .into_iter()
                .map(BreakerRow::from)
                .collect(),
            intake_paused: paused,
        })
    }
}

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
    let client = super::admin::client::AdminClient::new(
        &url,
        super::admin::auth::client_token(&config.admin),
    )?;
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
