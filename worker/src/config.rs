//! Loading `sagas.toml`: the deployment profile, checked here, and the saga
//! definitions, checked by `sagaflow_workflows::config`.
//!
//! The file holds the deployment profile (`[profile]`, `[embedded]`,
//! `[temporal]`, `[servicebus]`, `[redis]`, `[cosmos]`, `[payment]`,
//! `[stock]`, `[sandbox]`, `[admin]`) and the saga definitions (`[sagas.NAME]` with
//! `[[sagas.NAME.steps]]`). Every key is documented in the shipped
//! `sagas.toml`.
//!
//! Loading decides everything once: unknown keys, bad durations, values out
//! of range, settings a chosen adapter needs, unregistered activity names and
//! broken saga semantics are all errors that name the file, the line and the
//! place, and say what to change; every one is reported, in file order. What
//! comes out ([`Config`]) is valid by construction.
//!
//! - `settings.rs`: the validated types the rest of the worker reads.
//! - `raw.rs`: the file as written (serde structs with spans) and defaults.
//! - `validate.rs`: raw to settings, recording each problem.

mod breakers;
mod raw;
mod settings;
mod temporal;
mod validate;

#[cfg(test)]
mod tests;

pub use sagaflow_workflows::config::{ConfigError, ConfigErrors};
pub use settings::{
    AdminSettings, BreakerSettingsByDependency, CosmosSettings, EmbeddedSettings, EngineKind,
    OrdersKind, OtlpProtocol, PaymentKind, PaymentSettings, Profile, RedisSettings,
    SandboxSettings, ServiceBusSettings, StepMode, StockKind, StockSettings, TelemetrySettings,
    TemporalSettings, TriggerKind,
};

use sagaflow_workflows::config::{parse_toml, Diagnostics};
use sagaflow_workflows::SagaDef;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A loaded, validated `sagas.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// Deployment profile.
    pub profile: Profile,
    /// Embedded engine settings.
    pub embedded: EmbeddedSettings,
    /// Temporal engine settings.
    pub temporal: TemporalSettings,
    /// Service Bus trigger settings.
    pub servicebus: ServiceBusSettings,
    /// Redis stock adapter settings.
    pub redis: RedisSettings,
    /// Cosmos DB order adapter settings.
    pub cosmos: CosmosSettings,
    /// Payment adapter settings.
    pub payment: PaymentSettings,
    /// Stock ledger settings.
    pub stock: StockSettings,
    /// Payment sandbox knobs.
    pub sandbox: SandboxSettings,
    /// The worker's admin HTTP API.
    pub admin: AdminSettings,
    /// The circuit breakers in front of the dependencies.
    pub breakers: BreakerSettingsByDependency,
    /// Where the saga traces go.
    pub telemetry: TelemetrySettings,
    /// Saga definitions by name.
    pub sagas: BTreeMap<String, SagaDef>,
}

impl Config {
    /// Reads and validates a config file. `registered` lists every activity
    /// name the worker can run.
    pub fn load_file(path: &Path, registered: &[&str]) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                line: None,
                place: None,
                message: format!(
                    "cannot read the file: {e}; pass the path of a sagas.toml (see `sagaflow check-config --help`)"
                ),
            }])
        })?;
        Config::parse(&text, path, registered)
    }

    /// Validates config text; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path, registered: &[&str]) -> Result<Config, ConfigErrors> {
        let raw: raw::RawConfig = parse_toml(text, file)?;
        let mut diagnostics = Diagnostics::new(text, file);
        let config = validate::config(&mut diagnostics, raw, registered);
        diagnostics.finish().map(|()| config)
    }

    /// The saga with this name, or an error listing the known ones.
    pub fn saga(&self, name: &str) -> Result<&SagaDef, String> {
        self.sagas.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.sagas.keys().map(String::as_str).collect();
            let known = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            format!(
                "no saga named {name} in {}; defined: {known}; add [sagas.{name}] (see the shipped sagas.toml)",
                self.file.display(),
            )
        })
    }
}
