//! The API as the HTTP adapter uses it: auth, intents, declines,
//! validation, idempotency, capture, cancel, refunds, search, restarts.

mod common;

use common::*;
use sagaflow_payment_sandbox::testing::{start, TempDb};
use sagaflow_payment_sandbox::{
    read_ledger, read_requests, Knobs, Sandbox, SandboxConfig, SandboxError,
};
use serde_json::Value;
use std::sync::Arc;

#[tokio::test]
async fn requests_without_a_test_key_get_401() {
    let f = Fixture::new("auth").await;
    let url = format!("{}/v1/payment_intents/pi_x", f.sandbox.base_url());
    for request in [
        f.http.get(&url),
        f.http.get(&url).bearer_auth("sk_live_abc"),
        f.http.get(&url).bearer_auth("sk_test_"),
        f.http
            .post(format!("{}/v1/payment_intents", f.sandbox.base_url()))
            .form(&[("amount", "1")]),
    ] {
        let answer = f.send(request).await;
        assert_eq!(answer.status, 401);
        assert_eq!(answer.body["error"]["type"], "authentication_error");
    }
    assert_eq!(f.ledger().intents, 0);
}

#[tokio::test]
async fn create_authorizes_and_get_reads_it_back() {
    let f = Fixture::new("create").await;
    let created = f.create("s1/authorize", "o1", "pm_card_visa").await;
    assert_eq!(created.status, 200, "{}", created.body);
    let body = &created.body;
    assert!(body["id"].as_str().unwrap().starts_with("pi_"));
    assert_eq!(body["object"], "payment_intent");
    assert_eq!(body["status"], "requires_capture");
    assert_eq!(body["amount"], 1250);
    assert_eq!(body["amount_capturable"], 1250);
    assert_eq!(body["amount_received"], 0);
    assert_eq!(body["capture_method"], "manual");
    assert_eq!(body["currency"], "usd");
    assert_eq!(body["payment_method"], "pm_card_visa");
    assert_eq!(body["metadata"]["order_id"], "o1");
    assert_eq!(created.header("idempotent-replayed"), None);
    let got = f
        .get(&format!("/v1/payment_intents/{}", id(&created)))
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, created.body);
    let missing = f.get("/v1/payment_intents/pi_nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "resource_missing");
    let ledger = f.ledger();
    assert_eq!((ledger.intents, ledger.requires_capture), (1, 1));
}

#[tokio::test]
async fn decline_test_cards_answer_402_and_are_stored() {
    let f = Fixture::new("decline").await;
    for (i, (pm, code)) in [
        ("pm_card_chargeDeclined", "generic_decline"),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
        ),
        ("pm_card_chargeDeclinedFraudulent", "fraudulent"),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("d{i}/authorize");
        let answer = f.create(&key, &format!("d{i}"), pm).await;
        assert_eq!(answer.status, 402);
        let error = &answer.body["error"];
        assert_eq!(error["type"], "card_error");
        assert_eq!(error["code"], "card_declined");
        assert_eq!(error["decline_code"], code);
        assert_eq!(error["message"], "Your card was declined.");
        assert_eq!(error["payment_intent"]["status"], "requires_payment_method");
        let replay = f.create(&key, &format!("d{i}"), pm).await;
        assert_eq!(replay.status, 402);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.body, answer.body);
    }
    let mastercard = f.create("m/authorize", "m", "pm_card_mastercard").await;
    assert_eq!(mastercard.body["status"], "requires_capture");
    let ledger = f.ledger();
    assert_eq!((ledger.intents, ledger.declined), (4, 3));
}

#[tokio::test]
async fn invalid_parameters_get_400_with_param_and_are_not_stored() {
    let f = Fixture::new("invalid").await;
    let no_amount = f
        .post(
            "/v1/payment_intents",
            Some("k1"),
            &[
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method", "pm_card_visa"),
            ],
        )
        .await;
    assert_eq!(no_amount.status, 400);
    assert_eq!(no_amount.body["error"]["type"], "invalid_request_error");
    assert_eq!(no_amount.body["error"]["param"], "amount");
    let bad_amount = f
        .post("/v1/payment_intents", Some("k2"), &[("amount", "-3")])
        .await;
    assert_eq!(bad_amount.body["error"]["param"], "amount");
    let unknown = f
        .post("/v1/payment_intents", Some("k3"), &[("colour", "red")])
        .await;
    assert_eq!(unknown.code(), "parameter_unknown");
    assert_eq!(unknown.body["error"]["param"], "colour");
    // Nothing was stored under k1: the corrected request goes through.
    let fixed = f.create("k1", "o1", "pm_card_visa").await;
    assert_eq!(fixed.status, 200);
    assert_eq!(f.ledger().intents, 1);
}

