//! Rule files and baselines as a user runs them: `trawl rules list/check`,
//! `trawl scan --rules` and `--baseline`.

mod common;
use common::{findings, stderr, stdout, trawl};

const ACME_RULES: &str = r#"
title = "acme"

[[rules]]
id = "acme-token"
description = "Acme internal token"
regex = '''\b(acme_[a-z0-9]{24})\b'''
secretGroup = 1
entropy = 3.0
keywords = ["acme_"]
tags = ["internal"]
"#;

const ACME_SECRET: &str = "acme_q8w7e6r5t4y3u2i1o9p8a7s6";
const GITHUB_SECRET: &str = "ghp_R7fKq2LmX9vBn4WcT8yHs1JdP6aZe3UoQi5G";

/// A folder with `acme.toml` and a file leaking an Acme and a GitHub token.
fn leaky_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("acme.toml"), ACME_RULES).unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("src/app.py"),
        format!("ACME = \"{ACME_SECRET}\"\nGH = \"{GITHUB_SECRET}\"\n"),
    )
    .unwrap();
    dir
}

#[test]
fn rules_list_shows_the_builtin_rules_and_file_rules_with_their_source() {
    let dir = leaky_folder();
    let out = trawl(dir.path(), &["rules", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "KEYWORDS", "ENTROPY", "SOURCE"]);
    let pat = text.lines().find(|l| l.starts_with("github-pat ")).unwrap();
    let cells: Vec<&str> = pat.split_whitespace().collect();
    assert_eq!(cells, ["github-pat", "ghp_", "3.0", "built-in"]);

    let out = trawl(dir.path(), &["rules", "list", "--rules", "acme.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let acme: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(acme, ["acme-token", "acme_", "3.0", "acme.toml"]);
    assert!(text.contains("github-pat "), "{text}");
    // Warnings go to stderr, once each, naming the file and the rule.
    let err = stderr(&out);
    assert!(
        err.contains("trawl: warning: acme.toml: rule acme-token: field `rules.tags` ignored"),
        "{err}"
    );
    assert_eq!(err.matches("`title`").count(), 1, "{err}");

    let out = trawl(
        dir.path(),
        &["rules", "list", "--rules", "acme.toml", "--no-builtin"],
    );
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
}

#[test]
fn rules_check_prints_the_table_and_warnings_and_fails_on_a_broken_file() {
    let dir = leaky_folder();
    let out = trawl(dir.path(), &["rules", "check", "acme.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("acme.toml: valid, 1 rule(s), 2 warning(s)\nID "),
        "{text}"
    );
    assert!(text.contains("\nacme-token "), "{text}");
    assert!(
        text.contains("warning: acme.toml: field `title` ignored"),
        "{text}"
    );

    std::fs::write(
        dir.path().join("broken.toml"),
        "[[rules]]\nid = \"bad-one\"\nregex = '''(unclosed'''\n",
    )
    .unwrap();
    let out = trawl(dir.path(), &["rules", "check", "acme.toml", "broken.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).contains("broken.toml: invalid"),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("broken.toml: rule `bad-one`: invalid `regex`"),
        "{err}"
    );
}

#[test]
fn scan_with_a_rules_file_finds_the_custom_token_and_the_builtin_ones() {
    let dir = leaky_folder();
    let out = trawl(dir.path(), &["scan", "src", "--rules", "acme.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let mut found: Vec<(String, String)> = findings(&out)
        .iter()
        .map(|f| {
            (
                f["rule_id"].as_str().unwrap().to_owned(),
                f["secret"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("acme-token".to_owned(), ACME_SECRET.to_owned()),
            ("github-pat".to_owned(), GITHUB_SECRET.to_owned()),
        ]
    );
    // Only the file's rules.
    let out = trawl(
        dir.path(),
        &["scan", "src", "--rules", "acme.toml", "--no-builtin"],
    );
    let found = findings(&out);
    assert_eq!(found.len(), 1, "{}", stdout(&out));
    assert_eq!(found[0]["rule_id"], "acme-token");
    // Without the file, the custom token is not found.
    let out = trawl(dir.path(), &["scan", "src"]);
    assert!(!stdout(&out).contains(ACME_SECRET), "{}", stdout(&out));
}

#[test]
fn a_file_extending_the_defaults_can_disable_one() {
    let dir = leaky_folder();
    std::fs::write(
        dir.path().join("team.toml"),
        "[extend]\nuseDefault = true\ndisabledRules = [\"github-pat\"]\n",
    )
    .unwrap();
    let out = trawl(dir.path(), &["scan", "src", "--rules", "team.toml"]);
    assert!(
        !findings(&out).iter().any(|f| f["rule_id"] == "github-pat"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_broken_rules_file_exits_2_naming_the_file() {
    let dir = leaky_folder();
    std::fs::write(
        dir.path().join("broken.toml"),
        "[[rules]]\nid = \"x\"\nregex = 'a'\nentropy = \"high\"\n",
    )
    .unwrap();
    for file in ["broken.toml", "missing.toml"] {
        let out = trawl(dir.path(), &["scan", "src", "--rules", file]);
        assert_eq!(out.status.code(), Some(2), "{file}");
        assert!(out.stdout.is_empty());
        let err = stderr(&out);
        assert!(err.starts_with(&format!("trawl: error: {file}")), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = trawl(dir.path(), &["scan", "src", "--rules", "broken.toml"]);
    assert!(
        stderr(&out).contains("broken.toml:4:11: invalid rule file (in rule `x`)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_baseline_suppresses_known_findings() {
    let dir = leaky_folder();
    let first = trawl(dir.path(), &["scan", "src", "-o", "baseline.jsonl"]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let baseline = std::fs::read_to_string(dir.path().join("baseline.jsonl")).unwrap();
    assert_eq!(baseline.lines().count(), 1);

    // Same findings again: all suppressed, exit 0.
    let second = trawl(dir.path(), &["scan", "src", "--baseline", "baseline.jsonl"]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(second.stdout.is_empty());
    let err = stderr(&second);
    assert!(err.contains("findings: 0\n"), "{err}");
    assert!(err.contains("suppressed by baseline: 1"), "{err}");

    // A new secret, and the old one moved to another file: only the new
    // one is reported (same rule and secret anywhere is the same finding).
    std::fs::write(
        dir.path().join("src/moved.py"),
        format!("token = \"{GITHUB_SECRET}\"\nNEW = \"glpat-Xk3Lq9Zr7Tn2Vb5Wm8Jc\"\n"),
    )
    .unwrap();
    let third = trawl(
        dir.path(),
        &["scan", "src", "--baseline", "baseline.jsonl", "--redact"],
    );
    assert_eq!(third.status.code(), Some(1), "{}", stderr(&third));
    let found = findings(&third);
    assert_eq!(found.len(), 1, "{}", stdout(&third));
    assert_eq!(found[0]["rule_id"], "gitlab-pat");
    let err = stderr(&third);
    assert!(
        err.contains("findings: 1 (gitlab-pat 1)") && err.contains("suppressed by baseline: 2"),
        "{err}"
    );
}

#[test]
fn a_bad_baseline_is_a_clear_error() {
    let dir = leaky_folder();
    let fp = "191d9053dca0615a8a6ef660e569f141b19cd28364a169fab020d22fb956aef3";
    for (body, expect) in [
        (
            format!("{{\"fingerprint\":\"{fp}\"}}\nnot json\n"),
            "line 2: not valid JSON",
        ),
        (
            "\n{\"rule_id\":\"x\"}\n".to_owned(),
            "line 2: no \"fingerprint\"",
        ),
        (
            "{\"fingerprint\":\"abc\"}\n".to_owned(),
            "line 1: the fingerprint \"abc\" is not 64 hex digits",
        ),
    ] {
        std::fs::write(dir.path().join("old.jsonl"), body).unwrap();
        let out = trawl(dir.path(), &["scan", "src", "--baseline", "old.jsonl"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty());
        let err = stderr(&out);
        assert!(
            err.contains("baseline 'old.jsonl'") && err.contains(expect),
            "{err}"
        );
    }
    let out = trawl(dir.path(), &["scan", "src", "--baseline", "none.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("none.jsonl"), "{}", stderr(&out));
}
