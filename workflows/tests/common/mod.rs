//! The checkout saga as `sagas.toml` defines it, and the helpers that build
//! steps and policies, for the interpreter's test binaries.

// Each test binary uses a part of it.
#![allow(dead_code)]

use sagaflow_workflows::{RetryPolicy, SagaDef, StepDef};

pub mod drive;

/// A retry policy of `max_attempts` with `non_retryable` kinds.
pub fn policy(max_attempts: u32, non_retryable: &[&str]) -> RetryPolicy {
    RetryPolicy {
        initial_interval_ms: 100,
        backoff_coefficient: 2.0,
        max_interval_ms: 1_000,
        max_attempts,
        non_retryable: non_retryable.iter().map(|s| s.to_string()).collect(),
        jitter: 0.2,
    }
}

/// A step with a 1 s timeout.
pub fn step(name: &str, action: &str, compensation: Option<&str>, retry: RetryPolicy) -> StepDef {
    StepDef {
        name: name.into(),
        action: action.into(),
        compensation: compensation.map(Into::into),
        timeout_ms: 1_000,
        compensation_timeout_ms: None,
        max_wait_ms: None,
        settle_ms: None,
        retry,
    }
}

/// The checkout saga as sagas.toml defines it.
pub fn checkout() -> SagaDef {
    SagaDef {
        name: "checkout".into(),
        steps: vec![
            step(
                "reserve_stock",
                "stock.reserve",
                Some("stock.release"),
                policy(5, &["out_of_stock"]),
            ),
            step(
                "authorize_payment",
                "payment.authorize",
                Some("payment.void"),
                policy(5, &["card_declined"]),
            ),
            step(
                "create_order",
                "orders.create",
                Some("orders.cancel"),
                policy(5, &[]),
            ),
            step("capture_payment", "payment.capture", None, policy(5, &[])),
            step("commit_stock", "stock.commit", None, policy(3, &[])),
        ],
        pivot: Some(3),
        compensation_retry: policy(4, &[]),
    }
}
