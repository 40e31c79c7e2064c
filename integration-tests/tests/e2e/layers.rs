//! Tidy checks on the worker's rooms (ARCHITECTURE.md, "the map"): the
//! rooms import each other in one direction only, and the two engines
//! never import each other. A room is a top-level module of the worker
//! (`cli`, `trigger`, `metrics`, ...) or, inside `engine/`, one child
//! (`engine/embedded`, `engine/temporal`, `engine/view`, ...); files within
//! a room may import each other freely.
//!
//! Imports are read from the code (comments skipped): every `crate::`
//! path, and every `super::` and `self::` path resolved against the file's
//! own module, with `use` groups (`crate::engine::{view, model::X}`)
//! expanded. Re-exports are not followed: a file that names
//! `crate::engine::Definition` depends on `engine` itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The module path of a worker source file (`engine/temporal/client.rs` ->
/// `["engine", "temporal", "client"]`, `engine/mod.rs` -> `["engine"]`,
/// `lib.rs` -> `[]`); `None` for the binary's `main.rs`.
fn module_of(relative: &str) -> Option<Vec<String>> {
    let relative = relative.strip_suffix(".rs")?;
    if relative == "main" {
        return None;
    }
    let mut segs: Vec<String> = relative.split('/').map(str::to_owned).collect();
    if matches!(segs.last().map(String::as_str), Some("mod" | "lib")) {
        segs.pop();
    }
    Some(segs)
}

/// Every path the code names, absolute from the crate root, as segments.
fn named_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let starts = ["crate::", "super::", "self::"]
            .into_iter()
            .any(|p| code[i..].starts_with(p));
        let boundary = i == 0 || !word(code[..i].chars().next_back().unwrap_or(' '));
        if !starts || !boundary {
            i += code[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        }
        // The path: words and `::`, then perhaps one `{...}` group.
        let mut end = i;
        while end < code.len() && (word(bytes[end] as char) || code[end..].starts_with("::")) {
            end += if code[end..].starts_with("::") { 2 } else { 1 };
        }
        let head = code[i..end].trim_end_matches("::");
        let mut base: Vec<String> = Vec::new();
        for (n, seg) in head.split("::").enumerate() {
            match seg {
                "crate" if n == 0 => base.clear(),
                "super" if n == 0 => {
                    base = module.to_vec();
                    base.pop();
                }
                "super" => {
                    base.pop();
                }
                "self" if n == 0 => base = module.to_vec(),
                other => base.push(other.to_owned()),
            }
        }
        if code[end..].starts_with('{') {
            let close = code[end..].find('}').map_or(code.len(), |c| end + c);
            for item in code[end + 1..close].split(',') {
                let item = item.trim().split(" as ").next().unwrap_or("").trim();
                if item.is_empty() || item == "self" {
                    out.push(base.clone());
                    continue;
                }
                let mut path = base.clone();
                path.extend(
                    item.split("::")
                        .filter(|s| !s.is_empty() && *s != "{")
                        .map(str::to_owned),
                );
                out.push(path);
            }
            i = close;
        } else {
            out.push(base);
            i = end;
        }
    }
    out
}

/// `code` up to its inline `#[cfg(test)] mod tests { ... }`, whose
/// `super::` means the file itself, not its parent: tests may reach
/// anywhere.
fn without_inline_tests(code: &str) -> &str {
    let mut from = 0;
    while let Some(at) = code[from..].find("#[cfg(test)]") {
        let at = from + at;
        let rest = code[at + "#[cfg(test)]".len()..].trim_start();
        let inline = rest.starts_with("mod ")
            && rest
                .find('{')
                .is_some_and(|brace| rest.find(';').is_none_or(|semi| brace < semi));
        if inline {
            return &code[..at];
        }
        from = at + 1;
    }
    code
}