#[tokio::test]
async fn same_key_replays_and_other_params_are_an_idempotency_error() {
    let f = Fixture::new("idem").await;
    let first = f.create("s/authorize", "o", "pm_card_visa").await;
    let second = f.create("s/authorize", "o", "pm_card_visa").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.body, first.body);
    let other = f.create("s/authorize", "o", "pm_card_mastercard").await;
    assert_eq!(other.status, 400);
    assert_eq!(other.body["error"]["type"], "idempotency_error");
    // Another endpoint under the same key is another request too.
    let cancel = f
        .post(
            &format!("/v1/payment_intents/{}/cancel", id(&first)),
            Some("s/authorize"),
            &[],
        )
        .await;
    assert_eq!(cancel.body["error"]["type"], "idempotency_error");
    let ledger = f.ledger();
    assert_eq!((ledger.intents, ledger.requires_capture), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_apply_once() {
    let f = Arc::new(Fixture::new("concurrent").await);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let f = Arc::clone(&f);
            tokio::spawn(async move { id(&f.create("c/authorize", "c", "pm_card_visa").await) })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer names the same intent");
    assert_eq!(f.ledger().intents, 1);
}

#[tokio::test]
async fn capture_applies_once_and_a_second_capture_is_unexpected_state() {
    let f = Fixture::new("capture").await;
    let pi = id(&f.create("s/authorize", "o", "pm_card_visa").await);
    let path = format!("/v1/payment_intents/{pi}/capture");
    let too_much = f
        .post(&path, Some("s/capture0"), &[("amount_to_capture", "1251")])
        .await;
    assert_eq!(too_much.status, 400);
    assert_eq!(too_much.body["error"]["param"], "amount_to_capture");
    let first = f
        .post(&path, Some("s/capture"), &[("amount_to_capture", "1000")])
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["status"], "succeeded");
    assert_eq!(first.body["amount_received"], 1000);
    let replay = f
        .post(&path, Some("s/capture"), &[("amount_to_capture", "1000")])
        .await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first.body);
    let second = f
        .post(
            &path,
            Some("s/capture-again"),
            &[("amount_to_capture", "1000")],
        )
        .await;
    assert_eq!(second.status, 400);
    assert_eq!(second.body["error"]["type"], "invalid_request_error");
    assert_eq!(second.code(), "payment_intent_unexpected_state");
    assert_eq!(
        second.body["error"]["payment_intent"]["status"],
        "succeeded"
    );
    let ledger = f.ledger();
    assert_eq!(ledger.succeeded, 1);
    assert_eq!(ledger.captured_amount, 1000);
    assert_eq!(ledger.double_captures, 0);
}

