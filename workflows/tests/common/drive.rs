//! Driving the interpreter with no runtime: a scripted provider answers
//! each activity call, timers fire at once; and replaying what a drive
//! recorded, prefix by prefix.

use sagaflow_workflows::{
    run_saga, ActivityCall, ActivityError, Command, DependencyWait, Finished, Phase, ReplayContext,
    Resolution, SagaDef, SagaStatus, Signal, Stage,
};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// One recorded event, in the order the live run saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Operation `seq` resolved.
    Resolved(u32, Resolution),
    /// An operator command arrived at this time.
    Signalled(Signal, u64),
}

#[derive(Debug, Default)]
pub struct Run {
    /// (activity, phase, attempt) in the order they were asked for.
    pub calls: Vec<(String, Phase, u32)>,
    /// Every timer delay asked for.
    pub delays: Vec<u64>,
    /// Every event fed in, in order.
    pub history: Vec<Event>,
    /// Signals delivered, with the time.
    pub signals: Vec<(Signal, u64)>,
    /// Status changes, in order.
    pub statuses: Vec<SagaStatus>,
    /// The final status (terminal, or where it stopped).
    pub end: Option<SagaStatus>,
    /// What the saga reported as its work ended (every run traces, so
    /// every test also checks that tracing changes no decision).
    pub finished: Vec<Finished>,
}

/// Drives the saga: each activity call is answered by `answer`, each timer
/// fires at its deadline, each signal wait takes the next of `signals`
/// (stopping when there are none: the saga stays parked).
pub fn drive(
    def: &SagaDef,
    answer: impl FnMut(&ActivityCall) -> Result<Value, ActivityError>,
    signals: &[Signal],
) -> Run {
    drive_with(def, answer, signals, |_, _| None)
}

/// [`drive`], where `interrupt(command, stage)` may deliver a command
/// instead of carrying out an activity or timer command: for an activity,
/// the command arrives while it runs (the result follows); a timer is left
/// unfired, as when the command arrives first.
pub fn drive_with(
    def: &SagaDef,
    mut answer: impl FnMut(&ActivityCall) -> Result<Value, ActivityError>,
    signals: &[Signal],
    mut interrupt: impl FnMut(&Command, &Stage) -> Option<Signal>,
) -> Run {
    let ctx = ReplayContext::new("saga-1", 1_000);
    ctx.set_traced(true);
    let order = json!({"order_id": "saga-1"});
    let mut fut = pin!(run_saga(&ctx, def, &order));
    let mut cx = Context::from_waker(Waker::noop());
    let mut run = Run::default();
    let mut signals = signals.iter();
    let mut clock = 1_000;
    let mut pending = Vec::new();
    loop {
        let poll = fut.as_mut().poll(&mut cx);
        if let Some(s) = ctx.take_status_change() {
            run.statuses.push(s);
        }
        ctx.take_finished(|f| run.finished.push(f));
        assert_eq!(ctx.divergence(), None);
        if let Poll::Ready(outcome) = poll {
            run.end = Some(outcome.status);
            return run;
        }
        pending.extend(ctx.take_commands());
        assert!(
            !pending.is_empty(),
            "a pending saga must be waiting on something"
        );
        let c = pending.remove(0);
        if !matches!(c, Command::WaitSignal) {
            if let Some(signal) = interrupt(&c, &ctx.stage()) {
                clock += 1;
                run.signals.push((signal.clone(), clock));
                run.history.push(Event::Signalled(signal.clone(), clock));
                ctx.push_signal(signal, clock);
                if matches!(c, Command::Activity { .. }) {
                    // Still running: its result comes after the signal.
                    pending.insert(0, c);
                }
                continue;
            }
        }
        match c {
            Command::Activity { seq, call } => {
                run.calls
                    .push((call.activity.clone(), call.phase, call.attempt));
                assert!(call.idempotency_key.starts_with("saga-1/"));
                assert_eq!(call.input["saga_id"], "saga-1");
                clock += 1;
                let r = Resolution::Activity {
                    activity: call.activity.clone(),
                    result: answer(&call),
                    at_ms: clock,
                };
                run.history.push(Event::Resolved(seq, r.clone()));
                ctx.resolve(seq, r);
            }
            Command::Timer { seq, fire_at_ms } => {
                run.delays.push(fire_at_ms - clock);
                clock = fire_at_ms;
                let r = Resolution::Timer { at_ms: fire_at_ms };
                run.history.push(Event::Resolved(seq, r.clone()));
                ctx.resolve(seq, r);
            }
            Command::WaitSignal => match signals.next() {
                Some(s) => {
                    clock += 1;
                    run.signals.push((s.clone(), clock));
                    run.history.push(Event::Signalled(s.clone(), clock));
                    ctx.push_signal(s.clone(), clock);
                }
                None => {
                    run.end = Some(ctx.status());
                    return run;
                }
            },
        }
    }
}

