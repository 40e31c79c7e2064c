//! The books behind the activities, read directly from the embedded stores:
//! the invariants every crash and fault test checks.

use std::path::Path;

/// The embedded journal: every order is a saga that ended, and no step
/// has two successful results.
pub fn check_journal(dir: &Path, orders: usize) {
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
        (orders as u64, orders as u64),
        "every order became a saga that ended"
    );
    let doubled: u64 = journal
        .query_row(
            "SELECT COUNT(*) FROM (SELECT saga_id, json_extract(body, '$.step') s, json_extract(body, '$.phase') p
             FROM events WHERE kind = 'activity_completed' GROUP BY saga_id, s, p HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(doubled, 0, "a step completed twice in the journal");
}

/// The stores behind the activities, read directly.
pub fn check_books(dir: &Path, stock_units: usize, completed: u64) {
    let stock = rusqlite::Connection::open(dir.join("stock.db")).unwrap();
    let (initial, available, reserved, sold): (i64, i64, i64, i64) = stock
        .query_row(
            "SELECT SUM(initial), SUM(available), SUM(reserved), SUM(sold) FROM stock",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(initial, stock_units as i64);
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
