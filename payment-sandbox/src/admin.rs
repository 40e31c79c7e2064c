//! The admin calls: read and change the knobs while the sandbox serves, so
//! a test (or `sagaflow sandbox knobs`) can start and end an outage
//! mid-sale.
//!
//! - `GET /_sandbox/knobs`: the knobs as JSON ([`crate::Knobs`]);
//! - `GET /_sandbox/turned_away`: the API requests outages turned away,
//!   `{"requests": [[AT_MS, USER_AGENT, "METHOD /path"], ...], "not_kept":
//!   N}`, so a test
//!   can count the calls each worker made while the provider was down;
//! - `GET /_sandbox/calls` (with the request log on): every API request,
//!   `{"agents": [USER_AGENT, ...], "requests": [[ARRIVED_MS, ANSWERED_MS,
//!   STATUS, AGENT_INDEX, "METHOD /path"], ...], "not_kept": N}`, so a
//!   test can tell how many calls were in flight at any moment;
//! - `GET /_sandbox/traces`: the `traceparent` of every API request that
//!   carried one, `{"requests": [[AT_MS, "METHOD /path", TRACEPARENT],
//!   ...]}`, so a test can follow an order's trace to the provider;
//! - `POST /_sandbox/knobs` with a JSON [`crate::KnobsPatch`] body: changes
//!   the knobs it names and answers the knobs after it; a rate outside
//!   0..=1 or an unknown knob is a 400 and changes nothing.
//!
//! Admin calls need the same `Authorization: Bearer sk_test_...` as the
//! API, and no knob applies to them (an outage does not lock the operator
//! out).

use crate::knobs::KnobsPatch;
use crate::server::{authorized, unauthorized, Shared};
use crate::wire::{error_body, Outcome, Reply};
use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use serde_json::json;

/// Paths under this prefix are admin calls.
pub(crate) const PREFIX: &str = "/_sandbox/";

/// Largest admin body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024;

pub(crate) async fn handle(shared: &Shared, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if !authorized(&parts.headers) {
        return unauthorized();
    }
    let outcome = match (parts.method.clone(), parts.uri.path()) {
        (Method::GET, "/_sandbox/knobs") => knobs_json(shared),
        (Method::GET, "/_sandbox/traces") => Outcome::new(
            200,
            json!(*shared.traced.lock().unwrap_or_else(|e| e.into_inner())),
        ),
        (Method::GET, "/_sandbox/calls") => Outcome::new(
            200,
            json!(*shared.calls.lock().unwrap_or_else(|e| e.into_inner())),
        ),
        (Method::GET, "/_sandbox/turned_away") => Outcome::new(
            200,
            json!(*shared
                .turned_away
                .lock()
                .unwrap_or_else(|e| e.into_inner())),
        ),
        (Method::POST, "/_sandbox/knobs") => match axum::body::to_bytes(body, MAX_BODY_BYTES).await
        {
            Err(_) => bad_request("the body could not be read or is larger than 16 KiB"),
            Ok(bytes) => match serde_json::from_slice::<KnobsPatch>(&bytes) {
                Err(error) => bad_request(&format!(
                    "the body is not a JSON object of knobs ({error}); known knobs: error_rate, \
                     error_side, latency_ms, latency_max_ms, spike_rate, spike_ms, timeout_rate, \
                     timeout_ms, search_lag_ms, outage_ms, retry_after_ms"
                )),
                Ok(patch) => match shared.knobs.apply(&patch) {
                    Ok(_) => knobs_json(shared),
                    Err(error) => bad_request(&error.to_string()),
                },
            },
        },
        (method, path) => Outcome::new(
            404,
            error_body(
                "invalid_request_error",
                None,
                &format!(
                    "Unrecognized admin call ({method}: {path}); the sandbox serves GET and POST /_sandbox/knobs, GET /_sandbox/turned_away, GET /_sandbox/calls and GET /_sandbox/traces."
                ),
                None,
            ),
        ),
    };
    Reply::from_outcome(outcome).into_response()
}

fn knobs_json(shared: &Shared) -> Outcome {
    Outcome::new(200, json!(shared.knobs.get()))
}

fn bad_request(message: &str) -> Outcome {
    Outcome::new(
        400,
        error_body("invalid_request_error", None, message, None),
    )
}
