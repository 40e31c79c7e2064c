//! The order message: what a trigger receives and a checkout saga carries.

use sagaflow_workflows::{ActivityCall, ActivityError};
use serde::{Deserialize, Serialize};

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    /// Stock-keeping unit.
    pub sku: String,
    /// Units ordered (at least 1).
    pub qty: u32,
}

/// A checkout order. The saga id is `order_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// Unique order id; becomes the saga id, so resubmitting is harmless.
    pub order_id: String,
    /// Customer reference.
    pub customer: String,
    /// What is bought.
    pub items: Vec<OrderLine>,
    /// Total in minor units (cents).
    pub amount: u64,
    /// ISO currency code, e.g. "usd".
    pub currency: String,
    /// Payment method token, e.g. "pm_card_visa" (test cards decline as the
    /// provider documents, e.g. "pm_card_chargeDeclined").
    pub payment_method: String,
    /// Set only on the input of a refund saga (`sagaflow refund`): the sale
    /// it undoes. An order message carrying it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<RefundOf>,
    /// The W3C trace context of the message that carried the order (its
    /// `traceparent` or `Diagnostic-Id` application property, or this
    /// field of the body); each attempt calls the provider in that trace
    /// ([`crate::trace`]). One that is not valid is dropped, never a
    /// reason to refuse the order. Not part of what makes two messages
    /// the same order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The sale a refund saga undoes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundOf {
    /// The completed checkout saga (its reservation is keyed by this id).
    pub saga_id: String,
    /// The captured payment intent, when the checkout's journal has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<String>,
    /// The operator who asked for the refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Lines in one order, at most.
pub const MAX_LINES: usize = 100;
/// Units of one line, at most: more is a typing mistake, and both stock
/// backends must give the same answer to it (before this bound Redis failed
/// it as retryable and the embedded ledger as out of stock).
pub const MAX_LINE_QTY: u32 = 10_000;
/// The largest amount the provider accepts, in minor units (Stripe:
/// 99,999,999, i.e. 999,999.99 in a two-decimal currency).
pub const MAX_AMOUNT: u64 = 99_999_999;

/// The longest order id.
pub const MAX_ID: usize = 128;

/// Why `id` cannot be an order (and saga) id, or `None` when it can. One
/// rule, so that every accepted id works everywhere it travels: 1 to
/// [`MAX_ID`] visible ASCII characters (`!` to `~`: an HTTP header value
/// for the provider's `Idempotency-Key`, a Redis hash field, a Temporal
/// workflow id, and no bidi or zero-width character to spoof another id
/// on a screen), without `/ \ ? #` (Cosmos DB forbids them in document
/// ids) or `%` (an id in a URL path is percent-encoded once and decoded
/// once; a `%` invites a second decoding), and not dots only (`.` and `..`
/// are no URL path segment).
pub fn id_problem(id: &str) -> Option<String> {
    const RULE: &str = "an order id is 1 to 128 visible ASCII characters (letters, digits and punctuation, no spaces), without / \\ ? # %, and not only dots";
    if id.is_empty() || id.len() > MAX_ID {
        return Some(format!("order_id is {} bytes long; {RULE}", id.len()));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !matches!(c, '!'..='~') || matches!(c, '/' | '\\' | '?' | '#' | '%'))
    {
        return Some(format!(
            "order_id \"{}\" contains '{}'; {RULE}",
            id.escape_debug(),
            c.escape_debug()
        ));
    }
    if id.bytes().all(|b| b == b'.') {
        return Some(format!("order_id {id:?} is only dots; {RULE}"));
    }
    None
}

