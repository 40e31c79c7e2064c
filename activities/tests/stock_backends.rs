//! One stock suite, two backends: every test function below runs against the
//! embedded SQLite ledger and against the real Redis server
//! (`SAGAFLOW_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`), each Redis
//! test under its own random key prefix so tests run in parallel.
//!
//! A Redis test fails (never skips) when no server answers, naming the
//! command that starts one.

use redis::AsyncCommands;
use sagaflow_activities::order::OrderLine;
use sagaflow_activities::stock::{
    LineState, RedisStock, RedisStockConfig, ReservationLine, Stock, StockLedger,
};
use sagaflow_workflows::ActivityError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FAR: u64 = u64::MAX / 2;

fn redis_url() -> String {
    std::env::var("SAGAFLOW_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{name}-{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A backend under test and what to clean up after it.
struct Backend {
    stock: Stock,
    redis_prefix: Option<String>,
}

impl Backend {
    fn embedded(name: &str) -> Backend {
        let dir = std::env::temp_dir().join(format!("sagaflow-{}", unique(name)));
        std::fs::create_dir_all(&dir).unwrap();
        let ledger = StockLedger::open(&dir.join("stock.db")).unwrap();
        Backend {
            stock: Stock::Embedded(Arc::new(ledger)),
            redis_prefix: None,
        }
    }

    async fn redis(name: &str) -> Backend {
        let prefix = format!("sagaflow-test:{}:", unique(name));
        let config = RedisStockConfig {
            url: redis_url(),
            key_prefix: prefix.clone(),
        };
        let redis = RedisStock::connect_with(config).await.unwrap_or_else(|e| {
            panic!("{e}\n(the Redis tests need a server: `redis-server --daemonize yes`, or set SAGAFLOW_TEST_REDIS_URL)")
        });
        Backend {
            stock: Stock::Redis(Arc::new(redis)),
            redis_prefix: Some(prefix),
        }
    }

    /// Deletes this test's keys (left in place when the test panicked, for a
    /// look with redis-cli).
    async fn finish(self) {
        let Some(prefix) = self.redis_prefix else {
            return;
        };
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = {
            let mut iter: redis::AsyncIter<String> =
                conn.scan_match(format!("{prefix}*")).await.unwrap();
            let mut keys = Vec::new();
            while let Some(k) = iter.next_item().await {
                keys.push(k.unwrap());
            }
            keys
        };
        if !keys.is_empty() {
            let _: i64 = conn.del(keys).await.unwrap();
        }
    }
}

fn lines(items: &[(&str, u32)]) -> Vec<OrderLine> {
    items
        .iter()
        .map(|(sku, qty)| OrderLine {
            sku: (*sku).into(),
            qty: *qty,
        })
        .collect()
}

fn one(sku: &str) -> Vec<OrderLine> {
    lines(&[(sku, 1)])
}

fn kind(r: Result<serde_json::Value, ActivityError>) -> String {
    let e = r.expect_err("expected a failure");
    assert!(!e.retryable, "{e} should be a business failure");
    e.kind
}

async fn counts(stock: &Stock) -> (i64, i64, i64) {
    let s = stock.snapshot().await.unwrap();
    assert!(!s.inconsistent, "books do not add up: {s:?}");
    assert_eq!(s.available + s.reserved + s.sold, s.initial, "{s:?}");
    (s.available, s.reserved, s.sold)
}

/// What the reaper does when every saga asked about has ended: reclaims
/// every reservation past its deadline; how many.
async fn reclaim_dead(
    s: &Stock,
    now_ms: u64,
) -> Result<usize, sagaflow_activities::stock::StockError> {
    let expired = s.expired(now_ms, 100).await?;
    Ok(s.settle(&expired, &|_| false, now_ms, 0).await?.reclaimed)
}

/// A reservation whose saga still lives is never reclaimed, however late:
/// the reaper renews its deadline, another buyer cannot take its units, and
/// its commit (after the customer was charged) goes through. Once the saga
/// has ended, the next pass reclaims what is still held.
async fn a_live_sagas_reservation_is_kept_past_its_deadline(s: &Stock) {
    s.seed(&[("A".into(), 1), ("B".into(), 3)]).await.unwrap();
    let order = lines(&[("A", 1), ("B", 2)]);
    s.reserve("slow", &order, 1_000).await.unwrap();
    s.reserve("gone", &one("B"), 1_000).await.unwrap();
    let expired = s.expired(2_000, 100).await.unwrap();
    assert_eq!(expired.sagas(), ["gone", "slow"]);
    let settled = s
        .settle(&expired, &|id| id == "slow", 2_000, 60_000)
        .await
        .unwrap();
    assert_eq!((settled.reclaimed, settled.kept), (1, 1));
    assert_eq!(counts(s).await, (1, 3, 0));
    // Renewed: not past its deadline until 60 s.
    assert!(s.expired(59_999, 100).await.unwrap().is_empty());
    assert_eq!(
        kind(s.reserve("fast", &one("A"), FAR).await),
        "out_of_stock"
    );
    s.commit("slow", &order).await.unwrap();
    assert_eq!(counts(s).await, (1, 0, 3));
    // A settle that saw a line before it changed leaves it alone.
    s.reserve("late", &one("B"), 1_000).await.unwrap();
    let stale = s.expired(2_000, 100).await.unwrap();
    s.commit("late", &one("B")).await.unwrap();
    let settled = s.settle(&stale, &|_| false, 2_000, 0).await.unwrap();
    assert_eq!(settled, Default::default());
    assert_eq!(counts(s).await, (0, 0, 4));
}

/// Runs each listed test function against both backends.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::Backend::embedded(stringify!($name));
                    super::$name(&b.stock).await;
                    b.finish().await;
                }
            )*
        }
        mod redis_server {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::Backend::redis(stringify!($name)).await;
                    super::$name(&b.stock).await;
                    b.finish().await;
                }
            )*
        }
    };
}

