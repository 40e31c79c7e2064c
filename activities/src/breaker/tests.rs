//! Breaker transitions driven by a fake clock: every call says what time
//! it is.

use super::*;

/// The payment defaults without the burst limit (it has tests of its
/// own below; the others send many calls at once).
fn settings() -> BreakerSettings {
    BreakerSettings {
        burst: 0,
        ..BreakerSettings::default_for("payment")
    }
}

/// The consecutive rule alone.
fn consecutive_only() -> BreakerSettings {
    BreakerSettings {
        failures: 10_000,
        ..settings()
    }
}

/// The window's rate rule alone.
fn rate_only() -> BreakerSettings {
    BreakerSettings {
        consecutive: 0,
        ..settings()
    }
}

fn outage() -> ActivityError {
    ActivityError::retryable("http_503", "unavailable")
}

fn declined() -> ActivityError {
    ActivityError::business("card_declined", "declined")
}

/// Lets a call through at `now` and records `error` as its outcome.
fn call(b: &Breaker, now: u64, error: Option<ActivityError>) -> Option<Transition> {
    let (ticket, _) = b.admit(now, "s");
    b.record(ticket.expect("let through"), now, "s", error.as_ref())
        .transition
}

/// Five calls go out at once and fail one by one: the breaker opens.
fn open_it(b: &Breaker, now: u64) {
    let burst: Vec<Ticket> = (0..5).map(|_| b.admit(now, "s").0.unwrap()).collect();
    for (i, t) in burst.into_iter().enumerate() {
        b.record(t, now + i as u64, "s", Some(&outage()));
    }
    assert_eq!(b.snapshot(now + 5).state, BreakerState::Open);
}

#[test]
fn closed_opens_after_the_configured_failures() {
    let b = Breaker::new("payment", settings(), 0);
    for i in 0..4 {
        assert_eq!(call(&b, i, Some(outage())), None);
    }
    let t = call(&b, 4, Some(outage())).expect("the fifth failure opens it");
    assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
    let (refused, _) = b.admit(10, "s2");
    let wait = refused.expect_err("open refuses");
    assert_eq!(wait.dependency, "payment");
    assert_eq!(wait.since_ms, 0, "the outage began at its first failure");
    assert_eq!(
        wait.retry_after_ms,
        5_000 - 6,
        "until the open interval ends"
    );
    assert_eq!(
        b.snapshot(10).waiting,
        2,
        "the saga whose failure opened it, and s2"
    );
}

#[test]
fn declines_and_uncounted_kinds_never_open_it() {
    let b = Breaker::new("payment", settings(), 0);
    for i in 0..50 {
        assert_eq!(call(&b, i, Some(declined())), None);
        assert_eq!(
            call(
                &b,
                i,
                Some(ActivityError::retryable("http_409", "in progress"))
            ),
            None
        );
    }
    assert_eq!(b.snapshot(100).state, BreakerState::Closed);
}

#[test]
fn failures_below_the_rate_or_spread_over_windows_do_not_open_it() {
    let b = Breaker::new("payment", rate_only(), 0);
    // 5 failures among 20 calls: 25% < 50%.
    for i in 0..20 {
        let error = (i % 4 == 0).then(outage);
        call(&b, i, error);
    }
    assert_eq!(b.snapshot(20).state, BreakerState::Closed);
    // 4 failures per 10 s window, for a minute.
    let b = Breaker::new("payment", rate_only(), 0);
    for w in 0..6 {
        for i in 0..4 {
            call(&b, w * 10_000 + i, Some(outage()));
        }
    }
    assert_eq!(b.snapshot(60_000).state, BreakerState::Closed);
}

