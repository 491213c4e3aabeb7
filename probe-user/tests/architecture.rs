//! The dependency rule of src/lib.rs and docs/architecture.md, checked on the
//! source: kernel → decode → aggregate → export, identity serving decode and
//! aggregate, cmd on top; nothing points back up.
use std::{collections::BTreeSet, path::Path};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Top-level modules each layer may name through `crate::` (besides itself).
fn allowed(layer: &str) -> &'static [&'static str] {
    match layer {
        "error" | "http_client" | "priority" => &[],
        "kernel" => &["error"],
        "identity" => &["error", "http_client", "priority"],
        "decode" => &["error", "kernel", "identity"],
        "aggregate" => &["error", "kernel", "identity", "decode"],
        "export" => &["error", "kernel", "identity", "decode", "aggregate"],
        "config" => &["error", "kernel", "identity", "aggregate"],
        "cmd" => &["error", "http_client", "priority", "kernel", "identity", "decode", "aggregate", "export", "config"],
        // The fuzz entry points reach every parser, `trace`'s printing included.
        "fuzzing" => &[
            "error",
            "http_client",
            "priority",
            "kernel",
            "identity",
            "decode",
            "aggregate",
            "export",
            "config",
            "cmd",
        ],
        other => panic!(
            "src/{other}: a module the rule does not place; add it to tests/architecture.rs and docs/architecture.md"
        ),
    }
}

/// The top-level modules a file names as `crate::x` or `crate::{x, y::z}`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(inner) = rest.strip_prefix('{') {
            // Names at the top of the group: after `{` or `,` at depth 0.
            let (mut depth, mut start) = (0usize, true);
            let mut ident = String::new();
            for c in inner.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => ident.push(c),
                    _ => {
                        if !ident.is_empty() {
                            out.insert(std::mem::take(&mut ident));
                        }
                        if !c.is_whitespace() {
                            start = false;
                        }
                    }
                }
            }
            if !ident.is_empty() {
                out.insert(ident);
            }
        } else {
            let ident: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !ident.is_empty() {
                out.insert(ident);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn parses_grouped_imports() {
    let refs = crate_refs(
        "use crate::{\n    decode::{Decoder, x},\n    identity::listing::{A, B},\n    kernel,\n};\nlet x = crate::error::Error::Config;",
    );
    assert_eq!(refs, ["decode", "error", "identity", "kernel"].iter().map(|s| s.to_string()).collect());
}

#[test]
fn nothing_points_back_up() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(SRC).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
        let layer = first.trim_end_matches(".rs");
        if matches!(layer, "lib" | "main" | "bin") {
            continue; // the crate root, the binaries: on top of everything
        }
        // Code only: doc links may name any layer.
        let text: String = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        for r in crate_refs(&text) {
            if r != layer && !allowed(layer).contains(&r.as_str()) {
                violations.push(format!("src/{} uses crate::{r}", rel.display()));
            }
        }
    }
    assert!(files.len() > 20, "found only {} source files under {SRC}", files.len());
    assert!(violations.is_empty(), "dependency rule broken:\n{}", violations.join("\n"));
}
