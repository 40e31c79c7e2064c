//! Retention and `archive` on the embedded journal, read back from the
//! journal file itself: a running worker removes ended sagas past
//! `[embedded] retention` (with their events, the counts following), never
//! a parked one; a removed order id starts a new saga (the duplicate
//! window is the retention); `archive` writes ended sagas to a file and,
//! with `--delete`, removes exactly those; `refund` of a removed saga is
//! refused with the reason.

use crate::common::*;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn order(id: &str) -> String {
    format!(
        r#"{{"order_id":"{id}","customer":"c","items":[{{"sku":"SKU-1","qty":1}}],"amount":100,"currency":"usd","payment_method":"pm_card_visa"}}"#
    )
}

fn submit(dir: &Path, config: &Path, name: &str, ids: &[String]) {
    let file = dir.join(format!("{name}.jsonl"));
    let lines: Vec<String> = ids.iter().map(|id| order(id)).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (f, c, d) = (
        file.to_str().unwrap(),
        config.to_str().unwrap(),
        dir.to_str().unwrap(),
    );
    sagaflow_ok(&["submit", f, "--config", c, "--data", d]);
}

/// A data directory with SKU-1 in stock, and the shipped config with
/// `replace` applied and the `parks` saga added.
fn world(name: &str, replace: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    let dir = data_dir(name);
    let config = config_with(&dir, replace);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(PARKS_SAGA);
    std::fs::write(&config, text).unwrap();
    let (c, d) = (config.to_str().unwrap(), dir.to_str().unwrap());
    sagaflow_ok(&["stock", "set", "SKU-1=1000", "--config", c, "--data", d]);
    (dir, config)
}

/// Runs `saga` for what is queued, until the queue is empty.
fn run_until_idle(dir: &Path, config: &Path, saga: &str) {
    let (c, d) = (config.to_str().unwrap(), dir.to_str().unwrap());
    sagaflow_ok(&[
        "run",
        "--until-idle",
        "--saga",
        saga,
        "--admin-bind",
        "127.0.0.1:0",
        "--config",
        c,
        "--data",
        d,
    ]);
}

fn worker(dir: &Path, config: &Path) -> Child {
    Command::new(bin())
        .args(["run", "--admin-bind", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("worker.log")).unwrap())
        .spawn()
        .unwrap()
}

