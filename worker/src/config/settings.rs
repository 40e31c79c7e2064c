//! The deployment profile's settings as the rest of the worker reads them:
//! valid by construction (see `validate.rs`).

pub use sagaflow_activities::payment::http::HttpVersion;
use serde::Deserialize;
use std::path::PathBuf;

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
    /// Ended sagas are removed from the journal this long after their end
    /// (`None`: kept forever); also the duplicate-start window.
    pub retention_ms: Option<u64>,
    /// Operator audit records are removed this long after the command
    /// (`None`: kept forever); never shorter than `retention_ms`.
    pub audit_retention_ms: Option<u64>,
}

/// `[embedded] retention` when `sagas.toml` does not set it: 3 days.
pub const DEFAULT_RETENTION_MS: u64 = 3 * 86_400_000;
/// `[embedded] audit_retention` when `sagas.toml` does not set it: 90 days.
pub const DEFAULT_AUDIT_RETENTION_MS: u64 = 90 * 86_400_000;

/// Where the Temporal engine finds its cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct TemporalSettings {
    /// Frontend address, `host:port` (no scheme).
    pub address: String,
    /// Namespace.
    pub namespace: String,
    /// Task queue for the saga workflow and its activities.
    pub task_queue: String,
    /// How a saga's steps run on the cluster; decided per saga at its
    /// start.
    pub steps: StepMode,
    /// Workflow tasks this worker runs at once.
    pub workflow_task_slots: usize,
    /// Activity tasks this worker runs at once.
    pub activity_slots: usize,
    /// Local activities this worker runs at once.
    pub local_activity_slots: usize,
    /// Sagas whose state this worker keeps between workflow tasks.
    pub workflow_cache: usize,
    /// The workflow-task wait above which the worker takes fewer new
    /// sagas (`None`: only `--max-live` limits intake).
    pub max_task_wait_ms: Option<u64>,
}

/// How a saga's steps run on Temporal (`[temporal] steps`), and so what a
/// crash can make the next worker run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepMode {
    /// The steps before the pivot as one chain of local activities, the
    /// pivot as an activity task (its scheduling records the chain's
    /// results first), the steps after it local again. A crash re-runs at
    /// most the chain in progress on one side of the pivot, never the
    /// pivot's effect behind it.
    #[default]
    Checkpointed,
    /// Every step an activity task: each result recorded as it ends; a
    /// crash re-runs at most the attempt in flight.
    Activities,
    /// Every step a local activity: fewest events, but results are
    /// recorded only when the workflow task completes, so a crash can
    /// re-run every step since, the pivot included.
    Local,
}

impl StepMode {
    /// The mode named as `sagas.toml` writes it.
    pub fn parse(name: &str) -> Option<StepMode> {
        match name {
            "checkpointed" => Some(StepMode::Checkpointed),
            "activities" => Some(StepMode::Activities),
            "local" => Some(StepMode::Local),
            _ => None,
        }
    }

    /// Its name in `sagas.toml`.
    pub fn name(self) -> &'static str {
        match self {
            StepMode::Checkpointed => "checkpointed",
            StepMode::Activities => "activities",
            StepMode::Local => "local",
        }
    }
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
    /// How long the provider's search may trail its writes, in ms (`[payment]
    /// search_lag`; the in-process sandbox has none).
    pub search_lag_ms: u64,
    /// The HTTP version spoken to the provider (`[payment] http`); `auto`
    /// means HTTP/2 to a sandbox this process started itself.
    pub http: HttpVersion,
    /// HTTP/2 connections to the provider (`[payment] connections`).
    pub connections: usize,
}

/// HTTP/2 connections to the provider unless `[payment] connections` says
/// otherwise: at a provider's usual limit of 100 to 250 concurrent streams
/// each, four carry 400 to 1,000 calls at once, about the default 512
/// concurrent activities.
pub const DEFAULT_PAYMENT_CONNECTIONS: usize = 4;

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

/// The worker's admin HTTP API (`[admin]`).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// `host:port` to listen on (port 0 picks a free one), or `None` when
    /// `bind = "off"`.
    pub bind: Option<std::net::SocketAddr>,
    /// False when `bind` is the default: then a port in use (another
    /// worker on this machine) is a warning, not a reason to stop.
    pub bind_explicit: bool,
    /// The environment variable holding the bearer token. Required (set
    /// and non-empty) for any bind but loopback; when set, enforced on
    /// loopback too.
    pub token_env: String,
}

/// The circuit breakers (`[breakers]`): one per dependency that has one,
/// in `DEPENDENCIES` order; empty when `enabled = false`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BreakerSettingsByDependency {
    /// `(dependency, settings)` of each breaker that is on.
    pub breakers: Vec<(String, sagaflow_activities::breaker::BreakerSettings)>,
}

/// OpenTelemetry trace export (`[telemetry]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP traces URL (the configured endpoint with
    /// `/v1/traces` added); `None`: no export.
    pub traces_url: Option<String>,
    /// How spans are encoded.
    pub protocol: OtlpProtocol,
    /// The `service.name` resource attribute. Default "sagaflow".
    pub service_name: String,
    /// The environment variable holding extra request headers
    /// (`key=value,key2=value2`, as `OTEL_EXPORTER_OTLP_HEADERS`), e.g. a
    /// vendor's API key; `None` when not named.
    pub headers_env: Option<String>,
}

/// The OTLP/HTTP encodings (`[telemetry] protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// "http/protobuf": binary protobuf, the OTLP default.
    #[default]
    HttpProtobuf,
    /// "http/json": protobuf's JSON mapping.
    HttpJson,
}

/// Where the admin API listens unless `[admin] bind` says otherwise.
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:7070";
