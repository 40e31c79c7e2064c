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
            let result = this.registry.attempt(call).await;
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
