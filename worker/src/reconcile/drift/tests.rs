use super::*;

fn saga(name: &str, outcome: Outcome, ended_ms: Option<u64>) -> SagaFacts {
    SagaFacts {
        saga: name.into(),
        outcome,
        ended_ms,
    }
}

fn intent(id: &str, status: &str, received: u64, refunded: u64) -> IntentBooks {
    IntentBooks {
        id: id.into(),
        status: status.into(),
        amount: 1999,
        amount_received: received,
        amount_refunded: refunded,
        created_ms: 0,
    }
}

fn line(id: &str, state: LineState) -> ReservationLine {
    ReservationLine {
        reservation: id.into(),
        sku: "SKU-1".into(),
        units: 1,
        state,
    }
}

fn doc(id: &str, status: &str) -> OrderDoc {
    OrderDoc {
        id: id.into(),
        status: status.into(),
    }
}

/// Books where `sold` completed and `undone` was compensated, every store
/// agreeing.
fn agreeing() -> Books {
    let mut books = Books::default();
    books.effects.insert(
        "checkout".into(),
        Effects::of([
            "stock.reserve",
            "payment.authorize",
            "orders.create",
            "payment.capture",
            "stock.commit",
        ]),
    );
    books.sagas.insert(
        "sold".into(),
        saga("checkout", Outcome::Completed, Some(1_000)),
    );
    books.sagas.insert(
        "undone".into(),
        saga("checkout", Outcome::Compensated, Some(1_000)),
    );
    books
        .intents
        .insert("sold".into(), vec![intent("pi_sold", "succeeded", 1999, 0)]);
    books
        .intents
        .insert("undone".into(), vec![intent("pi_undone", "canceled", 0, 0)]);
    books.lines = vec![
        line("sold", LineState::Committed),
        line("undone", LineState::Released),
    ];
    books.orders = vec![doc("sold", "created"), doc("undone", "cancelled")];
    books
}

fn kinds(books: &Books) -> Vec<(DriftKind, String)> {
    drifts(books, 10_000, 0, false)
        .0
        .into_iter()
        .map(|d| (d.kind, d.saga_id))
        .collect()
}

#[test]
fn books_that_agree_have_no_drift() {
    let (found, judged) = drifts(&agreeing(), 10_000, 0, false);
    assert_eq!(found, vec![]);
    assert_eq!(judged.judged, 2);
}

#[test]
fn each_kind_of_drift_is_found_with_its_saga() {
    let mut books = agreeing();
    // A compensated saga whose payment was captured anyway.
    books.sagas.insert(
        "charged".into(),
        saga("checkout", Outcome::Compensated, Some(1)),
    );
    books.intents.insert(
        "charged".into(),
        vec![intent("pi_charged", "succeeded", 1999, 0)],
    );
    // An ended saga's hold, and a reservation nobody owns.
    books.intents.insert(
        "undone".into(),
        vec![intent("pi_hold", "requires_capture", 0, 0)],
    );
    books.lines.push(line("ghost", LineState::Reserved));
    // An order document without a completed saga.
    books.orders.push(doc("lonely", "created"));
    // A completed saga whose payment was refunded outside a refund saga.
    books.intents.insert(
        "sold".into(),
        vec![intent("pi_sold", "succeeded", 1999, 1999)],
    );
    let found = kinds(&books);
    assert_eq!(
        found,
        vec![
            (DriftKind::CapturedPaymentWithoutSale, "charged".into()),
            (DriftKind::StockReservedWithoutLiveSaga, "ghost".into()),
            (DriftKind::OrderWithoutCompletedSaga, "lonely".into()),
            (DriftKind::CompletedSagaNotBooked, "sold".into()),
            (DriftKind::HoldAfterSagaEnded, "undone".into()),
        ]
    );
    let (all, _) = drifts(&books, 10_000, 0, false);
    let fixes: Vec<&Fix> = all.iter().filter_map(|d| d.fix.as_ref()).collect();
    assert_eq!(
        fixes,
        vec![
            &Fix::ReleaseReservation {
                reservation: "ghost".into(),
                lines: vec![("SKU-1".into(), 1)]
            },
            &Fix::VoidHold {
                payment_intent: "pi_hold".into()
            },
        ],
        "only holds and reservations are repaired"
    );
}

#[test]
fn a_completed_saga_without_committed_stock_or_order_is_not_booked() {
    let mut books = agreeing();
    books.lines = vec![
        line("sold", LineState::Returned),
        line("undone", LineState::Released),
    ];
    books.orders = vec![doc("undone", "cancelled")];
    let (found, _) = drifts(&books, 10_000, 0, false);
    let details: Vec<&str> = found.iter().map(|d| d.detail.as_str()).collect();
    assert_eq!(
        details,
        vec![
            "stock not committed: SKU-1 x1 returned",
            "order document missing"
        ]
    );
    assert!(found
        .iter()
        .all(|d| d.kind == DriftKind::CompletedSagaNotBooked && d.fix.is_none()));
}

