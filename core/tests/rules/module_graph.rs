//! The modules of `cloudattach-core` form no cycle: every `crate::<module>` a module names is
//! an edge, and the graph of edges has no loop. A cycle is a misplaced helper; this test names
//! it so it is moved where it belongs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a source file belongs to (`ops/apply.rs` → `ops`).
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::name` in the text, and the first names of `use crate::{a, b::{c, d}}` lists.
fn referenced(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            // The top-level items of a balanced brace group.
            let (mut depth, mut start) = (0usize, 0usize);
            for (at, c) in list.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(&list[start..at]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&list[start..at]));
                        start = at + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

#[test]
fn core_has_no_module_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(f.strip_prefix(&src).unwrap()))
        .filter(|m| m != "lib")
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = module_of(f.strip_prefix(&src).unwrap());
        if from == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests (the `#[cfg(test)] mod` at the end of a file) may reach anywhere; only the
        // module's own code counts.
        let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or("");
        for to in referenced(code) {
            if to != from && modules.contains(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a back edge, reporting the cycle's path.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in &modules {
        if let Some(cycle) = visit(m, &edges, &mut vec![], &mut done) {
            panic!("module cycle in cloudattach-core: {}", cycle.join(" → "));
        }
    }
    // The layering the architecture document describes holds: the use cases sit on top.
    for (from, to) in &edges {
        assert!(
            from == "ops" || !to.contains("ops"),
            "{from} depends on ops; only the front end calls the use cases"
        );
    }
}

#[test]
fn references_are_read_from_paths_and_nested_use_lists() {
    let names =
        referenced("use crate::{a::{b, c}, d};\nfn f() { crate::e::g(); }\n/// [`crate::h::I`]\n");
    let expected: BTreeSet<String> = ["a", "d", "e", "h"].map(String::from).into();
    assert_eq!(names, expected);
}
