//! Bulk operator commands at the scale of a bad hour, on both engines: a
//! stock-store fault parks hundreds of sagas past the pivot; a dry run lists
//! exactly them; once the fault is gone a bulk retry completes every one and
//! the books balance, read from the stores and the sandbox's ledger. And a
//! bulk retry whose CLI and worker are both SIGKILLed half way, resumed
//! with the same bulk id, commands each saga exactly once.

use crate::books::check_books;
use crate::common::bin;
use crate::scenarios::{on_both_engines, Env};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// `commit_stock` gives up after two quick attempts, so a store that
/// refuses commits parks the saga (it is past the pivot) at once. The
/// stock breaker is off: its commits failing would open it (a breaker
/// guards the whole store), and the sagas would wait for it instead of
/// parking, which is what this test needs.
pub(crate) const COMMIT_GIVES_UP: [(&str, &str); 2] = [
    ("[breakers.stock]\nopen_for = \"5s\"", "[breakers.stock]\nenabled = false"),
    (
    "action = \"stock.commit\"\ntimeout = \"2s\"\nretry = { initial_interval = \"100ms\", backoff_coefficient = 2.0, max_interval = \"30s\", max_attempts = 0 }",
    "action = \"stock.commit\"\ntimeout = \"2s\"\nretry = { initial_interval = \"10ms\", max_attempts = 2 }",
    ),
];

const UNITS: usize = 1_000;
const TERMS: &str = "status=parked and step=commit_stock and error~injected fault";

/// The fault: the embedded stock store refuses to turn a reservation into
/// a sale (reserve, release and everything else still work).
fn refuse_commits(env: &Env, on: bool) {
    let stock = rusqlite::Connection::open(env.dir.join("stock.db")).unwrap();
    stock
        .execute_batch(if on {
            "CREATE TRIGGER fault_commit BEFORE UPDATE OF state ON reservations
             WHEN NEW.state = 'committed'
             BEGIN SELECT RAISE(ABORT, 'injected fault: the stock store refuses commit'); END;"
        } else {
            "DROP TRIGGER fault_commit;"
        })
        .unwrap();
}

/// `orders` orders submitted in one file, run until every saga has ended
/// or parked on the refused commit; their ids.
fn park_on_commit(env: &Env, orders: usize) -> BTreeSet<String> {
    env.sagaflow(&["stock", "set", &format!("SKU-1={UNITS}")]);
    refuse_commits(env, true);
    let ids: BTreeSet<String> = (0..orders).map(|i| env.id(&format!("o{i}"))).collect();
    let lines: String = ids
        .iter()
        .map(|id| {
            format!(
                "{{\"order_id\":\"{id}\",\"customer\":\"c1\",\"items\":[{{\"sku\":\"SKU-1\",\"qty\":1}}],\"amount\":1999,\"currency\":\"usd\",\"payment_method\":\"pm_card_visa\"}}\n"
            )
        })
        .collect();
    let file = env.dir.join("orders.jsonl");
    std::fs::write(&file, lines).unwrap();
    env.sagaflow(&["submit", file.to_str().unwrap()]);
    env.run_until_idle();
    ids
}

