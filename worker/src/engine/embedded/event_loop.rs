//! The engine core's thread loop: it owns the [`State`], feeds it messages,
//! hands the records to the journal writer and carries out what was
//! decided once the writer says it is durable.
//!
//! Each round the loop takes every message waiting (start requests,
//! activity results, signals, commit reports) and every timer due, applies
//! them ([`State::apply`]), and sends the round's records to the writer as
//! one batch. The round's actions (run an activity, arm a timer, acknowledge
//! a start, report an end) wait beside the batch and are carried out only
//! when the writer reports it committed: deciding happens at once, doing
//! waits for durability. A round that wrote nothing runs its actions behind
//! the last batch still pending, so actions keep their order.
//!
//! Only this loop reads the clock for the state (`now_ms` per message) and
//! only it may stop the process (`Action::Stop`, after a failed commit).

use super::api::{Ack, Ended, Msg};
use super::dispatch::Dispatcher;
use super::journal::Batch;
use super::journal_ids::JournalIds;
use super::state::{Action, Effects, Input, Observed, Recovered, State};
use sagaflow_activities::clock::now_ms;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages applied in one round, at most (then the round is committed).
const MAX_ROUND: usize = 4096;

/// The core thread's state: the state machine plus what the loop does.
pub(crate) struct Core {
    state: State,
    round: Effects<Ack>,
    /// Batches sent to the writer, with the actions waiting for them.
    pending: VecDeque<(u64, Vec<Action<Ack>>)>,
    next_batch: u64,
    batches: Sender<Batch>,
    timers: BinaryHeap<Reverse<(u64, Arc<str>, u32)>>,
    dispatcher: Dispatcher,
    /// Answers for saga ids the state does not hold (duplicate starts).
    ids: JournalIds,
    /// Sagas whose last records are committed, let go of between rounds
    /// (after the round's journal snapshot: see `journal_ids.rs`).
    forget: Vec<Arc<str>>,
    ended: Option<tokio::sync::mpsc::UnboundedSender<Ended>>,
    live: Arc<AtomicUsize>,
    stopping: bool,
}

impl Core {
    /// A core over `state`; records go to `batches`, ends to `ended`, the
    /// number of sagas in progress (live, not parked, not waiting for a
    /// breaker) to `live`; `ids` says which other sagas the journal holds.
    pub(crate) fn new(
        state: State,
        dispatcher: Dispatcher,
        ids: JournalIds,
        batches: Sender<Batch>,
        ended: Option<tokio::sync::mpsc::UnboundedSender<Ended>>,
        live: Arc<AtomicUsize>,
    ) -> Core {
        Core {
            state,
            round: Effects::default(),
            pending: VecDeque::new(),
            next_batch: 0,
            batches,
            timers: BinaryHeap::new(),
            dispatcher,
            ids,
            forget: Vec::new(),
            ended,
            live,
            stopping: false,
        }
    }

    /// Applies every recovered saga (before any message) and commits.
    pub(crate) fn recover(&mut self, open: Vec<Recovered>) {
        for saga in open {
            self.state
                .apply(Input::Recover(Box::new(saga)), now_ms(), &mut self.round);
        }
        self.live.store(self.state.in_progress(), Ordering::Relaxed);
        self.flush();
    }

    /// Runs until shut down (and every pending commit is carried out) or
    /// every sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let wait = self
                .timers
                .peek()
                .map(|Reverse((at, _, _))| Duration::from_millis(at.saturating_sub(now_ms())))
                .unwrap_or(Duration::from_millis(500))
                .min(Duration::from_millis(500));
            match rx.recv_timeout(wait) {
                Ok(m) => self.handle(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let deadline = Instant::now() + Duration::from_millis(2);
            for _ in 0..MAX_ROUND {
                match rx.try_recv() {
                    Ok(m) => self.handle(m),
                    Err(_) => break,
                }
                if Instant::now() > deadline {
                    break;
                }
            }
            self.fire_due_timers();
            self.end_round();
            self.flush();
            self.live.store(self.state.in_progress(), Ordering::Relaxed);
            if self.stopping && self.pending.is_empty() {
                break;
            }
        }
    }

    /// Applies one message.
    fn handle(&mut self, msg: Msg) {
        let mut input = match msg {
            Msg::Apply(input) => input,
            Msg::Committed(ids) => return self.committed(&ids),
            Msg::Shutdown => {
                self.stopping = true;
                return;
            }
        };
        if let Err(e) = self.look_up(&mut input) {
            // Starting it could duplicate a saga, acknowledging it could
            // lose an order: neither is safe. Unacknowledged, the start is
            // asked for again after the restart.
            return self.carry_out(Action::Stop {
                why: format!("the journal could not be read to check a saga id: {e}"),
            });
        }
        self.state.apply(input, now_ms(), &mut self.round);
        // A stop decided now must not wait for a commit that will not come.
        if let Some(i) = self
            .round
            .actions
            .iter()
            .position(|a| matches!(a, Action::Stop { .. }))
        {
            let stop = self.round.actions.swap_remove(i);
            self.carry_out(stop);
        }
    }

