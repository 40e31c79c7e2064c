//! The wire format: form-encoded requests in, Stripe-shaped JSON out.
//!
//! [`Form`] reads a body or query string as Stripe does (the last value of a
//! name wins, unknown parameters are refused); [`Route`] names the endpoints
//! served; [`Outcome`] is what a handler decided and [`Reply`] what goes on
//! the wire, with Stripe's `Stripe-Should-Retry` and `Idempotent-Replayed`
//! headers.

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// What a handler decided: an HTTP status and a JSON body.
pub(crate) struct Outcome {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

/// `Ok`: the request was executed (its effects commit and the outcome is
/// stored under the key). `Err`: nothing was applied and nothing is stored.
pub(crate) type Exec = Result<Outcome, Outcome>;

impl Outcome {
    pub(crate) fn new(status: u16, body: Value) -> Outcome {
        Outcome { status, body }
    }
}

impl From<rusqlite::Error> for Outcome {
    fn from(error: rusqlite::Error) -> Outcome {
        tracing::error!(%error, "payment sandbox store failed");
        Outcome::new(
            500,
            error_body(
                "api_error",
                None,
                &format!(
                    "The sandbox store failed ({error}); nothing was applied. Retry the request."
                ),
                None,
            ),
        )
    }
}

/// What goes on the wire.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) should_retry: Option<bool>,
    pub(crate) replayed: bool,
}

impl Reply {
    pub(crate) fn from_outcome(outcome: Outcome) -> Reply {
        Reply {
            // Nothing is applied when a 5xx comes from a handler.
            should_retry: (outcome.status >= 500).then_some(true),
            status: outcome.status,
            body: outcome.body.to_string(),
            replayed: false,
        }
    }

    pub(crate) fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(retry) = self.should_retry {
            headers.insert(
                HeaderName::from_static("stripe-should-retry"),
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        if self.replayed {
            headers.insert(
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            );
        }
        response
    }
}

/// `{"error": {...}}` with Stripe's fields; absent ones are left out.
pub(crate) fn error_body(
    kind: &str,
    code: Option<&str>,
    message: &str,
    param: Option<&str>,
) -> Value {
    let mut error = Map::new();
    error.insert("type".into(), kind.into());
    if let Some(code) = code {
        error.insert("code".into(), code.into());
    }
    error.insert("message".into(), message.into());
    if let Some(param) = param {
        error.insert("param".into(), param.into());
    }
    json!({ "error": error })
}

/// A 400 `invalid_request_error` about one parameter (not stored).
pub(crate) fn invalid(param: &str, code: &str, message: String) -> Outcome {
    Outcome::new(
        400,
        error_body("invalid_request_error", Some(code), &message, Some(param)),
    )
}

/// A 400 for a required parameter that is absent (not stored).
pub(crate) fn missing(param: &str) -> Outcome {
    invalid(
        param,
        "parameter_missing",
        format!("Missing required param: {param}."),
    )
}

/// A 404 `resource_missing` for an unknown intent (not stored).
pub(crate) fn no_such_intent(id: &str, param: &str) -> Outcome {
    Outcome::new(
        404,
        error_body(
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such payment_intent: '{id}'"),
            Some(param),
        ),
    )
}

/// The form parameters of a body or a query string.
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Form, Outcome> {
        serde_urlencoded::from_bytes(bytes)
            .map(|pairs| Form { pairs })
            .map_err(|e| {
                Outcome::new(
                    400,
                    error_body(
                        "invalid_request_error",
                        None,
                        &format!("Invalid form-encoded parameters ({e}); send application/x-www-form-urlencoded."),
                        None,
                    ),
                )
            })
    }

