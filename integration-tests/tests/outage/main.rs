//! A flash sale through a dependency outage (issues 13 and 31): orders
//! arrive at a steady rate for 90 s, stock in a Redis of the test's own,
//! payments at a standalone sandbox that answers in 50 ms; in the middle
//! the provider answers 503 to every request for 30 s, or answers every
//! request slowly (3 to 8 s each) for 30 s, or Redis is down for 30 s.
//!
//! With the circuit breakers no order is compensated because of the
//! outage: only declined cards compensate (one order in 23 pays with one;
//! stock is ample, so none sells out). No payment is captured twice, no
//! hold is left, nothing is oversold or left reserved, every saga ends.
//! From the provider's request log (`/_sandbox/calls`): from its first
//! failed answer until a worker's breaker opened, that worker sent it at
//! most 10 requests (GETs included); while it was down, no more than the
//! breaker's probes; and in the 10 s after it came back, never more calls
//! in flight than at the busiest moment before the outage (the ramp).
//! The same sale with the breakers off is run beside it: it loses orders,
//! but none parks on a void (the void settles by time, issue 31).
//!
//! Runs: embedded queue (breakers on and off), two workers sharing the
//! provider through the AMQP trigger (each with its own journal; each
//! ramps on its own), a slow provider, a Redis outage, and the Temporal
//! engine (a smaller sale: 5 orders/s). They run at once (each has its
//! own data, Redis, sandbox and queue), so the CI form (25 orders/s; 10/s
//! for the Redis run) takes about four minutes. The documented run,
//! `SAGAFLOW_OUTAGE=full cargo test --release -p sagaflow-integration-tests
//! --test outage -- --nocapture --test-threads 1`, sends 60 orders/s
//! (5,400 per run) one run at a time; BENCHMARKS.md and RELIABILITY.md
//! have its figures.

#[allow(dead_code)]
#[path = "../shared/broker.rs"]
mod broker;
mod calls;
mod checks;
#[allow(dead_code)]
#[path = "../shared/common.rs"]
mod common;
#[path = "../shared/redis_server.rs"]
mod redis_server;
#[allow(dead_code)]
#[path = "../shared/sandbox.rs"]
mod sandbox;
#[allow(dead_code)]
#[path = "../chaos/world.rs"]
mod world;

use checks::{check_breakers, Figures};
use redis_server::RedisServer;
use sandbox::StandaloneSandbox;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use world::*;

fn full() -> bool {
    std::env::var("SAGAFLOW_OUTAGE").is_ok_and(|v| v == "full")
}

/// What goes wrong.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    /// The provider answers 503 to everything.
    Payment,
    /// The provider answers everything in 3 to 8 s.
    Slow,
    /// Redis is down.
    Redis,
}

/// One sale.
struct Sale {
    engine: &'static str,
    trigger: &'static str,
    fault: Fault,
    breakers: bool,
    workers: usize,
    per_second: usize,
    seconds: u64,
    outage_s: u64,
}

impl Sale {
    fn name(&self) -> String {
        format!(
            "{}-{}-{:?}-{}",
            self.engine,
            self.trigger,
            self.fault,
            if self.breakers {
                "breakers"
            } else {
                "nobreakers"
            }
        )
        .to_lowercase()
    }
}

/// One in 23 orders pays with a card the provider declines
/// (`broker::order_json`).
fn declines(orders: usize) -> usize {
    (0..orders).filter(|n| n % 23 == 7).count()
}

const SKUS: usize = 20;

/// How long the provider takes to answer, outside the fault: a real
/// provider's few tens of ms, so that calls overlap and the calls in
/// flight before and after an outage mean something.
const PROVIDER_LATENCY: &str = "50ms";

