//! The Cosmos DB order adapter: the same store as [`super::OrderStore`] in
//! a Cosmos DB container, through `azure_data_cosmos`.
//!
//! Not responsible for: provisioning the database or container (an
//! operator creates them; [`CosmosOrders::connect`] checks they are there),
//! nor for choosing the backend (the worker does, from `[profile] orders`).
//!
//! # Documents
//!
//! One document per order, `id` = the order id (= the saga id):
//! `{"id", "status": "created" | "cancelled", "order": {...} | null,
//! "created_ms", "updated_ms"}`; a cancel of an order never created writes a
//! tombstone with `"order": null`.
//!
//! # Partition key: `/id`
//!
//! The container is partitioned on the order id. During a flash sale the
//! writes are many orders for a few SKUs: keyed by SKU (or by day, or by
//! shop) they would all land in one logical partition, which lives on one
//! physical partition and is capped there (about 10,000 RU/s and 20 GB), so
//! the sale would be throttled however much throughput the account has.
//! Keyed by customer, a few big buyers or bots would do the same. Order ids
//! are unique and random-looking, so the writes spread evenly across every
//! physical partition, and every operation here is a point read or write
//! that knows its key (the cheapest Cosmos operations). The cost: listing a
//! customer's orders is a cross-partition query; that is an operator or
//! reporting view, not the checkout path (a change-feed projection would
//! serve it if it became hot).
//!
//! # Invariants (the same as the embedded store's)
//!
//! - create is idempotent: the document is created with a plain create (no
//!   upsert); a 409 Conflict means an earlier attempt got there, so the
//!   stored document is read and returned, and nothing is written; a 409
//!   whose document cannot be read (yet) is retryable, never taken for a
//!   cancelled order;
//! - cancel is a read, then a replace guarded by the document's ETag
//!   (`If-Match`); a 412 means someone wrote in between, so it reads again
//!   and retries; cancelling an order that does not exist creates a
//!   tombstone, so a create that arrives after its own compensation fails
//!   with `order_cancelled` instead of resurrecting the order;
//! - a 429 (throttled) is retryable; the SDK first retries it itself a few
//!   times, honouring the server's `x-ms-retry-after-ms`, then the error
//!   carries that wait in its message and the saga's retry policy takes over;
//! - a 400, 401 or 403 is not retryable (`cosmos_bad_request`,
//!   `cosmos_auth`): the same request fails the same way every time.

use super::{OrdersError, OrdersSnapshot};
use crate::clock::now_ms;
use crate::order::Order;
use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::options::{
    ItemWriteOptions, OperationOptionsBuilder, Precondition, Region, ThrottlingRetryOptionsBuilder,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosError, FeedScope, Query, RoutingStrategy,
};
use futures::TryStreamExt;
use sagaflow_workflows::ActivityError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// Read-then-replace rounds a cancel tries before giving up (retryable):
/// more than a handful means something else keeps rewriting the order.
const MAX_CANCEL_ROUNDS: usize = 8;

/// Where the orders live and how hard the SDK retries a throttled request.
#[derive(Clone)]
pub struct CosmosOrdersConfig {
    /// Account endpoint, e.g. `https://myaccount.documents.azure.com:443/`
    /// (read from the variable named by `[cosmos] endpoint_env`).
    pub endpoint: String,
    /// Account key (read from the variable named by `[cosmos] key_env`).
    pub key: String,
    /// Database name.
    pub database: String,
    /// Container name; its partition key must be `/id`.
    pub container: String,
    /// Azure region the worker runs in or nearest to, e.g. "East US": the SDK
    /// routes to the account's regions by proximity to it.
    pub region: String,
    /// How many times the SDK retries a 429 itself (waiting what the server
    /// asks) before the activity fails as retryable. 0 leaves every retry to
    /// the saga's retry policy.
    pub throttle_retries: u32,
}

/// The account key never shows: `{:?}` prints it redacted, as logs and
/// errors print configs (`[cosmos] key_env` holds a secret).
impl std::fmt::Debug for CosmosOrdersConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosOrdersConfig")
            .field("endpoint", &self.endpoint)
            .field("key", &"<redacted>")
            .field("database", &self.database)
            .field("container", &self.container)
            .field("region", &self.region)
            .field("throttle_retries", &self.throttle_retries)
            .finish()
    }
}

/// The stored document.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderDoc {
    id: String,
    status: String,
    #[serde(default)]
    order: Option<Order>,
    created_ms: u64,
    updated_ms: u64,
}

/// The Cosmos DB order store. Cheap to share behind an `Arc`.
pub struct CosmosOrders {
    container: ContainerClient,
    /// `database/container`, for messages.
    name: String,
}

