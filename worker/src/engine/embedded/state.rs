//! The engine core's state machine: every live saga, and the one function
//! that decides what a message does to them.
//!
//! [`State::apply`] takes one [`Input`] and the current time and appends
//! what follows to [`Effects`]: journal [`Record`]s, and [`Action`]s that
//! may only be carried out once those records are committed. It reads no
//! clock, does no I/O, holds no channel or thread and never exits the
//! process; the thread loop in [`super::event_loop`] does all of that. Recovery
//! goes through the same `apply` ([`Input::Recover`], built from the
//! journal by [`super::recovery`]), so a recovered saga is decided by the
//! code that decided it the first time.
//!
//! Invariants:
//! - a saga has at most one outstanding operation (the interpreter is
//!   sequential); a result for another `seq` than the one in flight is
//!   ignored;
//! - a saga's events are numbered `n = 0, 1, 2, ...` in the order they are
//!   applied, which is the order replay feeds them back;
//! - `Start` is idempotent: a saga id in memory (live, or ended with its
//!   end not yet known to be committed) or in the journal
//!   (`Input::Start::journaled`, looked up by the core loop for ids not in
//!   memory) is a duplicate, acknowledged without creating anything. Memory
//!   holds no ended sagas beyond their last commit, so it does not grow
//!   with the journal; retention removing a saga from the journal ends its
//!   duplicate window;
//! - a saga whose journal cannot be read (definition, input or an event),
//!   or whose replay diverges from it, is parked with the reason and not
//!   run; the others recover.
//!
//! `A` is the caller's acknowledgement token for a start (a oneshot sender
//! in the engine, a number in the tests): the state only hands it back.