suite!(
    reserve_is_idempotent_and_stops_at_zero,
    commit_and_release_are_idempotent,
    release_before_reserve_blocks_the_late_reserve,
    expired_reservations_are_reclaimed_and_a_late_commit_retakes,
    late_commit_after_reclaim_when_sold_out_is_a_business_failure,
    multi_line_reserve_is_all_or_nothing,
    multi_line_commit_and_release,
    multi_line_late_commit_sells_nothing_when_one_line_is_sold_out,
    lines_of_the_same_sku_add_up,
    commit_of_an_unknown_reservation_fails,
    concurrent_flash_sale_sells_exactly_the_stock,
    a_refund_returns_sold_units_once,
    a_live_sagas_reservation_is_kept_past_its_deadline,
    reservations_list_every_line_in_its_state,
    a_re_run_finds_its_reservation_held_and_takes_nothing,
    concurrent_attempts_of_one_reserve_hold_it_once,
);

/// Issue 29: a reserve run again (a crash re-run on Temporal, even after
/// the capture and the commit) finds its whole reservation held and
/// succeeds without touching it, in a sold-out sale.
async fn a_re_run_finds_its_reservation_held_and_takes_nothing(s: &Stock) {
    s.seed(&[("A".into(), 1), ("B".into(), 1)]).await.unwrap();
    let ab = lines(&[("A", 1), ("B", 1)]);
    s.reserve("s1", &ab, FAR).await.unwrap();
    assert_eq!(kind(s.reserve("s2", &one("A"), FAR).await), "out_of_stock");
    let again = s.reserve("s1", &ab, FAR).await.unwrap();
    assert_eq!(again["state"], "reserved");
    assert_eq!(counts(s).await, (0, 2, 0));
    s.commit("s1", &ab).await.unwrap();
    let after_commit = s.reserve("s1", &ab, FAR).await.unwrap();
    assert_eq!(after_commit["state"], "committed");
    assert_eq!(
        counts(s).await,
        (0, 0, 2),
        "the re-run sold or freed nothing"
    );
}

