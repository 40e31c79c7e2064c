//! PaymentIntents: create (authorize), capture, cancel (void), read.
//!
//! Invariants:
//! - an intent is captured only from `requires_capture`, and every applied
//!   capture adds one to `capture_count` (the ledger reports any above 1);
//! - declining test cards create an intent in `requires_payment_method`
//!   and answer 402, stored like any executed request;
//! - each function runs inside the caller's transaction: `Ok` outcomes
//!   commit with the stored answer, `Err` ones apply nothing.

use crate::faults::Rng;
use crate::store::{now_ms, now_secs};
use crate::wire::{error_body, invalid, missing, no_such_intent, Exec, Form, Outcome};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{json, Value};

/// The columns [`IntentRow::from_row`] reads, in its order.
macro_rules! intent_columns {
    () => {
        "rowid, id, amount, currency, status, capture_method, payment_method, metadata, \
         amount_received, decline_code, declined_payment_method, cancellation_reason, \
         canceled_at, created"
    };
}
pub(crate) use intent_columns;

const DECLINE_MESSAGE: &str = "Your card was declined.";

/// One row of `intents`.
pub(crate) struct IntentRow {
    pub(crate) rowid: i64,
    pub(crate) id: String,
    pub(crate) amount: u64,
    pub(crate) currency: String,
    pub(crate) status: String,
    pub(crate) capture_method: String,
    pub(crate) payment_method: Option<String>,
    pub(crate) metadata: String,
    pub(crate) amount_received: u64,
    pub(crate) decline_code: Option<String>,
    pub(crate) declined_payment_method: Option<String>,
    pub(crate) cancellation_reason: Option<String>,
    pub(crate) canceled_at: Option<u64>,
    pub(crate) created: u64,
}

impl IntentRow {
    /// Reads the columns of `intent_columns!()`.
    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<IntentRow> {
        Ok(IntentRow {
            rowid: r.get(0)?,
            id: r.get(1)?,
            amount: r.get(2)?,
            currency: r.get(3)?,
            status: r.get(4)?,
            capture_method: r.get(5)?,
            payment_method: r.get(6)?,
            metadata: r.get(7)?,
            amount_received: r.get(8)?,
            decline_code: r.get(9)?,
            declined_payment_method: r.get(10)?,
            cancellation_reason: r.get(11)?,
            canceled_at: r.get(12)?,
            created: r.get(13)?,
        })
    }

    /// The Stripe PaymentIntent object.
    pub(crate) fn to_json(&self) -> Value {
        let metadata: Value = serde_json::from_str(&self.metadata).unwrap_or_else(|_| json!({}));
        let last_payment_error = self.decline_code.as_ref().map(|code| {
            json!({
                "type": "card_error",
                "code": "card_declined",
                "decline_code": code,
                "message": DECLINE_MESSAGE,
                "payment_method": {
                    "id": self.declined_payment_method,
                    "object": "payment_method",
                },
            })
        });
        let capturable = if self.status == "requires_capture" {
            self.amount
        } else {
            0
        };
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": capturable,
            "amount_received": self.amount_received,
            "canceled_at": self.canceled_at,
            "cancellation_reason": self.cancellation_reason,
            "capture_method": self.capture_method,
            "confirmation_method": "automatic",
            "created": self.created,
            "currency": self.currency,
            "last_payment_error": last_payment_error,
            "livemode": false,
            "metadata": metadata,
            "payment_method": self.payment_method,
            "status": self.status,
        })
    }
}

/// The intent with this id, if any.
pub(crate) fn load_intent(conn: &Connection, id: &str) -> rusqlite::Result<Option<IntentRow>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        intent_columns!(),
        " FROM intents WHERE id = ?1"
    ))?
    .query_row([id], IntentRow::from_row)
    .optional()
}

/// A 400 `payment_intent_unexpected_state` carrying the intent (stored).
pub(crate) fn unexpected_state(intent: &IntentRow, message: String) -> Outcome {
    let mut body = error_body(
        "invalid_request_error",
        Some("payment_intent_unexpected_state"),
        &message,
        None,
    );
    body["error"]["payment_intent"] = intent.to_json();
    Outcome::new(400, body)
}

