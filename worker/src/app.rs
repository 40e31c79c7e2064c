//! Wiring: from a validated [`Config`] to running adapters, engine and
//! trigger. Every subcommand that runs sagas (`run`, `demo`, `bench`) builds
//! its world here, so they all exercise the same code.

use crate::config::{Config, OrdersKind, PaymentKind, StockKind};
use crate::engine::embedded::retention::Retention;
use crate::engine::embedded::{Ended, Engine, EngineConfig};
use crate::engine::liveness::Liveness;
use anyhow::{Context, Result};
use sagaflow_activities::orders::cosmos::{CosmosOrders, CosmosOrdersConfig};
use sagaflow_activities::orders::OrderStore;
use sagaflow_activities::orders::Orders;
use sagaflow_activities::payment::http::{PaymentClient, PaymentClientConfig};
use sagaflow_activities::queue::EmbeddedQueue;
use sagaflow_activities::registry::register_noop;
use sagaflow_activities::stock::redis::{RedisStock, RedisStockConfig};
use sagaflow_activities::stock::{Settled, Stock, StockLedger};
use sagaflow_activities::Breakers;
use sagaflow_activities::{orders, payment, stock, Registry};
use sagaflow_payment_sandbox::{Knobs, Sandbox, SandboxConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The files under the data directory.
#[derive(Debug, Clone)]
pub struct DataPaths {
    /// The directory.
    pub dir: PathBuf,
}

impl DataPaths {
    /// Paths under `dir` (created if missing).
    pub fn new(dir: &Path) -> Result<DataPaths> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        Ok(DataPaths {
            dir: dir.to_owned(),
        })
    }
    /// The engine's journal.
    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal.db")
    }
    /// The embedded stock ledger.
    pub fn stock(&self) -> PathBuf {
        self.dir.join("stock.db")
    }
    /// The embedded order store.
    pub fn orders(&self) -> PathBuf {
        self.dir.join("orders.db")
    }
    /// The embedded order queue.
    pub fn queue(&self) -> PathBuf {
        self.dir.join("queue.db")
    }
    /// The payment sandbox's state.
    pub fn payments(&self) -> PathBuf {
        self.dir.join("payments.db")
    }
}

/// Default for the payment API key when its variable is unset and the
/// sandbox is the provider.
pub const SANDBOX_KEY: &str = "sk_test_sagaflow_sandbox";

/// The adapters behind the activity names.
pub struct Adapters {
    /// Activity name -> function.
    pub registry: Arc<Registry>,
    /// The stock backend (for seeding, reaping and checks).
    pub stock: Stock,
    /// The order store (for checks).
    pub orders: Orders,
    /// The sandbox, when the profile runs one: it serves as long as this lives.
    pub _sandbox: Option<Sandbox>,
}

/// Starts the adapters the profile selects. Must run inside the tokio
/// runtime (the sandbox serves on it).
pub async fn start_adapters(config: &Config, paths: &DataPaths) -> Result<Adapters> {
    let mut registry = Registry::new();
    register_noop(&mut registry);
    let stock_backend = open_stock(config, paths).await?;
    stock::register(
        &mut registry,
        stock_backend.clone(),
        config.stock.reservation_ttl_ms,
    );
    let order_store = open_orders(config, paths).await?;
    orders::register(&mut registry, order_store.clone());
    let (sandbox, client) =
        open_payment(config, paths, sandbox_knobs(config), config.sandbox.port).await?;
    payment::http::register(&mut registry, Arc::new(client));
    registry.set_breakers(Breakers::new(config.breakers.breakers.iter().cloned()));
    registry.set_observer(crate::metrics::global().clone());
    Ok(Adapters {
        registry: Arc::new(registry),
        stock: stock_backend,
        orders: order_store,
        _sandbox: sandbox,
    })
}

/// The payment client the profile selects; with `payment = "sandbox"`
/// also the in-process sandbox it talks to (listening on loopback `port`,
/// 0 for any, with `knobs`), which serves as long as it lives.
pub async fn open_payment(
    config: &Config,
    paths: &DataPaths,
    knobs: Knobs,
    port: u16,
) -> Result<(Option<Sandbox>, PaymentClient)> {
    let api_key = std::env::var(&config.payment.api_key_env).ok();
    let (sandbox, base_url, api_key) = match config.profile.payment {
        PaymentKind::Sandbox => {
            let addr = ([127, 0, 0, 1], port).into();
            let sandbox = Sandbox::start(
                SandboxConfig {
                    db_path: paths.payments(),
                    knobs,
                    // One worker per sandbox: the log would say nothing new.
                    request_log: false,
                },
                addr,
            )
            .await
            .context("cannot start the payment sandbox")?;
            let url = sandbox.base_url().to_owned();
            (
                Some(sandbox),
                url,
                api_key.unwrap_or_else(|| SANDBOX_KEY.to_owned()),
            )
        }
        PaymentKind::Http => {
            let key = api_key.with_context(|| {
                format!(
                    "profile.payment is \"http\" but the environment variable {} (payment.api_key_env) is not set; export it with the provider's secret key",
                    config.payment.api_key_env
                )
            })?;
            (None, config.payment.base_url.clone(), key)
        }
    };
    let client = PaymentClient::new(PaymentClientConfig {
        base_url,
        api_key,
        currency: config.payment.currency.clone(),
        request_timeout_ms: config.payment.request_timeout_ms,
        // The in-process sandbox's search trails nothing; a provider's
        // (or a standalone sandbox's) trails by up to [payment] search_lag.
        search_lag_ms: match config.profile.payment {
            PaymentKind::Sandbox => 0,
            PaymentKind::Http => config.payment.search_lag_ms,
        },
        // A provider over plain http may not speak HTTP/2; the sandbox
        // this process starts does.
        http: match &sandbox {
            Some(_) => config.payment.http.toward_own_sandbox(),
            None => config.payment.http,
        },
        connections: config.payment.connections,
    })
    .context("cannot build the payment client")?;
    Ok((sandbox, client))
}

