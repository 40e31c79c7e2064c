use crate::common::*;
use std::path::PathBuf;

#[test]
fn a_journal_written_by_format_v1_still_opens_recovers_and_finishes() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/journal-v1");
    let dir = data_dir("compat");
    for f in [
        "journal.db",
        "orders.db",
        "payments.db",
        "queue.db",
        "stock.db",
    ] {
        std::fs::copy(fixture.join(f), dir.join(f)).unwrap();
    }
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
