//! A [`SagaContext`] driven by recorded events: "history in, commands out".
//!
//! The embedded engine and the unit tests drive a saga the same way: build a
//! [`ReplayContext`], feed it the recorded events ([`Resolution`]s and
//! operator signals) one at a time in their recorded order, polling the
//! saga future after each (exactly as the events were applied live), then
//! take the [`Command`]s it asked for. Nothing here does I/O.
//!
//! Invariants:
//! - every durable operation (activity attempt, timer) gets the next
//!   sequence number when the saga first awaits it, so the same saga code
//!   over the same history numbers its operations the same way;
//! - a command is withdrawn when its operation is resolved, so after a
//!   replay only the operations still outstanding are asked for;
//! - an operator signal is seen where it was delivered: a cancel that
//!   arrived during a timer is seen by the timer, not by the step before
//!   it, because the replay polls between events as the live run did;
//! - "now" only moves when the saga observes a recorded event (start,
//!   result, timer, signal), so it replays identically;
//! - a recorded resolution for a different activity than the saga asks for
//!   is a divergence: the operation never completes and [`ReplayContext::divergence`]
//!   says why.

use crate::context::{ActivityCall, ActivityError, SagaContext, Signal, Stage};
use crate::finished::Finished;
use crate::status::SagaStatus;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::Poll;

/// A recorded outcome of a durable operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// An activity attempt finished.
    Activity {
        /// The activity that ran (checked against what the saga asks for).
        activity: String,
        /// Its output or error.
        result: Result<Value, ActivityError>,
        /// When the result was recorded (ms since the epoch).
        at_ms: u64,
    },
    /// A durable timer fired.
    Timer {
        /// When it fired.
        at_ms: u64,
    },
}

/// Something the saga asked the engine to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run an activity attempt; resolve `seq` with its result.
    Activity {
        /// Operation sequence number.
        seq: u32,
        /// What to run.
        call: ActivityCall,
    },
    /// Resolve `seq` at `fire_at_ms`.
    Timer {
        /// Operation sequence number.
        seq: u32,
        /// Deterministic deadline (ms since the epoch).
        fire_at_ms: u64,
    },
    /// The saga waits for an operator signal.
    WaitSignal,
}

#[derive(Debug)]
struct State {
    now_ms: u64,
    next_seq: u32,
    slots: Vec<Option<Resolution>>,
    signals: VecDeque<(Signal, u64)>,
    commands: Vec<Command>,
    status: SagaStatus,
    status_changed: bool,
    stage: Stage,
    /// The operation the saga awaits (numbered, not yet resolved).
    outstanding: Option<u32>,
    divergence: Option<String>,
    /// Whether the engine wants reports of ended work, and those not yet
    /// taken.
    traced: bool,
    finished: Vec<Finished>,
}

/// A cheap, clonable handle: the engine keeps one, the saga future owns
/// another.
#[derive(Debug, Clone)]
pub struct ReplayContext {
    saga_id: Rc<str>,
    state: Rc<RefCell<State>>,
}

impl ReplayContext {
    /// A context for a saga that started at `started_at_ms`.
    pub fn new(saga_id: &str, started_at_ms: u64) -> Self {
        ReplayContext {
            saga_id: Rc::from(saga_id),
            state: Rc::new(RefCell::new(State {
                now_ms: started_at_ms,
                next_seq: 0,
                slots: Vec::new(),
                signals: VecDeque::new(),
                commands: Vec::new(),
                status: SagaStatus::Running,
                status_changed: false,
                stage: Stage::default(),
                outstanding: None,
                divergence: None,
                traced: false,
                finished: Vec::new(),
            })),
        }
    }

