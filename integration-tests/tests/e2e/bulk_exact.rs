//! A bulk run acts on exactly the sagas its dry run listed (issue 30,
//! finding 3): the dashboard and the API send the dry run's ids, so sagas
//! that started matching during the dialog are not acted on, and a listed
//! saga that no longer matches is skipped and reported. A resume needs its
//! own reason and operator, and its dry run sends nothing.

use crate::scenarios::Env;
use serde_json::{json, Value};

/// One JSON request to the worker's admin API (no token): (status, body).
fn api(url: &str, method: &str, path: &str, body: &Value) -> (u16, Value) {
    crate::admin::http(method, url, path, None, Some(body))
}

#[test]
fn a_bulk_refund_acts_on_the_dry_runs_sagas_while_new_ones_complete() {
    let env = Env::new("bulk-exact", "embedded", &[]);
    env.sagaflow(&["stock", "set", "SKU-1=100"]);
    let first: Vec<String> = (0..3)
        .map(|i| env.submit(&format!("o{i}"), "pm_card_visa"))
        .collect();
    let worker = env.worker();
    let url = worker.admin_url();
    for id in &first {
        env.wait_status(id, "completed");
    }
    let terms = "saga=checkout and status=completed";
    let (status, dry) = api(
        &url,
        "POST",
        "/api/bulk/refund",
        &json!({"where": terms, "dry_run": true}),
    );
    assert_eq!(status, 200, "{dry}");
    let mut listed: Vec<String> = dry["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, first, "{dry}");

    // During the dialog the sale goes on: two more checkouts complete.
    let later: Vec<String> = (3..5)
        .map(|i| env.submit(&format!("o{i}"), "pm_card_visa"))
        .collect();
    for id in &later {
        env.wait_status(id, "completed");
    }
    let gone = env.id("gone");
    let mut ids = listed.clone();
    ids.push(gone.clone());
    let (status, done) = api(
        &url,
        "POST",
        "/api/bulk/refund",
        &json!({"where": terms, "ids": ids, "operator": "ann", "reason": "recall of SKU-1", "wait": 10}),
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["planned"].as_u64(), done["sent"].as_u64()),
        (Some(3), Some(3)),
        "{done}"
    );
    assert_eq!(
        done["skipped"][0][0],
        gone.as_str(),
        "the listed id that no longer matches: {done}"
    );

    // The refund sagas, as the journal holds them: exactly the dry run's.
    for id in &first {
        env.wait_status(&format!("{id}#refund"), "completed");
    }
    let all = env.sagaflow(&["list", "--json", "--limit", "100"]);
    for id in &later {
        assert!(
            !all.contains(&format!("{id}#refund")),
            "{id} was not in the dialog: {all}"
        );
        assert_eq!(env.show(id)["saga"]["status"], "completed");
    }

    // A bulk id is a file name, not a path; a resume needs its reason.
    for bad in ["/etc/passwd", "../../x"] {
        let (status, body) = api(
            &url,
            "POST",
            "/api/bulk/retry",
            &json!({"resume": bad, "operator": "ann", "reason": "r"}),
        );
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("it names a file"),
            "{body}"
        );
    }
    let bulk = done["bulk_id"].as_str().unwrap();
    let (status, body) = api(
        &url,
        "POST",
        "/api/bulk/refund",
        &json!({"resume": bulk, "operator": "ann"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("reason"), "{body}");
    let (status, body) = api(
        &url,
        "POST",
        "/api/bulk/refund",
        &json!({"resume": bulk, "dry_run": true}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["targets"].as_array().unwrap().len(), 3, "{body}");
}
