use crate::common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const ORDERS: usize = 1_000;

fn demo_args(d: &str) -> Vec<String> {
    [
        "demo",
        "--orders",
        "1000",
        "--stock",
        "900",
        "--decline-rate",
        "0.05",
        "--data",
        d,
        "--json",
        "--in-flight",
        "3",
        "--sandbox-latency-ms",
        "25",
        "--sandbox-error-rate",
        "0.02",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn sigkill_at_random_instants_loses_and_repeats_nothing() {
    let dir = data_dir("crash");
    let d = dir.to_str().unwrap().to_owned();
    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut kills = 0;
    let mut finished_early = false;
    while kills < 12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_millis(250 + seed % 900);
        let log = std::fs::File::create(dir.join(format!("run-{kills}.log"))).unwrap();
        let mut child = Command::new(bin())
            .args(demo_args(&d))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let began = Instant::now();
        while began.elapsed() < wait {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.join(format!("run-{kills}.log"))).unwrap();
                eprintln!("run {kills} ended by itself ({status}):\n{log}");
                finished_early = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if finished_early {
            break;
        }
        // SIGKILL: no chance to flush or clean up.
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    assert!(
        kills >= 10 && !finished_early,
        "the run finished after {kills} kills; it must be slow enough for at least 10 (raise the sandbox latency)"
    );

    // A last run without interference finishes the sale.
    let s = json_line(&sagaflow_ok(
        &demo_args(&d).iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert_eq!(s["invariants_ok"], true, "{s}");
    assert_eq!(s["orders"], ORDERS);
    assert_eq!(s["parked"], 0, "{s}");
    let completed = s["completed"].as_u64().unwrap();
    assert_eq!(
        completed + s["compensated"].as_u64().unwrap(),
        ORDERS as u64
    );
    assert_eq!(s["payments_captured"].as_u64(), Some(completed));

    // Check the books directly, not only through the binary's own summary.
    let journal = rusqlite::Connection::open(dir.join("journal.db")).unwrap();
    let (sagas, ended): (u64, u64) = journal
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(status IN ('completed', 'compensated')), 0) FROM sagas",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (sagas, ended),
        (ORDERS as u64, ORDERS as u64),
        "every order became a saga that ended"
    );
    // Each step's result is journaled once per attempt: no saga has two
    // successful results for the same step and phase.
    let doubled: u64 = journal
        .query_row(
            "SELECT COUNT(*) FROM (SELECT saga_id, json_extract(body, '$.step') s, json_extract(body, '$.phase') p
             FROM events WHERE kind = 'activity_completed' GROUP BY saga_id, s, p HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(doubled, 0, "a step completed twice in the journal");

    let stock = rusqlite::Connection::open(dir.join("stock.db")).unwrap();
    let (initial, available, reserved, sold): (i64, i64, i64, i64) = stock
        .query_row(
            "SELECT SUM(initial), SUM(available), SUM(reserved), SUM(sold) FROM stock",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(initial, 900);
    assert!(
        available >= 0 && reserved == 0,
        "no oversell, nothing left reserved: {available} {reserved}"
    );
    assert_eq!(available + sold, initial);
    assert_eq!(
        sold as u64, completed,
        "units sold = completed orders (no commit applied twice)"
    );
    let committed: i64 = stock
        .query_row(
            "SELECT COUNT(*) FROM reservations WHERE state = 'committed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(committed as u64, completed);

    let orders = rusqlite::Connection::open(dir.join("orders.db")).unwrap();
    let created: i64 = orders
        .query_row(
            "SELECT COUNT(*) FROM orders WHERE status = 'created'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        created as u64, completed,
        "one order document per completed saga"
    );

    // The provider saw each order's authorization once and captured each
    // payment at most once, however often the worker died mid-request.
    let payments = rusqlite::Connection::open(dir.join("payments.db")).unwrap();
    let twice_authorized: i64 = payments
        .query_row(
            "SELECT COUNT(*) FROM (SELECT value FROM intent_metadata WHERE key = 'order_id'
             GROUP BY value HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        twice_authorized, 0,
        "an order was authorized more than once"
    );
    let (captured, over_captured): (i64, i64) = payments
        .query_row(
            "SELECT COALESCE(SUM(capture_count = 1), 0), COALESCE(SUM(capture_count > 1), 0) FROM intents",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(over_captured, 0, "a payment was captured twice");
    assert_eq!(
        captured as u64, completed,
        "captured payments = completed orders"
    );
}