    /// Records the outcome of operation `seq`. The saga sees it when next
    /// polled. A command for `seq` not yet taken is withdrawn: replaying a
    /// history one event at a time leaves only the operations still
    /// outstanding at its end.
    ///
    /// A recorded result of another activity than the withdrawn command
    /// asked for is a divergence, and the operation stays pending. (A result
    /// recorded before the saga asked is checked when it asks; a result of
    /// a command already taken is the engine's answer to that very command.)
    pub fn resolve(&self, seq: u32, resolution: Resolution) {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let mut diverged = None;
        st.commands.retain(|c| match c {
            Command::Activity { seq: s, call } if *s == seq => {
                if let Resolution::Activity { activity, .. } = &resolution {
                    if *activity != call.activity {
                        diverged = Some(divergence(seq, activity, &call.activity));
                    }
                }
                false
            }
            Command::Activity { seq: s, .. } | Command::Timer { seq: s, .. } => *s != seq,
            Command::WaitSignal => true,
        });
        if diverged.is_some() {
            st.divergence = diverged;
            return;
        }
        let i = seq as usize;
        if st.slots.len() <= i {
            st.slots.resize(i + 1, None);
        }
        st.slots[i] = Some(resolution);
    }

    /// Queues an operator signal received at `at_ms`. A saga waiting for
    /// one no longer needs its `WaitSignal` announced.
    pub fn push_signal(&self, signal: Signal, at_ms: u64) {
        let mut st = self.state.borrow_mut();
        st.commands.retain(|c| !matches!(c, Command::WaitSignal));
        st.signals.push_back((signal, at_ms));
    }

    /// Takes the commands emitted since the last call.
    pub fn take_commands(&self) -> Vec<Command> {
        std::mem::take(&mut self.state.borrow_mut().commands)
    }

    /// Moves the commands emitted since the last call into `out`.
    pub fn drain_commands_into(&self, out: &mut Vec<Command>) {
        out.append(&mut self.state.borrow_mut().commands);
    }

    /// The status, if the saga changed it since the last call.
    pub fn take_status_change(&self) -> Option<SagaStatus> {
        let mut st = self.state.borrow_mut();
        if std::mem::take(&mut st.status_changed) {
            Some(st.status.clone())
        } else {
            None
        }
    }

    /// The saga's current status.
    pub fn status(&self) -> SagaStatus {
        self.state.borrow().status.clone()
    }

    /// True while the saga awaits operation `seq`: false once it has been
    /// resolved, or abandoned (a timer a signal cut short). The engine
    /// drops a late result for an operation nobody awaits.
    pub fn awaits(&self, seq: u32) -> bool {
        self.state.borrow().outstanding == Some(seq)
    }

    /// Where the saga stands, for checking operator commands.
    pub fn stage(&self) -> Stage {
        self.state.borrow().stage
    }

    /// Asks the saga for reports of its ended work ([`Finished`]), or
    /// stops asking.
    pub fn set_traced(&self, on: bool) {
        self.state.borrow_mut().traced = on;
    }

    /// Hands the reports of ended work since the last call to `f`, oldest
    /// first.
    pub fn take_finished(&self, f: impl FnMut(Finished)) {
        let taken = std::mem::take(&mut self.state.borrow_mut().finished);
        taken.into_iter().for_each(f);
    }

    /// Why replay diverged from the recorded history, if it did.
    pub fn divergence(&self) -> Option<String> {
        self.state.borrow().divergence.clone()
    }
}

impl State {
    /// The next queued signal; "now" moves to when it arrived.
    fn take_signal(&mut self) -> Option<Signal> {
        let (signal, at_ms) = self.signals.pop_front()?;
        self.now_ms = self.now_ms.max(at_ms);
        Some(signal)
    }

    /// Operation `seq` is no longer awaited.
    fn settle(&mut self, seq: u32) {
        if self.outstanding == Some(seq) {
            self.outstanding = None;
        }
    }

    /// On an operation's first poll: numbers it and, when the history holds
    /// no resolution for it, emits the command `emit` builds and returns
    /// `None` (pending). On later polls: returns its number.
    fn operation(
        &mut self,
        seq: &mut Option<u32>,
        emit: impl FnOnce(u32, &State) -> Command,
    ) -> Option<u32> {
        if let Some(s) = *seq {
            return Some(s);
        }
        let s = self.next_seq;
        self.next_seq += 1;
        *seq = Some(s);
        self.outstanding = Some(s);
        if self.slots.get(s as usize).is_none_or(Option::is_none) {
            let command = emit(s, self);
            self.commands.push(command);
            return None;
        }
        Some(s)
    }
}

