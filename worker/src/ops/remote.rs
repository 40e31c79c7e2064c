//! `sagaflow --admin URL ...`: the CLI's reads and commands sent to a
//! running worker's admin API instead of the journal or the cluster, so an
//! operator needs no access to either, only the URL (and the token).

use super::bulk::{Bulk, BulkAnswer, BulkSpec};
use super::command::Verdict;
use super::refund::RefundOutcome;
use super::source::SagaView;
use crate::config::AdminSettings;
use crate::engine::command::{Audit, CommandRequest};
use crate::engine::filter::{Filter, Target};
use crate::engine::view::AuditRow;
use crate::engine::view::{EventRow, SagaRow, Stats};
use crate::runtime::block_on;
use anyhow::{bail, Context, Result};
use sagaflow_workflows::{SagaDef, Signal};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

/// The bearer token callers must send. Its `Debug` shows no secret, so no
/// log line or error can carry it by accident.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token holding `secret`.
    pub(crate) fn new(secret: String) -> Token {
        Token(secret)
    }

    /// True when `header` (an `Authorization` value) carries this token.
    /// Compared in constant time, so the answer's timing says nothing
    /// about how much of a guess was right.
    pub fn admits(&self, header: Option<&[u8]>) -> bool {
        let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        bool::from(given.ct_eq(self.0.as_bytes()))
    }

    /// The value of an `Authorization` header carrying it.
    pub fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

/// The token as read from the client's side: the same variable.
pub fn client_token(settings: &AdminSettings) -> Option<Token> {
    std::env::var(&settings.token_env)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Token)
}

/// A client of one worker's admin API.
pub struct AdminClient {
    base: url::Url,
    token: Option<Token>,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of the API at `base` (e.g. `http://10.0.0.7:7070`),
    /// sending `token` when there is one.
    pub fn new(base: &str, token: Option<Token>) -> Result<AdminClient> {
        let base = url::Url::parse(base).with_context(|| {
            format!("--admin {base:?} is not a URL; write e.g. --admin http://127.0.0.1:7070")
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!("--admin {base}: use an http:// or https:// URL");
        }
        Ok(AdminClient {
            base,
            token,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(600))
                .build()?,
        })
    }

    fn url(&self, path: &str) -> Result<url::Url> {
        Ok(self.base.join(path)?)
    }

    /// One request; the API's own error message when it answers with one.
    fn call<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<(u16, T)> {
        let req = match &self.token {
            Some(t) => req.header(reqwest::header::AUTHORIZATION, t.header()),
            None => req,
        };
        let base = self.base.clone();
        block_on(async move {
            let res = req.send().await.with_context(|| {
                format!("cannot reach the admin API at {base}: is `sagaflow run` running there, with [admin] bind on that address?")
            })?;
            let status = res.status().as_u16();
            let body: Value = res.json().await.with_context(|| {
                format!("the admin API at {base} answered {status} with no JSON")
            })?;
            if status == 401 {
                bail!(
                    "the admin API at {base} refused the request (401): {}",
                    body["error"].as_str().unwrap_or("missing or wrong token")
                );
            }
            if status >= 400 && status != 409 {
                bail!(
                    "the admin API at {base}: {}",
                    body["error"].as_str().unwrap_or("error")
                );
            }
            Ok((status, serde_json::from_value(body)?))
        })?
    }

    fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        Ok(self.call(self.http.get(self.url(path)?).query(query))?.1)
    }

    fn segment(id: &str) -> String {
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    /// `GET /api/health`.
    pub fn health(&self) -> Result<super::health::Health> {
        self.get("api/health", &[])
    }

    /// `GET /api/sagas`.
    pub fn list(&self, status: Option<&str>, limit: usize) -> Result<Vec<SagaRow>> {
        let mut q = vec![("limit", limit.to_string())];
        q.extend(status.map(|s| ("status", s.to_owned())));
        self.get("/api/sagas", &q)
    }

    /// `GET /api/sagas?where=...`.
    pub fn targets(&self, filter: &Filter) -> Result<Vec<Target>> {
        self.get("/api/sagas", &[("where", filter.to_terms())])
    }

    /// `GET /api/sagas/{id}` and its history.
    pub fn saga(&self, id: &str) -> Result<SagaView> {
        let doc: Value = self.get(&format!("/api/sagas/{}", Self::segment(id)), &[])?;
        let events: Vec<EventRow> =
            self.get(&format!("/api/sagas/{}/history", Self::segment(id)), &[])?;
        let row: SagaRow = serde_json::from_value(doc["saga"].clone())?;
        let def: SagaDef = serde_json::from_value(doc["definition"].clone())?;
        Ok(SagaView {
            row,
            def,
            input: Some(doc["input"].clone()).filter(|v| !v.is_null()),
            events,
        })
    }

    /// `GET /api/stats`.
    pub fn stats(&self) -> Result<Stats> {
        self.get("/api/stats", &[])
    }

    /// `GET /api/audit`.
    pub fn audit(&self, since_ms: u64, saga: Option<&str>, limit: usize) -> Result<Vec<AuditRow>> {
        let mut q = vec![
            ("since_ms", since_ms.to_string()),
            ("limit", limit.to_string()),
        ];
        q.extend(saga.map(|s| ("saga", s.to_owned())));
        self.get("/api/audit", &q)
    }

    /// `POST /api/sagas/{id}/{retry|cancel|resolve}`.
    pub fn command(&self, id: &str, request: &CommandRequest, wait: u64) -> Result<Verdict> {
        let mut body = json!({
            "operator": request.audit.operator,
            "reason": request.audit.reason,
            "wait": wait,
        });
        if let Signal::Resolve { step, output } = &request.signal {
            body["step"] = step.clone().into();
            body["output"] = output.clone();
        }
        let path = format!("/api/sagas/{}/{}", Self::segment(id), request.signal.name());
        let (_, answer): (u16, Value) = self.call(self.http.post(self.url(&path)?).json(&body))?;
        Verdict::from_report(&answer)
            .with_context(|| format!("the admin API answered {answer} to {path}"))
    }

    /// `POST /api/sagas/{id}/refund`.
    pub fn refund(&self, id: &str, audit: &Audit, wait: u64) -> Result<RefundOutcome> {
        let body = json!({"operator": audit.operator, "reason": audit.reason, "wait": wait});
        let path = format!("/api/sagas/{}/refund", Self::segment(id));
        Ok(self.call(self.http.post(self.url(&path)?).json(&body))?.1)
    }

    /// `POST /api/bulk/{command}`.
    pub fn bulk(&self, what: &Bulk, spec: &BulkSpec) -> Result<BulkAnswer> {
        let mut body = serde_json::to_value(spec)?;
        if let Bulk::Signal(Signal::Resolve { step, output }) = what {
            body["step"] = step.clone().into();
            body["output"] = output.clone();
        }
        let path = format!("/api/bulk/{}", what.name());
        Ok(self.call(self.http.post(self.url(&path)?).json(&body))?.1)
    }
}

#[cfg(test)]
mod tests {
    use super::AdminClient;
    use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    use proptest::prelude::*;
    use sagaflow_activities::order::id_problem;

    /// What the dashboard's `encodeURIComponent` leaves as it is.
    const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'!')
        .remove(b'~')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');

    /// The id a server reads back from `/api/sagas/{encoded}`.
    fn read_back(encoded: &str) -> Option<String> {
        let url = url::Url::parse(&format!("http://127.0.0.1:7070/api/sagas/{encoded}")).ok()?;
        let segments: Vec<&str> = url.path_segments()?.collect();
        match segments.as_slice() {
            ["api", "sagas", one] => percent_decode_str(one).decode_utf8().ok().map(Into::into),
            _ => None,
        }
    }

    proptest! {
        /// Every id the door accepts works everywhere it travels: the
        /// provider's `Idempotency-Key` header, a Cosmos DB document id, a
        /// Redis hash field and key suffix, and one URL path segment from
        /// the CLI's `--admin` client and the dashboard alike.
        #[test]
        fn an_accepted_order_id_is_valid_in_every_store_header_and_url(
            id in prop_oneof![
                "[ -~]{0,130}",
                "[a-z./%#?\\\\ ]{1,4}",
                any::<String>(),
                "[a-z\u{200B}\u{202E}\u{00F6}\u{1F6D2}-]{1,6}",
            ]
        ) {
            if id_problem(&id).is_none() {
                let key = format!("{id}/reserve_stock/compensate");
                let header = reqwest::header::HeaderValue::from_str(&key);
                prop_assert!(header.is_ok_and(|h| h.to_str().is_ok()), "header {key:?}");
                prop_assert!(id.len() <= 255 && !id.contains(['/', '\\', '?', '#']), "cosmos {id:?}");
                prop_assert!(id.bytes().all(|b| b.is_ascii_graphic()), "redis {id:?}");
                prop_assert_eq!(read_back(&AdminClient::segment(&id)), Some(id.clone()));
                let dashboard = utf8_percent_encode(&id, URI_COMPONENT).to_string();
                prop_assert_eq!(read_back(&dashboard), Some(id.clone()));
            }
        }
    }

    #[test]
    fn the_issues_corpus_is_refused_and_the_rest_reads_back() {
        for bad in ["ö-1", "\u{202E}1", "a\u{200B}", ".", "..", "a b", "a%2Fb"] {
            assert!(id_problem(bad).is_some(), "{bad:?}");
        }
        let long = "a".repeat(128);
        for good in [long.as_str(), "a.b", "o-1!~*'()"] {
            assert!(id_problem(good).is_none(), "{good:?}");
            assert_eq!(
                read_back(&AdminClient::segment(good)).as_deref(),
                Some(good)
            );
        }
    }
}
