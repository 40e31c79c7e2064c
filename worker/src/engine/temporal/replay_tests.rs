//! Recorded histories replayed against today's `SagaWorkflow`: a change to
//! the interpreter or the Temporal adapter that would make a running saga
//! take a different path fails here, before it reaches a cluster.
//!
//! The histories in `worker/tests/histories/` were recorded from a real
//! dev server with `sagaflow history ID --engine temporal --export FILE`:
//! a completed saga, a declined card (compensated), a failure at the pivot
//! (compensated), a parked saga, and a parked saga an operator retried, all
//! with activity tasks; a completed and a declined saga whose steps ran as
//! local activities (`local-*.json`, behind the `local-steps-1` patch).
//! Since step modes (`[temporal] steps`), `scripts/record-histories.sh`
//! records the rest: `checkpointed-*` (completed, compensated, a retried
//! step, a takeover after a worker aborted right after the capture, a
//! parked compensation an operator retried with the `command` Update),
//! `local-takeover.json` and `local-completed-v2.json` (every step local,
//! the input form without a patch marker). One is built, not recorded:
//! `local-input-no-marker.json` is `completed.json` with its input's
//! `local_steps` set to true, what a saga started by newer code and run
//! by a worker from before local steps leaves: no patch marker, so it must
//! replay with the activity tasks it holds.
//! Add one when a new path appears; never edit one to make a test pass.

use super::workflow::SagaWorkflow;
use std::path::PathBuf;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

fn histories() -> Vec<(String, WorkflowHistory)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let history = WorkflowHistory::from_json(&bytes)
                .unwrap_or_else(|e| panic!("{} is not a history: {e}", p.display()));
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                history,
            )
        })
        .collect()
}

#[tokio::test]
async fn recorded_histories_replay_without_nondeterminism() {
    let all = histories();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in [
        "checkpointed-compensated.json",
        "checkpointed-completed.json",
        "checkpointed-parked-update.json",
        "checkpointed-retried.json",
        "checkpointed-takeover.json",
        "completed.json",
        "compensated.json",
        "local-compensated.json",
        "local-completed-v2.json",
        "local-completed.json",
        "local-input-no-marker.json",
        "local-takeover.json",
        "parked.json",
        "pivot.json",
        "retried.json",
    ] {
        assert!(
            names.contains(&wanted),
            "missing recorded history {wanted}: {names:?}"
        );
    }
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<SagaWorkflow>()
            .expect("register the workflow")
            .build(),
    )
    .expect("build the replayer");
    for (name, history) in all {
        let result = replayer.replay_workflow(history).await;
        assert!(result.is_ok(), "{name} no longer replays: {result:?}");
    }
}
