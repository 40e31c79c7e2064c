//! One order-store suite, two backends: every test function below runs
//! against the embedded SQLite store and against Cosmos DB through the SDK's
//! in-process emulator (`__internal_in_memory_emulator`, a dev-dependency
//! feature: the whole SDK pipeline runs, only the HTTP I/O is replaced).
//! Plus the Cosmos-only behaviour: a 429 surfaces as retryable with the
//! server's retry-after, and the adapter succeeds once the throttling stops.

use azure_core::http::{StatusCode, Url};
use azure_data_cosmos::fault_injection::{
    CustomResponseBuilder, FaultInjectionConditionBuilder, FaultInjectionResultBuilder,
    FaultInjectionRule, FaultInjectionRuleBuilder, FaultOperationType,
};
use azure_data_cosmos::options::Region;
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClientBuilder, CosmosRuntimeBuilder, RoutingStrategy,
};
use azure_data_cosmos_driver::in_memory_emulator::{
    ConsistencyLevel, ContainerConfig, InMemoryEmulatorHttpClient, VirtualAccountConfig,
    VirtualRegion,
};
use sagaflow_activities::order::{Order, OrderLine};
use sagaflow_activities::orders::cosmos::throttle_options;
use sagaflow_activities::orders::{CosmosOrders, OrderDoc, OrderStore, Orders, OrdersSnapshot};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const GATEWAY: &str = "https://eastus.emulator.local";

fn unique(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn embedded(name: &str) -> Orders {
    let dir = std::env::temp_dir().join(format!("sagaflow-{}", unique(name)));
    std::fs::create_dir_all(&dir).unwrap();
    Orders::Embedded(Arc::new(OrderStore::open(&dir.join("orders.db")).unwrap()))
}

/// A Cosmos account in memory with database `sagaflow`, container `orders`
/// partitioned on `/id` over 4 physical partitions, reached through a client
/// whose requests first pass `rules`.
async fn cosmos_with(rules: Vec<Arc<FaultInjectionRule>>) -> Orders {
    let config = VirtualAccountConfig::new(vec![VirtualRegion::new(
        "East US",
        Url::parse(GATEWAY).unwrap(),
    )])
    .unwrap()
    .with_consistency(ConsistencyLevel::Session);
    let emulator = Arc::new(InMemoryEmulatorHttpClient::new(config));
    let store = emulator.store();
    store.create_database("sagaflow");
    store.create_container_with_config(
        "sagaflow",
        "orders",
        serde_json::from_value(serde_json::json!({"paths": ["/id"], "kind": "Hash", "version": 2}))
            .unwrap(),
        ContainerConfig::new()
            .with_partition_count(4)
            .build()
            .unwrap(),
    );
    let runtime = if rules.is_empty() {
        emulator.runtime_builder()
    } else {
        emulator.runtime_builder_with_fault_rules(rules)
    };
    let client = CosmosClientBuilder::new()
        .with_runtime(CosmosRuntimeBuilder::from(runtime).build().await.unwrap())
        // The SDK's own 429 retries off, so a throttle reaches the adapter.
        .with_default_operation_options(throttle_options(0))
        .build(
            AccountReference::with_authentication_key(
                GATEWAY.parse::<AccountEndpoint>().unwrap(),
                String::from("dGVzdGtleQ=="),
            ),
            RoutingStrategy::ProximityTo(Region::EAST_US),
        )
        .await
        .unwrap();
    let orders = CosmosOrders::open(&client, "sagaflow", "orders")
        .await
        .unwrap();
    Orders::Cosmos(Arc::new(orders))
}

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

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::embedded(stringify!($name))).await;
                }
            )*
        }
        mod cosmos_emulator {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::cosmos_with(Vec::new()).await).await;
                }
            )*
        }
    };
}

suite!(
    create_is_idempotent_and_cancel_leaves_a_tombstone,
    concurrent_creates_and_cancels_agree,
    list_shows_every_document_with_its_status,
);