/// The knobs `[sandbox]` in sagas.toml sets (the others start off).
pub fn sandbox_knobs(config: &Config) -> Knobs {
    Knobs {
        error_rate: config.sandbox.error_rate,
        latency_ms: config.sandbox.latency_ms,
        ..Knobs::default()
    }
}

/// The value of the environment variable `var`, which `key` names; a
/// missing one stops start-up with what to set.
fn secret_from_env(var: &str, key: &str, what: &str) -> Result<String> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .with_context(|| {
            format!("the environment variable {var} ({key}) is not set; export it with {what}")
        })
}

/// Opens the stock backend the profile selects, checking it answers.
pub async fn open_stock(config: &Config, paths: &DataPaths) -> Result<Stock> {
    Ok(match config.profile.stock {
        StockKind::Embedded => Stock::from(Arc::new(StockLedger::open(&paths.stock())?)),
        StockKind::Redis => {
            let url = secret_from_env(
                &config.redis.url_env,
                "[redis] url_env",
                "the Redis URL, e.g. redis://127.0.0.1:6379",
            )?;
            let redis = RedisStock::connect_with(RedisStockConfig {
                url,
                key_prefix: config.redis.key_prefix.clone(),
            })
            .await?;
            Stock::from(Arc::new(redis))
        }
    })
}

/// Opens the order store the profile selects, checking it answers.
pub async fn open_orders(config: &Config, paths: &DataPaths) -> Result<Orders> {
    Ok(match config.profile.orders {
        OrdersKind::Embedded => Orders::from(Arc::new(OrderStore::open(&paths.orders())?)),
        OrdersKind::Cosmos => {
            let c = &config.cosmos;
            let endpoint = secret_from_env(
                &c.endpoint_env,
                "[cosmos] endpoint_env",
                "the account endpoint, e.g. https://ACCOUNT.documents.azure.com:443/",
            )?;
            let key = secret_from_env(&c.key_env, "[cosmos] key_env", "the account key")?;
            let cosmos = CosmosOrders::connect(CosmosOrdersConfig {
                endpoint,
                key,
                database: c.database.clone(),
                container: c.container.clone(),
                region: c.region.clone(),
                throttle_retries: c.throttle_retries,
            })
            .await?;
            Orders::from(Arc::new(cosmos))
        }
    })
}

/// Starts the embedded engine over `registry` (recovering what the journal
/// holds).
pub fn start_engine(
    config: &Config,
    paths: &DataPaths,
    registry: Arc<Registry>,
    ended: Option<tokio::sync::mpsc::UnboundedSender<Ended>>,
    group_commit: Option<bool>,
) -> Result<Engine> {
    let engine = Engine::start(
        EngineConfig {
            journal_path: paths.journal(),
            group_commit: group_commit.unwrap_or(config.embedded.group_commit),
            max_concurrent_activities: config.embedded.max_concurrent_activities,
            inbox_poll: Duration::from_millis(200),
            retention: Retention {
                sagas_ms: config.embedded.retention_ms,
                audit_ms: config.embedded.audit_retention_ms,
            },
        },
        registry,
        tokio::runtime::Handle::current(),
        ended,
    )?;
    Ok(engine)
}

