//! `SagaWorkflow`: the generic saga interpreter as a Temporal workflow.

use super::history::failure_error;
use crate::config::StepMode;
use crate::engine::command::CommandRequest;
use futures::future::Either;
use sagaflow_workflows::{
    run_saga, ActivityCall, ActivityError, Finished, Phase, SagaContext, SagaDef, SagaOutcome,
    SagaStatus, Signal, Stage, StepDef,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::time::{Duration, UNIX_EPOCH};
use temporalio_common::error::IncomingError;
use temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo;
use temporalio_common::search_attributes::SearchAttributeKey;
use temporalio_common::{ActivityDefinition, RetryPolicy};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, LocalActivityOptions, MemoValue, SyncWorkflowContext,
    WorkflowContext, WorkflowContextView, WorkflowResult,
};

/// The workflow type name in Temporal.
pub const WORKFLOW_TYPE: &str = "SagaWorkflow";
/// How much longer than an attempt's limit the server waits before it
/// declares the attempt timed out (the worker enforces the limit itself).
pub const SERVER_TIMEOUT_MARGIN_MS: u64 = 1_000;
/// Memo key holding a parked saga's reason (readable without a worker).
pub const REASON_MEMO: &str = "reason";
/// Keyword search attribute holding the status name.
pub const SAGA_STATUS: SearchAttributeKey<String> = SearchAttributeKey::keyword("SagaStatus");
/// The patch under which a saga whose input asks for it runs its steps as
/// local activities: a history recorded before it (or by a worker without
/// it) has no marker and replays with activity tasks.
pub const LOCAL_STEPS_PATCH: &str = "local-steps-1";
/// Keyword search attribute holding the saga name.
pub const SAGA_NAME: SearchAttributeKey<String> = SearchAttributeKey::keyword("SagaName");
/// Keyword search attribute holding the identity of the worker that
/// started the saga (its intake limit counts it: [`super::intake`]).
pub const SAGA_WORKER: SearchAttributeKey<String> = SearchAttributeKey::keyword("SagaWorker");

/// What a saga workflow starts with: everything it needs, nothing read
/// later.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SagaInput {
    /// Saga id (also the workflow id).
    pub saga_id: String,
    /// Content hash of `def`.
    pub def_hash: String,
    /// The resolved saga definition.
    pub def: SagaDef,
    /// The order.
    pub order: Value,
    /// Run the steps as local activities: the form of
    /// [`SagaInput::steps`] = `local` before step modes (`[temporal]
    /// local_activities`), behind the `local-steps-1` patch; false in new
    /// inputs and in inputs from before either option (activity tasks).
    #[serde(default)]
    pub local_steps: bool,
    /// How the steps run (`[temporal] steps` at the saga's start); absent
    /// in inputs from before step modes, which `local_steps` decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<StepMode>,
}

/// Calls an activity by its registered name.
pub struct NamedActivity(pub String);

impl ActivityDefinition for NamedActivity {
    type Input = ActivityCall;
    type Output = Value;
    fn name(&self) -> &str {
        &self.0
    }
}

/// The saga workflow's state: the signal inbox and the status.
#[workflow]
#[derive(Default)]
pub struct SagaWorkflow {
    inbox: VecDeque<Signal>,
    status: Option<SagaStatus>,
    stage: Stage,
    /// The definition's steps, to name the stage's step when a command is
    /// checked.
    steps: Vec<StepDef>,
}

