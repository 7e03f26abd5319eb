//! The module import graph of a crate's sources, and its one rule: at every level of the module
//! tree, sibling modules use each other without a cycle (a module may use its ancestors and its
//! descendants freely). `use` trees and inline `crate::`/`super::`/`self::` paths count, in
//! production and test code alike; comments and string literals do not.
//!
//! The unit tests hold the agent to the rule, so a new import cycle fails the test suite.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// A module's path from the crate root (`[]` is the root).
type ModPath = Vec<String>;

/// One sibling-level dependency and the reference that creates it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    /// The using sibling.
    from: String,
    /// The used sibling.
    to: String,
    /// The file and the path it names, for the report.
    evidence: String,
}

/// Every import cycle among sibling modules of the crate whose `src` directory is `src`, one
/// line per cycle naming its members and the references that close it. Empty when acyclic.
pub fn cycles(src: &Path) -> anyhow::Result<Vec<String>> {
    let files = module_files(src)?;
    let known: BTreeSet<ModPath> = files.iter().map(|(m, _)| m.clone()).collect();
    // Edges grouped by the parent module whose children they join.
    let mut levels: BTreeMap<ModPath, BTreeSet<Edge>> = BTreeMap::new();
    for (module, file) in &files {
        let text =
            fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let rel = file.strip_prefix(src).unwrap_or(file).display().to_string();
        for target in references(module, &tokens(&text)) {
            let Some(target) = resolve(&known, &target) else {
                continue;
            };
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            // Ancestor or descendant: not a sibling dependency.
            if common == module.len() || common == target.len() {
                continue;
            }
            levels
                .entry(module[..common].to_vec())
                .or_default()
                .insert(Edge {
                    from: module[common].clone(),
                    to: target[common].clone(),
                    evidence: format!("{rel} uses {}", target.join("::")),
                });
        }
    }
    let mut found = Vec::new();
    for (parent, edges) in &levels {
        for component in strongly_connected(edges) {
            let closing: Vec<&str> = edges
                .iter()
                .filter(|e| component.contains(&e.from) && component.contains(&e.to))
                .map(|e| e.evidence.as_str())
                .collect();
            let at = if parent.is_empty() {
                "crate".to_owned()
            } else {
                parent.join("::")
            };
            found.push(format!(
                "cycle under {at}: {{{}}} ({})",
                component.into_iter().collect::<Vec<_>>().join(", "),
                closing.join("; ")
            ));
        }
    }
    Ok(found)
}

