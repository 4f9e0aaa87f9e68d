//! `docs/rules.md` is generated from the built-in rules: this test renders
//! it and fails if the checked-in file differs. `cargo xtask rules-doc` (which
//! runs this test with `TRAWL_UPDATE_RULES_DOC=1`) rewrites it.

use std::fmt::Write as _;
use std::path::PathBuf;

use trawl_engine::RuleSet;

/// The built-in rule files, in the order `RuleSet::builtin` loads them.
const FAMILIES: &[(&str, &str)] = &[
    ("cloud.toml", include_str!("../rules/cloud.toml")),
    ("vcs.toml", include_str!("../rules/vcs.toml")),
    ("ci.toml", include_str!("../rules/ci.toml")),
    ("chat.toml", include_str!("../rules/chat.toml")),
    ("payments.toml", include_str!("../rules/payments.toml")),
    ("messaging.toml", include_str!("../rules/messaging.toml")),
    ("registries.toml", include_str!("../rules/registries.toml")),
    ("databases.toml", include_str!("../rules/databases.toml")),
    (
        "observability.toml",
        include_str!("../rules/observability.toml"),
    ),
    ("ai.toml", include_str!("../rules/ai.toml")),
    ("keys.toml", include_str!("../rules/keys.toml")),
    ("saas.toml", include_str!("../rules/saas.toml")),
    ("generic.toml", include_str!("../rules/generic.toml")),
];

const UPDATE_VAR: &str = "TRAWL_UPDATE_RULES_DOC";

/// Escapes text for a markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn render() -> String {
    let builtin = RuleSet::builtin();
    let families: Vec<(&str, RuleSet)> = FAMILIES
        .iter()
        .map(|(file, text)| {
            let set = RuleSet::from_toml(text, file)
                .unwrap_or_else(|e| panic!("rules/{file} does not load: {e}"));
            (*file, set)
        })
        .collect();
    // The family files, in this order, are exactly the built-in set.
    let ids: Vec<&str> = families
        .iter()
        .flat_map(|(_, set)| set.iter().map(|r| r.id()))
        .collect();
    let builtin_ids: Vec<&str> = builtin.iter().map(|r| r.id()).collect();
    assert_eq!(
        ids, builtin_ids,
        "FAMILIES in tests/rules_doc.rs must list BUILTIN_FILES of src/rule.rs, in order"
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
