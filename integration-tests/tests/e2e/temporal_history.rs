//! How steps run on Temporal (issue 15, part 2; issue 29): the same
//! checkout sagas in each `[temporal] steps` mode, read back from the
//! cluster's own histories. Every step local writes the fewest events,
//! checkpointed chains (the default) at most 18 with the pivot an activity
//! task, and `show` gives every step, its attempts and its error from the
//! markers as from the activity tasks.

use crate::scenarios::{entry, Env};
use serde_json::Value;

/// The history the cluster holds for saga `id`, exported by the CLI.
fn history(env: &Env, id: &str) -> Vec<Value> {
    let file = env.dir.join(format!("{id}.history.json"));
    env.sagaflow(&[
        "history",
        id,
        "--engine",
        "temporal",
        "--export",
        file.to_str().unwrap(),
    ]);
    let exported: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    exported["events"].as_array().unwrap().clone()
}

/// How many events of `history` carry attributes named `kind`.
fn count(history: &[Value], kind: &str) -> usize {
    history
        .iter()
        .filter(|e| e["attributes"].get(kind).is_some())
        .count()
}

/// Runs one completed and one declined checkout with `[temporal] steps =
/// mode`; returns their histories after checking what `show` says of them.
fn run(mode: &str) -> (Vec<Value>, Vec<Value>) {
    let setting = format!("steps = \"{mode}\"");
    let env = Env::new(
        &format!("{mode}-steps"),
        "temporal",
        &[("steps = \"checkpointed\"", &setting)],
    );
    env.sagaflow(&["stock", "set", "SKU-1=2"]);
    let ok = env.submit("ok", "pm_card_visa");
    let declined = env.submit("declined", "pm_card_chargeDeclined");
    env.run_until_idle();

    let (status, rows) = env.timeline(&ok);
    assert_eq!(status, "completed", "{rows:?}");
    for step in [
        "reserve_stock",
        "authorize_payment",
        "create_order",
        "capture_payment",
        "commit_stock",
    ] {
        let (_, _, state, attempts, _) = entry(&rows, step, "action");
        assert_eq!((state.as_str(), *attempts), ("ok", 1), "{step}: {rows:?}");
    }
    let (status, rows) = env.timeline(&declined);
    assert_eq!(status, "compensated", "{rows:?}");
    let (_, _, state, attempts, error) = entry(&rows, "authorize_payment", "action");
    assert_eq!((state.as_str(), *attempts), ("failed", 1), "{rows:?}");
    assert!(error.contains("card_declined"), "{rows:?}");
    assert_eq!(
        entry(&rows, "reserve_stock", "compensation").2,
        "ok",
        "{rows:?}"
    );
    // The books agree: one unit sold, the declined order's unit back.
    let stock = env.stock();
    assert_eq!(
        (
            stock["sold"].as_i64(),
            stock["available"].as_i64(),
            stock["reserved"].as_i64()
        ),
        (Some(1), Some(1), Some(0)),
        "{stock}"
    );

    (history(&env, &ok), history(&env, &declined))
}

#[test]
fn each_step_mode_writes_the_history_it_promises() {
    let (tasks_ok, tasks_declined) = run("activities");
    let (local_ok, local_declined) = run("local");
    let (split_ok, split_declined) = run("checkpointed");

    // Activity tasks: three events per step and a workflow task per result.
    assert_eq!(count(&tasks_ok, "ActivityTaskScheduledEventAttributes"), 5);
    assert_eq!(count(&tasks_ok, "MarkerRecordedEventAttributes"), 0);
    // Local steps: one marker per step, no activity task.
    assert_eq!(count(&local_ok, "ActivityTaskScheduledEventAttributes"), 0);
    assert_eq!(count(&local_ok, "MarkerRecordedEventAttributes"), 5);
    assert_eq!(
        count(&local_declined, "ActivityTaskScheduledEventAttributes"),
        0
    );
    // Checkpointed: the pivot alone is an activity task; the four other
    // steps are markers, recorded by the workflow task that schedules the
    // pivot (the three before it) and the one that ends the saga.
    assert_eq!(count(&split_ok, "ActivityTaskScheduledEventAttributes"), 1);
    assert_eq!(count(&split_ok, "MarkerRecordedEventAttributes"), 4);
    let pivot_at = split_ok
        .iter()
        .position(|e| {
            e["attributes"]
                .get("ActivityTaskScheduledEventAttributes")
                .is_some()
        })
        .unwrap();
    let markers_before = split_ok[..pivot_at]
        .iter()
        .filter(|e| {
            e["attributes"]
                .get("MarkerRecordedEventAttributes")
                .is_some()
        })
        .count();
    assert_eq!(
        markers_before, 3,
        "the steps before the pivot are recorded before it is scheduled"
    );
    assert_eq!(
        count(&split_declined, "ActivityTaskScheduledEventAttributes"),
        0,
        "a declined card never reaches the pivot"
    );
    assert!(
        split_ok.len() <= 18,
        "checkpointed: {} events for a completed checkout, at most 18 expected",
        split_ok.len()
    );

    for (what, tasks, local, split) in [
        ("completed", &tasks_ok, &local_ok, &split_ok),
        (
            "compensated",
            &tasks_declined,
            &local_declined,
            &split_declined,
        ),
    ] {
        eprintln!(
            "{what}: {} events with activity tasks, {} checkpointed, {} every step local",
            tasks.len(),
            split.len(),
            local.len()
        );
        assert!(
            local.len() as f64 <= 0.7 * tasks.len() as f64,
            "{what}: local steps wrote {} events, activity tasks {}: at least 30% fewer expected",
            local.len(),
            tasks.len()
        );
        assert!(split.len() < tasks.len(), "{what}");
    }
}
