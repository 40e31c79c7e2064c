//! The order store behind `orders.create`, `orders.cancel`: [`Orders`] is
//! either the embedded SQLite [`OrderStore`] (this file) or the Cosmos DB
//! adapter [`CosmosOrders`] ([`cosmos`]); one test suite
//! (`tests/order_backends.rs`) runs against both.
//!
//! The document id is the saga id (= order id).
//!
//! Invariants:
//! - create is idempotent: a second create of the same id returns the
//!   stored document and writes nothing;
//! - cancel is idempotent and leaves a tombstone when the order does not
//!   exist, so a create that arrives after its own compensation fails
//!   instead of resurrecting the order.

use crate::clock::now_ms;
use crate::group_commit::GroupCommit;
use crate::order::Order;
use crate::registry::Registry;
use crate::sqlite::open_store;
use rusqlite::{params, Connection, OptionalExtension};
use sagaflow_workflows::ActivityError;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub mod cosmos;

pub use cosmos::{CosmosOrders, CosmosOrdersConfig};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
";

/// Errors of the store's own plumbing.
#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    /// The SQLite file could not be opened or read.
    #[error("order store database error: {0}; check the data directory is writable")]
    Db(#[from] rusqlite::Error),
    /// The store's write thread could not start.
    #[error(
        "cannot start the order store's write thread: {0}; the system is out of threads or memory"
    )]
    Thread(String),
    /// The Cosmos DB account or container did not answer at start-up.
    #[error("cannot reach Cosmos DB container {database}/{container} at {endpoint}: {reason}; check [cosmos] endpoint_env and key_env, and that the container exists with partition key /id")]
    CosmosUnreachable {
        /// The account endpoint.
        endpoint: String,
        /// The database name.
        database: String,
        /// The container name.
        container: String,
        /// What the SDK said.
        reason: String,
    },
    /// A snapshot query failed; the caller may retry.
    #[error("Cosmos DB query on {container} failed: {reason}; check the account is reachable, then retry")]
    Cosmos {
        /// `database/container`.
        container: String,
        /// What the SDK said.
        reason: String,
    },
}

/// Counts by status, for invariant checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OrdersSnapshot {
    /// Orders created and not cancelled.
    pub created: i64,
    /// Orders cancelled (tombstones included).
    pub cancelled: i64,
}

/// One order document's id and status, as [`Orders::list`] reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OrderDoc {
    /// The order (= saga) id.
    pub id: String,
    /// `created` or `cancelled`.
    pub status: String,
}

/// The embedded order store. The saga's calls (create, cancel) are
/// written by a thread of the store's, many to a transaction
/// ([`GroupCommit`]); reads use a connection of their own.
pub struct OrderStore {
    conn: Mutex<Connection>,
    writes: GroupCommit,
}

fn db_err(e: rusqlite::Error) -> ActivityError {
    ActivityError::retryable("orders_db", format!("order store: {e}"))
}

impl OrderStore {
    /// Opens (creating if needed) the store file.
    pub fn open(path: &Path) -> Result<OrderStore, OrdersError> {
        let conn = open_store(path, SCHEMA)?;
        let writes = GroupCommit::start(open_store(path, SCHEMA)?, "sagaflow-orders", "orders_db")
            .map_err(|e| OrdersError::Thread(e.to_string()))?;
        Ok(OrderStore {
            conn: Mutex::new(conn),
            writes,
        })
    }

    /// Writes the order document once.
    pub async fn create(&self, order: &Order) -> Result<Value, ActivityError> {
        let order = order.clone();
        self.writes.run(move |tx| Self::create_in(tx, &order)).await
    }

    /// Cancels the order (tombstone if it was never created).
    pub async fn cancel(&self, order_id: &str) -> Result<Value, ActivityError> {
        let order_id = order_id.to_owned();
        self.writes
            .run(move |tx| Self::cancel_in(tx, &order_id))
            .await
    }

    /// [`Self::create`] inside the batch's transaction.
    fn create_in(tx: &Connection, order: &Order) -> Result<Value, ActivityError> {
        let status: Option<String> = tx
            .prepare_cached("SELECT status FROM orders WHERE id = ?1")
            .and_then(|mut s| s.query_row([&order.order_id], |r| r.get(0)).optional())
            .map_err(db_err)?;
        match status.as_deref() {
            Some("created") => {}
            Some(other) => {
                return Err(ActivityError::business(
                    "order_cancelled",
                    format!(
                        "order {} is already {other}; it cannot be created again",
                        order.order_id
                    ),
                ))
            }
            None => {
                let now = now_ms() as i64;
                let body = serde_json::to_string(order).expect("orders serialize");
                tx.prepare_cached(
                    "INSERT INTO orders (id, status, body, created_ms, updated_ms) VALUES (?1, 'created', ?2, ?3, ?3)",
                )
                .and_then(|mut s| s.execute(params![order.order_id, body, now]))
                .map_err(db_err)?;
            }
        }
        Ok(json!({"kind": "order", "order_id": order.order_id, "status": "created"}))
    }

    /// [`Self::cancel`] inside the batch's transaction.
    fn cancel_in(tx: &Connection, order_id: &str) -> Result<Value, ActivityError> {
        let now = now_ms() as i64;
        tx.prepare_cached(
            "INSERT INTO orders (id, status, body, created_ms, updated_ms) VALUES (?1, 'cancelled', '{}', ?2, ?2)
             ON CONFLICT (id) DO UPDATE SET status = 'cancelled', updated_ms = ?2",
        )
        .and_then(|mut s| s.execute(params![order_id, now]))
        .map_err(db_err)?;
        Ok(json!({"kind": "order", "order_id": order_id, "status": "cancelled"}))
    }