/// The decline code of Stripe's declining test cards.
fn decline_code(payment_method: &str) -> Option<&'static str> {
    match payment_method {
        "pm_card_chargeDeclined" => Some("generic_decline"),
        "pm_card_chargeDeclinedInsufficientFunds" => Some("insufficient_funds"),
        "pm_card_chargeDeclinedFraudulent" => Some("fraudulent"),
        _ => None,
    }
}

/// `POST /v1/payment_intents`: authorize (or decline) a confirmed intent.
pub(crate) fn create_intent(conn: &Connection, rng: &Rng, form: &Form) -> Exec {
    form.check_known(
        &[
            "amount",
            "currency",
            "capture_method",
            "confirm",
            "payment_method",
            "description",
        ],
        true,
    )?;
    let amount = form.positive("amount")?.ok_or_else(|| missing("amount"))?;
    let currency = form.get("currency").ok_or_else(|| missing("currency"))?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid(
            "currency",
            "parameter_invalid_string",
            format!("Invalid currency: {currency}. Use a three-letter ISO code such as usd."),
        ));
    }
    let currency = currency.to_ascii_lowercase();
    let capture_method = form.get("capture_method").unwrap_or("automatic");
    let manual = match capture_method {
        "manual" => true,
        "automatic" | "automatic_async" => false,
        other => {
            return Err(invalid(
                "capture_method",
                "parameter_invalid_string",
                format!("Invalid capture_method: must be one of manual, automatic or automatic_async (got {other})."),
            ))
        }
    };
    if form.get("confirm") != Some("true") {
        return Err(invalid(
            "confirm",
            "parameter_invalid_string",
            "The sandbox only creates confirmed PaymentIntents; send confirm=true.".into(),
        ));
    }
    let payment_method = form
        .get("payment_method")
        .ok_or_else(|| missing("payment_method"))?;
    if !payment_method.starts_with("pm_") || payment_method.len() <= 3 {
        return Err(invalid(
            "payment_method",
            "resource_missing",
            format!("No such PaymentMethod: '{payment_method}'"),
        ));
    }
    let metadata = form.metadata()?;
    let metadata_json = serde_json::to_string(&metadata).unwrap_or_else(|_| "{}".into());
    let declined = decline_code(payment_method);
    let (status, received, captures) = match (declined, manual) {
        (Some(_), _) => ("requires_payment_method", 0, 0),
        (None, true) => ("requires_capture", 0, 0),
        (None, false) => ("succeeded", amount, 1),
    };
    let mut intent = IntentRow {
        rowid: 0,
        id: rng.new_id("pi_"),
        amount,
        currency,
        status: status.into(),
        capture_method: capture_method.into(),
        payment_method: declined.is_none().then(|| payment_method.to_owned()),
        metadata: metadata_json,
        amount_received: received,
        decline_code: declined.map(str::to_owned),
        declined_payment_method: declined.map(|_| payment_method.to_owned()),
        cancellation_reason: None,
        canceled_at: None,
        created: now_secs(),
    };
    conn.prepare_cached(
        "INSERT INTO intents (id, amount, currency, status, capture_method, payment_method,
             metadata, amount_received, capture_count, decline_code, declined_payment_method,
             created, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        intent.id,
        intent.amount,
        intent.currency,
        intent.status,
        intent.capture_method,
        intent.payment_method,
        intent.metadata,
        intent.amount_received,
        captures,
        intent.decline_code,
        intent.declined_payment_method,
        intent.created,
        now_ms(),
    ])?;
    intent.rowid = conn.last_insert_rowid();
    if !metadata.is_empty() {
        let mut insert = conn.prepare_cached(
            "INSERT INTO intent_metadata (key, value, intent_rowid) VALUES (?1, ?2, ?3)",
        )?;
        for (key, value) in &metadata {
            insert.execute(params![key, value, intent.rowid])?;
        }
    }
    let body = intent.to_json();
    match intent.decline_code {
        None => Ok(Outcome::new(200, body)),
        Some(code) => Ok(Outcome::new(
            402,
            json!({
                "error": {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": code,
                    "message": DECLINE_MESSAGE,
                    "payment_intent": body,
                }
            }),
        )),
    }
}