pub fn ok(call: &ActivityCall) -> Result<Value, ActivityError> {
    Ok(match call.activity.as_str() {
        "payment.authorize" => json!({"kind": "authorization", "payment_intent": "pi_1"}),
        _ => json!({}),
    })
}

pub fn names(run: &Run) -> Vec<String> {
    run.calls
        .iter()
        .map(|(a, p, _)| match p {
            Phase::Action => a.clone(),
            Phase::Compensation => format!("undo:{a}"),
        })
        .collect()
}

/// Feeds a recorded history into a fresh context one event at a time,
/// polling after each as the engine does, and returns the end (if reached),
/// the commands still outstanding and the status.
pub fn replay(def: &SagaDef, history: &[Event]) -> (Option<SagaStatus>, Vec<Command>, SagaStatus) {
    let ctx = ReplayContext::new("saga-1", 1_000);
    let order = json!({"order_id": "saga-1"});
    let mut fut = pin!(run_saga(&ctx, def, &order));
    let mut cx = Context::from_waker(Waker::noop());
    let mut poll = fut.as_mut().poll(&mut cx);
    for event in history {
        match event {
            Event::Resolved(seq, r) => ctx.resolve(*seq, r.clone()),
            Event::Signalled(s, at) => ctx.push_signal(s.clone(), *at),
        }
        poll = fut.as_mut().poll(&mut cx);
    }
    assert_eq!(ctx.divergence(), None);
    let done = match poll {
        Poll::Ready(o) => Some(o.status),
        Poll::Pending => None,
    };
    (done, ctx.take_commands(), ctx.status())
}

/// Every prefix of `run`'s history, replayed one event at a time, asks for
/// exactly the operation the live run did next, and the whole history ends
/// where the run ended.
pub fn every_prefix_replays(def: &SagaDef, run: &Run) {
    let (done, commands, status) = replay(def, &run.history);
    assert_eq!(Some(status), run.end);
    if done.is_some() {
        assert!(commands.is_empty(), "{commands:?}");
    }
    for cut in 0..run.history.len() {
        let (done, commands, _) = replay(def, &run.history[..cut]);
        assert_eq!(done, None, "not ended after {cut} events");
        let next = &run.history[cut];
        match next {
            Event::Resolved(seq, Resolution::Activity { activity, .. }) => assert!(
                commands.iter().any(|c| matches!(c, Command::Activity { seq: s, call } if s == seq && &call.activity == activity)),
                "after {cut} events: {commands:?}, next {next:?}"
            ),
            Event::Resolved(seq, Resolution::Timer { at_ms }) => assert!(
                commands.iter().any(|c| matches!(c, Command::Timer { seq: s, fire_at_ms } if s == seq && fire_at_ms == at_ms)),
                "after {cut} events: {commands:?}, next {next:?}"
            ),
            Event::Signalled(..) => {}
        }
    }
}

/// The attempt numbers of every call of `activity`, in order.
pub fn attempts_of(run: &Run, activity: &str) -> Vec<u32> {
    run.calls
        .iter()
        .filter(|(a, _, _)| a == activity)
        .map(|(_, _, attempt)| *attempt)
        .collect()
}

pub fn refused(dependency: &str, retry_after_ms: u64) -> ActivityError {
    ActivityError::breaker_open(DependencyWait {
        dependency: dependency.into(),
        since_ms: 1_000,
        retry_after_ms,
    })
}
