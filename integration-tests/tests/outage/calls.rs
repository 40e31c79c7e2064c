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
/// (5xx: from the moment it was sent) to the moment the breaker opened
/// (`opened_ms`, worker clock, the same machine), every request counted,
/// GETs included. Calls already on their way when the first failure was
/// answered are not: no breaker could have held them back. A call
/// arriving within 100 ms after the opening was let through before it:
/// it is counted.
pub fn before_opening(calls: &[Call], opened_ms: u64) -> usize {
    let Some(first) = calls
        .iter()
        .filter(|c| c.status >= 500)
        .map(|c| c.answered)
        .min()
    else {
        return 0;
    };
    calls
        .iter()
        .filter(|c| c.arrived >= first && c.arrived <= opened_ms + 100)
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

/// When the worker whose log is `log` first opened `dependency`'s breaker
/// at or after `after_ms`: the log line's timestamp (RFC 3339, UTC), so it
/// reads the same from any version of the worker.
pub fn opened_in_log(log: &str, dependency: &str, after_ms: u64) -> Option<u64> {
    let tag = format!("dependency={dependency}");
    log.lines()
        .filter(|line| line.contains("circuit breaker opened") && line.contains(&tag))
        .filter_map(|line| utc_ms(line.split_whitespace().next()?))
        .find(|at| *at >= after_ms)
}

/// `2026-12-07T14:27:03.643504Z` in ms since the Unix epoch.
fn utc_ms(text: &str) -> Option<u64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let ms: i64 = format!("{fraction:0<3}")[..3].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + h) * 60 + min) * 60_000 + sec * 1_000 + ms).ok()
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
        // The first failed answer went out at 12: the calls that arrived
        // at 10 and 11 were already on their way.
        assert_eq!(before_opening(&calls, 12), 0);
        assert_eq!(
            before_opening(&calls, 400),
            1,
            "one on its way when it opened"
        );
        assert_eq!(of_pid(&calls, 1).len(), 5);
        assert_eq!(of_pid(&calls, 11).len(), 0);
    }

    #[test]
    fn log_times_read_as_epoch_ms() {
        assert_eq!(utc_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(
            utc_ms("2026-12-07T14:27:03.643504Z"),
            Some(1_796_653_623_643)
        );
        let log = "2026-12-07T14:27:03.643504Z  WARN sagaflow_activities::attempt: circuit breaker opened: 5 failures in a row (last: http_503); open for 5000 ms dependency=payment from=\"closed\" to=\"open\"";
        assert_eq!(opened_in_log(log, "payment", 0), Some(1_796_653_623_643));
        assert_eq!(opened_in_log(log, "stock", 0), None);
        assert_eq!(opened_in_log(log, "payment", 1_796_653_623_644), None);
    }
}
