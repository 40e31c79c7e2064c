//! Deciding: which facts of the outside world disagree with the engine's
//! account of a saga. Pure: [`drifts`] takes what was read and returns the
//! drifts, each with what to do and, where a repair is safe, the repair.
//!
//! The unit of judgement is an order id: its checkout saga, the refund
//! saga that may have undone it (`ID#refund`), the payment intents whose
//! `metadata[order_id]` is the id, the stock reservation under the id and
//! the order document with the id.

use crate::engine::command::REFUND_SUFFIX;
use sagaflow_activities::orders::OrderDoc;
use sagaflow_activities::payment::http::IntentBooks;
use sagaflow_activities::stock::{LineState, ReservationLine};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What the engine says about one saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Running, compensating or parked: not judged.
    Live,
    /// Every step succeeded.
    Completed,
    /// Every completed step was compensated.
    Compensated,
    /// The workflow closed without an outcome (terminated or timed out on
    /// Temporal): nothing more will run for it.
    Closed,
}

/// The engine's view of one saga, as reconcile needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaFacts {
    /// Its saga name in `sagas.toml`.
    pub saga: String,
    /// Where it stands.
    pub outcome: Outcome,
    /// When it ended (ms since the epoch), when it has.
    pub ended_ms: Option<u64>,
}

/// Which outside effects a completed saga of one name leaves behind, from
/// the actions of its steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effects {
    /// A `payment.capture` step: a captured payment.
    pub captures: bool,
    /// A `stock.commit` step: the reservation's lines committed.
    pub commits_stock: bool,
    /// An `orders.create` step: an order document `created`.
    pub creates_order: bool,
}

impl Effects {
    /// The effects of a saga whose steps run `actions`.
    pub fn of<'a>(actions: impl IntoIterator<Item = &'a str>) -> Effects {
        let mut effects = Effects::default();
        for action in actions {
            match action {
                "payment.capture" => effects.captures = true,
                "stock.commit" => effects.commits_stock = true,
                "orders.create" => effects.creates_order = true,
                _ => {}
            }
        }
        effects
    }
}

/// Everything read, keyed for judging.
#[derive(Debug, Default)]
pub struct Books {
    /// Sagas by id (refund sagas included, under `ID#refund`).
    pub sagas: BTreeMap<String, SagaFacts>,
    /// Intents by the order id in their metadata.
    pub intents: BTreeMap<String, Vec<IntentBooks>>,
    /// Every reservation line.
    pub lines: Vec<ReservationLine>,
    /// Every order document.
    pub orders: Vec<OrderDoc>,
    /// What a completed saga of each name leaves behind.
    pub effects: BTreeMap<String, Effects>,
}

/// The kinds of drift, each a way the books can be wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// Money kept for an order that was not sold (its saga compensated,
    /// refunded, closed or unknown).
    CapturedPaymentWithoutSale,
    /// An authorization still holding funds on the card after its saga
    /// ended (or of a saga the engine does not know).
    HoldAfterSagaEnded,
    /// Units reserved under a saga that no longer lives: unsellable until
    /// the reaper or an operator frees them.
    StockReservedWithoutLiveSaga,
    /// Units sold for an order that was not sold.
    StockSoldWithoutSale,
    /// An order document `created` without a completed saga.
    OrderWithoutCompletedSaga,
    /// A completed saga whose payment is not captured (or was refunded
    /// outside a refund saga), whose stock is not committed, or whose
    /// order document is missing.
    CompletedSagaNotBooked,
}

impl DriftKind {
    /// A short phrase for the human report.
    pub fn phrase(self) -> &'static str {
        match self {
            DriftKind::CapturedPaymentWithoutSale => "captured payment without a sale",
            DriftKind::HoldAfterSagaEnded => "authorization still held",
            DriftKind::StockReservedWithoutLiveSaga => "stock reserved without a live saga",
            DriftKind::StockSoldWithoutSale => "stock sold without a sale",
            DriftKind::OrderWithoutCompletedSaga => "order document without a completed saga",
            DriftKind::CompletedSagaNotBooked => "completed saga not booked",
        }
    }
}

