//! The house is one-way: no module reaches up into a module that uses it.
//!
//! Reads `src/` as text and draws two kinds of arrows: between the crate's
//! top-level modules (`crate::store` in `engine/…` is engine → store), and
//! between the children of each module (`super::sequence` in
//! `engine/scoring.rs` is scoring → sequence). A module's head (`mod.rs`)
//! wires its children and may use them all, so it draws no arrows; test
//! code (`#[cfg(test)]` modules and the files only they declare) draws none
//! either. Any cycle fails, naming the files that draw its arrows, so the
//! layers of README's layout stay layers as rooms are added.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Arrows between modules, each with the files that draw it.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

#[test]
fn top_level_modules_depend_one_way() {
    let found = cycle_report("src", &top_level_graph());
    assert!(found.is_empty(), "{found}");
}

/// The pure core and the store sit at the bottom: the engine reads state
/// through its own view and answers its own effects, so it names no
/// storage, no worker and no I/O; the workflow language knows only the
/// durable types; the store knows nothing of what writes it.
#[test]
fn the_core_uses_only_what_lies_below_it() {
    let allowed: [(&str, &[&str]); 4] = [
        ("state", &[]),
        ("config", &["state"]),
        ("engine", &["config", "state"]),
        ("store", &["state", "causes"]),
    ];
    let graph = top_level_graph();
    let mut found = String::new();
    for (module, may_use) in allowed {
        for (used, files) in graph.get(module).into_iter().flatten() {
            if !may_use.contains(&used.as_str()) {
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                found.push_str(&format!("{module} → {used}: {}\n", files.join(", ")));
            }
        }
    }
    assert!(found.is_empty(), "arrows the layers do not allow:\n{found}");
}

/// `crate::x` in `src/top/...`: top → x.
fn top_level_graph() -> Graph {
    let src = src_dir();
    let mut graph = Graph::new();
    for file in source_files(&src) {
        let rel = file.strip_prefix(&src).unwrap_or(&file);
        let Some(top) = top_module(rel) else { continue };
        let code = code_of(&file);
        for used in paths_after(&code, "crate::") {
            if used != top && is_module(&src, &used) {
                add(&mut graph, &top, &used, rel);
            }
        }
    }
    graph
}

#[test]
fn modules_inside_each_module_depend_one_way() {
    let src = src_dir();
    let mut graphs: BTreeMap<String, Graph> = BTreeMap::new();
    for file in source_files(&src) {
        let rel = file.strip_prefix(&src).unwrap_or(&file);
        let parts: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        // src/top/child.rs, src/top/child/mod.rs or src/top/child/part.rs.
        let [top, child, rest @ ..] = parts.as_slice() else {
            continue;
        };
        if child == "mod" {
            continue; // the module head
        }
        let top_dir = src.join(top);
        let code = code_of(&file);
        let mut used: BTreeSet<String> = paths_after(&code, &format!("crate::{top}::"));
        let supers = match rest {
            [] => "super::",
            [last] if last == "mod" => "super::",
            [_] => "super::super::",
            _ => continue,
        };
        used.extend(paths_after(&code, supers));
        for used in used {
            if &used != child && is_module(&top_dir, &used) {
                add(graphs.entry(top.clone()).or_default(), child, &used, rel);
            }
        }
    }
    let found: String = graphs
        .iter()
        .map(|(top, graph)| cycle_report(&format!("src/{top}"), graph))
        .collect();
    assert!(found.is_empty(), "{found}");
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn top_module(rel: &Path) -> Option<String> {
    let first = rel.iter().next()?.to_string_lossy().into_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

/// Whether `name` is a module beside the files of `dir`.
fn is_module(dir: &Path, name: &str) -> bool {
    dir.join(format!("{name}.rs")).is_file() || dir.join(name).join("mod.rs").is_file()
}

fn add(graph: &mut Graph, from: &str, to: &str, file: &Path) {
    graph
        .entry(from.to_owned())
        .or_default()
        .entry(to.to_owned())
        .or_default()
        .insert(file.display().to_string());
}

/// Every `.rs` file under `dir` that is not test code.
fn source_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut test_only = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                test_only.extend(test_only_children(&path));
                out.push(path);
            }
        }
    }
    out.retain(|p| !test_only.contains(p));
    out.sort();
    out
}

