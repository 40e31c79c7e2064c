//! Issue 29: a Temporal worker dies right after the capture's answer and
//! before its result is in history (the test-only fault point
//! `SAGAFLOW_TEST_ABORT_AFTER`), and a second worker takes the saga over.
//!
//! In the default step mode (`checkpointed`) the second worker sends the
//! capture at most once more and no authorize, stock or order call: the
//! steps before the pivot were recorded when the pivot was scheduled. In
//! the all-local opt-in the second worker runs every step again (the test
//! sees the re-runs, so it can tell the modes apart), and the books still
//! balance: every effect is idempotent by its key. Both read the outcome
//! from the stores: the sandbox's ledger and request log, Redis, the order
//! store, and the second worker's own `/metrics`.

use crate::common::*;
use crate::deployment::{read, wait_for, Deployment};
use std::time::{Duration, Instant};

/// The value of one sample line of a Prometheus text page (0 if absent).
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What the second worker did for the saga.
struct Takeover {
    /// Its attempts per step's action, from its `/metrics`.
    attempts: Vec<(&'static str, f64)>,
    /// Its requests to the provider: (authorizations, captures).
    requests: (usize, usize),
}

const STEPS: [(&str, &str); 5] = [
    ("reserve_stock", "stock.reserve"),
    ("authorize_payment", "payment.authorize"),
    ("create_order", "orders.create"),
    ("capture_payment", "payment.capture"),
    ("commit_stock", "stock.commit"),
];

/// Runs one order in a sold-out sale (one unit) under `[temporal] steps =
/// mode`: worker A aborts right after the capture answers, worker B
/// finishes the saga. Checks the books; returns what B did.
fn kill_after_capture(mode: &str) -> Takeover {
    let deployment = Deployment::new(&format!("temporal-kill-{mode}"), mode, &[]);
    let sandbox = &deployment.sandbox;
    deployment.ok(&["stock", "set", "SKU-1=1"]);
    let id = deployment.submit(1).remove(0);

    // Worker A runs the saga up to the capture's answer, and dies.
    let abort = [("SAGAFLOW_TEST_ABORT_AFTER", "payment.capture")];
    let (mut a, log_a) = deployment.worker("worker-a.log", &[], &abort);
    let a_status = wait_for("worker A to abort", Duration::from_secs(120), || {
        a.0.try_wait().unwrap()
    });
    assert!(!a_status.success(), "worker A should have aborted");
    assert!(
        read(&log_a).contains("SAGAFLOW_TEST_ABORT_AFTER=payment.capture"),
        "worker A died elsewhere: {}",
        read(&log_a)
    );
    let seen_before = sandbox.ledger()["requests"].as_array().unwrap().len();
    assert_eq!(
        sandbox.ledger()["ledger"]["succeeded"],
        1,
        "A's capture went through"
    );

    // Worker B takes over.
    let (mut b, log_b) = deployment.worker("worker-b.log", &[], &[]);
    let b_pid = b.0.id();
    let admin = admin_address(&log_b, &mut b.0);
    let began = Instant::now();
    let status = deployment.wait_ended(&id, Duration::from_secs(180));
    eprintln!(
        "{mode}: worker B ended the saga {:?} after it started",
        began.elapsed()
    );
    let (_, _, metrics) = http_get(&admin, "/metrics");
    drop(b);
    assert_eq!(status, "completed", "worker B:\n{}", read(&log_b));

    // The provider's books: one intent, captured once.
    let books = sandbox.ledger();
    let l = &books["ledger"];
    assert_eq!(
        (l["intents"].as_i64(), l["succeeded"].as_i64()),
        (Some(1), Some(1)),
        "{books}"
    );
    assert_eq!(l["double_captures"], 0, "{books}");
    assert_eq!(l["captured_amount"], 1999, "{books}");
    // The stock in Redis: the one unit sold, nothing held.
    let stock = deployment.stock();
    assert_eq!(
        (
            stock["sold"].as_i64(),
            stock["reserved"].as_i64(),
            stock["available"].as_i64()
        ),
        (Some(1), Some(0), Some(0)),
        "{stock}"
    );
    assert_eq!(stock["inconsistent"], false);
    // One live order document.
    let orders = rusqlite::Connection::open(deployment.data.join("orders.db")).unwrap();
    let created: i64 = orders
        .query_row(
            "SELECT COUNT(*) FROM orders WHERE status = 'created'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(created, 1);

    let from_b = format!("pid {b_pid})");
    let after = &books["requests"].as_array().unwrap()[seen_before..];
    let by_b = |path: &dyn Fn(&str) -> bool| {
        after
            .iter()
            .filter(|r| {
                path(r["path"].as_str().unwrap())
                    && r["client"].as_str().unwrap_or("").ends_with(&from_b)
            })
            .count()
    };
    let requests = (
        by_b(&|p| p == "/v1/payment_intents"),
        by_b(&|p| p.ends_with("/capture")),
    );
    let attempts = STEPS
        .iter()
        .map(|(step, activity)| {
            let series = format!(
                r#"sagaflow_step_attempts_total{{step="{step}",activity="{activity}",phase="action"}}"#
            );
            (*step, sample(&metrics, &series))
        })
        .collect();
    Takeover { attempts, requests }
}

fn attempts(t: &Takeover, step: &str) -> f64 {
    t.attempts.iter().find(|(s, _)| *s == step).unwrap().1
}

#[test]
fn checkpointed_a_takeover_after_the_capture_re_runs_nothing_before_it() {
    let t = kill_after_capture("checkpointed");
    let (authorizations, captures) = t.requests;
    assert_eq!(authorizations, 0, "worker B authorized again");
    assert!(captures <= 1, "worker B captured {captures} times");
    for step in ["reserve_stock", "authorize_payment", "create_order"] {
        assert_eq!(
            attempts(&t, step),
            0.0,
            "worker B ran {step}: {:?}",
            t.attempts
        );
    }
    assert!(attempts(&t, "capture_payment") <= 1.0, "{:?}", t.attempts);
    assert_eq!(attempts(&t, "commit_stock"), 1.0, "{:?}", t.attempts);
}

#[test]
fn all_local_a_takeover_after_the_capture_re_runs_the_chain() {
    let t = kill_after_capture("local");
    let (authorizations, captures) = t.requests;
    assert!(authorizations >= 1, "worker B did not authorize again");
    assert!(captures >= 1, "worker B did not capture again");
    for step in [
        "reserve_stock",
        "authorize_payment",
        "create_order",
        "capture_payment",
    ] {
        assert!(
            attempts(&t, step) >= 1.0,
            "worker B did not re-run {step}: {:?}",
            t.attempts
        );
    }
}
