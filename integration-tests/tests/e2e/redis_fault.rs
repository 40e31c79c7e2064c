//! The flash sale on the Redis stock adapter, with the Redis server killed
//! and restarted in the middle: every saga still ends and the demo's
//! invariants hold (no oversell, units sold = completed = captured).
//!
//! The test runs its own redis-server on a free port, with the append-only
//! file fsync'd on every write (how a stock ledger must be run), so the
//! restart keeps what was acknowledged and the shared server on 6379 is
//! left alone.

use crate::common::*;
use crate::redis_server::RedisServer;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn redis_restart_mid_sale_every_saga_ends_and_the_books_balance() {
    let dir = data_dir("redis-fault");
    let mut redis = RedisServer::start(&dir.join("redis"));
    let d = dir.join("sale");
    let url = redis.url();
    let mut demo = Command::new(bin())
        .args([
            "demo",
            "--profile",
            "redis",
            "--orders",
            "3000",
            "--stock",
            "2400",
            "--skus",
            "6",
            "--in-flight",
            "40",
            "--sandbox-latency-ms",
            "20",
            "--json",
            "--data",
            d.to_str().unwrap(),
        ])
        .env("SAGAFLOW_REDIS_URL", &url)
        .env_remove("SAGAFLOW_CONFIG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("demo.log")).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_000));
    assert!(
        demo.try_wait().unwrap().is_none(),
        "the sale ended before the restart; make it longer"
    );
    // A crash, not a clean shutdown; then the same server comes back.
    redis.crash_and_restart(Duration::from_millis(300));

    let out = demo.wait_with_output().unwrap();
    drop(redis);
    let log = std::fs::read_to_string(dir.join("demo.log")).unwrap();
    assert!(
        out.status.success(),
        "the demo failed ({}):\n{log}",
        out.status
    );
    let s = json_line(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(s["invariants_ok"], true, "{s}\n{log}");
    assert_eq!(s["parked"], 0, "{s}");
    let completed = s["completed"].as_u64().unwrap();
    assert_eq!(
        completed + s["compensated"].as_u64().unwrap(),
        3_000,
        "every saga ended: {s}"
    );
    assert_eq!(s["units_sold"].as_u64(), Some(completed), "{s}");
    assert_eq!(s["payments_captured"].as_u64(), Some(completed), "{s}");
    // The journal shows the outage: attempts that failed as retryable
    // while Redis was down, retried until it came back.
    let journal = rusqlite::Connection::open(d.join("journal.db")).unwrap();
    let failed: i64 = journal
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'activity_failed' AND body LIKE '%redis_unavailable%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        failed > 0,
        "the sale saw Redis go away (no redis_unavailable failures journaled)"
    );
    eprintln!("{failed} activity attempts failed while Redis was down");
}
