//! Loading and validating `sagas.toml`.
//!
//! The file holds the deployment profile (`[profile]`, `[embedded]`,
//! `[payment]`, `[stock]`, `[sandbox]`) and the saga definitions
//! (`[sagas.NAME]` with `[[sagas.NAME.steps]]`). Every key is documented in
//! the shipped `sagas.toml`.
//!
//! Loading decides everything once: unknown keys, bad durations, unregistered
//! activity names and broken saga semantics (a step before the pivot without a
//! compensation, a compensation on or after the pivot, duplicate step names)
//! are all errors that name the file, the line and the step, and say what to
//! change. What comes out ([`Config`]) is valid by construction.

use crate::duration::parse_duration_ms;
use crate::model::{RetryPolicy, SagaDef, StepDef};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as given.
    pub file: PathBuf,
    /// 1-based line of the offending text, when known.
    pub line: Option<usize>,
    /// "saga checkout, step reserve_stock" or similar, when known.
    pub place: Option<String>,
    /// What is wrong and what to change.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(place) = &self.place {
            write!(f, "{place}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Which engine runs sagas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// The embedded SQLite journal (one machine).
    Embedded,
    /// A Temporal cluster (`[temporal]`).
    Temporal,
}

/// Where orders come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// The embedded SQLite queue (`sagaflow submit`).
    Embedded,
    /// An Azure Service Bus queue, or any AMQP 1.0 broker (`[servicebus]`).
    #[serde(rename = "servicebus")]
    ServiceBus,
}

/// Which stock adapter serves `stock.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockKind {
    /// The embedded SQLite stock ledger.
    Embedded,
    /// Redis (`[redis]`): atomic Lua scripts, keys hash-tagged by SKU.
    Redis,
}

/// Which order store serves `orders.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrdersKind {
    /// The embedded SQLite order store.
    Embedded,
    /// Azure Cosmos DB (`[cosmos]`).
    Cosmos,
}

/// Where `payment.*` sends its HTTP requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// The payment sandbox, started on a loopback port inside the worker.
    Sandbox,
    /// A real provider at `[payment] base_url`.
    Http,
}

/// The deployment profile: which engine, trigger and adapters run.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Engine kind.
    pub engine: EngineKind,
    /// Trigger kind.
    pub trigger: TriggerKind,
    /// Stock adapter.
    pub stock: StockKind,
    /// Order store.
    pub orders: OrdersKind,
    /// Payment endpoint.
    pub payment: PaymentKind,
    /// Directory for the journal and the embedded stores.
    pub data_dir: PathBuf,
}

/// Settings of the embedded engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedSettings {
    /// Commit every waiting journal write with one fsync (true), or fsync each
    /// event on its own (false: only for measuring).
    pub group_commit: bool,
    /// Activities running at once, at most.
    pub max_concurrent_activities: usize,
}

/// Where the Temporal engine finds its cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct TemporalSettings {
    /// Frontend address, `host:port` (no scheme).
    pub address: String,
    /// Namespace.
    pub namespace: String,
    /// Task queue for the saga workflow and its activities.
    pub task_queue: String,
}

/// Where the Service Bus trigger consumes orders (`[servicebus]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceBusSettings {
    /// Name of the environment variable holding the connection string.
    pub connection_env: String,
    /// Queue the orders arrive on.
    pub queue: String,
    /// Dead-letter queue on a plain AMQP 1.0 broker (Service Bus has its own
    /// `$deadletterqueue` sub-queue).
    pub dead_letter_queue: String,
    /// Messages the broker may push ahead of processing (link credit).
    pub prefetch: u32,
    /// Bodies above this many bytes are dead-lettered.
    pub max_message_bytes: u64,
}

/// Where the Redis stock adapter connects (`[redis]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// Name of the environment variable holding `redis://...`.
    pub url_env: String,
    /// Prepended to every key.
    pub key_prefix: String,
}

/// Where the Cosmos DB order adapter connects (`[cosmos]`).
#[derive(Debug, Clone, PartialEq)]
pub struct CosmosSettings {
    /// Name of the environment variable holding the account endpoint.
    pub endpoint_env: String,
    /// Name of the environment variable holding the account key.
    pub key_env: String,
    /// Database name.
    pub database: String,
    /// Container name (partition key `/id`).
    pub container: String,
    /// Region the worker runs in or nearest to.
    pub region: String,
    /// 429s the SDK retries itself before the activity fails as retryable.
    pub throttle_retries: u32,
}