impl Order {
    /// Parses and checks one order message; the error says what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Order, String> {
        let order: Order =
            serde_json::from_slice(bytes).map_err(|e| format!("not a valid order: {e}"))?;
        order.check()?;
        Ok(order)
    }

    /// The order inside an activity call's input (`{"order": ...}`).
    pub fn from_call(call: &ActivityCall) -> Result<Order, ActivityError> {
        Order::deserialize(&call.input["order"]).map_err(|e| {
            ActivityError::business(
                "bad_input",
                format!("the activity input has no valid order: {e}"),
            )
        })
    }

    /// Checks the fields serde cannot. What passes, every store and the
    /// provider can hold: an order refused here is dead-lettered with the
    /// reason instead of failing (or parking) halfway through its saga.
    pub fn check(&self) -> Result<(), String> {
        if self.refund.is_some() {
            return Err(format!(
                "order {} carries \"refund\", which only `sagaflow refund` sets; send the order without it",
                self.order_id
            ));
        }
        if let Some(problem) = id_problem(&self.order_id) {
            return Err(problem);
        }
        if self.items.is_empty() || self.items.len() > MAX_LINES {
            return Err(format!(
                "order {} has {} items; an order has 1 to {MAX_LINES}",
                self.order_id,
                self.items.len()
            ));
        }
        if let Some(line) = self.items.iter().find(|l| l.qty == 0 || l.sku.is_empty()) {
            return Err(format!(
                "order {} has an item with an empty sku or qty 0 ({line:?})",
                self.order_id
            ));
        }
        if let Some(line) = self.items.iter().find(|l| l.qty > MAX_LINE_QTY) {
            return Err(format!(
                "order {} orders {} of {}; a line holds at most {MAX_LINE_QTY} units",
                self.order_id, line.qty, line.sku
            ));
        }
        if let Some(line) = self.items.iter().find(|l| {
            l.sku.len() > 128
                || l.sku
                    .chars()
                    .any(|c| c == '{' || c == '}' || c.is_control())
        }) {
            return Err(format!(
                "order {} has sku {:?}; a sku is at most 128 characters without braces or control characters (Redis keys hash-tag it as {{SKU}})",
                self.order_id, line.sku
            ));
        }
        if self.amount == 0 || self.amount > MAX_AMOUNT {
            return Err(format!(
                "order {} has amount {}; use 1 to {MAX_AMOUNT} minor units (the provider's limit)",
                self.order_id, self.amount
            ));
        }
        if !CURRENCIES.contains(&self.currency.as_str()) {
            return Err(format!(
                "order {} has unknown currency {:?}; use a lowercase ISO 4217 code the provider settles, one of: {}",
                self.order_id,
                self.currency,
                CURRENCIES.join(", ")
            ));
        }
        Ok(())
    }

    /// Turns a queue message into an order, or says why it cannot be one.
    ///
    /// `message_id` stands in for a missing `order_id`: the saga id must be
    /// stable across redeliveries, and the broker's message id is. Bodies
    /// over `max_bytes` are refused before parsing.
    pub fn from_message(
        body: &[u8],
        message_id: Option<&str>,
        max_bytes: usize,
    ) -> Result<Order, Rejection> {
        if body.len() > max_bytes {
            return Err(Rejection::new(
                "MessageTooLarge",
                format!("the body is {} bytes; orders may be at most {max_bytes} bytes ([servicebus] max_message_bytes)", body.len()),
            ));
        }
        let mut value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Rejection::new("InvalidJson", format!("the body is not JSON: {e}")))?;
        let Some(fields) = value.as_object_mut() else {
            return Err(Rejection::new(
                "InvalidOrder",
                "the body is JSON but not an object; send one order object per message",
            ));
        };
        if !fields.contains_key("order_id") {
            if let Some(id) = message_id.filter(|id| !id.is_empty()) {
                fields.insert("order_id".into(), serde_json::Value::String(id.to_owned()));
            }
        }
        let mut order = Order::deserialize(value)
            .map_err(|e| Rejection::new("InvalidOrder", format!("not a valid order: {e}")))?;
        if !order
            .traceparent
            .as_deref()
            .is_some_and(crate::trace::is_valid)
        {
            order.traceparent = None;
        }
        order
            .check()
            .map_err(|e| Rejection::new("InvalidOrder", e))?;
        Ok(order)
    }
}

/// Currencies an order may be in (lowercase ISO 4217, as the provider's API
/// writes them). An unknown one is refused at the queue, not at payment.
pub const CURRENCIES: [&str; 12] = [
    "aud", "brl", "cad", "chf", "cny", "eur", "gbp", "inr", "jpy", "mxn", "sek", "usd",
];

/// Why a message cannot become a saga: what a dead letter carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Short machine-readable reason (`InvalidJson`, `InvalidOrder`,
    /// `MessageTooLarge`, ...), Service Bus's `DeadLetterReason`.
    pub reason: &'static str,
    /// What is wrong, for the operator (`DeadLetterErrorDescription`).
    pub description: String,
}

impl Rejection {
    /// A rejection with `reason` and `description`.
    pub fn new(reason: &'static str, description: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            description: description.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.description)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"order_id":"o-1","customer":"c","items":[{"sku":"sku-1","qty":1}],"amount":100,"currency":"usd","payment_method":"pm_card_visa"}"#;

    fn reason(body: &str) -> &'static str {
        Order::from_message(body.as_bytes(), Some("m-1"), 4096)
            .unwrap_err()
            .reason
    }

    #[test]
    fn a_valid_order_passes() {
        let order = Order::from_message(OK.as_bytes(), Some("m-1"), 4096).unwrap();
        assert_eq!(order.order_id, "o-1");
    }

