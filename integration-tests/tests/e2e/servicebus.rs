//! The Service Bus trigger against a real AMQP 1.0 broker (RabbitMQ with
//! rabbitmq_amqp1_0): every valid message becomes exactly one saga that
//! ends, malformed ones are dead-lettered with a reason, duplicates and
//! redeliveries start nothing twice, and a SIGKILL loses nothing.

use crate::books::{check_books, check_journal};
use crate::broker::*;
use crate::common::*;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

/// The malformed messages: each kind of bad input, 20 in all.
fn malformed() -> Vec<String> {
    let good = order_json("bad-template", 1, 1);
    let mut out = Vec::new();
    for i in 0..4 {
        out.push(format!("this is not json {i}"));
    }
    for i in 0..3 {
        out.push(format!(
            r#"{{"order_id":"bad-missing-{i}","customer":"c"}}"#
        ));
    }
    for i in 0..3 {
        out.push(
            good.replace("bad-template", &format!("bad-neg-{i}"))
                .replace(r#""qty":1"#, r#""qty":-2"#),
        );
    }
    for i in 0..3 {
        out.push(
            good.replace("bad-template", &format!("bad-zero-{i}"))
                .replace(r#""qty":1"#, r#""qty":0"#),
        );
    }
    for i in 0..3 {
        out.push(
            good.replace("bad-template", &format!("bad-cur-{i}"))
                .replace("usd", "zzz"),
        );
    }
    for i in 0..2 {
        out.push(format!("[{i}, 2, 3]"));
    }
    // Over max_message_bytes (4096 in these tests).
    out.push(good.replace("bad-template", &format!("bad-big-{}", "x".repeat(5000))));
    out.push(
        good.replace("bad-template", "bad-amount")
            .replace(r#""amount":1999"#, r#""amount":0"#),
    );
    assert_eq!(out.len(), 20);
    out
}

/// A deterministic shuffle, so duplicates and bad messages are spread out.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

fn write_lines(path: &std::path::Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn stats(config: &str, data: &str) -> serde_json::Value {
    let out = sb_ok(&["stats", "--json", "--config", config, "--data", data]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("stats is not JSON ({e}): {out}"))
}

/// Runs the worker until idle, failing after `limit`.
fn run_until_idle(config: &str, data: &str, log: &std::path::Path, limit: Duration) {
    let mut child = sb_command(&[
        "run",
        "--until-idle",
        "--max-live",
        "200",
        "--config",
        config,
        "--data",
        data,
    ])
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log).unwrap())
    .spawn()
    .unwrap();
    let began = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "the worker failed ({status}):\n{}",
                std::fs::read_to_string(log).unwrap()
            );
            return;
        }
        if began.elapsed() > limit {
            let _ = child.kill();
            panic!(
                "the worker did not go idle within {limit:?}:\n{}",
                std::fs::read_to_string(log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_thousand_messages_with_malformed_and_duplicates_become_exactly_the_valid_sagas() {
    let queue = fresh_queue("sb-e2e-1000");
    let dir = data_dir("sb-1000");
    let d = dir.to_str().unwrap().to_owned();
    let config = servicebus_config(
        &dir,
        &queue,
        &[("max_message_bytes = 262144", "max_message_bytes = 4096")],
    );
    let c = config.to_str().unwrap().to_owned();
    let (skus, units) = (10, 600);
    seed_stock(&config, &d, skus, units);

    // 930 distinct orders, 50 of them sent twice, 20 malformed: 1,000.
    let unique = 930;
    let mut lines: Vec<String> = (0..unique)
        .map(|n| order_json(&format!("sb-{n:05}"), n, skus))
        .collect();
    lines.extend((0..50).map(|k| order_json(&format!("sb-{:05}", k * 17), k * 17, skus)));
    lines.extend(malformed());
    assert_eq!(lines.len(), 1_000);
    shuffle(&mut lines, 0x5eed);
    let file = dir.join("orders.jsonl");
    write_lines(&file, &lines);

    // Without --raw, send refuses the lot and sends nothing.
    let refused = sb_command(&["send", file.to_str().unwrap(), "--config", &c])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("20 of 1000 orders are invalid; nothing was sent"));
    assert_eq!(wait_depth(&queue, (0, 0)), (0, 0));

    let sent = sb_ok(&["send", "--raw", file.to_str().unwrap(), "--config", &c]);
    assert!(sent.contains("sent 1000 message(s)"), "{sent}");
    assert_eq!(wait_depth(&queue, (1_000, 0)), (1_000, 0));

    run_until_idle(&c, &d, &dir.join("worker.log"), Duration::from_secs(180));

    let s = stats(&c, &d);
    assert_eq!(s["total"], unique, "one saga per distinct order: {s}");
    let completed = s["completed"].as_u64().unwrap();
    assert_eq!(
        completed + s["compensated"].as_u64().unwrap(),
        unique as u64,
        "{s}"
    );
    assert_eq!(completed, units as u64, "the sale sold out: {s}");
    check_journal(&dir, unique);
    check_books(&dir, units, completed);

    let dl: Vec<serde_json::Value> = sb_ok(&["dlq", "list", "--json", "--config", &c])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        dl.len(),
        20,
        "every malformed message is dead-lettered once"
    );
    let mut reasons = BTreeMap::new();
    for r in &dl {
        assert!(!r["description"].as_str().unwrap().is_empty(), "{r}");
        *reasons
            .entry(r["reason"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(reasons.get("InvalidJson"), Some(&4), "{reasons:?}");
    assert_eq!(reasons.get("MessageTooLarge"), Some(&1), "{reasons:?}");
    assert_eq!(reasons.get("InvalidOrder"), Some(&15), "{reasons:?}");
    assert!(dl.iter().any(|r| r["description"]
        .as_str()
        .unwrap()
        .contains("unknown currency \"zzz\"")));
    assert_eq!(wait_depth(&queue, (0, 0)), (0, 0), "the queue is empty");
    assert_eq!(
        wait_depth(&format!("{queue}.dlq"), (20, 0)),
        (20, 0),
        "listing leaves dead letters in place"
    );

    // An operator fixes one and puts it back: it becomes a saga.
    let fixed = order_json("bad-zero-1", 3, skus);
    let body = dir.join("fixed.json");
    std::fs::write(&body, &fixed).unwrap();
    sb_ok(&[
        "dlq",
        "resubmit",
        "bad-zero-1",
        "--body",
        body.to_str().unwrap(),
        "--config",
        &c,
    ]);
    assert_eq!(wait_depth(&format!("{queue}.dlq"), (19, 0)), (19, 0));
    run_until_idle(&c, &d, &dir.join("worker-2.log"), Duration::from_secs(60));
    let s = stats(&c, &d);
    assert_eq!(s["total"], unique + 1, "{s}");
    assert_eq!(wait_depth(&queue, (0, 0)), (0, 0));
    delete_queues(&queue);
}

#[test]
fn sigkill_with_unsettled_messages_loses_and_repeats_nothing() {
    let queue = fresh_queue("sb-e2e-kill");
    let dir = data_dir("sb-kill");
    let d = dir.to_str().unwrap().to_owned();
    let config = servicebus_config(&dir, &queue, &[("latency = \"0ms\"", "latency = \"20ms\"")]);
    let c = config.to_str().unwrap().to_owned();
    let (orders, skus, units) = (1_000, 10, 900);
    seed_stock(&config, &d, skus, units);
    let lines: Vec<String> = (0..orders)
        .map(|n| order_json(&format!("k-{n:05}"), n, skus))
        .collect();
    let file = dir.join("orders.jsonl");
    write_lines(&file, &lines);
    sb_ok(&["send", file.to_str().unwrap(), "--config", &c]);

    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("service bus kill test seed {seed}");
    for kill in 0..4 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_millis(400 + seed % 1_200);
        let log = dir.join(format!("run-{kill}.log"));
        let mut child = sb_command(&["run", "--max-live", "40", "--config", &c, "--data", &d])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(wait);
        assert!(
            child.try_wait().unwrap().is_none(),
            "the worker ended early:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        let (_, unacked) = depth(&queue);
        eprintln!("kill {kill} after {wait:?}: {unacked} message(s) unsettled");
        child.kill().unwrap();
        child.wait().unwrap();
    }
    run_until_idle(&c, &d, &dir.join("final.log"), Duration::from_secs(180));

    let s = stats(&c, &d);
    assert_eq!(s["total"], orders, "{s}");
    assert_eq!(s["parked"], 0, "{s}");
    let completed = s["completed"].as_u64().unwrap();
    assert_eq!(
        completed + s["compensated"].as_u64().unwrap(),
        orders as u64
    );
    check_journal(&dir, orders);
    check_books(&dir, units, completed);
    assert_eq!(wait_depth(&queue, (0, 0)), (0, 0), "the queue is empty");
    assert_eq!(
        wait_depth(&format!("{queue}.dlq"), (0, 0)),
        (0, 0),
        "nothing was dead-lettered"
    );
    delete_queues(&queue);
}

/// The W3C trace context a message carries (`traceparent`, as a producer
/// sets it) goes on with its saga to the payment provider and to the
/// trace collector: every request the order's attempts make carries the
/// same trace id, each under its attempt's span id; the spans the worker
/// exports over OTLP nest saga > step > attempt in that trace, under the
/// producer's span. An order sent without one calls without one, and its
/// spans form a trace of their own.
#[test]
fn the_trace_a_message_carries_reaches_the_provider_and_the_collector() {
    trace_through("embedded");
}

/// The same on the Temporal engine.
#[test]
fn the_trace_a_message_carries_reaches_the_provider_and_the_collector_on_temporal() {
    if std::net::TcpStream::connect("127.0.0.1:7233").is_err() {
        panic!("Temporal is not running on 127.0.0.1:7233: start it with `scripts/services.sh temporal`");
    }
    trace_through("temporal");
}

fn trace_through(engine: &str) {
    const KEY: &str = "sk_test_trace_e2e";
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PRODUCER_SPAN: &str = "00f067aa0ba902b7";
    let traceparent = format!("00-{TRACE}-{PRODUCER_SPAN}-01");
    let unique = format!("trace-{engine}-{}", std::process::id());
    let queue = fresh_queue(&format!("sb-e2e-trace-{engine}"));
    let dir = data_dir(&format!("sb-trace-{engine}"));
    let d = dir.to_str().unwrap().to_owned();
    let sandbox = crate::sandbox::StandaloneSandbox::start(&dir.join("provider"), KEY, &[]);
    let collector = crate::otlp::OtlpReceiver::start();
    let base_url = format!("base_url = \"{}\"", sandbox.url);
    let endpoint = format!("endpoint = \"{}\"", collector.url);
    let engine_line = format!("engine = \"{engine}\"");
    let task_queue = format!("task_queue = \"{unique}\"");
    let config = servicebus_config(
        &dir,
        &queue,
        &[
            ("payment = \"sandbox\"", "payment = \"http\""),
            ("base_url = \"\"", base_url.as_str()),
            ("endpoint = \"\"", endpoint.as_str()),
            ("protocol = \"http/protobuf\"", "protocol = \"http/json\""),
            ("engine = \"embedded\"", engine_line.as_str()),
            ("task_queue = \"sagaflow\"", task_queue.as_str()),
        ],
    );
    let c = config.to_str().unwrap().to_owned();
    seed_stock(&config, &d, 1, 10);
    let traced_id = format!("{unique}-traced");
    let plain_id = format!("{unique}-plain");
    let traced = dir.join("traced.jsonl");
    let plain = dir.join("plain.jsonl");
    write_lines(&traced, &[order_json(&traced_id, 0, 1)]);
    write_lines(&plain, &[order_json(&plain_id, 1, 1)]);
    let property = format!("traceparent={traceparent}");
    sb_ok(&[
        "send",
        traced.to_str().unwrap(),
        "--property",
        &property,
        "--config",
        &c,
    ]);
    sb_ok(&["send", plain.to_str().unwrap(), "--config", &c]);

    let log = dir.join("worker.log");
    let status = sb_command(&["run", "--until-idle", "--config", &c, "--data", &d])
        .env("SAGAFLOW_PAYMENT_API_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let s = stats(&c, &d);
    assert_eq!(
        (s["total"].as_u64(), s["completed"].as_u64()),
        (Some(2), Some(2)),
        "{s}"
    );

    // What the provider saw, from its own record of the headers.
    let addr = sandbox.url.trim_start_matches("http://");
    let auth = format!("Bearer {KEY}");
    let (code, _, body) = http_get_with(addr, "/_sandbox/traces", &[("Authorization", &auth)]);
    assert_eq!(code, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let requests = body["requests"].as_array().unwrap();
    let calls: Vec<&str> = requests.iter().map(|r| r[1].as_str().unwrap()).collect();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("POST /v1/payment_intents"))
            && calls.iter().any(|c| c.ends_with("/capture")),
        "the authorization and the capture carried the trace: {calls:?}"
    );
    let mut provider_parents = std::collections::BTreeSet::new();
    for r in requests {
        let tp = r[2].as_str().unwrap();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(
            parts[1], TRACE,
            "every traced request is in the message's trace: {tp}"
        );
        assert_ne!(
            parts[2], PRODUCER_SPAN,
            "a child of the producer's span: {tp}"
        );
        assert_eq!(parts[3], "01", "{tp}");
        provider_parents.insert(parts[2].to_owned());
    }
    assert!(
        provider_parents.len() >= 2,
        "each attempt has its own parent id: {provider_parents:?}"
    );
    // Only the traced order's requests carried it: the plain one made as
    // many calls, none traced.
    let ledger = sandbox.ledger();
    let all_posts = ledger["requests"].as_array().map_or(0, Vec::len);
    let traced_posts = calls.iter().filter(|c| c.starts_with("POST")).count();
    assert!(
        all_posts == 0 || traced_posts < all_posts,
        "the order without a trace calls without one: {traced_posts} of {all_posts}"
    );

    // What the collector got: both sagas' spans, each saga's nested.
    let of = |spans: &[crate::otlp::ReceivedSpan], id: &str| -> Vec<crate::otlp::ReceivedSpan> {
        spans
            .iter()
            .filter(|s| s.attribute("sagaflow.saga.id").as_deref() == Some(id))
            .cloned()
            .collect()
    };
    let has_saga_span = |spans: &[crate::otlp::ReceivedSpan], id: &str| {
        of(spans, id).iter().any(|s| s.name.starts_with("saga "))
    };
    let spans = collector.wait_for(Duration::from_secs(15), |spans| {
        has_saga_span(spans, &traced_id) && has_saga_span(spans, &plain_id)
    });
    let requests_seen = collector.requests();
    let traced_spans = of(&spans, &traced_id);
    let shown = || {
        traced_spans
            .iter()
            .map(|s| {
                format!(
                    "{} {}<-{} {}",
                    s.trace_id, s.span_id, s.parent_span_id, s.name
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let sagas: Vec<_> = traced_spans
        .iter()
        .filter(|s| s.name.starts_with("saga "))
        .collect();
    assert_eq!(
        sagas.len(),
        1,
        "one saga span; requests {requests_seen:?}:\n{}",
        shown()
    );
    let saga = sagas[0];
    assert_eq!(saga.name, "saga checkout");
    assert_eq!(saga.service, "sagaflow");
    assert_eq!(
        saga.attribute("sagaflow.outcome").as_deref(),
        Some("completed")
    );
    assert_eq!(
        saga.parent_span_id, PRODUCER_SPAN,
        "the saga continues the producer's span"
    );
    for span in &traced_spans {
        assert_eq!(
            span.trace_id,
            TRACE,
            "every span is in the message's trace:\n{}",
            shown()
        );
        assert_eq!(span.service, "sagaflow");
    }
    let steps: Vec<_> = traced_spans
        .iter()
        .filter(|s| s.name.starts_with("step "))
        .collect();
    let step_names: std::collections::BTreeSet<String> = steps
        .iter()
        .filter_map(|s| s.attribute("sagaflow.step"))
        .collect();
    assert_eq!(
        step_names.len(),
        5,
        "a span for each of the checkout's five steps:\n{}",
        shown()
    );
    for step in &steps {
        assert_eq!(
            step.parent_span_id,
            saga.span_id,
            "{}:\n{}",
            step.name,
            shown()
        );
        assert_eq!(
            step.attribute("sagaflow.outcome").as_deref(),
            Some("completed")
        );
    }
    let attempts: Vec<_> = traced_spans
        .iter()
        .filter(|s| s.name.starts_with("attempt "))
        .collect();
    assert!(attempts.len() >= 5, "{}", shown());
    for attempt in &attempts {
        let parent = steps
            .iter()
            .find(|s| s.span_id == attempt.parent_span_id)
            .unwrap_or_else(|| panic!("{} has no step parent:\n{}", attempt.name, shown()));
        assert_eq!(
            parent.attribute("sagaflow.step"),
            attempt.attribute("sagaflow.step")
        );
        assert!(attempt.attribute("sagaflow.attempt").is_some());
        assert!(attempt.attribute("sagaflow.outcome").is_some());
    }
    // The provider's parent ids are the payment attempts' span ids.
    let payment_attempts: std::collections::BTreeSet<String> = attempts
        .iter()
        .filter(|a| {
            matches!(
                a.attribute("sagaflow.step").as_deref(),
                Some("authorize_payment" | "capture_payment")
            )
        })
        .map(|a| a.span_id.clone())
        .collect();
    assert!(
        provider_parents.is_subset(&payment_attempts),
        "the provider saw {provider_parents:?}; the payment attempts' spans are {payment_attempts:?}"
    );
    // The order without a context: a trace of its own, rooted at its saga.
    let plain_spans = of(&spans, &plain_id);
    let plain_saga = plain_spans
        .iter()
        .find(|s| s.name.starts_with("saga "))
        .expect("the plain order's saga span");
    assert_ne!(plain_saga.trace_id, TRACE);
    assert!(plain_saga.parent_span_id.is_empty(), "{:?}", plain_saga.raw);
    assert!(plain_spans
        .iter()
        .all(|s| s.trace_id == plain_saga.trace_id));

    if engine == "embedded" {
        // The saga keeps the context with its order, for every later
        // attempt and every replay.
        let journal = rusqlite::Connection::open(dir.join("journal.db")).unwrap();
        let input = |id: &str| -> String {
            journal
                .query_row("SELECT input FROM sagas WHERE id = ?1", [id], |r| r.get(0))
                .unwrap()
        };
        assert!(
            input(&traced_id).contains(&traceparent),
            "{}",
            input(&traced_id)
        );
        assert!(
            !input(&plain_id).contains("traceparent"),
            "{}",
            input(&plain_id)
        );
    }
    delete_queues(&queue);
}
