//! Shared helpers: find the binary, run it, make data directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The `sagaflow` binary of the profile these tests were built with.
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-HASH -> target/<profile>/sagaflow
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = dir.join(format!("sagaflow{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --release --workspace` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A fresh, empty directory for one test.
pub fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sagaflow-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The repository's sagas.toml.
pub fn shipped_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sagas.toml")
}

/// Runs `sagaflow ARGS` and returns its output (whatever the exit code);
/// panics if it hangs past [`COMMAND_LIMIT`].
pub fn sagaflow(args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("SAGAFLOW_CONFIG")
        .env_remove("SAGAFLOW_DATA");
    output_within(&mut cmd, COMMAND_LIMIT)
}

/// How long one `sagaflow` command of a test may take: far above any
/// (the longest, a demo run, takes seconds), so reaching it means a hang.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(600);

/// Runs `cmd` to its end and returns its output, or kills it and panics
/// with what it was once `limit` has passed: a command that hangs fails
/// its test with its name instead of holding the whole run until CI's time
/// is up.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    // wait_with_output drains both pipes, so a chatty command cannot fill
    // one and block; the channel gives the wait its limit.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("waiting for {what}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} had not ended after {limit:?}: killed it");
        }
    }
}

/// Runs `sagaflow ARGS`, asserts success and returns stdout.
pub fn sagaflow_ok(args: &[&str]) -> String {
    stdout_of_success(args, sagaflow(args))
}

/// Asserts that the run of `sagaflow ARGS` succeeded; returns its stdout.
pub fn stdout_of_success(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "sagaflow {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Parses the last line of stdout as JSON.
pub fn json_line(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().unwrap_or_else(|| panic!("no output"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// A saga that parks at once: its second step, past the pivot, commits a
/// reservation that does not exist and may be tried only once. Append it
/// to a config and run it with `run --saga parks`.
#[allow(dead_code)] // not every test binary parks sagas
pub const PARKS_SAGA: &str = r#"
[sagas.parks]
pivot = "first"

[[sagas.parks.steps]]
name = "first"
action = "noop.ok"

[[sagas.parks.steps]]
name = "second"
action = "stock.commit"
retry = { max_attempts = 1 }
"#;

/// Writes a config file that is the shipped one with `replace` applied.
pub fn config_with(dir: &Path, replace: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(shipped_config()).unwrap();
    for (from, to) in replace {
        assert!(
            text.contains(from),
            "the shipped sagas.toml has no {from:?}"
        );
        text = text.replace(from, to);
    }
    let path = dir.join("sagas.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `GET path` of `addr` (host:port) over HTTP/1.1, no token: status, the
/// response's head and body; status 0 when nothing answers.
#[allow(dead_code)] // not every test binary calls a worker's admin port
pub fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    http_get_with(addr, path, &[])
}

/// [`http_get`] with request headers.
#[allow(dead_code)]
pub fn http_get_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
        return (0, String::new(), String::new());
    };
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    let _ = conn.read_to_string(&mut raw);
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    (status, head.to_owned(), body.to_owned())
}

/// The address a worker started with `--admin-bind 127.0.0.1:0` logged
/// ("admin API listening on http://ADDR"), once it has; panics with the
/// log if the worker exits or logs none within 20 s.
#[allow(dead_code)]
pub fn admin_address(log: &Path, worker: &mut std::process::Child) -> String {
    let began = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        // Text or JSON log lines: the address ends where its characters do.
        if let Some(rest) = text.split("admin API listening on http://").nth(1) {
            return rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
                .collect();
        }
        assert!(
            began.elapsed() < std::time::Duration::from_secs(20)
                && worker.try_wait().unwrap().is_none(),
            "the worker served no admin API:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
