//! A running worker's circuit breakers and intake, as its admin API
//! answers `GET /api/health` and `sagaflow health` prints them. The
//! breakers live in the worker's memory (one set per process), so only the
//! worker's own admin server can read them ([`HealthView`]).

use crate::trigger::TriggerStats;
use sagaflow_activities::breaker::BreakerSnapshot;
use sagaflow_activities::Breakers;
use serde::{Deserialize, Serialize};
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
