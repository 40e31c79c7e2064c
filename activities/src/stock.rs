//! The stock ledger behind `stock.reserve`, `stock.release`, `stock.commit`:
//! [`Stock`] is either the embedded SQLite [`StockLedger`] ([`embedded`]) or the
//! Redis adapter [`RedisStock`] ([`redis`]); both keep the same books with
//! the same semantics, and one test suite (`tests/stock_backends.rs`) runs
//! against both.
//!
//! A reservation is keyed by the saga id, so every operation is idempotent
//! per reservation.
//!
//! Invariants (checked by [`StockLedger::snapshot`] and the demo):
//! - per SKU, `available + reserved + sold = initial`, all three >= 0;
//! - a reservation moves `reserved -> committed | released | expired` once,
//!   and `committed -> returned` once (a refund); a repeated call in the
//!   same direction is a no-op that succeeds;
//! - a reservation carries a deadline. Past it, the worker's reaper asks
//!   the engine about the reservation's saga ([`Stock::expired`], then
//!   [`Stock::settle`]): the stock of a saga that has ended or is unknown
//!   goes back on sale, so stock never leaks when a saga dies; a saga that
//!   still lives (running, compensating, parked) keeps its stock and gets a
//!   new deadline, so a slow saga that has charged the customer always
//!   finds its units at commit. A late commit of an expired reservation
//!   (its saga was judged dead, e.g. by an operator's tool) re-takes the
//!   stock if it is still there and fails as a business error if it is not;
//! - releasing an unknown reservation records a tombstone, so a reserve that
//!   arrives after its own compensation cannot take stock.

use crate::clock::now_ms;
use crate::order::{Order, OrderLine};
use crate::registry::Registry;
use sagaflow_workflows::{ActivityCall, ActivityError};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

pub mod bench;
mod embedded;
pub mod redis;

pub use self::bench::{bench_reserve, StockBenchConfig, StockBenchReport};
pub use self::embedded::StockLedger;
pub use self::redis::{RedisStock, RedisStockConfig};

/// Errors of the ledger's own plumbing (not business outcomes).
#[derive(Debug, thiserror::Error)]
pub enum StockError {
    /// The SQLite file could not be opened or written.
    #[error("stock ledger database error: {0}; check the data directory is writable")]
    Db(#[from] rusqlite::Error),
    /// The ledger's write thread could not start.
    #[error(
        "cannot start the stock ledger's write thread: {0}; the system is out of threads or memory"
    )]
    Thread(String),
    /// The Redis URL does not parse; nothing was tried.
    #[error("the Redis URL {url} is not valid: {reason}; fix the variable named by [redis] url_env (redis://[:password@]host:port[/db])")]
    RedisUrl {
        /// The URL, password masked.
        url: String,
        /// What the driver said.
        reason: String,
    },
    /// No Redis server answered at start-up.
    #[error("cannot reach Redis at {url}: {reason}; start it or fix [redis] url_env")]
    RedisUnreachable {
        /// The URL, password masked.
        url: String,
        /// What the driver said.
        reason: String,
    },
    /// A seed, snapshot or reclaim command failed; the caller may retry.
    #[error("Redis at {url} failed: {reason}; check the server is up, then retry")]
    Redis {
        /// The URL, password masked.
        url: String,
        /// What the driver said.
        reason: String,
    },
    /// A reservation failed during a benchmark run.
    #[error("a benchmark reservation failed: {0}; check the backend is up and the bench SKU is not in use")]
    Bench(String),
}

/// Totals over every SKU, for invariant checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StockSnapshot {
    /// Units seeded.
    pub initial: i64,
    /// Units free to reserve.
    pub available: i64,
    /// Units held by live reservations.
    pub reserved: i64,
    /// Units sold (committed reservations).
    pub sold: i64,
    /// Reservations committed.
    pub committed_reservations: i64,
    /// True when some SKU's counts do not add up or went negative.
    pub inconsistent: bool,
}

/// One SKU's counts, as the dashboard's stock table shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SkuLevel {
    /// The SKU.
    pub sku: String,
    /// Units seeded.
    pub initial: i64,
    /// Units free to reserve.
    pub available: i64,
    /// Units held by live reservations.
    pub reserved: i64,
    /// Units sold.
    pub sold: i64,
}

/// Reservation lines past their deadline, as [`Stock::expired`] found
/// them: `(SKU, reservation id)` on Redis, which keeps a line per SKU;
/// the SKU is empty on the embedded ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    lines: Vec<(String, String)>,
}

