//! The state machine, message by message, with no runtime: history in,
//! records and actions out.

use super::*;
use crate::engine::command::{CommandRequest, StartRequest};
use crate::engine::embedded::journal::EventKind;
use crate::engine::view::AttemptBody;
use sagaflow_workflows::{RetryPolicy, SagaDef, StepDef};
use serde_json::json;

const NOW: u64 = 1_000_000;

/// `reserve` (compensated by `release`), `charge` (the pivot), then
/// `ship`, which is tried once before the saga parks.
fn def() -> Arc<Definition> {
    let once = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    Definition::new(SagaDef {
        name: "checkout".into(),
        steps: vec![
            StepDef {
                name: "reserve".into(),
                action: "stock.reserve".into(),
                compensation: Some("stock.release".into()),
                timeout_ms: 1_000,
                compensation_timeout_ms: None,
                max_wait_ms: None,
                settle_ms: None,
                retry: RetryPolicy {
                    max_attempts: 3,
                    ..RetryPolicy::default()
                },
            },
            StepDef {
                name: "charge".into(),
                action: "payment.capture".into(),
                compensation: None,
                timeout_ms: 1_000,
                compensation_timeout_ms: None,
                max_wait_ms: None,
                settle_ms: None,
                retry: RetryPolicy::default(),
            },
            StepDef {
                name: "ship".into(),
                action: "stock.commit".into(),
                compensation: None,
                timeout_ms: 1_000,
                compensation_timeout_ms: None,
                max_wait_ms: None,
                settle_ms: None,
                retry: once,
            },
        ],
        pivot: Some(1),
        compensation_retry: RetryPolicy::default(),
    })
}

fn fresh() -> State {
    State::new(HashSet::new())
}

fn apply(state: &mut State, input: Input<u32>) -> Effects<u32> {
    let mut out = Effects::default();
    state.apply(input, NOW, &mut out);
    out
}

fn start(state: &mut State, id: &str, ack: u32) -> Effects<u32> {
    start_as(state, id, ack, false)
}

/// A start the core loop found (`journaled`) or did not find in the journal.
fn start_as(state: &mut State, id: &str, ack: u32, journaled: bool) -> Effects<u32> {
    apply(
        state,
        Input::Start {
            saga_id: id.into(),
            def: def(),
            input: json!({"order_id": id}),
            ack: Some(ack),
            journaled,
        },
    )
}

fn done(id: &str, seq: u32, result: Result<Value, ActivityError>) -> Input<u32> {
    Input::ActivityDone {
        saga_id: Arc::from(id),
        seq,
        started_ms: NOW,
        finished_ms: NOW + 1,
        result,
    }
}

/// (n, kind) of each event record; other records as ("saga" | "definition" | "drop").
fn records(out: &Effects<u32>) -> Vec<(Option<u32>, String)> {
    out.records
        .iter()
        .map(|r| match r {
            Record::Event { n, kind, .. } => (Some(*n), kind.encode().0.to_owned()),
            Record::NewSaga { .. } => (None, "saga".into()),
            Record::Definition { .. } => (None, "definition".into()),
            Record::DropSignal { .. } => (None, "drop".into()),
            Record::Applied(_) => (None, "applied".into()),
        })
        .collect()
}

/// A short name for each action: "dispatch SEQ ACTIVITY#ATTEMPT",
/// "timer SEQ", "ack N started|duplicate", "ended STATUS", "stop"
/// (`Forget` is left out: [`forgotten`] lists those).
fn actions(out: &Effects<u32>) -> Vec<String> {
    out.actions
        .iter()
        .filter(|a| !matches!(a, Action::Forget(_)))
        .map(|a| match a {
            Action::Dispatch { seq, call, .. } => {
                format!("dispatch {seq} {}#{}", call.activity, call.attempt)
            }
            Action::Timer { seq, .. } => format!("timer {seq}"),
            Action::Ack(n, StartOutcome::Started) => format!("ack {n} started"),
            Action::Ack(n, StartOutcome::Duplicate) => format!("ack {n} duplicate"),
            Action::Ended(e) => format!("ended {}", e.status.name()),
            Action::Stop { .. } => "stop".into(),
            Action::Observe(o) => format!("observe {o:?}"),
            Action::Forget(_) => unreachable!("filtered"),
        })
        .collect()
}