#[workflow_methods]
impl SagaWorkflow {
    /// Runs the saga to its end (parked sagas wait here for a signal).
    #[allow(missing_docs)]
    #[run(name = WORKFLOW_TYPE)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: SagaInput,
    ) -> WorkflowResult<SagaOutcome> {
        // The input decides. Inputs from before step modes asked for local
        // steps with `local_steps`, and the patch marker kept the decision
        // in the history: a history without the marker (older code ran it)
        // replays with the activity tasks it holds.
        let steps = match input.steps {
            Some(mode) => mode,
            None if input.local_steps && ctx.patched(LOCAL_STEPS_PATCH) => StepMode::Local,
            None => StepMode::Activities,
        };
        let saga = TemporalSaga {
            ctx: ctx.clone(),
            saga_id: input.saga_id.clone(),
            steps,
            pivot: input.def.pivot.map(|p| input.def.steps[p].name.clone()),
        };
        ctx.state_mut(|s| s.steps = input.def.steps.clone());
        Ok(run_saga(&saga, &input.def, &input.order).await)
    }

    /// Queues an operator signal: the form of `retry` before Updates,
    /// kept so that histories that recorded it still replay.
    #[allow(missing_docs)]
    #[signal(name = "operator")]
    pub fn operator(&mut self, _ctx: &mut SyncWorkflowContext<Self>, signal: Signal) {
        self.inbox.push_back(signal);
    }

    /// Refuses a command that does not apply to the saga as it is now, so
    /// the operator's answer is immediate and a refused command leaves
    /// nothing in the history (Temporal writes no event for a rejected
    /// Update).
    #[allow(missing_docs)]
    #[update_validator(command)]
    pub fn validate_command(
        &self,
        _ctx: &WorkflowContextView,
        request: &CommandRequest,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let status = self.status.clone().unwrap_or(SagaStatus::Running);
        request
            .signal
            .applies_to(&status, &self.stage, &self.steps)
            .map_err(Into::into)
    }

    /// Takes an operator command (with who sent it and why, which the
    /// history keeps in the Update's accepted event) into the inbox.
    #[allow(missing_docs)]
    #[update(name = "command")]
    pub fn command(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        request: CommandRequest,
    ) -> bool {
        self.inbox.push_back(request.signal);
        true
    }

    /// The current status.
    #[allow(missing_docs)]
    #[query(name = "status")]
    pub fn status(&self, _ctx: &WorkflowContextView) -> Option<SagaStatus> {
        self.status.clone()
    }
}

/// `SagaContext` over Temporal's workflow context.
pub struct TemporalSaga {
    ctx: WorkflowContext<SagaWorkflow>,
    saga_id: String,
    /// Which steps run as local activities (in the worker, within the
    /// workflow task, each result a marker in the history when the task
    /// completes) and which as activity tasks.
    steps: StepMode,
    /// The name of the definition's pivot step, if it has one.
    pivot: Option<String>,
}

impl TemporalSaga {
    /// Whether `call` runs as a local activity. In the checkpointed mode
    /// only the pivot's action is an activity task: scheduling it
    /// completes the workflow task, which records the results of the
    /// local chain before it, so no chain spans the pivot.
    fn runs_local(&self, call: &ActivityCall) -> bool {
        match self.steps {
            StepMode::Activities => false,
            StepMode::Local => true,
            StepMode::Checkpointed => {
                call.phase != Phase::Action || self.pivot.as_deref() != Some(call.step.as_str())
            }
        }
    }
}

/// The first workflow task's first attempt starts at event 3
/// (`WorkflowExecutionStarted`, `WorkflowTaskScheduled`,
/// `WorkflowTaskStarted`); a task re-run after a timeout or a failure, or
/// any later task, starts further on.
const FIRST_TASK_STARTED_EVENT: u32 = 3;

impl SagaContext for TemporalSaga {
    fn saga_id(&self) -> &str {
        &self.saga_id
    }

