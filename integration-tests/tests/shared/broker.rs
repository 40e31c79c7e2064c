//! The local AMQP 1.0 broker (RabbitMQ with rabbitmq_amqp1_0) that stands
//! in for Service Bus: queues per test, depths, and orders to send.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The connection string every test uses.
pub const CONNECTION: &str = "amqp://guest:guest@127.0.0.1:5672";

/// Panics with the setup command when no broker answers.
pub fn require_broker() {
    if std::net::TcpStream::connect("127.0.0.1:5672").is_err() {
        panic!("no AMQP broker on 127.0.0.1:5672: start it with `scripts/services.sh rabbitmq` (scripts/test.sh does)");
    }
}

fn services_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh")
}

/// Declares a fresh queue `NAME` and `NAME.dlq` (emptied if they exist)
/// and returns NAME.
pub fn fresh_queue(name: &str) -> String {
    require_broker();
    let name = format!("{name}-{}", std::process::id());
    // Deleting first makes a rerun start empty.
    delete_queues(&name);
    let out = Command::new("bash")
        .arg(services_script())
        .args(["queue", &name])
        .output()
        .expect("run scripts/services.sh");
    assert!(
        out.status.success(),
        "declaring {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    name
}

/// How long a `rabbitmqctl` command may take (`await_startup` after a
/// restart takes seconds); past it the test fails naming the command.
const RABBITMQCTL_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

/// Runs `rabbitmqctl ARGS`; asserts it succeeded.
#[allow(dead_code)] // the e2e binary never restarts the broker
pub fn rabbitmqctl(args: &[&str]) {
    let out = output_within(Command::new("rabbitmqctl").args(args), RABBITMQCTL_LIMIT);
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops the broker's application for `down` and starts it again: every
/// connection drops; durable queues and their messages stay. Only for a
/// test binary of its own (no other test may use the broker meanwhile).
#[allow(dead_code)] // the e2e binary never restarts the broker
pub fn restart_broker(down: std::time::Duration) {
    rabbitmqctl(&["stop_app"]);
    std::thread::sleep(down);
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
}

/// (ready, unacknowledged) messages of `queue`, straight from the broker.
pub fn depth(queue: &str) -> (u64, u64) {
    let mut cmd = Command::new("rabbitmqctl");
    cmd.args([
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    ]);
    let out = output_within(&mut cmd, RABBITMQCTL_LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() == 3 && cols[0] == queue {
            return (cols[1].parse().unwrap(), cols[2].parse().unwrap());
        }
    }
    panic!("queue {queue} not found in rabbitmqctl list_queues:\n{text}");
}

/// Waits (up to 10 s: the broker's counters lag a moment) for `queue` to
/// hold `expected` (ready, unacknowledged) messages; returns what it holds.
pub fn wait_depth(queue: &str, expected: (u64, u64)) -> (u64, u64) {
    let began = std::time::Instant::now();
    loop {
        let now = depth(queue);
        if now == expected || began.elapsed() > std::time::Duration::from_secs(10) {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Deletes `queue` and its dead-letter queue (after a passing test).
pub fn delete_queues(queue: &str) {
    for q in [queue.to_owned(), format!("{queue}.dlq")] {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_queue", "-q", &q])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A config for the Service Bus trigger on `queue`, with more `replace`.
pub fn servicebus_config(dir: &Path, queue: &str, replace: &[(&str, &str)]) -> PathBuf {
    let queue_line = format!("queue = \"{queue}\"");
    let dlq_line = format!("dead_letter_queue = \"{queue}.dlq\"");
    let mut all = vec![
        ("trigger = \"embedded\"", "trigger = \"servicebus\""),
        ("queue = \"orders\"", queue_line.as_str()),
        ("dead_letter_queue = \"orders.dlq\"", dlq_line.as_str()),
    ];
    all.extend_from_slice(replace);
    config_with(dir, &all)
}

/// A `sagaflow` command with the broker's connection string set.
pub fn sb_command(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .env_remove("SAGAFLOW_CONFIG")
        .env_remove("SAGAFLOW_DATA")
        .env("SAGAFLOW_SERVICEBUS_CONNECTION", CONNECTION);
    c
}

/// Runs a `sagaflow` command with the connection string; asserts success.
pub fn sb_ok(args: &[&str]) -> String {
    stdout_of_success(args, sb_command(args).output().expect("run sagaflow"))
}

/// One valid order as a JSON line. About one in 23 pays with a decline card
/// (23 is prime to the SKU counts, so declines spread over every SKU).
pub fn order_json(id: &str, n: usize, skus: usize) -> String {
    let card = if n % 23 == 7 {
        "pm_card_chargeDeclined"
    } else {
        "pm_card_visa"
    };
    format!(
        r#"{{"order_id":"{id}","customer":"cust-{}","items":[{{"sku":"sku-{}","qty":1}}],"amount":1999,"currency":"usd","payment_method":"{card}"}}"#,
        n % 97,
        n % skus
    )
}

/// `sagaflow stock set` for `skus` SKUs sharing `units` units.
pub fn seed_stock(config: &Path, data: &str, skus: usize, units: usize) {
    let mut args = vec![
        "stock".to_owned(),
        "set".to_owned(),
        "--config".to_owned(),
        config.to_str().unwrap().to_owned(),
        "--data".to_owned(),
        data.to_owned(),
    ];
    for s in 0..skus {
        let share = units / skus + usize::from(s < units % skus);
        args.push(format!("sku-{s}={share}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    sb_ok(&refs);
}