/// A sandbox-only test payment method: it authorizes, and capturing it
/// fails with Stripe's `charge_expired_for_capture`, as a capture after the
/// authorization window does. It lets tests fail a saga at its pivot.
pub const CAPTURE_EXPIRES_CARD: &str = "pm_card_sandboxCaptureExpires";

/// `POST /v1/payment_intents/{id}/capture`.
pub(crate) fn capture_intent(conn: &Connection, id: &str, form: &Form) -> Exec {
    form.check_known(&["amount_to_capture"], false)?;
    let amount_to_capture = form.positive("amount_to_capture")?;
    let mut intent = load_intent(conn, id)?.ok_or_else(|| no_such_intent(id, "intent"))?;
    if intent.status == "requires_capture"
        && intent.payment_method.as_deref() == Some(CAPTURE_EXPIRES_CARD)
    {
        let mut body = error_body(
            "invalid_request_error",
            Some("charge_expired_for_capture"),
            "The charge expired before it was captured: the authorization window has passed.",
            None,
        );
        body["error"]["payment_intent"] = intent.to_json();
        return Ok(Outcome::new(400, body));
    }
    if intent.status != "requires_capture" {
        let message = format!(
            "This PaymentIntent could not be captured because it has a status of {}. \
             Only a PaymentIntent with one of the following statuses may be captured: requires_capture.",
            intent.status
        );
        return Ok(unexpected_state(&intent, message));
    }
    let amount = amount_to_capture.unwrap_or(intent.amount);
    if amount > intent.amount {
        return Err(invalid(
            "amount_to_capture",
            "amount_too_large",
            format!(
                "The amount to capture ({amount}) is greater than the amount authorized ({}).",
                intent.amount
            ),
        ));
    }
    conn.prepare_cached(
        "UPDATE intents SET status = 'succeeded', amount_received = ?2,
             capture_count = capture_count + 1
         WHERE rowid = ?1",
    )?
    .execute(params![intent.rowid, amount])?;
    intent.status = "succeeded".into();
    intent.amount_received = amount;
    Ok(Outcome::new(200, intent.to_json()))
}

/// `POST /v1/payment_intents/{id}/cancel`.
pub(crate) fn cancel_intent(conn: &Connection, id: &str, form: &Form) -> Exec {
    form.check_known(&["cancellation_reason"], false)?;
    let reason = form.get("cancellation_reason");
    if let Some(reason) = reason {
        if !matches!(
            reason,
            "duplicate" | "fraudulent" | "requested_by_customer" | "abandoned"
        ) {
            return Err(invalid(
                "cancellation_reason",
                "parameter_invalid_string",
                format!("Invalid cancellation_reason: must be one of duplicate, fraudulent, requested_by_customer or abandoned (got {reason})."),
            ));
        }
    }
    let mut intent = load_intent(conn, id)?.ok_or_else(|| no_such_intent(id, "intent"))?;
    const CANCELABLE: [&str; 5] = [
        "requires_payment_method",
        "requires_capture",
        "requires_confirmation",
        "requires_action",
        "processing",
    ];
    if !CANCELABLE.contains(&intent.status.as_str()) {
        let message = format!(
            "You cannot cancel this PaymentIntent because it has a status of {}. \
             Only a PaymentIntent with one of the following statuses may be canceled: {}.",
            intent.status,
            CANCELABLE.join(", ")
        );
        return Ok(unexpected_state(&intent, message));
    }
    let now = now_secs();
    conn.prepare_cached(
        "UPDATE intents SET status = 'canceled', cancellation_reason = ?2, canceled_at = ?3
         WHERE rowid = ?1",
    )?
    .execute(params![intent.rowid, reason, now])?;
    intent.status = "canceled".into();
    intent.cancellation_reason = reason.map(str::to_owned);
    intent.canceled_at = Some(now);
    Ok(Outcome::new(200, intent.to_json()))
}

/// `GET /v1/payment_intents/{id}`.
pub(crate) fn get_intent(conn: &Connection, id: &str) -> Exec {
    let intent = load_intent(conn, id)?.ok_or_else(|| no_such_intent(id, "intent"))?;
    Ok(Outcome::new(200, intent.to_json()))
}