#[test]
fn open_turns_half_open_after_its_interval_and_a_good_probe_closes_it() {
    let b = Breaker::new("payment", settings(), 0);
    open_it(&b, 0);
    assert!(b.is_open(4_000));
    assert!(b.admit(4_000, "s").0.is_err());
    assert!(!b.is_open(5_004));
    assert_eq!(b.snapshot(5_004).state, BreakerState::HalfOpen);
    let (probe, t) = b.admit(5_004, "s");
    let probe = probe.expect("a probe goes through");
    assert!(probe.probe);
    let t = t.expect("the state change is reported once");
    assert_eq!((t.from, t.to), (BreakerState::Open, BreakerState::HalfOpen));
    // One probe at a time: the next saga waits a little.
    let (other, t) = b.admit(5_005, "s2");
    assert_eq!(t, None);
    assert_eq!(other.expect_err("probes are out").retry_after_ms, 1_000);
    let t = b
        .record(probe, 5_100, "s", None)
        .transition
        .expect("closes");
    assert_eq!(
        (t.from, t.to),
        (BreakerState::HalfOpen, BreakerState::Closed)
    );
    assert!(!b.admit(5_101, "s2").0.expect("closed").probe);
    let snap = b.snapshot(5_101);
    assert_eq!(snap.state, BreakerState::Closed);
    assert_eq!(snap.since_ms, 5_100);
    assert_eq!(snap.opened_total, 1);
    assert_eq!(snap.probes_total, 1);
    assert_eq!(snap.waiting, 0, "s2 came back");
}

#[test]
fn a_failed_probe_opens_it_again_keeping_the_outage_start() {
    let b = Breaker::new("payment", settings(), 0);
    open_it(&b, 1_000);
    let (probe, _) = b.admit(6_004, "s");
    let recorded = b.record(probe.unwrap(), 6_050, "s", Some(&outage()));
    let t = recorded.transition.expect("opens again");
    assert_eq!((t.from, t.to), (BreakerState::HalfOpen, BreakerState::Open));
    let probe_wait = recorded.wait.expect("the failed probe's saga waits too");
    assert_eq!(probe_wait.retry_after_ms, 5_000, "for the new interval");
    let wait = b.admit(6_060, "s").0.expect_err("open again");
    assert_eq!(
        wait.since_ms, 1_000,
        "the outage began at the first failure of the run that opened it"
    );
    assert_eq!(wait.retry_after_ms, 11_050 - 6_060);
    assert_eq!(b.snapshot(6_060).opened_total, 2);
}

#[test]
fn during_an_outage_at_most_the_probes_go_through_per_open_interval() {
    let mut s = settings();
    s.probes = 2;
    let b = Breaker::new("payment", s, 0);
    open_it(&b, 0);
    // A crowd of sagas asks every 10 ms for 60 s; every call that goes
    // through fails.
    let mut through = Vec::new();
    let mut out = Vec::new();
    for now in (10..60_000).step_by(10) {
        for saga in 0..20 {
            if let (Ok(ticket), _) = b.admit(now, &format!("s{saga}")) {
                through.push(now);
                out.push((ticket, now + 30));
            }
        }
        out.retain(|(ticket, done)| {
            if *done <= now {
                b.record(*ticket, now, "s", Some(&outage()));
                false
            } else {
                true
            }
        });
    }
    // Each open interval (5 s) ends in one half-open spell of 2 probes.
    assert!(
        through.len() <= 2 * (60_000 / 5_000),
        "{} calls went through: {through:?}",
        through.len()
    );
    assert!(
        through.len() >= 2 * 10,
        "probes keep being sent: {through:?}"
    );
    for pair in through.chunks(2) {
        assert!(pair[pair.len() - 1] - pair[0] < 100, "probes come in pairs");
    }
}

#[test]
fn a_call_let_through_before_it_opened_does_not_close_it() {
    let b = Breaker::new("payment", settings(), 0);
    let (early, _) = b.admit(0, "early");
    open_it(&b, 1);
    assert_eq!(b.record(early.unwrap(), 100, "s", None).transition, None);
    assert_eq!(b.snapshot(100).state, BreakerState::Open);
}

