use crate::common::*;
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
