//! Operator commands end to end on both engines, against a running worker:
//! `cancel` of a saga waiting to retry a step before the pivot, `resolve`
//! of a parked compensation, and the audit that records who did what and
//! why. Outcomes are read from the stores (stock) and the saga's history.

use crate::scenarios::{entry, Env};
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
    let mut tweaks = crate::scenarios::SLOW_PROVIDER.to_vec();
    tweaks.push((
        "compensation_retry = { initial_interval = \"100ms\", backoff_coefficient = 2.0, max_interval = \"5s\", max_attempts = 10 }",
        "compensation_retry = { initial_interval = \"10ms\", max_attempts = 2 }",
    ));
    let env = Env::new("resolve", engine, &tweaks);
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

macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $( #[test] fn $scenario() { super::$scenario("embedded") } )*
        }
        mod temporal {
            $( #[test] fn $scenario() { super::$scenario("temporal") } )*
        }
    };
}

on_both_engines!(cancel_on_a_retry_timer, resolve_a_parked_compensation);