impl CosmosOrders {
    /// Connects and checks the container is there, so a wrong endpoint, key
    /// or name shows at start-up rather than at the first order.
    pub async fn connect(config: CosmosOrdersConfig) -> Result<CosmosOrders, OrdersError> {
        let unreachable = |reason: String| OrdersError::CosmosUnreachable {
            endpoint: config.endpoint.clone(),
            database: config.database.clone(),
            container: config.container.clone(),
            reason,
        };
        let endpoint: AccountEndpoint = config
            .endpoint
            .parse()
            .map_err(|e| unreachable(format!("the endpoint is not a valid URL ({e})")))?;
        let account = AccountReference::with_authentication_key(endpoint, config.key.clone());
        let client = CosmosClient::builder()
            .with_default_operation_options(throttle_options(config.throttle_retries))
            .build(
                account,
                RoutingStrategy::ProximityTo(Region::from(config.region.clone())),
            )
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        CosmosOrders::open(&client, &config.database, &config.container)
            .await
            .map_err(|e| match e {
                OrdersError::CosmosUnreachable { reason, .. } => unreachable(reason),
                other => other,
            })
    }

    /// Opens the container through an existing client (tests build one over
    /// the SDK's in-process emulator; see [`throttle_options`] for the
    /// client options [`CosmosOrders::connect`] uses).
    pub async fn open(
        client: &CosmosClient,
        database: &str,
        container: &str,
    ) -> Result<CosmosOrders, OrdersError> {
        let name = format!("{database}/{container}");
        let container_client = client
            .database_client(database)
            .container_client(container, None)
            .await
            .map_err(|e| OrdersError::CosmosUnreachable {
                endpoint: "the configured account".into(),
                database: database.into(),
                container: container.into(),
                reason: e.to_string(),
            })?;
        Ok(CosmosOrders {
            container: container_client,
            name,
        })
    }

    fn error(&self, e: CosmosError) -> ActivityError {
        cosmos_error(&self.name, e)
    }

    /// Whether the container answers now (the worker's `/readyz`): a
    /// point read of an id no order has, which costs one request unit.
    pub async fn ping(&self) -> Result<(), ActivityError> {
        self.read("sagaflow-readyz").await.map(|_| ())
    }

    /// Writes the order document once; a retry returns the existing order.
    pub async fn create(&self, order: &Order) -> Result<Value, ActivityError> {
        let id = order.order_id.as_str();
        let now = now_ms();
        let doc = OrderDoc {
            id: id.to_owned(),
            status: "created".into(),
            order: Some(order.clone()),
            created_ms: now,
            updated_ms: now,
        };
        match self
            .container
            .create_item(id.to_owned(), id, &doc, None)
            .await
        {
            Ok(_) => {}
            Err(e) if e.status().is_conflict() => match self.read(id).await? {
                Some((doc, _)) if doc.status == "created" => {}
                Some((doc, _)) => {
                    return Err(ActivityError::business(
                        "order_cancelled",
                        format!(
                            "order {id} is already {}; it cannot be created again",
                            doc.status
                        ),
                    ))
                }
                // The conflicting write is not readable yet (or was a
                // conflict on something else): nothing says the order was
                // cancelled, so the step tries again.
                None => {
                    return Err(ActivityError::retryable(
                        "cosmos_conflict_unread",
                        format!(
                            "Cosmos DB answered 409 Conflict creating order {id} in {}, but reading it found no document; the step will be retried",
                            self.name
                        ),
                    ))
                }
            },
            Err(e) => return Err(self.error(e)),
        }
        Ok(json!({"kind": "order", "order_id": id, "status": "created"}))
    }

    /// Cancels the order (tombstone if it was never created). Idempotent.
    pub async fn cancel(&self, order_id: &str) -> Result<Value, ActivityError> {
        let done = Ok(json!({"kind": "order", "order_id": order_id, "status": "cancelled"}));
        for _ in 0..MAX_CANCEL_ROUNDS {
            let now = now_ms();
            match self.read(order_id).await? {
                None => {
                    let tombstone = OrderDoc {
                        id: order_id.to_owned(),
                        status: "cancelled".into(),
                        order: None,
                        created_ms: now,
                        updated_ms: now,
                    };
                    match self
                        .container
                        .create_item(order_id.to_owned(), order_id, &tombstone, None)
                        .await
                    {
                        Ok(_) => return done,
                        // A create won the race: read it again and cancel it.
                        Err(e) if e.status().is_conflict() => continue,
                        Err(e) => return Err(self.error(e)),
                    }
                }
                Some((doc, _)) if doc.status == "cancelled" => return done,
                Some((mut doc, if_match)) => {
                    doc.status = "cancelled".into();
                    doc.updated_ms = now;
                    let options =
                        if_match.map(|p| ItemWriteOptions::default().with_precondition(p));
                    match self
                        .container
                        .replace_item(order_id.to_owned(), order_id, &doc, options)
                        .await
                    {
                        Ok(_) => return done,
                        // Someone wrote in between (412) or deleted it (404):
                        // read again.
                        Err(e)
                            if e.status().is_precondition_failed() || e.status().is_not_found() =>
                        {
                            continue
                        }
                        Err(e) => return Err(self.error(e)),
                    }
                }
            }
        }
        Err(ActivityError::retryable(
            "cosmos_contended",
            format!(
                "order {order_id} in {} changed under {MAX_CANCEL_ROUNDS} cancel attempts in a row; the step will be retried",
                self.name
            ),
        ))
    }

