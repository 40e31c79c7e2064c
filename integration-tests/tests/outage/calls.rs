//! What the provider's request log (`GET /_sandbox/calls`) says about an
//! outage: how many calls reached it before a worker's breaker opened,
//! and how many were in flight at once before and after.

use serde_json::Value;

/// One API request the sandbox answered.
#[derive(Debug, Clone)]
pub struct Call {
    pub arrived: u64,
    pub answered: u64,
    pub status: u16,
    /// The sending worker's `User-Agent` (`sagaflow/V (host H; pid P)`).
    pub agent: String,
}

/// The calls of `/_sandbox/calls`' answer, in arrival order.
pub fn parse(log: &Value) -> Vec<Call> {
    let agents: Vec<&str> = log["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a.as_str().unwrap_or(""))
        .collect();
    assert_eq!(log["not_kept"], 0, "the request log kept every call");
    let mut calls: Vec<Call> = log["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| Call {
            arrived: r[0].as_u64().unwrap(),
            answered: r[1].as_u64().unwrap(),
            status: r[2].as_u64().unwrap() as u16,
            agent: agents[r[3].as_u64().unwrap() as usize].to_owned(),
        })
        .collect();
    calls.sort_by_key(|c| c.arrived);
    calls
}

/// The calls of the worker process `pid`.
pub fn of_pid(calls: &[Call], pid: u32) -> Vec<Call> {
    let tag = format!("pid {pid})");
    calls
        .iter()
        .filter(|c| c.agent.ends_with(&tag))
        .cloned()
        .collect()
}

/// The calls that reached the provider from its first failed answer
/// (5xx) to the moment the breaker opened (`opened_ms`, worker clock, the
/// same machine), every request counted, GETs included. A call arriving
/// within 100 ms after the opening was let through before it (it was on
/// its way): it is counted too.
pub fn before_opening(calls: &[Call], opened_ms: u64) -> usize {
    let Some(first) = calls.iter().find(|c| c.status >= 500) else {
        return 0;
    };
    calls
        .iter()
        .filter(|c| c.arrived >= first.arrived && c.arrived <= opened_ms + 100)
        .count()
}

/// The most calls in flight at once at the provider among those that
/// arrived in `from..to` or were still in flight then.
pub fn peak_in_flight(calls: &[Call], from: u64, to: u64) -> usize {
    // +1 at arrival, -1 after the answer; ends sort before starts at the
    // same millisecond (a call answered at t is not in flight with one
    // that arrived at t).
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for c in calls {
        if c.answered < from || c.arrived >= to {
            continue;
        }
        edges.push((c.arrived.max(from), 1));
        edges.push((c.answered, -1));
    }
    edges.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        peak = peak.max(now);
    }
    peak as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(arrived: u64, answered: u64, status: u16) -> Call {
        Call {
            arrived,
            answered,
            status,
            agent: "a (host h; pid 1)".into(),
        }
    }

    #[test]
    fn peaks_and_counts() {
        let calls = vec![
            call(0, 10, 200),
            call(5, 6, 200),
            call(10, 20, 503),
            call(11, 12, 503),
            call(500, 501, 503),
        ];
        assert_eq!(peak_in_flight(&calls, 0, 100), 2);
        assert_eq!(peak_in_flight(&calls, 400, 600), 1);
        assert_eq!(before_opening(&calls, 12), 2);
        assert_eq!(
            before_opening(&calls, 400),
            3,
            "one on its way when it opened"
        );
        assert_eq!(of_pid(&calls, 1).len(), 5);
        assert_eq!(of_pid(&calls, 11).len(), 0);
    }
}
