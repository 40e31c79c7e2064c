//! Which sagas a bulk operator command touches: `--where` terms and the
//! targets they select, the same on both engines.
//!
//! A term is `status=S`, `saga=NAME`, `step=STEP` (the step of the saga's
//! last attempt: the one it runs or is parked on), `error~TEXT` (a
//! substring of its last error) or `started<T` / `started>T` (RFC 3339);
//! terms are joined with `and`.

use serde::{Deserialize, Serialize};

/// A parsed `--where`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filter {
    /// `status=`.
    pub status: Option<String>,
    /// `saga=`.
    pub saga: Option<String>,
    /// `step=`.
    pub step: Option<String>,
    /// `error~`.
    pub error: Option<String>,
    /// `started>` (ms since the epoch, exclusive).
    pub started_after: Option<u64>,
    /// `started<` (ms since the epoch, exclusive).
    pub started_before: Option<u64>,
}

/// One saga a bulk command would touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Saga id.
    pub id: String,
    /// Saga name.
    pub saga: String,
    /// Status name.
    pub status: String,
    /// The step of its last attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Its last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Start time (ms since the epoch).
    pub created_ms: u64,
}

impl Target {
    /// A saga a bulk plan holds, known by its id only (a resumed plan's
    /// dry run).
    pub fn planned(id: &str) -> Target {
        Target {
            id: id.to_owned(),
            saga: String::new(),
            status: "planned".to_owned(),
            step: None,
            error: None,
            created_ms: 0,
        }
    }
}

impl Filter {
    /// The terms again, as [`Filter::parse`] reads them (the admin client
    /// sends them on).
    pub fn to_terms(&self) -> String {
        let time = |ms: u64| {
            chrono::DateTime::from_timestamp_millis(ms as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default()
        };
        let mut terms = Vec::new();
        terms.extend(self.status.as_ref().map(|v| format!("status={v}")));
        terms.extend(self.saga.as_ref().map(|v| format!("saga={v}")));
        terms.extend(self.step.as_ref().map(|v| format!("step={v}")));
        terms.extend(self.error.as_ref().map(|v| format!("error~{v}")));
        terms.extend(self.started_after.map(|v| format!("started>{}", time(v))));
        terms.extend(self.started_before.map(|v| format!("started<{}", time(v))));
        terms.join(" and ")
    }

    /// Parses `status=parked and step=commit_stock and error~timeout`.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut f = Filter::default();
        let normalized = text.replace(" AND ", " and ");
        for term in normalized.split(" and ").map(str::trim) {
            if term.is_empty() {
                return Err(format!("--where {text:?} has an empty term; join terms with \" and \", e.g. \"status=parked and step=commit_stock\""));
            }
            let Some(at) = term.find(['=', '~', '<', '>']) else {
                return Err(format!("--where term {term:?} has no operator; write KEY=VALUE, error~TEXT or started<TIME"));
            };
            let (key, op, value) = (term[..at].trim(), &term[at..at + 1], term[at + 1..].trim());
            if value.is_empty() {
                return Err(format!("--where term {term:?} has no value"));
            }
            let time = || {
                chrono::DateTime::parse_from_rfc3339(value)
                    .map(|t| t.timestamp_millis().max(0) as u64)
                    .map_err(|_| format!("--where term {term:?}: {value:?} is not an RFC 3339 time (2026-11-30T18:00:00Z)"))
            };
            let slot = match (key, op) {
                ("status", "=") => {
                    if !sagaflow_workflows::SagaStatus::NAMES.contains(&value) {
                        return Err(format!(
                            "--where term {term:?}: the status must be one of {}",
                            sagaflow_workflows::SagaStatus::NAMES.join(", ")
                        ));
                    }
                    &mut f.status
                }
                ("saga", "=") | ("step", "=") if !is_name(value) => {
                    return Err(format!(
                        "--where term {term:?}: a {key} name is letters, digits and _ . : - (as in sagas.toml)"
                    ))
                }
                ("saga", "=") => &mut f.saga,
                ("step", "=") => &mut f.step,
                ("error", "~") => &mut f.error,
                ("started", ">") => {
                    f.started_after = Some(time()?);
                    continue;
                }
                ("started", "<") => {
                    f.started_before = Some(time()?);
                    continue;
                }
                _ => {
                    return Err(format!(
                        "--where term {term:?} is not one of status=, saga=, step=, error~, started<, started>"
                    ))
                }
            };
            *slot = Some(value.to_owned());
        }
        Ok(f)
    }

    /// True when the filter needs each saga's last attempt (step, error).
    pub fn needs_last_attempt(&self) -> bool {
        self.step.is_some() || self.error.is_some()
    }

    /// Whether a saga with this last step and error matches the step and
    /// error terms (the others are applied by the query).
    pub fn matches_attempt(&self, step: Option<&str>, error: Option<&str>) -> bool {
        self.step.as_deref().is_none_or(|s| step == Some(s))
            && self
                .error
                .as_deref()
                .is_none_or(|e| error.is_some_and(|err| err.contains(e)))
    }
}

/// Whether `value` can be a saga or step name: what sagas.toml's names
/// are made of, and nothing a query language could read as syntax.
fn is_name(value: &str) -> bool {
    value.len() <= 200
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// The step and error of the last attempt among a saga's journal events
/// (kind and body as the journal or the Temporal translation has them).
pub fn last_attempt<'a>(
    events: impl DoubleEndedIterator<Item = (&'a str, &'a serde_json::Value)>,
) -> (Option<String>, Option<String>) {
    for (kind, body) in events.rev() {
        if kind == "activity_completed" || kind == "activity_failed" {
            let step = body["step"].as_str().map(str::to_owned);
            let error = body.get("error").filter(|e| !e.is_null()).map(|e| {
                format!(
                    "{}: {}",
                    e["kind"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                )
            });
            return (step, error);
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_parse_and_bad_ones_say_what_to_write() {
        let f = Filter::parse(
            "status=parked and saga=checkout AND step=commit_stock and error~timeout and started>2026-11-30T18:00:00Z",
        )
        .unwrap();
        assert_eq!(f.status.as_deref(), Some("parked"));
        assert_eq!(f.saga.as_deref(), Some("checkout"));
        assert_eq!(f.step.as_deref(), Some("commit_stock"));
        assert_eq!(f.error.as_deref(), Some("timeout"));
        assert_eq!(f.started_after, Some(1_796_061_600_000));
        assert!(f.matches_attempt(Some("commit_stock"), Some("timeout: no result")));
        assert!(!f.matches_attempt(Some("commit_stock"), None));
        assert!(!f.matches_attempt(Some("reserve_stock"), Some("timeout")));
        for (bad, says) in [
            ("status=sleeping", "must be one of"),
            ("colour=red", "is not one of status="),
            ("status", "has no operator"),
            ("started<yesterday", "not an RFC 3339 time"),
            ("status=parked and ", "empty term"),
            ("step=", "has no value"),
            ("saga=x' OR TaskQueue != '", "a saga name is letters"),
            ("step=commit stock", "a step name is letters"),
        ] {
            let err = Filter::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
