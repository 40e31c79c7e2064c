use crate::common::*;
use crate::scenarios::{on_both_engines, Env};
use std::io::Write;
use std::process::{Command, Stdio};

fn order(id: &str) -> String {
    format!(
        r#"{{"order_id":"{id}","customer":"c1","items":[{{"sku":"SKU-1","qty":1}}],"amount":1999,"currency":"usd","payment_method":"pm_card_visa"}}"#
    )
}

#[test]
fn malformed_messages_are_dead_lettered_with_a_reason_and_valid_ones_run() {
    let dir = data_dir("dlq");
    let d = dir.to_str().unwrap();
    sagaflow_ok(&["stock", "set", "SKU-1=5", "--data", d]);
    let lines = [
        order("o-1"),
        "this is not json".to_string(),
        order("o-2"),
        r#"{"order_id":"o-3"}"#.to_string(),
        order("o-1"), // a duplicate: harmless, same saga
    ]
    .join("\n");

    // Without --raw, submit refuses the whole file and says which lines are wrong.
    let mut child = Command::new(bin())
        .args(["submit", "-", "--data", d])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("-:2: not a valid order") && err.contains("-:4:"),
        "{err}"
    );
    assert!(err.contains("nothing was queued"), "{err}");

    let file = dir.join("orders.jsonl");
    std::fs::write(&file, &lines).unwrap();
    sagaflow_ok(&["submit", file.to_str().unwrap(), "--raw", "--data", d]);
    sagaflow_ok(&["run", "--until-idle", "--data", d]);

    let stats = json_line(&sagaflow_ok(&["stats", "--json", "--data", d]).replace('\n', ""));
    assert_eq!(
        stats["total"], 2,
        "o-1 and o-2 became sagas (o-1 once): {stats}"
    );
    assert_eq!(stats["completed"], 2);

    let dl = sagaflow_ok(&["dlq", "list", "--json", "--data", d]);
    let rows: Vec<serde_json::Value> = dl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{dl}");
    assert!(rows.iter().any(|r| r["reason"] == "InvalidJson"
        && r["description"]
            .as_str()
            .unwrap()
            .contains("the body is not JSON: expected ident at line 1 column 2")));
    assert!(rows.iter().any(|r| r["reason"] == "InvalidOrder"
        && r["description"].as_str().unwrap().contains("missing field")));
    assert!(
        rows.iter().any(|r| r["body"] == "this is not json"),
        "the body is kept: {dl}"
    );
}

/// Issue 12, defect 4: a message that reuses an order id with a different
/// body is not started (the first order stands: a second saga would charge
/// twice) but is no longer silently taken for a redelivery: the worker logs
/// it once and counts it. A true redelivery (the same body) says nothing.
fn an_order_id_reused_with_another_body_is_logged_and_counted(engine: &str) {
    let env = Env::new("reused-id", engine, &[]);
    env.sagaflow(&["stock", "set", "SKU-1=5"]);
    let id = env.submit("o1", "pm_card_visa");
    env.run_until_idle();
    env.submit("o1", "pm_card_visa");
    let changed = env.dir.join("changed.json");
    std::fs::write(
        &changed,
        format!(
            r#"{{"order_id":"{id}","customer":"c1","items":[{{"sku":"SKU-1","qty":3}}],"amount":5997,"currency":"usd","payment_method":"pm_card_visa"}}"#
        ),
    )
    .unwrap();
    env.sagaflow(&["submit", changed.to_str().unwrap()]);
    let out = sagaflow(&env.with_env(&["run", "--until-idle"]));
    assert!(out.status.success());
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        log.matches("already started with a different body").count(),
        1,
        "one warning, for the changed body only: {log}"
    );
    assert!(log.contains(&id), "{log}");
    assert!(log.contains("reused_ids=1"), "{log}");
    assert!(log.contains("duplicates=2"), "{log}");
    // The first order stands, in the saga and in the stock.
    let show = env.show(&id);
    assert_eq!(show["input"]["amount"], 1999, "{show}");
    let stock = env.stock();
    assert_eq!(stock["sold"].as_i64(), Some(1), "{stock}");
}

on_both_engines!(an_order_id_reused_with_another_body_is_logged_and_counted);
