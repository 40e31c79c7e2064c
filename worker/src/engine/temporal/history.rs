//! A workflow's Temporal history read back as sagaflow's journal events,
//! so `show` and `history` print both engines the same way: the start,
//! each attempt (activity completed or failed, or a local activity's
//! marker, with step, phase and attempt), fired timers, operator commands
//! and status changes.

use super::workflow::{SagaInput, REASON_MEMO};
use crate::engine::command::CommandRequest;
use crate::engine::view::AttemptBody;
use crate::engine::view::{EventRow, SagaRow};
use sagaflow_workflows::{ActivityCall, ActivityError, SagaDef};
use serde_json::{json, Value};
use std::collections::HashMap;
use temporalio_common::protos::constants::LOCAL_ACTIVITY_MARKER_NAME;
use temporalio_common::protos::temporal::api::common::v1::{Payload, Payloads};
use temporalio_common::protos::temporal::api::failure::v1::{failure::FailureInfo, Failure};
use temporalio_common::protos::temporal::api::history::v1::{
    history_event::Attributes, HistoryEvent,
};

/// A saga read back from Temporal.
pub struct HistorySaga {
    /// The list row.
    pub row: SagaRow,
    /// The definition it runs.
    pub def: SagaDef,
    /// Its order.
    pub order: Value,
    /// Its history as sagaflow journal events.
    pub events: Vec<EventRow>,
}

/// What [`translate`] reads from a history.
pub(super) struct Translated {
    /// The workflow's input (its definition and order).
    pub(super) input: Option<SagaInput>,
    /// The journal events.
    pub(super) events: Vec<EventRow>,
    /// The last status the workflow set.
    pub(super) last_status: String,
    /// The reason it gave with it (a parked saga's).
    pub(super) last_reason: Option<String>,
}

/// The first payload decoded from JSON.
pub(super) fn decode<T: serde::de::DeserializeOwned>(payloads: Option<&Payloads>) -> Option<T> {
    payloads
        .and_then(|p| p.payloads.first())
        .and_then(|p: &Payload| serde_json::from_slice(&p.data).ok())
}

/// Milliseconds since the epoch of a protobuf timestamp as JSON: an RFC
/// 3339 string or `{seconds, nanos}`.
fn timestamp_ms(t: &Value) -> Option<u64> {
    if let Some(text) = t.as_str() {
        let at = chrono::DateTime::parse_from_rfc3339(text).ok()?;
        return u64::try_from(at.timestamp_millis()).ok();
    }
    let seconds = t.get("seconds")?.as_i64()?;
    let nanos = t.get("nanos").and_then(Value::as_i64).unwrap_or(0);
    u64::try_from(seconds * 1000 + nanos / 1_000_000).ok()
}

