//! Steps as local activities on Temporal (issue 15, part 2): the same
//! checkout sagas, run one way and the other, read back from the cluster's
//! own histories. Local steps cut the events per saga by at least 30%
//! (36 to 13 for a saga that completes), and `show` still gives every step,
//! its attempts and its error from the markers.

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

/// Runs one completed and one declined checkout with `[temporal]
/// local_activities = local`; returns their histories after checking what
/// `show` says of them.
fn run(local: bool) -> (Vec<Value>, Vec<Value>) {
    let setting = format!("local_activities = {local}");
    let env = Env::new(
        if local { "local-steps" } else { "task-steps" },
        "temporal",
        &[("local_activities = true", &setting)],
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
fn local_steps_cut_a_checkout_sagas_history_by_two_thirds() {
    let (tasks_ok, tasks_declined) = run(false);
    let (local_ok, local_declined) = run(true);

    // Activity tasks: three events per step and a workflow task per result.
    assert_eq!(count(&tasks_ok, "ActivityTaskScheduledEventAttributes"), 5);
    assert_eq!(count(&tasks_ok, "MarkerRecordedEventAttributes"), 0);
    // Local steps: one marker per step (and the patch's), no activity task.
    assert_eq!(count(&local_ok, "ActivityTaskScheduledEventAttributes"), 0);
    assert_eq!(count(&local_ok, "MarkerRecordedEventAttributes"), 6);
    assert_eq!(
        count(&local_declined, "ActivityTaskScheduledEventAttributes"),
        0
    );

    for (what, tasks, local) in [
        ("completed", &tasks_ok, &local_ok),
        ("compensated", &tasks_declined, &local_declined),
    ] {
        let ratio = local.len() as f64 / tasks.len() as f64;
        eprintln!(
            "{what}: {} events with activity tasks, {} with local steps ({ratio:.2})",
            tasks.len(),
            local.len()
        );
        assert!(
            ratio <= 0.7,
            "{what}: local steps wrote {} events, activity tasks {}: at least 30% fewer expected",
            local.len(),
            tasks.len()
        );
    }
}