    /// Ends the round's journal snapshot, then lets go of the sagas whose
    /// records were committed: the next round's lookups find them.
    fn end_round(&mut self) {
        if let Err(e) = self.ids.end_round() {
            return self.carry_out(Action::Stop {
                why: format!("the journal could not be read to check saga ids: {e}"),
            });
        }
        for id in self.forget.drain(..) {
            self.state.forget(&id);
        }
    }

    /// Tells a start whether the journal holds its saga, when the state
    /// does not know the id itself.
    fn look_up(&mut self, input: &mut Input<Ack>) -> rusqlite::Result<()> {
        let (id, journaled) = match input {
            Input::Start {
                saga_id, journaled, ..
            } => (saga_id.as_str(), journaled),
            Input::StartFromInbox {
                start: Ok(start),
                journaled,
                ..
            } => (start.0.saga_id.as_str(), journaled),
            _ => return Ok(()),
        };
        if !self.state.knows(id) {
            *journaled = self.ids.contains(id)?;
        }
        Ok(())
    }

    fn fire_due_timers(&mut self) {
        let now = now_ms();
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Reverse((at, saga_id, seq)) = self.timers.pop().expect("peeked");
            let fired = Input::TimerFired {
                saga_id,
                seq,
                at_ms: at.max(now),
            };
            self.state.apply(fired, now, &mut self.round);
        }
    }

    /// Ends the round: records go to the writer; actions wait for them.
    fn flush(&mut self) {
        let mut round = std::mem::take(&mut self.round);
        // The metrics learn what the round decided when it is durable, so
        // they never count a start or a park the journal lost.
        round
            .actions
            .extend(round.observed.drain(..).map(Action::Observe));
        if round.records.is_empty() {
            if round.actions.is_empty() {
                return;
            }
            match self.pending.back_mut() {
                Some((_, later)) => later.extend(round.actions),
                None => {
                    for a in round.actions {
                        self.carry_out(a);
                    }
                }
            }
            return;
        }
        self.next_batch += 1;
        let id = self.next_batch;
        let batch = Batch {
            id,
            records: round.records,
        };
        if self.batches.send(batch).is_err() {
            self.carry_out(Action::Stop {
                why: "the journal writer stopped".into(),
            });
        }
        self.pending.push_back((id, round.actions));
    }

    fn committed(&mut self, ids: &[u64]) {
        let Some(&last) = ids.iter().max() else {
            return;
        };
        while self.pending.front().is_some_and(|(id, _)| *id <= last) {
            let (_, actions) = self.pending.pop_front().expect("checked");
            for a in actions {
                self.carry_out(a);
            }
        }
    }

    fn carry_out(&mut self, action: Action<Ack>) {
        match action {
            // Stopping: no new work, so the pending commits drain. What is
            // not dispatched now is re-dispatched by recovery.
            Action::Dispatch { .. } | Action::Timer { .. } if self.stopping => {}
            Action::Dispatch { saga_id, seq, call } => self.dispatcher.dispatch(saga_id, seq, call),
            Action::Timer {
                fire_at_ms,
                saga_id,
                seq,
            } => self.timers.push(Reverse((fire_at_ms, saga_id, seq))),
            Action::Ack(ack, outcome) => {
                let _ = ack.send(outcome);
            }
            Action::Ended(e) => {
                let took = Duration::from_millis(now_ms().saturating_sub(e.started_ms));
                crate::metrics::global().saga_ended(&e.saga, e.status.name(), took);
                if let Some(tx) = &self.ended {
                    let _ = tx.send(e);
                }
            }
            Action::Observe(Observed::Started { saga }) => {
                crate::metrics::global().saga_started(&saga);
            }
            Action::Observe(Observed::Parked { saga, step, phase }) => {
                crate::metrics::global().saga_parked(&saga, &step, phase);
            }
            Action::Observe(Observed::Finished(work)) => crate::telemetry::record(&work),
            Action::Forget(saga_id) => self.forget.push(saga_id),
            Action::Stop { why } => {
                // Memory may be ahead of disk: only recovery from the
                // journal can continue safely.
                eprintln!("sagaflow: {why}; exiting so that recovery can resume");
                std::process::exit(70);
            }
        }
    }
}