use super::api::Ended;
use super::journal::{EventKind, Record};
use crate::engine::command::{CommandRequest, StartRequest};
use crate::engine::model::{Definition, StartOutcome};
use sagaflow_workflows::{
    run_saga, ActivityCall, ActivityError, Command, Finished, Phase, ReplayContext, SagaOutcome,
    SagaStatus, Signal,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

mod deliver;
mod recover;
mod start;

/// A message for the state machine.
pub(crate) enum Input<A> {
    /// Start a saga (or acknowledge a duplicate).
    Start {
        saga_id: String,
        def: Arc<Definition>,
        input: Value,
        ack: Option<A>,
        /// The journal holds a saga with this id (the core loop looks it up
        /// when the state does not know the id: [`State::knows`]).
        journaled: bool,
    },
    /// An activity attempt finished.
    ActivityDone {
        saga_id: Arc<str>,
        seq: u32,
        started_ms: u64,
        finished_ms: u64,
        result: Result<Value, ActivityError>,
    },
    /// A durable timer fired at `at_ms`.
    TimerFired {
        saga_id: Arc<str>,
        seq: u32,
        at_ms: u64,
    },
    /// An operator command from inbox row `inbox_id` (`Err`: the row
    /// could not be read, and why).
    Signal {
        saga_id: String,
        command: Result<CommandRequest, String>,
        inbox_id: i64,
    },
    /// A saga an operator command starts (a refund), from inbox row
    /// `inbox_id` of saga `of` (`Err`: the row could not be read).
    StartFromInbox {
        of: String,
        start: Result<Box<(StartRequest, String)>, String>,
        inbox_id: i64,
        /// The journal holds the saga to start (as for `Start`).
        journaled: bool,
    },
    /// A saga that had not ended, as the journal holds it.
    Recover(Box<Recovered>),
    /// The journal writer could not commit: memory is ahead of disk.
    CommitFailed { error: String },
}

/// A saga read back from the journal for recovery. Each part that could
/// not be read is an `Err` with the reason.
pub(crate) struct Recovered {
    pub(crate) id: String,
    pub(crate) created_ms: u64,
    pub(crate) def: Result<Arc<Definition>, String>,
    pub(crate) input: Result<Value, String>,
    /// `(n, at_ms, event)` in journal order.
    pub(crate) events: Vec<(u32, u64, Result<EventKind, String>)>,
}

/// What the engine must do once the records decided with it are committed.
pub(crate) enum Action<A> {
    /// Run an activity attempt; its result comes back as `ActivityDone`.
    Dispatch {
        saga_id: Arc<str>,
        seq: u32,
        call: ActivityCall,
    },
    /// Fire a timer at `fire_at_ms` (as `TimerFired`).
    Timer {
        fire_at_ms: u64,
        saga_id: Arc<str>,
        seq: u32,
    },
    /// Answer a start request.
    Ack(A, StartOutcome),
    /// Report a saga that ended.
    Ended(Ended),
    /// Stop the process: only recovery from the journal can continue safely.
    Stop { why: String },
    /// Tell the metrics (the core turns [`Effects::observed`] into these).
    Observe(Observed),
    /// The saga left memory and its last records are committed: the
    /// journal answers for its id from now on ([`State::forget`]).
    Forget(Arc<str>),
}

/// What the metrics learn once the records that made it true are
/// committed (ends come as [`Action::Ended`]).
#[derive(Debug, Clone)]
pub(crate) enum Observed {
    /// A saga of this name started.
    Started { saga: Arc<str> },
    /// A saga parked on `step` in `phase`.
    Parked {
        saga: Arc<str>,
        step: Arc<str>,
        phase: Phase,
    },
    /// A piece of a saga's work ended (the trace's spans; only when the
    /// state traces: [`State::trace`]).
    Finished(Box<Finished>),
}

/// What applying messages decided: records for the journal, actions for
/// after their commit, and what the metrics learn then. The loop reuses
/// one across a round (no allocation per message).
pub(crate) struct Effects<A> {
    pub(crate) records: Vec<Record>,
    pub(crate) actions: Vec<Action<A>>,
    pub(crate) observed: Vec<Observed>,
}

impl<A> Default for Effects<A> {
    fn default() -> Self {
        Effects {
            records: Vec::new(),
            actions: Vec::new(),
            observed: Vec::new(),
        }
    }
}

type SagaFuture = Pin<Box<dyn Future<Output = SagaOutcome>>>;

struct Live {
    id: Arc<str>,
    /// Its definition, to name the step a command is checked against.
    def: Arc<Definition>,
    ctx: ReplayContext,
    fut: SagaFuture,
    /// When it started (ms since the Unix epoch).
    started_ms: u64,
    /// Its status as the journal holds it (the last status event's, or
    /// "running"): what a status change replaces in the journal's counts.
    journaled_status: &'static str,
    next_n: u32,
    /// The activity attempt in flight: what to journal when it returns.
    inflight: Option<(u32, CallMeta)>,
    /// Parked on an operator command.
    parked: bool,
    /// Its last attempt was refused by an open breaker: it waits on a
    /// timer for the dependency, doing nothing.
    breaker_wait: bool,
}

impl Live {
    /// Parked or waiting for a breaker: not "in progress" for the
    /// trigger's limit.
    fn idle(&self) -> bool {
        self.parked || self.breaker_wait
    }
}

struct CallMeta {
    step: String,
    activity: String,
    phase: Phase,
    attempt: u32,
}

/// Every live saga and what makes starts idempotent.
pub(crate) struct State {
    sagas: HashMap<Arc<str>, Live>,
    /// How many of `sagas` are idle ([`Live::idle`]), kept as they change.
    idle: usize,
    /// Sagas that left memory (ended, or parked unrun) whose last records
    /// may not be committed yet: until they are, a journal lookup could
    /// miss them, so the state still answers for their ids.
    leaving: HashSet<Arc<str>>,
    written_defs: HashSet<String>,
    /// Whether sagas report their ended work ([`Observed::Finished`]).
    traced: bool,
}

impl State {
    /// An empty state whose journal holds the definitions `written_defs`
    /// already.
    pub(crate) fn new(written_defs: HashSet<String>) -> State {
        State {
            sagas: HashMap::new(),
            idle: 0,
            leaving: HashSet::new(),
            written_defs,
            traced: false,
        }
    }

    /// Whether the state answers for saga `id` itself (live, or leaving
    /// memory); for any other id, only the journal knows whether it was
    /// started.
    pub(crate) fn knows(&self, id: &str) -> bool {
        self.sagas.contains_key(id) || self.leaving.contains(id)
    }

    /// Carries out [`Action::Forget`]: the saga's last records are
    /// committed, so the journal answers for its id.
    pub(crate) fn forget(&mut self, id: &str) {
        self.leaving.remove(id);
    }

    /// A saga leaves memory: remembered until its records are committed.
    fn leave<A>(&mut self, id: Arc<str>, out: &mut Effects<A>) {
        self.leaving.insert(id.clone());
        out.actions.push(Action::Forget(id));
    }

    /// Has sagas report their ended work from now on, as
    /// [`Observed::Finished`] (for the trace); work replayed while a saga
    /// recovers is not reported again.
    pub(crate) fn trace(&mut self, on: bool) {
        self.traced = on;
    }

    /// Sagas in memory (running, compensating or parked on a signal).
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.sagas.len()
    }

    /// Sagas in progress: live, neither parked nor waiting for an open
    /// breaker. The trigger's `max_live` limits these, so parked sagas
    /// never stop intake.
    pub(crate) fn in_progress(&self) -> usize {
        self.sagas.len() - self.idle
    }

    /// Inserts a live saga, counting it if it is idle.
    fn insert(&mut self, id: Arc<str>, live: Live) {
        if live.idle() {
            self.idle += 1;
        }
        if let Some(old) = self.sagas.insert(id, live) {
            if old.idle() {
                self.idle -= 1;
            }
        }
    }

    /// Removes a live saga, uncounting it if it was idle.
    fn remove(&mut self, id: &str) -> Option<Live> {
        let live = self.sagas.remove(id)?;
        if live.idle() {
            self.idle -= 1;
        }
        Some(live)
    }

    /// Whether `signal` applies to saga `saga_id` as it is in memory now,
    /// or why not. The engine asks before it delivers a command; the CLI
    /// asks a state it recovered the one saga into, before it sends one.
    pub(crate) fn check(&self, saga_id: &str, signal: &Signal) -> Result<(), String> {
        match self.sagas.get(saga_id) {
            Some(live) => {
                signal.applies_to(&live.ctx.status(), &live.ctx.stage(), &live.def.def.steps)
            }
            None => Err(format!(
                "the saga is not live here: {saga_id} has ended, its journal could not be replayed, or there is no such saga"
            )),
        }
    }

    /// Applies one message at `now_ms`; what follows goes into `out`.
    pub(crate) fn apply<A>(&mut self, input: Input<A>, now_ms: u64, out: &mut Effects<A>) {
        match input {
            Input::Start {
                saga_id,
                def,
                input,
                ack,
                journaled,
            } => self.start(saga_id, def, input, ack, journaled, now_ms, out),
            Input::ActivityDone {
                saga_id,
                seq,
                started_ms,
                finished_ms,
                result,
            } => self.activity_done(&saga_id, seq, started_ms, finished_ms, result, now_ms, out),
            Input::TimerFired { saga_id, seq, at_ms } => {
                self.timer_fired(&saga_id, seq, at_ms, now_ms, out)
            }
            Input::Signal {
                saga_id,
                command,
                inbox_id,
            } => self.signal(saga_id, command, inbox_id, now_ms, out),
            Input::StartFromInbox {
                of,
                start,
                inbox_id,
                journaled,
            } => self.start_from_inbox(of, start, inbox_id, journaled, now_ms, out),
            Input::Recover(saga) => self.recover(*saga, now_ms, out),
            Input::CommitFailed { error } => out.actions.push(Action::Stop {
                why: format!(
                    "journal commit failed: {error}; stopping so that recovery can resume from the journal"
                ),
            }),
        }
    }

    /// Polls a saga after something was delivered to it; journals a status
    /// change and asks for what it wants next.
    fn advance<A>(&mut self, saga_id: &str, now: u64, out: &mut Effects<A>) {
        let Some(live) = self.sagas.get_mut(saga_id) else {
            return;
        };
        let poll = poll_saga(live);
        if self.traced {
            live.ctx
                .take_finished(|f| out.observed.push(Observed::Finished(Box::new(f))));
        }
        if let Some(why) = live.ctx.divergence() {
            let live = self.remove(saga_id).expect("present above");
            let reason = format!("replaying its journal diverged ({why})");
            park_unrun(
                &live.id,
                live.next_n,
                None,
                live.journaled_status,
                &reason,
                now,
                out,
            );
            self.leave(live.id, out);
            return;
        }
        if let Some(status) = live.ctx.take_status_change() {
            let n = live.next_n;
            live.next_n += 1;
            let parked = matches!(status, SagaStatus::Parked { .. });
            if parked {
                let stage = live.ctx.stage();
                if let (Some(step), Some(phase)) = (stage.step, stage.phase) {
                    out.observed.push(Observed::Parked {
                        saga: live.def.name.clone(),
                        step: Arc::from(live.def.def.steps[step].name.as_str()),
                        phase,
                    });
                }
            }
            if parked != live.parked {
                let was_idle = live.idle();
                live.parked = parked;
                match (was_idle, live.idle()) {
                    (false, true) => self.idle += 1,
                    (true, false) => self.idle -= 1,
                    _ => {}
                }
            }
            out.records.push(status_event(
                live.id.clone(),
                n,
                now,
                &status,
                live.journaled_status,
            ));
            live.journaled_status = status.name();
        }
        take_commands(live, &mut out.actions);
        if let Poll::Ready(outcome) = poll {
            let live = self.remove(saga_id).expect("present above");
            out.actions.push(Action::Ended(Ended {
                saga_id: live.id.clone(),
                status: outcome.status,
                saga: live.def.name.clone(),
                started_ms: live.started_ms,
            }));
            self.leave(live.id, out);
        }
    }
}