/// The sagas the state lets go of once the round is committed.
fn forgotten(out: &Effects<u32>) -> Vec<String> {
    out.actions
        .iter()
        .filter_map(|a| match a {
            Action::Forget(id) => Some(id.to_string()),
            _ => None,
        })
        .collect()
}

fn cmd(signal: Signal) -> CommandRequest {
    CommandRequest {
        signal,
        audit: crate::engine::command::Audit {
            operator: "alice".into(),
            reason: "test".into(),
            bulk: None,
        },
    }
}

fn command(id: &str, signal: Signal, inbox_id: i64) -> Input<u32> {
    Input::Signal {
        saga_id: id.into(),
        command: Ok(cmd(signal)),
        inbox_id,
    }
}

/// The reason of the one refusal in `out`.
fn refusal(out: &Effects<u32>) -> String {
    match out.records.as_slice() {
        [Record::DropSignal { why, .. }] => why.clone(),
        other => panic!("expected one refusal, got {other:?}"),
    }
}

fn ev(n: u32, kind: EventKind) -> (u32, u64, Result<EventKind, String>) {
    (n, NOW, Ok(kind))
}

fn attempt(
    seq: u32,
    step: &str,
    activity: &str,
    result: Result<Value, ActivityError>,
) -> EventKind {
    let (output, error) = match result {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    };
    EventKind::Attempt {
        seq,
        body: AttemptBody {
            step: step.into(),
            activity: activity.into(),
            phase: Phase::Action,
            attempt: 1,
            started_ms: NOW,
            output,
            error,
        },
    }
}

fn recovered(events: Vec<(u32, u64, Result<EventKind, String>)>) -> Input<u32> {
    Input::Recover(Box::new(Recovered {
        id: "o1".into(),
        created_ms: NOW,
        def: Ok(def()),
        input: Ok(json!({"order_id": "o1"})),
        events,
    }))
}

#[test]
fn a_start_journals_the_saga_and_asks_for_its_first_step_after_the_commit() {
    let mut state = fresh();
    let out = start(&mut state, "o1", 7);
    assert_eq!(
        records(&out),
        vec![
            (None, "definition".into()),
            (None, "saga".into()),
            (Some(0), "started".into())
        ]
    );
    assert_eq!(
        actions(&out),
        vec!["ack 7 started", "dispatch 0 stock.reserve#1"]
    );
    assert_eq!(state.live(), 1);
    // The definition is written once.
    let second = start(&mut state, "o2", 8);
    assert_eq!(records(&second)[0], (None, "saga".into()));
}

#[test]
fn a_duplicate_start_is_acknowledged_and_writes_nothing() {
    let mut state = fresh();
    start(&mut state, "o1", 1);
    let out = start(&mut state, "o1", 2);
    assert!(out.records.is_empty());
    assert_eq!(actions(&out), vec!["ack 2 duplicate"]);
    // Ended sagas are known too (the core loop found it in the journal).
    let mut state = fresh();
    let out = start_as(&mut state, "old", 3, true);
    assert!(out.records.is_empty());
    assert_eq!(actions(&out), vec!["ack 3 duplicate"]);
}

