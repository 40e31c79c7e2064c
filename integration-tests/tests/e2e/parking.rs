use crate::common::*;

#[test]
fn failing_compensation_parks_and_an_operator_retry_finishes_it_after_a_restart() {
    let dir = data_dir("park");
    let d = dir.to_str().unwrap();
    // The provider answers after 300ms; authorize and void give up after
    // 100ms, twice. So authorize times out (its outcome unknown), the saga
    // compensates, and the void keeps timing out: the saga must park.
    let slow = config_with(
        &dir,
        &[
            ("latency = \"0ms\"", "latency = \"300ms\""),
            (
                "compensation_retry = { initial_interval = \"100ms\", backoff_coefficient = 2.0, max_interval = \"5s\", max_attempts = 10 }",
                "compensation_retry = { initial_interval = \"10ms\", max_attempts = 2 }",
            ),
            (
                "timeout = \"10s\"\nretry = { initial_interval = \"100ms\", backoff_coefficient = 2.0, max_interval = \"5s\", max_attempts = 5, non_retryable = [\"card_declined\"] }",
                "timeout = \"100ms\"\nretry = { initial_interval = \"10ms\", max_attempts = 2, non_retryable = [\"card_declined\"] }",
            ),
        ],
    );
    let slow = slow.to_str().unwrap();
    sagaflow_ok(&["stock", "set", "SKU-1=3", "--data", d, "--config", slow]);
    let order = dir.join("order.json");
    std::fs::write(
        &order,
        r#"{"order_id":"o-park","customer":"c1","items":[{"sku":"SKU-1","qty":1}],"amount":500,"currency":"usd","payment_method":"pm_card_visa"}"#,
    )
    .unwrap();
    sagaflow_ok(&[
        "submit",
        order.to_str().unwrap(),
        "--data",
        d,
        "--config",
        slow,
    ]);
    sagaflow_ok(&["run", "--until-idle", "--data", d, "--config", slow]);

    let parked = sagaflow_ok(&["list", "--status", "parked", "--json", "--data", d]);
    let row: serde_json::Value =
        serde_json::from_str(parked.lines().next().expect("one parked saga")).unwrap();
    assert_eq!(row["id"], "o-park");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("compensation of step authorize_payment (payment.void) failed after 2 attempt(s): timeout"),
        "{reason}"
    );
    let show = sagaflow_ok(&["show", "o-park", "--data", d]);
    assert!(
        show.contains("status parked") && show.contains("payment.void"),
        "{show}"
    );
    // Stock stays reserved while parked: nothing was released behind the operator's back.
    let stock = sagaflow_ok(&["stock", "show", "--json", "--data", d]);
    assert!(stock.contains("\"reserved\":1"), "{stock}");

    // The operator fixes the provider (restart without the latency) and retries.
    sagaflow_ok(&["signal", "o-park", "retry", "--data", d]);
    sagaflow_ok(&["run", "--until-idle", "--data", d]);

    let show =
        json_line(&sagaflow_ok(&["show", "o-park", "--json", "--data", d]).replace('\n', ""));
    assert_eq!(show["saga"]["status"], "compensated", "{show}");
    let void = show["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["activity"] == "payment.void")
        .unwrap();
    assert_eq!(void["status"], "ok");
    assert_eq!(
        void["attempts"], 3,
        "two timed out, the operator's retry succeeded: {void}"
    );
    let stock = sagaflow_ok(&["stock", "show", "--json", "--data", d]);
    assert!(
        stock.contains("\"reserved\":0") && stock.contains("\"available\":3"),
        "{stock}"
    );
    let history = sagaflow_ok(&["history", "o-park", "--data", d]);
    assert!(
        history.contains("signal") && history.contains("retry"),
        "{history}"
    );
}
