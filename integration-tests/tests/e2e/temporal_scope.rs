//! Two deployments on one Temporal namespace (issue 30, finding 2): each
//! is its task queue, and nothing one's operators send reaches the
//! other's sagas. A `saga=` value written to escape the visibility query
//! is refused; `list` and `audit` show only this deployment's sagas; and
//! `show`, `retry`, `cancel` and `refund` of the other's saga answer "no
//! saga" and command nothing.

use crate::scenarios::{Env, VOID_PARKS};

#[test]
fn another_deployments_sagas_are_out_of_reach() {
    let a = Env::new("scope-a", "temporal", &VOID_PARKS);
    let b = Env::new("scope-b", "temporal", &VOID_PARKS);
    a.sagaflow(&["stock", "set", "SKU-1=3"]);
    let id = a.submit("o1", "pm_card_visa");
    let _worker = a.worker();
    a.wait_status(&id, "parked");
    // A's own operator commands it: one audit row, in A.
    a.sagaflow(&["retry", &id, "--reason", "scope test", "--operator", "ann"]);
    assert!(a.sagaflow(&["audit", "--json"]).contains(&id));

    // The query injection from the issue: refused at the door (the admin
    // API's `where` goes through the same parser), and nothing listed.
    for args in [
        &["retry", "--where", "saga=x' OR TaskQueue != '", "--dry-run"][..],
        &[
            "cancel",
            "--where",
            "saga=x' OR TaskQueue != '",
            "--reason",
            "r",
        ][..],
    ] {
        let err = b.sagaflow_fails(args);
        assert!(err.contains("a saga name is letters"), "{args:?}: {err}");
        assert!(!err.contains(&id), "{args:?}: {err}");
    }
    let listed = b.sagaflow(&["list", "--json"]);
    assert!(!listed.contains(&id), "B lists A's saga: {listed}");
    let audit = b.sagaflow(&["audit", "--json"]);
    assert!(!audit.contains(&id), "B's audit shows A's command: {audit}");

    for args in [
        vec!["show", id.as_str()],
        vec!["history", id.as_str()],
        vec!["retry", id.as_str(), "--reason", "not mine"],
        vec!["cancel", id.as_str(), "--reason", "not mine"],
        vec!["refund", id.as_str(), "--reason", "not mine"],
    ] {
        let err = b.sagaflow_fails(&args);
        assert!(err.contains("no saga"), "{args:?}: {err}");
    }
    // Nothing reached it: A's audit still holds only A's command.
    let rows: Vec<serde_json::Value> = a
        .sagaflow(&["audit", "--saga", &id, "--json"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["operator"], "ann", "{rows:?}");
}