/// The sagaflow error inside an activity failure (its details), or one
/// made from the failure's message.
pub(super) fn failure_error(failure: Option<&Failure>) -> ActivityError {
    let mut f = failure;
    while let Some(failure) = f {
        if let Some(FailureInfo::ApplicationFailureInfo(app)) = &failure.failure_info {
            if let Some(e) = decode::<ActivityError>(app.details.as_ref()) {
                return e;
            }
            let error = ActivityError::retryable(app.r#type.clone(), failure.message.clone());
            return ActivityError {
                retryable: !app.non_retryable,
                ..error
            };
        }
        if let Some(FailureInfo::TimeoutFailureInfo(_)) = &failure.failure_info {
            return ActivityError::retryable("timeout", failure.message.clone());
        }
        f = failure.cause.as_deref();
    }
    ActivityError::retryable(
        "activity_failed",
        failure.map_or_else(String::new, |f| f.message.clone()),
    )
}

/// Translates a Temporal history into sagaflow journal events: started,
/// activity_completed / activity_failed (with step, phase, attempt),
/// timer_fired, signal, status.
pub(super) fn translate(history: &[HistoryEvent]) -> Translated {
    let mut out = Translated {
        input: None,
        events: Vec::new(),
        last_status: "running".into(),
        last_reason: None,
    };
    let mut scheduled: HashMap<i64, (ActivityCall, u64)> = HashMap::new();
    // Workflow time as the SDK keeps it: a workflow task starts at its
    // started event and each local activity moves it to its completion,
    // so a local step began where the one before it ended.
    let mut workflow_ms = 0u64;
    let push = |events: &mut Vec<EventRow>, at_ms: u64, kind: &str, body: Value| {
        events.push(EventRow {
            n: events.len() as u32,
            at_ms,
            kind: kind.to_owned(),
            seq: None,
            body,
        });
    };
    for ev in history {
        let at_ms = ev.event_time.as_ref().map_or(0, |t| {
            (t.seconds.max(0) as u64) * 1000 + (t.nanos.max(0) as u64) / 1_000_000
        });
        let attempt = |call: &ActivityCall,
                       started_ms: u64,
                       output: Option<Value>,
                       error: Option<ActivityError>| {
            serde_json::to_value(AttemptBody {
                step: call.step.clone(),
                activity: call.activity.clone(),
                phase: call.phase,
                attempt: call.attempt,
                started_ms,
                output,
                error,
            })
            .unwrap_or(Value::Null)
        };
        match &ev.attributes {
            Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) => {
                out.input = decode(a.input.as_ref());
                push(&mut out.events, at_ms, "started", json!({}));
            }
            Some(Attributes::ActivityTaskScheduledEventAttributes(a)) => {
                if let Some(call) = decode::<ActivityCall>(a.input.as_ref()) {
                    scheduled.insert(ev.event_id, (call, at_ms));
                }
            }
            Some(Attributes::ActivityTaskCompletedEventAttributes(a)) => {
                if let Some((call, started)) = scheduled.get(&a.scheduled_event_id) {
                    let body = attempt(
                        call,
                        *started,
                        Some(decode(a.result.as_ref()).unwrap_or(Value::Null)),
                        None,
                    );
                    push(&mut out.events, at_ms, "activity_completed", body);
                }
            }
            Some(Attributes::ActivityTaskFailedEventAttributes(a)) => {
                if let Some((call, started)) = scheduled.get(&a.scheduled_event_id) {
                    let body = attempt(
                        call,
                        *started,
                        None,
                        Some(failure_error(a.failure.as_ref())),
                    );
                    push(&mut out.events, at_ms, "activity_failed", body);
                }
            }
            Some(Attributes::ActivityTaskTimedOutEventAttributes(a)) => {
                if let Some((call, started)) = scheduled.get(&a.scheduled_event_id) {
                    let error = ActivityError::retryable(
                        "timeout",
                        format!("no result within {}ms", call.timeout_ms),
                    );
                    let body = attempt(call, *started, None, Some(error));
                    push(&mut out.events, at_ms, "activity_failed", body);
                }
            }
            Some(Attributes::WorkflowTaskStartedEventAttributes(_)) => workflow_ms = at_ms,
            Some(Attributes::MarkerRecordedEventAttributes(a))
                if a.marker_name == LOCAL_ACTIVITY_MARKER_NAME =>
            {
                let Some(call) = decode::<ActivityCall>(a.details.get("input")) else {
                    continue;
                };
                let ended_ms = a
                    .details
                    .get("data")
                    .and_then(|d| decode::<Value>(Some(d)))
                    .and_then(|d| timestamp_ms(d.get("completeTime").or(d.get("complete_time"))?))
                    .unwrap_or(at_ms);
                let started_ms = workflow_ms.min(ended_ms);
                workflow_ms = ended_ms;
                let (kind, body) = match &a.failure {
                    None => (
                        "activity_completed",
                        attempt(
                            &call,
                            started_ms,
                            Some(decode(a.details.get("result")).unwrap_or(Value::Null)),
                            None,
                        ),
                    ),
                    Some(f) => (
                        "activity_failed",
                        attempt(&call, started_ms, None, Some(failure_error(Some(f)))),
                    ),
                };
                push(&mut out.events, ended_ms, kind, body);
            }
            Some(Attributes::TimerFiredEventAttributes(_)) => {
                push(&mut out.events, at_ms, "timer_fired", json!({}));
            }
            Some(Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(a)) => {
                let request = a
                    .accepted_request
                    .as_ref()
                    .and_then(|r| r.input.as_ref())
                    .and_then(|i| decode::<CommandRequest>(i.args.as_ref()));
                if let Some(request) = request {
                    let body = serde_json::from_str(&request.encode()).unwrap_or(Value::Null);
                    push(&mut out.events, at_ms, "signal", body);
                }
            }
            Some(Attributes::WorkflowExecutionSignaledEventAttributes(a)) => {
                let signal: Value = decode(a.input.as_ref()).unwrap_or(Value::Null);
                push(
                    &mut out.events,
                    at_ms,
                    "signal",
                    json!({ "signal": signal }),
                );
            }
            Some(Attributes::WorkflowPropertiesModifiedEventAttributes(a)) => {
                if let Some(memo) = &a.upserted_memo {
                    out.last_reason = memo
                        .fields
                        .get(REASON_MEMO)
                        .and_then(|p| serde_json::from_slice::<String>(&p.data).ok());
                }
            }
            Some(Attributes::UpsertWorkflowSearchAttributesEventAttributes(a)) => {
                let status = a
                    .search_attributes
                    .as_ref()
                    .and_then(|s| s.indexed_fields.get("SagaStatus"))
                    .and_then(|p| serde_json::from_slice::<String>(&p.data).ok());
                if let Some(status) = status {
                    out.last_status = status.clone();
                    push(
                        &mut out.events,
                        at_ms,
                        "status",
                        json!({ "status": status }),
                    );
                }
            }
            _ => {}
        }
    }
    out
}