/// Every second, forever: finds stock reservations past their deadline,
/// asks the engine which of their sagas still live, reclaims the others'
/// and gives the live ones a new deadline `reservation_ttl_ms` ahead. A
/// saga that has charged its customer therefore always finds its units at
/// commit, however long its worker was down. When the engine cannot
/// answer, nothing is reclaimed that round.
pub fn spawn_stock_reaper(
    stock: Stock,
    liveness: Liveness,
    reservation_ttl_ms: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        let mut trouble = Trouble::default();
        loop {
            every.tick().await;
            let now = sagaflow_activities::clock::now_ms();
            let round = reap_once(&stock, &liveness, now, now + reservation_ttl_ms).await;
            match (trouble.note(round.is_err(), now), &round) {
                (Say::Failing, Err(e)) => tracing::warn!(
                    error = %e,
                    "reclaiming expired reservations failed; nothing was reclaimed; retrying every second (said again once a minute while it lasts)"
                ),
                (Say::StillFailing { rounds, for_ms }, Err(e)) => tracing::warn!(
                    error = %e,
                    rounds,
                    for_s = for_ms / 1_000,
                    "reclaiming expired reservations still fails; nothing was reclaimed"
                ),
                (Say::Recovered { rounds, for_ms }, _) => tracing::info!(
                    rounds,
                    for_s = for_ms / 1_000,
                    "reclaiming expired reservations works again"
                ),
                _ => {}
            }
            if let Ok(s) = round {
                if s.reclaimed + s.kept > 0 {
                    tracing::info!(
                        reclaimed = s.reclaimed,
                        kept = s.kept,
                        "stock reservations past their deadline: the ended sagas' stock is back on sale, the live sagas keep theirs"
                    );
                }
            }
        }
    })
}

/// How often a lasting failure is said again.
const SAY_AGAIN_MS: u64 = 60_000;

/// What to log about a round that failed or worked.
#[derive(Debug, PartialEq, Eq)]
enum Say {
    /// Nothing new.
    Nothing,
    /// The first failed round.
    Failing,
    /// A reminder: `rounds` failed rounds over `for_ms`.
    StillFailing { rounds: u64, for_ms: u64 },
    /// The first round that worked after `rounds` failed ones.
    Recovered { rounds: u64, for_ms: u64 },
}

/// A failure that lasts (Redis or the engine down) is said when it
/// starts, once a minute while it lasts and when it ends, not every second.
#[derive(Debug, Default)]
struct Trouble {
    /// (first failure, failed rounds, last said), while failing.
    since: Option<(u64, u64, u64)>,
}

impl Trouble {
    fn note(&mut self, failed: bool, now_ms: u64) -> Say {
        match (self.since.as_mut(), failed) {
            (None, false) => Say::Nothing,
            (None, true) => {
                self.since = Some((now_ms, 1, now_ms));
                Say::Failing
            }
            (Some((from, rounds, said)), true) => {
                *rounds += 1;
                if now_ms.saturating_sub(*said) >= SAY_AGAIN_MS {
                    *said = now_ms;
                    Say::StillFailing {
                        rounds: *rounds,
                        for_ms: now_ms.saturating_sub(*from),
                    }
                } else {
                    Say::Nothing
                }
            }
            (Some((from, rounds, _)), false) => {
                let say = Say::Recovered {
                    rounds: *rounds,
                    for_ms: now_ms.saturating_sub(*from),
                };
                self.since = None;
                say
            }
        }
    }
}

/// Expired reservations judged per batch.
const REAP_BATCH: usize = 500;

/// One round of the reaper, batch by batch until nothing is past its
/// deadline.
async fn reap_once(
    stock: &Stock,
    liveness: &Liveness,
    now_ms: u64,
    keep_until_ms: u64,
) -> Result<Settled> {
    let mut total = Settled::default();
    loop {
        let expired = stock.expired(now_ms, REAP_BATCH).await?;
        if expired.is_empty() {
            return Ok(total);
        }
        let living = liveness.living(&expired.sagas()).await?;
        let settled = stock
            .settle(&expired, &|id| living.contains(id), now_ms, keep_until_ms)
            .await?;
        total.reclaimed += settled.reclaimed;
        total.kept += settled.kept;
        if settled.reclaimed + settled.kept == 0 || expired.len() < REAP_BATCH {
            return Ok(total);
        }
    }
}

/// Opens the embedded queue.
pub fn open_queue(paths: &DataPaths) -> Result<EmbeddedQueue> {
    Ok(EmbeddedQueue::open(
        &paths.queue(),
        crate::trigger::embedded::MAX_DELIVERIES,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lasting_failure_is_said_when_it_starts_once_a_minute_and_when_it_ends() {
        let mut t = Trouble::default();
        assert_eq!(t.note(false, 0), Say::Nothing);
        assert_eq!(t.note(true, 1_000), Say::Failing);
        for second in 2..61 {
            assert_eq!(
                t.note(true, second * 1_000),
                Say::Nothing,
                "second {second}"
            );
        }
        assert_eq!(
            t.note(true, 61_000),
            Say::StillFailing {
                rounds: 61,
                for_ms: 60_000
            }
        );
        assert_eq!(t.note(true, 62_000), Say::Nothing);
        assert_eq!(
            t.note(false, 63_000),
            Say::Recovered {
                rounds: 62,
                for_ms: 62_000
            }
        );
        assert_eq!(t.note(false, 64_000), Say::Nothing);
        assert_eq!(
            t.note(true, 65_000),
            Say::Failing,
            "a new failure is said again"
        );
    }
}