#[test]
fn an_ended_saga_is_known_until_its_end_is_committed_then_the_journal_answers() {
    let mut state = fresh();
    start(&mut state, "o1", 1);
    apply(&mut state, done("o1", 0, Ok(json!({"reserved": 1}))));
    apply(&mut state, done("o1", 1, Ok(json!({"captured": true}))));
    let last = apply(&mut state, done("o1", 2, Ok(json!({}))));
    assert_eq!(actions(&last), vec!["ended completed"]);
    assert_eq!(forgotten(&last), vec!["o1"]);
    // The end is not committed yet: a journal lookup would miss the saga,
    // so the state answers for it.
    assert!(state.knows("o1"));
    let early = start(&mut state, "o1", 2);
    assert!(early.records.is_empty());
    assert_eq!(actions(&early), vec!["ack 2 duplicate"]);
    // Committed: memory holds nothing of it; the journal answers.
    state.forget("o1");
    assert!(!state.knows("o1"));
    assert_eq!(state.live(), 0);
    assert_eq!(
        actions(&start_as(&mut state, "o1", 3, true)),
        vec!["ack 3 duplicate"]
    );
    // Gone from the journal too (retention): a new saga of that id.
    assert_eq!(
        actions(&start(&mut state, "o1", 4)),
        vec!["ack 4 started", "dispatch 0 stock.reserve#1"]
    );
}

#[test]
fn a_result_is_journaled_and_the_next_step_is_asked_for() {
    let mut state = fresh();
    start(&mut state, "o1", 1);
    let out = apply(&mut state, done("o1", 0, Ok(json!({"reserved": 1}))));
    assert_eq!(records(&out), vec![(Some(1), "activity_completed".into())]);
    assert_eq!(actions(&out), vec!["dispatch 1 payment.capture#1"]);
    // A result for an operation not in flight changes nothing.
    let stale = apply(&mut state, done("o1", 0, Ok(json!({}))));
    assert!(stale.records.is_empty() && stale.actions.is_empty());
    apply(&mut state, done("o1", 1, Ok(json!({"captured": true}))));
    let last = apply(&mut state, done("o1", 2, Ok(json!({}))));
    assert_eq!(
        records(&last),
        vec![
            (Some(3), "activity_completed".into()),
            (Some(4), "status".into())
        ]
    );
    assert_eq!(actions(&last), vec!["ended completed"]);
    assert_eq!(state.live(), 0);
}

#[test]
fn a_retryable_failure_arms_a_timer_and_the_timer_retries() {
    let mut state = fresh();
    start(&mut state, "o1", 1);
    let out = apply(
        &mut state,
        done("o1", 0, Err(ActivityError::retryable("network", "reset"))),
    );
    assert_eq!(records(&out), vec![(Some(1), "activity_failed".into())]);
    assert_eq!(actions(&out), vec!["timer 1"]);
    let Action::Timer { fire_at_ms, .. } = &out.actions[0] else {
        unreachable!()
    };
    let out = apply(
        &mut state,
        Input::TimerFired {
            saga_id: Arc::from("o1"),
            seq: 1,
            at_ms: *fire_at_ms,
        },
    );
    assert_eq!(records(&out), vec![(Some(2), "timer_fired".into())]);
    assert_eq!(actions(&out), vec!["dispatch 2 stock.reserve#2"]);
}

#[test]
fn a_parked_saga_goes_on_when_an_operator_signals_retry() {
    let mut state = fresh();
    start(&mut state, "o1", 1);
    apply(&mut state, done("o1", 0, Ok(json!({}))));
    apply(&mut state, done("o1", 1, Ok(json!({}))));
    let parked = apply(
        &mut state,
        done("o1", 2, Err(ActivityError::retryable("redis", "down"))),
    );
    assert_eq!(
        records(&parked),
        vec![
            (Some(3), "activity_failed".into()),
            (Some(4), "status".into())
        ]
    );
    assert!(parked.actions.is_empty(), "it waits for an operator");
    assert_eq!(state.live(), 1, "a parked saga stays in memory");
    let out = apply(
        &mut state,
        Input::Signal {
            saga_id: "o1".into(),
            command: Ok(cmd(Signal::Retry)),
            inbox_id: 42,
        },
    );
    assert_eq!(records(&out)[0], (Some(5), "signal".into()));
    assert!(matches!(
        &out.records[0],
        Record::Event {
            kind: EventKind::Signal {
                inbox_id: Some(42),
                ..
            },
            ..
        }
    ));
    assert!(
        actions(&out).contains(&"dispatch 3 stock.commit#2".to_owned()),
        "{:?}",
        actions(&out)
    );
}