/// A repair `--fix` may make: each undoes a hold that no saga will ever
/// use, so making it twice or late does no harm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Fix {
    /// Cancel the authorization `payment_intent` at the provider.
    VoidHold {
        /// `pi_...`.
        payment_intent: String,
    },
    /// Give the reservation's reserved units back to `available`.
    ReleaseReservation {
        /// The reservation (= saga) id.
        reservation: String,
        /// Its reserved lines: (SKU, units).
        lines: Vec<(String, u32)>,
    },
}

/// One disagreement between the engine and a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// What kind.
    pub kind: DriftKind,
    /// The order (= saga) id.
    pub saga_id: String,
    /// What the engine says: completed, refunded, compensated, closed or
    /// unknown.
    pub saga_status: &'static str,
    /// What the store holds.
    pub detail: String,
    /// What an operator should do.
    pub action: String,
    /// The safe repair, when there is one (`--fix` makes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
}

/// What was judged, for the report's first line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Judged {
    /// Order ids judged (their sagas ended, or unknown to the engine).
    pub judged: usize,
    /// Order ids skipped because a saga for them still lives.
    pub in_flight: usize,
    /// Order ids whose saga ended so recently that the provider's search
    /// may not show its payment yet: judged on stock and order only.
    pub too_recent_for_payment: usize,
    /// Order ids the journal holds no saga for, whose books agree with a
    /// saga that ended (sold and booked, or undone) and that retention may
    /// have removed: not judged, since the journal no longer knows which.
    pub outside_retention: usize,
}

/// How the engine's sagas for one order id add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Sold and kept: payment captured, stock committed, order created.
    Sold(Effects),
    /// Undone or never done; the `&str` says how.
    NotSold(&'static str),
}

