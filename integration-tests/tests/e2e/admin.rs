//! The worker's admin API end to end, on both engines: the token rules
//! (a bind off loopback without one does not start; a missing or wrong one
//! gets 401; it appears in no log line or output), the reads, a refused
//! and an applied command over HTTP, and the CLI's `--admin URL` giving
//! the answers it gives locally.

use crate::common::bin;
use crate::scenarios::{on_both_engines, Env, VOID_PARKS};
use serde_json::Value;
use std::io::{Read, Write};

const TOKEN: &str = "e2e-admin-token-6f1d2c9a8b7e";

/// One HTTP/1.1 request to `base` + `path`: (status, JSON body).
pub(crate) fn http(
    method: &str,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    let status: u16 = raw[9..12].parse().unwrap();
    let (_, rest) = raw.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(rest).unwrap_or(Value::Null))
}

/// `sagaflow --admin URL ARGS` from another "machine": no data directory
/// of the worker's, the token (or none) in the environment.
fn remote(env: &Env, url: &str, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--admin", url, "--config", env.config.to_str().unwrap()];
    all.extend(args);
    let mut c = std::process::Command::new(bin());
    c.args(&all).env_remove("SAGAFLOW_ADMIN_TOKEN");
    if let Some(t) = token {
        c.env("SAGAFLOW_ADMIN_TOKEN", t);
    }
    c.output().unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn admin_api(engine: &str) {
    let env = Env::new("admin", engine, &VOID_PARKS);
    env.sagaflow(&["stock", "set", "SKU-1=3"]);
    let id = env.submit("o1", "pm_card_visa");
    let worker = env.worker_with(&[], &[("SAGAFLOW_ADMIN_TOKEN", TOKEN)]);
    let url = worker.admin_url();
    env.wait_status(&id, "parked");
    let mut seen = String::new();

    // The token is enforced on loopback too once it is set.
    for token in [None, Some("e2e-admin-token-6f1d2c9a8b7f"), Some("")] {
        let (status, body) = http("GET", &url, "/api/stats", token, None);
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("$SAGAFLOW_ADMIN_TOKEN"),
            "{body}"
        );
    }
    let (status, _) = http(
        "POST",
        &url,
        &format!("/api/sagas/{id}/retry"),
        None,
        Some(&serde_json::json!({"operator": "x", "reason": "y"})),
    );
    assert_eq!(status, 401, "a command without the token is refused");

    // Reads: the API and the local CLI agree.
    let (status, rows) = http("GET", &url, "/api/sagas?status=parked", Some(TOKEN), None);
    assert_eq!(status, 200, "{rows}");
    let ids: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "{rows}");
    let (status, doc) = http("GET", &url, &format!("/api/sagas/{id}"), Some(TOKEN), None);
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["timeline"], env.show(&id)["timeline"]);
    let (status, missing) = http("GET", &url, "/api/sagas/no-such-order", Some(TOKEN), None);
    assert_eq!(status, 404, "{missing}");
    let (status, stats) = http("GET", &url, "/api/stats", Some(TOKEN), None);
    assert_eq!(
        (status, stats["parked"].as_u64()),
        (200, Some(1)),
        "{stats}"
    );

    // Bad and refused commands: 400 and 409, with why.
    let (status, body) = http(
        "POST",
        &url,
        &format!("/api/sagas/{id}/retry"),
        Some(TOKEN),
        Some(&serde_json::json!({"operator": "carol"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("\"reason\" is required"),
        "{body}"
    );
    let (status, body) = http(
        "POST",
        &url,
        &format!("/api/sagas/{id}/cancel"),
        Some(TOKEN),
        Some(&serde_json::json!({"operator": "carol", "reason": "undo"})),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["outcome"], "refused");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("already compensating"),
        "{body}"
    );

    // The CLI through --admin: without the token it is refused, with it
    // it lists what a bulk retry would touch and resolves the saga.
    let out = remote(&env, &url, None, &["list", "--json"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("401"), "{}", text(&out));
    let out = remote(
        &env,
        &url,
        Some(TOKEN),
        &["retry", "--where", "status=parked", "--dry-run", "--json"],
    );
    seen += &text(&out);
    assert!(out.status.success(), "{}", text(&out));
    let dry: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dry.len(), 1, "{dry:?}");
    assert_eq!(dry[0]["id"], id.as_str());
    let out = remote(&env, &url, Some(TOKEN), &["show", &id, "--json"]);
    seen += &text(&out);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["timeline"], env.show(&id)["timeline"]);
    let out = remote(
        &env,
        &url,
        Some(TOKEN),
        &[
            "resolve",
            &id,
            "--step",
            "authorize_payment",
            "--reason",
            "voided at the provider by hand",
            "--operator",
            "carol",
        ],
    );
    seen += &text(&out);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).starts_with("resolve applied to saga"),
        "{}",
        text(&out)
    );
    env.wait_status(&id, "compensated");
    let stock = env.stock();
    assert_eq!(
        (stock["available"].as_i64(), stock["reserved"].as_i64()),
        (Some(3), Some(0)),
        "{stock}"
    );
    let (status, audit) = http(
        "GET",
        &url,
        &format!("/api/audit?saga={id}"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{audit}");
    let applied: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "applied")
        .collect();
    assert_eq!(applied.len(), 1, "{audit}");
    assert_eq!(
        (&applied[0]["operator"], &applied[0]["reason"]),
        (
            &Value::from("carol"),
            &Value::from("voided at the provider by hand")
        )
    );
    let out = remote(&env, &url, Some(TOKEN), &["audit", "--saga", &id]);
    seen += &text(&out);
    assert!(
        text(&out).contains("voided at the provider by hand"),
        "{}",
        text(&out)
    );

    drop(worker);
    let log = std::fs::read_dir(&env.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("worker-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(log.contains("admin API listening"), "{log}");
    assert!(
        !log.contains(TOKEN) && !seen.contains(TOKEN),
        "the token leaked:\n{log}\n{seen}"
    );
}

fn off_loopback_without_a_token_does_not_start(engine: &str) {
    let env = Env::new("admin-bind", engine, &[]);
    let out = std::process::Command::new(bin())
        .args(env.with_env(&["run", "--admin-bind", "0.0.0.0:0"]))
        .env_remove("SAGAFLOW_ADMIN_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("not loopback") && err.contains("$SAGAFLOW_ADMIN_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("worker running"), "{err}");
    // A short token is no secret either.
    let out = std::process::Command::new(bin())
        .args(env.with_env(&["run", "--admin-bind", "0.0.0.0:0"]))
        .env("SAGAFLOW_ADMIN_TOKEN", "hunter2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("at least 16"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

on_both_engines!(admin_api, off_loopback_without_a_token_does_not_start);