/// `SELECT COUNT(*)` of `sql`'s rows in the journal.
fn count(dir: &Path, sql: &str) -> i64 {
    Connection::open(dir.join("journal.db"))
        .unwrap()
        .query_row(&format!("SELECT COUNT(*) FROM ({sql})"), [], |r| r.get(0))
        .unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `stats --json` agrees with the journal's rows.
fn assert_stats_match_rows(dir: &Path, config: &Path) {
    let stats = json_line(
        &sagaflow_ok(&[
            "stats",
            "--json",
            "--config",
            config.to_str().unwrap(),
            "--data",
            dir.to_str().unwrap(),
        ])
        .replace('\n', ""),
    );
    assert_eq!(
        stats["total"],
        count(dir, "SELECT id FROM sagas"),
        "{stats}"
    );
    assert_eq!(
        stats["completed"],
        count(dir, "SELECT id FROM sagas WHERE status = 'completed'"),
        "{stats}"
    );
    assert_eq!(
        stats["parked"],
        count(dir, "SELECT id FROM sagas WHERE status = 'parked'"),
        "{stats}"
    );
    assert_eq!(
        stats["events"],
        count(dir, "SELECT n FROM events"),
        "{stats}"
    );
}

#[test]
fn a_running_worker_removes_ended_sagas_past_retention_and_never_a_parked_one() {
    let (dir, config) = world("retention", &[("retention = \"3d\"", "retention = \"2s\"")]);
    let sold: Vec<String> = (0..20).map(|i| format!("r-{i:03}")).collect();
    let parked: Vec<String> = (0..3).map(|i| format!("p-{i:03}")).collect();
    submit(&dir, &config, "parked", &parked);
    run_until_idle(&dir, &config, "parks");
    submit(&dir, &config, "sold", &sold);
    let mut w = worker(&dir, &config);
    wait_for("the sagas to end or park", || {
        dir.join("journal.db").exists()
            && count(
                &dir,
                "SELECT id FROM sagas WHERE status IN ('completed', 'parked')",
            ) == 23
    });
    let ended_by = Instant::now();
    assert_stats_match_rows(&dir, &config);
    // Two seconds after their ends (and a pass of the pruner, every
    // second), the completed ones are gone with their events.
    wait_for("retention to remove the completed sagas", || {
        count(&dir, "SELECT id FROM sagas WHERE status = 'completed'") == 0
    });
    assert!(
        ended_by.elapsed() >= Duration::from_millis(1_000),
        "removed before their retention"
    );
    assert_eq!(
        count(&dir, "SELECT id FROM sagas WHERE status = 'parked'"),
        3
    );
    assert_eq!(
        count(&dir, "SELECT DISTINCT saga_id FROM events"),
        3,
        "only the parked sagas' events are left"
    );
    assert_stats_match_rows(&dir, &config);
    // Past the duplicate window, an order id runs again as a new saga.
    submit(&dir, &config, "again", &sold[..1]);
    wait_for("the repeated order to run again", || {
        count(&dir, "SELECT id FROM sagas WHERE id = 'r-000'") == 1
            || count(&dir, "SELECT n FROM events WHERE saga_id = 'r-000'") > 0
    });
    // A refund of a removed saga is refused, saying why.
    let out = sagaflow(&[
        "refund",
        "r-001",
        "--reason",
        "customer returned it",
        "--config",
        config.to_str().unwrap(),
        "--data",
        dir.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("retention removed it"), "{said}");
    w.kill().unwrap();
    w.wait().unwrap();
}

#[test]
fn archive_writes_ended_sagas_to_a_file_and_removes_exactly_those() {
    let (dir, config) = world("archive", &[]);
    let sold: Vec<String> = (0..12).map(|i| format!("a-{i:03}")).collect();
    submit(&dir, &config, "parked", &["pk-1".into()]);
    run_until_idle(&dir, &config, "parks");
    submit(&dir, &config, "sold", &sold);
    run_until_idle(&dir, &config, "checkout");
    let (c, d) = (config.to_str().unwrap(), dir.to_str().unwrap());
    let events_of_sold = count(&dir, "SELECT n FROM events WHERE saga_id LIKE 'a-%'");
    let out = dir.join("archive.jsonl");
    let o = out.to_str().unwrap();
    // Nothing ended a day ago: nothing to write.
    let none = json_line(&sagaflow_ok(&[
        "archive",
        "--older-than",
        "1d",
        "--out",
        o,
        "--json",
        "--config",
        c,
        "--data",
        d,
    ]));
    assert_eq!(none["archived"], 0, "{none}");
    let all = json_line(&sagaflow_ok(&[
        "archive",
        "--older-than",
        "0s",
        "--out",
        o,
        "--delete",
        "--json",
        "--config",
        c,
        "--data",
        d,
    ]));
    assert_eq!(all["archived"], 12, "{all}");
    assert_eq!(all["deleted"], 12, "{all}");
    assert_eq!(all["events"], events_of_sold, "{all}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, sold.iter().map(String::as_str).collect::<Vec<_>>());
    for line in &lines {
        assert_eq!(line["status"], "completed", "{line}");
        assert_eq!(line["input"]["order_id"], line["id"], "{line}");
        let kinds: Vec<&str> = line["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.first(), Some(&"started"), "{line}");
        assert_eq!(kinds.last(), Some(&"status"), "{line}");
    }
    // The parked saga stays, with its events; nothing of the others does.
    assert_eq!(count(&dir, "SELECT id FROM sagas"), 1);
    assert_eq!(count(&dir, "SELECT id FROM sagas WHERE id = 'pk-1'"), 1);
    assert_eq!(
        count(&dir, "SELECT n FROM events WHERE saga_id LIKE 'a-%'"),
        0
    );
    assert_stats_match_rows(&dir, &config);
}
