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

/// Issue 30, finding 5: one rule for ids. Each id of the corpus either
/// completes and is reachable through `show --admin` and the route the
/// dashboard calls (`encodeURIComponent`), or is dead-lettered at the
/// door with the rule as its reason; never accepted and then lost
/// halfway (the provider refusing a non-ASCII `Idempotency-Key` used to
/// compensate such sagas). On both stock backends.
fn an_id_corpus_completes_or_is_dead_lettered_with_a_reason(stock: &str) {
    let unique = format!("ids-{}-{}", std::process::id(), stock);
    let prefix_tweak = format!("key_prefix = \"{unique}:\"");
    let tweaks: Vec<(&str, &str)> = if stock == "redis" {
        vec![
            ("stock = \"embedded\"", "stock = \"redis\""),
            ("key_prefix = \"sagaflow:\"", &prefix_tweak),
        ]
    } else {
        Vec::new()
    };
    let vars = [("SAGAFLOW_REDIS_URL", "redis://127.0.0.1:6379")];
    let env = Env::new(&format!("ids-{stock}"), "embedded", &tweaks);
    let prefix = env.id("");
    let long = format!("{prefix}{}", "x".repeat(128 - prefix.len()));
    let corpus: Vec<String> = ["ö-1", "\u{202E}1-o", "o\u{200B}1", "a b", "a%2Fb"]
        .iter()
        .map(|s| format!("{prefix}{s}"))
        .chain([".".to_owned(), "..".to_owned(), long.clone()])
        .collect();
    let body: String = corpus.iter().map(|id| order(id) + "\n").collect();
    let file = env.dir.join("corpus.jsonl");
    std::fs::write(&file, body).unwrap();
    let stock_set = Command::new(bin())
        .args(env.with_env(&["stock", "set", "SKU-1=100"]))
        .envs(vars)
        .output()
        .unwrap();
    assert!(stock_set.status.success(), "{stock_set:?}");
    env.sagaflow(&["submit", file.to_str().unwrap(), "--raw"]);
    let worker = env.worker_with(&[], &vars);
    let url = worker.admin_url();
    let port = url
        .trim_end_matches('/')
        .rsplit_once(':')
        .unwrap()
        .1
        .to_owned();

    let dead = |id: &str| -> Option<serde_json::Value> {
        env.sagaflow(&["dlq", "list", "--json"])
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| {
                r["body"].as_str().is_some_and(|b| {
                    b.contains(&format!(
                        "\"order_id\":{}",
                        serde_json::Value::String(id.to_owned())
                    ))
                })
            })
    };
    for id in &corpus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(row) = dead(id) {
                assert_eq!(row["reason"], "InvalidOrder", "{id:?}: {row}");
                assert!(
                    row["description"]
                        .as_str()
                        .unwrap()
                        .contains("an order id is 1 to 128 visible ASCII"),
                    "{id:?}: {row}"
                );
                break;
            }
            let listed = env.sagaflow(&["list", "--json"]);
            let status = listed
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|r| r["id"] == id.as_str())
                .map(|r| r["status"].as_str().unwrap_or("").to_owned());
            assert!(
                !matches!(status.as_deref(), Some("compensated" | "parked")),
                "{id:?} was accepted and then failed inside: {listed}"
            );
            if status.as_deref() == Some("completed") {
                // Reachable by the CLI through the API, and by the route
                // the dashboard builds with encodeURIComponent.
                let shown = env.sagaflow(&["--admin", &url, "show", id, "--json"]);
                assert!(shown.contains("\"completed\""), "{id:?}: {shown}");
                let path = format!("/api/sagas/{}", uri_component(id));
                let (status, _, body) = http_get(&format!("127.0.0.1:{port}"), &path);
                assert_eq!(status, 200, "{id:?} {path}: {body}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id:?} neither completed nor was dead-lettered:\n{listed}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    assert!(dead(&long).is_none(), "the 128-character id is valid");
    // No saga was compensated: the door kept out what could not finish.
    let stats = env.sagaflow(&["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(stats.trim()).unwrap();
    assert_eq!(stats["compensated"], 0, "{stats}");
    assert_eq!(stats["completed"], 1, "{stats}");
}

/// `encodeURIComponent` as the dashboard calls it.
fn uri_component(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn an_id_corpus_on_the_embedded_ledger() {
    an_id_corpus_completes_or_is_dead_lettered_with_a_reason("embedded");
}

#[test]
fn an_id_corpus_on_redis() {
    an_id_corpus_completes_or_is_dead_lettered_with_a_reason("redis");
}