    /// The last value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Rejects parameters outside `allowed` (and `metadata[..]` unless
    /// `metadata` is set), as Stripe does.
    pub(crate) fn check_known(&self, allowed: &[&str], metadata: bool) -> Result<(), Outcome> {
        for (name, _) in &self.pairs {
            let known = allowed.contains(&name.as_str())
                || (metadata && name.starts_with("metadata[") && name.ends_with(']'));
            if !known {
                return Err(invalid(
                    name,
                    "parameter_unknown",
                    format!("Received unknown parameter: {name}"),
                ));
            }
        }
        Ok(())
    }

    /// A positive integer parameter, if present.
    pub(crate) fn positive(&self, name: &str) -> Result<Option<u64>, Outcome> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 && n <= i64::MAX as u64 => Ok(Some(n)),
                _ => Err(invalid(
                    name,
                    "parameter_invalid_integer",
                    format!("Invalid positive integer: {name}={v}"),
                )),
            },
        }
    }

    /// `metadata[KEY]=VALUE` pairs, checked against Stripe's limits; an
    /// empty value unsets a key, so it is left out.
    pub(crate) fn metadata(&self) -> Result<BTreeMap<String, String>, Outcome> {
        let mut metadata = BTreeMap::new();
        for (name, value) in &self.pairs {
            let Some(key) = name
                .strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
            else {
                continue;
            };
            if key.is_empty() || key.chars().count() > 40 || value.chars().count() > 500 {
                return Err(invalid(
                    name,
                    "parameter_invalid_string",
                    format!(
                        "Metadata keys must be 1 to 40 characters and values at most 500: {name}"
                    ),
                ));
            }
            if value.is_empty() {
                metadata.remove(key);
            } else {
                metadata.insert(key.to_owned(), value.clone());
            }
        }
        if metadata.len() > 50 {
            return Err(invalid(
                "metadata",
                "parameter_invalid_string",
                "Metadata can have at most 50 keys.".into(),
            ));
        }
        Ok(metadata)
    }

    /// FNV-1a over method, path and the sorted parameters.
    pub(crate) fn fingerprint(&self, method: &Method, path: &str) -> String {
        let mut pairs: Vec<&(String, String)> = self.pairs.iter().collect();
        pairs.sort();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(method.as_str().as_bytes());
        eat(b" ");
        eat(path.as_bytes());
        for (k, v) in pairs {
            eat(b"\n");
            eat(k.as_bytes());
            eat(b"=");
            eat(v.as_bytes());
        }
        format!("{hash:016x}")
    }
}

/// The endpoints served.
pub(crate) enum Route<'a> {
    CreateIntent,
    Capture(&'a str),
    Cancel(&'a str),
    CreateRefund,
    GetIntent(&'a str),
    SearchIntents,
    ListRefunds,
}

impl<'a> Route<'a> {
    pub(crate) fn parse(method: &Method, path: &'a str) -> Option<Route<'a>> {
        let rest = path.strip_prefix("/v1/")?.trim_end_matches('/');
        let mut segments = rest.split('/');
        let parts = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        );
        let post = *method == Method::POST;
        let get = *method == Method::GET;
        Some(match parts {
            (Some("payment_intents"), None, _, _) if post => Route::CreateIntent,
            (Some("payment_intents"), Some("search"), None, _) if get => Route::SearchIntents,
            (Some("payment_intents"), Some(id), None, _) if get && !id.is_empty() => {
                Route::GetIntent(id)
            }
            (Some("payment_intents"), Some(id), Some("capture"), None) if post => {
                Route::Capture(id)
            }
            (Some("payment_intents"), Some(id), Some("cancel"), None) if post => Route::Cancel(id),
            (Some("refunds"), None, _, _) if post => Route::CreateRefund,
            (Some("refunds"), None, _, _) if get => Route::ListRefunds,
            _ => return None,
        })
    }

    /// The intent named in the path, if any.
    pub(crate) fn intent(&self) -> Option<&'a str> {
        match self {
            Route::Capture(id) | Route::Cancel(id) | Route::GetIntent(id) => Some(id),
            _ => None,
        }
    }
}
