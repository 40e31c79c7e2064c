//! Recovery: a saga rebuilt from its journal by the same code that
//! decided it live, or parked with the reason when its journal cannot be
//! read or its replay diverges.

use super::{
    new_live, park_unrun, poll_saga, status_event, take_commands, Action, Effects, Recovered, State,
};
use crate::engine::embedded::api::Ended;
use crate::engine::embedded::journal::EventKind;
use sagaflow_workflows::{Resolution, SagaStatus};
use serde_json::Value;
use std::sync::Arc;
use std::task::Poll;

impl State {
    /// Rebuilds a saga from its journal and asks again for its outstanding
    /// operation; parks it when part of its journal cannot be read.
    ///
    /// The events are fed back one at a time, polling after each, as they
    /// were applied live: an operator command is then seen exactly where it
    /// was delivered (a cancel during a retry timer, say), so the saga
    /// decides what it decided the first time.
    pub(super) fn recover<A>(&mut self, saga: Recovered, now: u64, out: &mut Effects<A>) {
        // Recovered from the journal: its id is committed, so nothing
        // needs remembering when it leaves memory.
        let id: Arc<str> = Arc::from(saga.id.as_str());
        let next_n = saga.events.last().map_or(0, |(n, _, _)| n + 1);
        let mut last_status = None;
        for (_, _, event) in &saga.events {
            if let Ok(EventKind::Status { status, reason, .. }) = event {
                last_status = SagaStatus::from_parts(status, reason.clone());
            }
        }
        let unreadable = match (&saga.def, &saga.input) {
            (Err(why), _) => Some(format!("its definition: {why}")),
            (_, Err(why)) => Some(format!("its input: {why}")),
            _ => saga
                .events
                .iter()
                .find_map(|(n, _, e)| e.as_ref().err().map(|why| format!("event {n}: {why}"))),
        };
        if let Some(what) = unreadable {
            let reason = format!("the journal of this saga cannot be read ({what})");
            park_unrun(
                &id,
                next_n,
                last_status.as_ref(),
                journaled(&last_status),
                &reason,
                now,
                out,
            );
            return;
        }
        let (Ok(def), Ok(input)) = (saga.def, saga.input) else {
            unreachable!("checked above");
        };
        let mut live = new_live(id.clone(), def, input, saga.created_ms, next_n);
        live.ctx.set_traced(self.traced);
        let mut poll = poll_saga(&mut live);
        let mut breaker_wait = false;
        for (_, at_ms, event) in saga.events {
            if poll.is_ready() || live.ctx.divergence().is_some() {
                break;
            }
            match event.expect("checked above") {
                EventKind::Attempt { seq, body } => {
                    breaker_wait = body.error.as_ref().is_some_and(|e| e.wait.is_some());
                    let result = match (body.output, body.error) {
                        (_, Some(e)) => Err(e),
                        (Some(v), None) => Ok(v),
                        (None, None) => Ok(Value::Null),
                    };
                    live.ctx.resolve(
                        seq,
                        Resolution::Activity {
                            activity: body.activity,
                            result,
                            at_ms,
                        },
                    );
                }
                EventKind::TimerFired { seq } => live.ctx.resolve(seq, Resolution::Timer { at_ms }),
                EventKind::Signal { command, .. } => live.ctx.push_signal(command.signal, at_ms),
                EventKind::Started | EventKind::Status { .. } => continue,
            }
            poll = poll_saga(&mut live);
        }
        if let Some(why) = live.ctx.divergence() {
            let reason = format!("replaying its journal diverged ({why})");
            park_unrun(
                &id,
                live.next_n,
                last_status.as_ref(),
                journaled(&last_status),
                &reason,
                now,
                out,
            );
            return;
        }
        // Reported before the crash, or lost with it: not reported twice.
        live.ctx.take_finished(drop);
        let replayed_status = live.ctx.take_status_change();
        let status_now = live.ctx.status();
        live.journaled_status = journaled(&last_status);
        if replayed_status.is_some() && status_now != last_status.unwrap_or(SagaStatus::Running) {
            // The status change was decided but its commit did not happen.
            let n = live.next_n;
            live.next_n += 1;
            out.records.push(status_event(
                id.clone(),
                n,
                now,
                &status_now,
                live.journaled_status,
            ));
            live.journaled_status = status_now.name();
        }
        live.parked = matches!(status_now, SagaStatus::Parked { .. });
        live.breaker_wait = breaker_wait;
        take_commands(&mut live, &mut out.actions);
        match poll {
            Poll::Ready(outcome) => out.actions.push(Action::Ended(Ended {
                saga_id: id,
                status: outcome.status,
                saga: live.def.name.clone(),
                started_ms: live.started_ms,
            })),
            Poll::Pending => {
                self.insert(id, live);
            }
        }
    }
}

/// The status a recovered saga's journal holds: its last status event's,
/// or "running" (a new saga's row starts so).
fn journaled(last_status: &Option<SagaStatus>) -> &'static str {
    last_status.as_ref().map_or("running", SagaStatus::name)
}