/// Settings of the HTTP payment adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentSettings {
    /// Provider base URL when `payment = "http"`.
    pub base_url: String,
    /// Name of the environment variable holding the provider's secret key.
    pub api_key_env: String,
    /// ISO currency code sent with every authorization.
    pub currency: String,
    /// Per-request HTTP timeout, in ms.
    pub request_timeout_ms: u64,
}

/// Settings of the embedded stock ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct StockSettings {
    /// How long a reservation holds stock before it is reclaimed, in ms.
    pub reservation_ttl_ms: u64,
}

/// Knobs of the payment sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSettings {
    /// Loopback port; 0 picks a free one.
    pub port: u16,
    /// Fraction of requests answered with a 500 (stored like a real one).
    pub error_rate: f64,
    /// Added latency per request, in ms.
    pub latency_ms: u64,
}

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
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end().to_owned();
            let message = explain_parse_error(&message);
            ConfigErrors(vec![ConfigError {
                file: file.to_owned(),
                line: e.span().map(|s| line_of(text, s.start)),
                place: None,
                message,
            }])
        })?;
        let mut v = Validator {
            text,
            file,
            registered,
            errors: Vec::new(),
        };
        let config = v.config(raw);
        if v.errors.is_empty() {
            Ok(config)
        } else {
            v.errors.sort_by_key(|e| e.line);
            Err(ConfigErrors(v.errors))
        }
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

