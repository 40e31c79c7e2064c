//! Issue 12, defect 2: a slow saga is never charged without stock. With a
//! one-second reservation TTL and a provider that takes three seconds per
//! call, the first buyer's reservation is long past its deadline when it
//! captures; a second buyer arrives in between. Before the fix the reaper
//! handed the unit to the second buyer and the first parked at
//! `commit_stock`, charged, with `reservation_expired`.

use crate::scenarios::{on_both_engines, Env};

/// The checkout with a 1 s reservation TTL and a 3 s provider.
const SLOW_AND_SHORT: [(&str, &str); 2] = [
    ("reservation_ttl = \"15m\"", "reservation_ttl = \"1s\""),
    ("latency = \"0ms\"", "latency = \"3s\""),
];

fn a_slow_saga_keeps_its_stock_past_the_reservation_ttl(engine: &str) {
    let env = Env::new("slow-saga", engine, &SLOW_AND_SHORT);
    env.sagaflow(&["stock", "set", "SKU-1=1"]);
    let _worker = env.worker();
    let first = env.submit("first", "pm_card_visa");
    env.wait_until(&first, |show| {
        show["timeline"].as_array().is_some_and(|t| {
            t.iter()
                .any(|e| e["step"] == "reserve_stock" && e["status"] == "ok")
        })
    });
    // Past the 1 s deadline and a reaper pass (every second), while the
    // first buyer still waits on its 3 s authorization.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let second = env.submit("second", "pm_card_visa");
    let (status, rows) = {
        env.wait_until(&first, |show| {
            matches!(
                show["saga"]["status"].as_str(),
                Some("completed" | "parked")
            )
        });
        env.timeline(&first)
    };
    assert_eq!(
        status, "completed",
        "the first buyer, charged, must get its unit: {rows:?}"
    );
    let (status, rows) = {
        env.wait_until(&second, |show| {
            matches!(
                show["saga"]["status"].as_str(),
                Some("completed" | "compensated" | "parked")
            )
        });
        env.timeline(&second)
    };
    assert_eq!(status, "compensated", "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r.0 == "reserve_stock" && r.4.contains("out_of_stock")),
        "the second buyer finds the unit taken: {rows:?}"
    );
    let stock = env.stock();
    assert_eq!(
        (
            stock["available"].as_i64(),
            stock["reserved"].as_i64(),
            stock["sold"].as_i64()
        ),
        (Some(0), Some(0), Some(1)),
        "{stock}"
    );
}

on_both_engines!(a_slow_saga_keeps_its_stock_past_the_reservation_ttl);