impl Expired {
    /// The reservations (saga ids) these lines belong to, sorted, once each:
    /// what the reaper asks the engine about.
    pub fn sagas(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.lines.iter().map(|(_, id)| id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// True when nothing is past its deadline.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// How many lines (reservations on the embedded ledger).
    pub fn len(&self) -> usize {
        self.lines.len()
    }
}

/// Where one line of a reservation stands, as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineState {
    /// Held for its saga: counted in `reserved`.
    Reserved,
    /// Sold: counted in `sold`.
    Committed,
    /// Given back by its saga (or a tombstone that holds nothing).
    Released,
    /// Reclaimed by the reaper.
    Expired,
    /// Sold, then returned by a refund.
    Returned,
}

impl LineState {
    /// The lowercase name used in messages and `--json`.
    pub fn name(self) -> &'static str {
        match self {
            LineState::Reserved => "reserved",
            LineState::Committed => "committed",
            LineState::Released => "released",
            LineState::Expired => "expired",
            LineState::Returned => "returned",
        }
    }
}

/// One SKU line of one reservation (the reservation id is its saga's id),
/// as [`Stock::reservations`] lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReservationLine {
    /// The reservation (= saga) id.
    pub reservation: String,
    /// The SKU.
    pub sku: String,
    /// Units on this line.
    pub units: u32,
    /// Where the line stands.
    pub state: LineState,
}

/// What [`Stock::settle`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Settled {
    /// Reservations reclaimed: their saga has ended or is unknown.
    pub reclaimed: usize,
    /// Reservations kept with a new deadline: their saga still lives.
    pub kept: usize,
}

/// The business error of a return for a reservation nobody made.
pub(crate) fn unknown_to_return(reservation: &str) -> ActivityError {
    ActivityError::business(
        "unknown_reservation",
        format!("no reservation {reservation} to return: nothing was sold under it"),
    )
}

/// The business error of a return for a reservation never sold.
pub(crate) fn not_sold(reservation: &str, state: &str) -> ActivityError {
    ActivityError::business(
        "not_sold",
        format!("reservation {reservation} is {state}, not sold; there is nothing to return"),
    )
}

/// The reservation a call acts on: the saga's own, or for a refund saga
/// the sale it undoes (`order.refund.saga_id`).
fn reservation_of(call: &ActivityCall, order: &Order) -> Result<String, ActivityError> {
    match &order.refund {
        Some(of) => Ok(of.saga_id.clone()),
        None => saga_id(call),
    }
}

