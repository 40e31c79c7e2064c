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

    /// Checks the fields serde cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.order_id.is_empty() || self.order_id.len() > 128 {
            return Err("order_id must be 1 to 128 characters".into());
        }
        if self.items.is_empty() {
            return Err(format!("order {} has no items", self.order_id));
        }
        if let Some(line) = self.items.iter().find(|l| l.qty == 0 || l.sku.is_empty()) {
            return Err(format!(
                "order {} has an item with an empty sku or qty 0 ({line:?})",
                self.order_id
            ));
        }
        if self.amount == 0 {
            return Err(format!("order {} has amount 0", self.order_id));
        }
        Ok(())
    }
}
