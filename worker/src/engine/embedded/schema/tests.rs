//! Journal upgrades on real SQLite files: a fresh file, the shipped v1
//! fixture, a step added by the test, a failing step, a newer file.

use super::{migrate, migrate_with, Migration, SchemaError, MIGRATIONS};
use rusqlite::Connection;
use std::path::PathBuf;

/// The version this build writes.
const CURRENT: i64 = MIGRATIONS.len() as i64;

/// A fresh directory under the system temp dir for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sagaflow-schema-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

fn tables(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The shipped steps plus one the test owns, one version past the current:
/// it adds a column with a default.
fn with_next() -> Vec<Migration> {
    let mut steps: Vec<Migration> = MIGRATIONS
        .iter()
        .map(|m| Migration {
            what: m.what,
            sql: m.sql,
        })
        .collect();
    steps.push(Migration {
        what: "test next: sagas.note",
        sql: "ALTER TABLE sagas ADD COLUMN note TEXT NOT NULL DEFAULT 'v1';",
    });
    steps
}

#[test]
fn a_fresh_file_gets_every_table_and_the_current_version() {
    let path = scratch("fresh").join("journal.db");
    let mut conn = Connection::open(&path).unwrap();
    assert_eq!(migrate(&mut conn, &path).unwrap(), 0);
    assert_eq!(version(&conn), CURRENT);
    assert_eq!(
        tables(&conn),
        ["audit", "counts", "definitions", "events", "inbox", "sagas"]
    );
    // Opening again changes nothing.
    assert_eq!(migrate(&mut conn, &path).unwrap(), CURRENT);
}

#[test]
fn the_v1_fixture_is_upgraded_to_a_later_version_and_keeps_its_sagas() {
    let dir = scratch("fixture");
    let path = dir.join("journal.db");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../integration-tests/fixtures/journal-v1/journal.db"),
        &path,
    )
    .unwrap();
    let mut conn = Connection::open(&path).unwrap();
    assert_eq!(version(&conn), 1);
    // Every shipped step after v1 runs, then the test's own.
    assert_eq!(migrate(&mut conn, &path).unwrap(), 1);
    assert_eq!(version(&conn), CURRENT);
    assert!(tables(&conn).contains(&"audit".to_owned()));
    let inbox_body: String = conn
        .query_row(
            "SELECT dflt_value FROM pragma_table_info('inbox') WHERE name = 'body'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        inbox_body, "'{}'",
        "rows a v1 CLI queued read as bare signals"
    );
    // Version 3 counts what the file held, so `stats` need not scan it.
    let counts = |conn: &Connection| -> Vec<(String, i64)> {
        conn.prepare("SELECT name, n FROM counts WHERE n > 0 ORDER BY name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let events: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        counts(&conn),
        [
            ("events".into(), events),
            ("status:completed".into(), 1),
            ("status:parked".into(), 1)
        ]
    );

    let steps = with_next();
    assert_eq!(migrate_with(&mut conn, &path, &steps).unwrap(), CURRENT);
    assert_eq!(version(&conn), CURRENT + 1);
    let rows: Vec<(String, String, String)> = conn
        .prepare("SELECT id, status, note FROM sagas ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [
            ("o-done".into(), "completed".into(), "v1".into()),
            ("o-park".into(), "parked".into(), "v1".into())
        ]
    );
    // This build, which knows one version less, now refuses the file
    // instead of misreading it.
    let err = migrate(&mut conn, &path).unwrap_err();
    assert!(
        matches!(
            err,
            SchemaError::Newer { found, current, .. } if found == CURRENT + 1 && current == CURRENT
        ),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade sagaflow"), "{err}");
}

#[test]
fn a_failing_step_leaves_the_file_at_its_old_version() {
    let path = scratch("failing").join("journal.db");
    let mut conn = Connection::open(&path).unwrap();
    migrate(&mut conn, &path).unwrap();
    let mut steps = with_next();
    steps.last_mut().unwrap().sql =
        "CREATE TABLE half_done (x INTEGER); ALTER TABLE no_such_table ADD COLUMN y;";
    let err = migrate_with(&mut conn, &path, &steps).unwrap_err();
    assert!(
        matches!(
            err,
            SchemaError::Step {
                from,
                what: "test next: sagas.note",
                ..
            } if from == CURRENT
        ),
        "{err}"
    );
    assert!(err.to_string().contains("the file is unchanged"), "{err}");
    assert_eq!(version(&conn), CURRENT);
    assert!(!tables(&conn).contains(&"half_done".to_owned()));
}

#[test]
fn a_file_from_a_newer_sagaflow_is_refused_untouched() {
    let path = scratch("newer").join("journal.db");
    let mut conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 7).unwrap();
    let err = migrate(&mut conn, &path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "journal {} has schema version 7; this sagaflow reads versions up to {CURRENT}: upgrade sagaflow",
            path.display()
        )
    );
    assert_eq!(version(&conn), 7);
    assert!(tables(&conn).is_empty());
}
