//! What `--fix` may touch. Reconcile judges an order id the engine does
//! not know as "not sold", which is right for a saga retention removed
//! and wrong for every live sale when reconcile is pointed at the wrong
//! engine (another `--data`, a laptop with production's variables): its
//! repairs would void the holds of live sales and release their stock.
//! Two rules, deciding only (the caller applies them):
//!
//! - [`refusal`]: more than [`MAX_UNKNOWN_FIXES`] ids unknown to the
//!   engine with a repair, or any while the engine holds no saga at all,
//!   and `--fix` repairs nothing unless `--fix-unknown` says the operator
//!   checked;
//! - [`spare_young_holds`]: a hold of an order id the engine does not
//!   know, younger than the provider's search lag plus the longest step
//!   timeout, is never voided: a saga that authorized it may not be
//!   listed yet, and may be about to capture it. (A saga known to have
//!   ended captures nothing more; `drift` already waits out the search lag
//!   after its end.)

use super::drift::{Books, Drift, Fix};
use std::collections::BTreeSet;

/// Ids unknown to the engine whose repair `--fix` makes without asking:
/// a few sagas removed by retention while their holds stayed.
pub const MAX_UNKNOWN_FIXES: usize = 3;

/// Why `--fix` must repair nothing, or `None` when it may go on.
/// `sagas` is how many sagas the engine listed.
pub fn refusal(drifts: &[Drift], sagas: usize, fix_unknown: bool) -> Option<String> {
    let unknown: BTreeSet<&str> = drifts
        .iter()
        .filter(|d| d.saga_status == "unknown" && d.fix.is_some())
        .map(|d| d.saga_id.as_str())
        .collect();
    if fix_unknown || unknown.is_empty() || (sagas > 0 && unknown.len() <= MAX_UNKNOWN_FIXES) {
        return None;
    }
    let examples: Vec<&str> = unknown.iter().take(3).copied().collect();
    Some(format!(
        "--fix refused, nothing was changed: {} order id(s) with a hold or reservation to undo are unknown to the engine it was pointed at ({}{}), which holds {sagas} saga(s). Is this the deployment that took these orders (--data, --config, [temporal] task_queue)? Check one with `sagaflow show ID` there. If their sagas are gone for good (retention), run again with --fix-unknown",
        unknown.len(),
        examples.join(", "),
        if unknown.len() > examples.len() { ", ..." } else { "" },
    ))
}

/// Takes the void off every hold of an unknown id created less than
/// `min_age_ms` before `now_ms` (its drift stays, saying why); returns how
/// many. A hold whose creation time the provider did not give is judged
/// as before.
pub fn spare_young_holds(
    drifts: &mut [Drift],
    books: &Books,
    now_ms: u64,
    min_age_ms: u64,
) -> usize {
    let young: BTreeSet<&str> = books
        .intents
        .values()
        .flatten()
        .filter(|i| i.created_ms > 0 && now_ms.saturating_sub(i.created_ms) < min_age_ms)
        .map(|i| i.id.as_str())
        .collect();
    let mut spared = 0;
    for d in drifts.iter_mut() {
        if let Some(Fix::VoidHold { payment_intent }) = &d.fix {
            if d.saga_status == "unknown" && young.contains(payment_intent.as_str()) {
                d.action = format!(
                    "wait: the hold is younger than {} s (the provider's search lag plus the longest step timeout), so a saga may still record and capture it; run reconcile again later",
                    min_age_ms / 1_000
                );
                d.fix = None;
                spared += 1;
            }
        }
    }
    spared
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::drift::DriftKind;
    use sagaflow_activities::payment::http::IntentBooks;

    fn drift(id: &str, status: &'static str, pi: &str) -> Drift {
        Drift {
            kind: DriftKind::HoldAfterSagaEnded,
            saga_id: id.into(),
            saga_status: status,
            detail: String::new(),
            action: String::new(),
            fix: Some(Fix::VoidHold {
                payment_intent: pi.into(),
            }),
        }
    }

    #[test]
    fn unknown_ids_beyond_a_few_or_an_empty_engine_refuse_the_fix() {
        let unknown: Vec<Drift> = (0..5)
            .map(|i| drift(&format!("o{i}"), "unknown", &format!("pi_{i}")))
            .collect();
        let why = refusal(&unknown, 100, false).unwrap();
        assert!(
            why.contains("5 order id(s)") && why.contains("o0, o1, o2, ..."),
            "{why}"
        );
        assert!(why.contains("--fix-unknown"), "{why}");
        assert_eq!(refusal(&unknown, 100, true), None, "the operator checked");
        assert_eq!(refusal(&unknown[..3], 100, false), None, "a few: retention");
        assert!(
            refusal(&unknown[..1], 0, false).is_some(),
            "an empty engine knows nothing"
        );
        let known = vec![drift("o9", "compensated", "pi_9")];
        assert_eq!(refusal(&known, 0, false), None);
    }

    #[test]
    fn young_holds_keep_their_drift_but_lose_the_void() {
        let intent = |id: &str, created_ms: u64| IntentBooks {
            id: id.into(),
            status: "requires_capture".into(),
            amount: 1999,
            amount_received: 0,
            amount_refunded: 0,
            created_ms,
        };
        let mut books = Books::default();
        books
            .intents
            .insert("o1".into(), vec![intent("pi_young", 95_000)]);
        books
            .intents
            .insert("o2".into(), vec![intent("pi_old", 10_000)]);
        books
            .intents
            .insert("o3".into(), vec![intent("pi_undated", 0)]);
        books
            .intents
            .insert("o4".into(), vec![intent("pi_ended", 99_000)]);
        let mut drifts = vec![
            drift("o1", "unknown", "pi_young"),
            drift("o2", "unknown", "pi_old"),
            drift("o3", "unknown", "pi_undated"),
            drift("o4", "compensated", "pi_ended"),
        ];
        assert_eq!(spare_young_holds(&mut drifts, &books, 100_000, 70_000), 1);
        assert_eq!(drifts[0].fix, None);
        assert!(drifts[0]
            .action
            .starts_with("wait: the hold is younger than 70 s"));
        assert!(drifts[1].fix.is_some() && drifts[2].fix.is_some());
        assert!(
            drifts[3].fix.is_some(),
            "an ended saga captures nothing more"
        );
    }
}
