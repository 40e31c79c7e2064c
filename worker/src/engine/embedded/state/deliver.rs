//! Delivering what a saga waits for: an attempt's result, a fired timer,
//! an operator command. Each is journaled as the saga's next event, then
//! the saga is polled ([`State::advance`]). A delivery for a saga not in
//! memory, or for another operation than the one outstanding, is ignored.

use super::{Effects, State};
use crate::engine::command::CommandRequest;
use crate::engine::embedded::journal::{EventKind, Record};
use crate::engine::view::AttemptBody;
use sagaflow_workflows::{ActivityError, Resolution};
use serde_json::Value;
use std::sync::Arc;

impl State {
    #[allow(clippy::too_many_arguments)] // the fields of Input::ActivityDone
    pub(super) fn activity_done<A>(
        &mut self,
        saga_id: &Arc<str>,
        seq: u32,
        started_ms: u64,
        finished_ms: u64,
        result: Result<Value, ActivityError>,
        now: u64,
        out: &mut Effects<A>,
    ) {
        let Some(live) = self.sagas.get_mut(saga_id) else {
            return;
        };
        let Some((want, meta)) = live.inflight.take() else {
            return;
        };
        if want != seq {
            live.inflight = Some((want, meta));
            return;
        }
        let (output, error) = match &result {
            Ok(v) => (Some(v.clone()), None),
            Err(e) => (None, Some(e.clone())),
        };
        let waits = error.as_ref().is_some_and(|e| e.wait.is_some());
        if waits != live.breaker_wait {
            live.breaker_wait = waits;
            if waits {
                self.idle += 1;
            } else {
                self.idle -= 1;
            }
        }
        let n = live.next_n;
        live.next_n += 1;
        live.ctx.resolve(
            seq,
            Resolution::Activity {
                activity: meta.activity.clone(),
                result,
                at_ms: finished_ms,
            },
        );
        out.records.push(Record::Event {
            saga_id: live.id.clone(),
            n,
            at_ms: finished_ms,
            kind: EventKind::Attempt {
                seq,
                body: AttemptBody {
                    step: meta.step,
                    activity: meta.activity,
                    phase: meta.phase,
                    attempt: meta.attempt,
                    started_ms,
                    output,
                    error,
                },
            },
        });
        self.advance(saga_id, now, out);
    }

    pub(super) fn timer_fired<A>(
        &mut self,
        saga_id: &Arc<str>,
        seq: u32,
        at_ms: u64,
        now: u64,
        out: &mut Effects<A>,
    ) {
        let Some(live) = self.sagas.get_mut(saga_id) else {
            return;
        };
        // A timer a cancel cut short: nobody waits for it any more.
        if !live.ctx.awaits(seq) {
            return;
        }
        let n = live.next_n;
        live.next_n += 1;
        live.ctx.resolve(seq, Resolution::Timer { at_ms });
        out.records.push(Record::Event {
            saga_id: live.id.clone(),
            n,
            at_ms,
            kind: EventKind::TimerFired { seq },
        });
        self.advance(saga_id, now, out);
    }

    /// Delivers an operator command, or refuses it with the reason (both
    /// journaled and audited): it must apply to the saga as it is now, in
    /// memory, which is where the saga may have moved since the CLI
    /// checked.
    pub(super) fn signal<A>(
        &mut self,
        saga_id: String,
        command: Result<CommandRequest, String>,
        inbox_id: i64,
        now: u64,
        out: &mut Effects<A>,
    ) {
        let verdict = match &command {
            Err(why) => Err(format!("the inbox row cannot be read: {why}")),
            Ok(c) => self.check(&saga_id, &c.signal),
        };
        let command = match (command, verdict) {
            (Ok(command), Ok(())) => command,
            (command, Err(why)) => {
                let name = command.as_ref().map_or("unreadable", |c| c.signal.name());
                tracing::warn!(saga_id, command = name, %why, "operator command refused");
                out.records.push(Record::DropSignal {
                    inbox_id,
                    saga_id,
                    command: command.ok(),
                    why,
                    at_ms: now,
                });
                return;
            }
            (Err(_), Ok(())) => unreachable!("an unreadable command never applies"),
        };
        let live = self.sagas.get_mut(saga_id.as_str()).expect("checked above");
        let n = live.next_n;
        live.next_n += 1;
        live.ctx.push_signal(command.signal.clone(), now);
        out.records.push(Record::Event {
            saga_id: live.id.clone(),
            n,
            at_ms: now,
            kind: EventKind::Signal {
                command,
                inbox_id: Some(inbox_id),
            },
        });
        let id = live.id.clone();
        self.advance(&id, now, out);
    }
}
