//! The code's shape, checked: the rules in docs/architecture.md ("Rules the code keeps") that a
//! reviewer would otherwise check by hand.
//!
//! - No source file over 600 lines, outside test files: a file that long holds more than one
//!   concept.
//! - No import cycle between the top-level modules of a crate: data flows one way (front door →
//!   intake → store → dispatcher → sink), and a module that imports its caller breaks that.
//! - No comment names a file that is not in the repository: comments point readers at things
//!   they can open.
//!
//! These read the source as text; they need no build of the code they check.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The longest a source file may be (lines), outside test files.
const MAX_LINES: usize = 600;

/// The crates' source roots, relative to the repository.
const SOURCE_ROOTS: [&str; 3] = ["src", "loadtest/src", "client/src"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Test files (a `tests.rs`, `tests_*.rs` or a file under a `tests/` folder) may be longer: a
/// test reads best beside its fixtures.
fn is_test_file(path: &Path) -> bool {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    name == "tests"
        || name.starts_with("tests_")
        || path.components().any(|c| c.as_os_str() == "tests")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn no_source_file_is_over_600_lines() {
    let mut long = Vec::new();
    for root in SOURCE_ROOTS {
        for file in rust_files(&repo().join(root)) {
            let lines = read(&file).lines().count();
            if lines > MAX_LINES && !is_test_file(&file) {
                long.push(format!("{} ({lines} lines)", relative(&file)));
            }
        }
    }
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:#?}");
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The code of a file without its comments and without a trailing `#[cfg(test)] mod tests`:
/// a unit test may import anything.
fn code_only(text: &str) -> String {
    let without_tests = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    without_tests
        .lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code names through `crate::`: `crate::store::Store` and
/// `use crate::{store, model::Lane}` both count.
fn crate_modules_named(code: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            named.extend(top_level_names_in_group(group));
        } else {
            named.insert(leading_identifier(rest));
        }
    }
    named.retain(|name| !name.is_empty() && name != "self");
    named
}

/// The first path segment of each item in a `{a, b::c, d::{e, f}}` group (`group` starts after
/// the opening brace).
fn top_level_names_in_group(group: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    let mut at_item_start = true;
    for (i, ch) in group.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item_start = true,
            c if at_item_start && !c.is_whitespace() => {
                names.push(leading_identifier(&group[i..]));
                at_item_start = false;
            }
            _ => {}
        }
    }
    names
}

fn leading_identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level module a file belongs to (`store/claims.rs` → `store`); `None` for the crate
/// root and binaries.
fn top_level_module(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "bin")).then(|| name.to_string())
}

/// Edges `from → to` between top-level modules of the crate whose source is under `root`.
fn module_graph(root: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in rust_files(root) {
        let Some(from) = top_level_module(root, &file) else {
            continue;
        };
        for to in crate_modules_named(&code_only(&read(&file))) {
            if to != from {
                let file_name = relative(&file);
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(file_name);
            }
        }
    }
    graph
}

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The groups of modules that import each other, directly or through others (the strongly
/// connected components of more than one module, by Tarjan's algorithm).
fn cycles(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, node: &'g str) {
            let index = self.index.len();
            self.index.insert(node, index);
            self.low.insert(node, index);
            self.stack.push(node);
            for next in self.graph.get(node).into_iter().flat_map(|e| e.keys()) {
                let next = next.as_str();
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.stack.contains(&next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut group = BTreeSet::new();
                while let Some(member) = self.stack.pop() {
                    group.insert(member.to_string());
                    if member == node {
                        break;
                    }
                }
                if group.len() > 1 {
                    self.found.push(group);
                }
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
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.found
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let mut found = String::new();
    for root in SOURCE_ROOTS {
        let graph = module_graph(&repo().join(root));
        for group in cycles(&graph) {
            found.push_str(&format!("\n{root}: {group:?} import each other:\n"));
            for from in &group {
                for (to, files) in graph[from].iter().filter(|(to, _)| group.contains(*to)) {
                    found.push_str(&format!("  {from} → {to} in {files:?}\n"));
                }
            }
        }
    }
    assert!(found.is_empty(), "import cycles:{found}");
}

#[test]
fn the_cycle_check_sees_grouped_and_plain_imports() {
    let code = code_only(
        "use crate::{store::Store, model::{Lane, State}};\n\
         // crate::ignored in a comment\n\
         fn f() { crate::telemetry::metrics::Metrics::new(); }\n\
         #[cfg(test)]\nmod tests { use crate::app; }\n",
    );
    let named: Vec<_> = crate_modules_named(&code).into_iter().collect();
    assert_eq!(named, ["model", "store", "telemetry"]);

    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")] {
        graph
            .entry(from.into())
            .or_default()
            .insert(to.into(), BTreeSet::new());
    }
    let abc: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    assert_eq!(cycles(&graph), [abc]);
    graph.get_mut("c").map(|edges| edges.remove("a"));
    assert!(cycles(&graph).is_empty());
}

/// Paths named in comments: words that end in a source or document extension.
fn paths_in_comment(comment: &str) -> Vec<String> {
    const ENDINGS: [&str; 6] = [".md", ".rs", ".sql", ".proto", ".toml", ".py"];
    comment
        .split(|c: char| c.is_whitespace() || "()[]`'\",;:<>".contains(c))
        .map(|word| word.trim_end_matches(['.', ',']))
        .filter(|word| {
            ENDINGS
                .iter()
                .any(|e| word.ends_with(e) && word.len() > e.len())
        })
        .filter(|word| !word.contains('*') && !word.contains("://") && !word.starts_with('$'))
        .map(str::to_string)
        .collect()
}

/// Whether `named` is a file of the repository: a path from the root, from the commenting
/// file's folder or from a crate's `src/`, or the tail of a path that exists.
fn names_a_repository_file(named: &str, from: &Path, all: &[String]) -> bool {
    let named = named.trim_start_matches("./");
    let dir = from.parent().unwrap_or(Path::new(""));
    repo().join(named).exists()
        || dir.join(named).exists()
        || all
            .iter()
            .any(|file| file == named || file.ends_with(&format!("/{named}")))
}

#[test]
fn comments_name_only_files_in_the_repository() {
    let mut all = Vec::new();
    let mut commented = Vec::new();
    for root in [
        "src",
        "loadtest",
        "client",
        "tests",
        "docs",
        "migrations",
        "proto",
        "examples",
    ] {
        let mut pending = vec![repo().join(root)];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for path in entries.flatten().map(|e| e.path()) {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if path.is_dir() && !matches!(name, "node_modules" | ".venv" | "target") {
                    pending.push(path);
                } else if path.is_file() {
                    all.push(relative(&path));
                    if name.ends_with(".rs") {
                        commented.push(path);
                    }
                }
            }
        }
    }
    let mut missing = Vec::new();
    for file in commented {
        for (number, line) in read(&file).lines().enumerate() {
            let Some(at) = line.find("//") else { continue };
            for named in paths_in_comment(&line[at..]) {
                if !names_a_repository_file(&named, &file, &all) {
                    missing.push(format!("{}:{}: {named}", relative(&file), number + 1));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "comments name files that are not here: {missing:#?}"
    );
}