#[tokio::test]
async fn cancel_only_from_cancelable_states() {
    let f = Fixture::new("cancel").await;
    let pi = id(&f.create("s/authorize", "o", "pm_card_visa").await);
    let path = format!("/v1/payment_intents/{pi}/cancel");
    let canceled = f
        .post(
            &path,
            Some("s/void"),
            &[("cancellation_reason", "abandoned")],
        )
        .await;
    assert_eq!(canceled.status, 200);
    assert_eq!(canceled.body["status"], "canceled");
    assert_eq!(canceled.body["cancellation_reason"], "abandoned");
    let again = f.post(&path, Some("s/void2"), &[]).await;
    assert_eq!(again.code(), "payment_intent_unexpected_state");
    let capture = f
        .post(
            &format!("/v1/payment_intents/{pi}/capture"),
            Some("s/capture"),
            &[],
        )
        .await;
    assert_eq!(capture.code(), "payment_intent_unexpected_state");
    let ledger = f.ledger();
    assert_eq!(
        (ledger.canceled, ledger.succeeded, ledger.requires_capture),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn refunds_only_what_was_captured() {
    let f = Fixture::new("refund").await;
    let pi = id(&f.create("s/authorize", "o", "pm_card_visa").await);
    let early = f
        .post(
            "/v1/refunds",
            Some("r0"),
            &[("payment_intent", pi.as_str())],
        )
        .await;
    assert_eq!(early.code(), "payment_intent_unexpected_state");
    f.post(&format!("/v1/payment_intents/{pi}/capture"), Some("c"), &[])
        .await;
    let part = f
        .post(
            "/v1/refunds",
            Some("r1"),
            &[
                ("payment_intent", pi.as_str()),
                ("amount", "250"),
                ("metadata[idempotency_key]", "r1"),
            ],
        )
        .await;
    assert_eq!(part.status, 200);
    assert_eq!(part.body["object"], "refund");
    assert_eq!(part.body["status"], "succeeded");
    assert_eq!(part.body["amount"], 250);
    assert_eq!(part.body["payment_intent"], pi.as_str());
    assert!(part.body["id"].as_str().unwrap().starts_with("re_"));
    let too_much = f
        .post(
            "/v1/refunds",
            Some("r2"),
            &[("payment_intent", pi.as_str()), ("amount", "1001")],
        )
        .await;
    assert_eq!(too_much.status, 400);
    assert_eq!(too_much.code(), "amount_too_large");
    let rest = f
        .post(
            "/v1/refunds",
            Some("r3"),
            &[("payment_intent", pi.as_str())],
        )
        .await;
    assert_eq!(rest.body["amount"], 1000);
    let none_left = f
        .post(
            "/v1/refunds",
            Some("r4"),
            &[("payment_intent", pi.as_str())],
        )
        .await;
    assert_eq!(none_left.code(), "charge_already_refunded");
    let list = f.get(&format!("/v1/refunds?payment_intent={pi}")).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(list.body["data"][1]["metadata"]["idempotency_key"], "r1");
    let ledger = f.ledger();
    assert_eq!((ledger.refunded, ledger.refunded_amount), (1, 1250));
}

#[tokio::test]
async fn search_finds_intents_by_metadata() {
    let f = Fixture::new("search").await;
    let a = id(&f.create("a/authorize", "order-a", "pm_card_visa").await);
    f.create("b/authorize", "order-b", "pm_card_visa").await;
    let url = |q: &str| {
        format!(
            "/v1/payment_intents/search?{}",
            serde_urlencoded::to_string([("query", q)]).unwrap()
        )
    };
    let found = f.get(&url("metadata['order_id']:'order-a'")).await;
    assert_eq!(found.status, 200);
    assert_eq!(found.body["object"], "search_result");
    assert_eq!(found.body["has_more"], false);
    let data = found.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], a.as_str());
    let by_key = f
        .get(&url("metadata[\"idempotency_key\"]:\"a/authorize\""))
        .await;
    assert_eq!(by_key.body["data"][0]["id"], a.as_str());
    let none = f.get(&url("metadata['order_id']:'order-z'")).await;
    assert_eq!(none.body["data"].as_array().unwrap().len(), 0);
    let unsupported = f.get(&url("status:'succeeded'")).await;
    assert_eq!(unsupported.status, 400);
    assert_eq!(unsupported.body["error"]["param"], "query");
}
#[tokio::test]
async fn the_store_survives_a_restart() {
    let db = TempDb::new("restart");
    let pi = {
        let sandbox = start(&db).await;
        let answer = reqwest::Client::new()
            .post(format!("{}/v1/payment_intents", sandbox.base_url()))
            .bearer_auth(KEY)
            .header("Idempotency-Key", "s/authorize")
            .form(&[
                ("amount", "5"),
                ("currency", "eur"),
                ("capture_method", "manual"),
                ("confirm", "true"),
                ("payment_method", "pm_card_visa"),
            ])
            .send()
            .await
            .unwrap();
        answer.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let sandbox = start(&db).await;
    let got: Value = reqwest::Client::new()
        .get(format!("{}/v1/payment_intents/{pi}", sandbox.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "requires_capture");
    assert_eq!(got["currency"], "eur");
    assert_eq!(read_ledger(&db.path).unwrap().intents, 1);
}

#[test]
fn read_ledger_names_a_missing_file() {
    let db = TempDb::new("missing");
    let error = read_ledger(&db.path).unwrap_err();
    assert!(matches!(error, SandboxError::NoLedger { .. }));
    assert!(error.to_string().contains("start the sandbox"));
}

#[tokio::test]
async fn start_rejects_an_error_rate_outside_0_to_1() {
    let db = TempDb::new("rate");
    let config = SandboxConfig {
        db_path: db.path.clone(),
        knobs: Knobs {
            error_rate: 1.5,
            ..Knobs::default()
        },
        request_log: false,
    };
    let error = Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(error, SandboxError::InvalidErrorRate(_)));
}

#[tokio::test]
async fn the_request_log_names_the_client_of_each_post() {
    let f = Fixture::new("requests").await;
    let created = f.create("s/authorize", "o", "pm_card_visa").await;
    let pi = id(&created);
    let capture = |agent: &'static str| {
        f.http
            .post(format!(
                "{}/v1/payment_intents/{pi}/capture",
                f.sandbox.base_url()
            ))
            .bearer_auth(KEY)
            .header("User-Agent", agent)
            .header("Idempotency-Key", "s/capture")
            .form(&[("amount_to_capture", "1250")])
    };
    assert_eq!(f.send(capture("worker-b")).await.status, 200);
    let replay = f.send(capture("worker-c")).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    f.create("t/authorize", "t", "pm_card_visa").await;
    let log = read_requests(&f.db.path, Some(&pi)).unwrap();
    let seen: Vec<(&str, &str, u16, bool)> = log
        .iter()
        .map(|r| (r.path.as_str(), r.client.as_str(), r.status, r.replayed))
        .collect();
    let capture_path = format!("/v1/payment_intents/{pi}/capture");
    assert_eq!(
        seen,
        vec![
            ("/v1/payment_intents", "", 200, false),
            (capture_path.as_str(), "worker-b", 200, false),
            (capture_path.as_str(), "worker-c", 200, true),
        ]
    );
    assert_eq!(log[1].idempotency_key.as_deref(), Some("s/capture"));
    assert_eq!(read_requests(&f.db.path, None).unwrap().len(), 4);
}