async fn create_is_idempotent_and_cancel_leaves_a_tombstone(s: &Orders) {
    let r = s.create(&order("o1")).await.unwrap();
    assert_eq!(r["status"], "created");
    // A retry after a lost reply returns the same order and writes nothing.
    assert_eq!(s.create(&order("o1")).await.unwrap(), r);
    assert_eq!(
        s.snapshot().await.unwrap(),
        OrdersSnapshot {
            created: 1,
            cancelled: 0
        }
    );
    // A cancel that arrives before its create leaves a tombstone...
    assert_eq!(s.cancel("o2").await.unwrap()["status"], "cancelled");
    // ...so the late create fails as a business failure.
    let e = s.create(&order("o2")).await.unwrap_err();
    assert_eq!(e.kind, "order_cancelled");
    assert!(!e.retryable);
    s.cancel("o1").await.unwrap();
    s.cancel("o1").await.unwrap();
    assert_eq!(
        s.snapshot().await.unwrap(),
        OrdersSnapshot {
            created: 0,
            cancelled: 2
        }
    );
    assert_eq!(
        s.create(&order("o1")).await.unwrap_err().kind,
        "order_cancelled"
    );
}

/// Creates and cancels of the same orders racing each other (an attempt
/// and its retry, or a saga and its compensation): every order ends in one
/// state and the counts add up; the ETag guard loses no cancel.
async fn concurrent_creates_and_cancels_agree(s: &Orders) {
    const N: usize = 40;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let id = format!("race-{i}");
        for _ in 0..3 {
            let (s, o) = (s.clone(), order(&id));
            tasks.spawn(async move { s.create(&o).await.map(|_| ()) });
        }
        if i % 2 == 0 {
            for _ in 0..2 {
                let (s, id) = (s.clone(), id.clone());
                tasks.spawn(async move { s.cancel(&id).await.map(|_| ()) });
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(()) => {}
            Err(e) if e.kind == "order_cancelled" => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(
        s.snapshot().await.unwrap(),
        OrdersSnapshot {
            created: (N / 2) as i64,
            cancelled: (N / 2) as i64
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosmos_429_is_retryable_with_the_servers_retry_after() {
    let throttle = Arc::new(
        FaultInjectionRuleBuilder::new(
            "throttle-creates",
            FaultInjectionResultBuilder::new()
                .with_custom_response(
                    CustomResponseBuilder::new(StatusCode::TooManyRequests)
                        .with_header("x-ms-retry-after-ms", "1234")
                        .with_sub_status(3200)
                        .build(),
                )
                .build(),
        )
        .with_condition(
            FaultInjectionConditionBuilder::new()
                .with_operation_type(FaultOperationType::CreateItem)
                .build(),
        )
        .build(),
    );
    let s = cosmos_with(vec![throttle.clone()]).await;
    let e = s.create(&order("hot")).await.unwrap_err();
    assert!(e.retryable, "{e}");
    assert_eq!(e.kind, "cosmos_throttled", "{e}");
    assert!(e.message.contains("retry after 1234 ms"), "{e}");
    assert!(throttle.hit_count() >= 1);
    // The throttling stops: the saga's retry goes through, once.
    throttle.disable();
    s.create(&order("hot")).await.unwrap();
    s.create(&order("hot")).await.unwrap();
    assert_eq!(s.snapshot().await.unwrap().created, 1);
}

/// A rule answering every create with `status`.
fn creates_answer(name: &str, status: StatusCode) -> Arc<FaultInjectionRule> {
    Arc::new(
        FaultInjectionRuleBuilder::new(
            name,
            FaultInjectionResultBuilder::new()
                .with_custom_response(CustomResponseBuilder::new(status).build())
                .build(),
        )
        .with_condition(
            FaultInjectionConditionBuilder::new()
                .with_operation_type(FaultOperationType::CreateItem)
                .build(),
        )
        .build(),
    )
}

/// Before the fix these were retryable: a saga spent every attempt on a
/// request that could never succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosmos_400_401_403_are_not_retryable() {
    for (status, kind) in [
        (StatusCode::BadRequest, "cosmos_bad_request"),
        (StatusCode::Unauthorized, "cosmos_auth"),
        (StatusCode::Forbidden, "cosmos_auth"),
    ] {
        let rule = creates_answer("refuse-creates", status);
        let s = cosmos_with(vec![rule.clone()]).await;
        let e = s.create(&order("o1")).await.unwrap_err();
        assert!(!e.retryable, "{status:?}: {e}");
        assert_eq!(e.kind, kind, "{status:?}: {e}");
        assert!(e.message.contains("retrying cannot help"), "{e}");
        assert!(rule.hit_count() >= 1);
    }
}

/// Before the fix a 409 whose document could not be read was reported as
/// "order is already " (cancelled): a business failure that compensated a
/// good order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosmos_conflict_with_nothing_to_read_is_retryable() {
    let rule = creates_answer("phantom-conflict", StatusCode::Conflict);
    let s = cosmos_with(vec![rule.clone()]).await;
    let e = s.create(&order("o1")).await.unwrap_err();
    assert!(e.retryable, "{e}");
    assert_eq!(e.kind, "cosmos_conflict_unread", "{e}");
    // Once the conflict is gone the retry creates the order, once.
    rule.disable();
    s.create(&order("o1")).await.unwrap();
    assert_eq!(s.snapshot().await.unwrap().created, 1);
}

#[tokio::test]
async fn cosmos_connect_names_what_to_fix() {
    let e = match CosmosOrders::connect(sagaflow_activities::orders::CosmosOrdersConfig {
        endpoint: "not a url".into(),
        key: "k".into(),
        database: "sagaflow".into(),
        container: "orders".into(),
        region: "East US".into(),
        throttle_retries: 3,
    })
    .await
    {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.starts_with("cannot reach Cosmos DB container sagaflow/orders at not a url"),
        "{e}"
    );
    assert!(e.contains("[cosmos] endpoint_env"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosmos_cancel_rereads_after_a_412_and_loses_no_write() {
    // Another writer slips in between the cancel's read and its replace
    // once: the If-Match replace is refused (412) and the cancel starts over
    // from a fresh read.
    let collision = Arc::new(
        FaultInjectionRuleBuilder::new(
            "mid-air-collision",
            FaultInjectionResultBuilder::new()
                .with_custom_response(
                    CustomResponseBuilder::new(StatusCode::PreconditionFailed).build(),
                )
                .build(),
        )
        .with_condition(
            FaultInjectionConditionBuilder::new()
                .with_operation_type(FaultOperationType::ReplaceItem)
                .build(),
        )
        .with_hit_limit(1)
        .build(),
    );
    let s = cosmos_with(vec![collision.clone()]).await;
    s.create(&order("o1")).await.unwrap();
    assert_eq!(s.cancel("o1").await.unwrap()["status"], "cancelled");
    assert_eq!(collision.hit_count(), 1);
    assert_eq!(
        s.snapshot().await.unwrap(),
        OrdersSnapshot {
            created: 0,
            cancelled: 1
        }
    );
}

/// What `reconcile` reads: every document once, sorted by id, with its
/// status (a tombstone included: it is a document).
async fn list_shows_every_document_with_its_status(s: &Orders) {
    s.create(&order("o2")).await.unwrap();
    s.create(&order("o1")).await.unwrap();
    s.cancel("o1").await.unwrap();
    s.cancel("o3").await.unwrap();
    let doc = |id: &str, status: &str| OrderDoc {
        id: id.into(),
        status: status.into(),
    };
    assert_eq!(
        s.list().await.unwrap(),
        vec![
            doc("o1", "cancelled"),
            doc("o2", "created"),
            doc("o3", "cancelled")
        ]
    );
}
