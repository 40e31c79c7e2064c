//! The fault knobs: injected 500s on either side of the effect, latency,
//! latency spikes, outages, requests held past the client's limit, search
//! lag, and changing knobs over the admin call while the sandbox serves.

mod common;

use common::*;
use sagaflow_payment_sandbox::ErrorSide;
use std::time::Duration;

#[tokio::test]
async fn injected_before_failures_change_nothing() {
    let f = Fixture::new("before").await;
    f.sandbox.set_error_rate(1.0);
    f.sandbox.set_error_side(ErrorSide::Before);
    let failed = f.create("s/authorize", "o", "pm_card_visa").await;
    assert_eq!(failed.status, 500);
    assert_eq!(failed.body["error"]["type"], "api_error");
    assert_eq!(failed.header("stripe-should-retry"), Some("true"));
    assert_eq!(f.ledger().intents, 0);
    // GETs never fail by injection.
    let search = f
        .get("/v1/payment_intents/search?query=metadata%5B%27order_id%27%5D%3A%27o%27")
        .await;
    assert_eq!(search.status, 200);
    f.sandbox.set_error_rate(0.0);
    let retried = f.create("s/authorize", "o", "pm_card_visa").await;
    assert_eq!(retried.status, 200);
    assert_eq!(retried.header("idempotent-replayed"), None);
    assert_eq!(f.ledger().intents, 1);
}

#[tokio::test]
async fn injected_after_failures_apply_and_replay_the_500() {
    let f = Fixture::new("after").await;
    f.sandbox.set_error_rate(1.0);
    f.sandbox.set_error_side(ErrorSide::After);
    let failed = f.create("s/authorize", "o", "pm_card_visa").await;
    assert_eq!(failed.status, 500);
    assert_eq!(failed.header("stripe-should-retry"), Some("false"));
    assert_eq!(f.ledger().requires_capture, 1, "the effect was applied");
    f.sandbox.set_error_rate(0.0);
    let replay = f.create("s/authorize", "o", "pm_card_visa").await;
    assert_eq!(replay.status, 500);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.header("stripe-should-retry"), Some("false"));
    assert_eq!(f.ledger().intents, 1);
}

#[tokio::test]
async fn random_injection_hits_both_sides() {
    let f = Fixture::new("random").await;
    f.sandbox.set_error_rate(1.0);
    let mut sides = (0, 0);
    for i in 0..64 {
        let answer = f
            .create(&format!("s{i}/authorize"), &format!("o{i}"), "pm_card_visa")
            .await;
        assert_eq!(answer.status, 500);
        match answer.header("stripe-should-retry") {
            Some("true") => sides.0 += 1,
            Some("false") => sides.1 += 1,
            other => panic!("unexpected Stripe-Should-Retry {other:?}"),
        }
    }
    assert!(sides.0 > 0 && sides.1 > 0, "{sides:?}");
    assert_eq!(f.ledger().intents, sides.1);
    f.sandbox.set_error_rate(0.5);
    let mut ok = 0;
    for i in 0..64 {
        let answer = f
            .create(&format!("t{i}/authorize"), &format!("t{i}"), "pm_card_visa")
            .await;
        ok += u32::from(answer.status == 200);
    }
    assert!(
        (8..=56).contains(&ok),
        "about half succeed at rate 0.5, got {ok}"
    );
}

#[tokio::test]
async fn latency_delays_answers() {
    let f = Fixture::new("latency").await;
    f.sandbox.set_latency_ms(80);
    let started = std::time::Instant::now();
    f.get("/v1/payment_intents/pi_x").await;
    assert!(started.elapsed() >= Duration::from_millis(80));
}