/// Attempts of one saga's reserve that overlap (a timed-out attempt still
/// running beside its retry, two workers after a pause) hold the
/// reservation once, and none undoes what another holds.
async fn concurrent_attempts_of_one_reserve_hold_it_once(s: &Stock) {
    s.seed(&[("A".into(), 3), ("B".into(), 3)]).await.unwrap();
    let ab = lines(&[("A", 1), ("B", 1)]);
    for round in 0..20i64 {
        let id = format!("s{round}");
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (s, id, ab) = (s.clone(), id.clone(), ab.clone());
            attempts.spawn(async move { s.reserve(&id, &ab, FAR).await });
        }
        let mut failures = Vec::new();
        while let Some(r) = attempts.join_next().await {
            if let Err(e) = r.unwrap() {
                failures.push(e);
            }
        }
        if round < 3 {
            assert!(failures.is_empty(), "round {round}: {failures:?}");
            let held = 2 * (round + 1);
            assert_eq!(counts(s).await, (6 - held, held, 0), "round {round}");
        } else {
            assert!(
                failures.len() == 4 && failures.iter().all(|e| e.kind == "out_of_stock"),
                "round {round}: {failures:?}"
            );
        }
    }
    // Three sagas hold A and B each; the sold-out rounds hold nothing.
    let held: Vec<(String, String)> = s
        .reservations()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.state == LineState::Reserved)
        .map(|l| (l.reservation, l.sku))
        .collect();
    assert_eq!(held.len(), 6, "{held:?}");
    assert_eq!(counts(s).await, (0, 6, 0));
}

async fn reserve_is_idempotent_and_stops_at_zero(s: &Stock) {
    s.seed(&[("A".into(), 2)]).await.unwrap();
    let r = s.reserve("s1", &one("A"), FAR).await.unwrap();
    assert_eq!(r["state"], "reserved");
    // A retry after a lost reply takes nothing more.
    s.reserve("s1", &one("A"), FAR).await.unwrap();
    s.reserve("s2", &one("A"), FAR).await.unwrap();
    assert_eq!(kind(s.reserve("s3", &one("A"), FAR).await), "out_of_stock");
    assert_eq!(counts(s).await, (0, 2, 0));
    assert_eq!(kind(s.reserve("s4", &one("B"), FAR).await), "unknown_sku");
}

async fn commit_and_release_are_idempotent(s: &Stock) {
    s.seed(&[("A".into(), 2)]).await.unwrap();
    s.reserve("s1", &one("A"), FAR).await.unwrap();
    s.reserve("s2", &one("A"), FAR).await.unwrap();
    s.commit("s1", &one("A")).await.unwrap();
    s.commit("s1", &one("A")).await.unwrap();
    assert_eq!(
        s.release("s2", &one("A")).await.unwrap()["state"],
        "released"
    );
    s.release("s2", &one("A")).await.unwrap();
    assert_eq!(counts(s).await, (1, 0, 1));
    assert_eq!(s.snapshot().await.unwrap().committed_reservations, 1);
    // Releasing a sale is refused and changes nothing.
    assert_eq!(kind(s.release("s1", &one("A")).await), "already_committed");
    assert_eq!(counts(s).await, (1, 0, 1));
    // A retried reserve of a committed reservation reports it, takes nothing.
    assert_eq!(
        s.reserve("s1", &one("A"), FAR).await.unwrap()["state"],
        "committed"
    );
    assert_eq!(counts(s).await, (1, 0, 1));
    // A released reservation cannot be committed.
    assert_eq!(kind(s.commit("s2", &one("A")).await), "reservation_closed");
}

async fn release_before_reserve_blocks_the_late_reserve(s: &Stock) {
    s.seed(&[("A".into(), 2)]).await.unwrap();
    let r = s.release("s1", &one("A")).await.unwrap();
    assert_eq!(r["state"], "nothing_to_release");
    assert_eq!(
        kind(s.reserve("s1", &one("A"), FAR).await),
        "reservation_closed"
    );
    assert_eq!(counts(s).await, (2, 0, 0));
}

async fn expired_reservations_are_reclaimed_and_a_late_commit_retakes(s: &Stock) {
    s.seed(&[("A".into(), 2)]).await.unwrap();
    s.reserve("s1", &one("A"), 1_000).await.unwrap();
    s.reserve("s2", &one("A"), FAR).await.unwrap();
    assert_eq!(reclaim_dead(s, 2_000).await.unwrap(), 1);
    assert_eq!(reclaim_dead(s, 2_000).await.unwrap(), 0);
    assert_eq!(counts(s).await, (1, 1, 0));
    // A late commit re-takes the stock while some is left...
    s.commit("s1", &one("A")).await.unwrap();
    s.commit("s1", &one("A")).await.unwrap();
    assert_eq!(counts(s).await, (0, 1, 1));
    assert_eq!(s.snapshot().await.unwrap().committed_reservations, 1);
}

