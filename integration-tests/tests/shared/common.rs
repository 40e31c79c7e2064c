//! Shared helpers: find the binary, run it, make data directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Runs `sagaflow ARGS` and returns its output (whatever the exit code).
pub fn sagaflow(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("SAGAFLOW_CONFIG")
        .env_remove("SAGAFLOW_DATA")
        .output()
        .expect("run sagaflow")
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
