//! Retention on a real journal file: what goes, what stays, in batches,
//! with the counts kept.

use super::*;
use crate::engine::embedded::journal::open_writer;

const DAY: u64 = 86_400_000;
const NOW: u64 = 100 * DAY;

fn journal(name: &str) -> Connection {
    let dir =
        std::env::temp_dir().join(format!("sagaflow-retention-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let conn = open_writer(&dir.join("journal.db")).unwrap();
    conn.execute(
        "INSERT INTO definitions (hash, name, body) VALUES ('h', 'checkout', '{}')",
        [],
    )
    .unwrap();
    conn
}

/// A saga with `events` events; `ended`: its status and end time. The
/// counts follow, as the writer keeps them.
fn saga(conn: &Connection, id: &str, ended: Option<(&'static str, u64)>, events: u32) {
    let mut tally = Tally::default();
    tally.status("running", 1);
    tally.events(events as i64);
    conn.execute(
        "INSERT INTO sagas (id, saga, def_hash, status, input, created_ms, updated_ms) VALUES (?1, 'checkout', 'h', 'running', '{}', 0, 0)",
        [id],
    )
    .unwrap();
    for n in 0..events {
        conn.execute(
            "INSERT INTO events (saga_id, n, at_ms, kind, body) VALUES (?1, ?2, 0, 'started', '{}')",
            params![id, n],
        )
        .unwrap();
    }
    if let Some((status, at)) = ended {
        tally.status("running", -1);
        tally.status(status, 1);
        let end = (status != "parked").then_some(at as i64);
        conn.execute(
            "UPDATE sagas SET status = ?2, ended_ms = ?3, updated_ms = ?4 WHERE id = ?1",
            params![id, status, end, at as i64],
        )
        .unwrap();
    }
    tally.apply(conn).unwrap();
}

fn audit(conn: &Connection, saga_id: &str, at_ms: u64) {
    conn.execute(
        "INSERT INTO audit (at_ms, saga_id, command, operator, reason, outcome, body) VALUES (?1, ?2, 'retry', 'alice', 'test', 'applied', '{}')",
        params![at_ms as i64, saga_id],
    )
    .unwrap();
}

fn ids(conn: &Connection, table: &str, column: &str) -> Vec<String> {
    conn.prepare(&format!("SELECT DISTINCT {column} FROM {table} ORDER BY 1"))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The counts table agrees with the rows themselves.
fn assert_counts_exact(conn: &Connection) {
    let counted = |name: &str| -> i64 {
        conn.query_row(
            "SELECT COALESCE(MAX(n), 0) FROM counts WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    };
    let events: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(counted("events"), events);
    for status in ["running", "completed", "compensated", "parked"] {
        let rows: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sagas WHERE status = ?1",
                [status],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(counted(&format!("status:{status}")), rows, "{status}");
    }
}

#[test]
fn only_ended_sagas_past_the_retention_go_with_their_events() {
    let mut conn = journal("what");
    saga(&conn, "old-done", Some(("completed", NOW - 4 * DAY)), 12);
    saga(&conn, "old-undone", Some(("compensated", NOW - 5 * DAY)), 9);
    saga(&conn, "new-done", Some(("completed", NOW - DAY)), 12);
    saga(&conn, "old-parked", Some(("parked", NOW - 40 * DAY)), 4);
    saga(&conn, "old-running", None, 2);
    audit(&conn, "old-parked", NOW - 100 * DAY);
    audit(&conn, "old-parked", NOW - DAY);
    let retention = Retention {
        sagas_ms: Some(3 * DAY),
        audit_ms: Some(90 * DAY),
    };
    let pruned = prune(&mut conn, retention, NOW).unwrap();
    assert_eq!(
        pruned,
        Pruned {
            sagas: 2,
            events: 21,
            audit: 1
        }
    );
    assert_eq!(
        ids(&conn, "sagas", "id"),
        ["new-done", "old-parked", "old-running"]
    );
    assert_eq!(
        ids(&conn, "events", "saga_id"),
        ["new-done", "old-parked", "old-running"]
    );
    let audit_left: Vec<i64> = conn
        .prepare("SELECT at_ms FROM audit")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(audit_left, [(NOW - DAY) as i64]);
    assert_counts_exact(&conn);
    // Nothing more is due; "off" removes nothing at all.
    assert_eq!(prune(&mut conn, retention, NOW).unwrap(), Pruned::default());
    let off = Retention::default();
    assert_eq!(
        prune(&mut conn, off, NOW + 1_000 * DAY).unwrap(),
        Pruned::default()
    );
}

#[test]
fn a_backlog_goes_in_batches_oldest_first_and_the_pruner_catches_up() {
    let mut conn = journal("batches");
    let tx = conn.transaction().unwrap();
    for i in 0..BATCH + 10 {
        saga(
            &tx,
            &format!("s{i:04}"),
            Some(("completed", i as u64 + 1)),
            3,
        );
    }
    tx.commit().unwrap();
    let retention = Retention {
        sagas_ms: Some(DAY),
        audit_ms: None,
    };
    let mut pruner = Pruner::new(retention);
    assert_eq!(pruner.wait(), Some(Duration::ZERO), "due at once");
    let first = pruner.run_if_due(&mut conn, NOW).unwrap();
    assert_eq!((first.sagas, first.events), (BATCH, 3 * BATCH));
    // The oldest ends went first.
    assert_eq!(
        ids(&conn, "sagas", "id").first().unwrap(),
        &format!("s{BATCH:04}")
    );
    // A full batch: the next comes after the short catch-up pause.
    assert!(pruner.wait().unwrap() <= CATCH_UP);
    assert_eq!(
        pruner.run_if_due(&mut conn, NOW).unwrap(),
        Pruned::default(),
        "not due yet"
    );
    std::thread::sleep(CATCH_UP);
    let second = pruner.run_if_due(&mut conn, NOW).unwrap();
    assert_eq!(second.sagas, 10);
    assert!(
        pruner.wait().unwrap() > CATCH_UP,
        "then once every {EVERY:?}"
    );
    assert_counts_exact(&conn);
    assert_eq!(Pruner::new(Retention::default()).wait(), None);
}

#[test]
fn remove_leaves_a_saga_that_has_not_ended() {
    let mut conn = journal("remove");
    saga(&conn, "done", Some(("completed", 1)), 5);
    saga(&conn, "parked", Some(("parked", 1)), 5);
    let tx = conn.transaction().unwrap();
    let events = remove(&tx, &["done".into(), "parked".into(), "nobody".into()]).unwrap();
    tx.commit().unwrap();
    assert_eq!(events, 5);
    assert_eq!(ids(&conn, "sagas", "id"), ["parked"]);
    assert_counts_exact(&conn);
}
