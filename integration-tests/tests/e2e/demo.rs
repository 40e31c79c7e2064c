use crate::common::*;

#[test]
fn flash_sale_holds_every_invariant_and_is_inspectable() {
    let dir = data_dir("demo");
    let d = dir.to_str().unwrap();
    let sale = [
        "demo",
        "--orders",
        "2000",
        "--stock",
        "500",
        "--decline-rate",
        "0.05",
        "--data",
        d,
        "--json",
    ];
    let out = sagaflow_ok(&sale);
    let s = json_line(&out);
    assert_eq!(s["invariants_ok"], true, "{s}");
    assert_eq!(s["orders"], 2000);
    assert_eq!(s["declined_cards"], 100, "5% of 2000 exactly: {s}");
    let completed = s["completed"].as_u64().unwrap();
    let compensated = s["compensated"].as_u64().unwrap();
    assert_eq!(
        completed + compensated + s["parked"].as_u64().unwrap(),
        2000
    );
    // 500 units for 2000 orders: the stock sells out exactly.
    assert_eq!(s["units_sold"], 500, "{s}");
    assert_eq!(s["stock_left"], 0);
    assert_eq!(s["payments_captured"].as_u64(), Some(completed));
    // Declines and sold-out orders fail before or at authorization, so
    // nothing was authorized for them and nothing is left to void.
    assert!(compensated >= 1_400, "{s}");
    for key in ["sagas_per_sec", "p50_ms", "p99_ms"] {
        assert!(s[key].as_f64().is_some(), "{key} missing: {s}");
    }

    // The inspection commands work on the demo's data afterwards.
    let stats = json_line(&sagaflow_ok(&["stats", "--data", d, "--json"]).replace('\n', ""));
    assert_eq!(stats["total"], 2000);
    assert_eq!(stats["completed"].as_u64(), Some(completed));

    let listed = sagaflow_ok(&[
        "list",
        "--data",
        d,
        "--status",
        "completed",
        "--limit",
        "5",
        "--json",
    ]);
    let rows: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r["status"] == "completed"));

    let id = rows[0]["id"].as_str().unwrap();
    let show = json_line(&sagaflow_ok(&["show", id, "--data", d, "--json"]).replace('\n', ""));
    let steps: Vec<&str> = show["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "reserve_stock",
            "authorize_payment",
            "create_order",
            "capture_payment",
            "commit_stock"
        ]
    );
    assert!(show["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] == "ok" && t["attempts"].as_u64() >= Some(1)));

    let text = sagaflow_ok(&["show", id, "--data", d]);
    assert!(
        text.contains("status completed") && text.contains("capture_payment"),
        "{text}"
    );

    let history =
        json_line(&sagaflow_ok(&["history", id, "--data", d, "--json"]).replace('\n', ""));
    let kinds: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"started"));
    assert_eq!(kinds.last(), Some(&"status"));
    assert_eq!(
        kinds.iter().filter(|k| **k == "activity_completed").count(),
        5
    );

    // A declined card: compensated, with the decline in the timeline.
    let compensated_rows = sagaflow_ok(&[
        "list",
        "--data",
        d,
        "--status",
        "compensated",
        "--limit",
        "2000",
        "--json",
    ]);
    let declined = compensated_rows
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find_map(|r| {
            let id = r["id"].as_str().unwrap().to_owned();
            let show = sagaflow_ok(&["show", &id, "--data", d, "--json"]);
            show.contains("card_declined").then_some(show)
        })
        .expect("with 5% decline cards some saga was declined");
    assert!(
        declined.contains("stock.release"),
        "a declined saga releases its stock: {declined}"
    );

    // Running the demo again on the same data resumes (nothing new to do) and still checks out.
    let again = json_line(&sagaflow_ok(&sale));
    assert_eq!(again["invariants_ok"], true);
    assert_eq!(again["completed"].as_u64(), Some(completed));

    // Another sale on the same data is refused with a way out.
    let clash = sagaflow(&["demo", "--orders", "10", "--data", d]);
    assert!(!clash.status.success());
    assert!(String::from_utf8_lossy(&clash.stderr).contains("--fresh"));

    // Unknown ids say how to find the right one.
    let missing = sagaflow(&["show", "order-nope", "--data", d]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("sagaflow list"));
}