#[test]
fn a_signal_for_no_live_saga_drops_its_inbox_row() {
    let mut state = fresh();
    let out = apply(
        &mut state,
        Input::Signal {
            saga_id: "nobody".into(),
            command: Ok(cmd(Signal::Retry)),
            inbox_id: 5,
        },
    );
    assert_eq!(records(&out), vec![(None, "drop".into())]);
    assert!(out.actions.is_empty());
}

/// Before the fix a retry sent to a running saga was journaled and kept,
/// then spent unasked at the saga's next park.
#[test]
fn a_retry_for_a_saga_that_is_not_parked_is_refused_not_kept() {
    let mut state = fresh();
    start(&mut state, "o1", 1);
    let early = apply(
        &mut state,
        Input::Signal {
            saga_id: "o1".into(),
            command: Ok(cmd(Signal::Retry)),
            inbox_id: 7,
        },
    );
    assert_eq!(records(&early), vec![(None, "drop".into())]);
    assert!(early.actions.is_empty());

    apply(&mut state, done("o1", 0, Ok(json!({}))));
    apply(&mut state, done("o1", 1, Ok(json!({}))));
    let parked = apply(
        &mut state,
        done("o1", 2, Err(ActivityError::retryable("redis", "down"))),
    );
    assert_eq!(
        records(&parked),
        vec![
            (Some(3), "activity_failed".into()),
            (Some(4), "status".into())
        ],
        "it parks and stays parked: the early retry was not kept"
    );
    assert!(parked.actions.is_empty(), "{:?}", actions(&parked));
}

#[test]
fn a_failed_commit_stops_the_engine() {
    let mut state = fresh();
    let out = apply(
        &mut state,
        Input::CommitFailed {
            error: "disk I/O error".into(),
        },
    );
    assert!(out.records.is_empty());
    let Some(Action::Stop { why }) = out.actions.first() else {
        panic!("expected a stop, got {:?}", actions(&out))
    };
    assert!(
        why.contains("disk I/O error") && why.contains("recovery"),
        "{why}"
    );
}

#[test]
fn recovery_asks_again_for_an_activity_that_was_in_flight() {
    let mut state = fresh();
    let out = apply(&mut state, recovered(vec![ev(0, EventKind::Started)]));
    assert!(out.records.is_empty(), "nothing new to journal");
    assert_eq!(actions(&out), vec!["dispatch 0 stock.reserve#1"]);
    assert_eq!(state.live(), 1);
    // Its result then continues the numbering where the journal left off.
    let next = apply(&mut state, done("o1", 0, Ok(json!({}))));
    assert_eq!(records(&next), vec![(Some(1), "activity_completed".into())]);
}

#[test]
fn recovery_arms_a_timer_that_had_not_fired() {
    let mut state = fresh();
    let failed = attempt(
        0,
        "reserve",
        "stock.reserve",
        Err(ActivityError::retryable("network", "reset")),
    );
    let out = apply(
        &mut state,
        recovered(vec![ev(0, EventKind::Started), ev(1, failed)]),
    );
    assert!(out.records.is_empty());
    assert_eq!(actions(&out), vec!["timer 1"]);
}

/// The reason the interpreter gives when `ship` parks the saga.
fn parked_reason() -> String {
    let mut state = fresh();
    start(&mut state, "o1", 1);
    apply(&mut state, done("o1", 0, Ok(json!({}))));
    apply(&mut state, done("o1", 1, Ok(json!({}))));
    let out = apply(
        &mut state,
        done("o1", 2, Err(ActivityError::retryable("redis", "down"))),
    );
    match &out.records[1] {
        Record::Event {
            kind:
                EventKind::Status {
                    reason: Some(reason),
                    ..
                },
            ..
        } => reason.clone(),
        _ => panic!("ship parks the saga"),
    }
}

