//! Random mutations of the shipped workflow folder: the loader and compiler
//! must answer with diagnostics or success, never panic or hang.

use proptest::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// The shipped workflow files, read once.
fn originals() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    let mut files = Vec::new();
    for entry in walk(&root) {
        let rel = entry
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        files.push((rel, std::fs::read(&entry).unwrap()));
    }
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// One edit to one file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: Vec<u8> },
    DuplicateLine { line: usize },
    Truncate { at: usize },
}

const YAMLISH: &[&str] = &[
    "{{",
    "}}",
    ":",
    "- ",
    "&a ",
    "*a",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    "\n",
    "  ",
    "\t",
    "#",
    "|",
    ">",
    "${X}",
    "${",
    "!!binary ",
    "<<: *a\n",
    "\u{0}",
    "\u{ff}",
    "?",
    "%",
    "@",
    "`",
    "1e999",
    "-.inf",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), prop::sample::select(YAMLISH)).prop_map(|(at, t)| Mutation::Insert {
            at,
            text: t.as_bytes().to_vec()
        }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, text)| Mutation::Insert { at, text }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match m {
        Mutation::Delete { at, len } => {
            let start = at % n;
            let end = (start + len).min(bytes.len());
            bytes.drain(start.min(end)..end);
        }
        Mutation::Insert { at, text } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, text.iter().copied());
        }
        Mutation::DuplicateLine { line } => {
            let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
            if lines.is_empty() {
                return;
            }
            let i = line % lines.len();
            let mut out = Vec::new();
            for (j, l) in lines.iter().enumerate() {
                out.extend_from_slice(l);
                if j == i {
                    out.extend_from_slice(l);
                }
            }
            *bytes = out;
        }
        Mutation::Truncate { at } => bytes.truncate(at % n),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn mutated_folders_never_panic(edits in prop::collection::vec((any::<usize>(), mutation()), 1..6)) {
        let files = originals();
        let dir = tempfile::tempdir().unwrap();
        let mut contents: Vec<(String, Vec<u8>)> = files.clone();
        for (which, m) in &edits {
            let i = which % contents.len();
            apply(&mut contents[i].1, m);
        }
        for (rel, bytes) in &contents {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        let (workflows, diagnostics) = dealflow::config::load(dir.path(), &HashMap::new());
        // Either it compiled, or it said why; never silently nothing.
        prop_assert!(workflows.is_some() || !diagnostics.is_empty());
        for d in &diagnostics {
            prop_assert!(!d.message.is_empty());
        }
    }
}