/// Judges every order id the books mention. `now_ms` and `search_lag_ms`
/// decide which sagas ended too recently for the provider's search.
/// `retained`: the engine removes ended sagas (retention), so an order id
/// with no saga at all may be one it removed; such an id is reported only
/// when its books agree with no ended saga (neither a booked sale of any
/// configured saga nor an order left with nothing), and counted in
/// [`Judged::outside_retention`] otherwise.
pub fn drifts(
    books: &Books,
    now_ms: u64,
    search_lag_ms: u64,
    retained: bool,
) -> (Vec<Drift>, Judged) {
    let mut ids: BTreeSet<&str> = BTreeSet::new();
    for id in books.sagas.keys() {
        ids.insert(id.strip_suffix(REFUND_SUFFIX).unwrap_or(id));
    }
    ids.extend(books.intents.keys().map(String::as_str));
    ids.extend(books.lines.iter().map(|l| l.reservation.as_str()));
    ids.extend(books.orders.iter().map(|o| o.id.as_str()));
    let mut lines: BTreeMap<&str, Vec<&ReservationLine>> = BTreeMap::new();
    for line in &books.lines {
        lines.entry(&line.reservation).or_default().push(line);
    }
    let orders: BTreeMap<&str, &str> = books
        .orders
        .iter()
        .map(|o| (o.id.as_str(), o.status.as_str()))
        .collect();

    let mut found = Vec::new();
    let mut judged = Judged::default();
    for id in ids {
        let saga = books.sagas.get(id);
        let refund = books.sagas.get(&format!("{id}{REFUND_SUFFIX}"));
        if [saga, refund]
            .iter()
            .flatten()
            .any(|s| s.outcome == Outcome::Live)
        {
            judged.in_flight += 1;
            continue;
        }
        judged.judged += 1;
        let verdict = match (saga, refund) {
            (None, _) => Verdict::NotSold("unknown"),
            (Some(s), Some(r))
                if s.outcome == Outcome::Completed && r.outcome == Outcome::Completed =>
            {
                Verdict::NotSold("refunded")
            }
            (Some(s), _) => match s.outcome {
                Outcome::Completed => {
                    Verdict::Sold(books.effects.get(&s.saga).copied().unwrap_or_default())
                }
                Outcome::Compensated => Verdict::NotSold("compensated"),
                _ => Verdict::NotSold("closed"),
            },
        };
        let ended = [saga, refund]
            .iter()
            .flatten()
            .filter_map(|s| s.ended_ms)
            .max();
        let payment_visible = ended.is_none_or(|at| now_ms >= at.saturating_add(search_lag_ms));
        if !payment_visible {
            judged.too_recent_for_payment += 1;
        }
        let intents: &[IntentBooks] = if payment_visible {
            books.intents.get(id).map_or(&[], Vec::as_slice)
        } else {
            &[]
        };
        let id_lines = lines.get(id).map_or(&[][..], Vec::as_slice);
        let order = orders.get(id).copied();
        if retained && saga.is_none() && refund.is_none() {
            let mut undone = Vec::new();
            Judge {
                id,
                intents,
                lines: id_lines,
                order,
                out: &mut undone,
            }
            .not_sold("unknown");
            // A saga that leaves nothing behind (a refund) looks like any
            // order left with nothing, which `undone` covers already.
            let leaves_something = |e: &&Effects| e.captures || e.commits_stock || e.creates_order;
            let booked_sale = books
                .effects
                .values()
                .filter(leaves_something)
                .any(|effects| {
                    let mut sold = Vec::new();
                    Judge {
                        id,
                        intents,
                        lines: id_lines,
                        order,
                        out: &mut sold,
                    }
                    .sold(*effects, true);
                    sold.is_empty()
                });
            if undone.is_empty() || booked_sale {
                judged.judged -= 1;
                judged.outside_retention += 1;
            } else {
                found.extend(undone);
            }
            continue;
        }
        let judge = Judge {
            id,
            intents,
            lines: id_lines,
            order,
            out: &mut found,
        };
        match verdict {
            Verdict::Sold(effects) => judge.sold(effects, payment_visible),
            Verdict::NotSold(how) => judge.not_sold(how),
        }
    }
    (found, judged)
}

/// The facts of one order id and where its drifts go.
struct Judge<'a> {
    id: &'a str,
    intents: &'a [IntentBooks],
    lines: &'a [&'a ReservationLine],
    order: Option<&'a str>,
    out: &'a mut Vec<Drift>,
}