/// A call that fails while the dependency is down (the failure that
/// opens the breaker, or one let through before others opened it) sends
/// its saga to wait; a success, a decline, or a failure while it is
/// closed does not.
#[test]
fn a_failure_that_finds_it_open_sends_the_saga_to_wait() {
    let b = Breaker::new("payment", settings(), 0);
    let (in_flight, _) = b.admit(0, "slow");
    let burst: Vec<Ticket> = (0..5).map(|_| b.admit(0, "s").0.unwrap()).collect();
    for (i, t) in burst[..4].iter().enumerate() {
        let r = b.record(*t, i as u64, "s", Some(&outage()));
        assert_eq!(r.wait, None, "closed: the retry policy decides");
    }
    let r = b.record(burst[4], 4, "opener", Some(&outage()));
    assert!(r.transition.is_some());
    assert_eq!(
        r.wait.expect("the opening failure waits").retry_after_ms,
        5_000
    );
    let late = b.record(in_flight.unwrap(), 1_004, "slow", Some(&outage()));
    assert_eq!(late.transition, None);
    assert_eq!(late.wait.expect("found it open").retry_after_ms, 4_000);
    assert_eq!(b.snapshot(1_004).waiting, 2, "both are counted as waiting");
    let closed = Breaker::new("payment", settings(), 0);
    let (t, _) = closed.admit(0, "d");
    assert_eq!(
        closed.record(t.unwrap(), 0, "d", Some(&declined())).wait,
        None
    );
}

#[test]
fn count_patterns_match_kinds() {
    let s = settings();
    assert!(s.counts(&ActivityError::retryable("http_503", "")));
    assert!(s.counts(&ActivityError::retryable("timeout", "")));
    assert!(!s.counts(&ActivityError::retryable("http_409", "")));
    assert!(!s.counts(&ActivityError::business("http_500", "")));
    let stock = BreakerSettings::default_for("stock");
    assert!(stock.counts(&ActivityError::retryable("redis_unavailable", "")));
    assert!(!stock.counts(&ActivityError::business("out_of_stock", "")));
    let refusal = ActivityError::breaker_open(DependencyWait {
        dependency: "stock".into(),
        since_ms: 0,
        retry_after_ms: 1,
    });
    assert!(
        !stock.counts(&refusal),
        "a refusal is not the dependency's failure"
    );
}

/// Lets a call through at `at`, and records `error` at `done`.
fn timed(b: &Breaker, at: u64, done: u64, error: Option<ActivityError>) -> Recorded {
    let (ticket, _) = b.admit(at, "s");
    b.record(ticket.expect("let through"), done, "s", error.as_ref())
}

/// At a flash sale's rate a window holds thousands of good calls: the
/// rate rule would need thousands of failures, five in a row open it
/// (issue 31, defect 1).
#[test]
fn five_failures_in_a_row_open_it_at_any_rate() {
    let b = Breaker::new("payment", settings(), 0);
    for i in 0..2_000 {
        call(&b, i, None);
    }
    for i in 0..4 {
        assert_eq!(call(&b, 2_000 + i, Some(outage())), None);
    }
    let t = call(&b, 2_004, Some(outage())).expect("the fifth in a row opens it");
    assert!(t.why.starts_with("5 failures in a row"), "{}", t.why);
    // A success between failures starts the run again.
    let b = Breaker::new("payment", consecutive_only(), 0);
    for round in 0..100 {
        for i in 0..4 {
            call(&b, round * 10 + i, Some(outage()));
        }
        call(&b, round * 10 + 5, None);
    }
    assert_eq!(b.snapshot(1_000).state, BreakerState::Closed);
}

