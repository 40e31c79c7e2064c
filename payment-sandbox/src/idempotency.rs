//! Idempotent POSTs: look up the key, execute, store the answer, log the
//! request (when the log is on), commit, all in one transaction.
//!
//! Invariants (Stripe's rules):
//! - a key is bound to its first request's fingerprint (method, path,
//!   sorted form parameters): the same request is answered with the stored
//!   status and body (`Idempotent-Replayed: true`), another one with a 400
//!   `idempotency_error` (not stored);
//! - a POST's effect and the answer stored under its key commit together:
//!   after a SIGKILL either both are there or neither is;
//! - what is not stored: parameter validation errors, unknown intents,
//!   injected "before" failures and outages; none of them changed
//!   anything, so retrying the same key may succeed;
//! - requests run one at a time (one connection behind a mutex), so two
//!   requests under one key never both apply.

use crate::faults::{injected_reply, InjectSide, Rng};
use crate::intents::{cancel_intent, capture_intent, create_intent};
use crate::refunds::create_refund;
use crate::store::now_ms;
use crate::wire::{error_body, Form, Outcome, Reply, Route};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;

/// One POST as it reached the store.
pub(crate) struct Post<'a> {
    pub(crate) route: &'a Route<'a>,
    pub(crate) path: &'a str,
    pub(crate) form: &'a Form,
    pub(crate) key: Option<&'a str>,
    pub(crate) fingerprint: &'a str,
    /// The client's `User-Agent` when the request log is on; `None`: the
    /// request is not logged.
    pub(crate) client: Option<&'a str>,
    /// Apply, then answer with an injected 500 (stored under the key).
    pub(crate) fail_after: bool,
}

/// Executes one POST; `Err` from inside means nothing was applied.
pub(crate) fn execute_post(conn: &mut Connection, rng: &Rng, post: &Post<'_>) -> Reply {
    post_in_transaction(conn, rng, post).unwrap_or_else(Reply::from_outcome)
}

fn post_in_transaction(
    conn: &mut Connection,
    rng: &Rng,
    post: &Post<'_>,
) -> Result<Reply, Outcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(key) = post.key {
        let stored = tx
            .prepare_cached(
                "SELECT fingerprint, status, should_retry, body FROM idempotency WHERE key = ?1",
            )?
            .query_row([key], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u16>(1)?,
                    r.get::<_, Option<bool>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .optional()?;
        if let Some((stored_fingerprint, status, should_retry, body)) = stored {
            if stored_fingerprint != post.fingerprint {
                let message = format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. \
                     Try using a key other than '{key}' if you meant to execute a different request."
                );
                return Err(Outcome::new(
                    400,
                    error_body("idempotency_error", None, &message, None),
                ));
            }
            if post.client.is_some() {
                let intent = match post.route.intent() {
                    Some(id) => Some(id.to_owned()),
                    None => serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| intent_in(&v)),
                };
                log_request(&tx, post, status, true, intent.as_deref())?;
            }
            tx.commit()?;
            return Ok(Reply {
                status,
                body,
                should_retry,
                replayed: true,
            });
        }
    }
    let outcome = match post.route {
        Route::CreateIntent => create_intent(&tx, rng, post.form),
        Route::Capture(id) => capture_intent(&tx, id, post.form),
        Route::Cancel(id) => cancel_intent(&tx, id, post.form),
        Route::CreateRefund => create_refund(&tx, rng, post.form),
        _ => unreachable!("Route::parse only gives POST routes for POST"),
    }?;
    let intent = match (post.client, post.route.intent()) {
        (None, _) => None,
        (Some(_), Some(id)) => Some(id.to_owned()),
        (Some(_), None) => intent_in(&outcome.body),
    };
    let reply = if post.fail_after {
        injected_reply(InjectSide::After)
    } else {
        Reply::from_outcome(outcome)
    };
    if let Some(key) = post.key {
        tx.prepare_cached(
            "INSERT INTO idempotency (key, fingerprint, status, should_retry, body, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            key,
            post.fingerprint,
            reply.status,
            reply.should_retry,
            reply.body,
            now_ms()
        ])?;
    }
    if post.client.is_some() {
        log_request(&tx, post, reply.status, false, intent.as_deref())?;
    }
    tx.commit()?;
    Ok(reply)
}

/// The intent an answer is about: a refund's `payment_intent`, an intent's
/// `id`, or the intent inside an error (a decline, an unexpected state).
fn intent_in(body: &Value) -> Option<String> {
    let id = match body["object"].as_str() {
        Some("refund") => &body["payment_intent"],
        Some("payment_intent") => &body["id"],
        _ => &body["error"]["payment_intent"]["id"],
    };
    id.as_str().map(str::to_owned)
}

fn log_request(
    conn: &Connection,
    post: &Post<'_>,
    status: u16,
    replayed: bool,
    intent: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO requests (at_ms, method, path, idempotency_key, client, status, replayed, intent)
         VALUES (?1, 'POST', ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        now_ms(),
        post.path,
        post.key,
        post.client,
        status,
        replayed,
        intent
    ])?;
    Ok(())
}
