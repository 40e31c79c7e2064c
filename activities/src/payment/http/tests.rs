//! The HTTP adapter against the payment sandbox: every call, every error
//! mapping, reconciliation after injected failures on either side.

use super::answers::{quote, void_output};
use super::*;
use crate::clock::now_ms;
use sagaflow_payment_sandbox::testing::{start, TempDb};
use sagaflow_payment_sandbox::{read_ledger, ErrorSide, KnobsPatch, PaymentLedger, Sandbox};
use sagaflow_workflows::ActivityCall;
use sagaflow_workflows::Phase;
use serde_json::{json, Value};

struct Fixture {
    db: TempDb,
    sandbox: Sandbox,
    client: PaymentClient,
}

impl Fixture {
    async fn new(name: &str) -> Fixture {
        let db = TempDb::new(name);
        let sandbox = start(&db).await;
        let client = PaymentClient::new(config(sandbox.base_url(), "sk_test_adapter")).unwrap();
        Fixture {
            db,
            sandbox,
            client,
        }
    }

    fn ledger(&self) -> PaymentLedger {
        read_ledger(&self.db.path).unwrap()
    }

    async fn intent(&self, pi: &str) -> Value {
        self.client.get_intent(pi).await.unwrap()
    }
}

fn config(base_url: &str, api_key: &str) -> PaymentClientConfig {
    PaymentClientConfig {
        base_url: base_url.into(),
        api_key: api_key.into(),
        currency: "usd".into(),
        request_timeout_ms: 5_000,
        search_lag_ms: 0,
        http: HttpVersion::Auto,
        connections: 1,
    }
}

fn order(id: &str, payment_method: &str, amount: u64) -> Value {
    json!({
        "order_id": id,
        "customer": "c1",
        "items": [{"sku": "A", "qty": 1}],
        "amount": amount,
        "currency": "USD",
        "payment_method": payment_method,
    })
}

fn call(saga: &str, step: &str, activity: &str, phase: Phase, input: Value) -> ActivityCall {
    let key = match phase {
        Phase::Action => format!("{saga}/{step}"),
        Phase::Compensation => format!("{saga}/{step}/compensate"),
    };
    ActivityCall {
        step: step.into(),
        activity: activity.into(),
        phase,
        attempt: 1,
        timeout_ms: 5_000,
        idempotency_key: key,
        input,
    }
}

fn input(saga: &str, order: Value, outputs: Value) -> Value {
    json!({"saga_id": saga, "order": order, "outputs": outputs})
}

fn authorize_call(saga: &str, pm: &str) -> ActivityCall {
    let input = input(
        saga,
        order(saga, pm, 1250),
        json!({"reserve_stock": {"kind": "reservation"}}),
    );
    call(
        saga,
        "authorize_payment",
        "payment.authorize",
        Phase::Action,
        input,
    )
}

fn capture_call(saga: &str, authorization: &Value) -> ActivityCall {
    let outputs = json!({"authorize_payment": authorization});
    let input = input(saga, order(saga, "pm_card_visa", 1250), outputs);
    call(
        saga,
        "capture_payment",
        "payment.capture",
        Phase::Action,
        input,
    )
}

fn void_call(saga: &str, outputs: Value) -> ActivityCall {
    let input = input(saga, order(saga, "pm_card_visa", 1250), outputs);
    call(
        saga,
        "authorize_payment",
        "payment.void",
        Phase::Compensation,
        input,
    )
}

#[tokio::test]
async fn authorize_holds_the_order_amount() {
    let f = Fixture::new("http-authorize").await;
    let out = f
        .client
        .authorize(&authorize_call("o1", "pm_card_visa"))
        .await
        .unwrap();
    assert_eq!(out["kind"], "authorization");
    assert_eq!(out["status"], "requires_capture");
    assert_eq!(out["amount"], 1250);
    let pi = out["payment_intent"].as_str().unwrap();
    assert!(pi.starts_with("pi_"));
    let intent = f.intent(pi).await;
    assert_eq!(intent["currency"], "usd");
    assert_eq!(intent["capture_method"], "manual");
    assert_eq!(intent["payment_method"], "pm_card_visa");
    assert_eq!(intent["metadata"]["order_id"], "o1");
    assert_eq!(
        intent["metadata"]["idempotency_key"],
        "o1/authorize_payment"
    );
    let ledger = f.ledger();
    assert_eq!((ledger.intents, ledger.requires_capture), (1, 1));
}

