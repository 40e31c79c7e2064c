//! A flash sale through a dependency outage (issue 13): orders arrive at a
//! steady rate for 90 s, stock in a Redis of the test's own, payments at a
//! standalone sandbox; in the middle the provider answers 503 to every
//! request for 30 s (or Redis is down for 30 s).
//!
//! With the circuit breakers no order is compensated because of the
//! outage: only declined cards compensate (one order in 23 pays with one;
//! stock is ample, so none sells out). No payment is captured twice, no
//! hold is left, nothing is oversold or left reserved, every saga ends,
//! and while the provider is down it sees no more calls from the worker
//! than the breaker's probes (counted in the sandbox's list of the
//! requests the outage turned away). The same sale with the breakers off
//! is run beside it, and both figures are printed side by side.
//!
//! Runs: embedded queue (breakers on and off), the AMQP trigger, a Redis
//! outage, and the Temporal engine (a smaller sale: 5 orders/s). They run
//! at once (each has its own data, Redis, sandbox and queue), so the CI
//! form (25 orders/s; 10/s for the Redis run) takes about three minutes.
//! The documented run, `SAGAFLOW_OUTAGE=full cargo test --release -p
//! sagaflow-integration-tests --test outage -- --nocapture --test-threads 1`,
//! sends 60 orders/s (5,400 per run) one run at a time; BENCHMARKS.md
//! and RELIABILITY.md have its figures.

#[allow(dead_code)]
#[path = "../shared/broker.rs"]
mod broker;
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

use redis_server::RedisServer;
use sandbox::StandaloneSandbox;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use world::*;

fn full() -> bool {
    std::env::var("SAGAFLOW_OUTAGE").is_ok_and(|v| v == "full")
}

/// What goes down.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    Payment,
    Redis,
}

