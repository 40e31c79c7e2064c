//! Search: `GET /v1/payment_intents/search?query=metadata['KEY']:'VALUE'`.
//!
//! The only query form the sandbox knows is one metadata equality (what the
//! HTTP adapter uses to find an authorization whose answer was lost).
//! Stripe documents that search results trail writes; the `search_lag_ms`
//! knob reproduces it: an intent is found only once it is that old. Later
//! changes to an intent (capture, cancel) show at once.

use crate::intents::{intent_columns, IntentRow};
use crate::store::now_ms;
use crate::wire::{invalid, missing, Exec, Form, Outcome};
use rusqlite::{params, Connection};
use serde_json::{json, Value};

/// `limit` as Stripe reads it: 1 to 100, default 10.
pub(crate) fn list_limit(query: &Form) -> Result<u64, Outcome> {
    match query.positive("limit")? {
        None => Ok(10),
        Some(n) if n <= 100 => Ok(n),
        Some(_) => Err(invalid(
            "limit",
            "parameter_invalid_integer",
            "limit must be between 1 and 100.".into(),
        )),
    }
}

/// Intents whose metadata matches, newest first; those created less than
/// `lag_ms` ago are not found yet.
pub(crate) fn search_intents(conn: &Connection, query: &Form, lag_ms: u64) -> Exec {
    query.check_known(&["query", "limit"], false)?;
    let text = query.get("query").ok_or_else(|| missing("query"))?;
    let limit = list_limit(query)?;
    let (key, value) = parse_metadata_query(text).ok_or_else(|| {
        invalid(
            "query",
            "parameter_invalid_string",
            format!("Unsupported search query {text:?}: the sandbox supports only metadata['KEY']:'VALUE'."),
        )
    })?;
    let mut statement = conn.prepare_cached(concat!(
        "SELECT ",
        intent_columns!(),
        " FROM intents WHERE rowid IN
             (SELECT intent_rowid FROM intent_metadata WHERE key = ?1 AND value = ?2)
           AND created_ms <= ?4
         ORDER BY rowid DESC LIMIT ?3"
    ))?;
    let visible_before = now_ms().saturating_sub(lag_ms);
    let mut data = statement
        .query_map(params![key, value, limit + 1, visible_before], |r| {
            IntentRow::from_row(r).map(|intent| intent.to_json())
        })?
        .collect::<rusqlite::Result<Vec<Value>>>()?;
    let has_more = data.len() as u64 > limit;
    data.truncate(limit as usize);
    Ok(Outcome::new(
        200,
        json!({
            "object": "search_result",
            "data": data,
            "has_more": has_more,
            "next_page": null,
            "url": "/v1/payment_intents/search",
        }),
    ))
}

/// Parses `metadata['KEY']:'VALUE'` (either quote, `\` escapes).
fn parse_metadata_query(text: &str) -> Option<(String, String)> {
    fn quoted(s: &str) -> Option<(String, &str)> {
        let mut chars = s.char_indices();
        let (_, quote) = chars.next()?;
        if quote != '\'' && quote != '"' {
            return None;
        }
        let mut out = String::new();
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                out.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == quote {
                return Some((out, &s[i + c.len_utf8()..]));
            } else {
                out.push(c);
            }
        }
        None
    }
    let rest = text.trim().strip_prefix("metadata[")?;
    let (key, rest) = quoted(rest)?;
    let rest = rest.strip_prefix("]:")?;
    let (value, rest) = quoted(rest)?;
    rest.trim().is_empty().then_some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_queries_parse_with_either_quote_and_escapes() {
        assert_eq!(
            parse_metadata_query("metadata['k']:'v'"),
            Some(("k".into(), "v".into()))
        );
        assert_eq!(
            parse_metadata_query(r#" metadata["k"]:"it\"s" "#),
            Some(("k".into(), "it\"s".into()))
        );
        assert_eq!(
            parse_metadata_query(r"metadata['k']:'o\'brien/step'"),
            Some(("k".into(), "o'brien/step".into()))
        );
        assert_eq!(parse_metadata_query("metadata['k']:'v' AND x"), None);
        assert_eq!(parse_metadata_query("metadata['k']:v"), None);
    }
}
