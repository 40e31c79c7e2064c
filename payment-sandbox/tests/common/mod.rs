//! The sandbox tests' fixture: a sandbox on a free port over a temp file,
//! and a client that keeps status, headers and JSON body of each answer.

#![allow(dead_code)] // each test binary uses a part

use sagaflow_payment_sandbox::testing::{start, TempDb};
use sagaflow_payment_sandbox::{read_ledger, PaymentLedger, Sandbox};
use serde_json::Value;

pub const KEY: &str = "sk_test_sandbox";

pub struct Fixture {
    pub db: TempDb,
    pub sandbox: Sandbox,
    pub http: reqwest::Client,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Fixture {
    pub async fn new(name: &str) -> Fixture {
        let db = TempDb::new(name);
        let sandbox = start(&db).await;
        Fixture {
            db,
            sandbox,
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the sandbox answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.expect("the sandbox answers JSON");
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, key: Option<&str>, form: &[(&str, &str)]) -> Answer {
        let mut request = self
            .http
            .post(format!("{}{path}", self.sandbox.base_url()))
            .bearer_auth(KEY)
            .form(form);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    /// `POST /_sandbox/knobs` with `patch`.
    pub async fn knobs(&self, patch: Value) -> Answer {
        let request = self
            .http
            .post(format!("{}/_sandbox/knobs", self.sandbox.base_url()))
            .bearer_auth(KEY)
            .json(&patch);
        self.send(request).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        let request = self
            .http
            .get(format!("{}{path}", self.sandbox.base_url()))
            .bearer_auth(KEY);
        self.send(request).await
    }

    pub async fn create(&self, key: &str, order_id: &str, pm: &str) -> Answer {
        self.post(
            "/v1/payment_intents",
            Some(key),
            &[
                ("amount", "1250"),
                ("currency", "usd"),
                ("capture_method", "manual"),
                ("confirm", "true"),
                ("payment_method", pm),
                ("metadata[order_id]", order_id),
                ("metadata[idempotency_key]", key),
            ],
        )
        .await
    }

    pub fn ledger(&self) -> PaymentLedger {
        read_ledger(&self.db.path).expect("the ledger is readable")
    }
}

pub fn id(answer: &Answer) -> String {
    answer.body["id"].as_str().expect("an id").to_owned()
}
