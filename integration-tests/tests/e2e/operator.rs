//! Operator commands end to end on both engines, against a running worker:
//! `cancel` of a saga waiting to retry a step before the pivot, `resolve`
//! of a parked compensation, `refund` of a completed checkout, and the audit
//! that records who did what and why. Outcomes are read from the stores (stock) and the saga's history.

use crate::scenarios::{entry, on_both_engines, Env};
use serde_json::Value;

/// The provider answers after 300ms; an authorize attempt gives up after
/// 100ms and waits a minute before the next, so the saga sits on a retry
/// timer before its pivot. Its void has two seconds: it succeeds.
const AUTHORIZE_WAITS: [(&str, &str); 2] = [
    ("latency = \"0ms\"", "latency = \"300ms\""),
    (
        "timeout = \"10s\"\nretry = { initial_interval = \"100ms\", backoff_coefficient = 2.0, max_interval = \"5s\", max_attempts = 5, non_retryable = [\"card_declined\"] }",
        "timeout = \"100ms\"\ncompensation_timeout = \"2s\"\nretry = { initial_interval = \"60s\", max_interval = \"60s\", max_attempts = 3, non_retryable = [\"card_declined\"] }",
    ),
];

fn audit_rows(env: &Env, id: &str) -> Vec<Value> {
    env.sagaflow(&["audit", "--saga", id, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn cancel_on_a_retry_timer(engine: &str) {
    let env = Env::new("cancel", engine, &AUTHORIZE_WAITS);
    env.sagaflow(&["stock", "set", "SKU-1=2"]);
    let id = env.submit("o1", "pm_card_visa");
    let worker = env.worker();
    // The first authorize attempt has timed out; the next is a minute away.
    env.wait_until(&id, |show| {
        show["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["step"] == "authorize_payment" && t["attempts"] == 1)
    });
    // Not parked: a retry does not apply, and nothing is kept.
    let err = env.sagaflow_fails(&["retry", &id, "--reason", "too early"]);
    assert!(err.contains("still trying on its own"), "{err}");
    let applied = env.sagaflow(&[
        "cancel",
        &id,
        "--reason",
        "customer cancelled on the phone",
        "--operator",
        "bob",
    ]);
    assert!(applied.starts_with("cancel applied to saga"), "{applied}");
    let show = env.wait_status(&id, "compensated");
    drop(worker);
    let (_, rows) = env.timeline(&id);
    let authorize = entry(&rows, "authorize_payment", "action");
    assert_eq!(
        authorize.3, 1,
        "no second attempt after the cancel: {rows:?}"
    );
    // The attempt timed out, so it may have authorized: voided, then the
    // stock released, in reverse.
    let undone: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.1 == "compensation")
        .map(|r| (r.0.as_str(), r.2.as_str()))
        .collect();
    assert_eq!(
        undone,
        [("authorize_payment", "ok"), ("reserve_stock", "ok")],
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .filter(|r| r.1 == "action" && r.0 != "reserve_stock" && r.0 != "authorize_payment")
            .all(|r| r.2 == "pending"),
        "{rows:?}"
    );
    let stock = env.stock();
    assert_eq!(
        (stock["available"].as_i64(), stock["reserved"].as_i64()),
        (Some(2), Some(0)),
        "{stock}"
    );
    let commands = show["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 1, "{show}");
    assert_eq!(
        (
            &commands[0]["command"],
            &commands[0]["operator"],
            &commands[0]["reason"]
        ),
        (
            &Value::from("cancel"),
            &Value::from("bob"),
            &Value::from("customer cancelled on the phone")
        )
    );
    let audit = audit_rows(&env, &id);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (
            &audit[0]["command"],
            &audit[0]["outcome"],
            &audit[0]["operator"]
        ),
        (
            &Value::from("cancel"),
            &Value::from("applied"),
            &Value::from("bob")
        )
    );
    // It has ended: a second cancel is refused.
    let err = env.sagaflow_fails(&["cancel", &id, "--reason", "twice"]);
    assert!(err.contains("it has ended"), "{err}");
}

fn resolve_a_parked_compensation(engine: &str) {
    let env = Env::new("resolve", engine, &crate::scenarios::VOID_PARKS);
    env.sagaflow(&["stock", "set", "SKU-1=3"]);
    let id = env.submit("o1", "pm_card_visa");
    let worker = env.worker();
    env.wait_status(&id, "parked");
    // The wrong step is refused with the one to name.
    let err = env.sagaflow_fails(&[
        "resolve",
        &id,
        "--step",
        "reserve_stock",
        "--reason",
        "wrong step",
    ]);
    assert!(err.contains("pass --step authorize_payment"), "{err}");
    let err = env.sagaflow_fails(&["cancel", &id, "--reason", "no"]);
    assert!(err.contains("already compensating"), "{err}");
    let applied = env.sagaflow(&[
        "resolve",
        &id,
        "--step",
        "authorize_payment",
        "--reason",
        "voided by hand in the provider dashboard",
    ]);
    assert!(applied.starts_with("resolve applied to saga"), "{applied}");
    env.wait_status(&id, "compensated");
    drop(worker);
    let (_, rows) = env.timeline(&id);
    let void = entry(&rows, "authorize_payment", "compensation");
    assert_eq!(
        (void.2.as_str(), void.3),
        ("resolved", 2),
        "not voided again by sagaflow: {rows:?}"
    );
    assert_eq!(entry(&rows, "reserve_stock", "compensation").2, "ok");
    let stock = env.stock();
    assert_eq!(
        (stock["available"].as_i64(), stock["reserved"].as_i64()),
        (Some(3), Some(0)),
        "{stock}"
    );
    let history = env.sagaflow(&["history", &id, "--json"]);
    assert!(
        history.contains("voided by hand in the provider dashboard"),
        "the reason is in the history: {history}"
    );
}

/// One row of a store in the data directory, read with SQLite directly.
fn store_row<T: rusqlite::types::FromSql>(env: &Env, file: &str, sql: &str, id: &str) -> T {
    let conn = rusqlite::Connection::open(env.dir.join(file)).unwrap();
    conn.query_row(sql, [id], |r| r.get(0)).unwrap()
}

fn refund_of_a_completed_checkout(engine: &str) {
    let env = Env::new("refund", engine, &[]);
    env.sagaflow(&["stock", "set", "SKU-1=3"]);
    let id = env.submit("o1", "pm_card_visa");
    env.run_until_idle();
    assert_eq!(env.show(&id)["saga"]["status"], "completed");
    assert_eq!(
        (
            env.stock()["available"].as_i64(),
            env.stock()["sold"].as_i64()
        ),
        (Some(2), Some(1))
    );
    let worker = env.worker();
    let started = env.sagaflow(&[
        "refund",
        &id,
        "--reason",
        "customer returned the goods",
        "--operator",
        "carol",
    ]);
    let refund = format!("{id}#refund");
    assert!(
        started.contains(&format!("started as saga {refund}")),
        "{started}"
    );
    let show = env.wait_status(&refund, "completed");
    drop(worker);
    assert_eq!(show["refund_of"]["saga_id"], id.as_str(), "{show}");
    assert_eq!(show["refund_of"]["operator"], "carol", "{show}");
    let original = env.show(&id);
    assert_eq!(original["refunded_by"]["id"], refund.as_str(), "{original}");

    // The provider refunded the captured amount, once.
    let refunded: i64 = store_row(
        &env,
        "payments.db",
        "SELECT SUM(i.amount_refunded) FROM intents i JOIN intent_metadata m ON m.intent_rowid = i.rowid
         WHERE m.key = 'order_id' AND m.value = ?1",
        &id,
    );
    assert_eq!(refunded, 1999);
    let refunds: i64 = store_row(
        &env,
        "payments.db",
        "SELECT COUNT(*) FROM refunds r JOIN intents i ON i.id = r.payment_intent
         JOIN intent_metadata m ON m.intent_rowid = i.rowid WHERE m.key = 'order_id' AND m.value = ?1",
        &id,
    );
    assert_eq!(refunds, 1);
    // The unit is back on the shelf, and the order document cancelled.
    let available: i64 = store_row(
        &env,
        "stock.db",
        "SELECT available FROM stock WHERE sku = ?1",
        "SKU-1",
    );
    let sold: i64 = store_row(
        &env,
        "stock.db",
        "SELECT sold FROM stock WHERE sku = ?1",
        "SKU-1",
    );
    assert_eq!((available, sold), (3, 0));
    let order: String = store_row(
        &env,
        "orders.db",
        "SELECT status FROM orders WHERE id = ?1",
        &id,
    );
    assert_eq!(order, "cancelled");
    let audit = audit_rows(&env, &id);
    assert!(
        audit.iter().any(|a| a["command"] == "refund"
            && a["operator"] == "carol"
            && a["reason"] == "customer returned the goods"),
        "{audit:?}"
    );

    // A second refund finds the first and changes nothing.
    let again = env.sagaflow(&["refund", &id, "--reason", "twice by mistake"]);
    assert!(again.contains("has a refund already"), "{again}");
    let refunds_after: i64 = store_row(
        &env,
        "payments.db",
        "SELECT COUNT(*) FROM refunds WHERE ?1 = ?1",
        "x",
    );
    assert_eq!(refunds_after, 1);
    assert_eq!(env.stock()["available"].as_i64(), Some(3));
    // A refund is not refunded in turn.
    let err = env.sagaflow_fails(&["refund", &refund, "--reason", "refund the refund"]);
    assert!(err.contains("is itself the refund of saga"), "{err}");
}

on_both_engines!(
    cancel_on_a_retry_timer,
    resolve_a_parked_compensation,
    refund_of_a_completed_checkout,
    bulk_retry_with_a_dry_run_and_a_resume,
    bulk_refund_with_a_dry_run_and_a_second_run,
);

/// How many commands of bulk run `bulk` saga `id` received, from its
/// history (the journal's, or the Temporal history translated).
fn bulk_commands(env: &Env, id: &str, bulk: &str) -> usize {
    let history: Value = serde_json::from_str(&env.sagaflow(&["history", id, "--json"])).unwrap();
    history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "signal" && e["body"]["bulk"] == bulk)
        .count()
}

fn bulk_retry_with_a_dry_run_and_a_resume(engine: &str) {
    const ORDERS: usize = 12;
    let env = Env::new("bulk", engine, &crate::scenarios::VOID_PARKS);
    env.sagaflow(&["stock", "set", "SKU-1=100"]);
    let ids: Vec<String> = (0..ORDERS)
        .map(|i| env.submit(&format!("o{i}"), "pm_card_visa"))
        .collect();
    env.run_until_idle();
    for id in &ids {
        assert_eq!(env.show(id)["saga"]["status"], "parked", "{id}");
    }
    let terms = "status=parked and step=authorize_payment and error~timeout";
    let dry = env.sagaflow(&["retry", "--where", terms, "--dry-run", "--json"]);
    let mut listed: Vec<String> = dry
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .filter(|id| id.starts_with(&ids[0][..ids[0].len() - 2]))
        .collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(
        listed, expected,
        "the dry run lists exactly the parked sagas"
    );
    let none = env.sagaflow(&[
        "retry",
        "--where",
        "status=parked and step=commit_stock",
        "--dry-run",
    ]);
    assert!(none.contains("to 0 saga(s)"), "{none}");

    // The provider is fixed; the bulk retry, at a rate, then a resume.
    let fixed = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("latency = \"300ms\"", "latency = \"0ms\"");
    std::fs::write(&env.config, fixed).unwrap();
    let worker = env.worker();
    let bulk = format!("b-{engine}-{}", std::process::id());
    let out = env.sagaflow(&[
        "retry",
        "--where",
        terms,
        "--reason",
        "provider fixed",
        "--operator",
        "dana",
        "--rate",
        "50",
        "--bulk-id",
        &bulk,
        "--json",
    ]);
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["refused"], 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    for id in &ids {
        env.wait_status(id, "compensated");
    }
    // A resume needs a reason too (it is audited under its own), and its
    // dry run lists the plan and sends nothing.
    let err = env.sagaflow_fails(&["retry", "--resume", &bulk, "--json"]);
    assert!(err.contains("--reason"), "{err}");
    let planned = env.sagaflow(&["retry", "--resume", &bulk, "--dry-run", "--json"]);
    assert_eq!(planned.lines().count(), ids.len(), "{planned}");
    let again = env.sagaflow(&[
        "retry",
        "--resume",
        &bulk,
        "--json",
        "--operator",
        "erin",
        "--reason",
        "anything left?",
    ]);
    let again: Value = serde_json::from_str(again.trim()).unwrap();
    assert_eq!(again["failed"], 0, "{again}");
    drop(worker);
    for id in &ids {
        assert_eq!(
            bulk_commands(&env, id, &bulk),
            1,
            "{id} commanded exactly once"
        );
        let show = env.show(id);
        assert_eq!(show["commands"][0]["operator"], "dana", "{show}");
    }
    let stock = env.stock();
    assert_eq!(
        (stock["available"].as_i64(), stock["reserved"].as_i64()),
        (Some(100), Some(0)),
        "{stock}"
    );
}

fn bulk_refund_with_a_dry_run_and_a_second_run(engine: &str) {
    const SOLD: usize = 4;
    let env = Env::new("bulk-refund", engine, &[]);
    env.sagaflow(&["stock", "set", "SKU-1=10"]);
    let sold: Vec<String> = (0..SOLD)
        .map(|i| env.submit(&format!("o{i}"), "pm_card_visa"))
        .collect();
    let declined = env.submit("declined", "pm_card_chargeDeclined");
    env.run_until_idle();
    assert_eq!(env.show(&declined)["saga"]["status"], "compensated");
    let terms = "saga=checkout and status=completed";
    let mut listed: Vec<String> = env
        .sagaflow(&["refund", "--where", terms, "--dry-run", "--json"])
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed, sold,
        "the dry run lists exactly the completed checkouts"
    );

    let worker = env.worker();
    let bulk = format!("r-{engine}-{}", std::process::id());
    let out = env.sagaflow(&[
        "refund",
        "--where",
        terms,
        "--reason",
        "recall of SKU-1",
        "--operator",
        "gina",
        "--bulk-id",
        &bulk,
        "--json",
    ]);
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (
            summary["command"].as_str(),
            summary["sent"].as_u64(),
            summary["refused"].as_u64()
        ),
        (Some("refund"), Some(SOLD as u64), Some(0)),
        "{summary}"
    );
    for id in &sold {
        let show = env.wait_status(&format!("{id}#refund"), "completed");
        assert_eq!(
            (&show["refund_of"]["operator"], &show["refund_of"]["reason"]),
            (&Value::from("gina"), &Value::from("recall of SKU-1"))
        );
    }
    // Resumed, or run again under another id: every refund exists, none
    // is started twice.
    let again = env.sagaflow(&[
        "refund",
        "--resume",
        &bulk,
        "--json",
        "--operator",
        "gina",
        "--reason",
        "again",
    ]);
    let again: Value = serde_json::from_str(again.trim()).unwrap();
    assert_eq!(
        (again["already"].as_u64(), again["sent"].as_u64()),
        (Some(SOLD as u64), Some(0)),
        "{again}"
    );
    let other = env.sagaflow(&[
        "refund",
        "--where",
        "saga=checkout and status=completed",
        "--reason",
        "twice by mistake",
        "--json",
    ]);
    let other: Value = serde_json::from_str(other.trim()).unwrap();
    assert_eq!(
        (other["already"].as_u64(), other["sent"].as_u64()),
        (Some(SOLD as u64), Some(0)),
        "{other}"
    );
    drop(worker);
    let refunds: i64 = store_row(
        &env,
        "payments.db",
        "SELECT COUNT(*) FROM refunds WHERE ?1 = ?1",
        "x",
    );
    assert_eq!(refunds, SOLD as i64, "one refund per sale at the provider");
    let (available, sold_units): (i64, i64) = (
        store_row(
            &env,
            "stock.db",
            "SELECT available FROM stock WHERE sku = ?1",
            "SKU-1",
        ),
        store_row(
            &env,
            "stock.db",
            "SELECT sold FROM stock WHERE sku = ?1",
            "SKU-1",
        ),
    );
    assert_eq!(
        (available, sold_units),
        (10, 0),
        "every unit back on the shelf"
    );
}
