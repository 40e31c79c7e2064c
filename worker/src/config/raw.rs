//! `sagas.toml` as written: serde structs with the spans validation needs,
//! and the default of every key that may be left out.

use super::settings::{EngineKind, OrdersKind, PaymentKind, StockKind, TriggerKind};
use sagaflow_workflows::config::SagaTables;
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) profile: RawProfile,
    #[serde(default)]
    pub(super) embedded: RawEmbedded,
    #[serde(default)]
    pub(super) temporal: RawTemporal,
    #[serde(default)]
    pub(super) servicebus: RawServiceBus,
    #[serde(default)]
    pub(super) redis: RawRedis,
    #[serde(default)]
    pub(super) cosmos: RawCosmos,
    #[serde(default)]
    pub(super) payment: RawPayment,
    #[serde(default)]
    pub(super) stock: RawStock,
    #[serde(default)]
    pub(super) sandbox: RawSandbox,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) breakers: RawBreakers,
    #[serde(default)]
    pub(super) telemetry: RawTelemetry,
    #[serde(default)]
    pub sagas: SagaTables,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    pub(super) engine: EngineKind,
    pub(super) trigger: TriggerKind,
    pub(super) stock: StockKind,
    pub(super) orders: OrdersKind,
    pub(super) payment: PaymentKind,
    #[serde(default = "default_data_dir")]
    pub(super) data_dir: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("sagaflow-data")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmbedded {
    #[serde(default = "yes")]
    pub(super) group_commit: bool,
    #[serde(default = "default_concurrency")]
    pub(super) max_concurrent_activities: Spanned<i64>,
    #[serde(default)]
    pub(super) retention: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) audit_retention: Option<Spanned<String>>,
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
            retention: None,
            audit_retention: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTemporal {
    #[serde(default = "default_temporal_address")]
    pub(super) address: Spanned<String>,
    #[serde(default = "default_namespace")]
    pub(super) namespace: String,
    #[serde(default = "default_task_queue")]
    pub(super) task_queue: String,
    /// How steps run; see `config::temporal`.
    #[serde(default)]
    pub(super) steps: Option<Spanned<String>>,
    /// Replaced by `steps`: read only to say so.
    #[serde(default)]
    pub(super) local_activities: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub(super) workflow_task_slots: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) activity_slots: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) local_activity_slots: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) workflow_cache: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) max_task_wait: Option<Spanned<String>>,
}

impl Default for RawTemporal {
    fn default() -> Self {
        RawTemporal {
            address: default_temporal_address(),
            namespace: default_namespace(),
            task_queue: default_task_queue(),
            steps: None,
            local_activities: None,
            workflow_task_slots: None,
            activity_slots: None,
            local_activity_slots: None,
            workflow_cache: None,
            max_task_wait: None,
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
pub(super) struct RawRedis {
    #[serde(default = "default_redis_env")]
    pub(super) url_env: String,
    #[serde(default = "default_redis_prefix")]
    pub(super) key_prefix: String,
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
pub(super) struct RawCosmos {
    #[serde(default = "default_cosmos_endpoint_env")]
    pub(super) endpoint_env: String,
    #[serde(default = "default_cosmos_key_env")]
    pub(super) key_env: String,
    #[serde(default = "default_cosmos_database")]
    pub(super) database: String,
    #[serde(default = "default_cosmos_container")]
    pub(super) container: String,
    #[serde(default)]
    pub(super) region: String,
    #[serde(default = "default_throttle_retries")]
    pub(super) throttle_retries: u32,
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
pub(super) struct RawServiceBus {
    #[serde(default = "default_servicebus_env")]
    pub(super) connection_env: String,
    #[serde(default = "default_servicebus_queue")]
    pub(super) queue: Spanned<String>,
    #[serde(default)]
    pub(super) dead_letter_queue: String,
    #[serde(default = "default_prefetch")]
    pub(super) prefetch: Spanned<i64>,
    #[serde(default = "default_max_message_bytes")]
    pub(super) max_message_bytes: Spanned<i64>,
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
pub(super) struct RawPayment {
    #[serde(default)]
    pub(super) base_url: String,
    #[serde(default = "default_api_key_env")]
    pub(super) api_key_env: String,
    #[serde(default = "default_currency")]
    pub(super) currency: String,
    pub(super) request_timeout: Option<Spanned<String>>,
    pub(super) search_lag: Option<Spanned<String>>,
    pub(super) http: Option<Spanned<String>>,
    pub(super) connections: Option<Spanned<i64>>,
}

fn default_api_key_env() -> String {
    "SAGAFLOW_PAYMENT_API_KEY".into()
}

fn default_currency() -> String {
    "usd".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStock {
    pub(super) reservation_ttl: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSandbox {
    #[serde(default)]
    pub(super) port: u16,
    pub(super) error_rate: Option<Spanned<f64>>,
    pub(super) latency: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) bind: Option<Spanned<String>>,
    #[serde(default = "default_admin_token_env")]
    pub(super) token_env: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            bind: None,
            token_env: default_admin_token_env(),
        }
    }
}

fn default_admin_token_env() -> String {
    "SAGAFLOW_ADMIN_TOKEN".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) protocol: Option<Spanned<String>>,
    pub(super) service_name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) headers_env: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreakers {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    #[serde(default)]
    pub(super) payment: RawBreaker,
    #[serde(default)]
    pub(super) stock: RawBreaker,
    #[serde(default)]
    pub(super) orders: RawBreaker,
}

impl Default for RawBreakers {
    fn default() -> Self {
        RawBreakers {
            enabled: true,
            payment: RawBreaker::default(),
            stock: RawBreaker::default(),
            orders: RawBreaker::default(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    pub(super) enabled: Option<bool>,
    pub(super) consecutive: Option<Spanned<i64>>,
    pub(super) failures: Option<Spanned<i64>>,
    pub(super) failure_rate: Option<Spanned<f64>>,
    pub(super) window: Option<Spanned<String>>,
    pub(super) slow_call: Option<Spanned<String>>,
    pub(super) open_for: Option<Spanned<String>>,
    pub(super) probes: Option<Spanned<i64>>,
    pub(super) ramp: Option<Spanned<String>>,
    pub(super) max_in_flight: Option<Spanned<i64>>,
    pub(super) burst: Option<Spanned<i64>>,
    pub(super) count: Option<Vec<String>>,
}