/// Polls a saga's future once.
fn poll_saga(live: &mut Live) -> Poll<SagaOutcome> {
    live.fut
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
}

/// A saga that cannot go on safely (its journal cannot be read, or
/// replaying it no longer matches what was recorded) is parked with `what`
/// as its reason, not run, and kept out of memory; nothing else is done
/// for it, and the others recover. The operator reads `sagaflow history`.
fn park_unrun<A>(
    id: &Arc<str>,
    next_n: u32,
    last_status: Option<&SagaStatus>,
    journaled_status: &'static str,
    what: &str,
    now: u64,
    out: &mut Effects<A>,
) {
    let status = SagaStatus::Parked {
        reason: format!("{what}; it is not run. Inspect it with `sagaflow history {id}`"),
    };
    tracing::error!(saga_id = &**id, what, "saga parked, not run");
    if last_status != Some(&status) {
        out.records.push(status_event(
            id.clone(),
            next_n,
            now,
            &status,
            journaled_status,
        ));
    }
}

/// A status event replacing `from` (the journal's status of the saga).
fn status_event(
    saga_id: Arc<str>,
    n: u32,
    at_ms: u64,
    status: &SagaStatus,
    from: &'static str,
) -> Record {
    Record::Event {
        saga_id,
        n,
        at_ms,
        kind: EventKind::Status {
            status: status.name(),
            reason: status.reason().map(str::to_owned),
            ended: status.is_terminal(),
            from,
        },
    }
}