#[tokio::test]
async fn a_declined_card_is_a_business_error() {
    let f = Fixture::new("http-decline").await;
    let call = authorize_call("o1", "pm_card_chargeDeclinedInsufficientFunds");
    let error = f.client.authorize(&call).await.unwrap_err();
    assert_eq!(error.kind, "card_declined");
    assert!(!error.retryable);
    assert_eq!(error.message, "card declined (insufficient_funds)");
    // A retry replays the stored 402.
    assert_eq!(f.client.authorize(&call).await.unwrap_err(), error);
    assert_eq!(f.ledger().declined, 1);
    assert_eq!(f.ledger().intents, 1);
}

#[tokio::test]
async fn authorize_twice_with_one_key_makes_one_intent() {
    let f = Fixture::new("http-replay").await;
    let call = authorize_call("o1", "pm_card_visa");
    let first = f.client.authorize(&call).await.unwrap();
    let mut retry = call.clone();
    retry.attempt = 2;
    let second = f.client.authorize(&retry).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(f.ledger().intents, 1);
}

#[tokio::test]
async fn one_key_with_other_params_is_a_non_retryable_idempotency_error() {
    let f = Fixture::new("http-idem").await;
    let call = authorize_call("o1", "pm_card_visa");
    f.client.authorize(&call).await.unwrap();
    let mut changed = call.clone();
    changed.input["order"]["amount"] = json!(999);
    let error = f.client.authorize(&changed).await.unwrap_err();
    assert_eq!(error.kind, "idempotency_error");
    assert!(!error.retryable);
    assert_eq!(f.ledger().intents, 1);
}

#[tokio::test]
async fn capture_is_idempotent_per_call_and_across_keys() {
    let f = Fixture::new("http-capture").await;
    let auth = f
        .client
        .authorize(&authorize_call("o1", "pm_card_visa"))
        .await
        .unwrap();
    let capture = capture_call("o1", &auth);
    let first = f.client.capture(&capture).await.unwrap();
    assert_eq!(first["kind"], "capture");
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["amount_received"], 1250);
    assert_eq!(first["payment_intent"], auth["payment_intent"]);
    assert_eq!(f.client.capture(&capture).await.unwrap(), first);
    // Another key: the provider says unexpected_state, the adapter
    // reads the intent and reports the earlier capture.
    let mut other = capture.clone();
    other.idempotency_key = "o1/capture_payment-manual".into();
    assert_eq!(f.client.capture(&other).await.unwrap(), first);
    let ledger = f.ledger();
    assert_eq!(ledger.succeeded, 1);
    assert_eq!(ledger.captured_amount, 1250);
    assert_eq!(ledger.double_captures, 0);
}

#[tokio::test]
async fn capture_of_a_canceled_intent_is_a_business_error() {
    let f = Fixture::new("http-capture-canceled").await;
    let auth = f
        .client
        .authorize(&authorize_call("o1", "pm_card_visa"))
        .await
        .unwrap();
    f.client
        .void(&void_call("o1", json!({"authorize_payment": auth})))
        .await
        .unwrap();
    let error = f
        .client
        .capture(&capture_call("o1", &auth))
        .await
        .unwrap_err();
    assert_eq!(error.kind, "payment_intent_unexpected_state");
    assert!(!error.retryable);
    assert_eq!(f.ledger().succeeded, 0);
}

#[tokio::test]
async fn void_cancels_the_authorization_from_the_outputs() {
    let f = Fixture::new("http-void").await;
    let auth = f
        .client
        .authorize(&authorize_call("o1", "pm_card_visa"))
        .await
        .unwrap();
    let void = void_call("o1", json!({"authorize_payment": auth}));
    let out = f.client.void(&void).await.unwrap();
    assert_eq!(
        out,
        void_output(auth["payment_intent"].as_str().unwrap(), "canceled")
    );
    // Again (retry, or already canceled by another key): still success.
    assert_eq!(f.client.void(&void).await.unwrap(), out);
    let mut other = void.clone();
    other.idempotency_key = "o1/other".into();
    assert_eq!(f.client.void(&other).await.unwrap(), out);
    let ledger = f.ledger();
    assert_eq!((ledger.canceled, ledger.requires_capture), (1, 0));
}