    /// Counts by status.
    pub fn snapshot(&self) -> Result<OrdersSnapshot, OrdersError> {
        snapshot(&self.conn.lock().expect("order store lock"))
    }

    /// Every document's id and status, sorted by id.
    pub fn list(&self) -> Result<Vec<OrderDoc>, OrdersError> {
        let conn = self.conn.lock().expect("order store lock");
        let mut statement = conn.prepare("SELECT id, status FROM orders ORDER BY id")?;
        let docs = statement
            .query_map([], |r| {
                Ok(OrderDoc {
                    id: r.get(0)?,
                    status: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<OrderDoc>>>()?;
        Ok(docs)
    }

    /// Reads the counts from a store file.
    pub fn read_snapshot(path: &Path) -> Result<OrdersSnapshot, OrdersError> {
        snapshot(&open_store(path, SCHEMA)?)
    }
}

fn snapshot(conn: &Connection) -> Result<OrdersSnapshot, OrdersError> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(status = 'created'), 0), COALESCE(SUM(status = 'cancelled'), 0) FROM orders",
        [],
        |r| {
            Ok(OrdersSnapshot {
                created: r.get(0)?,
                cancelled: r.get(1)?,
            })
        },
    )?)
}

/// The order store the deployment profile selects; both keep the same
/// documents with the same semantics. Cloning is cheap.
#[derive(Clone)]
pub enum Orders {
    /// The SQLite store in the data directory.
    Embedded(Arc<OrderStore>),
    /// The Cosmos DB adapter.
    Cosmos(Arc<CosmosOrders>),
}

impl From<Arc<OrderStore>> for Orders {
    fn from(store: Arc<OrderStore>) -> Orders {
        Orders::Embedded(store)
    }
}

impl From<Arc<CosmosOrders>> for Orders {
    fn from(cosmos: Arc<CosmosOrders>) -> Orders {
        Orders::Cosmos(cosmos)
    }
}

impl Orders {
    /// Whether the store answers now (the worker's `/readyz`).
    pub async fn ping(&self) -> Result<(), ActivityError> {
        match self {
            // A file in the data directory: it answers while the process runs.
            Orders::Embedded(_) => Ok(()),
            Orders::Cosmos(c) => c.ping().await,
        }
    }

    /// Writes the order once; a retry returns the existing order; an order
    /// cancelled first fails with `order_cancelled`.
    pub async fn create(&self, order: &Order) -> Result<Value, ActivityError> {
        match self {
            Orders::Embedded(s) => s.create(order).await,
            Orders::Cosmos(c) => c.create(order).await,
        }
    }

    /// Cancels the order (tombstone if it was never created). Idempotent.
    pub async fn cancel(&self, order_id: &str) -> Result<Value, ActivityError> {
        match self {
            Orders::Embedded(s) => s.cancel(order_id).await,
            Orders::Cosmos(c) => c.cancel(order_id).await,
        }
    }

    /// Counts by status.
    pub async fn snapshot(&self) -> Result<OrdersSnapshot, OrdersError> {
        match self {
            Orders::Embedded(s) => s.snapshot(),
            Orders::Cosmos(c) => c.snapshot().await,
        }
    }

    /// Every document's id and status, sorted by id. Reads the whole
    /// store: an operator view (`reconcile`), never the checkout path.
    pub async fn list(&self) -> Result<Vec<OrderDoc>, OrdersError> {
        let mut docs = match self {
            Orders::Embedded(s) => s.list()?,
            Orders::Cosmos(c) => c.list().await?,
        };
        docs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(docs)
    }
}

/// Registers `orders.create` and `orders.cancel` over `store` (an
/// `Arc<OrderStore>`, an `Arc<CosmosOrders>` or an [`Orders`]).
pub fn register(registry: &mut Registry, store: impl Into<Orders>) {
    let store: Orders = store.into();
    let s = store.clone();
    registry.register("orders.create", move |call| {
        let s = s.clone();
        async move { s.create(&Order::from_call(&call)?).await }
    });
    registry.register("orders.cancel", move |call| {
        let s = store.clone();
        async move { s.cancel(&Order::from_call(&call)?.order_id).await }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::OrderLine;

    fn order(id: &str) -> Order {
        Order {
            order_id: id.into(),
            customer: "c".into(),
            items: vec![OrderLine {
                sku: "A".into(),
                qty: 1,
            }],
            amount: 100,
            currency: "usd".into(),
            payment_method: "pm_card_visa".into(),
            refund: None,
            traceparent: None,
        }
    }

    #[tokio::test]
    async fn create_is_idempotent_and_cancel_leaves_a_tombstone() {
        let dir = std::env::temp_dir().join(format!("sagaflow-orders-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = OrderStore::open(&dir.join("orders.db")).unwrap();
        store.create(&order("o1")).await.unwrap();
        store.create(&order("o1")).await.unwrap();
        assert_eq!(
            store.snapshot().unwrap(),
            OrdersSnapshot {
                created: 1,
                cancelled: 0
            }
        );
        store.cancel("o2").await.unwrap();
        let e = store.create(&order("o2")).await.unwrap_err();
        assert_eq!(e.kind, "order_cancelled");
        store.cancel("o1").await.unwrap();
        store.cancel("o1").await.unwrap();
        assert_eq!(
            store.snapshot().unwrap(),
            OrdersSnapshot {
                created: 0,
                cancelled: 2
            }
        );
    }
}