/// The failures before the opening one carry the moment their run began;
/// the opening failure and every refusal after it carry the same moment
/// as the outage's start, so the interpreter can give those attempts back.
#[test]
fn failures_before_the_opening_name_the_run_the_outage_began_with() {
    let b = Breaker::new("payment", consecutive_only(), 0);
    call(&b, 10, Some(outage()));
    call(&b, 20, None);
    let mut tags = Vec::new();
    for i in 0..4 {
        let r = timed(&b, 100 + i, 100 + i, Some(outage()));
        assert_eq!(r.wait, None);
        tags.push(r.failing_since.expect("closed: tagged with its run"));
    }
    assert_eq!(
        tags,
        [100, 100, 100, 100],
        "a success ended the earlier run"
    );
    let opening = timed(&b, 104, 104, Some(outage()));
    assert_eq!(opening.failing_since, None);
    assert_eq!(opening.wait.expect("waits").since_ms, 100);
    let refused = b.admit(200, "t").0.expect_err("open");
    assert_eq!(refused.since_ms, 100);
    // Not a failure the breaker counts: no tag.
    let b = Breaker::new("payment", settings(), 0);
    assert_eq!(timed(&b, 0, 1, Some(declined())).failing_since, None);
}

/// A provider that answers slowly is down for a sale: calls at or past
/// `slow_call` count as failures even when they succeed.
#[test]
fn slow_calls_count_as_failures() {
    let b = Breaker::new("payment", settings(), 0);
    for i in 0..4 {
        let r = timed(&b, i, i + 3_500, None);
        assert_eq!(r.transition, None);
    }
    let r = timed(&b, 4, 4 + 3_000, None);
    let t = r.transition.expect("the fifth slow call opens it");
    assert!(t.why.contains("took 3000 ms"), "{}", t.why);
    assert_eq!(r.wait, None, "a slow success is still a success");
    let fast = Breaker::new("payment", settings(), 0);
    for i in 0..50 {
        timed(&fast, i, i + 2_999, None);
    }
    assert_eq!(fast.snapshot(10_000).state, BreakerState::Closed);
    let off = Breaker::new(
        "payment",
        BreakerSettings {
            slow_call_ms: 0,
            ..settings()
        },
        0,
    );
    for i in 0..50 {
        timed(&off, i, i + 60_000, None);
    }
    assert_eq!(off.snapshot(70_000).state, BreakerState::Closed);
}

/// A `Retry-After` longer than `open_for` keeps the breaker open that
/// long (capped at ten minutes).
#[test]
fn retry_after_lengthens_the_open_interval() {
    let b = Breaker::new("payment", settings(), 0);
    let asked = ActivityError {
        retry_after_ms: Some(30_000),
        ..outage()
    };
    for i in 0..5 {
        call(&b, i, Some(asked.clone()));
    }
    assert_eq!(b.admit(10, "s").0.unwrap_err().retry_after_ms, 30_004 - 10);
    assert!(b.is_open(30_000));
    let b = Breaker::new("payment", settings(), 0);
    let forever = ActivityError {
        retry_after_ms: Some(86_400_000),
        ..outage()
    };
    for i in 0..5 {
        call(&b, i, Some(forever.clone()));
    }
    assert_eq!(b.admit(4, "s").0.unwrap_err().retry_after_ms, 600_000);
}

