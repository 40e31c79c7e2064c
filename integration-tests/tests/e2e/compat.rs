use crate::common::*;
use std::path::{Path, PathBuf};

/// A copy of the data directory `fixtures/NAME`, to run on.
fn fixture(name: &str) -> PathBuf {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let dir = data_dir(&format!("compat-{name}"));
    for f in [
        "journal.db",
        "orders.db",
        "payments.db",
        "queue.db",
        "stock.db",
    ] {
        std::fs::copy(fixture.join(f), dir.join(f)).unwrap();
    }
    dir
}

fn json_of(args: &[&str]) -> serde_json::Value {
    json_line(&sagaflow_ok(args).replace('\n', ""))
}

#[test]
fn a_journal_written_by_format_v1_still_opens_recovers_and_finishes() {
    let dir = fixture("journal-v1");
    let d = dir.to_str().unwrap();

    let done =
        json_line(&sagaflow_ok(&["show", "o-done", "--json", "--data", d]).replace('\n', ""));
    assert_eq!(done["saga"]["status"], "completed");
    assert_eq!(done["timeline"].as_array().unwrap().len(), 5);

    let parked = sagaflow_ok(&["list", "--status", "parked", "--json", "--data", d]);
    assert!(parked.contains("\"o-park\""), "{parked}");

    // The parked saga recovers from the old journal and finishes on a retry.
    // `signal ID retry`, the form before `retry`, still works.
    sagaflow_ok(&[
        "signal", "o-park", "retry", "--reason", "compat", "--data", d,
    ]);
    sagaflow_ok(&["run", "--until-idle", "--data", d]);
    let park =
        json_line(&sagaflow_ok(&["show", "o-park", "--json", "--data", d]).replace('\n', ""));
    assert_eq!(park["saga"]["status"], "compensated", "{park}");
    let stock = sagaflow_ok(&["stock", "show", "--json", "--data", d]);
    assert!(
        stock.contains("\"sold\":1") && stock.contains("\"reserved\":0"),
        "{stock}"
    );
}

/// Version 2 (operator commands) upgraded to version 3 (counts and the
/// index retention needs): the counts equal what the file held, the audit
/// and the refund link survive, the parked saga recovers, and retention's
/// removal (`archive --delete`) takes the ended sagas only.
#[test]
fn a_journal_written_by_format_v2_is_counted_listed_and_archived() {
    let dir = fixture("journal-v2");
    let d = dir.to_str().unwrap();
    let stats = json_of(&["stats", "--json", "--data", d]);
    for (key, n) in [
        ("total", 4),
        ("completed", 2),
        ("compensated", 1),
        ("parked", 1),
        ("events", 22),
    ] {
        assert_eq!(stats[key], n, "{key}: {stats}");
    }
    let parked = sagaflow_ok(&["list", "--status", "parked", "--json", "--data", d]);
    assert!(parked.contains("\"p-park\""), "{parked}");
    let audit = sagaflow_ok(&["audit", "--json", "--data", d]);
    assert!(audit.contains("fixture: goods returned"), "{audit}");
    let done = json_of(&["show", "o-done", "--json", "--data", d]);
    assert_eq!(done["saga"]["status"], "completed", "{done}");
    // The parked saga recovers into a worker and stays parked. Retention
    // is off: the fixture's sagas ended days ago, and the default "3d"
    // would remove them in this run, before `archive` below sees them.
    let config = config_with(
        &dir,
        &[
            ("retention = \"3d\"", "retention = \"off\""),
            ("audit_retention = \"90d\"", "audit_retention = \"off\""),
        ],
    );
    sagaflow_ok(&[
        "run",
        "--until-idle",
        "--admin-bind",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
        "--data",
        d,
    ]);
    let park = json_of(&["show", "p-park", "--json", "--data", d]);
    assert_eq!(park["saga"]["status"], "parked", "{park}");
    let out = dir.join("archive.jsonl");
    let archived = json_of(&[
        "archive",
        "--older-than",
        "0s",
        "--out",
        out.to_str().unwrap(),
        "--delete",
        "--json",
        "--data",
        d,
    ]);
    assert_eq!(archived["archived"], 3, "{archived}");
    let stats = json_of(&["stats", "--json", "--data", d]);
    assert_eq!(stats["total"], 1, "{stats}");
    assert_eq!(stats["parked"], 1, "{stats}");
    let left = rusqlite::Connection::open(Path::new(d).join("journal.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
        .unwrap();
    assert_eq!(stats["events"], left, "{stats}");
}