impl Judge<'_> {
    fn push(&mut self, kind: DriftKind, status: &'static str, detail: String, action: String) {
        self.push_fix(kind, status, detail, action, None);
    }

    fn push_fix(
        &mut self,
        kind: DriftKind,
        saga_status: &'static str,
        detail: String,
        action: String,
        fix: Option<Fix>,
    ) {
        self.out.push(Drift {
            kind,
            saga_id: self.id.to_owned(),
            saga_status,
            detail,
            action,
            fix,
        });
    }

    /// A completed saga: its effects must all be there; a second hold
    /// beside a captured payment is an orphan.
    fn sold(mut self, effects: Effects, payment_visible: bool) {
        const STATUS: &str = "completed";
        let kept: u64 = self.intents.iter().map(IntentBooks::kept).sum();
        if effects.captures && payment_visible && kept == 0 {
            let seen = if self.intents.is_empty() {
                "no payment intent for the order".to_owned()
            } else {
                describe_intents(self.intents)
            };
            self.push(
                DriftKind::CompletedSagaNotBooked,
                STATUS,
                format!("no captured payment kept: {seen}"),
                format!("the customer was not charged for a completed order: check `sagaflow show {}` and the provider's dashboard; capture or re-charge by hand", self.id),
            );
        }
        if kept > 0 {
            for hold in self.intents.iter().filter(|i| i.is_hold()) {
                self.void_hold(hold, STATUS);
            }
        }
        if effects.commits_stock {
            let uncommitted: Vec<String> = self
                .lines
                .iter()
                .filter(|l| l.state != LineState::Committed)
                .map(|l| format!("{} x{} {}", l.sku, l.units, l.state.name()))
                .collect();
            if self.lines.is_empty() || !uncommitted.is_empty() {
                let detail = if self.lines.is_empty() {
                    "stock not committed: no reservation under the order id".to_owned()
                } else {
                    format!("stock not committed: {}", uncommitted.join(", "))
                };
                self.push(
                    DriftKind::CompletedSagaNotBooked,
                    STATUS,
                    detail,
                    "the units of a completed order are not counted as sold: correct the stock by hand (`sagaflow stock set`) after checking the warehouse".into(),
                );
            }
        }
        if effects.creates_order && self.order != Some("created") {
            self.push(
                DriftKind::CompletedSagaNotBooked,
                STATUS,
                format!(
                    "order document {}",
                    self.order.map_or("missing".to_owned(), |s| format!("is {s}"))
                ),
                "a completed order has no live order document: write it again from `sagaflow show --json` or refund the sale (`sagaflow refund`)".into(),
            );
        }
    }

    /// An order that was not sold (or was undone): nothing may be kept,
    /// held, reserved or sold for it, and no order document may be live.
    fn not_sold(mut self, how: &'static str) {
        for intent in self.intents {
            if intent.kept() > 0 {
                self.push(
                    DriftKind::CapturedPaymentWithoutSale,
                    how,
                    format!(
                        "{} captured {} and refunded {}",
                        intent.id, intent.amount_received, intent.amount_refunded
                    ),
                    format!(
                        "refund {} ({} minor units) at the provider: the customer paid for an order that was not sold",
                        intent.id,
                        intent.kept()
                    ),
                );
            } else if intent.is_hold() {
                self.void_hold(intent, how);
            }
        }
        let reserved: Vec<(String, u32)> = self
            .lines
            .iter()
            .filter(|l| l.state == LineState::Reserved)
            .map(|l| (l.sku.clone(), l.units))
            .collect();
        if !reserved.is_empty() {
            let shown: Vec<String> = reserved.iter().map(|(s, u)| format!("{s} x{u}")).collect();
            self.push_fix(
                DriftKind::StockReservedWithoutLiveSaga,
                how,
                format!("reserved: {}", shown.join(", ")),
                "release the reservation (`sagaflow reconcile --fix`; the reaper also reclaims it after [stock] reservation_ttl)".into(),
                Some(Fix::ReleaseReservation {
                    reservation: self.id.to_owned(),
                    lines: reserved,
                }),
            );
        }
        let sold: Vec<String> = self
            .lines
            .iter()
            .filter(|l| l.state == LineState::Committed)
            .map(|l| format!("{} x{}", l.sku, l.units))
            .collect();
        if !sold.is_empty() {
            self.push(
                DriftKind::StockSoldWithoutSale,
                how,
                format!("sold: {}", sold.join(", ")),
                "the units count as sold for an order that was not: return them by hand (`sagaflow stock set`) after checking the warehouse".into(),
            );
        }
        if self.order == Some("created") {
            self.push(
                DriftKind::OrderWithoutCompletedSaga,
                how,
                "order document is created".into(),
                "cancel the order document by hand: the order was not sold".into(),
            );
        }
    }

    fn void_hold(&mut self, hold: &IntentBooks, how: &'static str) {
        self.push_fix(
            DriftKind::HoldAfterSagaEnded,
            how,
            format!("{} holds {} on the card", hold.id, hold.amount),
            format!(
                "void {} (`sagaflow reconcile --fix`; the provider also releases it when the authorization expires)",
                hold.id
            ),
            Some(Fix::VoidHold {
                payment_intent: hold.id.clone(),
            }),
        );
    }
}

fn describe_intents(intents: &[IntentBooks]) -> String {
    intents
        .iter()
        .map(|i| {
            format!(
                "{} {} (captured {}, refunded {})",
                i.id, i.status, i.amount_received, i.amount_refunded
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
