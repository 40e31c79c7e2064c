//! No web page but the dashboard reaches the admin API (issue 30,
//! finding 1): a worker without a token answers only requests addressed
//! to loopback names or its bound address, so a DNS-rebinding page
//! (`Host: attacker.example:PORT`, a matching `Origin`) is refused on
//! every read and command route and commands nothing; `/api` refuses
//! other origins; and in the deployed shape (token set, bound off
//! loopback) the probes still answer a kubelet's `Host: POD_IP:PORT`,
//! and `/readyz` gives a caller without the token no error texts.
//! The middleware is the same on both engines, so the embedded one runs.

use crate::scenarios::{Env, VOID_PARKS};
use std::io::{Read, Write};

const TOKEN: &str = "e2e-admin-token-browser-5a4b3c2d";

/// One HTTP/1.1 request to the worker at `addr` (host:port) with exactly
/// the headers given (`Host` included, or not): (status, body).
fn raw(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let body = if method == "POST" {
        r#"{"operator":"page","reason":"rebinding","dry_run":true,"where":"status=parked","step":"authorize_payment","output":{}}"#
    } else {
        ""
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(
        conn,
        "{head}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

#[test]
fn rebinding_and_cross_origin_requests_are_refused_and_command_nothing() {
    let env = Env::new("admin-browser", "embedded", &VOID_PARKS);
    env.sagaflow(&["stock", "set", "SKU-1=3"]);
    let id = env.submit("o1", "pm_card_visa");
    let worker = env.worker_with(&[], &[("SAGAFLOW_ADMIN_TOKEN", "")]);
    let url = worker.admin_url();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let port = addr.rsplit_once(':').unwrap().1.to_owned();
    env.wait_status(&id, "parked");

    let evil_host = format!("attacker.example:{port}");
    let evil_origin = format!("http://{evil_host}");
    let rebinding = [
        ("Host", evil_host.as_str()),
        ("Origin", evil_origin.as_str()),
    ];
    let mut routes: Vec<(&str, String)> = [
        "/api/sagas",
        "/api/stats",
        "/api/sale",
        "/api/health",
        "/api/audit",
        "/healthz",
        "/readyz",
        "/metrics",
        "/ui",
    ]
    .iter()
    .map(|p| ("GET", p.to_string()))
    .collect();
    routes.push(("GET", format!("/api/sagas/{id}")));
    routes.push(("GET", format!("/api/sagas/{id}/history")));
    for command in ["retry", "cancel", "resolve", "refund"] {
        routes.push(("POST", format!("/api/sagas/{id}/{command}")));
        routes.push(("POST", format!("/api/bulk/{command}")));
    }
    for (method, path) in &routes {
        let (status, body) = raw(&addr, method, path, &rebinding);
        assert_eq!(status, 403, "{method} {path} from a rebinding page: {body}");
        assert!(body.contains("DNS rebinding"), "{method} {path}: {body}");
    }

    // Other spellings of loopback, an IPv6 literal, no Host at all.
    let other_hosts = [
        format!("localhost.:{port}"),
        format!("[2001:db8::1]:{port}"),
        format!("127.0.0.1.attacker.example:{port}"),
    ];
    for host in &other_hosts {
        let (status, body) = raw(&addr, "GET", "/api/sagas", &[("Host", host.as_str())]);
        assert_eq!(status, 403, "Host {host}: {body}");
    }
    let (status, body) = raw(&addr, "GET", "/api/sagas", &[]);
    assert_eq!(status, 403, "no Host: {body}");

    // A page on loopback but another origin (or an opaque one) is refused
    // on /api, reads and commands alike.
    let here = format!("127.0.0.1:{port}");
    for origin in ["null", "http://127.0.0.1:1", "http://localhost:3000"] {
        for (method, path) in [
            ("GET", "/api/sagas".to_owned()),
            ("POST", format!("/api/sagas/{id}/cancel")),
        ] {
            let (status, body) = raw(&addr, method, &path, &[("Host", &here), ("Origin", origin)]);
            assert_eq!(status, 403, "Origin {origin} {method} {path}: {body}");
            assert!(body.contains("only the dashboard"), "{body}");
        }
    }
    let (status, _) = raw(
        &addr,
        "GET",
        "/api/stats",
        &[("Host", &here), ("Sec-Fetch-Site", "cross-site")],
    );
    assert_eq!(status, 403, "Sec-Fetch-Site: cross-site");

    // Nothing was commanded: the saga is parked as before, the audit empty.
    env.wait_status(&id, "parked");
    let audit = env.sagaflow(&["audit", "--json"]);
    assert!(
        !audit.contains(&id),
        "a refused request left an audit row: {audit}"
    );

    // The operator's own requests: loopback names, any port (ssh -L and
    // port-forward change it), the dashboard's own origin.
    for host in [
        here.clone(),
        format!("localhost:{port}"),
        "127.0.0.1:9999".into(),
    ] {
        let (status, body) = raw(&addr, "GET", "/api/sagas", &[("Host", &host)]);
        assert_eq!(status, 200, "Host {host}: {body}");
        assert!(body.contains(&id), "{body}");
    }
    let origin = format!("http://{here}");
    let (status, body) = raw(
        &addr,
        "GET",
        "/api/stats",
        &[
            ("Host", &here),
            ("Origin", &origin),
            ("Sec-Fetch-Site", "same-origin"),
        ],
    );
    assert_eq!(status, 200, "the dashboard's own request: {body}");
}

#[test]
fn probes_answer_a_kubelet_in_the_deployed_shape() {
    let env = Env::new("admin-deployed", "embedded", &[]);
    let worker = env.worker_with(
        &["--admin-bind", "0.0.0.0:0"],
        &[("SAGAFLOW_ADMIN_TOKEN", TOKEN)],
    );
    let url = worker.admin_url();
    let port = url
        .trim_end_matches('/')
        .rsplit_once(':')
        .unwrap()
        .1
        .to_owned();
    let addr = format!("127.0.0.1:{port}");
    let pod = format!("10.244.3.17:{port}");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (status, body) = raw(&addr, "GET", path, &[("Host", &pod)]);
            if status == 200 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} with Host {pod}: {status} {body}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    // The kubelet learns each check's verdict, not the stores' error texts
    // (they name hosts and users); the token's holder gets the details.
    let (_, body) = raw(&addr, "GET", "/readyz", &[("Host", &pod)]);
    let checks: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        checks["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("detail").is_none() && c["ok"].is_boolean()),
        "{body}"
    );
    let auth = format!("Bearer {TOKEN}");
    let (_, body) = raw(
        &addr,
        "GET",
        "/readyz",
        &[("Host", &pod), ("Authorization", &auth)],
    );
    assert!(body.contains("\"detail\""), "{body}");

    // The API itself still wants the token, whatever the Host.
    let (status, _) = raw(&addr, "GET", "/api/stats", &[("Host", &pod)]);
    assert_eq!(status, 401);
    let (status, body) = raw(
        &addr,
        "GET",
        "/api/stats",
        &[("Host", &pod), ("Authorization", &auth)],
    );
    assert_eq!(status, 200, "{body}");
    // A browser page from another origin gets nothing even with a token.
    let (status, _) = raw(
        &addr,
        "GET",
        "/api/stats",
        &[
            ("Host", &pod),
            ("Authorization", &auth),
            ("Origin", "http://evil.example"),
        ],
    );
    assert_eq!(status, 403);
}