impl SagaContext for ReplayContext {
    fn saga_id(&self) -> &str {
        &self.saga_id
    }

    fn now_ms(&self) -> u64 {
        self.state.borrow().now_ms
    }

    fn call_activity(
        &self,
        call: ActivityCall,
    ) -> impl Future<Output = Result<Value, ActivityError>> {
        let mut seq = None;
        let mut call = Some(call);
        poll_fn(move |_| {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            let Some(s) = st.operation(&mut seq, |s, _| Command::Activity {
                seq: s,
                call: call.take().expect("a call is emitted once"),
            }) else {
                return Poll::Pending;
            };
            let slot = st.slots.get_mut(s as usize).and_then(Option::take);
            match slot {
                None => Poll::Pending,
                Some(Resolution::Activity {
                    activity,
                    result,
                    at_ms,
                }) => {
                    // Only when the result was recorded before the saga
                    // asked: `resolve` checked the ones that came after.
                    if let Some(wanted) = call.as_ref().map(|c| &c.activity) {
                        if *wanted != activity {
                            st.divergence = Some(divergence(s, &activity, wanted));
                            return Poll::Pending;
                        }
                    }
                    st.now_ms = st.now_ms.max(at_ms);
                    st.settle(s);
                    Poll::Ready(result)
                }
                Some(other) => {
                    st.divergence = Some(format!(
                        "operation {s}: the history has {other:?} but the saga runs an activity"
                    ));
                    Poll::Pending
                }
            }
        })
    }

    fn sleep_or_signal(&self, delay_ms: u64) -> impl Future<Output = Option<Signal>> {
        let mut seq = None;
        poll_fn(move |_| {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            // A command waiting: no timer at all, or the one started is
            // abandoned (its command withdrawn if not yet taken).
            if let Some(signal) = st.take_signal() {
                if let Some(s) = seq {
                    st.settle(s);
                    st.commands
                        .retain(|c| !matches!(c, Command::Timer { seq, .. } if *seq == s));
                }
                return Poll::Ready(Some(signal));
            }
            let Some(s) = st.operation(&mut seq, |s, st| Command::Timer {
                seq: s,
                fire_at_ms: st.now_ms + delay_ms,
            }) else {
                return Poll::Pending;
            };
            match st.slots.get_mut(s as usize).and_then(Option::take) {
                None => Poll::Pending,
                Some(Resolution::Timer { at_ms }) => {
                    st.now_ms = st.now_ms.max(at_ms);
                    st.settle(s);
                    Poll::Ready(None)
                }
                Some(other) => {
                    st.divergence = Some(format!(
                        "operation {s}: the history has {other:?} but the saga waits on a timer"
                    ));
                    Poll::Pending
                }
            }
        })
    }

    fn wait_signal(&self) -> impl Future<Output = Signal> {
        let mut announced = false;
        poll_fn(move |_| {
            let mut st = self.state.borrow_mut();
            if let Some(signal) = st.take_signal() {
                return Poll::Ready(signal);
            }
            if !announced {
                announced = true;
                st.commands.push(Command::WaitSignal);
            }
            Poll::Pending
        })
    }

    fn try_signal(&self) -> Option<Signal> {
        self.state.borrow_mut().take_signal()
    }

    fn set_stage(&self, stage: &Stage) {
        self.state.borrow_mut().stage = *stage;
    }

    fn traced(&self) -> bool {
        self.state.borrow().traced
    }

    fn finished(&self, work: Finished) {
        self.state.borrow_mut().finished.push(work);
    }

    fn set_status(&self, status: SagaStatus) {
        let mut st = self.state.borrow_mut();
        if st.status != status {
            st.status = status;
            st.status_changed = true;
        }
    }
}

/// Why a recorded result does not fit the saga: it is of another activity.
fn divergence(seq: u32, recorded: &str, wanted: &str) -> String {
    format!(
        "operation {seq}: the history has a result of {recorded} but the saga asks for {wanted}"
    )
}