#[test]
fn recovery_keeps_a_parked_saga_waiting_for_its_signal() {
    let mut state = fresh();
    let events = vec![
        ev(0, EventKind::Started),
        ev(1, attempt(0, "reserve", "stock.reserve", Ok(json!({})))),
        ev(2, attempt(1, "charge", "payment.capture", Ok(json!({})))),
        ev(
            3,
            attempt(
                2,
                "ship",
                "stock.commit",
                Err(ActivityError::retryable("redis", "down")),
            ),
        ),
        ev(
            4,
            EventKind::Status {
                status: "parked",
                reason: Some(parked_reason()),
                ended: false,
                from: "",
            },
        ),
    ];
    let out = apply(&mut state, recovered(events));
    assert!(out.records.is_empty(), "its status is journaled already");
    assert!(out.actions.is_empty(), "{:?}", actions(&out));
    assert_eq!(state.live(), 1);
    let signal = apply(
        &mut state,
        Input::Signal {
            saga_id: "o1".into(),
            command: Ok(cmd(Signal::Retry)),
            inbox_id: 1,
        },
    );
    assert_eq!(records(&signal)[0], (Some(5), "signal".into()));
    assert!(actions(&signal).contains(&"dispatch 3 stock.commit#2".to_owned()));
}

#[test]
fn recovery_journals_a_decided_status_whose_commit_was_lost_and_reports_the_end() {
    let mut state = fresh();
    let events = vec![
        ev(0, EventKind::Started),
        ev(1, attempt(0, "reserve", "stock.reserve", Ok(json!({})))),
        ev(2, attempt(1, "charge", "payment.capture", Ok(json!({})))),
        ev(3, attempt(2, "ship", "stock.commit", Ok(json!({})))),
    ];
    let out = apply(&mut state, recovered(events));
    assert_eq!(records(&out), vec![(Some(4), "status".into())]);
    assert_eq!(actions(&out), vec!["ended completed"]);
    assert_eq!(state.live(), 0);
}

#[test]
fn recovery_parks_a_saga_whose_journal_cannot_be_read_and_runs_the_others() {
    let mut state = fresh();
    let broken = Input::Recover(Box::new(Recovered {
        id: "broken".into(),
        created_ms: NOW,
        def: Ok(def()),
        input: Ok(json!({})),
        events: vec![
            ev(0, EventKind::Started),
            (1, NOW, Err("a status body that is not JSON".into())),
        ],
    }));
    let out = apply(&mut state, broken);
    assert_eq!(records(&out), vec![(Some(2), "status".into())]);
    let Record::Event {
        kind: EventKind::Status { status, reason, .. },
        ..
    } = &out.records[0]
    else {
        unreachable!()
    };
    assert_eq!(*status, "parked");
    let reason = reason.as_deref().unwrap();
    assert!(
        reason.contains("event 1") && reason.contains("not JSON"),
        "{reason}"
    );
    assert!(out.actions.is_empty());
    assert_eq!(state.live(), 0, "it is not run");
    // A missing definition parks too; a healthy saga beside it recovers.
    let no_def = Input::Recover(Box::new(Recovered {
        id: "no-def".into(),
        created_ms: NOW,
        def: Err("definition abc is not in the journal".into()),
        input: Ok(json!({})),
        events: vec![ev(0, EventKind::Started)],
    }));
    let out = apply(&mut state, no_def);
    assert_eq!(records(&out), vec![(Some(1), "status".into())]);
    let out = apply(&mut state, recovered(vec![ev(0, EventKind::Started)]));
    assert_eq!(actions(&out), vec!["dispatch 0 stock.reserve#1"]);
    // Parked once: a second recovery of the same journal writes nothing new.
    let again = Input::Recover(Box::new(Recovered {
        id: "broken".into(),
        created_ms: NOW,
        def: Ok(def()),
        input: Ok(json!({})),
        events: vec![
            ev(0, EventKind::Started),
            (1, NOW, Err("a status body that is not JSON".into())),
            ev(
                2,
                EventKind::Status {
                    status: "parked",
                    reason: Some(reason.to_owned()),
                    ended: false,
                    from: "",
                },
            ),
        ],
    }));
    assert!(apply(&mut state, again).records.is_empty());
}