/// After an outage the calls in flight ramp from the probes up to the
/// most this worker had in flight before it, over `ramp`; calls beyond
/// the limit wait a spread-out moment.
#[test]
fn after_an_outage_calls_in_flight_ramp_up_to_the_earlier_peak() {
    let b = Breaker::new("payment", settings(), 0);
    // Eight at once, healthy, before the outage.
    let tickets: Vec<Ticket> = (0..8).map(|_| b.admit(0, "s").0.unwrap()).collect();
    assert_eq!(tickets[7].in_flight, 8);
    for t in tickets {
        b.record(t, 5, "s", None);
    }
    open_it(&b, 10);
    let probe = b.admit(5_014, "p").0.unwrap();
    assert!(probe.probe);
    b.record(probe, 5_020, "p", None)
        .transition
        .expect("closes");
    let snap = b.snapshot(5_020);
    assert_eq!(
        (snap.state, snap.ramp_limit),
        (BreakerState::Closed, Some(1))
    );
    // At first one call at a time; the next waits 250 ms to 1.25 s.
    let first = b.admit(5_020, "a").0.unwrap();
    let held = b.admit(5_020, "b").0.expect_err("the ramp holds it back");
    assert!((250..1_250).contains(&held.retry_after_ms), "{held:?}");
    b.record(first, 5_021, "a", None);
    // Halfway through the ramp (5 s of 10 s): 1 + (8 - 1) / 2 = 4.
    assert_eq!(b.snapshot(10_020).ramp_limit, Some(4));
    let four: Vec<Ticket> = (0..4).map(|_| b.admit(10_020, "c").0.unwrap()).collect();
    assert!(b.admit(10_020, "d").0.is_err());
    for t in four {
        b.record(t, 10_021, "c", None);
    }
    // Never above the earlier peak within the ramp; then on at the same
    // pace, no cliff; no limit once it is four times the peak.
    assert_eq!(b.snapshot(15_019).ramp_limit, Some(7));
    assert_eq!(b.snapshot(15_020).ramp_limit, Some(8));
    assert_eq!(b.snapshot(25_020).ramp_limit, Some(16));
    assert_eq!(b.snapshot(45_019).ramp_limit, Some(31));
    assert_eq!(b.snapshot(45_020).ramp_limit, None);
    let many: Vec<_> = (0..50).map(|_| b.admit(45_020, "e").0).collect();
    assert!(many.iter().all(Result::is_ok));
}

/// A call let through before an outage that fails after the breaker
/// closed again met the outage: its saga waits a moment, the attempt is
/// not counted.
#[test]
fn a_call_that_outlived_an_outage_and_fails_waits() {
    let b = Breaker::new("payment", settings(), 0);
    let stuck = b.admit(0, "stuck").0.unwrap();
    open_it(&b, 10);
    let probe = b.admit(5_014, "p").0.unwrap();
    b.record(probe, 5_020, "p", None)
        .transition
        .expect("closes");
    let late = b.record(stuck, 5_030, "stuck", Some(&outage()));
    assert!(late.wait.is_some(), "{late:?}");
    assert_eq!(late.failing_since, None);
    // Five such stragglers do not open it again: they met the outage.
    // (Tickets as the breaker gave them out before it opened.)
    let stragglers = (0..5).map(|i| Ticket {
        probe: false,
        admitted_ms: 4 + i,
        in_flight: 1,
    });
    for t in stragglers {
        assert_eq!(b.record(t, 5_040, "x", Some(&outage())).transition, None);
    }
    assert_eq!(b.snapshot(5_040).state, BreakerState::Closed);
}

/// `max_in_flight` caps calls in flight at all times.
#[test]
fn max_in_flight_caps_calls_in_flight() {
    let b = Breaker::new(
        "payment",
        BreakerSettings {
            max_in_flight: 3,
            ..settings()
        },
        0,
    );
    let three: Vec<Ticket> = (0..3).map(|_| b.admit(0, "s").0.unwrap()).collect();
    let refused = b.admit(0, "t").0.expect_err("at the cap");
    assert!(refused.retry_after_ms >= 250);
    assert_eq!(b.snapshot(0).in_flight, 3);
    b.record(three[0], 1, "s", None);
    assert!(b.admit(1, "t").0.is_ok());
}

/// At a sale's rate calls go out in bursts: once one has failed, no more
/// calls are let be in flight than the failures still needed to open the
/// breaker, so a burst cannot all meet an outage; a healthy answer lifts
/// the hold (issue 31, defect 1).
#[test]
fn after_a_failure_calls_in_flight_are_held_to_the_failures_still_needed() {
    let b = Breaker::new("payment", consecutive_only(), 0);
    let first = b.admit(0, "s").0.unwrap();
    b.record(first, 1, "s", Some(&outage()));
    let four: Vec<Ticket> = (0..4).map(|_| b.admit(2, "s").0.unwrap()).collect();
    let held = b
        .admit(2, "t")
        .0
        .expect_err("four more may fail: enough to open");
    assert!((250..1_250).contains(&held.retry_after_ms), "{held:?}");
    for t in four {
        b.record(t, 3, "s", Some(&outage()));
    }
    assert_eq!(b.snapshot(3).state, BreakerState::Open);
    // A healthy answer ends the run and the hold.
    let b = Breaker::new("payment", consecutive_only(), 0);
    let out: Vec<Ticket> = (0..3).map(|_| b.admit(0, "s").0.unwrap()).collect();
    b.record(out[0], 1, "s", Some(&outage()));
    assert!(
        b.admit(1, "t").0.is_ok(),
        "2 in flight, 4 failures still needed"
    );
    assert!(b.admit(1, "t").0.is_ok());
    assert!(b.admit(1, "t").0.is_err(), "4 in flight");
    b.record(out[1], 2, "s", None);
    let many: Vec<_> = (0..20).map(|_| b.admit(2, "u").0).collect();
    assert!(many.iter().all(Result::is_ok));
}

