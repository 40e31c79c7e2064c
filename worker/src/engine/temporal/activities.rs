//! Every built-in activity name, registered with the Temporal worker.
//!
//! The SDK keys activities by a Rust type's name, with no runtime-string
//! registration; sagaflow's names are a fixed list
//! ([`BUILTIN_ACTIVITIES`]), so one const-generic slot type per name
//! dispatches to the shared [`Registry`]. Errors keep their kind and
//! retryability (as the failure type and `non_retryable`) and travel whole
//! in the failure details.

use futures::future::{BoxFuture, FutureExt};
use sagaflow_activities::registry::BUILTIN_ACTIVITIES;
use sagaflow_activities::Registry;
use sagaflow_workflows::ActivityCall;
use serde_json::Value;
use std::sync::Arc;
use temporalio_common::ActivityDefinition;
use temporalio_sdk::activities::{
    ActivityContext, ActivityDefinitions, ActivityError, ActivityImplementer, ExecutableActivity,
};
use temporalio_sdk::ApplicationFailure;

/// The activities a Temporal worker serves.
pub struct TemporalActivities {
    /// Name -> function, as on the embedded engine.
    pub registry: Arc<Registry>,
}

/// The activity named `BUILTIN_ACTIVITIES[N]`.
pub struct Slot<const N: usize>;

impl<const N: usize> ActivityDefinition for Slot<N> {
    type Input = ActivityCall;
    type Output = Value;
    fn name(&self) -> &str {
        BUILTIN_ACTIVITIES[N]
    }
}

impl<const N: usize> ExecutableActivity for Slot<N> {
    type Implementer = TemporalActivities;
    const REQUIRES_INSTANCE: bool = true;

    fn definition() -> Self {
        Slot
    }

    fn execute(
        receiver: Option<Arc<TemporalActivities>>,
        _ctx: ActivityContext,
        call: ActivityCall,
    ) -> BoxFuture<'static, Result<Value, ActivityError>> {
        let this = receiver.expect("slots are registered with an instance");
        async move {
            // The breaker and the attempt's time limit are applied here, as
            // on the embedded engine; the server's start-to-close timeout
            // (a little longer) only catches a worker that died.
            let activity = (fault::armed()).then(|| call.activity.clone());
            let result = this.registry.attempt(call).await;
            if let Some(activity) = activity {
                fault::after_answer(&activity, result.is_ok());
            }
            result.map_err(|e| {
                ActivityError::application(
                    ApplicationFailure::builder(e.message.clone())
                        .type_name(e.kind.clone())
                        .non_retryable(!e.retryable)
                        .details(e)
                        .build(),
                )
            })
        }
        .boxed()
    }
}

impl ActivityImplementer for TemporalActivities {
    fn register_all(self: Arc<Self>, defs: &mut ActivityDefinitions) {
        const _: () = assert!(
            BUILTIN_ACTIVITIES.len() == 11,
            "add a slot per built-in name"
        );
        defs.register_activity::<Slot<0>>(self.clone())
            .register_activity::<Slot<1>>(self.clone())
            .register_activity::<Slot<2>>(self.clone())
            .register_activity::<Slot<3>>(self.clone())
            .register_activity::<Slot<4>>(self.clone())
            .register_activity::<Slot<5>>(self.clone())
            .register_activity::<Slot<6>>(self.clone())
            .register_activity::<Slot<7>>(self.clone())
            .register_activity::<Slot<8>>(self.clone())
            .register_activity::<Slot<9>>(self.clone())
            .register_activity::<Slot<10>>(self);
    }
}

/// A test-only fault point: `SAGAFLOW_TEST_ABORT_AFTER=ACTIVITY` makes the
/// process abort right after `ACTIVITY` answers with success, before the
/// SDK can report the result (an activity task's completion, or the
/// workflow task that would record a local activity's marker): the crash
/// the kill tests need at that exact instant. Off unless a test sets it.
mod fault {
    use std::sync::OnceLock;

    /// The variable a test sets.
    const VAR: &str = "SAGAFLOW_TEST_ABORT_AFTER";

    fn target() -> Option<&'static str> {
        static TARGET: OnceLock<Option<String>> = OnceLock::new();
        TARGET
            .get_or_init(|| std::env::var(VAR).ok().filter(|v| !v.is_empty()))
            .as_deref()
    }

    /// Whether a test armed the fault point.
    pub(super) fn armed() -> bool {
        target().is_some()
    }

    /// Aborts when `activity` is the armed one and succeeded.
    pub(super) fn after_answer(activity: &str, ok: bool) {
        if ok && target() == Some(activity) {
            eprintln!("{VAR}={activity}: aborting after its answer, as the test asked");
            std::process::abort();
        }
    }
}