    #[test]
    fn an_order_message_cannot_pose_as_a_refund() {
        let body = OK.replace(
            r#""payment_method":"pm_card_visa""#,
            r#""payment_method":"pm_card_visa","refund":{"saga_id":"o-0"}"#,
        );
        let err = Order::parse(body.as_bytes()).unwrap_err();
        assert!(err.contains("only `sagaflow refund` sets"), "{err}");
        // The refund saga's own input reads back with the sale it undoes.
        let order: Order = serde_json::from_str(&body).unwrap();
        assert_eq!(order.refund.unwrap().saga_id, "o-0");
    }

    #[test]
    fn the_message_id_stands_in_for_a_missing_order_id() {
        let body = OK.replace(r#""order_id":"o-1","#, "");
        let order = Order::from_message(body.as_bytes(), Some("m-9"), 4096).unwrap();
        assert_eq!(order.order_id, "m-9");
        assert_eq!(
            Order::from_message(body.as_bytes(), None, 4096)
                .unwrap_err()
                .reason,
            "InvalidOrder"
        );
    }

    #[test]
    fn each_kind_of_bad_message_has_its_reason() {
        assert_eq!(reason("not json"), "InvalidJson");
        assert_eq!(reason("[1,2]"), "InvalidOrder");
        assert_eq!(
            reason(&OK.replace(r#""qty":1"#, r#""qty":-1"#)),
            "InvalidOrder"
        );
        assert_eq!(
            reason(&OK.replace(r#""qty":1"#, r#""qty":0"#)),
            "InvalidOrder"
        );
        assert_eq!(reason(&OK.replace("usd", "xyz")), "InvalidOrder");
        assert_eq!(reason(&OK.replace(r#""amount":100,"#, "")), "InvalidOrder");
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
        assert_eq!(reason(&big), "MessageTooLarge");
    }

    /// Before these checks each of these passed the door and then failed
    /// (or parked) inside its saga.
    #[test]
    fn ids_skus_and_amounts_the_stores_cannot_hold_are_refused_at_the_door() {
        let id = |v: &str| OK.replace(r#""order_id":"o-1""#, &format!(r#""order_id":{v}"#));
        for bad in [
            r#""a/b""#,
            r#""a\\b""#,
            r#""a?b""#,
            r#""a#b""#,
            r#""a%2Fb""#,
            r#""a\u0001b""#,
            r#""ö-1""#,
            r#""🛒-1""#,
            r#""o-\u202e1""#,
            r#""o\u200b1""#,
            r#""a b""#,
            r#""""#,
            r#"".""#,
            r#""..""#,
        ] {
            let e = Order::from_message(id(bad).as_bytes(), None, 4096).unwrap_err();
            assert_eq!(e.reason, "InvalidOrder", "{bad}");
            assert!(
                e.description
                    .contains("an order id is 1 to 128 visible ASCII"),
                "{bad}: {e}"
            );
        }
        let e = Order::from_message(id(r#""o-\u202e1""#).as_bytes(), None, 4096).unwrap_err();
        assert!(
            !e.description.contains('\u{202E}') && e.description.contains("\\u{202e}"),
            "the reason shows the character escaped: {e}"
        );
        for good in [r#""a.b""#, r#""...a""#, r#""o-1:x_y~!""#] {
            Order::from_message(id(good).as_bytes(), None, 4096).unwrap();
        }
        let long = |n: usize| id(&format!("\"{}\"", "a".repeat(n)));
        Order::from_message(long(128).as_bytes(), None, 4096).unwrap();
        let e = Order::from_message(long(129).as_bytes(), None, 4096).unwrap_err();
        assert!(e.description.contains("129 bytes"), "{e}");
        let huge = OK.replace(r#""qty":1"#, r#""qty":4000000000"#);
        let e = Order::from_message(huge.as_bytes(), None, 4096).unwrap_err();
        assert!(e.description.contains("at most 10000 units"), "{e}");
        let braces = OK.replace("sku-1", "sku}1");
        let e = Order::from_message(braces.as_bytes(), None, 4096).unwrap_err();
        assert!(e.description.contains("without braces"), "{e}");
        let rich = OK.replace(r#""amount":100"#, r#""amount":100000000"#);
        let e = Order::from_message(rich.as_bytes(), None, 4096).unwrap_err();
        assert!(e.description.contains("use 1 to 99999999"), "{e}");
        // The bounds themselves pass.
        let edge = OK
            .replace(r#""qty":1"#, r#""qty":10000"#)
            .replace(r#""amount":100"#, r#""amount":99999999"#);
        Order::from_message(edge.as_bytes(), None, 4096).unwrap();
    }

    #[test]
    fn unknown_currency_says_what_to_use() {
        let e = Order::from_message(OK.replace("usd", "xyz").as_bytes(), None, 4096).unwrap_err();
        assert!(e.description.contains("unknown currency \"xyz\""), "{e}");
    }
}