/// One sale.
struct Sale {
    engine: &'static str,
    trigger: &'static str,
    fault: Fault,
    breakers: bool,
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

/// What one sale measured.
#[derive(Debug)]
struct Figures {
    orders: usize,
    completed: u64,
    compensated: u64,
    parked: u64,
    lost_to_outage: i64,
    calls_during_outage: usize,
    allowed_probes: usize,
    seconds: f64,
}

fn sell(sale: &Sale) -> Figures {
    let began = Instant::now();
    let name = sale.name();
    let dir = common::data_dir(&format!("outage-{name}"));
    let mut redis = Some(RedisServer::start(&dir.join("redis")));
    let sandbox = StandaloneSandbox::start(&dir.join("provider"), API_KEY, &[]);
    let unique = format!("outage-{name}-{}", std::process::id());
    let data = dir.join("worker");
    std::fs::create_dir_all(&data).unwrap();
    let base_url = format!("base_url = \"{}\"", sandbox.url);
    let key_prefix = format!("key_prefix = \"{unique}:\"");
    let task_queue = format!("task_queue = \"{unique}\"");
    let mut replace = vec![
        ("stock = \"embedded\"", "stock = \"redis\""),
        ("key_prefix = \"sagaflow:\"", key_prefix.as_str()),
        ("payment = \"sandbox\"", "payment = \"http\""),
        ("base_url = \"\"", base_url.as_str()),
        ("request_timeout = \"5s\"", "request_timeout = \"2s\""),
        ("search_lag = \"1m\"", "search_lag = \"0ms\""),
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
        broker::servicebus_config(&data, &queue, &replace)
    } else {
        common::config_with(&data, &replace)
    };
    let redis_url = redis.as_ref().unwrap().url();
    let run = |args: &[&str]| command(args, &config, &data, &redis_url);
    let ok = |args: &[&str]| -> String {
        let out = run(args).output().expect("run sagaflow");
        common::stdout_of_success(args, out)
    };
    let orders = sale.per_second * sale.seconds as usize;
    // Ample stock: only declines compensate for a business reason.
    let mut seed = vec!["stock".to_owned(), "set".to_owned()];
    for s in 0..SKUS {
        seed.push(format!("sku-{s}={}", orders / SKUS + 10));
    }
    ok(&seed.iter().map(String::as_str).collect::<Vec<_>>());

    let mut workers = Workers::start(1, &config, &data, &redis_url);
    // A batch every 250 ms keeps the rate steady.
    let batch = (sale.per_second / 4).max(1);
    let outage_at = Duration::from_secs((sale.seconds - sale.outage_s) / 2);
    let mut outage: Option<(u64, std::thread::JoinHandle<RedisServer>)> = None;
    let mut outage_started_ms = 0;
    let sale_began = Instant::now();
    let mut sent = 0;
    let mut tick = 0u32;
    while sent < orders {
        let due = sale_began + Duration::from_millis(250) * tick;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        tick += 1;
        if outage.is_none() && outage_started_ms == 0 && sale_began.elapsed() >= outage_at {
            outage_started_ms = wall_ms();
            match sale.fault {
                Fault::Payment => {
                    let out = format!("{}s", sale.outage_s);
                    ok(&["sandbox", "knobs", "--url", &sandbox.url, "--outage", &out]);
                }
                Fault::Redis => {
                    let mut server = redis.take().unwrap();
                    let down = Duration::from_secs(sale.outage_s);
                    outage = Some((
                        outage_started_ms,
                        std::thread::spawn(move || {
                            server.crash_and_restart(down);
                            server
                        }),
                    ));
                }
            }
            eprintln!(
                "outage {name}: {:?} down at {:?}",
                sale.fault,
                began.elapsed()
            );
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
        workers.check_alive();
    }
    if let Some((_, thread)) = outage.take() {
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
        workers.check_alive();
        let stats: Value = serde_json::from_str(ok(&["stats", "--json"]).trim()).unwrap();
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
            panic!(
                "outage {name}: not every saga ended within {limit:?}: {stats}\n{}",
                logs_of(&data, 0)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let log = std::fs::read_to_string(data.join("worker-0-1.log")).unwrap_or_default();
    let admin = log
        .split("admin API listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|url| url.trim_matches(|c: char| c == '"' || c == '\\').to_owned());
    let health = admin.map(|url| run(&["health", "--json", "--admin", &url]).output());
    workers.stop();
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

    // Calls the provider turned away after the breaker had had a second
    // to open, until the outage ended. A call is a POST (authorize,
    // capture, cancel, refund); after a 5xx the adapter reads the
    // intent back (a GET) within the same call, which is not counted.
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
    // One probe per open interval (5 s), plus one at each end.
    let allowed_probes = (sale.outage_s / 5) as usize + 2;
    let figures = Figures {
        orders,
        completed: n("completed"),
        compensated: n("compensated"),
        parked: n("parked"),
        lost_to_outage: n("compensated") as i64 + n("parked") as i64 - declines(orders) as i64,
        calls_during_outage,
        allowed_probes,
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
            "lost_to_outage": figures.lost_to_outage,
            "provider_calls_during_outage": figures.calls_during_outage,
            "provider_calls_turned_away": during.len(),
            "seconds": figures.seconds,
        })
    );
    if sale.breakers {
        assert_eq!(
            n("total"),
            orders as u64,
            "{name}: one saga per order: {stats}"
        );
        assert_eq!(n("parked"), 0, "{name}: every saga ended: {stats}");
        assert_eq!(
            figures.lost_to_outage,
            0,
            "{name}: only declined cards compensate: {stats}\n{}",
            logs_of(&data, 0)
        );
        if sale.fault == Fault::Payment {
            assert!(
                calls_during_outage <= allowed_probes,
                "{name}: the provider saw {calls_during_outage} calls during the outage, more than the breaker's {allowed_probes} probes: {turned}"
            );
        }
        let health = health
            .unwrap_or_else(|| panic!("{name}: the worker logged no admin address"))
            .expect("sagaflow health");
        assert!(
            health.status.success(),
            "{name}: every breaker closed again after the sale: {}",
            String::from_utf8_lossy(&health.stdout)
        );
        let health: Value = serde_json::from_slice(&health.stdout).unwrap();
        let dependency = if sale.fault == Fault::Payment {
            "payment"
        } else {
            "stock"
        };
        let row = health["breakers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["dependency"] == dependency)
            .unwrap_or_else(|| panic!("{name}: no {dependency} breaker: {health}"));
        assert!(
            row["opened_total"].as_u64() >= Some(1),
            "{name}: the {dependency} breaker opened during the outage: {health}"
        );
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
        "outage side by side (embedded queue, {} orders each, 30 s provider outage): lost to the outage without breakers {} ({} parked), with breakers {}; provider calls during the outage with breakers {} (at most {} probes)",
        on.orders, off.lost_to_outage, off.parked, on.lost_to_outage, on.calls_during_outage, on.allowed_probes
    );
    assert!(
        off.lost_to_outage > 0,
        "without breakers the outage costs orders (else this sale proves nothing): {off:?}"
    );
}

#[test]
fn a_payment_outage_through_the_amqp_trigger_loses_no_order() {
    broker::require_broker();
    sell(&payment_sale("embedded", "servicebus", true));
}

#[test]
fn a_redis_outage_loses_no_order_and_oversells_nothing() {
    sell(&Sale {
        engine: "embedded",
        trigger: "embedded",
        fault: Fault::Redis,
        breakers: true,
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