async fn late_commit_after_reclaim_when_sold_out_is_a_business_failure(s: &Stock) {
    s.seed(&[("A".into(), 1)]).await.unwrap();
    s.reserve("slow", &one("A"), 1_000).await.unwrap();
    assert_eq!(
        reclaim_dead(s, 1_000).await.unwrap(),
        0,
        "deadline is exclusive"
    );
    assert_eq!(reclaim_dead(s, 1_001).await.unwrap(), 1);
    assert_eq!(counts(s).await, (1, 0, 0));
    // Another buyer takes and buys the reclaimed unit.
    s.reserve("fast", &one("A"), FAR).await.unwrap();
    s.commit("fast", &one("A")).await.unwrap();
    // ...so the late commit fails as a business failure, every time, and
    // the unit is sold once.
    for _ in 0..2 {
        assert_eq!(
            kind(s.commit("slow", &one("A")).await),
            "reservation_expired"
        );
    }
    assert_eq!(counts(s).await, (0, 0, 1));
    assert_eq!(s.snapshot().await.unwrap().committed_reservations, 1);
    // Its compensation then changes nothing.
    s.release("slow", &one("A")).await.unwrap();
    assert_eq!(counts(s).await, (0, 0, 1));
}

async fn multi_line_reserve_is_all_or_nothing(s: &Stock) {
    s.seed(&[("A".into(), 5), ("B".into(), 1)]).await.unwrap();
    let order = lines(&[("A", 2), ("B", 1)]);
    s.reserve("s1", &order, FAR).await.unwrap();
    s.reserve("s1", &order, FAR).await.unwrap();
    assert_eq!(counts(s).await, (3, 3, 0));
    // B is gone: s2 must not keep its A units.
    assert_eq!(kind(s.reserve("s2", &order, FAR).await), "out_of_stock");
    assert_eq!(counts(s).await, (3, 3, 0));
    // A line of an unknown SKU also undoes the earlier lines.
    let bad = lines(&[("A", 1), ("NOPE", 1)]);
    assert_eq!(kind(s.reserve("s3", &bad, FAR).await), "unknown_sku");
    assert_eq!(counts(s).await, (3, 3, 0));
    // The failed reserve left nothing behind: once B is back, s2 goes through.
    s.release("s1", &order).await.unwrap();
    assert_eq!(counts(s).await, (6, 0, 0));
    s.reserve("s2", &order, FAR).await.unwrap();
    assert_eq!(counts(s).await, (3, 3, 0));
}

async fn multi_line_commit_and_release(s: &Stock) {
    s.seed(&[("A".into(), 2), ("B".into(), 2)]).await.unwrap();
    let order = lines(&[("A", 1), ("B", 2)]);
    s.reserve("s1", &order, FAR).await.unwrap();
    s.commit("s1", &order).await.unwrap();
    s.commit("s1", &order).await.unwrap();
    assert_eq!(counts(s).await, (1, 0, 3));
    assert_eq!(s.snapshot().await.unwrap().committed_reservations, 1);
    // Per SKU, as the dashboard shows them: B sold out, one A left.
    s.reserve("s3", &one("A"), FAR).await.unwrap();
    let levels: Vec<(String, [i64; 4])> = s
        .levels()
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.sku, [l.initial, l.available, l.reserved, l.sold]))
        .collect();
    assert_eq!(
        levels,
        [("A".into(), [2, 0, 1, 1]), ("B".into(), [2, 0, 0, 2])]
    );
    s.release("s3", &one("A")).await.unwrap();
    assert_eq!(kind(s.release("s1", &order).await), "already_committed");
    assert_eq!(counts(s).await, (1, 0, 3));
    // A tombstone on every line blocks a late multi-line reserve.
    s.release("s2", &order).await.unwrap();
    assert_eq!(
        kind(s.reserve("s2", &order, FAR).await),
        "reservation_closed"
    );
    assert_eq!(counts(s).await, (1, 0, 3));
}

