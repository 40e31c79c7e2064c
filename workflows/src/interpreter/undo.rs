//! Which steps a compensation undoes, and when a saga must not compensate
//! at all (a chain of steps that may have passed its pivot).

use crate::context::SagaContext;
use crate::model::SagaDef;

/// What the step that stopped the saga left behind.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum StepOutcome {
    /// It succeeded (a cancel arrived while it ran).
    Done,
    /// It failed for good, definitively: it did not happen.
    NotDone,
    /// Its last attempt failed retryably: it may have happened.
    Unknown,
}

/// Which steps a compensation undoes.
#[derive(Clone, Copy)]
pub(super) struct Undo {
    /// Undo steps `through..=0` (none when `None`).
    pub(super) through: Option<usize>,
    /// A step in that range that did not happen (a definitive failure).
    pub(super) skip: Option<usize>,
    /// `(saga time, first step)`: steps from `first step` on may or may not
    /// have taken effect since that time; their compensations see it as
    /// `unknown_since_ms` (a void must give the provider's search time to
    /// show what such an attempt may have created).
    pub(super) unknown: Option<(u64, usize)>,
    /// Steps past the one that stopped the saga may have run in an
    /// earlier, unrecorded run of its chain, and that chain holds the
    /// pivot: the saga must not compensate behind it.
    pub(super) past_pivot: bool,
}

impl Undo {
    /// What to undo after step `index` stopped the saga with `outcome`.
    /// Where an earlier run of the step's chain may have gone further
    /// (a crash re-run on Temporal, [`SagaContext::chain_end`]), every
    /// step of the chain is undone, not only this run's path: each one's
    /// effect may exist, and compensations treat "nothing to undo" as
    /// success.
    pub(super) fn decide<C: SagaContext>(
        ctx: &C,
        def: &SagaDef,
        index: usize,
        outcome: StepOutcome,
    ) -> Undo {
        let end = ctx.chain_end(def, index).max(index);
        let now = ctx.now_ms();
        if end > index && !ctx.first_run() {
            return Undo {
                through: Some(end),
                skip: (outcome == StepOutcome::NotDone).then_some(index),
                unknown: Some(match outcome {
                    StepOutcome::Unknown => (now, index),
                    _ => (now, index + 1),
                }),
                past_pivot: def.pivot.is_some_and(|p| end >= p),
            };
        }
        let (through, unknown) = match outcome {
            StepOutcome::Done => (Some(index), None),
            StepOutcome::NotDone => (index.checked_sub(1), None),
            StepOutcome::Unknown => (Some(index), Some((now, index))),
        };
        Undo {
            through,
            skip: None,
            unknown,
            past_pivot: false,
        }
    }
}

/// Why a saga whose chain may have passed its pivot parked instead of
/// compensating, and what the operator does.
pub(super) fn past_pivot_reason(def: &SagaDef, step: &str, what: &str) -> String {
    let pivot = def.pivot.map_or("?", |p| def.steps[p].name.as_str());
    format!(
        "step {step} {what}, in a run that followed a crash: an earlier run of the same chain of \
         local steps may have passed the pivot ({pivot}), so the saga does not compensate behind it; \
         check the pivot's effect (`sagaflow show ID`, `sagaflow reconcile`), then `sagaflow retry` to \
         go forward, or `sagaflow cancel` to compensate if the pivot did not happen"
    )
}