#[tokio::test]
async fn an_outage_answers_503_applies_nothing_and_ends_on_time() {
    let f = Fixture::new("outage").await;
    let knobs = f.knobs(serde_json::json!({"outage_ms": 400})).await;
    assert_eq!(knobs.status, 200, "{}", knobs.body);
    assert!(knobs.body["outage_ms"].as_u64().unwrap() > 0);
    let down = f.create("s/authorize", "o", "pm_card_visa").await;
    assert_eq!(down.status, 503);
    assert_eq!(down.body["error"]["type"], "api_error");
    assert_eq!(down.header("stripe-should-retry"), Some("true"));
    assert_eq!(f.get("/v1/payment_intents/pi_x").await.status, 503);
    assert_eq!(f.ledger().intents, 0, "nothing applied during the outage");
    // Each request turned away is kept with its client, for counting a
    // worker's calls during an outage.
    let turned = f
        .send(
            f.http
                .get(format!("{}/_sandbox/turned_away", f.sandbox.base_url()))
                .bearer_auth(KEY),
        )
        .await;
    assert_eq!(turned.status, 200, "{}", turned.body);
    let requests = turned.body["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{}", turned.body);
    assert!(requests[0][0].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(requests[0][2], "POST /v1/payment_intents");
    assert_eq!(requests[1][2], "GET /v1/payment_intents/pi_x");
    assert_eq!(f.sandbox.turned_away().requests.len(), 2);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let up = f.create("s/authorize", "o", "pm_card_visa").await;
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(
        up.header("idempotent-replayed"),
        None,
        "the 503 was not stored"
    );
    // An outage without an end in sight is ended by the admin call.
    f.knobs(serde_json::json!({"outage_ms": 3_600_000})).await;
    assert_eq!(
        f.create("s2/authorize", "o2", "pm_card_visa").await.status,
        503
    );
    let ended = f.knobs(serde_json::json!({"outage_ms": 0})).await;
    assert_eq!(ended.body["outage_ms"], 0);
    assert_eq!(
        f.create("s2/authorize", "o2", "pm_card_visa").await.status,
        200
    );
    assert_eq!(f.ledger().intents, 2);
}

#[tokio::test]
async fn a_held_request_is_applied_and_answered_past_the_clients_limit() {
    let f = Fixture::new("timeout").await;
    f.knobs(serde_json::json!({"timeout_rate": 1.0, "timeout_ms": 1_500}))
        .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = impatient
        .post(format!("{}/v1/payment_intents", f.sandbox.base_url()))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "s/authorize")
        .form(&[
            ("amount", "1250"),
            ("currency", "usd"),
            ("capture_method", "manual"),
            ("confirm", "true"),
            ("payment_method", "pm_card_visa"),
            ("metadata[order_id]", "o"),
            ("metadata[idempotency_key]", "s/authorize"),
        ])
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(
        f.ledger().requires_capture,
        1,
        "the effect was applied although the client gave up"
    );
    f.knobs(serde_json::json!({"timeout_rate": 0.0})).await;
    let retried = f.create("s/authorize", "o", "pm_card_visa").await;
    assert_eq!(retried.status, 200);
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(f.ledger().intents, 1);
}

#[tokio::test]
async fn latency_spikes_delay_the_requests_they_hit() {
    let f = Fixture::new("spike").await;
    f.knobs(serde_json::json!({"spike_rate": 1.0, "spike_ms": 250}))
        .await;
    let started = std::time::Instant::now();
    f.get("/v1/payment_intents/pi_x").await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    f.knobs(serde_json::json!({"spike_rate": 0.0})).await;
    let started = std::time::Instant::now();
    f.get("/v1/payment_intents/pi_x").await;
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "no spike at rate 0"
    );
}

#[tokio::test]
async fn search_results_trail_writes_by_the_lag() {
    let f = Fixture::new("search-lag").await;
    f.knobs(serde_json::json!({"search_lag_ms": 500})).await;
    let search = "/v1/payment_intents/search?query=metadata%5B%27order_id%27%5D%3A%27o%27";
    let created = f.create("s/authorize", "o", "pm_card_visa").await;
    assert_eq!(created.status, 200);
    let early = f.get(search).await;
    assert_eq!(early.status, 200);
    assert_eq!(early.body["data"].as_array().unwrap().len(), 0, "not yet");
    let pi = id(&created);
    assert_eq!(
        f.get(&format!("/v1/payment_intents/{pi}")).await.status,
        200,
        "reading by id does not lag"
    );
    tokio::time::sleep(Duration::from_millis(550)).await;
    let late = f.get(search).await;
    assert_eq!(late.body["data"][0]["id"], pi.as_str());
    f.knobs(serde_json::json!({"search_lag_ms": 0})).await;
    f.create("s2/authorize", "o", "pm_card_visa").await;
    assert_eq!(
        f.get(search).await.body["data"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn knobs_are_read_and_changed_over_the_admin_call() {
    let f = Fixture::new("admin").await;
    let read = f
        .send(
            f.http
                .get(format!("{}/_sandbox/knobs", f.sandbox.base_url()))
                .bearer_auth(KEY),
        )
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["error_rate"], 0.0);
    assert_eq!(read.body["error_side"], "both");
    let changed = f
        .knobs(serde_json::json!({"latency_ms": 5, "error_side": "after"}))
        .await;
    assert_eq!(changed.body["latency_ms"], 5);
    assert_eq!(f.sandbox.knobs().latency_ms, 5);
    assert_eq!(f.sandbox.knobs().error_side, ErrorSide::After);
    let bad_rate = f.knobs(serde_json::json!({"spike_rate": 1.5})).await;
    assert_eq!(bad_rate.status, 400);
    assert!(bad_rate.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("spike_rate"));
    let unknown = f.knobs(serde_json::json!({"outage": true})).await;
    assert_eq!(unknown.status, 400);
    assert!(unknown.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("known knobs"));
    assert_eq!(
        f.sandbox.knobs().latency_ms,
        5,
        "a refused patch changes nothing"
    );
    let anonymous = f
        .send(
            f.http
                .post(format!("{}/_sandbox/knobs", f.sandbox.base_url()))
                .json(&serde_json::json!({"outage_ms": 1000})),
        )
        .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(f.sandbox.knobs().outage_ms, 0);
}