/// The room a module path belongs to, given every module of the crate:
/// `engine/X` for a child of `engine`, else the top-level module; `None`
/// for the crate root.
fn room_of(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<String> {
    let top = path.first()?;
    if top == "engine" {
        if let Some(child) = path.get(1) {
            if modules.contains(&vec![top.clone(), child.clone()]) {
                return Some(format!("engine/{child}"));
            }
        }
    }
    Some(top.clone())
}

/// Room -> the rooms it imports, for the worker crate under `src`, and
/// for each import one file and path that makes it (for the message).
type Graph = BTreeMap<String, BTreeSet<String>>;

fn room_graph(src: &Path) -> (Graph, BTreeMap<(String, String), String>) {
    let mut all = Vec::new();
    super::tidy::files(src, &mut all);
    let sources: Vec<(Vec<String>, String)> = all
        .iter()
        .filter_map(|p| {
            let relative = p
                .strip_prefix(src)
                .ok()?
                .to_string_lossy()
                .replace('\\', "/");
            let code = super::tidy::code_of(&super::tidy::read(p));
            Some((
                module_of(&relative)?,
                without_inline_tests(&code).to_owned(),
            ))
        })
        .collect();
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|(m, _)| m.clone()).collect();
    let mut graph: Graph = BTreeMap::new();
    let mut why = BTreeMap::new();
    for (module, code) in &sources {
        let Some(from) = room_of(module, &modules) else {
            continue;
        };
        let edges = graph.entry(from.clone()).or_default();
        for path in named_paths(code, module) {
            if let Some(to) = room_of(&path, &modules) {
                if to != from {
                    why.entry((from.clone(), to.clone())).or_insert_with(|| {
                        format!("{}.rs names {}", module.join("/"), path.join("::"))
                    });
                    edges.insert(to);
                }
            }
        }
    }
    (graph, why)
}

/// A cycle in `graph`, as the rooms along it, if there is one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut found = stack[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, stack, done) {
                return Some(found);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn worker_graph() -> (Graph, BTreeMap<(String, String), String>) {
    room_graph(&super::tidy::root().join("worker/src"))
}

#[test]
fn the_worker_rooms_import_each_other_in_one_direction() {
    let (graph, why) = worker_graph();
    assert!(
        graph.len() > 5,
        "the room graph looks empty, so the check reads nothing: {graph:?}"
    );
    if let Some(found) = cycle(&graph) {
        let edges: Vec<String> = found
            .windows(2)
            .map(|w| why[&(w[0].clone(), w[1].clone())].clone())
            .collect();
        panic!(
            "these rooms import each other in a circle: {} ({}); move what both need into a room they both import (ARCHITECTURE.md says which room holds what)",
            found.join(" -> "),
            edges.join("; ")
        );
    }
}

#[test]
fn the_engines_never_import_each_other() {
    let (graph, why) = worker_graph();
    for (from, to) in [
        ("engine/embedded", "engine/temporal"),
        ("engine/temporal", "engine/embedded"),
    ] {
        assert!(
            graph.contains_key(from),
            "no room {from}: the check reads the wrong tree"
        );
        assert!(
            !graph[from].contains(to),
            "{from} imports {to} ({}): what both engines need belongs in a shared room under engine/ (view, model, command, ...)",
            why[&(from.to_owned(), to.to_owned())]
        );
    }
}

#[test]
fn the_room_check_resolves_paths_and_finds_circles() {
    let module: Vec<String> = ["engine", "temporal", "client"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let code =
        "use super::scope::x; use crate::engine::{view::Row, model}; let a = crate::cli::run();";
    let paths = named_paths(code, &module);
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        [
            "engine::temporal::scope::x",
            "engine::view::Row",
            "engine::model",
            "cli::run",
        ]
    );
    let modules: BTreeSet<Vec<String>> = [vec!["engine".to_owned(), "view".to_owned()]].into();
    assert_eq!(room_of(&paths[1], &modules).as_deref(), Some("engine/view"));
    assert_eq!(room_of(&paths[2], &modules).as_deref(), Some("engine"));
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle(&graph), None);
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
