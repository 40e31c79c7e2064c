//! Tidy checks on the repository itself (as rust-analyzer keeps): the code
//! map names only paths that exist, the deterministic core stays free of
//! clocks, randomness, threads and tokio, the docs carry no phrase we
//! know went stale, and no source file grows past 600 lines.

use std::path::{Path, PathBuf};

pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file below `dir` (recursively), skipping build output and tools.
pub(crate) fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The backticked words of `text` that name a file or folder.
fn named_paths(text: &str) -> Vec<String> {
    const ENDINGS: [&str; 8] = [".rs", ".toml", ".md", ".sh", ".lua", ".db", ".json", "/"];
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.contains(' ') && !w.contains("::") && !w.starts_with("../"))
        .filter(|w| ENDINGS.iter().any(|e| w.ends_with(e)))
        .filter(|w| !w.contains('*') && !w.contains("NAME") && !w.contains('<'))
        // `DATA/payments.db`: a placeholder, not a path.
        .filter(|w| {
            !w.split('/')
                .any(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_uppercase()))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_path_in_the_code_map_exists() {
    let root = root();
    let map = read(&root.join("ARCHITECTURE.md"));
    let mut all = Vec::new();
    files(&root, &mut all);
    let crates = [
        "",
        "workflows",
        "activities",
        "payment-sandbox",
        "worker",
        "integration-tests",
    ];
    let mut missing = Vec::new();
    for name in named_paths(&map) {
        let found = if name.contains('/') {
            crates.iter().any(|c| {
                let base = root.join(c);
                base.join(&name).exists() || base.join("src").join(&name).exists()
            })
        } else {
            all.iter()
                .any(|p| p.file_name().is_some_and(|f| f == name.as_str()))
        };
        if !found {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist (fix the map or the path): {missing:?}"
    );
}

/// Names the deterministic core must not use, and why.
const FORBIDDEN: [(&str, &str); 10] = [
    ("std::time", "a clock"),
    ("SystemTime", "a clock"),
    ("Instant", "a clock"),
    ("tokio", "a runtime"),
    ("rand", "randomness"),
    ("HashMap", "iteration order that changes between runs"),
    ("HashSet", "iteration order that changes between runs"),
    ("std::thread", "threads"),
    ("std::env", "the environment"),
    ("std::fs", "file I/O (the worker reads sagas.toml)"),
];

/// The code of a Rust file without its comments (line, doc and block).
pub(crate) fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut in_block = false;
    for line in text.lines() {
        let mut rest = line;
        let mut kept = String::new();
        loop {
            if in_block {
                match rest.find("*/") {
                    Some(i) => {
                        rest = &rest[i + 2..];
                        in_block = false;
                    }
                    None => break,
                }
            } else if let Some(i) = rest.find("/*") {
                let before = &rest[..i];
                match before.find("//") {
                    Some(j) => {
                        kept.push_str(&before[..j]);
                        break;
                    }
                    None => {
                        kept.push_str(before);
                        rest = &rest[i + 2..];
                        in_block = true;
                    }
                }
            } else {
                kept.push_str(rest.split("//").next().unwrap_or(""));
                break;
            }
        }
        code.push_str(&kept);
        code.push('\n');
    }
    code
}

/// True when `name` occurs in `code` as a whole word (or path).
fn uses(code: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.match_indices(name).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// The forbidden names each file of `dir` uses, as "file: name (why)".
fn forbidden_in(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    files(dir, &mut all);
    let mut found = Vec::new();
    for path in all
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
    {
        let code = code_of(&read(path));
        for (name, why) in FORBIDDEN {
            if uses(&code, name) {
                found.push(format!("{}: {name} ({why})", path.display()));
            }
        }
    }
    found
}

#[test]
fn the_deterministic_core_uses_no_clock_randomness_threads_or_io() {
    let found = forbidden_in(&root().join("workflows/src"));
    assert!(
        found.is_empty(),
        "workflows/src must stay deterministic (replay depends on it); move these to worker or activities: {found:?}"
    );
}

#[test]
fn the_forbidden_name_check_sees_code_and_skips_comments() {
    let code = code_of("use std::collections::HashMap; // Instant\n/* tokio */ let x = 1;");
    assert!(uses(&code, "HashMap"));
    assert!(!uses(&code, "Instant"));
    assert!(!uses(&code, "tokio"));
    assert!(!uses("let operand = 1;", "rand"));
    assert!(uses("let r = rand::random();", "rand"));
}

/// Phrases that were true once and are not any more.
const STALE: [&str; 4] = [
    "Not yet here",
    "One test binary",
    "design card (`../shared",
    "payment/sandbox.rs",
];

#[test]
fn the_docs_carry_no_stale_phrase() {
    let root = root();
    let mut found = Vec::new();
    for doc in ["README.md", "ARCHITECTURE.md"] {
        for (i, line) in read(&root.join(doc)).lines().enumerate() {
            for phrase in STALE {
                if line.contains(phrase) {
                    found.push(format!("{doc}:{}: {phrase:?}", i + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "stale phrases in the docs: {found:?}");
}

/// The most lines a source file outside tests may have.
const MOST_LINES: usize = 600;

/// Source files over [`MOST_LINES`] that may stay so for now, each with
/// its lines: they may shrink, not grow, and leave the list once under the
/// line (the check says so). Empty since issue 32 split the last five; a
/// file that must stay long for a reason comes here with the reason.
const OVER_THE_LINE: [(&str, usize); 0] = [];

/// Where a source file breaks the line rule, given its path relative to
/// the workspace and its line count: `None` when it keeps it.
fn line_rule(relative: &str, lines: usize, over: &[(&str, usize)]) -> Option<String> {
    let is_test = relative.starts_with("integration-tests/")
        || relative
            .split('/')
            .any(|seg| seg == "tests" || seg == "tests.rs");
    if is_test || !relative.ends_with(".rs") {
        return None;
    }
    match over.iter().find(|(path, _)| *path == relative) {
        Some((_, ceiling)) if lines > *ceiling => Some(format!(
            "{relative}: {lines} lines, more than the {ceiling} it had when the line rule came in; split it by responsibility instead of growing it"
        )),
        Some(_) if lines <= MOST_LINES => Some(format!(
            "{relative}: {lines} lines, back under {MOST_LINES}: take it out of OVER_THE_LINE in tidy.rs"
        )),
        Some(_) => None,
        None if lines > MOST_LINES => Some(format!(
            "{relative}: {lines} lines, over {MOST_LINES}: split it by responsibility, each part's //! comment saying what it holds"
        )),
        None => None,
    }
}

#[test]
fn no_source_file_grows_past_the_line() {
    let root = root();
    let mut all = Vec::new();
    files(&root, &mut all);
    let broken: Vec<String> = all
        .iter()
        .filter_map(|path| {
            let relative = path
                .strip_prefix(&root)
                .ok()?
                .to_string_lossy()
                .replace('\\', "/");
            let lines = std::fs::read_to_string(path).ok()?.lines().count();
            line_rule(&relative, lines, &OVER_THE_LINE)
        })
        .collect();
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_line_rule_sees_new_long_files_grown_ones_and_stale_entries() {
    let over = [("worker/src/big.rs", 700)];
    assert!(line_rule("worker/src/small.rs", 600, &over).is_none());
    assert!(line_rule("worker/src/new.rs", 601, &over).is_some());
    assert!(line_rule("worker/src/big.rs", 700, &over).is_none());
    assert!(line_rule("worker/src/big.rs", 701, &over).is_some());
    assert!(line_rule("worker/src/big.rs", 600, &over).is_some());
    assert!(line_rule("worker/src/engine/state/tests.rs", 953, &over).is_none());
    assert!(line_rule("workflows/tests/interpreter.rs", 1_047, &over).is_none());
    assert!(line_rule("integration-tests/tests/e2e/main.rs", 900, &over).is_none());
}
