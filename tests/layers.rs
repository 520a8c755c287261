//! The crate's layers go one way: this test reads every module under `src/` and fails, naming
//! file and line, on an import the layer table does not allow.
//!
//! The table is the one in `src/lib.rs` (Layout): each top-level module lists the modules it
//! may use; anything else is an upward import or a new dependency that has to be argued for by
//! changing the table here, in one reviewed place. Within a module, files must not import each
//! other in a cycle (the trainer/centroid knot this test was written to keep untied).
//!
//! The scan is textual (`crate::<module>` and `super::<file>` outside comments and outside the
//! trailing `#[cfg(test)] mod tests`), which is exactly as strict as it needs to be: the
//! codebase writes its imports in that form, and a test may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Who may import whom. Leaves first, then each layer only from the ones above it.
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves.
    ("label", &[]),
    ("rng", &[]),
    ("durable", &[]),
    ("bounded", &[]),
    ("logtail", &[]),
    // The web server's parts that know nothing of the daemon: [http], access, the page.
    ("http", &[]),
    ("consensus", &[]),
    ("model", &[]),
    ("npy", &["durable"]),
    ("backoff", &["rng"]),
    ("wire", &["label"]),
    // Inference backends, then what runs on them.
    ("runtime", &["model"]),
    ("vision", &["runtime", "model", "bounded"]),
    ("audio", &["runtime", "model", "bounded", "rng"]),
    // Detections into tracked objects.
    ("track", &["vision", "rng"]),
    // Frames and PCM. A `[[cameras]]` entry carries its zones and masks (track::zones checks
    // their geometry where the camera's config is read).
    (
        "source",
        &[
            "vision", "audio", "wire", "backoff", "bounded", "model", "track",
        ],
    ),
    // Samples, heads, the broker link.
    ("store", &["label", "durable"]),
    // Tracked objects' history.
    ("events", &["wire"]),
    (
        "adapt",
        &["store", "label", "durable", "model", "rng", "npy"],
    ),
    ("mqtt", &["wire", "label", "backoff", "rng"]),
    // Every room's settings, read once.
    (
        "config",
        &[
            "adapt",
            "consensus",
            "model",
            "mqtt",
            "runtime",
            "source",
            "store",
            "track",
            "vision",
            "audio",
            "label",
            "events",
            "http",
        ],
    ),
    // The service and the terminal view.
    (
        "daemon",
        &[
            "adapt",
            "audio",
            "backoff",
            "bounded",
            "config",
            "consensus",
            "durable",
            "label",
            "model",
            "mqtt",
            "rng",
            "runtime",
            "source",
            "store",
            "track",
            "vision",
            "wire",
            "events",
            "http",
            "logtail",
        ],
    ),
    ("watch", &["mqtt", "wire", "backoff", "label", "rng"]),
    // The command line: everything.
    (
        "cli",
        &[
            "adapt",
            "audio",
            "backoff",
            "bounded",
            "config",
            "consensus",
            "daemon",
            "durable",
            "label",
            "model",
            "mqtt",
            "npy",
            "rng",
            "runtime",
            "source",
            "store",
            "track",
            "vision",
            "watch",
            "wire",
            "events",
            "http",
            "logtail",
        ],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The lines of `text` that are code, numbered from 1: comments and the trailing test module
/// are left out.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            if let Some((_, next)) = lines.peek() {
                if next.trim_start().starts_with("mod tests") {
                    break;
                }
            }
        }
        if t.starts_with("//") {
            continue;
        }
        // A trailing comment may name any module.
        let code = line.split("//").next().unwrap_or("");
        out.push((i + 1, code));
    }
    out
}

/// Identifiers following `prefix` (`crate::` or `super::`) in `line`.
fn paths_after<'a>(line: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `my_crate::`, not `crate::`
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 {
            out.push(&rest[..end]);
        }
    }
    out
}

/// The top-level module a file belongs to (`src/adapt/head.rs` -> `adapt`), `None` for the
/// crate root and the binary.
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (name != "lib" && name != "main").then_some(name)
}