async fn multi_line_late_commit_sells_nothing_when_one_line_is_sold_out(s: &Stock) {
    s.seed(&[("A".into(), 1), ("B".into(), 1)]).await.unwrap();
    let order = lines(&[("A", 1), ("B", 1)]);
    s.reserve("slow", &order, 1_000).await.unwrap();
    assert_eq!(reclaim_dead(s, 2_000).await.unwrap(), 1);
    assert_eq!(counts(s).await, (2, 0, 0));
    s.reserve("fast", &one("B"), FAR).await.unwrap();
    assert_eq!(kind(s.commit("slow", &order).await), "reservation_expired");
    // The A unit it could have re-taken is back on the shelf.
    assert_eq!(counts(s).await, (1, 1, 0));
    assert_eq!(s.snapshot().await.unwrap().committed_reservations, 0);
    // Once B is released, the late commit goes through.
    s.release("fast", &one("B")).await.unwrap();
    s.commit("slow", &order).await.unwrap();
    assert_eq!(counts(s).await, (0, 0, 2));
    assert_eq!(s.snapshot().await.unwrap().committed_reservations, 1);
}

async fn lines_of_the_same_sku_add_up(s: &Stock) {
    s.seed(&[("A".into(), 3)]).await.unwrap();
    let order = lines(&[("A", 1), ("A", 2)]);
    s.reserve("s1", &order, FAR).await.unwrap();
    assert_eq!(counts(s).await, (0, 3, 0));
    s.release("s1", &order).await.unwrap();
    assert_eq!(counts(s).await, (3, 0, 0));
}

async fn commit_of_an_unknown_reservation_fails(s: &Stock) {
    s.seed(&[("A".into(), 1)]).await.unwrap();
    assert_eq!(
        kind(s.commit("nobody", &one("A")).await),
        "unknown_reservation"
    );
    assert_eq!(counts(s).await, (1, 0, 0));
}

/// A refund gives the units of a sale back once, every line of it; the
/// reservation then can be neither released, committed nor reserved again,
/// and a reservation never sold has nothing to return.
async fn a_refund_returns_sold_units_once(s: &Stock) {
    s.seed(&[("A".into(), 3), ("B".into(), 3)]).await.unwrap();
    let order = lines(&[("A", 1), ("B", 2)]);
    s.reserve("sold", &order, FAR).await.unwrap();
    s.commit("sold", &order).await.unwrap();
    s.reserve("held", &one("A"), FAR).await.unwrap();
    assert_eq!(counts(s).await, (2, 1, 3));
    assert_eq!(kind(s.return_sold("held", &one("A")).await), "not_sold");
    assert_eq!(
        kind(s.return_sold("nobody", &one("A")).await),
        "unknown_reservation"
    );
    assert_eq!(counts(s).await, (2, 1, 3));
    for _ in 0..2 {
        let r = s.return_sold("sold", &order).await.unwrap();
        assert_eq!(r["state"], "returned");
        assert_eq!(counts(s).await, (5, 1, 0), "returned once");
    }
    assert_eq!(s.snapshot().await.unwrap().committed_reservations, 0);
    assert_eq!(kind(s.release("sold", &order).await), "already_committed");
    assert_eq!(kind(s.commit("sold", &order).await), "reservation_closed");
    assert_eq!(
        kind(s.reserve("sold", &order, FAR).await),
        "reservation_closed"
    );
    assert_eq!(counts(s).await, (5, 1, 0), "nothing moved");
}