/// The sagas `terms` select, as a dry run lists them.
fn dry_run(env: &Env, terms: &str) -> BTreeSet<String> {
    env.sagaflow(&["retry", "--where", terms, "--dry-run", "--json"])
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Waits (up to `limit`) until every one of `ids` has completed.
fn wait_completed(env: &Env, ids: &BTreeSet<String>, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let done = dry_run(env, "status=completed");
        if done.is_superset(ids) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} sagas completed after {limit:?}",
            done.intersection(ids).count(),
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Per saga, the commands of bulk run `bulk` in its history (the journal,
/// or on Temporal the workflow history), with operator and reason.
fn commands_of(env: &Env, ids: &BTreeSet<String>, bulk: &str) -> Vec<(String, usize, Value)> {
    let ids: Vec<&String> = ids.iter().collect();
    std::thread::scope(|s| {
        let chunks: Vec<_> = ids
            .chunks(ids.len().div_ceil(4))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|id| {
                            let history: Value =
                                serde_json::from_str(&env.sagaflow(&["history", id, "--json"]))
                                    .unwrap();
                            let mine: Vec<&Value> = history
                                .as_array()
                                .unwrap()
                                .iter()
                                .filter(|e| e["kind"] == "signal" && e["body"]["bulk"] == bulk)
                                .collect();
                            let first = mine.first().map_or(Value::Null, |e| e["body"].clone());
                            (id.to_string(), mine.len(), first)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks.into_iter().flat_map(|c| c.join().unwrap()).collect()
    })
}

/// Each saga commanded once by `bulk`, each command under one of `audits`
/// (operator, reason); returns how many under each.
fn assert_each_commanded_once(
    env: &Env,
    ids: &BTreeSet<String>,
    bulk: &str,
    audits: &[(&str, &str)],
) -> Vec<usize> {
    let mut under = vec![0; audits.len()];
    for (id, count, body) in commands_of(env, ids, bulk) {
        assert_eq!(count, 1, "saga {id} was commanded {count} times by {bulk}");
        assert_eq!(body["signal"].as_str(), Some("retry"), "saga {id}: {body}");
        let who = (body["operator"].as_str(), body["reason"].as_str());
        let i = audits
            .iter()
            .position(|(o, r)| who == (Some(*o), Some(*r)))
            .unwrap_or_else(|| panic!("saga {id}: {body} is under none of {audits:?}"));
        under[i] += 1;
    }
    under
}

fn a_stock_fault_parks_hundreds_and_a_bulk_retry_completes_them(engine: &str) {
    const ORDERS: usize = 220;
    let env = Env::new("bulk-fault", engine, &COMMIT_GIVES_UP);
    let ids = park_on_commit(&env, ORDERS);
    // Parked with the payment captured and the units still reserved.
    assert_eq!(
        dry_run(&env, TERMS),
        ids,
        "the dry run lists exactly the parked sagas"
    );
    assert!(dry_run(&env, "status=completed").is_empty());

    refuse_commits(&env, false);
    let worker = env.worker();
    let bulk = format!("fault-{engine}-{}", std::process::id());
    let (operator, reason) = ("erin", "stock store fixed after INC-42");
    let out = env.sagaflow(&[
        "retry",
        "--where",
        TERMS,
        "--reason",
        reason,
        "--operator",
        operator,
        "--bulk-id",
        &bulk,
        "--wait",
        "60",
        "--json",
    ]);
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (
            summary["planned"].as_u64(),
            summary["sent"].as_u64(),
            summary["refused"].as_u64(),
            summary["failed"].as_u64()
        ),
        (Some(ORDERS as u64), Some(ORDERS as u64), Some(0), Some(0)),
        "{summary}"
    );
    wait_completed(&env, &ids, Duration::from_secs(180));
    drop(worker);
    check_books(&env.dir, UNITS, ORDERS as u64);
    assert_each_commanded_once(&env, &ids, &bulk, &[(operator, reason)]);
}

fn a_bulk_retry_killed_half_way_resumes_without_commanding_twice(engine: &str) {
    const ORDERS: usize = 500;
    let env = Env::new("bulk-kill", engine, &COMMIT_GIVES_UP);
    let ids = park_on_commit(&env, ORDERS);
    assert_eq!(dry_run(&env, TERMS), ids);
    refuse_commits(&env, false);

    let worker = env.worker();
    let bulk = format!("kill-{engine}-{}", std::process::id());
    let (operator, reason) = ("frank", "stock store back; retry what parked");
    let progress = env.dir.join("bulk-cli.log");
    let mut cli = std::process::Command::new(bin())
        .args(env.with_env(&[
            "retry",
            "--where",
            TERMS,
            "--reason",
            reason,
            "--operator",
            operator,
            "--bulk-id",
            &bulk,
            "--rate",
            "100",
        ]))
        .stdout(std::fs::File::create(env.dir.join("bulk-cli.out")).unwrap())
        .stderr(std::fs::File::create(&progress).unwrap())
        .spawn()
        .unwrap();
    // Half way, by its own progress line: SIGKILL the CLI and the worker.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = std::fs::read_to_string(&progress).unwrap_or_default();
        let done = log
            .lines()
            .filter_map(|l| {
                l.split(" done")
                    .next()?
                    .rsplit(": ")
                    .next()?
                    .split('/')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        if done >= 20 {
            break;
        }
        assert!(
            cli.try_wait().unwrap().is_none(),
            "the bulk run ended before it could be killed: {log}"
        );
        assert!(
            Instant::now() < deadline,
            "no progress in two minutes: {log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cli.kill().unwrap();
    cli.wait().unwrap();
    worker.kill();

    let worker = env.worker();
    // The resume is audited under who resumed it, and why.
    let (resumer, why) = ("rita", "resumed after the CLI was killed");
    let out = env.sagaflow(&[
        "retry",
        "--resume",
        &bulk,
        "--wait",
        "60",
        "--json",
        "--operator",
        resumer,
        "--reason",
        why,
    ]);
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    let (already, sent) = (
        summary["already"].as_u64().unwrap(),
        summary["sent"].as_u64().unwrap(),
    );
    assert!(
        already > 0 && sent > 0,
        "killed half way, not at an end: {summary}"
    );
    assert_eq!(already + sent, ORDERS as u64, "{summary}");
    assert_eq!(
        (summary["refused"].as_u64(), summary["failed"].as_u64()),
        (Some(0), Some(0)),
        "{summary}"
    );
    wait_completed(&env, &ids, Duration::from_secs(300));
    drop(worker);
    check_books(&env.dir, UNITS, ORDERS as u64);
    let under =
        assert_each_commanded_once(&env, &ids, &bulk, &[(operator, reason), (resumer, why)]);
    assert_eq!(
        (under[0] as u64, under[1] as u64),
        (already, sent),
        "the commands sent before the kill under the planner, the rest under the resumer"
    );
}

on_both_engines!(
    a_stock_fault_parks_hundreds_and_a_bulk_retry_completes_them,
    a_bulk_retry_killed_half_way_resumes_without_commanding_twice,
);