#[test]
fn no_module_imports_against_the_layer_table() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut modules_seen = BTreeSet::new();
    let mut violations = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(src()).unwrap().to_path_buf();
        let Some(top) = top_module(&rel) else {
            continue;
        };
        modules_seen.insert(top.clone());
        let Some(ok) = allowed.get(top.as_str()) else {
            violations.push(format!(
                "src/{}: module `{top}` is not in tests/layers.rs's table; add it with what it may import",
                rel.display()
            ));
            continue;
        };
        let text = fs::read_to_string(path).unwrap();
        for (line_no, line) in code_lines(&text) {
            for dep in paths_after(line, "crate::") {
                if dep != top && !ok.contains(dep) {
                    violations.push(format!(
                        "src/{}:{line_no}: `{top}` imports `{dep}`, which the layers do not allow: {}",
                        rel.display(),
                        line.trim()
                    ));
                }
            }
        }
    }
    // Every row of the table is a real module (a renamed module must not leave a stale row
    // that silently allows anything).
    for m in allowed.keys() {
        assert!(
            modules_seen.contains(*m),
            "tests/layers.rs names `{m}`, which is not a module under src/"
        );
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_layer_table_itself_has_no_cycle() {
    let graph: BTreeMap<&str, Vec<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.to_vec()))
        .collect();
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the layer table allows a cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn files_within_a_module_do_not_import_each_other_in_a_cycle() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    // Per directory: file stem -> sibling files it imports.
    let mut graphs: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for path in &files {
        let rel = path.strip_prefix(src()).unwrap();
        let Some(dir) = rel.parent().filter(|d| !d.as_os_str().is_empty()) else {
            continue;
        };
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let text = fs::read_to_string(path).unwrap();
        // `crate::a::b` and, from a file directly in `a/`, `super::b`.
        let module_path: Vec<String> = dir
            .components()
            .map(|c| c.as_os_str().to_str().unwrap().to_owned())
            .collect();
        let crate_prefix = format!("crate::{}::", module_path.join("::"));
        let local_prefix = format!("{}::", module_path.last().map_or("", String::as_str));
        let siblings: BTreeSet<String> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                let s = p.file_stem()?.to_str()?.to_owned();
                Some(s)
            })
            .collect();
        let mut deps = BTreeSet::new();
        for (_, line) in code_lines(&text) {
            let mut found = paths_after(line, &crate_prefix);
            // `use crate::runtime;` then `runtime::tract::...`: the same edge, spelt short.
            found.extend(paths_after(line, &local_prefix));
            if stem != "mod" {
                found.extend(paths_after(line, "super::"));
            }
            for d in found {
                if d != stem && d != "mod" && siblings.contains(d) {
                    deps.insert(d.to_owned());
                }
            }
        }
        graphs
            .entry(dir.to_path_buf())
            .or_default()
            .insert(stem, deps);
    }
    let mut cycles = Vec::new();
    for (dir, graph) in &graphs {
        // `mod.rs` re-exports its children and they use its shared types: that edge pair is
        // the module's interface, not a knot, so the check is among the children.
        let g: BTreeMap<&str, Vec<&str>> = graph
            .iter()
            .filter(|(f, _)| f.as_str() != "mod")
            .map(|(f, d)| (f.as_str(), d.iter().map(String::as_str).collect()))
            .collect();
        if let Some(c) = find_cycle(&g) {
            cycles.push(format!("src/{}: {}", dir.display(), c.join(" -> ")));
        }
    }
    assert!(
        cycles.is_empty(),
        "files import each other in a cycle (move the shared part into its own file):\n{}",
        cycles.join("\n")
    );
}

/// A cycle in `graph` as the list of its nodes (first repeated at the end), if there is one.
fn find_cycle<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit<'a>(
        n: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        marks.insert(n, Mark::Open);
        stack.push(n);
        for &d in graph.get(n).into_iter().flatten() {
            match marks.get(d).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let at = stack.iter().position(|&s| s == d).unwrap_or(0);
                    let mut c = stack[at..].to_vec();
                    c.push(d);
                    return Some(c);
                }
                Mark::New if graph.contains_key(d) => {
                    if let Some(c) = visit(d, graph, marks, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        marks.insert(n, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for &n in graph.keys() {
        if marks.get(n).copied().unwrap_or(Mark::New) == Mark::New {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, graph, &mut marks, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_scanner_sees_what_it_must() {
    let text = "use crate::a::b;\n// use crate::c;\nlet x = crate::d::e(); // crate::f\n\
                #[cfg(test)]\nmod tests {\n    use crate::g;\n}\n";
    let found: Vec<&str> = code_lines(text)
        .into_iter()
        .flat_map(|(_, l)| paths_after(l, "crate::"))
        .collect();
    assert_eq!(found, ["a", "d"]);
    assert_eq!(paths_after("my_crate::x + crate::y", "crate::"), ["y"]);
    let mut g = BTreeMap::new();
    g.insert("a", vec!["b"]);
    g.insert("b", vec!["a"]);
    assert_eq!(find_cycle(&g), Some(vec!["a", "b", "a"]));
    g.insert("b", vec![]);
    assert_eq!(find_cycle(&g), None);
}
