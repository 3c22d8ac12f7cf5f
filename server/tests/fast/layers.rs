//! The server's modules form layers, each using only the layers below it (in the spirit of
//! rust-analyzer's tidy tests): a new import that points up, or a new cycle, fails here with the file and
//! the line.

use std::path::Path;

/// From the outside in. A module may use modules of lower rank only; rank 0 are leaves anyone may use.
const LAYERS: &[(&str, u32)] = &[
    ("http", 5),
    ("worker_socket", 4),
    ("session_socket", 4),
    ("coordinator", 3),
    ("ads", 3),
    ("sites", 3),
    ("identity", 2),
    ("store", 1),
    ("config", 0),
    ("clock", 0),
    ("format", 0),
    ("report_limits", 0),
];

fn rank(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(name, _)| *name == module).map(|(_, rank)| *rank)
}

/// Every `crate::<module>` a file names, with its line number. Grouped imports (`crate::{a, b}`) are
/// refused: one `use crate::module::...` per module keeps this check simple and the imports greppable.
fn crate_references(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            assert!(!rest.starts_with('{'), "line {}: write one `use crate::module::...` per module", number + 1);
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            found.push((number + 1, name));
        }
    }
    found
}

/// The module a source file belongs to: `http/jobs.rs` and `http/mod.rs` are `http`, `clock.rs` is `clock`.
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

fn source_files(directory: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

fn violations(source: &Path) -> Vec<String> {
    let mut files = Vec::new();
    source_files(source, &mut files);
    let mut problems = Vec::new();
    for file in files {
        let relative = file.strip_prefix(source).unwrap();
        if relative == Path::new("lib.rs") {
            continue;
        }
        let module = module_of(relative);
        let Some(own) = rank(&module) else {
            problems.push(format!("{}: module `{module}` has no layer in LAYERS", relative.display()));
            continue;
        };
        for (line, used) in crate_references(&std::fs::read_to_string(&file).unwrap()) {
            if used == module {
                continue;
            }
            match rank(&used) {
                Some(theirs) if theirs < own => {}
                Some(_) => problems
                    .push(format!("{}:{line}: `{module}` uses `{used}`, which is not below it", relative.display())),
                None => problems.push(format!("{}:{line}: `crate::{used}` is no module of LAYERS", relative.display())),
            }
        }
    }
    problems
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    // Read at run time (`cargo test` sets it): a shared build cache may hold a binary from another clone.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let source = Path::new(&manifest).join("src");
    let problems = violations(&source);
    assert!(problems.is_empty(), "layer violations:\n{}", problems.join("\n"));
}

#[test]
fn the_check_finds_an_import_that_points_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("store")).unwrap();
    std::fs::write(dir.path().join("store/mod.rs"), "use crate::coordinator::Progress; // a cycle\n").unwrap();
    std::fs::write(dir.path().join("clock.rs"), "pub fn now() {}\n").unwrap();
    std::fs::write(dir.path().join("gadget.rs"), "use crate::clock::now;\n").unwrap();
    let problems = violations(dir.path());
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("`store` uses `coordinator`") || problems[1].contains("`store` uses `coordinator`"));
    assert!(problems.iter().any(|problem| problem.contains("`gadget` has no layer")));
}
