//! A real headless browser for the dashboard's tests: Debian's `chromium`
//! driven through `chromedriver` over the W3C WebDriver protocol (JSON over
//! HTTP; a few calls, so no client crate). `scripts/services.sh` installs
//! both when they are missing; a test fails, never skips, without them.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session; both end when dropped.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    profile: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request to chromedriver: its JSON answer's `value`.
fn call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut conn = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open after answering: read the
    // head, then exactly the body it announces.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = conn.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("chromedriver closed the connection".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &raw[head_end..];
        let complete = match length {
            Some(n) => body.len() >= n,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = conn.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let rest = String::from_utf8_lossy(&raw[head_end..]);
    let body = if chunked {
        dechunk(&rest)
    } else {
        rest.into_owned()
    };
    let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let value = answer["value"].clone();
    if value.get("error").is_some() {
        return Err(format!("{method} {path}: {value}"));
    }
    Ok(value)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

/// Standard base64 (a screenshot's PNG).
fn base64(text: &str) -> Vec<u8> {
    let digit = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|&c| u32::from(digit(c))).collect();
        let n = v.iter().fold(0u32, |acc, d| (acc << 6) | d) << (6 * (4 - v.len()));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..v.len() - 1]);
    }
    out
}

impl Browser {
    /// Starts chromedriver and a headless chromium session (a window of
    /// 1400x1600, so screenshots show the whole view).
    pub fn start() -> Browser {
        for (tool, package) in [
            ("/usr/bin/chromium", "chromium"),
            ("/usr/bin/chromedriver", "chromium-driver"),
        ] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: the dashboard tests need Debian's {package} (`scripts/services.sh browser` installs it; scripts/test.sh does)"
            );
        }
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(e) = call(&addr, "GET", "/status", None) {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start on {addr}: {e}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile =
            std::env::temp_dir().join(format!("sagaflow-chromium-{}-{port}", std::process::id()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1600",
                         format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let session = call(&addr, "POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("chromium did not start a session: {e}"));
        Browser {
            driver,
            addr,
            session: session["sessionId"].as_str().unwrap().to_owned(),
            profile,
        }
    }

    fn session(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        call(&self.addr, method, &path, body).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.session("POST", "/url", Some(&json!({"url": url})));
    }

    /// Runs `script` (a function body: `return ...`) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// Polls `script` until it returns something other than null, false or
    /// ""; returns that; panics after `secs` with `what` and the last value.
    pub fn wait_for(&self, what: &str, secs: u64, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.eval(script);
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within {secs} s (last: {v}); the page says: {}",
                self.eval("return document.body.innerText.slice(0, 2000)")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn element(&self, css: &str) -> String {
        let found = self.session(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css:?}: {found}"))
            .to_owned()
    }

    /// Clicks the element `css` selects, as a user would.
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.session("POST", &format!("/element/{id}/click"), Some(&json!({})));
    }

    /// Types `text` into the element `css` selects (after clearing it).
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.session("POST", &format!("/element/{id}/clear"), Some(&json!({})));
        self.session(
            "POST",
            &format!("/element/{id}/value"),
            Some(&json!({"text": text})),
        );
    }

    /// Picks the option whose value is `value` in the `<select>` `css`
    /// selects, by clicking it.
    pub fn select(&self, css: &str, value: &str) {
        self.click(css);
        self.click(&format!("{css} option[value=\"{value}\"]"));
    }

    /// Saves a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self.session("GET", "/screenshot", None);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, base64(png.as_str().unwrap())).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = call(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Where the tests leave their screenshots: `target/test-artifacts/`
/// beside the binary under test (never in the repository).
pub fn artifacts(name: &str) -> PathBuf {
    let target = crate::common::bin()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_owned();
    target.join("test-artifacts").join(name)
}

#[test]
fn base64_decodes_what_webdriver_sends() {
    assert_eq!(base64("aGVsbG8="), b"hello");
    assert_eq!(base64("aGk="), b"hi");
    assert_eq!(base64("YWJj"), b"abc");
}