/// Issue 5 acceptance: 5,000 concurrent one-unit reservations for 500 units
/// of one SKU; exactly 500 succeed, the books add up at every look and
/// stock never goes below zero; releasing 100 of them twice (concurrently)
/// returns exactly 100 units.
async fn concurrent_flash_sale_sells_exactly_the_stock(s: &Stock) {
    const BUYERS: usize = 5_000;
    const UNITS: i64 = 500;
    s.seed(&[("HOT".into(), UNITS)]).await.unwrap();

    // Watch the books while the sale runs.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (s, done) = (s.clone(), done.clone());
        tokio::spawn(async move {
            let (mut looks, mut lowest) = (0, i64::MAX);
            while !done.load(Ordering::Relaxed) {
                let snap = s.snapshot().await.unwrap();
                assert!(
                    !snap.inconsistent && snap.available >= 0,
                    "books broke mid-sale: {snap:?}"
                );
                looks += 1;
                lowest = lowest.min(snap.available);
                tokio::task::yield_now().await;
            }
            (looks, lowest)
        })
    };

    let started = Instant::now();
    let mut buyers = tokio::task::JoinSet::new();
    for i in 0..BUYERS {
        let s = s.clone();
        buyers.spawn(async move {
            let id = format!("buyer-{i}");
            let r = s.reserve(&id, &one("HOT"), FAR).await;
            (id, r)
        });
    }
    let mut won = Vec::new();
    let mut out_of_stock = 0;
    while let Some(joined) = buyers.join_next().await {
        match joined.unwrap() {
            (id, Ok(_)) => won.push(id),
            (_, Err(e)) if e.kind == "out_of_stock" && !e.retryable => out_of_stock += 1,
            (id, Err(e)) => panic!("{id}: unexpected {e}"),
        }
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (looks, lowest) = watcher.await.unwrap();
    eprintln!(
        "{BUYERS} reservations in {took:?} ({:.0}/s); {looks} snapshots meanwhile, lowest available {lowest}",
        BUYERS as f64 / took.as_secs_f64()
    );
    assert_eq!(won.len(), UNITS as usize);
    assert_eq!(out_of_stock, BUYERS - UNITS as usize);
    assert_eq!(counts(s).await, (0, UNITS, 0));

    // Release 100 winners, each twice, all at once.
    let mut releases = tokio::task::JoinSet::new();
    for id in won.iter().take(100) {
        for _ in 0..2 {
            let (s, id) = (s.clone(), id.clone());
            releases.spawn(async move { s.release(&id, &one("HOT")).await });
        }
    }
    while let Some(r) = releases.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(counts(s).await, (100, UNITS - 100, 0));
}

// ----------------------------------------------------------- Redis only --

#[tokio::test]
async fn redis_connect_fails_fast_with_what_to_do() {
    let started = Instant::now();
    let e = match RedisStock::connect("redis://:secret@127.0.0.1:1").await {
        Ok(_) => panic!("connected to port 1"),
        Err(e) => e.to_string(),
    };
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        e.starts_with("cannot reach Redis at redis://:***@127.0.0.1:1"),
        "{e}"
    );
    assert!(e.contains("[redis] url_env"), "{e}");
    assert!(!e.contains("secret"), "{e}");
    let e = match RedisStock::connect("http://nowhere").await {
        Ok(_) => panic!("accepted an http URL"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("is not valid"), "{e}");
}

/// Makes every read and script on `sku`'s reservation records fail with a
/// real Redis error (WRONGTYPE: the hash is set aside and a string put in
/// its place) until [`mend_line`].
async fn break_line(prefix: &str, sku: &str) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}resv:{{{sku}}}");
    let exists: bool = conn.exists(&key).await.unwrap();
    if exists {
        let _: () = conn.rename(&key, format!("{key}:aside")).await.unwrap();
    }
    let _: () = conn.set(&key, "broken").await.unwrap();
}

/// Puts back what [`break_line`] set aside.
async fn mend_line(prefix: &str, sku: &str) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}resv:{{{sku}}}");
    let _: () = conn.del(&key).await.unwrap();
    let aside: bool = conn.exists(format!("{key}:aside")).await.unwrap();
    if aside {
        let _: () = conn.rename(format!("{key}:aside"), &key).await.unwrap();
    }
}