/// Before the fix a diverged replay only logged: the saga stayed "running"
/// forever with nothing outstanding.
#[test]
fn recovery_parks_a_saga_whose_replay_diverges() {
    let mut state = fresh();
    // The journal says operation 0 ran payment.capture; the definition's
    // first step is stock.reserve.
    let out = apply(
        &mut state,
        recovered(vec![
            ev(0, EventKind::Started),
            ev(1, attempt(0, "reserve", "payment.capture", Ok(json!({})))),
        ]),
    );
    assert_eq!(records(&out), vec![(Some(2), "status".into())]);
    let Record::Event {
        kind: EventKind::Status { status, reason, .. },
        ..
    } = &out.records[0]
    else {
        unreachable!()
    };
    assert_eq!(*status, "parked");
    let reason = reason.as_deref().unwrap();
    assert!(
        reason.starts_with("replaying its journal diverged (operation 0: the history has a result of payment.capture but the saga asks for stock.reserve)"),
        "{reason}"
    );
    assert!(out.actions.is_empty(), "{:?}", actions(&out));
    assert_eq!(state.live(), 0, "it is not run");
}

#[test]
fn cancel_during_a_retry_timer_compensates_at_once_and_the_late_timer_is_dropped() {
    let mut state = fresh();
    start(&mut state, "o1", 1);
    let failed = apply(
        &mut state,
        done("o1", 0, Err(ActivityError::retryable("redis", "down"))),
    );
    assert_eq!(actions(&failed), vec!["timer 1"]);
    let cancel = apply(&mut state, command("o1", Signal::Cancel, 9));
    assert_eq!(
        records(&cancel),
        vec![(Some(2), "signal".into()), (Some(3), "status".into())]
    );
    // The reserve failed retryably, so it may have happened: released.
    assert_eq!(actions(&cancel), vec!["dispatch 2 stock.release#1"]);
    let late = apply(
        &mut state,
        Input::TimerFired {
            saga_id: Arc::from("o1"),
            seq: 1,
            at_ms: NOW + 100,
        },
    );
    assert!(late.records.is_empty() && late.actions.is_empty());
    let end = apply(&mut state, done("o1", 2, Ok(json!({}))));
    assert_eq!(actions(&end), vec!["ended compensated"]);
}

#[test]
fn a_cancel_recorded_during_a_timer_replays_where_it_was_delivered() {
    // The journal of the saga above up to the cancel: recovery feeds the
    // events one at a time, so the cancel reaches the timer, not the failed
    // attempt before it (which would number the compensation differently).
    let mut state = fresh();
    let failed = attempt(
        0,
        "reserve",
        "stock.reserve",
        Err(ActivityError::retryable("redis", "down")),
    );
    let events = vec![
        ev(0, EventKind::Started),
        ev(1, failed),
        ev(
            2,
            EventKind::Signal {
                command: cmd(Signal::Cancel),
                inbox_id: None,
            },
        ),
        ev(
            3,
            EventKind::Status {
                status: "compensating",
                reason: None,
                ended: false,
                from: "",
            },
        ),
    ];
    let out = apply(&mut state, recovered(events));
    assert!(out.records.is_empty(), "{:?}", records(&out));
    assert_eq!(actions(&out), vec!["dispatch 2 stock.release#1"]);
}