#[tokio::test]
async fn void_finds_an_authorization_whose_output_was_lost() {
    let f = Fixture::new("http-void-search").await;
    let auth = f
        .client
        .authorize(&authorize_call("o1", "pm_card_visa"))
        .await
        .unwrap();
    // The authorize step timed out as far as the saga knows: no output.
    let out = f.client.void(&void_call("o1", json!({}))).await.unwrap();
    assert_eq!(out["status"], "canceled");
    assert_eq!(out["payment_intent"], auth["payment_intent"]);
    assert_eq!(f.ledger().canceled, 1);
}

#[tokio::test]
async fn void_with_no_authorization_has_nothing_to_do() {
    let f = Fixture::new("http-void-none").await;
    let out = f.client.void(&void_call("o1", json!({}))).await.unwrap();
    assert_eq!(
        out,
        json!({"kind": "void", "payment_intent": null, "status": "nothing_to_void"})
    );
    assert_eq!(f.ledger().intents, 0);
}

/// Issue 12, defect 3: the authorization happened but its answer was lost,
/// and the provider's search trails its writes. The void must not report
/// "nothing to void" (leaving the hold on the card) before the search has
/// had `search_lag` to show it: an attempt too short to wait fails as
/// retryable, a longer one looks again and cancels the intent.
#[tokio::test]
async fn a_void_after_a_lost_authorize_waits_for_the_search_to_show_it() {
    let f = Fixture::new("http-void-lag").await;
    f.sandbox
        .set_knobs(&KnobsPatch {
            search_lag_ms: Some(1_500),
            ..KnobsPatch::default()
        })
        .unwrap();
    let auth = f
        .client
        .authorize(&authorize_call("o1", "pm_card_visa"))
        .await
        .unwrap();
    let pi = auth["payment_intent"].as_str().unwrap().to_owned();
    let lagging = PaymentClient::new(PaymentClientConfig {
        search_lag_ms: 5_000,
        ..config(f.sandbox.base_url(), "sk_test_adapter")
    })
    .unwrap();
    let mut void = void_call("o1", json!({}));
    void.input["unknown_since_ms"] = json!(now_ms());
    let mut short = void.clone();
    short.timeout_ms = 1_000;
    let e = lagging.void(&short).await.unwrap_err();
    assert!(
        e.retryable && e.kind == "authorization_not_visible_yet",
        "{e}"
    );
    assert_eq!(f.intent(&pi).await["status"], "requires_capture");
    let out = lagging.void(&void).await.unwrap();
    assert_eq!(out["status"], "canceled", "{out}");
    assert_eq!(out["payment_intent"], pi.as_str());
    assert_eq!(f.intent(&pi).await["status"], "canceled");
    // Once the window has passed, an authorize that never reached the
    // provider has nothing to void, at once.
    let mut never = void_call("o2", json!({}));
    never.input["unknown_since_ms"] = json!(now_ms() - 10_000);
    let out = lagging.void(&never).await.unwrap();
    assert_eq!(out["status"], "nothing_to_void", "{out}");
}

#[tokio::test]
async fn void_of_a_captured_intent_refunds_it() {
    let f = Fixture::new("http-void-captured").await;
    let auth = f
        .client
        .authorize(&authorize_call("o1", "pm_card_visa"))
        .await
        .unwrap();
    f.client.capture(&capture_call("o1", &auth)).await.unwrap();
    let void = void_call("o1", json!({"authorize_payment": auth}));
    let out = f.client.void(&void).await.unwrap();
    assert_eq!(out["status"], "refunded");
    assert!(out["refund"].as_str().unwrap().starts_with("re_"));
    assert_eq!(f.client.void(&void).await.unwrap(), out);
    let ledger = f.ledger();
    assert_eq!((ledger.refunded, ledger.refunded_amount), (1, 1250));
}