/// Issue 29: a reserve re-run after the capture (a crash re-run on
/// Temporal) meets a Redis error on its second line in a sold-out sale.
/// Before the fix the failed attempt gave back every line held under the
/// saga, another buyer took the unit, and the retry ended `out_of_stock`:
/// the saga compensated with the capture standing, charged and not sold.
/// Now the error leaves what is held in place and stays retryable.
#[tokio::test]
async fn redis_an_error_in_a_re_run_leaves_the_reservation_held() {
    let b = Backend::redis("rerun-error").await;
    let prefix = b.redis_prefix.clone().unwrap();
    b.stock
        .seed(&[("A".into(), 1), ("B".into(), 1)])
        .await
        .unwrap();
    let ab = lines(&[("A", 1), ("B", 1)]);
    b.stock.reserve("s1", &ab, FAR).await.unwrap();
    // ... authorize, order, capture: the customer is charged. A crash, and
    // the re-run's reserve meets an error on line 2.
    break_line(&prefix, "B").await;
    let e = b.stock.reserve("s1", &ab, FAR).await.unwrap_err();
    assert!(e.retryable, "a Redis error stays retryable: {e}");
    mend_line(&prefix, "B").await;
    assert_eq!(
        counts(&b.stock).await,
        (0, 2, 0),
        "s1 still holds both lines"
    );
    // The sale goes on: the next buyer finds nothing.
    assert_eq!(
        kind(b.stock.reserve("s2", &one("A"), FAR).await),
        "out_of_stock"
    );
    // The retry finds the reservation held; the commit sells it.
    b.stock.reserve("s1", &ab, FAR).await.unwrap();
    b.stock.commit("s1", &ab).await.unwrap();
    assert_eq!(counts(&b.stock).await, (0, 0, 2), "sold, as charged");
    b.finish().await;
}

/// Issue 29: an attempt of a multi-line reserve that is still running
/// (here: it took line A under its own claim and goes on to B) and a
/// second attempt of the same reserve that fails on B: the second gives
/// back only its own claims, so the first one's A stays held when it
/// reports the reservation held. (Before, a failed reserve gave back every
/// line under the saga, whoever held it: issue 12's fix for an attempt
/// killed mid-way, whose lines the reaper now returns once the saga ends.)
#[tokio::test]
async fn redis_a_failed_attempt_never_releases_another_attempts_lines() {
    let b = Backend::redis("concurrent").await;
    let prefix = b.redis_prefix.clone().unwrap();
    let Stock::Redis(redis_stock) = &b.stock else {
        unreachable!()
    };
    b.stock
        .seed(&[("A".into(), 5), ("B".into(), 2)])
        .await
        .unwrap();
    // The other attempt's first line, exactly as the adapter sends it.
    assert_eq!(other_attempt(redis_stock, "A", "1").await, "taken");
    assert_eq!(counts(&b.stock).await, (5, 2, 0));
    // This attempt meets an error on B, and gives nothing back.
    break_line(&prefix, "B").await;
    let order = lines(&[("A", 2), ("B", 2)]);
    let e = b.stock.reserve("s1", &order, FAR).await.unwrap_err();
    assert!(e.retryable, "{e}");
    mend_line(&prefix, "B").await;
    assert_eq!(
        counts(&b.stock).await,
        (5, 2, 0),
        "the other attempt's A is still held"
    );
    // A business failure gives back only this attempt's own claims.
    b.stock.reserve("s9", &one("B"), FAR).await.unwrap();
    assert_eq!(
        kind(b.stock.reserve("s1", &order, FAR).await),
        "out_of_stock"
    );
    assert_eq!(
        counts(&b.stock).await,
        (4, 3, 0),
        "A is still the other attempt's"
    );
    // The other attempt, once B is back, completes: both lines held.
    b.stock.release("s9", &one("B")).await.unwrap();
    assert_eq!(other_attempt(redis_stock, "B", "0").await, "taken");
    let held: Vec<(String, String, LineState)> = b
        .stock
        .reservations()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.reservation == "s1")
        .map(|l| (l.reservation, l.sku, l.state))
        .collect();
    assert_eq!(
        held,
        [
            ("s1".into(), "A".into(), LineState::Reserved),
            ("s1".into(), "B".into(), LineState::Reserved)
        ]
    );
    assert_eq!(counts(&b.stock).await, (3, 4, 0));
    b.finish().await;
}

