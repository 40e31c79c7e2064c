//! One request to the provider: GET, POST with its idempotency key, the
//! search, and the answer read back (over HTTP/1.1 or HTTP/2, as the
//! client was built).

use super::answers::*;
use super::PaymentClient;
use sagaflow_workflows::ActivityError;
use serde_json::Value;
use std::sync::atomic::Ordering;

impl PaymentClient {
    /// GET one intent; a non-2xx answer is an error.
    pub(super) async fn get_intent(&self, pi: &str) -> Result<Value, ActivityError> {
        let answer = self
            .get(&format!("/v1/payment_intents/{pi}"), "reconcile")
            .await?;
        if answer.is_success() {
            Ok(answer.body)
        } else {
            Err(answer.error("get payment intent"))
        }
    }

    /// Intents whose `metadata[key]` is `value`, newest first (at most 100,
    /// the provider's page limit: one order has one or a few).
    pub(super) async fn search(&self, key: &str, value: &str) -> Result<Vec<Value>, ActivityError> {
        let query = format!("metadata[{}]:{}", quote(key), quote(value));
        let request = self
            .client()
            .get(format!("{}/v1/payment_intents/search", self.base_url))
            .query(&[("query", query.as_str()), ("limit", "100")]);
        let answer = self.send(request, "search").await?;
        if !answer.is_success() {
            return Err(answer.error("search"));
        }
        match answer.body {
            Value::Object(mut body) => match body.remove("data") {
                Some(Value::Array(data)) => Ok(data),
                _ => Err(bad_response("search", &Value::Object(body))),
            },
            other => Err(bad_response("search", &other)),
        }
    }

    /// The newest intent whose `metadata[key]` is `value`.
    pub(super) async fn search_one(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Option<Value>, ActivityError> {
        Ok(self.search(key, value).await?.into_iter().next())
    }

    /// The client for the next call: the HTTP/2 connections in turn.
    pub(super) fn client(&self) -> &reqwest::Client {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        &self.http[turn % self.http.len()]
    }

    pub(super) async fn post(
        &self,
        path: &str,
        key: &str,
        form: &[(&str, &str)],
    ) -> Result<Answer, ActivityError> {
        let request = self
            .client()
            .post(format!("{}{path}", self.base_url))
            .header("Idempotency-Key", key)
            .form(form);
        self.send(request, path).await
    }

    pub(super) async fn get(
        &self,
        path_and_query: &str,
        what: &str,
    ) -> Result<Answer, ActivityError> {
        let request = self
            .client()
            .get(format!("{}{path_and_query}", self.base_url));
        self.send(request, what).await
    }

    pub(super) async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Answer, ActivityError> {
        if let Some(traceparent) = crate::trace::current() {
            request = request.header("traceparent", traceparent);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(what, &e))?;
        let status = response.status().as_u16();
        let should_retry = response
            .headers()
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.eq_ignore_ascii_case("true"));
        let retry_after_ms = retry_after_ms(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(what, &e))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            should_retry,
            retry_after_ms,
            body,
        })
    }
}