/// Every source file of the library crate and the module it defines. `main.rs` beside a
/// `lib.rs` is another crate (it uses the library by name) and is left out.
fn module_files(src: &Path) -> anyhow::Result<Vec<(ModPath, PathBuf)>> {
    let has_lib = src.join("lib.rs").exists();
    let mut out = Vec::new();
    let mut dirs = vec![(src.to_path_buf(), ModPath::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        let entries = fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if path.is_dir() {
                let mut child = prefix.clone();
                child.push(name);
                dirs.push((path, child));
                continue;
            }
            let Some(stem) = name.strip_suffix(".rs") else {
                continue;
            };
            let module = match (prefix.is_empty(), stem) {
                (true, "lib") => ModPath::new(),
                (true, "main") if has_lib => continue,
                (true, "main") => ModPath::new(),
                (false, "mod") => prefix.clone(),
                _ => {
                    let mut m = prefix.clone();
                    m.push(stem.to_owned());
                    m
                }
            };
            out.push((module, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The longest known module that `path` starts with.
fn resolve(known: &BTreeSet<ModPath>, path: &[String]) -> Option<ModPath> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| known.contains(prefix))
}

/// A token of Rust source, as far as paths and module scopes need.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

/// Identifiers, `::` and punctuation; whitespace, comments, string, byte-string, raw-string and
/// character literals and lifetimes are dropped.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && raw_string_at(&chars, i + 1) {
            i = skip_raw_string(&chars, i + 1);
        } else if c == 'b' && at(i + 1) == 'r' && raw_string_at(&chars, i + 2) {
            i = skip_raw_string(&chars, i + 2);
        } else if c == '"' || (c == 'b' && at(i + 1) == '"') {
            i += if c == 'b' { 2 } else { 1 };
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '\'' || (c == 'b' && at(i + 1) == '\'') {
            i += if c == 'b' { 1 } else { 0 };
            // 'x', '\n', '\u{..}' are characters; 'a without a closing quote is a lifetime.
            if at(i + 1) == '\\' {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == ':' && at(i + 1) == ':' {
            out.push(Token::PathSep);
            i += 2;
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// Whether what follows an `r` at the start of a token, from `i` on, opens a raw string
/// (`"`, `#"`, `##"`, ...) rather than a raw identifier or nothing.
fn raw_string_at(chars: &[char], mut i: usize) -> bool {
    while chars.get(i) == Some(&'#') {
        i += 1;
    }
    chars.get(i) == Some(&'"')
}

/// The index after the raw string whose hashes start at `i`.
fn skip_raw_string(chars: &[char], mut i: usize) -> usize {
    let mut hashes = 0;
    while chars.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    i += 1;
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

/// The absolute paths a file of module `module` names through `crate`, `super` and `self`.
fn references(module: &[String], tokens: &[Token]) -> Vec<ModPath> {
    let mut out = Vec::new();
    // Inline `mod name { .. }` scopes: (name, brace depth inside it).
    let mut scopes: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let here = |scopes: &[(String, usize)]| -> ModPath {
        let mut m = module.to_vec();
        m.extend(scopes.iter().map(|(name, _)| name.clone()));
        m
    };
    while i < tokens.len() {
        match &tokens[i] {
            Token::Ident(kw) if kw == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Punct('{'))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    depth += 1;
                    scopes.push((name.clone(), depth));
                    i += 3;
                    continue;
                }
                i += 1;
            }
            Token::Ident(kw) if kw == "use" => {
                let end = tokens[i..]
                    .iter()
                    .position(|t| *t == Token::Punct(';'))
                    .map_or(tokens.len(), |p| i + p);
                let base = here(&scopes);
                for path in use_paths(&tokens[i + 1..end]) {
                    if let Some(abs) = absolute(&base, &path) {
                        out.push(abs);
                    }
                }
                i = end + 1;
            }
            Token::Ident(first)
                if matches!(first.as_str(), "crate" | "super" | "self")
                    && tokens.get(i + 1) == Some(&Token::PathSep) =>
            {
                let mut path = vec![first.clone()];
                let mut j = i + 1;
                while tokens.get(j) == Some(&Token::PathSep) {
                    match tokens.get(j + 1) {
                        Some(Token::Ident(seg)) => {
                            path.push(seg.clone());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                if let Some(abs) = absolute(&here(&scopes), &path) {
                    out.push(abs);
                }
                i = j;
            }
            Token::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Token::Punct('}') => {
                if scopes.last().is_some_and(|(_, d)| *d == depth) {
                    scopes.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// The paths of a `use` tree (the tokens between `use` and `;`), each as written.
fn use_paths(tree: &[Token]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    expand(tree, &mut Vec::new(), &mut out);
    out
}

fn expand(tree: &[Token], prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let start = prefix.len();
    let mut i = 0;
    while i < tree.len() {
        match &tree[i] {
            Token::Ident(seg) if seg == "as" => {
                // `x as y`: the alias is not part of the path.
                i += 2;
                continue;
            }
            Token::Ident(seg) if seg == "self" && !prefix.is_empty() && i == 0 => {}
            Token::Ident(seg) => prefix.push(seg.clone()),
            Token::Punct('{') => {
                let close = matching_brace(tree, i);
                for part in split_top_level(&tree[i + 1..close]) {
                    expand(part, prefix, out);
                }
                prefix.truncate(start);
                return;
            }
            _ => {}
        }
        i += 1;
    }
    if !prefix.is_empty() {
        out.push(prefix.clone());
    }
    prefix.truncate(start);
}

/// The index of the `}` closing the `{` at `open` (or the end).
fn matching_brace(tree: &[Token], open: usize) -> usize {
    let mut depth = 0;
    for (k, t) in tree.iter().enumerate().skip(open) {
        match t {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    tree.len()
}

/// The comma-separated parts of a brace group, at its own nesting level.
fn split_top_level(tree: &[Token]) -> Vec<&[Token]> {
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0, 0);
    for (k, t) in tree.iter().enumerate() {
        match t {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => depth -= 1,
            Token::Punct(',') if depth == 0 => {
                parts.push(&tree[from..k]);
                from = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&tree[from..]);
    parts.retain(|p| !p.is_empty());
    parts
}

/// `path` from the crate root, when it starts with `crate`, `super` or `self` (`None` for
/// external crates and names in scope).
fn absolute(base: &[String], path: &[String]) -> Option<ModPath> {
    let (first, rest) = path.split_first()?;
    match first.as_str() {
        "crate" => Some(rest.to_vec()),
        "self" => Some(base.iter().chain(rest).cloned().collect()),
        "super" => {
            let mut at = base.to_vec();
            at.pop();
            let mut rest = rest;
            while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
                at.pop();
                rest = tail;
            }
            at.extend(rest.iter().cloned());
            Some(at)
        }
        _ => None,
    }
}

/// The strongly connected components with more than one member (Tarjan's algorithm).
fn strongly_connected(edges: &BTreeSet<Edge>) -> Vec<BTreeSet<String>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        graph.entry(&e.from).or_default().insert(&e.to);
        graph.entry(&e.to).or_default();
    }
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(v: &'a str, graph: &BTreeMap<&'a str, BTreeSet<&'a str>>, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(w, graph, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.insert(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(v, &graph, &mut state);
        }
    }
    state.out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// A crate written to a temporary directory: (relative path, source) pairs.
    fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn the_agent_has_no_import_cycle() {
        let found = cycles(&workspace().join("multus-agent/src")).unwrap();
        assert!(found.is_empty(), "{}", found.join("\n"));
    }

    #[test]
    fn finds_a_cycle_between_files_and_between_directories() {
        let dir = fixture(&[
            ("lib.rs", "pub mod a; pub mod b; pub mod c; pub mod d;"),
            ("a.rs", "use crate::b::Thing;"),
            ("b.rs", "pub fn f() -> crate::a::Other { loop {} }"),
            ("c/mod.rs", "mod x;"),
            ("c/x.rs", "use crate::d::{inner::{self, Y}, Z};"),
            ("d/mod.rs", "pub mod inner;"),
            ("d/inner.rs", "use super::super::c::x as cx;"),
        ]);
        let found = cycles(dir.path()).unwrap();
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with("cycle under crate: {a, b}"),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("cycle under crate: {c, d}"),
            "{found:#?}"
        );
        assert!(found[1].contains("d/inner.rs uses c::x"), "{found:#?}");
    }

    #[test]
    fn parents_children_comments_strings_and_test_scopes_are_read_right() {
        let dir = fixture(&[
            ("lib.rs", "pub mod p; pub use p::q::Q;"),
            ("p/mod.rs", "pub mod q; pub mod r; pub struct P;"),
            // A child using its parent, a sibling named only in a comment and a string, and an
            // inline test module whose `super` is q itself.
            (
                "p/q.rs",
                "use super::P; // crate::p::r::R\n/* use super::r; */\n\
                 const S: &str = \"super::r::R\"; const R: &str = r#\"crate::p::r\"#;\n\
                 fn f<'a>(x: &'a str) -> char { '{' }\n\
                 #[cfg(test)] mod tests { use super::*; fn g() { let _ = super::Q; } }",
            ),
            ("p/r.rs", "use super::q::Q;"),
        ]);
        assert_eq!(cycles(dir.path()).unwrap(), Vec::<String>::new());
        // The same reference in code closes the cycle.
        fs::write(dir.path().join("p/q.rs"), "fn f() { let _ = super::r::R; }").unwrap();
        let found = cycles(dir.path()).unwrap();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].starts_with("cycle under p: {q, r}"), "{found:#?}");
    }
}