/// One line of a multi-line reserve of `s1` (2 units), sent as another
/// attempt of it would send it, under that attempt's own claim token.
async fn other_attempt(stock: &RedisStock, sku: &str, primary: &str) -> String {
    let (sha, keys) = stock.reserve_script_for(sku);
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(3)
        .arg(&keys)
        .arg(&["s1", "2", &FAR.to_string(), "tother-attempt", primary][..])
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn redis_scripts_reload_after_script_flush() {
    let b = Backend::redis("flush").await;
    b.stock.seed(&[("A".into(), 2)]).await.unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    b.stock.reserve("s1", &one("A"), FAR).await.unwrap();
    assert_eq!(counts(&b.stock).await, (1, 1, 0));
    b.finish().await;
}

/// A Redis server of our own on a free port, so the test can stop it.
struct OwnServer {
    child: std::process::Child,
    port: u16,
}

impl OwnServer {
    fn start(port: u16) -> OwnServer {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is not installed: apt-get install redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnServer { child, port }
    }

    fn stop(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connection_loss_is_retryable_and_the_adapter_reconnects() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = OwnServer::start(port);
    let url = format!("redis://127.0.0.1:{}", server.port);
    let stock = Stock::Redis(Arc::new(RedisStock::connect(&url).await.unwrap()));
    stock.seed(&[("A".into(), 3)]).await.unwrap();
    stock.reserve("s1", &one("A"), FAR).await.unwrap();
    server.stop();

    let e = stock.reserve("s2", &one("A"), FAR).await.unwrap_err();
    assert!(e.retryable, "{e}");
    assert_eq!(e.kind, "redis_unavailable", "{e}");
    assert!(e.message.contains(&url), "{e}");
    assert!(stock.release("s1", &one("A")).await.unwrap_err().retryable);

    // The server comes back (empty: it kept nothing): the same adapter
    // reconnects without a restart.
    let server = OwnServer::start(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match stock.seed(&[("A".into(), 3)]).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no reconnect: {e}"),
        }
    }
    stock.reserve("s2", &one("A"), FAR).await.unwrap();
    assert_eq!(counts(&stock).await, (2, 1, 0));
    server.stop();
}

// ------------------------------------------------------------- benchmark --

async fn bench_on(b: Backend, label: &str) {
    let config = sagaflow_activities::stock::StockBenchConfig {
        sku: "BENCH".into(),
        reservations: 20_000,
        in_flight: 64,
    };
    let r = sagaflow_activities::stock::bench_reserve(&b.stock, &config)
        .await
        .unwrap();
    eprintln!(
        "{label}: {} reservations, {} in flight: {:.0}/s, p50 {} us, p99 {} us",
        r.reservations, r.in_flight, r.per_second, r.p50_us, r.p99_us
    );
    assert_eq!(r.reservations, 20_000);
    // Everything was released again.
    assert_eq!(counts(&b.stock).await, (20_000, 0, 0));
    b.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reserve_runs_on_the_embedded_ledger() {
    bench_on(Backend::embedded("bench"), "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reserve_runs_on_redis() {
    bench_on(Backend::redis("bench").await, "redis").await;
}

/// What `reconcile` reads: every line of every reservation with its state,
/// sorted by reservation then SKU; a tombstone (a release that came before
/// its reserve) held nothing and is not listed.
async fn reservations_list_every_line_in_its_state(s: &Stock) {
    s.seed(&[("A".into(), 10), ("B".into(), 10)]).await.unwrap();
    let ab = lines(&[("A", 2), ("B", 1)]);
    s.reserve("held", &ab, FAR).await.unwrap();
    s.reserve("sold", &one("A"), FAR).await.unwrap();
    s.commit("sold", &one("A")).await.unwrap();
    s.reserve("freed", &one("B"), FAR).await.unwrap();
    s.release("freed", &one("B")).await.unwrap();
    s.reserve("back", &one("A"), FAR).await.unwrap();
    s.commit("back", &one("A")).await.unwrap();
    s.return_sold("back", &one("A")).await.unwrap();
    s.reserve("late", &one("B"), 1_000).await.unwrap();
    assert_eq!(reclaim_dead(s, 2_000).await.unwrap(), 1);
    s.release("never", &one("A")).await.unwrap();
    let line = |id: &str, sku: &str, units, state| ReservationLine {
        reservation: id.into(),
        sku: sku.into(),
        units,
        state,
    };
    assert_eq!(
        s.reservations().await.unwrap(),
        vec![
            line("back", "A", 1, LineState::Returned),
            line("freed", "B", 1, LineState::Released),
            line("held", "A", 2, LineState::Reserved),
            line("held", "B", 1, LineState::Reserved),
            line("late", "B", 1, LineState::Expired),
            line("sold", "A", 1, LineState::Committed),
        ]
    );
}