#[test]
fn commands_that_do_not_apply_are_refused_with_the_reason() {
    let mut state = fresh();
    start(&mut state, "o1", 1);
    let why = refusal(&apply(&mut state, command("o1", Signal::Retry, 1)));
    assert!(why.contains("retry applies only to a parked saga"), "{why}");
    apply(&mut state, done("o1", 0, Ok(json!({}))));
    // The pivot's attempt runs: it may succeed, so no cancel any more.
    let why = refusal(&apply(&mut state, command("o1", Signal::Cancel, 2)));
    assert!(why.contains("sagaflow refund"), "{why}");
    apply(&mut state, done("o1", 1, Ok(json!({}))));
    apply(
        &mut state,
        done("o1", 2, Err(ActivityError::business("gone", "expired"))),
    );
    let wrong_step = Signal::Resolve {
        step: "reserve".into(),
        output: json!({}),
    };
    let why = refusal(&apply(&mut state, command("o1", wrong_step, 3)));
    assert!(why.contains("pass --step ship"), "{why}");
    let unreadable = apply(
        &mut state,
        Input::Signal {
            saga_id: "o1".into(),
            command: Err("an unknown command \"launch\"".into()),
            inbox_id: 4,
        },
    );
    assert!(refusal(&unreadable).contains("cannot be read"));
    let resolve = Signal::Resolve {
        step: "ship".into(),
        output: json!({"by": "hand"}),
    };
    let out = apply(&mut state, command("o1", resolve, 5));
    assert_eq!(actions(&out), vec!["ended completed"]);
    let why = refusal(&apply(&mut state, command("o1", Signal::Cancel, 6)));
    assert!(why.contains("not live here"), "{why}");
}

#[test]
fn a_refund_from_the_inbox_starts_its_saga_once_and_audits_it() {
    let mut state = fresh();
    let request = |reason: &str| {
        let request = StartRequest {
            saga_id: "o1#refund".into(),
            def: def().def.clone(),
            input: json!({"order_id": "o1"}),
            audit: crate::engine::command::Audit {
                operator: "carol".into(),
                reason: reason.into(),
                bulk: None,
            },
        };
        Ok(Box::new((request, "{}".to_owned())))
    };
    let first = apply(
        &mut state,
        Input::StartFromInbox {
            of: "o1".into(),
            start: request("returned"),
            inbox_id: 1,
            journaled: false,
        },
    );
    assert_eq!(
        records(&first)[..4],
        [
            (None, "applied".into()),
            (None, "definition".into()),
            (None, "saga".into()),
            (Some(0), "started".into())
        ]
    );
    let Record::Applied(applied) = &first.records[0] else {
        unreachable!()
    };
    assert_eq!(
        (applied.saga_id.as_str(), applied.detail.as_str()),
        ("o1", "started o1#refund")
    );
    assert!(actions(&first).contains(&"dispatch 0 stock.reserve#1".to_owned()));
    let again = apply(
        &mut state,
        Input::StartFromInbox {
            of: "o1".into(),
            start: request("twice"),
            inbox_id: 2,
            journaled: false,
        },
    );
    assert_eq!(records(&again), vec![(None, "applied".into())]);
    let Record::Applied(applied) = &again.records[0] else {
        unreachable!()
    };
    assert!(
        applied.detail.contains("exists already"),
        "{}",
        applied.detail
    );
    assert!(again.actions.is_empty());
}

/// The trigger's limit counts sagas in progress: a parked saga, or one
/// waiting for an open breaker, is live but not in progress, and counts
/// again as soon as it goes on.
#[test]
fn parked_and_breaker_waiting_sagas_are_not_in_progress() {
    let mut state = fresh();
    start(&mut state, "parks", 1);
    start(&mut state, "waits", 2);
    start(&mut state, "runs", 3);
    assert_eq!((state.live(), state.in_progress()), (3, 3));
    apply(&mut state, done("parks", 0, Ok(json!({}))));
    apply(&mut state, done("parks", 1, Ok(json!({}))));
    apply(
        &mut state,
        done("parks", 2, Err(ActivityError::retryable("redis", "down"))),
    );
    assert_eq!((state.live(), state.in_progress()), (3, 2), "parked");
    let refused = ActivityError::breaker_open(sagaflow_workflows::DependencyWait {
        dependency: "stock".into(),
        since_ms: NOW,
        retry_after_ms: 5_000,
    });
    let out = apply(&mut state, done("waits", 0, Err(refused.clone())));
    assert_eq!(actions(&out), vec!["timer 1"], "a durable wait");
    assert_eq!((state.live(), state.in_progress()), (3, 1), "waiting");
    // Its timer fires and the breaker refuses it again: still waiting.
    apply(
        &mut state,
        Input::TimerFired {
            saga_id: Arc::from("waits"),
            seq: 1,
            at_ms: NOW + 5_000,
        },
    );
    let out = apply(&mut state, done("waits", 2, Err(refused)));
    assert_eq!(actions(&out), vec!["timer 3"]);
    assert_eq!(state.in_progress(), 1);
    apply(
        &mut state,
        Input::TimerFired {
            saga_id: Arc::from("waits"),
            seq: 3,
            at_ms: NOW + 10_000,
        },
    );
    let out = apply(&mut state, done("waits", 4, Ok(json!({}))));
    assert_eq!(actions(&out), vec!["dispatch 5 payment.capture#1"]);
    assert_eq!(state.in_progress(), 2, "let through: in progress again");
    // The parked saga is retried: in progress again; when it ends it
    // leaves both counts.
    let out = apply(
        &mut state,
        Input::Signal {
            saga_id: "parks".into(),
            command: Ok(cmd(Signal::Retry)),
            inbox_id: 7,
        },
    );
    assert_eq!(state.in_progress(), 3);
    let Some(Action::Dispatch { seq, .. }) = out.actions.first() else {
        panic!("the retry dispatches the step again: {:?}", actions(&out));
    };
    apply(&mut state, done("parks", *seq, Ok(json!({}))));
    assert_eq!((state.live(), state.in_progress()), (2, 2));
}

