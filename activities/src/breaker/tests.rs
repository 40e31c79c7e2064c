//! Breaker transitions driven by a fake clock: every call says what time
//! it is.

use super::*;

fn settings() -> BreakerSettings {
    BreakerSettings::default_for("payment")
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

fn open_it(b: &Breaker, now: u64) {
    for i in 0..5 {
        call(b, now + i, Some(outage()));
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
    assert_eq!(wait.since_ms, 4);
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
    let b = Breaker::new("payment", settings(), 0);
    // 5 failures among 20 calls: 25% < 50%.
    for i in 0..20 {
        let error = (i % 4 == 0).then(outage);
        call(&b, i, error);
    }
    assert_eq!(b.snapshot(20).state, BreakerState::Closed);
    // 4 failures per 10 s window, for a minute.
    let b = Breaker::new("payment", settings(), 0);
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
    assert_eq!(probe, Ok(Ticket::Probe));
    let t = t.expect("the state change is reported once");
    assert_eq!((t.from, t.to), (BreakerState::Open, BreakerState::HalfOpen));
    // One probe at a time: the next saga waits a little.
    let (other, t) = b.admit(5_005, "s2");
    assert_eq!(t, None);
    assert_eq!(other.expect_err("probes are out").retry_after_ms, 1_000);
    let t = b
        .record(Ticket::Probe, 5_100, "s", None)
        .transition
        .expect("closes");
    assert_eq!(
        (t.from, t.to),
        (BreakerState::HalfOpen, BreakerState::Closed)
    );
    assert_eq!(b.admit(5_101, "s2").0, Ok(Ticket::Call));
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
        wait.since_ms, 1_004,
        "the outage began at the first opening"
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
    for i in 0..4 {
        let (t, _) = b.admit(i, "s");
        let r = b.record(t.unwrap(), i, "s", Some(&outage()));
        assert_eq!(r.wait, None, "closed: the retry policy decides");
    }
    let (t, _) = b.admit(4, "opener");
    let r = b.record(t.unwrap(), 4, "opener", Some(&outage()));
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
