//! The flash sale on the Redis stock adapter, with the Redis server killed
//! and restarted in the middle: every saga still ends and the demo's
//! invariants hold (no oversell, units sold = completed = captured).
//!
//! The test runs its own redis-server on a free port, with the append-only
//! file fsync'd on every write (how a stock ledger must be run), so the
//! restart keeps what was acknowledged and the shared server on 6379 is
//! left alone.

use crate::common::*;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_redis(dir: &Path, port: u16) -> Child {
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/services.sh redis installs it)");
    let began = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn redis_restart_mid_sale_every_saga_ends_and_the_books_balance() {
    let dir = data_dir("redis-fault");
    let redis_dir = dir.join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let port = free_port();
    let mut redis = start_redis(&redis_dir, port);
    let d = dir.join("sale");
    let url = format!("redis://127.0.0.1:{port}");
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
    redis.kill().unwrap();
    redis.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut redis = start_redis(&redis_dir, port);

    let out = demo.wait_with_output().unwrap();
    let _ = redis.kill();
    let _ = redis.wait();
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
