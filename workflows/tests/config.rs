//! Saga definitions in `sagas.toml`: the shipped file's sagas load, and each
//! broken file in `tests/broken/` fails with its exact message (file, line,
//! place, what to change). The deployment profile's own checks, and the
//! whole file through the worker's loader, are tested in
//! `worker/src/config/tests.rs`.

use sagaflow_workflows::config::parse_sagas;
use std::path::{Path, PathBuf};

const REGISTERED: [&str; 11] = [
    "noop.ok",
    "orders.cancel",
    "orders.create",
    "payment.authorize",
    "payment.capture",
    "payment.refund",
    "payment.void",
    "stock.commit",
    "stock.release",
    "stock.reserve",
    "stock.return",
];

fn broken(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/broken")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let shown = Path::new("tests/broken").join(name);
    match parse_sagas(&text, &shown, &REGISTERED) {
        Ok(_) => panic!("{name} should not load"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn shipped_sagas_load() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sagas.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let sagas = parse_sagas(&text, &path, &REGISTERED).unwrap_or_else(|e| panic!("{e}"));
    let checkout = &sagas["checkout"];
    let names: Vec<&str> = checkout.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "reserve_stock",
            "authorize_payment",
            "create_order",
            "capture_payment",
            "commit_stock"
        ]
    );
    assert_eq!(checkout.pivot, Some(3));
    assert_eq!(checkout.steps[0].timeout_ms, 2_000);
    assert_eq!(checkout.steps[1].retry.non_retryable, ["card_declined"]);
    assert_eq!(
        checkout.steps[4].retry.max_attempts, 0,
        "commit_stock retries until it succeeds"
    );
}

#[test]
fn unknown_key() {
    assert_eq!(
        broken("unknown_key.toml"),
        "tests/broken/unknown_key.toml:15: unknown field `timout`, expected one of `name`, `action`, `compensation`, `timeout`, `compensation_timeout`, `max_wait`, `retry`; remove the key or fix its spelling"
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        broken("bad_duration.toml"),
        "tests/broken/bad_duration.toml:15: saga checkout, step reserve: timeout: invalid duration \"2 seconds\": unknown unit \" seconds\"; write a whole number followed by ms, s, m, h or d, e.g. \"250ms\" or \"2s\""
    );
}

#[test]
fn unregistered_activity() {
    assert_eq!(
        broken("unregistered_activity.toml"),
        "tests/broken/unregistered_activity.toml:13: saga checkout, step reserve: action stock.reserv is not a registered activity; did you mean stock.reserve? registered: noop.ok, orders.cancel, orders.create, payment.authorize, payment.capture, payment.refund, payment.void, stock.commit, stock.release, stock.reserve, stock.return"
    );
}

#[test]
fn step_before_pivot_without_compensation() {
    assert_eq!(
        broken("missing_compensation.toml"),
        "tests/broken/missing_compensation.toml:12: saga checkout, step reserve: comes before the pivot (capture) but has no compensation; add compensation = \"ACTIVITY\" so it can be undone, or move the pivot"
    );
}

#[test]
fn compensation_after_pivot() {
    assert_eq!(
        broken("compensation_after_pivot.toml"),
        "tests/broken/compensation_after_pivot.toml:23: saga checkout, step commit: has a compensation but comes after the pivot (capture), where the saga only goes forward; remove the compensation or move the pivot later"
    );
}

#[test]
fn duplicate_step_names() {
    assert_eq!(
        broken("duplicate_step.toml"),
        "tests/broken/duplicate_step.toml:17: saga checkout, step reserve: duplicate step name (first defined on line 12); step names must be unique within a saga, rename one"
    );
}

#[test]
fn pivot_that_is_not_a_step() {
    assert_eq!(
        broken("unknown_pivot.toml"),
        "tests/broken/unknown_pivot.toml:9: saga checkout: pivot \"capture_payment\" is not a step of this saga; use one of: reserve, capture"
    );
}

#[test]
fn bad_retry_policy_reports_every_problem() {
    assert_eq!(
        broken("bad_retry.toml"),
        "tests/broken/bad_retry.toml:15: saga checkout, step reserve: retry.max_interval (100ms) is shorter than retry.initial_interval (1000ms); raise max_interval\n\
         tests/broken/bad_retry.toml:15: saga checkout, step reserve: retry.backoff_coefficient is 0.5; use 1.0 or more (1.0 keeps the delay constant)"
    );
}

#[test]
fn wrong_value_type() {
    assert_eq!(
        broken("wrong_type.toml"),
        "tests/broken/wrong_type.toml:14: invalid type: integer `5`, expected a string; see the comments in the shipped sagas.toml for each key's type (durations are strings such as \"2s\")"
    );
}
