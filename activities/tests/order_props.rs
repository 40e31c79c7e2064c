//! Generated inputs for the order decoder (issue 12): whatever arrives on
//! the queue, the decoder never panics; it either accepts an order every
//! store and the provider can hold, or refuses it with a reason for the
//! dead letter.

use proptest::prelude::*;
use sagaflow_activities::order::{MAX_AMOUNT, MAX_LINES, MAX_LINE_QTY};
use sagaflow_activities::{Order, Rejection};
use serde_json::json;

const MAX_BYTES: usize = 256 * 1024;

/// What an accepted order guarantees downstream.
fn holds(order: &Order) -> Result<(), TestCaseError> {
    let id = &order.order_id;
    prop_assert!(!id.is_empty() && id.len() <= 128, "{id:?}");
    prop_assert!(
        !id.chars()
            .any(|c| matches!(c, '/' | '\\' | '?' | '#') || c.is_control()),
        "{id:?}"
    );
    prop_assert!(!order.items.is_empty() && order.items.len() <= MAX_LINES);
    for line in &order.items {
        prop_assert!(line.qty >= 1 && line.qty <= MAX_LINE_QTY, "{line:?}");
        prop_assert!(
            !line.sku.is_empty() && !line.sku.contains(['{', '}']),
            "{line:?}"
        );
    }
    prop_assert!(order.amount <= MAX_AMOUNT);
    Ok(())
}

fn refused_with_a_reason(r: &Rejection) -> Result<(), TestCaseError> {
    prop_assert!(!r.reason.is_empty());
    prop_assert!(!r.description.trim().is_empty(), "{r:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_are_an_order_or_a_reasoned_refusal(
        body in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        match Order::from_message(&body, None, MAX_BYTES) {
            Ok(order) => holds(&order)?,
            Err(r) => refused_with_a_reason(&r)?,
        }
    }

    #[test]
    fn generated_orders_are_accepted_only_when_every_store_can_hold_them(
        id in "\\PC{0,140}|[a-z0-9/#?\\\\-]{1,20}|\\pC{1,3}",
        sku in "\\PC{0,20}|[A-Z{}-]{1,8}",
        qty in prop_oneof![0u64..20_000, any::<u64>()],
        lines in 0usize..4,
        amount in prop_oneof![0i64..100_000_000, any::<i64>()],
        currency in "usd|eur|[a-z]{3}|",
        method in "pm_card_visa|\\PC{0,10}",
    ) {
        let items: Vec<_> = (0..lines).map(|_| json!({"sku": sku, "qty": qty})).collect();
        let body = json!({
            "order_id": id, "customer": "c1", "items": items, "amount": amount,
            "currency": currency, "payment_method": method,
        })
        .to_string();
        match Order::from_message(body.as_bytes(), None, MAX_BYTES) {
            Ok(order) => {
                holds(&order)?;
                prop_assert_eq!(&order.order_id, &id);
            }
            Err(r) => refused_with_a_reason(&r)?,
        }
    }
}