    fn now_ms(&self) -> u64 {
        self.ctx
            .workflow_time()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn call_activity(
        &self,
        call: ActivityCall,
    ) -> impl Future<Output = Result<Value, ActivityError>> {
        // The worker enforces the attempt's limit; the timeout here, a
        // second later, only catches a worker that died mid-attempt (the
        // server's for an activity task; for a local activity the
        // workflow task's timeout hands the saga to another worker).
        let timeout = Duration::from_millis(call.timeout_ms + SERVER_TIMEOUT_MARGIN_MS);
        // One attempt per task: the interpreter owns retries on both engines.
        let retry = RetryPolicy::builder().maximum_attempts(1).build();
        let summary = format!("{} {} #{}", call.step, call.phase.name(), call.attempt);
        let activity = NamedActivity(call.activity.clone());
        let fut = if self.runs_local(&call) {
            // The call rides in the marker, so `show` reads the step,
            // phase and attempt back from the history as it does from an
            // activity task's scheduled event.
            let options = LocalActivityOptions::builder()
                .start_to_close_timeout(timeout)
                .retry_policy(retry)
                .summary(summary)
                .include_arguments_in_marker(true)
                .build();
            Either::Left(self.ctx.execute_local_activity(activity, call, options))
        } else {
            let options = ActivityOptions::with_start_to_close_timeout(timeout)
                .retry_policy(retry)
                .summary(summary)
                .build();
            Either::Right(self.ctx.execute_activity(activity, call, options))
        };
        async move { fut.await.map_err(to_saga_error) }
    }

    async fn sleep_or_signal(&self, delay_ms: u64) -> Option<Signal> {
        if let Some(signal) = self.try_signal() {
            return Some(signal);
        }
        let timer = pin!(self.ctx.timer(Duration::from_millis(delay_ms)));
        let arrived = pin!(self.ctx.wait_condition(|s| !s.inbox.is_empty()));
        // Both ready in one activation: the timer wins, on replay too.
        match futures::future::select(timer, arrived).await {
            Either::Left(_) => None,
            Either::Right(_) => self.try_signal(),
        }
    }

    async fn wait_signal(&self) -> Signal {
        loop {
            let _ = self.ctx.wait_condition(|s| !s.inbox.is_empty()).await;
            if let Some(signal) = self.try_signal() {
                return signal;
            }
        }
    }

    fn try_signal(&self) -> Option<Signal> {
        self.ctx.state_mut(|s| s.inbox.pop_front())
    }

    /// The chain of local steps that holds `index`, as [`StepMode`] forms
    /// them: a crash before the workflow task completes makes the next
    /// worker run the chain again.
    fn chain_end(&self, def: &SagaDef, index: usize) -> usize {
        let last = def.steps.len().saturating_sub(1);
        match (self.steps, def.pivot) {
            (StepMode::Activities, _) => index,
            (StepMode::Local, _) | (StepMode::Checkpointed, None) => last,
            (StepMode::Checkpointed, Some(p)) if index < p => p - 1,
            (StepMode::Checkpointed, Some(p)) if index == p => p,
            (StepMode::Checkpointed, Some(_)) => last,
        }
    }

    /// Provably the first run only in the first attempt of the first
    /// workflow task: the history holds nothing an earlier run left. Any
    /// later task may be a re-run (the SDK does not tell the workflow
    /// which attempt a task is), so the interpreter assumes it may be.
    fn first_run(&self) -> bool {
        self.ctx.history_length() <= FIRST_TASK_STARTED_EVENT
    }

    /// The SDK's patching API: a history recorded before the change (no
    /// marker where the interpreter asks) replays the old way; a new run
    /// records the marker and takes the new one.
    fn patched(&self, change: &'static str) -> bool {
        self.ctx.patched(change)
    }

    /// Reports go to the worker's span exporter, except while the SDK
    /// replays history: that work was reported when it first ran.
    fn traced(&self) -> bool {
        crate::telemetry::enabled() && !self.ctx.is_replaying()
    }

    fn finished(&self, work: Finished) {
        if !self.ctx.is_replaying() {
            crate::telemetry::record(&work);
        }
    }

    fn set_stage(&self, stage: &Stage) {
        if self.ctx.state(|s| s.stage != *stage) {
            self.ctx.state_mut(|s| s.stage = *stage);
        }
    }

    fn set_status(&self, status: SagaStatus) {
        // The start request already set SagaStatus = running.
        let changed = self
            .ctx
            .state(|s| s.status.as_ref().unwrap_or(&SagaStatus::Running) != &status);
        if changed {
            self.ctx
                .upsert_search_attributes([SAGA_STATUS.value_set(status.name().to_owned())]);
            // The reason goes in the memo, so list and show can give it
            // while no worker runs to answer a query.
            let reason = status.reason().map(|r| MemoValue::new(r.to_owned()));
            let had_reason = self
                .ctx
                .state(|s| s.status.as_ref().is_some_and(|s| s.reason().is_some()));
            if reason.is_some() || had_reason {
                // A string memo value always serializes.
                let _ = self.ctx.upsert_memo([(REASON_MEMO, reason)]);
            }
        }
        self.ctx.state_mut(|s| s.status = Some(status));
    }
}

/// Maps a failed activity back to sagaflow's error: the activity side puts
/// the original error in the failure details, so the mapping is lossless;
/// a timeout or a lost worker is a retryable "timeout".
fn to_saga_error(err: ActivityExecutionError) -> ActivityError {
    match &err {
        ActivityExecutionError::Failed(f) => match f.cause() {
            Some(IncomingError::Application(app)) => {
                if let Ok(Some(e)) = app.details::<ActivityError>() {
                    return e;
                }
                let kind = app.type_name().unwrap_or("activity_failed").to_owned();
                if app.is_non_retryable() {
                    ActivityError::business(kind, app.to_string())
                } else {
                    ActivityError::retryable(kind, app.to_string())
                }
            }
            Some(IncomingError::Timeout(t)) => ActivityError::retryable(
                "timeout",
                format!("no result in time ({:?})", t.timeout_type()),
            ),
            // A local activity's failure is the application's own, not
            // wrapped in an activity failure: its details hold the error.
            _ => match err.failure() {
                Some(top)
                    if matches!(
                        top.failure_info,
                        Some(FailureInfo::ApplicationFailureInfo(_))
                    ) =>
                {
                    failure_error(Some(top))
                }
                _ => ActivityError::retryable("activity_failed", err.to_string()),
            },
        },
        _ => ActivityError::retryable("activity_failed", err.to_string()),
    }
}
