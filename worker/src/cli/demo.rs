//! `sagaflow demo`: a flash sale on embedded defaults, then the invariants.
//!
//! Seeds M units across a few hot SKUs, queues N one-unit orders (a share
//! with decline test cards), runs the worker until every saga has ended,
//! and checks the books across the journal, the stock ledger, the order
//! store and the payment sandbox. Re-running with the same `--data`
//! resumes the same sale (seeding happens once), which is how the crash
//! test drives it.

use super::run::{EngineRun, Worker};
use crate::app::DataPaths;
use crate::config::{Config, EngineKind, StockKind};
use crate::engine::embedded::journal;
use crate::engine::embedded::read;
use crate::engine::temporal::client::TemporalClient;
use crate::engine::view::Stats;
use crate::runtime::runtime;
use anyhow::{bail, Context, Result};
use sagaflow_activities::order::{Order, OrderLine};
use sagaflow_activities::orders::OrdersSnapshot;
use sagaflow_activities::stock::StockSnapshot;
use sagaflow_payment_sandbox::{read_ledger, PaymentLedger};
use serde::{Deserialize, Serialize};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `demo --profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoProfile {
    /// The embedded stock ledger
    Embedded,
    /// The Redis stock adapter
    Redis,
}

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Orders to submit (one unit each)
    #[arg(long, default_value_t = 2000)]
    pub orders: usize,
    /// Units of stock in all, spread across the hot SKUs
    #[arg(long, default_value_t = 500)]
    pub stock: u64,
    /// Hot SKUs the stock and the orders are spread over
    #[arg(long, default_value_t = 4)]
    pub skus: usize,
    /// Share of orders paid with a decline test card (0.0 to 1.0)
    #[arg(long, default_value_t = 0.05)]
    pub decline_rate: f64,
    /// Sagas in flight at most
    #[arg(long, default_value_t = 200)]
    pub in_flight: usize,
    /// Override [sandbox] error_rate: share of payment POSTs answered with a 500
    #[arg(long)]
    pub sandbox_error_rate: Option<f64>,
    /// Override [sandbox] latency in ms
    #[arg(long)]
    pub sandbox_latency_ms: Option<u64>,
    /// Delete the data directory first instead of resuming the sale in it
    #[arg(long)]
    pub fresh: bool,
    /// Stock backend: embedded (SQLite in the data directory), or redis (the
    /// server in the variable [redis] url_env names, e.g.
    /// SAGAFLOW_REDIS_URL=redis://127.0.0.1:6379) [default: profile.stock]
    #[arg(long, value_enum)]
    pub profile: Option<DemoProfile>,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct SaleMarker {
    orders: usize,
    stock: u64,
    skus: usize,
    decline_rate: f64,
    /// Order-id prefix of this sale: on Temporal the namespace is shared
    /// with other sales, so ids must not repeat across them.
    #[serde(default = "default_prefix")]
    prefix: String,
}

fn default_prefix() -> String {
    "order-".into()
}

impl SaleMarker {
    fn same_sale(&self, other: &SaleMarker) -> bool {
        (self.orders, self.stock, self.skus, self.decline_rate)
            == (other.orders, other.stock, other.skus, other.decline_rate)
    }
}

/// The summary `demo` prints.
#[derive(Debug, Serialize)]
pub struct Summary {
    orders: usize,
    declined_cards: usize,
    completed: u64,
    compensated: u64,
    parked: u64,
    dead_lettered: i64,
    units_sold: i64,
    stock_left: i64,
    payments_captured: u64,
    payments_voided: u64,
    sagas_per_sec: f64,
    p50_ms: u64,
    p99_ms: u64,
    elapsed_s: f64,
    data_dir: String,
    invariants_ok: bool,
    violations: Vec<String>,
}

/// Deterministic order generator (xorshift for SKUs and customers), so a
/// resumed sale regenerates the same orders. Decline cards are spread
/// evenly: exactly `ceil(n * decline_rate)` of them.
fn generate_orders(prefix: &str, n: usize, skus: usize, decline_rate: f64) -> Vec<Order> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let declined =
                (i as f64 * decline_rate).ceil() < ((i + 1) as f64 * decline_rate).ceil();
            Order {
                order_id: format!("{prefix}{i:06}"),
                customer: format!("customer-{}", x % 50_000),
                items: vec![OrderLine {
                    sku: format!("SKU-{}", (x >> 32) as usize % skus + 1),
                    qty: 1,
                }],
                amount: 1999,
                currency: "usd".into(),
                payment_method: if declined {
                    "pm_card_chargeDeclined".into()
                } else {
                    "pm_card_visa".into()
                },
                refund: None,
                traceparent: None,
            }
        })
        .collect()
}

/// `sagaflow demo`.
pub fn demo(mut config: Config, data: Option<PathBuf>, args: DemoArgs) -> Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.decline_rate) {
        bail!(
            "--decline-rate is {}; use a fraction from 0.0 to 1.0",
            args.decline_rate
        );
    }
    if args.skus == 0 || args.orders == 0 {
        bail!("--orders and --skus must be at least 1");
    }
    // The demo fills the embedded queue itself; a Service Bus profile
    // would leave its orders unread.
    config.profile.trigger = crate::config::TriggerKind::Embedded;
    match args.profile {
        Some(DemoProfile::Embedded) => config.profile.stock = StockKind::Embedded,
        Some(DemoProfile::Redis) => config.profile.stock = StockKind::Redis,
        None => {}
    }
    if let Some(r) = args.sandbox_error_rate {
        config.sandbox.error_rate = r;
    }
    if let Some(l) = args.sandbox_latency_ms {
        config.sandbox.latency_ms = l;
    }
    let dir = data.unwrap_or_else(|| PathBuf::from("sagaflow-demo"));
    if args.fresh && dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot delete {}", dir.display()))?;
    }
    let paths = DataPaths::new(&dir)?;
    let marker_path = dir.join("demo.json");
    let mut wanted = SaleMarker {
        orders: args.orders,
        stock: args.stock,
        skus: args.skus,
        decline_rate: args.decline_rate,
        // A shared server (Temporal's namespace, Redis) keeps other sales:
        // this sale's ids get a prefix of their own.
        prefix: match (config.profile.engine, config.profile.stock) {
            (EngineKind::Embedded, StockKind::Embedded) => default_prefix(),
            _ => format!(
                "order-{:08x}-",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64 >> 10)
                    & 0xffff_ffff
            ),
        },
    };
    let fresh_sale = match std::fs::read(&marker_path) {
        Ok(bytes) => {
            let found: SaleMarker = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; pass --fresh to start over",
                    marker_path.display()
                )
            })?;
            if !found.same_sale(&wanted) {
                bail!(
                    "{} holds another sale ({} orders, {} units); pass --fresh to start over or use another --data",
                    dir.display(),
                    found.orders,
                    found.stock
                );
            }
            wanted.prefix = found.prefix;
            false
        }
        Err(_) => true,
    };
    if config.profile.stock == StockKind::Redis {
        // The sale's SKUs and reservations live under their own keys.
        config.redis.key_prefix = format!("{}{}", config.redis.key_prefix, wanted.prefix);
    }
    let progress = !args.json || std::io::stderr().is_terminal();
    let rt = runtime()?;
    let started = Instant::now();
    rt.block_on(async {
        if fresh_sale {
            let stock_backend = crate::app::open_stock(&config, &paths).await?;
            let per = args.stock / args.skus as u64;
            let stock: Vec<(String, i64)> = (0..args.skus)
                .map(|i| {
                    let extra = u64::from((i as u64) < args.stock % args.skus as u64);
                    (format!("SKU-{}", i + 1), (per + extra) as i64)
                })
                .collect();
            stock_backend.seed(&stock).await?;
            let queue = crate::app::open_queue(&paths)?;
            let bodies: Vec<String> = generate_orders(&wanted.prefix, args.orders, args.skus, args.decline_rate)
                .iter()
                .map(|o| serde_json::to_string(o).expect("orders serialize"))
                .collect();
            queue.send_batch(&bodies)?;
            std::fs::write(&marker_path, serde_json::to_vec(&wanted)?)?;
            if progress {
                eprintln!(
                    "demo: seeded {} units over {} SKUs, queued {} orders ({:.0}% decline cards) in {}",
                    args.stock,
                    args.skus,
                    args.orders,
                    args.decline_rate * 100.0,
                    dir.display()
                );
            }
        } else if progress {
            eprintln!("demo: resuming the sale in {}", dir.display());
        }
        let mut worker = Worker::start(&config, &paths, "checkout", args.in_flight, None).await?;
        let source = match &worker.engine {
            EngineRun::Embedded { .. } => StatsSource::Journal(paths.journal()),
            EngineRun::Temporal { client, .. } => StatsSource::Temporal(client.scoped(&wanted.prefix)),
        };
        let mut last_report = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let idle = worker.is_idle().await?;
            if progress && (last_report.elapsed() >= Duration::from_secs(1) || idle) {
                last_report = Instant::now();
                let s = source.counts().await?;
                eprintln!(
                    "demo: [{:>5.1}s] {}/{} ended: {} completed, {} compensated, {} parked; {} running",
                    started.elapsed().as_secs_f64(),
                    s.completed + s.compensated + s.parked,
                    args.orders,
                    s.completed,
                    s.compensated,
                    s.parked,
                    s.running + s.compensating
                );
            }
            if idle {
                break;
            }
        }
        let dead_lettered = worker
            .queue
            .as_ref()
            .expect("the demo runs the embedded trigger")
            .counts()?
            .dead_lettered;
        let stock = worker._adapters.stock.snapshot().await?;
        let orders = worker._adapters.orders.snapshot().await?;
        worker.stop().await?;
        let stats = source.stats().await?;
        let books = Books { stock, orders, payments: read_ledger(&paths.payments())? };
        let summary = summarize(&paths, &args, &wanted.prefix, stats, books, dead_lettered, started.elapsed())?;
        let mut out = std::io::stdout().lock();
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&summary)?)?;
        } else {
            print_summary(&mut out, &summary)?;
        }
        Ok(if summary.invariants_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// Where the demo reads saga counts from.
enum StatsSource {
    Journal(PathBuf),
    Temporal(TemporalClient),
}

impl StatsSource {
    /// Counts only (cheap, for progress).
    async fn counts(&self) -> Result<Stats> {
        match self {
            StatsSource::Journal(p) => Ok(read::stats(&journal::open_reader(p)?)?),
            StatsSource::Temporal(c) => {
                let mut s = Stats {
                    running: c.count(Some("running")).await?,
                    compensating: c.count(Some("compensating")).await?,
                    completed: c.count(Some("completed")).await?,
                    compensated: c.count(Some("compensated")).await?,
                    parked: c.count(Some("parked")).await?,
                    ..Stats::default()
                };
                s.total = s.running + s.compensating + s.completed + s.compensated + s.parked;
                Ok(s)
            }
        }
    }

    /// Counts and latencies.
    async fn stats(&self) -> Result<Stats> {
        match self {
            StatsSource::Journal(p) => Ok(read::stats(&journal::open_reader(p)?)?),
            StatsSource::Temporal(c) => Ok(c.stats().await?),
        }
    }
}

/// What the stores hold at the end of the sale.
struct Books {
    stock: StockSnapshot,
    orders: OrdersSnapshot,
    payments: PaymentLedger,
}

fn summarize(
    paths: &DataPaths,
    args: &DemoArgs,
    prefix: &str,
    s: Stats,
    books: Books,
    dead_lettered: i64,
    elapsed: Duration,
) -> Result<Summary> {
    let Books {
        stock,
        orders,
        payments: pay,
    } = books;
    let mut v = Vec::new();
    let ended = s.completed + s.compensated + s.parked;
    if ended as i64 + dead_lettered != args.orders as i64
        || s.total as i64 + dead_lettered != args.orders as i64
    {
        v.push(format!(
            "every order must become a saga that ends or be dead-lettered: {} orders, {} sagas ({} ended), {} dead-lettered",
            args.orders, s.total, ended, dead_lettered
        ));
    }
    if stock.sold != s.completed as i64 || pay.succeeded != s.completed {
        v.push(format!(
            "units sold ({}) = completed orders ({}) = captured payments ({}) does not hold",
            stock.sold, s.completed, pay.succeeded
        ));
    }
    if orders.created != s.completed as i64 {
        v.push(format!(
            "order documents not cancelled ({}) should equal completed sagas ({})",
            orders.created, s.completed
        ));
    }
    if stock.inconsistent
        || stock.available < 0
        || stock.available + stock.reserved + stock.sold != stock.initial
    {
        v.push(format!(
            "stock books do not balance or went below zero: initial {} = available {} + reserved {} + sold {}",
            stock.initial, stock.available, stock.reserved, stock.sold
        ));
    }
    if s.parked == 0 && stock.reserved != 0 {
        v.push(format!(
            "{} units are still reserved with no saga open",
            stock.reserved
        ));
    }
    if pay.double_captures != 0 {
        v.push(format!(
            "{} payments were captured more than once",
            pay.double_captures
        ));
    }
    if pay.orders_with_several_intents != 0 {
        v.push(format!(
            "{} orders hold more than one live payment authorization",
            pay.orders_with_several_intents
        ));
    }
    if s.parked == 0 && pay.requires_capture != 0 {
        v.push(format!(
            "{} authorizations were neither captured nor voided",
            pay.requires_capture
        ));
    }
    Ok(Summary {
        orders: args.orders,
        declined_cards: generate_orders(prefix, args.orders, args.skus, args.decline_rate)
            .iter()
            .filter(|o| o.payment_method != "pm_card_visa")
            .count(),
        completed: s.completed,
        compensated: s.compensated,
        parked: s.parked,
        dead_lettered,
        units_sold: stock.sold,
        stock_left: stock.available,
        payments_captured: pay.succeeded,
        payments_voided: pay.canceled,
        sagas_per_sec: s.sagas_per_sec,
        p50_ms: s.p50_ms,
        p99_ms: s.p99_ms,
        elapsed_s: (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        data_dir: paths.dir.display().to_string(),
        invariants_ok: v.is_empty(),
        violations: v,
    })
}

fn print_summary(out: &mut impl Write, s: &Summary) -> Result<()> {
    writeln!(
        out,
        "flash sale: {} orders ({} with decline cards)",
        s.orders, s.declined_cards
    )?;
    writeln!(out, "  completed          {}", s.completed)?;
    writeln!(out, "  compensated        {}", s.compensated)?;
    writeln!(out, "  parked             {}", s.parked)?;
    writeln!(out, "  dead-lettered      {}", s.dead_lettered)?;
    writeln!(out, "  units sold         {}", s.units_sold)?;
    writeln!(out, "  stock left         {}", s.stock_left)?;
    writeln!(out, "  payments captured  {}", s.payments_captured)?;
    writeln!(out, "  payments voided    {}", s.payments_voided)?;
    writeln!(out, "  throughput         {} sagas/s", s.sagas_per_sec)?;
    writeln!(
        out,
        "  latency            p50 {}ms, p99 {}ms",
        s.p50_ms, s.p99_ms
    )?;
    writeln!(out, "  elapsed            {}s", s.elapsed_s)?;
    if s.invariants_ok {
        writeln!(out, "invariants: ok (units sold = completed = captured; no stock below zero; no double capture; every order ended)")?;
    } else {
        writeln!(out, "invariants: VIOLATED")?;
        for v in &s.violations {
            writeln!(out, "  - {v}")?;
        }
    }
    writeln!(
        out,
        "inspect: sagaflow list --data {0}; sagaflow stats --data {0}",
        s.data_dir
    )?;
    Ok(())
}
