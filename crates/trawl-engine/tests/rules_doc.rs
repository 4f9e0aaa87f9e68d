//! `docs/rules.md` is generated from the built-in rules: this test renders
//! it and fails if the checked-in file differs. `cargo xtask rules-doc` (which
//! runs this test with `TRAWL_UPDATE_RULES_DOC=1`) rewrites it.

use std::fmt::Write as _;
use std::path::PathBuf;

use trawl_engine::{Rule, RuleSet};

const UPDATE_VAR: &str = "TRAWL_UPDATE_RULES_DOC";

/// Escapes text for a markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn render() -> String {
    let builtin = RuleSet::builtin();
    // Each built-in rule's origin names its family file; the set lists the
    // files' rules in load order, so consecutive rules of one origin are a
    // family.
    let mut families: Vec<(&str, Vec<&Rule>)> = Vec::new();
    for rule in &builtin {
        let file = rule
            .origin()
            .strip_prefix("<builtin>/rules/")
            .unwrap_or(rule.origin());
        match families.last_mut() {
            Some((last, rules)) if *last == file => rules.push(rule),
            _ => families.push((file, vec![rule])),
        }
    }
    let mut files: Vec<&str> = families.iter().map(|(file, _)| *file).collect();
    files.sort_unstable();
    files.dedup();
    assert_eq!(
        files.len(),
        families.len(),
        "a family's rules are loaded together"
    );

    let mut out = String::new();
    out.push_str("# Built-in rules\n\n");
    out.push_str(
        "<!-- Generated from crates/trawl-engine/rules/*.toml by `cargo xtask rules-doc`; do not edit. -->\n\n",
    );
    let _ = writeln!(
        out,
        "trawl ships {} built-in rules in {} families, loaded in the order below (when two \
         rules report the same secret, the earlier one is kept, so `generic.toml` comes last). \
         Keywords are matched ASCII-case-insensitively and every match contains one; the \
         entropy floor is the minimum Shannon entropy of the secret in bits per byte; the \
         maximum length is the longest match of the rule's regex, in bytes.",
        builtin.len(),
        families.len()
    );
    for (file, set) in &families {
        let _ = writeln!(out, "\n## `{file}` ({} rules)\n", set.len());
        out.push_str("| id | description | keywords | entropy floor | max length |\n");
        out.push_str("|---|---|---|---|---|\n");
        for rule in set {
            let keywords = rule
                .keywords()
                .iter()
                .map(|k| format!("`{}`", cell(k)))
                .collect::<Vec<_>>()
                .join(", ");
            let entropy = rule
                .entropy()
                .map_or_else(|| "–".to_owned(), |e| format!("{e:.1}"));
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                rule.id(),
                cell(rule.description()),
                keywords,
                entropy,
                rule.max_len()
            );
        }
    }
    out
}

#[test]
fn docs_rules_md_is_up_to_date() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/rules.md");
    let want = render();
    let have = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .replace("\r\n", "\n");
    if have == want {
        return;
    }
    if std::env::var_os(UPDATE_VAR).is_some_and(|v| v == "1") {
        std::fs::write(&path, &want)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("updated {}", path.display());
        return;
    }
    panic!("docs/rules.md is out of date: run `cargo xtask rules-doc`");
}