/// Files a module declares under `#[cfg(test)]` (`mod tests;`, `mod conformance;`).
fn test_only_children(file: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let dir = match file.file_stem().and_then(|s| s.to_str()) {
        Some("mod" | "lib" | "main") => file.parent().map(Path::to_path_buf),
        Some(stem) => file.parent().map(|p| p.join(stem)),
        None => None,
    };
    let Some(dir) = dir else { return Vec::new() };
    let mut out = Vec::new();
    let mut gated = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("#[cfg(test)]") {
            gated = true;
            continue;
        }
        if gated
            && let Some(name) = line
                .strip_prefix("mod ")
                .or_else(|| line.strip_prefix("pub mod "))
                .and_then(|rest| rest.strip_suffix(';'))
        {
            out.push(dir.join(format!("{name}.rs")));
            out.push(dir.join(name).join("mod.rs"));
        }
        gated = false;
    }
    out
}

/// A file's code without comments and without its inline test module.
fn code_of(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break; // tests sit at the end of a file
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The first names after every `prefix` in `code`, braces opened:
/// `super::{a, b::c}` gives `a` and `b`.
fn paths_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(found) = code[from..].find(prefix) {
        let at = from + found;
        from = at + prefix.len();
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `super::super::x` seen from its second `super::`
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                names.insert(first_ident(item.trim()));
            }
        } else {
            names.insert(first_ident(rest));
        }
    }
    names.retain(|n| !n.is_empty() && n != "super" && n != "self");
    names
}

fn first_ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The cycles of `graph` and the files behind their arrows; empty if none.
fn cycle_report(scope: &str, graph: &Graph) -> String {
    let cycles = cycles(graph);
    if cycles.is_empty() {
        return String::new();
    }
    let mut message = format!("{scope}: modules that depend on each other:\n");
    for cycle in cycles {
        message.push_str(&format!("  {}\n", cycle.join(" ↔ ")));
        for from in &cycle {
            for (to, files) in &graph[from] {
                if cycle.contains(to) {
                    let files: Vec<&str> = files.iter().map(String::as_str).collect();
                    message.push_str(&format!("    {from} → {to}: {}\n", files.join(", ")));
                }
            }
        }
    }
    message
}

/// The strongly connected parts of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        for to in w.graph.get(v).into_iter().flat_map(|m| m.keys()) {
            if !w.index.contains_key(to.as_str()) {
                visit(w, to);
                let low = w.low[to.as_str()].min(w.low[v]);
                w.low.insert(v, low);
            } else if w.stack.contains(&to.as_str()) {
                let low = w.index[to.as_str()].min(w.low[v]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let mut part = Vec::new();
            while let Some(top) = w.stack.pop() {
                part.push(top.to_owned());
                if top == v {
                    break;
                }
            }
            if part.len() > 1 {
                part.sort();
                w.found.push(part);
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            visit(&mut walk, v);
        }
    }
    walk.found
}

#[test]
fn a_cycle_is_found_and_a_chain_is_not() {
    let mut graph = Graph::new();
    add(&mut graph, "api", "worker", Path::new("api/a.rs"));
    add(&mut graph, "worker", "engine", Path::new("worker/b.rs"));
    assert!(cycles(&graph).is_empty());
    add(&mut graph, "engine", "api", Path::new("engine/c.rs"));
    assert_eq!(cycles(&graph), vec![vec!["api", "engine", "worker"]]);
}

#[test]
fn paths_are_read_through_braces_and_past_comments() {
    let code = code_of_text(
        "use super::{alpha, beta::Gamma};\n// super::delta\nlet x = super::super::eps::f();\n",
    );
    assert_eq!(
        paths_after(&code, "super::"),
        BTreeSet::from(["alpha".to_owned(), "beta".to_owned()])
    );
    assert_eq!(
        paths_after(&code, "super::super::"),
        BTreeSet::from(["eps".to_owned()])
    );
}

fn code_of_text(text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("dealflow-arch-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("f.rs");
    let _ = std::fs::write(&file, text);
    let code = code_of(&file);
    let _ = std::fs::remove_dir_all(&dir);
    code
}
