//! Dependencies point one way (DESIGN.md §6): this test reads every `crate::` path in `src/`,
//! builds the graph of the top-level modules, and fails on a cycle or on a module importing one
//! of its own layer or above.
//!
//! The source text is scanned, not the compiler's view: comments are skipped, `use crate::{a,
//! b::c}` groups count every first segment, and paths that leave a file through `super::super`
//! are refused (they would hide an edge). The layers are the table below; a module missing from
//! it fails the test, so a new module is placed on purpose.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Each top-level module with its layer: a module may import only modules of a lower layer.
const LAYERS: &[(&str, u8)] = &[
    // The bottom: the CRD types, GUID syntax and the domain vocabulary.
    ("api", 0),
    ("guid", 0),
    ("domain", 1),
    // Resilience of every client of a service outside the cluster (circuit breakers).
    ("upstream", 1),
    // Decisions, and the I/O beside them.
    ("policy", 2),
    ("resolver", 2),
    ("azure", 2),
    ("crd", 2),
    ("conditions", 3),
    ("cli", 3),
    // The usage source and sink clients (§9): over azure's transport and credentials.
    ("usage_io", 3),
    // What runs around the controllers, then the controllers.
    ("runtime", 4),
    ("usage", 4), // pure usage decisions (§9), reading policy's reasons and `conditions`
    ("controller", 5),
    // Wiring: the commands.
    ("operator", 6),
    ("verify", 6),
    // The outside world for users and tests (DESIGN.md §10): reuses policy and the catalog.
    ("emulator", 6),
    ("layering_tests", 7),
];

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

/// The source without its comments (line, doc and block comments).
fn without_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |end| &after[end..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
        } else if let Some(after) = rest.strip_prefix('"') {
            // Skip string literals, so that "http://…" does not start a comment.
            let mut escaped = false;
            let end = after
                .char_indices()
                .find(|&(_, c)| {
                    let closes = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    closes
                })
                .map_or(after.len(), |(i, _)| i + 1);
            out.push_str("\"\"");
            rest = &after[end..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn leading_ident(s: &str) -> &str {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `source` names through `crate::`.
fn crate_imports(source: &str) -> BTreeSet<String> {
    let code = without_comments(source);
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let preceded_by_ident = code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        if preceded_by_ident {
            continue;
        }
        let rest = code[at + "crate::".len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}, e}`: the first segment of every item at depth one.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        found.insert(leading_ident(&group[i..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(leading_ident(rest).to_string());
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

/// The top-level module a file under `src/` belongs to (`None` for the crate roots).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(module, "lib" | "main")).then(|| module.to_string())
}

/// The module graph of `src/`: module → the other modules it imports.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(src, &file) else {
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap();
        assert!(
            !without_comments(&source).contains("super::super"),
            "{}: name the module through crate:: instead of super::super",
            file.display()
        );
        let imports = crate_imports(&source);
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(imports.into_iter().filter(|m| *m != module));
    }
    graph
}

/// One cycle of `graph`, if there is any (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_imports_its_own_layer_or_above() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let graph = module_graph(&src_dir());
    let mut violations = Vec::new();
    for (module, imports) in &graph {
        let Some(&layer) = layers.get(module.as_str()) else {
            violations.push(format!("{module} is not in LAYERS"));
            continue;
        };
        for import in imports {
            match layers.get(import.as_str()) {
                Some(&other) if other < layer => {}
                Some(&other) => violations.push(format!(
                    "{module} (layer {layer}) imports {import} (layer {other})"
                )),
                None => violations.push(format!("{module} imports {import}, not in LAYERS")),
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}\ngraph: {graph:#?}");
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = module_graph(&src_dir());
    assert_eq!(find_cycle(&graph), None, "graph: {graph:#?}");
}

#[test]
fn the_scanner_sees_grouped_imports_and_skips_comments_and_strings() {
    let source = r#"
        use crate::{api::{A, B}, policy::Reason,
            resolver::MetadataResolver};
        // use crate::controller::Stores;
        /* crate::operator */
        let url = "http://x/crate::verify";
        fn f() -> crate::conditions::Clock { todo!() }
        let p = $crate::cli::X;
    "#;
    assert_eq!(
        crate_imports(source),
        ["api", "conditions", "policy", "resolver"]
            .map(String::from)
            .into()
    );
    let cyclic: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(m, deps)| (m.to_string(), deps.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        find_cycle(&cyclic),
        Some(["a", "b", "c", "a"].map(String::from).to_vec())
    );
}