fn saga_id(call: &ActivityCall) -> Result<String, ActivityError> {
    call.input["saga_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ActivityError::business("bad_input", "the activity input has no saga_id"))
}

/// The order's lines summed per SKU, in first-seen order: a reservation
/// holds one amount per SKU.
pub(crate) fn aggregate_lines(items: &[OrderLine]) -> Vec<(String, u32)> {
    let mut lines: Vec<(String, u32)> = Vec::with_capacity(items.len());
    for item in items {
        match lines.iter_mut().find(|(sku, _)| *sku == item.sku) {
            Some((_, qty)) => *qty += item.qty,
            None => lines.push((item.sku.clone(), item.qty)),
        }
    }
    lines
}

/// The stock backend the deployment profile selects. Both keep the same
/// books with the same semantics; cloning is cheap.
///
/// The embedded ledger finds a reservation by id alone; Redis keeps one
/// record per SKU, so `release` and `commit` also take the order's lines
/// (every activity input carries the order).
#[derive(Clone)]
pub enum Stock {
    /// The SQLite ledger in the data directory.
    Embedded(Arc<StockLedger>),
    /// The Redis adapter.
    Redis(Arc<RedisStock>),
}

impl From<Arc<StockLedger>> for Stock {
    fn from(ledger: Arc<StockLedger>) -> Stock {
        Stock::Embedded(ledger)
    }
}

impl From<Arc<RedisStock>> for Stock {
    fn from(redis: Arc<RedisStock>) -> Stock {
        Stock::Redis(redis)
    }
}

impl Stock {
    /// Whether the store answers now (the worker's `/readyz`).
    pub async fn ping(&self) -> Result<(), StockError> {
        match self {
            // A file in the data directory: it answers while the process runs.
            Stock::Embedded(_) => Ok(()),
            Stock::Redis(r) => r.ping().await,
        }
    }

    /// Sets the stock of each SKU (initial = available). For demos and tests.
    pub async fn seed(&self, stock: &[(String, i64)]) -> Result<(), StockError> {
        match self {
            Stock::Embedded(l) => l.seed(stock),
            Stock::Redis(r) => r.seed(stock).await,
        }
    }

    /// Reserves every line under `reservation` until `deadline_ms`, all or
    /// nothing; idempotent. Out of stock is the business error
    /// `out_of_stock`.
    pub async fn reserve(
        &self,
        reservation: &str,
        items: &[OrderLine],
        deadline_ms: u64,
    ) -> Result<Value, ActivityError> {
        match self {
            Stock::Embedded(l) => l.reserve(reservation, items, deadline_ms).await,
            Stock::Redis(r) => r.reserve(reservation, items, deadline_ms).await,
        }
    }

    /// Returns the reservation's stock once (tombstone when unknown;
    /// `already_committed` when sold).
    pub async fn release(
        &self,
        reservation: &str,
        items: &[OrderLine],
    ) -> Result<Value, ActivityError> {
        match self {
            Stock::Embedded(l) => l.release(reservation).await,
            Stock::Redis(r) => r.release(reservation, items).await,
        }
    }

    /// Makes the sale final once; a late commit of an expired reservation
    /// re-takes the stock or fails with `reservation_expired`.
    pub async fn commit(
        &self,
        reservation: &str,
        items: &[OrderLine],
    ) -> Result<Value, ActivityError> {
        match self {
            Stock::Embedded(l) => l.commit(reservation).await,
            Stock::Redis(r) => r.commit(reservation, items).await,
        }
    }

    /// Returns a sold reservation's units to stock once (a refund);
    /// `not_sold` when it was never sold.
    pub async fn return_sold(
        &self,
        reservation: &str,
        items: &[OrderLine],
    ) -> Result<Value, ActivityError> {
        match self {
            Stock::Embedded(l) => l.return_sold(reservation).await,
            Stock::Redis(r) => r.return_sold(reservation, items).await,
        }
    }

    /// Reservations past their deadline and still held, at most `limit`
    /// (per SKU on Redis). Nothing changes: see [`Stock::settle`].
    pub async fn expired(&self, now_ms: u64, limit: usize) -> Result<Expired, StockError> {
        match self {
            Stock::Embedded(l) => l.expired(now_ms, limit),
            Stock::Redis(r) => r.expired(now_ms, limit).await,
        }
    }

    /// Settles what [`Stock::expired`] found: a reservation whose saga
    /// `lives` gets the deadline `keep_until_ms`; any other is reclaimed
    /// (its units go back to `available`). One that changed meanwhile is
    /// left alone.
    pub async fn settle(
        &self,
        expired: &Expired,
        lives: &(dyn Fn(&str) -> bool + Sync),
        now_ms: u64,
        keep_until_ms: u64,
    ) -> Result<Settled, StockError> {
        match self {
            Stock::Embedded(l) => l.settle(expired, lives, now_ms, keep_until_ms),
            Stock::Redis(r) => r.settle(expired, lives, now_ms, keep_until_ms).await,
        }
    }

    /// Each SKU's counts, sorted by SKU: one read per SKU (an operator
    /// view, polled by the dashboard; never the checkout path).
    pub async fn levels(&self) -> Result<Vec<SkuLevel>, StockError> {
        match self {
            Stock::Embedded(l) => l.levels(),
            Stock::Redis(r) => r.levels().await,
        }
    }

    /// Every line of every reservation that holds or held units, sorted by
    /// reservation then SKU (tombstones, which never held any, are left
    /// out). Reads the whole ledger: an operator view (`reconcile`), never
    /// the checkout path.
    pub async fn reservations(&self) -> Result<Vec<ReservationLine>, StockError> {
        let mut lines = match self {
            Stock::Embedded(l) => l.reservations()?,
            Stock::Redis(r) => r.reservations().await?,
        };
        lines.sort_by(|a, b| (&a.reservation, &a.sku).cmp(&(&b.reservation, &b.sku)));
        Ok(lines)
    }

    /// Totals for invariant checks.
    pub async fn snapshot(&self) -> Result<StockSnapshot, StockError> {
        match self {
            Stock::Embedded(l) => l.snapshot(),
            Stock::Redis(r) => r.snapshot().await,
        }
    }
}

/// Registers `stock.reserve`, `stock.release`, `stock.commit` and
/// `stock.return` (a refund gives sold units back) over
/// `stock` (an `Arc<StockLedger>`, an `Arc<RedisStock>` or a [`Stock`]);
/// reservations hold for `reservation_ttl_ms`.
pub fn register(registry: &mut Registry, stock: impl Into<Stock>, reservation_ttl_ms: u64) {
    let stock: Stock = stock.into();
    let s = stock.clone();
    registry.register("stock.reserve", move |call| {
        let s = s.clone();
        async move {
            let order = Order::from_call(&call)?;
            s.reserve(
                &saga_id(&call)?,
                &order.items,
                now_ms() + reservation_ttl_ms,
            )
            .await
        }
    });
    let s = stock.clone();
    registry.register("stock.release", move |call| {
        let s = s.clone();
        async move {
            let order = Order::from_call(&call)?;
            s.release(&saga_id(&call)?, &order.items).await
        }
    });
    let s = stock.clone();
    registry.register("stock.commit", move |call| {
        let s = s.clone();
        async move {
            let order = Order::from_call(&call)?;
            s.commit(&saga_id(&call)?, &order.items).await
        }
    });
    registry.register("stock.return", move |call| {
        let s = stock.clone();
        async move {
            let order = Order::from_call(&call)?;
            s.return_sold(&reservation_of(&call, &order)?, &order.items)
                .await
        }
    });
}
