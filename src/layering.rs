//! The module graph's rules, checked on the source itself (the `# Layout` in lib.rs says why):
//! the seat's vocabulary depends on nothing, the rules and stores depend on no outer layer,
//! and no two top-level modules depend on each other, directly or around a loop.
//!
//! A dependency is any `crate::<module>` path (including `use crate::{a, b::c}` groups) in a
//! module's files, outside comments and outside the trailing `#[cfg(test)]` block (tests may
//! build a config to exercise a rule without making the rule depend on config's layer).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Modules that nothing below the gateway's edge may import.
const OUTER: &[&str] = &[
    "proxy",
    "admin",
    "responses",
    "audit",
    "gate",
    "app",
    "server",
    "access_log",
];

/// Each inner module and the only crate modules it may import.
const INNER: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("crypto", &[]),
    ("config", &["domain", "crypto"]),
    ("policy", &["domain", "config", "crypto"]),
    ("ledger", &["domain", "policy", "crypto"]),
];

fn code_of(text: &str) -> String {
    let text = match text.find("\n#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Top-level modules named after `crate::` in `code`, groups included.
fn deps_in(code: &str, into: &mut BTreeSet<String>) {
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue; // e.g. `seatgate_crate::`
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 0 => {
                        start = false;
                        let id = ident_at(&group[j..]);
                        if !id.is_empty() {
                            into.insert(id.to_string());
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let id = ident_at(rest);
            if !id.is_empty() {
                into.insert(id.to_string());
            }
        }
    }
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut g = Graph::new();
    for f in all {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel.iter().next().unwrap().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_string();
        if matches!(module.as_str(), "lib" | "main" | "layering") || module.starts_with("bin") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&f).unwrap());
        let deps = g.entry(module.clone()).or_default();
        deps_in(&code, deps);
        deps.remove(&module);
    }
    g
}

fn violations(g: &Graph) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (m, allowed) in INNER {
        for d in g.get(*m).into_iter().flatten() {
            if OUTER.contains(&d.as_str()) || !allowed.contains(&d.as_str()) {
                out.insert(format!("{m} -> {d}"));
            }
        }
    }
    // Every loop, named by its members in order from the smallest.
    for start in g.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for d in g.get(&at).into_iter().flatten() {
                if d == start {
                    if path.iter().all(|p| p >= start) {
                        out.insert(format!("cycle {} -> {start}", path.join(" -> ")));
                    }
                } else if !path.contains(d) && g.contains_key(d) && d > start {
                    let mut p = path.clone();
                    p.push(d.clone());
                    stack.push((d.clone(), p));
                }
            }
        }
    }
    out
}

#[test]
fn the_parser_sees_groups_and_skips_comments_and_tests() {
    let mut d = BTreeSet::new();
    let code = code_of(
        "use crate::{config::{A, B}, ledger::X};\n// crate::proxy\nfn f() { crate::metrics::m(); }\n\
         #[cfg(test)]\nmod tests { use crate::server; }",
    );
    deps_in(&code, &mut d);
    assert_eq!(
        d.into_iter().collect::<Vec<_>>(),
        vec!["config", "ledger", "metrics"]
    );
    let g: Graph = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(m, ds)| (m.to_string(), ds.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        violations(&g).into_iter().collect::<Vec<_>>(),
        vec!["cycle a -> b -> c -> a"]
    );
}

#[test]
fn no_inner_module_imports_an_outer_one_and_no_cycles() {
    let found = violations(&graph());
    assert!(
        found.is_empty(),
        "module graph rules broken:\n  {}",
        found.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}