#[tokio::test]
async fn refund_returns_the_captured_amount_once() {
    let f = Fixture::new("http-refund").await;
    let auth = f
        .client
        .authorize(&authorize_call("o1", "pm_card_visa"))
        .await
        .unwrap();
    let capture = f.client.capture(&capture_call("o1", &auth)).await.unwrap();
    let outputs = json!({"authorize_payment": auth, "capture_payment": capture});
    let input = input("o1", order("o1", "pm_card_visa", 1250), outputs);
    let refund = call(
        "o1",
        "capture_payment",
        "payment.refund",
        Phase::Compensation,
        input,
    );
    let out = f.client.refund(&refund).await.unwrap();
    assert_eq!(out["status"], "refunded");
    assert_eq!(out["amount"], 1250);
    assert_eq!(f.client.refund(&refund).await.unwrap(), out);
    let mut other = refund.clone();
    other.idempotency_key = "o1/other".into();
    assert_eq!(
        f.client.refund(&other).await.unwrap()["status"],
        "already_refunded"
    );
    // Without outputs it finds the captured intent by order id.
    let mut bare = other.clone();
    bare.input["outputs"] = json!({});
    bare.idempotency_key = "o1/bare".into();
    assert_eq!(
        f.client.refund(&bare).await.unwrap()["status"],
        "already_refunded"
    );
    assert_eq!(f.ledger().refunded_amount, 1250);
}

#[tokio::test]
async fn refund_of_an_uncaptured_intent_has_nothing_to_do() {
    let f = Fixture::new("http-refund-none").await;
    let auth = f
        .client
        .authorize(&authorize_call("o1", "pm_card_visa"))
        .await
        .unwrap();
    let input = input(
        "o1",
        order("o1", "pm_card_visa", 1250),
        json!({"authorize_payment": auth}),
    );
    let refund = call("o1", "refund", "payment.refund", Phase::Action, input);
    let out = f.client.refund(&refund).await.unwrap();
    assert_eq!(out["status"], "nothing_to_refund");
    assert_eq!(f.ledger().refunded, 0);
}

