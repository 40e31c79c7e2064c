//! Refunds: create one against a captured intent, list an intent's refunds.
//!
//! Invariant: the refunds of an intent never add up to more than it
//! received (`amount_refunded <= amount_received`); a refund past that is a
//! stored 400 (`charge_already_refunded` or `amount_too_large`).

use crate::faults::Rng;
use crate::intents::{load_intent, unexpected_state};
use crate::search::list_limit;
use crate::store::now_secs;
use crate::wire::{error_body, invalid, missing, no_such_intent, Exec, Form, Outcome};
use rusqlite::{params, Connection};
use serde_json::{json, Value};

/// The Stripe Refund object.
fn refund_json(
    id: &str,
    payment_intent: &str,
    amount: u64,
    currency: &str,
    reason: Option<&str>,
    metadata: &str,
    created: u64,
) -> Value {
    let metadata: Value = serde_json::from_str(metadata).unwrap_or_else(|_| json!({}));
    json!({
        "id": id,
        "object": "refund",
        "amount": amount,
        "created": created,
        "currency": currency,
        "metadata": metadata,
        "payment_intent": payment_intent,
        "reason": reason,
        "status": "succeeded",
    })
}

/// `POST /v1/refunds`.
pub(crate) fn create_refund(conn: &Connection, rng: &Rng, form: &Form) -> Exec {
    form.check_known(&["payment_intent", "amount", "reason"], true)?;
    let payment_intent = form
        .get("payment_intent")
        .ok_or_else(|| missing("payment_intent"))?;
    let amount = form.positive("amount")?;
    let reason = form.get("reason");
    if let Some(reason) = reason {
        if !matches!(reason, "duplicate" | "fraudulent" | "requested_by_customer") {
            return Err(invalid(
                "reason",
                "parameter_invalid_string",
                format!("Invalid reason: must be one of duplicate, fraudulent or requested_by_customer (got {reason})."),
            ));
        }
    }
    let metadata = serde_json::to_string(&form.metadata()?).unwrap_or_else(|_| "{}".into());
    let intent = load_intent(conn, payment_intent)?
        .ok_or_else(|| no_such_intent(payment_intent, "payment_intent"))?;
    if intent.status != "succeeded" {
        let message = format!(
            "This PaymentIntent ({}) does not have a successful charge to refund: its status is {}.",
            intent.id, intent.status
        );
        return Ok(unexpected_state(&intent, message));
    }
    let refunded: u64 = conn
        .prepare_cached("SELECT amount_refunded FROM intents WHERE rowid = ?1")?
        .query_row([intent.rowid], |r| r.get(0))?;
    let remaining = intent.amount_received.saturating_sub(refunded);
    if remaining == 0 {
        return Ok(Outcome::new(
            400,
            error_body(
                "invalid_request_error",
                Some("charge_already_refunded"),
                &format!(
                    "The charge of PaymentIntent {} has already been refunded.",
                    intent.id
                ),
                None,
            ),
        ));
    }
    let amount = amount.unwrap_or(remaining);
    if amount > remaining {
        return Ok(Outcome::new(
            400,
            error_body(
                "invalid_request_error",
                Some("amount_too_large"),
                &format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})."),
                Some("amount"),
            ),
        ));
    }
    let id = rng.new_id("re_");
    let created = now_secs();
    conn.prepare_cached(
        "INSERT INTO refunds (id, payment_intent, amount, currency, reason, metadata, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        intent.id,
        amount,
        intent.currency,
        reason,
        metadata,
        created
    ])?;
    conn.prepare_cached(
        "UPDATE intents SET amount_refunded = amount_refunded + ?2 WHERE rowid = ?1",
    )?
    .execute(params![intent.rowid, amount])?;
    Ok(Outcome::new(
        200,
        refund_json(
            &id,
            &intent.id,
            amount,
            &intent.currency,
            reason,
            &metadata,
            created,
        ),
    ))
}

// ---------------------------------------------------------------------------
// Reads.

/// `GET /v1/refunds?payment_intent=..`, newest first.
pub(crate) fn list_refunds(conn: &Connection, query: &Form) -> Exec {
    query.check_known(&["payment_intent", "limit"], false)?;
    let payment_intent = query
        .get("payment_intent")
        .ok_or_else(|| missing("payment_intent"))?;
    let limit = list_limit(query)?;
    let mut statement = conn.prepare_cached(
        "SELECT id, payment_intent, amount, currency, reason, metadata, created
         FROM refunds WHERE payment_intent = ?1 ORDER BY rowid DESC LIMIT ?2",
    )?;
    let mut data = statement
        .query_map(params![payment_intent, limit + 1], |r| {
            Ok(refund_json(
                &r.get::<_, String>(0)?,
                &r.get::<_, String>(1)?,
                r.get(2)?,
                &r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?.as_deref(),
                &r.get::<_, String>(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<Value>>>()?;
    let has_more = data.len() as u64 > limit;
    data.truncate(limit as usize);
    Ok(Outcome::new(
        200,
        json!({
            "object": "list",
            "data": data,
            "has_more": has_more,
            "url": "/v1/refunds",
        }),
    ))
}