/// The reports of ended work among `out`'s observations, as
/// "attempt STEP#N", "step STEP" or "saga STATUS".
fn reports(out: &Effects<u32>) -> Vec<String> {
    out.observed
        .iter()
        .filter_map(|o| match o {
            Observed::Finished(f) => Some(match &f.work {
                sagaflow_workflows::Work::Saga { status } => format!("saga {status}"),
                sagaflow_workflows::Work::Step { step, .. } => format!("step {step}"),
                sagaflow_workflows::Work::Attempt { step, attempt, .. } => {
                    format!("attempt {step}#{attempt}")
                }
            }),
            _ => None,
        })
        .collect()
}

#[test]
fn a_tracing_state_reports_ended_work_as_it_is_journaled() {
    let mut state = fresh();
    state.trace(true);
    let out = start(&mut state, "o1", 1);
    assert_eq!(reports(&out), Vec::<String>::new());
    let out = apply(&mut state, done("o1", 0, Ok(json!({}))));
    assert_eq!(reports(&out), ["attempt reserve#1", "step reserve"]);
    apply(&mut state, done("o1", 1, Ok(json!({}))));
    let out = apply(&mut state, done("o1", 2, Ok(json!({}))));
    assert_eq!(
        reports(&out),
        ["attempt ship#1", "step ship", "saga completed"]
    );
    // Not tracing: nothing is built at all.
    let mut quiet = fresh();
    start(&mut quiet, "o2", 1);
    let out = apply(&mut quiet, done("o2", 0, Ok(json!({}))));
    assert!(out
        .observed
        .iter()
        .all(|o| !matches!(o, Observed::Finished(_))));
}

#[test]
fn recovery_does_not_report_replayed_work_again() {
    let mut state = fresh();
    state.trace(true);
    let out = apply(
        &mut state,
        recovered(vec![
            ev(0, EventKind::Started),
            ev(1, attempt(0, "reserve", "stock.reserve", Ok(json!({})))),
        ]),
    );
    assert_eq!(
        reports(&out),
        Vec::<String>::new(),
        "reported before the crash"
    );
    assert_eq!(actions(&out), vec!["dispatch 1 payment.capture#1"]);
    // Work that ends after recovery is reported, with the saga's start.
    let out = apply(&mut state, done("o1", 1, Ok(json!({}))));
    assert_eq!(reports(&out), ["attempt charge#1", "step charge"]);
    let out = apply(&mut state, done("o1", 2, Ok(json!({}))));
    let saga = out
        .observed
        .iter()
        .find_map(|o| match o {
            Observed::Finished(f) if matches!(f.work, sagaflow_workflows::Work::Saga { .. }) => {
                Some(f)
            }
            _ => None,
        })
        .expect("the saga's report");
    assert_eq!(saga.started_ms, NOW);
}