/// `GET PATH` of the sandbox with its key, the JSON body.
fn sandbox_get(base_url: &str, path: &str) -> Value {
    let addr = base_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (_, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Sums `stats --json` over the workers' data directories.
fn stats_of(run: &dyn Fn(&Path, &[&str]) -> String, datas: &[PathBuf]) -> Value {
    let mut sum = serde_json::Map::new();
    for data in datas {
        let stats: Value = serde_json::from_str(run(data, &["stats", "--json"]).trim()).unwrap();
        for (k, v) in stats.as_object().unwrap() {
            if let Some(n) = v.as_u64() {
                let before = sum.get(k).and_then(Value::as_u64).unwrap_or(0);
                sum.insert(k.clone(), json!(before + n));
            }
        }
    }
    Value::Object(sum)
}

/// The admin API address a worker logged.
fn admin_url(data: &Path) -> Option<String> {
    let log = std::fs::read_to_string(data.join("worker-0-1.log")).unwrap_or_default();
    log.split("admin API listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|url| url.trim_matches(|c: char| c == '"' || c == '\\').to_owned())
}

fn sell(sale: &Sale) -> Figures {
    let began = Instant::now();
    let name = sale.name();
    let dir = common::data_dir(&format!("outage-{name}"));
    let mut redis = Some(RedisServer::start(&dir.join("redis")));
    let sandbox = StandaloneSandbox::start(
        &dir.join("provider"),
        API_KEY,
        &["--latency", PROVIDER_LATENCY],
    );
    let unique = format!("outage-{name}-{}", std::process::id());
    let datas: Vec<PathBuf> = (0..sale.workers)
        .map(|i| dir.join(format!("worker-{i}")))
        .collect();
    for data in &datas {
        std::fs::create_dir_all(data).unwrap();
    }
    let base_url = format!("base_url = \"{}\"", sandbox.url);
    let key_prefix = format!("key_prefix = \"{unique}:\"");
    let task_queue = format!("task_queue = \"{unique}\"");
    // The slow provider answers in 3 to 8 s: under the shipped 5 s
    // request timeout some answers arrive, slowly (the slow-call rule);
    // the rest time out.
    let request_timeout = if sale.fault == Fault::Slow {
        "5s"
    } else {
        "2s"
    };
    let request_timeout = format!("request_timeout = \"{request_timeout}\"");
    let mut replace = vec![
        ("stock = \"embedded\"", "stock = \"redis\""),
        ("key_prefix = \"sagaflow:\"", key_prefix.as_str()),
        ("payment = \"sandbox\"", "payment = \"http\""),
        ("base_url = \"\"", base_url.as_str()),
        ("request_timeout = \"5s\"", request_timeout.as_str()),
        // Longer than the outage: a void whose authorization's outcome is
        // unknown keeps trying through it (and then finds nothing).
        ("search_lag = \"1m\"", "search_lag = \"30s\""),
    ];
    if !sale.breakers {
        replace.push(("enabled = true", "enabled = false"));
    }
    if sale.engine == "temporal" {
        replace.push(("engine = \"embedded\"", "engine = \"temporal\""));
        replace.push(("task_queue = \"sagaflow\"", task_queue.as_str()));
    }
    let queue = broker::fresh_queue(&format!("outage-{name}"));
    let config = if sale.trigger == "servicebus" {
        broker::servicebus_config(&dir, &queue, &replace)
    } else {
        common::config_with(&dir, &replace)
    };
    let redis_url = redis.as_ref().unwrap().url();
    let run_in = |data: &Path, args: &[&str]| -> String {
        let out = common::output_within(
            &mut command(args, &config, data, &redis_url),
            common::COMMAND_LIMIT,
        );
        common::stdout_of_success(args, out)
    };
    let ok = |args: &[&str]| run_in(&datas[0], args);
    let orders = sale.per_second * sale.seconds as usize;
    // Ample stock: only declines compensate for a business reason.
    let mut seed = vec!["stock".to_owned(), "set".to_owned()];
    for s in 0..SKUS {
        seed.push(format!("sku-{s}={}", orders / SKUS + 10));
    }
    ok(&seed.iter().map(String::as_str).collect::<Vec<_>>());

    let mut workers: Vec<Workers> = datas
        .iter()
        .map(|data| Workers::start(1, &config, data, &redis_url))
        .collect();
    let pids: Vec<u32> = workers.iter().flat_map(Workers::pids).collect();
    // A batch every 250 ms keeps the rate steady.
    let batch = (sale.per_second / 4).max(1);
    let outage_at = Duration::from_secs((sale.seconds - sale.outage_s) / 2);
    let mut outage: Option<std::thread::JoinHandle<RedisServer>> = None;
    let mut outage_started_ms = 0;
    let mut slow_until: Option<Instant> = None;
    let sale_began = Instant::now();
    let sale_began_ms = wall_ms();
    let mut sent = 0;
    // Orders sent before the outage ended: the backlog it left.
    let mut sent_by_recovery = None;
    let mut tick = 0u32;
    while sent < orders {
        let due = sale_began + Duration::from_millis(250) * tick;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        tick += 1;
        if outage_started_ms == 0 && sale_began.elapsed() >= outage_at {
            outage_started_ms = wall_ms();
            let out = format!("{}s", sale.outage_s);
            let knobs = ["sandbox", "knobs", "--url", &sandbox.url];
            match sale.fault {
                Fault::Payment => {
                    ok(&[&knobs[..], &["--outage", out.as_str()]].concat());
                }
                Fault::Slow => {
                    ok(&[&knobs[..], &["--latency", "3s", "--latency-max", "8s"]].concat());
                    slow_until = Some(Instant::now() + Duration::from_secs(sale.outage_s));
                }
                Fault::Redis => {
                    let mut server = redis.take().unwrap();
                    let down = Duration::from_secs(sale.outage_s);
                    outage = Some(std::thread::spawn(move || {
                        server.crash_and_restart(down);
                        server
                    }));
                }
            }
            eprintln!("outage {name}: {:?} at {:?}", sale.fault, began.elapsed());
        }
        if sent_by_recovery.is_none()
            && outage_started_ms > 0
            && wall_ms() >= outage_started_ms + sale.outage_s * 1_000
        {
            sent_by_recovery = Some(sent);
        }
        if slow_until.is_some_and(|until| Instant::now() >= until) {
            slow_until = None;
            let knobs = ["sandbox", "knobs", "--url", &sandbox.url];
            ok(&[
                &knobs[..],
                &["--latency", PROVIDER_LATENCY, "--latency-max", "0ms"],
            ]
            .concat());
        }
        let lines: Vec<String> = (sent..(sent + batch).min(orders))
            .map(|n| broker::order_json(&format!("{unique}-{n:05}"), n, SKUS))
            .collect();
        let file = dir.join("batch.jsonl");
        std::fs::write(&file, lines.join("\n")).unwrap();
        let file = file.to_str().unwrap();
        if sale.trigger == "servicebus" {
            ok(&["send", "--raw", file]);
        } else {
            ok(&["submit", file]);
        }
        sent += lines.len();
        workers.iter_mut().for_each(Workers::check_alive);
    }
    assert!(
        slow_until.is_none(),
        "{name}: the slow window ended within the sale"
    );
    if let Some(thread) = outage.take() {
        redis = Some(thread.join().unwrap());
    }
    let outage_ended_ms = outage_started_ms + sale.outage_s * 1_000;
    eprintln!(
        "outage {name}: {sent} orders sent in {:?}; waiting for every saga to end",
        sale_began.elapsed()
    );

    let limit = Duration::from_secs(if full() { 900 } else { 240 });
    let waited = Instant::now();
    let stats = loop {
        workers.iter_mut().for_each(Workers::check_alive);
        let stats = stats_of(&run_in, &datas);
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        let open = n("running") + n("compensating");
        let pending = if sale.trigger == "servicebus" {
            let (ready, unacked) = broker::depth(&queue);
            ready + unacked
        } else {
            0
        };
        if n("total") == orders as u64 && open == 0 && pending == 0 {
            break stats;
        }
        if waited.elapsed() > limit {
            let logs: String = datas.iter().map(|d| logs_of(d, 0)).collect();
            panic!("outage {name}: not every saga ended within {limit:?}: {stats}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let healths: Vec<Option<std::process::Output>> = datas
        .iter()
        .map(|data| {
            admin_url(data).map(|url| {
                common::output_within(
                    &mut command(
                        &["health", "--json", "--admin", &url],
                        &config,
                        data,
                        &redis_url,
                    ),
                    common::COMMAND_LIMIT,
                )
            })
        })
        .collect();
    workers.iter_mut().for_each(Workers::stop);
    let n = |k: &str| stats[k].as_u64().unwrap_or(0);

    // The provider's books: no double capture, no hold left behind.
    let books = sandbox.ledger();
    let l = &books["ledger"];
    assert_eq!(l["double_captures"], 0, "{name}: {l}");
    assert_eq!(l["orders_with_several_intents"], 0, "{name}: {l}");
    assert_eq!(l["succeeded"].as_u64(), Some(n("completed")), "{name}: {l}");
    if n("parked") == 0 {
        assert_eq!(l["requires_capture"], 0, "{name}: no hold left: {l}");
    }
    // The stock in Redis: nothing oversold, nothing reserved by an ended
    // saga.
    let stock: Value = serde_json::from_str(ok(&["stock", "show", "--json"]).trim()).unwrap();
    assert_eq!(stock["inconsistent"], false, "{name}: {stock}");
    assert_eq!(
        stock["committed_reservations"].as_u64(),
        Some(n("completed")),
        "{name}: {stock}"
    );
    if n("parked") == 0 {
        assert_eq!(stock["reserved"], 0, "{name}: {stock}");
    }
    let sagas: Vec<Value> = datas
        .iter()
        .flat_map(|data| {
            run_in(data, &["list", "--json", "--limit", "100000"])
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect();
    // The backlog is drained when the last order sent before the outage
    // ended has ended.
    let backlog = sent_by_recovery.unwrap_or(orders);
    let drained_ms = sagas
        .iter()
        .filter(|row| {
            let id = row["id"].as_str().unwrap_or("");
            let n: usize = id
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            n < backlog
        })
        .filter_map(|row| row["ended_ms"].as_u64())
        .max()
        .unwrap_or(outage_ended_ms);
    let drained_s = drained_ms.saturating_sub(outage_ended_ms) as f64 / 1_000.0;
    let parked_on_void = sagas
        .iter()
        .filter(|row| row["status"] == "parked")
        .map(|row| row["reason"].as_str().unwrap_or(""))
        // A void looking for an authorization whose answer was lost: it
        // searches (`search: ...`), and finds none yet (`no authorization
        // found`) while the search may trail. (A void of a known
        // authorization has nothing to wait for: the policy's count
        // stands for it.)
        .filter(|reason| {
            reason.contains("payment.void")
                && (reason.contains(": search: ") || reason.contains("no authorization found"))
        })
        .count();

    // Calls the provider turned away after the breaker had had a second
    // to open, until the outage ended. A call is a POST (authorize,
    // capture, cancel, refund).
    let turned = sandbox_get(&sandbox.url, "/_sandbox/turned_away");
    let during: Vec<(u64, bool)> = turned["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let post = r[2].as_str().unwrap_or("").starts_with("POST");
            (r[0].as_u64().unwrap(), post)
        })
        .collect();
    let first = during.first().map_or(outage_started_ms, |r| r.0);
    let calls_during_outage = during
        .iter()
        .filter(|(at, post)| *post && *at > first + 1_000 && *at <= outage_ended_ms)
        .count();
    // One probe per open interval (5 s) and worker, plus one at each end.
    let allowed_probes = sale.workers * ((sale.outage_s / 5) as usize + 2);

    // The request log: every request, with when it was answered.
    let log = calls::parse(&sandbox_get(&sandbox.url, "/_sandbox/calls"));
    let rows: Vec<Value> = healths
        .iter()
        .map(|h| match h {
            Some(out) if out.status.success() || !out.stdout.is_empty() => {
                let health: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                let dependency = if sale.fault == Fault::Redis {
                    "stock"
                } else {
                    "payment"
                };
                health["breakers"]
                    .as_array()
                    .and_then(|rows| rows.iter().find(|b| b["dependency"] == dependency).cloned())
                    .unwrap_or(Value::Null)
            }
            _ => Value::Null,
        })
        .collect();
    // Each worker's calls until its breaker first opened after the
    // outage began, as its log says.
    let before_opening: Vec<usize> = pids
        .iter()
        .zip(&datas)
        .map(|(pid, data)| {
            let text = std::fs::read_to_string(data.join("worker-0-1.log")).unwrap_or_default();
            match calls::opened_in_log(&text, "payment", outage_started_ms) {
                Some(opened) => calls::before_opening(&calls::of_pid(&log, *pid), opened),
                // Never opened: every call until the outage ended.
                None => calls::before_opening(&calls::of_pid(&log, *pid), outage_ended_ms),
            }
        })
        .collect();
    let peak_before = calls::peak_in_flight(&log, sale_began_ms, outage_started_ms);
    let peak_after = calls::peak_in_flight(&log, outage_ended_ms, outage_ended_ms + 10_000);
    let figures = Figures {
        orders,
        completed: n("completed"),
        compensated: n("compensated"),
        parked: n("parked"),
        parked_on_void,
        lost_to_outage: n("compensated") as i64 + n("parked") as i64 - declines(orders) as i64,
        before_opening,
        calls_during_outage,
        allowed_probes,
        peak_before,
        peak_after,
        drained_s,
        seconds: began.elapsed().as_secs_f64().round(),
    };
    eprintln!(
        "outage {name}: {}",
        json!({
            "orders": figures.orders,
            "completed": figures.completed,
            "compensated": figures.compensated,
            "declined": declines(orders),
            "parked": figures.parked,
            "parked_on_void": figures.parked_on_void,
            "lost_to_outage": figures.lost_to_outage,
            "provider_calls_before_opening": figures.before_opening,
            "provider_calls_during_outage": figures.calls_during_outage,
            "provider_calls_turned_away": during.len(),
            "peak_in_flight_before": figures.peak_before,
            "peak_in_flight_10s_after": figures.peak_after,
            "backlog_drained_s_after_recovery": figures.drained_s,
            "seconds": figures.seconds,
        })
    );
    assert_eq!(
        figures.parked_on_void, 0,
        "{name}: a void settles by time and outlasts the outage (search_lag 30s): {stats}"
    );
    if sale.breakers {
        check_breakers(sale, &figures, &stats, &healths, &rows, &datas, &turned);
    }
    broker::delete_queues(&queue);
    drop(redis);
    figures
}

fn payment_sale(engine: &'static str, trigger: &'static str, breakers: bool) -> Sale {
    let per_second = match (full(), engine) {
        (true, _) => 60,
        (false, "temporal") => 5,
        (false, _) => 25,
    };
    Sale {
        engine,
        trigger,
        fault: Fault::Payment,
        breakers,
        workers: 1,
        per_second,
        seconds: 90,
        outage_s: 30,
    }
}

/// The embedded queue, breakers on and off, side by side.
#[test]
fn a_payment_outage_loses_no_order_with_breakers_and_the_same_sale_without_them_does() {
    common::bin();
    let on = std::thread::spawn(|| sell(&payment_sale("embedded", "embedded", true)));
    let off = sell(&payment_sale("embedded", "embedded", false));
    let on = on.join().unwrap();
    eprintln!(
        "outage side by side (embedded queue, {} orders each, 30 s provider outage): lost to the outage without breakers {} ({} parked, {} on a void), with breakers {}; provider requests before the breaker opened {:?}; calls during the outage with breakers {} (at most {} probes); in flight at once before {}, in the 10 s after {}",
        on.orders, off.lost_to_outage, off.parked, off.parked_on_void, on.lost_to_outage, on.before_opening, on.calls_during_outage, on.allowed_probes, on.peak_before, on.peak_after
    );
    assert!(
        off.lost_to_outage > 0,
        "without breakers the outage costs orders (else this sale proves nothing): {off:?}"
    );
}

/// Two workers, each with its own journal and breakers, share the
/// provider through the AMQP trigger: each opens within a handful of
/// failures and ramps on its own.
#[test]
fn a_payment_outage_through_the_amqp_trigger_with_two_workers_loses_no_order() {
    broker::require_broker();
    sell(&Sale {
        workers: 2,
        ..payment_sale("embedded", "servicebus", true)
    });
}

/// A provider that answers every call in 3 to 8 s for 30 s: the slow-call
/// rule and the timeouts open the breaker; nothing is lost. The same sale
/// without breakers runs beside it, for the figures.
#[test]
fn a_slow_provider_loses_no_order() {
    let slow = |breakers| Sale {
        fault: Fault::Slow,
        ..payment_sale("embedded", "embedded", breakers)
    };
    let on = std::thread::spawn(move || sell(&slow(true)));
    let off = sell(&slow(false));
    let on = on.join().unwrap();
    eprintln!(
        "slow provider side by side ({} orders each, 30 s of 3-8 s answers): lost without breakers {} ({} parked), with breakers {}; in flight at once before {}, in the 10 s after {}",
        on.orders, off.lost_to_outage, off.parked, on.lost_to_outage, on.peak_before, on.peak_after
    );
}

#[test]
fn a_redis_outage_loses_no_order_and_oversells_nothing() {
    sell(&Sale {
        engine: "embedded",
        trigger: "embedded",
        fault: Fault::Redis,
        breakers: true,
        workers: 1,
        per_second: if full() { 60 } else { 10 },
        seconds: 90,
        outage_s: 30,
    });
}

#[test]
fn a_payment_outage_on_temporal_loses_no_order() {
    if std::net::TcpStream::connect("127.0.0.1:7233").is_err() {
        panic!("Temporal is not running on 127.0.0.1:7233: start it with `scripts/services.sh temporal`");
    }
    sell(&payment_sale("temporal", "embedded", true));
}