fn new_live(
    id: Arc<str>,
    def: Arc<Definition>,
    input: Value,
    started_ms: u64,
    next_n: u32,
) -> Live {
    let ctx = ReplayContext::new(&id, started_ms);
    let saga_ctx = ctx.clone();
    let saga_def = def.clone();
    let fut: SagaFuture = Box::pin(async move { run_saga(&saga_ctx, &saga_def.def, &input).await });
    Live {
        id,
        def,
        ctx,
        fut,
        started_ms,
        next_n,
        journaled_status: "running",
        inflight: None,
        parked: false,
        breaker_wait: false,
    }
}

fn take_commands<A>(live: &mut Live, actions: &mut Vec<Action<A>>) {
    for command in live.ctx.take_commands() {
        match command {
            Command::Activity { seq, call } => {
                live.inflight = Some((
                    seq,
                    CallMeta {
                        step: call.step.clone(),
                        activity: call.activity.clone(),
                        phase: call.phase,
                        attempt: call.attempt,
                    },
                ));
                actions.push(Action::Dispatch {
                    saga_id: live.id.clone(),
                    seq,
                    call,
                });
            }
            Command::Timer { seq, fire_at_ms } => actions.push(Action::Timer {
                fire_at_ms,
                saga_id: live.id.clone(),
                seq,
            }),
            Command::WaitSignal => {}
        }
    }
}

#[cfg(test)]
mod tests;