#[tokio::test]
async fn without_the_request_log_nothing_is_logged() {
    let db = TempDb::new("no-log");
    let sandbox = Sandbox::start(
        SandboxConfig {
            db_path: db.path.clone(),
            knobs: Knobs::default(),
            request_log: false,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/payment_intents", sandbox.base_url()))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "s/authorize")
        .form(&[
            ("amount", "5"),
            ("currency", "eur"),
            ("capture_method", "manual"),
            ("confirm", "true"),
            ("payment_method", "pm_card_visa"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(read_ledger(&db.path).unwrap().intents, 1);
    assert!(read_requests(&db.path, None).unwrap().is_empty());
}

#[tokio::test]
async fn it_speaks_http2_without_tls_and_http1_on_one_port() {
    let f = Fixture::new("h2c").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(format!("{}/v1/payment_intents", f.sandbox.base_url()))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "h2/authorize")
        .form(&[
            ("amount", "1250"),
            ("currency", "usd"),
            ("capture_method", "manual"),
            ("confirm", "true"),
            ("payment_method", "pm_card_visa"),
        ])
        .send()
        .await
        .expect("the sandbox answers HTTP/2");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.unwrap();
    let path = format!("/v1/payment_intents/{}", created["id"].as_str().unwrap());

    // The same intent over HTTP/1.1.
    let response = f
        .http
        .get(format!("{}{path}", f.sandbox.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.json::<Value>().await.unwrap(), created);

    // More concurrent streams than hyper's default limit (200) over the one
    // HTTP/2 connection, each held by the latency knob: all answered.
    f.sandbox.set_latency_ms(200);
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..300 {
        reads.spawn(
            h2.get(format!("{}{path}", f.sandbox.base_url()))
                .bearer_auth(KEY)
                .send(),
        );
    }
    let mut answered = 0;
    while let Some(response) = reads.join_next().await {
        let response = response.unwrap().expect("every stream is answered");
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        answered += 1;
    }
    assert_eq!(answered, 300);
    assert_eq!(f.ledger().intents, 1);
}
