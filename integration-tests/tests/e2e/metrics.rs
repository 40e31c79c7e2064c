//! `/metrics` (issue 14) against what the run really did (and the worker's
//! `--log-format json` lines): a worker sells
//! 600 orders (one in 23 with a declined card, stock for half of them, the
//! payment sandbox failing a tenth of its POSTs so steps are retried), and
//! `/metrics`, scraped while it runs and once it is done, must agree with
//! `sagaflow stats` and, attempt by attempt, with the journal itself.

use crate::broker::{order_json, seed_stock};
use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `GET path` of `addr`: status, Content-Type and body.
fn get(addr: &str, path: &str) -> (u16, String, String) {
    let (status, head, body) = http_get(addr, path);
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, content_type, body)
}

/// Every sample of `name` (exact metric name) as labels -> value.
fn samples(text: &str, name: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let labels = match key.split_once('{') {
                Some((n, rest)) if n == name => rest.trim_end_matches('}').to_owned(),
                None if key == name => String::new(),
                _ => return None,
            };
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

fn total(text: &str, name: &str) -> f64 {
    samples(text, name).values().sum()
}

#[test]
fn metrics_agree_with_stats_and_with_the_journal() {
    let dir = data_dir("metrics");
    let d = dir.to_str().unwrap().to_owned();
    let config = config_with(&dir, &[("error_rate = 0.0", "error_rate = 0.1")]);
    let c = config.to_str().unwrap().to_owned();
    let orders = 600;
    seed_stock(&config, &d, 6, 300);
    let lines: Vec<String> = (0..orders)
        .map(|n| order_json(&format!("m-{n:05}"), n, 6))
        .collect();
    let file = dir.join("orders.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    sagaflow_ok(&[
        "submit",
        file.to_str().unwrap(),
        "--config",
        &c,
        "--data",
        &d,
    ]);

    let log = dir.join("worker.log");
    let mut worker = Command::new(bin())
        .args([
            "run",
            "--log-format",
            "json",
            "--admin-bind",
            "127.0.0.1:0",
            "--max-live",
            "50",
            "--config",
            &c,
            "--data",
            &d,
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let began = Instant::now();
    let addr = admin_address(&log, &mut worker);

    // While it runs: served without a token, in OpenMetrics text. A
    // family shows once it has a sample: the first scrape can come before
    // the worker's first attempt (the admin API listens before the engine
    // starts), so scrape until the steps' histogram is there.
    let (status, content_type, during) = loop {
        let (status, content_type, text) = get(&addr, "/metrics");
        if status != 200
            || text.contains("sagaflow_step_duration_seconds")
            || began.elapsed() > Duration::from_secs(30)
        {
            break (status, content_type, text);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 200, "{during}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(during.ends_with("# EOF\n"), "{during}");
    assert!(
        during.contains("# TYPE sagaflow_step_duration_seconds histogram"),
        "{during}"
    );

    let stats = loop {
        let s: Value = serde_json::from_str(
            sagaflow_ok(&["stats", "--json", "--config", &c, "--data", &d]).trim(),
        )
        .unwrap();
        let open = s["running"].as_u64().unwrap() + s["compensating"].as_u64().unwrap();
        if s["total"] == orders && open == 0 {
            break s;
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "the run did not end: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (_, _, text) = get(&addr, "/metrics");
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    assert!(worker.wait().unwrap().success());
    // `--log-format json`: every line the worker logged is one JSON object.
    let logged = std::fs::read_to_string(&log).unwrap();
    for line in logged.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(logged.lines().count() >= 3, "{logged}");

    // Sagas: the counters agree with the journal's summary, and every
    // saga started is accounted for.
    let n = |k: &str| stats[k].as_u64().unwrap() as f64;
    let started = samples(&text, "sagaflow_sagas_started_total");
    assert_eq!(
        started.get(r#"saga="checkout""#),
        Some(&(orders as f64)),
        "{started:?}"
    );
    let ended = samples(&text, "sagaflow_sagas_ended_total");
    let completed = ended
        .get(r#"saga="checkout",status="completed""#)
        .copied()
        .unwrap_or(0.0);
    let compensated = ended
        .get(r#"saga="checkout",status="compensated""#)
        .copied()
        .unwrap_or(0.0);
    let parked = total(&text, "sagaflow_sagas_parked_total");
    assert_eq!(
        (completed, compensated, parked),
        (n("completed"), n("compensated"), n("parked")),
        "{stats}"
    );
    assert_eq!(completed + compensated + parked, orders as f64);
    assert!(completed > 0.0 && compensated > 0.0, "{stats}");
    assert_eq!(
        total(&text, "sagaflow_saga_duration_seconds_count"),
        completed + compensated
    );

    // Attempts: per step, activity and phase, exactly the attempts the
    // journal holds (refusals by a breaker are not attempts).
    let journal = rusqlite::Connection::open(dir.join("journal.db")).unwrap();
    let mut q = journal
        .prepare(
            "SELECT json_extract(body, '$.step'), json_extract(body, '$.activity'),
                    json_extract(body, '$.phase'), COUNT(*),
                    SUM(kind = 'activity_failed')
             FROM events
             WHERE kind IN ('activity_completed', 'activity_failed')
               AND COALESCE(json_extract(body, '$.error.kind'), '') != 'breaker_open'
             GROUP BY 1, 2, 3",
        )
        .unwrap();
    let journal_attempts: BTreeMap<String, (f64, f64)> = q
        .query_map([], |r| {
            Ok((
                format!(
                    r#"step="{}",activity="{}",phase="{}""#,
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?
                ),
                (r.get::<_, f64>(3)?, r.get::<_, f64>(4)?),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let attempts = samples(&text, "sagaflow_step_attempts_total");
    assert_eq!(
        attempts,
        journal_attempts
            .iter()
            .map(|(k, (all, _))| (k.clone(), *all))
            .collect::<BTreeMap<_, _>>(),
        "per-step attempts: /metrics vs the journal"
    );
    let failures = samples(&text, "sagaflow_step_failures_total");
    assert_eq!(
        failures.values().sum::<f64>(),
        journal_attempts
            .values()
            .map(|(_, failed)| failed)
            .sum::<f64>(),
        "failed attempts: {failures:?}"
    );
    assert!(
        failures
            .keys()
            .any(|k| k.contains(r#"kind="card_declined""#)),
        "declines are counted by kind: {failures:?}"
    );
    assert!(
        failures.keys().any(|k| k.contains(r#"kind="http_500""#)),
        "the sandbox's 500s were retried, so attempts outnumber steps: {failures:?}"
    );

    // The queue and the journal writer.
    assert_eq!(
        total(&text, "sagaflow_queue_messages_received_total"),
        orders as f64
    );
    assert_eq!(
        samples(&text, "sagaflow_queue_messages_completed_total").get(r#"reason="started""#),
        Some(&(orders as f64))
    );
    let events: f64 = journal
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert!(
        total(&text, "sagaflow_journal_commit_batch_records_sum") >= events,
        "every event went through a commit"
    );
    assert_eq!(total(&text, "sagaflow_sagas_in_progress"), 0.0);
    assert_eq!(
        samples(&text, "sagaflow_breaker_state").get(r#"dependency="payment",state="closed""#),
        Some(&1.0)
    );
}