#[tokio::test]
async fn failures_before_the_effect_are_retryable_and_the_retry_applies_once() {
    let f = Fixture::new("http-before").await;
    f.sandbox.set_error_rate(1.0);
    f.sandbox.set_error_side(ErrorSide::Before);
    let call = authorize_call("o1", "pm_card_visa");
    let error = f.client.authorize(&call).await.unwrap_err();
    assert_eq!(error.kind, "http_500");
    assert!(error.retryable);
    assert_eq!(f.ledger().intents, 0);
    f.sandbox.set_error_rate(0.0);
    let auth = f.client.authorize(&call).await.unwrap();
    assert_eq!(auth["status"], "requires_capture");
    f.sandbox.set_error_rate(1.0);
    let capture = capture_call("o1", &auth);
    let error = f.client.capture(&capture).await.unwrap_err();
    assert!(error.retryable, "{error}");
    assert_eq!(f.ledger().succeeded, 0);
    f.sandbox.set_error_rate(0.0);
    assert_eq!(
        f.client.capture(&capture).await.unwrap()["status"],
        "succeeded"
    );
    let ledger = f.ledger();
    assert_eq!(
        (ledger.intents, ledger.succeeded, ledger.double_captures),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn failures_after_the_effect_are_reconciled_into_success() {
    let f = Fixture::new("http-after").await;
    f.sandbox.set_error_rate(1.0);
    f.sandbox.set_error_side(ErrorSide::After);
    let call = authorize_call("o1", "pm_card_visa");
    let auth = f.client.authorize(&call).await.unwrap();
    assert_eq!(auth["status"], "requires_capture");
    // The stored 500 replays; reconciling finds the same intent.
    f.sandbox.set_error_rate(0.0);
    assert_eq!(f.client.authorize(&call).await.unwrap(), auth);
    f.sandbox.set_error_rate(1.0);
    let captured = f.client.capture(&capture_call("o1", &auth)).await.unwrap();
    assert_eq!(captured["status"], "succeeded");
    let declined = f
        .client
        .authorize(&authorize_call("o2", "pm_card_chargeDeclined"))
        .await
        .unwrap_err();
    assert_eq!(declined.kind, "card_declined");
    assert_eq!(declined.message, "card declined (generic_decline)");
    let auth3 = f
        .client
        .authorize(&authorize_call("o3", "pm_card_visa"))
        .await
        .unwrap();
    let voided = f
        .client
        .void(&void_call("o3", json!({"authorize_payment": auth3})))
        .await
        .unwrap();
    assert_eq!(voided["status"], "canceled");
    let ledger = f.ledger();
    assert_eq!(ledger.intents, 3);
    assert_eq!(
        (ledger.succeeded, ledger.canceled, ledger.declined),
        (1, 1, 1)
    );
    assert_eq!(ledger.double_captures, 0);
    assert_eq!(ledger.orders_with_several_intents, 0);
}

#[tokio::test]
async fn refund_after_an_injected_failure_is_found_by_listing() {
    let f = Fixture::new("http-refund-after").await;
    let auth = f
        .client
        .authorize(&authorize_call("o1", "pm_card_visa"))
        .await
        .unwrap();
    let capture = f.client.capture(&capture_call("o1", &auth)).await.unwrap();
    f.sandbox.set_error_rate(1.0);
    f.sandbox.set_error_side(ErrorSide::After);
    let input = input(
        "o1",
        order("o1", "pm_card_visa", 1250),
        json!({"capture_payment": capture}),
    );
    let refund = call(
        "o1",
        "capture_payment",
        "payment.refund",
        Phase::Compensation,
        input,
    );
    let out = f.client.refund(&refund).await.unwrap();
    assert_eq!(out["status"], "refunded");
    assert_eq!(f.ledger().refunded_amount, 1250);
}

#[tokio::test]
async fn random_failures_end_with_one_intent_per_order() {
    let f = Fixture::new("http-random").await;
    f.sandbox.set_error_rate(1.0);
    let mut reconciled = 0;
    let mut retryable = 0;
    for i in 0..20 {
        match f
            .client
            .authorize(&authorize_call(&format!("o{i}"), "pm_card_visa"))
            .await
        {
            Ok(_) => reconciled += 1,
            Err(error) => {
                assert!(error.retryable, "{error}");
                retryable += 1;
            }
        }
    }
    assert!(
        reconciled > 0 && retryable > 0,
        "{reconciled} / {retryable}"
    );
    f.sandbox.set_error_rate(0.0);
    for i in 0..20 {
        let out = f
            .client
            .authorize(&authorize_call(&format!("o{i}"), "pm_card_visa"))
            .await;
        assert_eq!(out.unwrap()["status"], "requires_capture");
    }
    let ledger = f.ledger();
    assert_eq!((ledger.intents, ledger.requires_capture), (20, 20));
    assert_eq!(ledger.orders_with_several_intents, 0);
}

#[tokio::test]
async fn a_rejected_key_is_a_business_error_without_the_key() {
    let f = Fixture::new("http-auth").await;
    let client = PaymentClient::new(config(f.sandbox.base_url(), "sk_live_secret123")).unwrap();
    let error = client
        .authorize(&authorize_call("o1", "pm_card_visa"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, "authentication_error");
    assert!(!error.retryable);
    assert!(!error.message.contains("secret123"));
    assert!(!format!("{client:?}").contains("secret123"));
    assert!(!format!("{:?}", config("http://x", "sk_live_secret123")).contains("secret123"));
    assert_eq!(f.ledger().intents, 0);
}

#[tokio::test]
async fn an_unreachable_provider_is_a_retryable_network_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client =
        PaymentClient::new(config(&format!("http://127.0.0.1:{port}"), "sk_test_x")).unwrap();
    let error = client
        .authorize(&authorize_call("o1", "pm_card_visa"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, "network");
    assert!(error.retryable);
}

#[tokio::test]
async fn registered_activities_run_through_the_registry() {
    let f = Fixture::new("http-registry").await;
    let client = Arc::new(PaymentClient::new(config(f.sandbox.base_url(), "sk_test_r")).unwrap());
    let mut registry = Registry::new();
    register(&mut registry, client);
    for name in [
        "payment.authorize",
        "payment.capture",
        "payment.void",
        "payment.refund",
    ] {
        assert!(registry.contains(name), "{name}");
    }
    let out = registry
        .start(authorize_call("o1", "pm_card_visa"))
        .await
        .unwrap();
    assert_eq!(out["kind"], "authorization");
}

#[test]
fn new_rejects_bad_config() {
    assert!(matches!(
        PaymentClient::new(config("ftp://x", "sk_test_x")),
        Err(PaymentError::InvalidBaseUrl(_))
    ));
    assert!(matches!(
        PaymentClient::new(config("http://x", "")),
        Err(PaymentError::InvalidApiKey)
    ));
    assert!(matches!(
        PaymentClient::new(config("http://x", "sk\ntest")),
        Err(PaymentError::InvalidApiKey)
    ));
    let mut zero = config("http://x", "sk_test_x");
    zero.request_timeout_ms = 0;
    assert!(matches!(
        PaymentClient::new(zero),
        Err(PaymentError::InvalidTimeout)
    ));
}

#[test]
fn search_values_are_quoted() {
    assert_eq!(quote("o'1\\x"), r"'o\'1\\x'");
}

/// What a client in each mode opens a plain-http connection with: HTTP/2's
/// preface only when asked for HTTP/2 (a provider over plain http may not
/// speak it), a request line otherwise.
#[tokio::test]
async fn plain_http_speaks_http1_unless_http2_is_asked_for() {
    use tokio::io::AsyncReadExt;
    for (http, opening) in [
        (HttpVersion::Auto, "POST /v1/payment_intents HTTP/1.1"),
        (HttpVersion::Http1, "POST /v1/payment_intents HTTP/1.1"),
        (HttpVersion::Http2, "PRI * HTTP/2.0"),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let client = PaymentClient::new(PaymentClientConfig {
            http,
            ..config(&url, "sk_test_adapter")
        })
        .unwrap();
        let first_line = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut bytes = [0; 64];
            let mut read = 0;
            while !bytes[..read].contains(&b'\r') && read < bytes.len() {
                match socket.read(&mut bytes[read..]).await.unwrap() {
                    0 => break,
                    n => read += n,
                }
            }
            let text = String::from_utf8_lossy(&bytes[..read]).into_owned();
            text.split("\r").next().unwrap().to_owned()
        });
        // The listener hangs up without answering: the call fails, retryably.
        let err = client
            .authorize(&authorize_call("o1", "pm_card_visa"))
            .await
            .unwrap_err();
        assert!(err.retryable, "{http:?}: {err:?}");
        assert_eq!(first_line.await.unwrap(), opening, "{http:?}");
    }
}

/// Over HTTP/2, with the calls spread over several connections, every
/// saga's authorization and capture apply exactly once.
#[tokio::test]
async fn http2_over_several_connections_charges_each_order_once() {
    let db = TempDb::new("http-h2");
    let sandbox = start(&db).await;
    let client = Arc::new(
        PaymentClient::new(PaymentClientConfig {
            http: HttpVersion::Http2,
            connections: 3,
            ..config(sandbox.base_url(), "sk_test_adapter")
        })
        .unwrap(),
    );
    let mut sagas = tokio::task::JoinSet::new();
    for n in 0..12 {
        let client = Arc::clone(&client);
        sagas.spawn(async move {
            let saga = format!("o{n}");
            let authorization = client
                .authorize(&authorize_call(&saga, "pm_card_visa"))
                .await
                .unwrap();
            client
                .capture(&capture_call(&saga, &authorization))
                .await
                .unwrap();
            // A replay of both (a crash after the calls) changes nothing.
            let again = client
                .authorize(&authorize_call(&saga, "pm_card_visa"))
                .await
                .unwrap();
            assert_eq!(again["payment_intent"], authorization["payment_intent"]);
            client
                .capture(&capture_call(&saga, &authorization))
                .await
                .unwrap();
        });
    }
    while let Some(done) = sagas.join_next().await {
        done.unwrap();
    }
    let ledger = read_ledger(&db.path).unwrap();
    assert_eq!(ledger.intents, 12, "{ledger:?}");
    assert_eq!(ledger.succeeded, 12, "{ledger:?}");
    assert_eq!(ledger.captured_amount, 12 * 1250, "{ledger:?}");
    assert_eq!(ledger.double_captures, 0, "{ledger:?}");
}

#[test]
fn zero_connections_is_refused() {
    let err = PaymentClient::new(PaymentClientConfig {
        connections: 0,
        ..config("http://127.0.0.1:1", "sk_test_adapter")
    })
    .unwrap_err();
    assert!(matches!(err, PaymentError::InvalidConnections), "{err}");
    assert!(err.to_string().contains("[payment] connections"), "{err}");
}

#[test]
fn an_own_sandbox_gets_http2_unless_a_version_was_chosen() {
    assert_eq!(HttpVersion::Auto.toward_own_sandbox(), HttpVersion::Http2);
    assert_eq!(HttpVersion::Http1.toward_own_sandbox(), HttpVersion::Http1);
    assert_eq!(HttpVersion::Http2.toward_own_sandbox(), HttpVersion::Http2);
}
