//! Which `Host` and `Origin` a request to the admin API may carry: the
//! browser-facing half of its security (the token is the other half).
//!
//! A web page cannot read another origin's answers, but DNS rebinding
//! lets a page at `attacker.example:PORT` point that name at 127.0.0.1
//! and talk to a worker listening there as its own origin. The browser
//! still sends the page's name in `Host`, so without a token the API
//! answers only requests addressed to a loopback name or the address it
//! is bound to (an allow-list: `localhost.` and other spellings are
//! refused). The port is not checked: `ssh -L` and `kubectl
//! port-forward` change it, and a rebinding page cannot change the name.
//!
//! With or without a token, `/api` refuses a browser request from any
//! origin but the dashboard's own (`Origin` must be `http://` + `Host`;
//! `Origin: null`, sandboxed frames and `Sec-Fetch-Site: cross-site` or
//! `same-site` are refused). Command-line clients send no `Origin`.

use std::net::SocketAddr;

/// Why a request is refused, for the answer's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Without a token, a `Host` that is not a loopback name or the bound
    /// address (or none at all).
    Host(Option<String>),
    /// A browser request from another origin.
    Origin(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Host(None) => f.write_str(
                "the request has no Host header; without a token the admin API answers only requests addressed to localhost, 127.0.0.1, [::1] or its bound address",
            ),
            Refusal::Host(Some(host)) => write!(
                f,
                "the request is addressed to {host:?}; without a token the admin API answers only requests addressed to localhost, 127.0.0.1, [::1] or its bound address (a web page on another name could be using DNS rebinding). Use http://127.0.0.1:PORT, or set the token variable ([admin] token_env) to serve other names"
            ),
            Refusal::Origin(origin) => write!(
                f,
                "a browser request from {origin:?} is refused: only the dashboard this worker serves (/ui) may call the API from a browser"
            ),
        }
    }
}

/// Checks a request's `Host`, `Origin` and `Sec-Fetch-Site` headers;
/// `api` tells whether the path is under `/api` (probes and the
/// dashboard's files take no `Origin` check); `token` whether a token is
/// required.
pub fn check(
    host: Option<&str>,
    origin: Option<&str>,
    fetch_site: Option<&str>,
    bound: SocketAddr,
    token: bool,
    api: bool,
) -> Result<(), Refusal> {
    if !token && !host.is_some_and(|h| addressed_here(h, bound)) {
        return Err(Refusal::Host(host.map(str::to_owned)));
    }
    if !api {
        return Ok(());
    }
    if let Some(site) = fetch_site {
        if !matches!(site, "same-origin" | "none") {
            return Err(Refusal::Origin(origin.unwrap_or(site).to_owned()));
        }
    }
    match (origin, host) {
        (None, _) => Ok(()),
        (Some(o), Some(h)) if same_origin(o, h) => Ok(()),
        (Some(o), _) => Err(Refusal::Origin(o.to_owned())),
    }
}

/// Whether `host` (a `Host` header: name, optional port) names this
/// machine's loopback or the address the API is bound to.
fn addressed_here(host: &str, bound: SocketAddr) -> bool {
    let name = match host.strip_prefix('[') {
        // An IPv6 literal: `[addr]` or `[addr]:port`.
        Some(rest) => match rest.split_once(']') {
            Some((addr, tail)) if tail.is_empty() || valid_port(tail) => addr,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if valid_port(&format!(":{port}")) => name,
            Some(_) => return false,
            None => host,
        },
    };
    let name = name.to_ascii_lowercase();
    if name == "localhost" {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            ip == bound.ip()
                || ip == std::net::Ipv4Addr::LOCALHOST
                || ip == std::net::Ipv6Addr::LOCALHOST
        }
        Err(_) => false,
    }
}

fn valid_port(tail: &str) -> bool {
    tail.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `origin` is the origin a page served at `host` has.
fn same_origin(origin: &str, host: &str) -> bool {
    origin
        .strip_prefix("http://")
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo() -> SocketAddr {
        "127.0.0.1:7070".parse().unwrap()
    }

    #[test]
    fn without_a_token_only_loopback_names_and_the_bound_address_are_served() {
        for host in [
            "127.0.0.1:7070",
            "127.0.0.1:9000",
            "localhost:7070",
            "LOCALHOST:7070",
            "localhost",
            "[::1]:7070",
            "[::1]",
        ] {
            assert_eq!(
                check(Some(host), None, None, lo(), false, true),
                Ok(()),
                "{host}"
            );
        }
        let bound: SocketAddr = "127.0.0.2:7070".parse().unwrap();
        assert_eq!(
            check(Some("127.0.0.2:7070"), None, None, bound, false, true),
            Ok(())
        );
        for host in [
            "attacker.example:7070",
            "localhost.:7070",
            "localhost.",
            "127.0.0.2:7070",
            "[2001:db8::1]:7070",
            "[::1]x",
            "0.0.0.0:7070",
            "127.0.0.1:70a",
            "localhost.attacker.example",
            "",
        ] {
            assert_eq!(
                check(Some(host), None, None, lo(), false, false),
                Err(Refusal::Host(Some(host.to_owned()))),
                "{host}"
            );
        }
        assert_eq!(
            check(None, None, None, lo(), false, false),
            Err(Refusal::Host(None))
        );
        // With a token the name is not checked: kubelet probes send the
        // pod's IP.
        assert_eq!(
            check(Some("10.1.2.3:7070"), None, None, lo(), true, false),
            Ok(())
        );
        assert_eq!(check(None, None, None, lo(), true, true), Ok(()));
    }

    #[test]
    fn api_calls_from_a_browser_must_come_from_the_dashboard_itself() {
        let host = Some("127.0.0.1:7070");
        let ok = |origin, site| check(host, origin, site, lo(), false, true);
        assert_eq!(
            ok(Some("http://127.0.0.1:7070"), Some("same-origin")),
            Ok(())
        );
        assert_eq!(ok(None, Some("none")), Ok(()));
        for (origin, site) in [
            (Some("http://attacker.example:7070"), None),
            (Some("null"), None),
            (Some("http://127.0.0.1:3000"), Some("same-site")),
            (Some("https://127.0.0.1:7070"), None),
            (None, Some("cross-site")),
        ] {
            assert!(ok(origin, site).is_err(), "{origin:?} {site:?}");
            assert!(
                check(host, origin, site, lo(), true, true).is_err(),
                "a token does not admit other origins either: {origin:?}"
            );
        }
        // Probes and the dashboard's files: no origin check.
        assert_eq!(check(host, Some("null"), None, lo(), false, false), Ok(()));
    }
}