fn go(a: (Admission, Option<Transition>)) -> Ticket {
    match a.0 {
        Admission::Go(ticket) => ticket,
        other => panic!("expected the call to go, got {other:?}"),
    }
}

/// After a quiet moment a batch goes out `burst` at a time: the rest are
/// held (or, when they may not be, sent to wait), and each healthy answer
/// makes room for six (its own place and `burst` more).
#[test]
fn after_a_quiet_moment_a_batch_goes_out_a_burst_at_a_time() {
    let b = Breaker::new("payment", BreakerSettings::default_for("payment"), 0);
    let first: Vec<Ticket> = (0..5)
        .map(|_| go(b.admit_or_hold(1_000, "s", true)))
        .collect();
    assert!(matches!(
        b.admit_or_hold(1_000, "t", true).0,
        Admission::Hold
    ));
    assert!(b.admit(1_000, "t").0.is_err(), "may not hold: sent to wait");
    b.record(first[0], 1_050, "s", None);
    let six: Vec<Ticket> = (0..6)
        .map(|_| go(b.admit_or_hold(1_050, "t", true)))
        .collect();
    assert!(matches!(
        b.admit_or_hold(1_050, "v", true).0,
        Admission::Hold
    ));
    for t in first[1..].iter().chain(&six) {
        b.record(*t, 1_060, "s", None);
    }
    // Steady: the limit grew with the answers.
    let many: Vec<Ticket> = (0..11)
        .map(|_| go(b.admit_or_hold(1_060, "w", true)))
        .collect();
    for t in many {
        b.record(t, 1_070, "s", None);
    }
    // Quiet again: five at a time.
    for _ in 0..5 {
        go(b.admit_or_hold(2_000, "x", true));
    }
    assert!(matches!(
        b.admit_or_hold(2_000, "y", true).0,
        Admission::Hold
    ));
}

/// A sale's batch of 15 meets an outage that began while the worker was
/// quiet and is answered at once: five calls reach the provider, the
/// held ones are sent to wait as the failures come back, and the breaker
/// opens on the five. Without the burst limit all 15 went out.
#[test]
fn a_batch_meeting_an_outage_sends_the_provider_one_burst() {
    let b = Breaker::new("payment", BreakerSettings::default_for("payment"), 0);
    let mut sent = Vec::new();
    let mut held = 0;
    for i in 0..15 {
        match b.admit_or_hold(1_000, &format!("s{i}"), true).0 {
            Admission::Go(t) => sent.push(t),
            Admission::Hold => held += 1,
            Admission::Wait(w) => panic!("sent to wait before any answer: {w:?}"),
        }
    }
    assert_eq!((sent.len(), held), (5, 10));
    for (i, t) in sent.into_iter().enumerate() {
        b.record(t, 1_001, "s", Some(&outage()));
        // The held ask again after each answer: none goes.
        assert!(
            matches!(
                b.admit_or_hold(1_001, &format!("h{i}"), true).0,
                Admission::Wait(_)
            ),
            "after {} failures a held call must not go",
            i + 1
        );
    }
    assert_eq!(b.snapshot(1_001).state, BreakerState::Open);
}