#[test]
fn a_live_saga_is_not_judged_and_a_refunded_one_must_be_undone() {
    let mut books = agreeing();
    books
        .sagas
        .insert("busy".into(), saga("checkout", Outcome::Live, None));
    books.lines.push(line("busy", LineState::Reserved));
    books.intents.insert(
        "busy".into(),
        vec![intent("pi_busy", "requires_capture", 0, 0)],
    );
    // A refund saga still running keeps its sale out of judgement too.
    books
        .sagas
        .insert("sold#refund".into(), saga("refund", Outcome::Live, None));
    let (found, judged) = drifts(&books, 10_000, 0, false);
    assert_eq!(found, vec![]);
    assert_eq!((judged.judged, judged.in_flight), (1, 2));

    // Once the refund completed, the sale must be undone everywhere.
    books.sagas.insert(
        "sold#refund".into(),
        saga("refund", Outcome::Completed, Some(2_000)),
    );
    assert_eq!(
        kinds(&books),
        vec![
            (DriftKind::CapturedPaymentWithoutSale, "sold".into()),
            (DriftKind::StockSoldWithoutSale, "sold".into()),
            (DriftKind::OrderWithoutCompletedSaga, "sold".into()),
        ]
    );
    books.intents.insert(
        "sold".into(),
        vec![intent("pi_sold", "succeeded", 1999, 1999)],
    );
    books.lines[0].state = LineState::Returned;
    books.orders[0].status = "cancelled".into();
    assert_eq!(kinds(&books), vec![]);
}

#[test]
fn payment_is_not_judged_before_the_providers_search_catches_up() {
    let mut books = agreeing();
    books.intents.clear();
    // Ended at 1 000; the search may trail by 60 000.
    let (found, judged) = drifts(&books, 30_000, 60_000, false);
    assert_eq!(found, vec![]);
    assert_eq!(judged.too_recent_for_payment, 2);
    let (found, _) = drifts(&books, 61_000, 60_000, false);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, DriftKind::CompletedSagaNotBooked);
}

#[test]
fn a_second_hold_beside_a_captured_payment_is_voided_but_a_lone_hold_is_not() {
    let mut books = agreeing();
    books.intents.insert(
        "sold".into(),
        vec![
            intent("pi_sold", "succeeded", 1999, 0),
            intent("pi_extra", "requires_capture", 0, 0),
        ],
    );
    let (found, _) = drifts(&books, 10_000, 0, false);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].fix,
        Some(Fix::VoidHold {
            payment_intent: "pi_extra".into()
        })
    );
    // The only intent of a completed sale uncaptured: voiding it would lose
    // the sale's money, so it is reported for an operator, not repaired.
    books.intents.insert(
        "sold".into(),
        vec![intent("pi_sold", "requires_capture", 0, 0)],
    );
    let (found, _) = drifts(&books, 10_000, 0, false);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, DriftKind::CompletedSagaNotBooked);
    assert_eq!(found[0].fix, None);
}

#[test]
fn with_retention_an_unknown_order_booked_like_an_ended_saga_is_not_judged() {
    // The journal removed both sagas: the stores still hold what they did.
    let mut books = agreeing();
    // A saga that leaves nothing behind matches no sale.
    books.effects.insert(
        "refund".into(),
        Effects::of(["payment.refund", "stock.return", "orders.cancel"]),
    );
    books.sagas.clear();
    // ...and two orders no saga ever ran: a lone order document, and a
    // hold on the card.
    books.orders.push(doc("lonely", "created"));
    books.intents.insert(
        "held".into(),
        vec![intent("pi_held", "requires_capture", 0, 0)],
    );
    let (found, judged) = drifts(&books, 10_000, 0, true);
    let found: Vec<(DriftKind, String)> = found.into_iter().map(|d| (d.kind, d.saga_id)).collect();
    assert_eq!(
        found,
        vec![
            (DriftKind::HoldAfterSagaEnded, "held".into()),
            (DriftKind::OrderWithoutCompletedSaga, "lonely".into()),
        ]
    );
    assert_eq!(judged.outside_retention, 2, "sold and undone: {judged:?}");
    assert_eq!(judged.judged, 2, "held and lonely: {judged:?}");
    // Without retention an unknown id is judged as never sold.
    let kinds = kinds(&books);
    assert!(
        kinds.contains(&(DriftKind::CapturedPaymentWithoutSale, "sold".into())),
        "{kinds:?}"
    );
}
