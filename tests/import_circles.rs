//! No file-level import circles inside any crate: within a crate's `src/`,
//! the modules one file names (`crate::m`, `super::m`, outside comments and
//! the `tests` module) must form a graph without cycles, so that every
//! module can be read after the ones it uses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module path of a file under `src` ("onnx/proto", "camera"), or None for the crate root.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let rel = rel.to_string_lossy().replace('\\', "/");
    let rel = rel.strip_suffix("/mod").unwrap_or(&rel).to_string();
    (rel != "lib" && rel != "main").then_some(rel)
}

/// The identifiers that follow each occurrence of `prefix` in `code`.
fn names_after<'a>(code: &'a str, prefix: &'a str) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
    code.match_indices(prefix).filter_map(move |(at, _)| {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        let rest = &code[at + prefix.len()..];
        let ident = |s: &'a str| {
            let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
            &s[..end]
        };
        let first = ident(rest);
        let second = rest[first.len()..].strip_prefix("::").map(ident);
        (!first.is_empty()).then_some((first, second))
    })
}

fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<String, PathBuf> =
        files.iter().filter_map(|f| Some((module_of(src, f)?, f.clone()))).collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        let parent = module.rsplit_once('/').map_or("", |(p, _)| p);
        let mut deps = BTreeSet::new();
        for (first, _) in names_after(&code, "super::") {
            let candidate = if parent.is_empty() { first.to_string() } else { format!("{parent}/{first}") };
            if modules.contains_key(&candidate) && &candidate != module {
                deps.insert(candidate);
            }
        }
        for (first, second) in names_after(&code, "crate::") {
            let nested = second.map(|s| format!("{first}/{s}"));
            let found = nested.filter(|n| modules.contains_key(n)).unwrap_or_else(|| first.to_string());
            let inside = module.starts_with(&format!("{found}/"));
            if modules.contains_key(&found) && &found != module && !inside {
                deps.insert(found);
            }
        }
        graph.insert(module.clone(), deps);
    }
    graph
}

/// One cycle of `graph`, if it has any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            return Some(path[at..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut done, &mut Vec::new()))
}

#[test]
fn no_crate_has_a_file_level_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut crates: Vec<PathBuf> =
        std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path().join("src")).filter(|src| src.is_dir()).collect();
    crates.sort();
    assert!(crates.len() >= 10, "found only {crates:?}");
    for src in crates {
        if let Some(cycle) = find_cycle(&edges(&src)) {
            panic!("{}: import circle {}", src.display(), cycle.join(" → "));
        }
    }
}

#[test]
fn a_circle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .iter()
        .map(|(from, to)| (from.to_string(), BTreeSet::from([to.to_string()])))
        .collect();
    assert_eq!(find_cycle(&graph), Some(vec!["a".to_string(), "b".to_string(), "c".to_string()]));
}