fn explain_parse_error(message: &str) -> String {
    if message.starts_with("unknown field") {
        format!("{message}; remove the key or fix its spelling")
    } else if message.starts_with("missing field") {
        format!("{message}; add it (the shipped sagas.toml shows every key with its default)")
    } else if message.starts_with("invalid type") {
        format!(
            "{message}; see the comments in the shipped sagas.toml for each key's type (durations are strings such as \"2s\")"
        )
    } else if message.starts_with("unknown variant") {
        format!("{message}; use one of the listed values")
    } else {
        message.to_owned()
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    profile: RawProfile,
    #[serde(default)]
    embedded: RawEmbedded,
    #[serde(default)]
    temporal: RawTemporal,
    #[serde(default)]
    servicebus: RawServiceBus,
    #[serde(default)]
    redis: RawRedis,
    #[serde(default)]
    cosmos: RawCosmos,
    #[serde(default)]
    payment: RawPayment,
    #[serde(default)]
    stock: RawStock,
    #[serde(default)]
    sandbox: RawSandbox,
    #[serde(default)]
    sagas: BTreeMap<String, Spanned<RawSaga>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    engine: EngineKind,
    trigger: TriggerKind,
    stock: StockKind,
    orders: OrdersKind,
    payment: PaymentKind,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("sagaflow-data")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbedded {
    #[serde(default = "yes")]
    group_commit: bool,
    #[serde(default = "default_concurrency")]
    max_concurrent_activities: Spanned<i64>,
}

fn yes() -> bool {
    true
}

fn default_concurrency() -> Spanned<i64> {
    Spanned::new(0..0, 512)
}

impl Default for RawEmbedded {
    fn default() -> Self {
        RawEmbedded {
            group_commit: true,
            max_concurrent_activities: default_concurrency(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemporal {
    #[serde(default = "default_temporal_address")]
    address: Spanned<String>,
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default = "default_task_queue")]
    task_queue: String,
}

impl Default for RawTemporal {
    fn default() -> Self {
        RawTemporal {
            address: default_temporal_address(),
            namespace: default_namespace(),
            task_queue: default_task_queue(),
        }
    }
}

fn default_temporal_address() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:7233".into())
}

fn default_namespace() -> String {
    "default".into()
}

fn default_task_queue() -> String {
    "sagaflow".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    #[serde(default = "default_redis_env")]
    url_env: String,
    #[serde(default = "default_redis_prefix")]
    key_prefix: String,
}

impl Default for RawRedis {
    fn default() -> Self {
        RawRedis {
            url_env: default_redis_env(),
            key_prefix: default_redis_prefix(),
        }
    }
}

fn default_redis_env() -> String {
    "SAGAFLOW_REDIS_URL".into()
}

fn default_redis_prefix() -> String {
    "sagaflow:".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCosmos {
    #[serde(default = "default_cosmos_endpoint_env")]
    endpoint_env: String,
    #[serde(default = "default_cosmos_key_env")]
    key_env: String,
    #[serde(default = "default_cosmos_database")]
    database: String,
    #[serde(default = "default_cosmos_container")]
    container: String,
    #[serde(default)]
    region: String,
    #[serde(default = "default_throttle_retries")]
    throttle_retries: u32,
}

impl Default for RawCosmos {
    fn default() -> Self {
        RawCosmos {
            endpoint_env: default_cosmos_endpoint_env(),
            key_env: default_cosmos_key_env(),
            database: default_cosmos_database(),
            container: default_cosmos_container(),
            region: String::new(),
            throttle_retries: default_throttle_retries(),
        }
    }
}

fn default_cosmos_endpoint_env() -> String {
    "SAGAFLOW_COSMOS_ENDPOINT".into()
}

fn default_cosmos_key_env() -> String {
    "SAGAFLOW_COSMOS_KEY".into()
}

fn default_cosmos_database() -> String {
    "sagaflow".into()
}

fn default_cosmos_container() -> String {
    "orders".into()
}

fn default_throttle_retries() -> u32 {
    3
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceBus {
    #[serde(default = "default_servicebus_env")]
    connection_env: String,
    #[serde(default = "default_servicebus_queue")]
    queue: Spanned<String>,
    #[serde(default)]
    dead_letter_queue: String,
    #[serde(default = "default_prefetch")]
    prefetch: Spanned<i64>,
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: Spanned<i64>,
}

impl Default for RawServiceBus {
    fn default() -> Self {
        RawServiceBus {
            connection_env: default_servicebus_env(),
            queue: default_servicebus_queue(),
            dead_letter_queue: String::new(),
            prefetch: default_prefetch(),
            max_message_bytes: default_max_message_bytes(),
        }
    }
}

fn default_servicebus_env() -> String {
    "SAGAFLOW_SERVICEBUS_CONNECTION".into()
}

fn default_servicebus_queue() -> Spanned<String> {
    Spanned::new(0..0, "orders".into())
}

fn default_prefetch() -> Spanned<i64> {
    Spanned::new(0..0, 256)
}

fn default_max_message_bytes() -> Spanned<i64> {
    Spanned::new(0..0, 256 * 1024)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPayment {
    #[serde(default)]
    base_url: String,
    #[serde(default = "default_api_key_env")]
    api_key_env: String,
    #[serde(default = "default_currency")]
    currency: String,
    request_timeout: Option<Spanned<String>>,
}

fn default_api_key_env() -> String {
    "SAGAFLOW_PAYMENT_API_KEY".into()
}

fn default_currency() -> String {
    "usd".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStock {
    reservation_ttl: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    #[serde(default)]
    port: u16,
    error_rate: Option<Spanned<f64>>,
    latency: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSaga {
    pivot: Option<Spanned<String>>,
    compensation_retry: Option<Spanned<RawRetry>>,
    #[serde(default)]
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Spanned<String>,
    action: Spanned<String>,
    compensation: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    compensation_timeout: Option<Spanned<String>>,
    retry: Option<Spanned<RawRetry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial_interval: Option<Spanned<String>>,
    backoff_coefficient: Option<Spanned<f64>>,
    max_interval: Option<Spanned<String>>,
    max_attempts: Option<Spanned<i64>>,
    #[serde(default)]
    non_retryable: Vec<String>,
    jitter: Option<Spanned<f64>>,
}

struct Validator<'a> {
    text: &'a str,
    file: &'a Path,
    registered: &'a [&'a str],
    errors: Vec<ConfigError>,
}

const DEFAULT_TIMEOUT_MS: u64 = 10_000;

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, place: Option<String>, message: String) {
        let line = (span != (0..0)).then(|| line_of(self.text, span.start));
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            place,
            message,
        });
    }

    fn duration(&mut self, value: &Spanned<String>, place: &Option<String>, key: &str) -> u64 {
        match parse_duration_ms(value.get_ref()) {
            Ok(ms) => ms,
            Err(e) => {
                self.error(value.span(), place.clone(), format!("{key}: {e}"));
                0
            }
        }
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let none = None;
        let concurrency = *raw.embedded.max_concurrent_activities.get_ref();
        if concurrency < 1 {
            self.error(
                raw.embedded.max_concurrent_activities.span(),
                Some("[embedded]".into()),
                format!("max_concurrent_activities is {concurrency}; set it to 1 or more"),
            );
        }
        let request_timeout_ms = raw
            .payment
            .request_timeout
            .as_ref()
            .map_or(5_000, |d| self.duration(d, &none, "request_timeout"));
        if raw.profile.payment == PaymentKind::Http && raw.payment.base_url.is_empty() {
            self.error(
                0..0,
                Some("[payment]".into()),
                "profile.payment is \"http\" but payment.base_url is empty; set base_url to the provider's URL or use payment = \"sandbox\"".into(),
            );
        }
        let reservation_ttl_ms = raw
            .stock
            .reservation_ttl
            .as_ref()
            .map_or(900_000, |d| self.duration(d, &none, "reservation_ttl"));
        let error_rate = raw
            .sandbox
            .error_rate
            .as_ref()
            .map_or(0.0, |r| *r.get_ref());
        if !(0.0..=1.0).contains(&error_rate) {
            self.error(
                raw.sandbox.error_rate.as_ref().map_or(0..0, |r| r.span()),
                Some("[sandbox]".into()),
                format!("error_rate is {error_rate}; use a fraction between 0.0 and 1.0"),
            );
        }
        let latency_ms = raw
            .sandbox
            .latency
            .as_ref()
            .map_or(0, |d| self.duration(d, &none, "latency"));

        let address = raw.temporal.address.get_ref();
        if address.contains("://") || !address.contains(':') {
            self.error(
                raw.temporal.address.span(),
                Some("[temporal]".into()),
                format!("address \"{address}\" is not host:port; write e.g. \"127.0.0.1:7233\" (no scheme)"),
            );
        }
        if raw.profile.orders == OrdersKind::Cosmos && raw.cosmos.region.trim().is_empty() {
            self.error(
                0..0,
                Some("[cosmos]".into()),
                "profile.orders is \"cosmos\" but cosmos.region is empty; set it to the Azure region the worker runs in, e.g. region = \"East US\"".into(),
            );
        }
        let servicebus = self.servicebus(raw.servicebus);
        let mut sagas = BTreeMap::new();
        for (name, saga) in raw.sagas {
            let def = self.saga(&name, saga);
            sagas.insert(name, def);
        }
        Config {
            file: self.file.to_owned(),
            profile: Profile {
                engine: raw.profile.engine,
                trigger: raw.profile.trigger,
                stock: raw.profile.stock,
                orders: raw.profile.orders,
                payment: raw.profile.payment,
                data_dir: raw.profile.data_dir,
            },
            embedded: EmbeddedSettings {
                group_commit: raw.embedded.group_commit,
                max_concurrent_activities: concurrency.max(1) as usize,
            },
            temporal: TemporalSettings {
                address: raw.temporal.address.into_inner(),
                namespace: raw.temporal.namespace,
                task_queue: raw.temporal.task_queue,
            },
            servicebus,
            redis: RedisSettings {
                url_env: raw.redis.url_env,
                key_prefix: raw.redis.key_prefix,
            },
            cosmos: CosmosSettings {
                endpoint_env: raw.cosmos.endpoint_env,
                key_env: raw.cosmos.key_env,
                database: raw.cosmos.database,
                container: raw.cosmos.container,
                region: raw.cosmos.region,
                throttle_retries: raw.cosmos.throttle_retries,
            },
            payment: PaymentSettings {
                base_url: raw.payment.base_url,
                api_key_env: raw.payment.api_key_env,
                currency: raw.payment.currency,
                request_timeout_ms,
            },
            stock: StockSettings { reservation_ttl_ms },
            sandbox: SandboxSettings {
                port: raw.sandbox.port,
                error_rate,
                latency_ms,
            },
            sagas,
        }
    }

    fn servicebus(&mut self, raw: RawServiceBus) -> ServiceBusSettings {
        let place = Some("[servicebus]".to_owned());
        let queue = raw.queue.get_ref().trim().to_owned();
        if queue.is_empty() {
            self.error(
                raw.queue.span(),
                place.clone(),
                "queue is empty; name the queue orders arrive on, e.g. \"orders\"".into(),
            );
        }
        let prefetch = *raw.prefetch.get_ref();
        if !(1..=5000).contains(&prefetch) {
            self.error(
                raw.prefetch.span(),
                place.clone(),
                format!(
                    "prefetch is {prefetch}; use 1 to 5000 (messages the broker may push ahead)"
                ),
            );
        }
        let max_bytes = *raw.max_message_bytes.get_ref();
        if !(1024..=100 * 1024 * 1024).contains(&max_bytes) {
            self.error(
                raw.max_message_bytes.span(),
                place,
                format!("max_message_bytes is {max_bytes}; use 1024 to 104857600 (Service Bus standard allows 262144)"),
            );
        }
        let dead_letter_queue = if raw.dead_letter_queue.is_empty() {
            format!("{queue}.dlq")
        } else {
            raw.dead_letter_queue
        };
        ServiceBusSettings {
            connection_env: raw.connection_env,
            queue,
            dead_letter_queue,
            prefetch: prefetch.clamp(1, 5000) as u32,
            max_message_bytes: max_bytes.max(1024) as u64,
        }
    }

    fn saga(&mut self, name: &str, saga: Spanned<RawSaga>) -> SagaDef {
        let saga_span = saga.span();
        let saga = saga.into_inner();
        let saga_place = Some(format!("saga {name}"));
        if saga.steps.is_empty() {
            self.error(
                saga_span.clone(),
                saga_place.clone(),
                "has no steps; add [[sagas.NAME.steps]] tables with name and action".into(),
            );
        }
        let compensation_retry = match &saga.compensation_retry {
            Some(r) => self.retry(r, &saga_place),
            None => RetryPolicy {
                max_attempts: 10,
                ..RetryPolicy::default()
            },
        };
        let mut steps: Vec<StepDef> = Vec::new();
        let mut step_spans = Vec::new();
        for step in &saga.steps {
            let step_name = step.get_ref().name.get_ref().clone();
            let place = Some(format!("saga {name}, step {step_name}"));
            if let Some(first) = steps.iter().position(|s| s.name == step_name) {
                let first_line = line_of(self.text, step_spans[first]);
                self.error(
                    step.get_ref().name.span(),
                    place.clone(),
                    format!(
                        "duplicate step name (first defined on line {first_line}); step names must be unique within a saga, rename one"
                    ),
                );
            }
            let raw = step.get_ref();
            self.activity(&raw.action, &place, "action");
            if let Some(c) = &raw.compensation {
                self.activity(c, &place, "compensation");
            }
            let timeout_ms = raw
                .timeout
                .as_ref()
                .map_or(DEFAULT_TIMEOUT_MS, |t| self.duration(t, &place, "timeout"));
            if timeout_ms == 0 {
                if let Some(t) = &raw.timeout {
                    if parse_duration_ms(t.get_ref()).is_ok() {
                        self.error(
                            t.span(),
                            place.clone(),
                            "timeout is 0; give each attempt some time, e.g. \"5s\"".into(),
                        );
                    }
                }
            }
            let compensation_timeout_ms = match (&raw.compensation_timeout, &raw.compensation) {
                (Some(t), None) => {
                    self.error(
                        t.span(),
                        place.clone(),
                        "compensation_timeout is set but the step has no compensation; remove it or add compensation = \"ACTIVITY\"".into(),
                    );
                    None
                }
                (Some(t), Some(_)) => match self.duration(t, &place, "compensation_timeout") {
                    0 => {
                        if parse_duration_ms(t.get_ref()).is_ok() {
                            self.error(
                                t.span(),
                                place.clone(),
                                "compensation_timeout is 0; give each attempt some time, e.g. \"5s\"".into(),
                            );
                        }
                        None
                    }
                    ms => Some(ms),
                },
                (None, _) => None,
            };
            let retry = match &raw.retry {
                Some(r) => self.retry(r, &place),
                None => RetryPolicy::default(),
            };
            step_spans.push(raw.name.span().start);
            steps.push(StepDef {
                name: step_name,
                action: raw.action.get_ref().clone(),
                compensation: raw.compensation.as_ref().map(|c| c.get_ref().clone()),
                timeout_ms,
                compensation_timeout_ms,
                retry,
            });
        }
        let pivot_given = saga.pivot.is_some();
        let pivot = match &saga.pivot {
            None => None,
            Some(p) => match steps.iter().position(|s| &s.name == p.get_ref()) {
                Some(i) => Some(i),
                None => {
                    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
                    self.error(
                        p.span(),
                        saga_place.clone(),
                        format!(
                            "pivot \"{}\" is not a step of this saga; use one of: {}",
                            p.get_ref(),
                            names.join(", ")
                        ),
                    );
                    None
                }
            },
        };
        for (i, (step, raw)) in steps.iter().zip(&saga.steps).enumerate() {
            let place = Some(format!("saga {name}, step {}", step.name));
            let raw = raw.get_ref();
            match (pivot, &raw.compensation) {
                (Some(p), None) if i < p => self.error(
                    raw.name.span(),
                    place,
                    format!(
                        "comes before the pivot ({}) but has no compensation; add compensation = \"ACTIVITY\" so it can be undone, or move the pivot",
                        steps[p].name
                    ),
                ),
                (Some(p), Some(c)) if i >= p => self.error(
                    c.span(),
                    place,
                    format!(
                        "has a compensation but {} the pivot ({}), where the saga only goes forward; remove the compensation or move the pivot later",
                        if i == p { "is" } else { "comes after" },
                        steps[p].name
                    ),
                ),
                (None, None) if !pivot_given => self.error(
                    raw.name.span(),
                    place,
                    "has no compensation and the saga has no pivot; add compensation = \"ACTIVITY\", or set pivot = \"STEP\" on the saga to mark the point of no return".into(),
                ),
                _ => {}
            }
        }
        SagaDef {
            name: name.to_owned(),
            steps,
            pivot,
            compensation_retry,
        }
    }

    fn activity(&mut self, name: &Spanned<String>, place: &Option<String>, key: &str) {
        if !self.registered.contains(&name.get_ref().as_str()) {
            let suggestion = closest(name.get_ref(), self.registered)
                .map(|s| format!("did you mean {s}? "))
                .unwrap_or_default();
            self.error(
                name.span(),
                place.clone(),
                format!(
                    "{key} {} is not a registered activity; {suggestion}registered: {}",
                    name.get_ref(),
                    self.registered.join(", ")
                ),
            );
        }
    }

    fn retry(&mut self, raw: &Spanned<RawRetry>, place: &Option<String>) -> RetryPolicy {
        let d = RetryPolicy::default();
        let r = raw.get_ref();
        let initial_interval_ms = r
            .initial_interval
            .as_ref()
            .map_or(d.initial_interval_ms, |v| {
                self.duration(v, place, "retry.initial_interval")
            });
        let max_interval_ms = r.max_interval.as_ref().map_or(d.max_interval_ms, |v| {
            self.duration(v, place, "retry.max_interval")
        });
        if max_interval_ms < initial_interval_ms {
            self.error(
                raw.span(),
                place.clone(),
                format!(
                    "retry.max_interval ({max_interval_ms}ms) is shorter than retry.initial_interval ({initial_interval_ms}ms); raise max_interval"
                ),
            );
        }
        let backoff_coefficient = match &r.backoff_coefficient {
            Some(c) if *c.get_ref() < 1.0 => {
                self.error(
                    c.span(),
                    place.clone(),
                    format!(
                        "retry.backoff_coefficient is {}; use 1.0 or more (1.0 keeps the delay constant)",
                        c.get_ref()
                    ),
                );
                1.0
            }
            Some(c) => *c.get_ref(),
            None => d.backoff_coefficient,
        };
        let max_attempts = match &r.max_attempts {
            Some(m) if *m.get_ref() < 0 || *m.get_ref() > i64::from(u32::MAX) => {
                self.error(
                    m.span(),
                    place.clone(),
                    format!(
                        "retry.max_attempts is {}; use 1 or more, or 0 for no limit",
                        m.get_ref()
                    ),
                );
                1
            }
            Some(m) => *m.get_ref() as u32,
            None => d.max_attempts,
        };
        let jitter = match &r.jitter {
            Some(j) if !(0.0..1.0).contains(j.get_ref()) => {
                self.error(
                    j.span(),
                    place.clone(),
                    format!(
                        "retry.jitter is {}; use a fraction from 0.0 up to (not including) 1.0",
                        j.get_ref()
                    ),
                );
                0.0
            }
            Some(j) => *j.get_ref(),
            None => d.jitter,
        };
        RetryPolicy {
            initial_interval_ms,
            backoff_coefficient,
            max_interval_ms,
            max_attempts,
            non_retryable: r.non_retryable.clone(),
            jitter,
        }
    }
}

/// The registered name closest to a misspelt one, if any is close.
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