    /// The document and an `If-Match` on its ETag, or `None` when there is
    /// none.
    async fn read(
        &self,
        id: &str,
    ) -> Result<Option<(OrderDoc, Option<Precondition>)>, ActivityError> {
        match self.container.read_item(id.to_owned(), id, None).await {
            Ok(response) => {
                let etag = response
                    .headers()
                    .etag()
                    .cloned()
                    .map(Precondition::if_match);
                let doc: OrderDoc = response
                    .into_body()
                    .into_single()
                    .map_err(|e| self.error(e))?;
                Ok(Some((doc, etag)))
            }
            Err(e) if e.status().is_not_found() => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Counts by status. The SDK (1.0.0) refuses aggregates across
    /// partitions ("unsupported query feature"), so this reads every
    /// document's status and counts here: one query, cost proportional to
    /// the number of orders. An operator and test view, never the checkout
    /// path.
    pub async fn snapshot(&self) -> Result<OrdersSnapshot, OrdersError> {
        let failed = |e: CosmosError| OrdersError::Cosmos {
            container: self.name.clone(),
            reason: e.to_string(),
        };
        let statuses: Vec<String> = self
            .container
            .query_items::<String>(
                Query::from("SELECT VALUE c.status FROM c"),
                FeedScope::full_container(),
                None,
            )
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)?;
        let count = |wanted: &str| statuses.iter().filter(|s| *s == wanted).count() as i64;
        Ok(OrdersSnapshot {
            created: count("created"),
            cancelled: count("cancelled"),
        })
    }

    /// Every document's id and status: one cross-partition query, cost
    /// proportional to the number of orders (see [`Self::snapshot`]).
    pub async fn list(&self) -> Result<Vec<super::OrderDoc>, OrdersError> {
        let failed = |e: CosmosError| OrdersError::Cosmos {
            container: self.name.clone(),
            reason: e.to_string(),
        };
        self.container
            .query_items::<super::OrderDoc>(
                Query::from("SELECT c.id, c.status FROM c"),
                FeedScope::full_container(),
                None,
            )
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)
    }
}

/// The client-wide options [`CosmosOrders::connect`] uses: the SDK retries
/// a 429 `throttle_retries` times within at most 2 s of waiting, then hands
/// it to the saga's retry policy.
pub fn throttle_options(throttle_retries: u32) -> azure_data_cosmos::options::OperationOptions {
    OperationOptionsBuilder::new()
        .with_throttling_retry_options(
            ThrottlingRetryOptionsBuilder::new()
                .with_max_retry_count(throttle_retries)
                .with_max_retry_wait_time(Duration::from_secs(2))
                .build(),
        )
        .build()
}

/// Maps an SDK error to an activity error. A request Cosmos refuses as
/// malformed (400) or unauthorized (401, 403) fails the same way however
/// often it is sent, so it is not retryable: the saga compensates or parks
/// at once instead of spending its retries. Everything else is retryable.
/// Business outcomes (an order already cancelled) are decided above from
/// documents, never from status codes.
fn cosmos_error(container: &str, e: CosmosError) -> ActivityError {
    let status = e.status();
    if status.is_throttled() {
        let retry_after = e
            .response()
            .and_then(|r| r.headers().retry_after_ms)
            .map(|ms| format!("{ms} ms"))
            .unwrap_or_else(|| "an unspecified time".into());
        return ActivityError::retryable(
            "cosmos_throttled",
            format!(
                "Cosmos DB throttled a request to {container} (429); the server asks to retry after {retry_after}; raise the container's RU/s if this persists"
            ),
        );
    }
    let code = u16::from(status.status_code());
    let refused = |kind: &str, hint: &str| {
        ActivityError::business(
            kind,
            format!("Cosmos DB refused a request to {container}: {e}; {hint}"),
        )
    };
    match code {
        400 => {
            return refused(
                "cosmos_bad_request",
                "the request is malformed (an order id Cosmos cannot hold?); retrying cannot help",
            )
        }
        401 | 403 => {
            return refused(
                "cosmos_auth",
                "check the key in the variable named by [cosmos] key_env and its permissions on the container; retrying cannot help",
            )
        }
        _ => {}
    }
    let (kind, hint) = match code {
        404 => (
            "cosmos_not_found",
            "check [cosmos] database and container exist",
        ),
        _ => ("cosmos_unavailable", "the step will be retried"),
    };
    ActivityError::retryable(
        kind,
        format!("Cosmos DB request to {container} failed: {e}; {hint}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_account_key() {
        let config = CosmosOrdersConfig {
            endpoint: "https://acct.documents.azure.com:443/".into(),
            key: "c2VjcmV0LWFjY291bnQta2V5".into(),
            database: "shop".into(),
            container: "orders".into(),
            region: "East US".into(),
            throttle_retries: 3,
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("c2VjcmV0LWFjY291bnQta2V5"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("shop"),
            "{shown}"
        );
    }
}
