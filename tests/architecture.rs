//! The shape of `src/`: no import circles, neither between files nor between the top-level
//! modules (a file or a folder directly under `src/`).
//!
//! A circle makes a part impossible to read, test or replace alone: whoever touches one file
//! of the knot touches all of it. This test reads `src/` the way a newcomer would — `mod`
//! declarations give the module tree; `use` trees, `crate::…`, `super::…` and `self::…` paths
//! and paths through a child module or an imported module name give the edges — and fails,
//! naming the circle, when following imports leads back to where it started.
//!
//! It is a plain reader, not a compiler: it strips comments and literals and resolves each path
//! to the deepest module it names. That is enough for the code we write (no `#[path]`, no
//! glob-imported modules).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One `.rs` file of the library, with the module path it defines.
struct SourceFile {
    /// Path relative to `src/`, e.g. `journal/mod.rs`.
    name: String,
    /// Module path, e.g. `["journal"]` (empty for `lib.rs`).
    module: Vec<String>,
    /// The code with comments, strings and char literals blanked out.
    code: String,
}

#[test]
fn no_file_imports_what_imports_it_back() {
    let graph = file_graph(&library_files());
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import circle between files of src/: {}", cycle.join(" → "));
    }
}

#[test]
fn no_top_level_module_imports_what_imports_it_back() {
    let files = file_graph(&library_files());
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &files {
        let from = top_level(from);
        modules.entry(from.clone()).or_default();
        for to in tos {
            let to = top_level(to);
            if to != from {
                modules.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    if let Some(cycle) = find_cycle(&modules) {
        panic!(
            "import circle between top-level modules of src/: {}",
            cycle.join(" → ")
        );
    }
}

/// Top-level modules that must know no domain module, each with what it may import: the
/// configuration may use telemetry's types (anyone may import telemetry) and `secret`;
/// telemetry only `secret`. So any part can import them without closing a circle.
const DOMAIN_FREE: [(&str, &[&str]); 2] = [
    ("config", &["config", "telemetry", "secret"]),
    ("telemetry", &["telemetry", "secret"]),
];

#[test]
fn configuration_and_telemetry_know_no_domain_module() {
    let graph = file_graph(&library_files());
    let violations = domain_imports(&graph);
    assert!(
        violations.is_empty(),
        "config and telemetry must import no domain module; found: {}",
        violations.join(", ")
    );
    // Guards the check itself: telemetry is imported, so the reader sees these files.
    assert!(
        graph.values().any(|tos| tos.contains("telemetry.rs")),
        "the reader of src/ sees no import of telemetry.rs"
    );
}

#[test]
fn domain_import_check_names_the_offending_edge() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("telemetry.rs".into()).or_default();
    graph
        .entry("config.rs".into())
        .or_default()
        .extend(["secret.rs".to_string(), "telemetry.rs".to_string()]);
    graph
        .entry("hook/mod.rs".into())
        .or_default()
        .insert("telemetry.rs".into());
    assert!(domain_imports(&graph).is_empty());
    let telemetry = graph.entry("telemetry.rs".into()).or_default();
    telemetry.insert("okta/stats.rs".into());
    telemetry.insert("config.rs".into());
    assert_eq!(
        domain_imports(&graph),
        ["telemetry.rs → config.rs", "telemetry.rs → okta/stats.rs"]
    );
}

/// The imports of `config` and `telemetry` files that reach outside what [`DOMAIN_FREE`]
/// allows them, as `from → to`.
fn domain_imports(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    graph
        .iter()
        .filter_map(|(from, tos)| {
            let module = top_level(from);
            let (_, allowed) = DOMAIN_FREE.iter().find(|(m, _)| *m == module)?;
            Some(
                tos.iter()
                    .filter(|to| !allowed.contains(&top_level(to).as_str()))
                    .map(move |to| format!("{from} → {to}")),
            )
        })
        .flatten()
        .collect()
}

#[test]
fn the_reader_sees_the_imports_it_must() {
    // Guards the test itself: if the reader stopped seeing edges, the two tests above would
    // pass on anything. These edges are the data flow the service is built on.
    let graph = file_graph(&library_files());
    for (from, to) in [
        ("hub.rs", "journal/mod.rs"),
        ("journal/embedded.rs", "journal/mod.rs"),
        ("grpc/service.rs", "hub.rs"),
        ("app.rs", "journal/embedded.rs"),
    ] {
        assert!(
            graph.get(from).is_some_and(|tos| tos.contains(to)),
            "expected {from} to import {to}; the reader of src/ misses imports"
        );
    }
}

#[test]
fn cycle_finder_names_a_circle_and_accepts_a_tree() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    let with_cycle = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
    let cycle = find_cycle(&with_cycle).expect("a → b → c → a is a circle");
    assert_eq!(cycle.first(), cycle.last(), "a circle ends where it starts");
    let members: BTreeSet<&str> = cycle.iter().map(String::as_str).collect();
    assert_eq!(members, BTreeSet::from(["a", "b", "c"]));

    let diamond = graph(&[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]);
    assert_eq!(find_cycle(&diamond), None);

    let self_loop = graph(&[("a", "a")]);
    assert_eq!(find_cycle(&self_loop), Some(vec!["a".into(), "a".into()]));
}

#[test]
fn reader_resolves_use_trees_super_and_child_paths() {
    let files = vec![
        parse_file("lib.rs", "pub mod a;\npub mod b;\n"),
        parse_file(
            "a/mod.rs",
            "//! docs mention crate::b::X\npub mod child;\nfn f() { child::g(); }\n",
        ),
        parse_file(
            "a/child.rs",
            "use super::{Thing, other::*};\nuse crate::{b::{self, Y as Z}};\n\
             const S: &str = \"crate::lib\";\n#[cfg(test)] mod tests { use super::*; }\n",
        ),
        parse_file("b.rs", "fn h() -> crate::a::child::T { todo() }\n"),
    ];
    let graph = file_graph(&files);
    let edges = |from: &str| graph[from].iter().cloned().collect::<Vec<_>>();
    assert_eq!(edges("a/mod.rs"), ["a/child.rs"]);
    assert_eq!(edges("a/child.rs"), ["a/mod.rs", "b.rs"]);
    assert_eq!(edges("b.rs"), ["a/child.rs"]);
    assert!(find_cycle(&graph).is_some());
}

/// Every file of the library crate (`src/main.rs` is the binary, a crate of its own).
fn library_files() -> Vec<SourceFile> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    collect_rs(&src, &mut paths);
    paths
        .into_iter()
        .filter_map(|path| {
            let name = path
                .strip_prefix(&src)
                .expect("walked under src/")
                .to_string_lossy()
                .replace('\\', "/");
            if name == "main.rs" {
                return None;
            }
            let text = std::fs::read_to_string(&path).expect("source file is readable");
            Some(parse_file(&name, &text))
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn parse_file(name: &str, text: &str) -> SourceFile {
    let stem = name.trim_end_matches(".rs");
    let mut module: Vec<String> = stem.split('/').map(str::to_string).collect();
    if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
        module.pop();
    }
    SourceFile {
        name: name.to_string(),
        module,
        code: strip_comments_and_literals(text),
    }
}

/// The top-level module a file belongs to: `journal/nats/mod.rs` → `journal`.
fn top_level(file: &str) -> String {
    let first = file.split('/').next().unwrap_or(file);
    first.trim_end_matches(".rs").to_string()
}

/// Blanks out comments, string literals and char literals (keeping lifetimes), so that
/// `crate::x` in a doc comment or a message is not mistaken for an import.
fn strip_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(end) = raw_string_end(&chars, i) {
            i = end;
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && is_char_literal(&chars, i) {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// If a raw string (`r"…"`, `r#"…"#`, `br"…"`) starts at `i`, the index just past its end.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let prev_is_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    if prev_is_ident {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

/// Whether the `'` at `i` opens a char literal (`'a'`, `'\n'`) rather than a lifetime.
fn is_char_literal(chars: &[char], i: usize) -> bool {
    match chars.get(i + 1) {
        Some('\\') => true,
        Some(_) => chars.get(i + 2) == Some(&'\''),
        None => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

fn tokenize(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            tokens.push(Token::Ident(ident.trim_start_matches("r#").to_string()));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push(Token::PathSep);
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            tokens.push(Token::Punct(c));
            i += 1;
        }
    }
    tokens
}

/// The module tree: every module path declared by a file or an inline `mod x { … }`, with the
/// file it lives in.
fn module_index(files: &[SourceFile]) -> BTreeMap<Vec<String>, String> {
    let mut index = BTreeMap::new();
    for file in files {
        index.insert(file.module.clone(), file.name.clone());
        let mut scopes = Vec::new();
        walk_modules_per_token(&tokenize(&file.code), &file.module, &mut scopes);
        for scope in scopes {
            index.entry(scope).or_insert_with(|| file.name.clone());
        }
    }
    index
}

/// File → files it imports, for every file of the library.
fn file_graph(files: &[SourceFile]) -> BTreeMap<String, BTreeSet<String>> {
    let index = module_index(files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let edges = graph.entry(file.name.clone()).or_default();
        for target in imported_modules(file, &index) {
            if let Some(to) = deepest_file(&index, &target) {
                if to != file.name {
                    edges.insert(to);
                }
            }
        }
    }
    graph
}

/// The file of the deepest declared module that `path` starts with.
fn deepest_file(index: &BTreeMap<Vec<String>, String>, path: &[String]) -> Option<String> {
    (1..=path.len())
        .rev()
        .find_map(|n| index.get(&path[..n]).cloned())
}

/// Absolute module paths named by a file's `use` trees and qualified paths.
fn imported_modules(file: &SourceFile, index: &BTreeMap<Vec<String>, String>) -> Vec<Vec<String>> {
    let tokens = tokenize(&file.code);
    let mut scopes: Vec<Vec<String>> = Vec::with_capacity(tokens.len());
    walk_modules_per_token(&tokens, &file.module, &mut scopes);
    // Names brought into scope by `use … as name` / `use …::name` that are modules.
    let mut aliases: BTreeMap<(Vec<String>, String), Vec<String>> = BTreeMap::new();
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let scope = &scopes[i];
        if tokens[i] == Token::Ident("use".into()) {
            let mut leaves = Vec::new();
            let end = parse_use_tree(&tokens, i + 1, Vec::new(), &mut leaves);
            for (path, name) in leaves {
                if let Some(absolute) = resolve(&path, scope, index, &aliases) {
                    if index.contains_key(&absolute) {
                        aliases.insert((scope.clone(), name), absolute.clone());
                    }
                    found.push(absolute);
                }
            }
            i = end;
            continue;
        }
        let starts_path = matches!(&tokens[i], Token::Ident(_))
            && tokens.get(i + 1) == Some(&Token::PathSep)
            && (i == 0 || tokens[i - 1] != Token::PathSep);
        if starts_path {
            let mut path = Vec::new();
            let mut j = i;
            while let Some(Token::Ident(segment)) = tokens.get(j) {
                path.push(segment.clone());
                if tokens.get(j + 1) != Some(&Token::PathSep) {
                    break;
                }
                j += 2;
            }
            if let Some(absolute) = resolve(&path, scope, index, &aliases) {
                found.push(absolute);
            }
            i = j + 1;
            continue;
        }
        i += 1;
    }
    found
}

/// The module path in force at each token, tracking inline `mod x { … }` blocks.
fn walk_modules_per_token(tokens: &[Token], base: &[String], scopes: &mut Vec<Vec<String>>) {
    let mut module = base.to_vec();
    let mut open: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Punct('{') => {
                depth += 1;
                if i >= 2 && tokens[i - 2] == Token::Ident("mod".into()) {
                    if let Token::Ident(name) = &tokens[i - 1] {
                        module.push(name.clone());
                        open.push(depth);
                    }
                }
            }
            Token::Punct('}') => {
                if open.last() == Some(&depth) {
                    open.pop();
                    module.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        scopes.push(module.clone());
    }
}

/// Parses a `use` tree starting at `i`; pushes every leaf as (path, name it binds). Returns
/// the index after the tree.
fn parse_use_tree(
    tokens: &[Token],
    mut i: usize,
    mut prefix: Vec<String>,
    leaves: &mut Vec<(Vec<String>, String)>,
) -> usize {
    if tokens.get(i) == Some(&Token::PathSep) {
        i += 1; // `use ::std::…`
    }
    loop {
        match tokens.get(i) {
            Some(Token::Ident(segment)) => {
                prefix.push(segment.clone());
                i += 1;
                if tokens.get(i) == Some(&Token::PathSep) {
                    i += 1;
                    continue;
                }
                let mut name = segment.clone();
                if tokens.get(i) == Some(&Token::Ident("as".into())) {
                    if let Some(Token::Ident(alias)) = tokens.get(i + 1) {
                        name = alias.clone();
                    }
                    i += 2;
                }
                if name == "self" {
                    prefix.pop();
                    name = prefix.last().cloned().unwrap_or_default();
                }
                leaves.push((prefix, name));
                return i;
            }
            Some(Token::Punct('*')) => {
                leaves.push((prefix, String::new()));
                return i + 1;
            }
            Some(Token::Punct('{')) => {
                i += 1;
                loop {
                    match tokens.get(i) {
                        Some(Token::Punct('}')) => return i + 1,
                        Some(Token::Punct(',')) => i += 1,
                        None => return i,
                        Some(_) => i = parse_use_tree(tokens, i, prefix.clone(), leaves),
                    }
                }
            }
            _ => return i,
        }
    }
}

/// Resolves a path written in module `scope` to an absolute module path, or `None` when it
/// names something outside the crate (std, a dependency, a local item).
fn resolve(
    path: &[String],
    scope: &[String],
    index: &BTreeMap<Vec<String>, String>,
    aliases: &BTreeMap<(Vec<String>, String), Vec<String>>,
) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut absolute;
    let rest;
    match first.as_str() {
        "crate" => {
            absolute = Vec::new();
            rest = &path[1..];
        }
        "self" | "super" => {
            absolute = scope.to_vec();
            let supers = path.iter().take_while(|s| *s == "super").count();
            let selfs = usize::from(first == "self");
            for _ in 0..supers {
                absolute.pop()?;
            }
            rest = &path[supers + selfs..];
        }
        _ => {
            let mut child = scope.to_vec();
            child.push(first.clone());
            if index.contains_key(&child) {
                absolute = child;
            } else if let Some(module) = aliases.get(&(scope.to_vec(), first.clone())) {
                absolute = module.clone();
            } else {
                return None;
            }
            rest = &path[1..];
        }
    }
    absolute.extend(rest.iter().cloned());
    Some(absolute)
}

/// A circle in `graph`, as the list of its nodes with the first repeated at the end; `None`
/// when the graph has none. Depth-first search with the nodes on the current path marked.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        marks.insert(node, Mark::OnPath);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::OnPath) => {
                    let start = path.iter().position(|n| *n == next)?;
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|n| n.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, marks, path) {
                        return Some(cycle);
                    }
                }
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node.as_str()) {
            let mut path = Vec::new();
            if let Some(cycle) = visit(node, graph, &mut marks, &mut path) {
                return Some(cycle);
            }
        }
    }
    None
}
