//! Loading gitleaks-format rule files: what is accepted, and what a broken
//! file says.

use trawl_engine::{
    Condition, DEFAULT_MAX_MATCH_LEN, Engine, Error, RegexTarget, RuleSet, ScanEngine,
};

const GITLEAKS_FILE: &str = r#"
title = "team rules"

[allowlist]
description = "global"
paths = ['''(^|/)vendor/''']

[[rules]]
id = "acme-token"
description = "ACME internal token"
regex = '''\b(acme_[a-z0-9]{24})\b'''
secretGroup = 1
entropy = 3.0
keywords = ["ACME_"]
tags = ["internal"]

[[rules.allowlists]]
regexTarget = "line"
regexes = ['''fixture''']

[[rules.allowlists]]
condition = "AND"
stopwords = ["deadbeef"]
paths = ['''_test\.go$''']

[[rules]]
id = "legacy-style"
description = "old [rules.allowlist] table"
regex = '''legacy=([A-Z]{12})'''
keywords = ["legacy="]
[rules.allowlist]
regexes = ['''^AAAA''']

[[rules]]
id = "pkcs12-file"
path = '''\.p12$'''
"#;

#[test]
fn a_gitleaks_file_loads_unchanged() {
    let rules = RuleSet::from_toml(GITLEAKS_FILE, "team.toml").unwrap();
    assert_eq!(rules.len(), 2);
    let acme = rules.get("acme-token").unwrap();
    assert_eq!(acme.secret_group(), Some(1));
    assert_eq!(acme.keywords(), ["acme_"]);
    assert_eq!(acme.entropy(), Some(3.0));
    assert_eq!(acme.max_len(), 5 + 24);
    assert_eq!(acme.allowlists().len(), 2);
    assert_eq!(acme.allowlists()[0].regex_target(), RegexTarget::Line);
    assert_eq!(acme.allowlists()[1].condition(), Condition::And);
    assert_eq!(rules.get("legacy-style").unwrap().allowlists().len(), 1);
    assert_eq!(rules.allowlists().len(), 1);
    // The path-only rule is skipped, with a warning naming it.
    assert_eq!(rules.warnings().len(), 1);
    let warning = rules.warnings()[0].to_string();
    assert!(
        warning.contains("team.toml") && warning.contains("pkcs12-file"),
        "{warning}"
    );
}

#[test]
fn rules_from_a_file_scan() {
    let engine = Engine::new(RuleSet::from_toml(GITLEAKS_FILE, "team.toml").unwrap()).unwrap();
    let secret = "acme_q8w7e6r5t4y3u2i1o9p8a7s6";
    let text = format!("token: {secret}\n");
    let found = engine.scan_whole(text.as_bytes(), b"src/main.go");
    assert_eq!(found.len(), 1);
    assert_eq!(&text.as_bytes()[found[0].secret.clone()], secret.as_bytes());
    // Global path allowlist.
    assert!(
        engine
            .scan_whole(text.as_bytes(), b"vendor/x/main.go")
            .is_empty()
    );
    // Line allowlist.
    let line = format!("token: {secret} # fixture\n");
    assert!(engine.scan_whole(line.as_bytes(), b"main.go").is_empty());
    // AND allowlist: stopword alone or path alone is not enough, both are.
    let dead = "acme_deadbeef1q2w3e4r5t6y7u8i";
    let text = format!("t = {dead}\n");
    assert_eq!(engine.scan_whole(text.as_bytes(), b"main.go").len(), 1);
    assert_eq!(engine.scan_whole(text.as_bytes(), b"x_test.go").len(), 0);
    let text = format!("t = {secret}\n");
    assert_eq!(engine.scan_whole(text.as_bytes(), b"x_test.go").len(), 1);
    // Legacy single allowlist table.
    assert!(engine.scan_whole(b"legacy=AAAABCDEFGHI", b"a").is_empty());
    assert_eq!(engine.scan_whole(b"legacy=ZAAABCDEFGHI", b"a").len(), 1);
}

#[test]
fn global_allowlists_can_target_rules() {
    let text = r#"
[[rules]]
id = "a"
regex = '''tok_[0-9]{8}'''
keywords = ["tok_"]
[[rules]]
id = "b"
regex = '''key_[0-9]{8}'''
keywords = ["key_"]
[[allowlists]]
targetRules = ["a"]
regexes = ['''1234''']
"#;
    let engine = Engine::new(RuleSet::from_toml(text, "t.toml").unwrap()).unwrap();
    assert!(engine.scan_whole(b"tok_12345678", b"f").is_empty());
    assert_eq!(engine.scan_whole(b"key_12345678", b"f").len(), 1);
}

#[test]
fn default_secret_group_is_the_first_non_empty_group() {
    let text = r#"
[[rules]]
id = "two-groups"
regex = '''(?:a=(\d{4})|b=(\d{4}))'''
keywords = ["a=", "b="]
"#;
    let engine = Engine::new(RuleSet::from_toml(text, "t.toml").unwrap()).unwrap();
    let found = engine.scan_whole(b"x b=1234 y", b"f");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].secret, 4..8);
}

#[test]
fn extend_use_default_adds_to_the_builtin_rules() {
    let text = r#"
[extend]
useDefault = true
disabledRules = ["jwt"]
[[rules]]
id = "acme-token"
regex = '''acme_[a-z0-9]{24}'''
keywords = ["acme_"]
"#;
    let rules = RuleSet::from_toml(text, "ext.toml").unwrap();
    assert_eq!(rules.len(), RuleSet::builtin().len());
    assert!(rules.get("jwt").is_none());
    assert!(rules.get("acme-token").is_some());
}

#[test]
fn unbounded_user_rules_are_capped_with_a_warning() {
    let text = r#"
[[rules]]
id = "greedy"
regex = '''greedy=(\w+)'''
keywords = ["greedy="]
"#;
    let rules = RuleSet::from_toml(text, "g.toml").unwrap();
    assert_eq!(rules.warnings().len(), 1);
    assert!(rules.warnings()[0].message.contains("unbounded"));
    let rule = rules.get("greedy").unwrap();
    assert!(!rule.is_bounded());
    assert_eq!(rule.max_len(), DEFAULT_MAX_MATCH_LEN);
    let engine = Engine::new(rules).unwrap();
    assert!(engine.max_match_len() >= DEFAULT_MAX_MATCH_LEN);
    assert_eq!(engine.scan_whole(b"greedy=abc ", b"f").len(), 1);
    let long = format!("greedy={} ", "a".repeat(DEFAULT_MAX_MATCH_LEN));
    assert!(engine.scan_whole(long.as_bytes(), b"f").is_empty());
}

fn error_of(text: &str) -> String {
    match RuleSet::from_toml(text, "bad.toml") {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_files_give_clear_errors() {
    let e = error_of("[[rules]\nid = 1");
    assert!(e.starts_with("bad.toml: invalid rule file"), "{e}");

    let e = error_of("[[rules]]\nid = \"broken\"\nregex = '''(unclosed'''\n");
    assert!(
        e.contains("bad.toml") && e.contains("broken") && e.contains("invalid `regex`"),
        "{e}"
    );

    let e = error_of("[[rules]]\nid = \"grp\"\nregex = '''a(b)'''\nsecretGroup = 2\n");
    assert!(e.contains("grp") && e.contains("secretGroup"), "{e}");

    let e = error_of("[[rules]]\nregex = '''abc'''\n");
    assert!(e.contains("#1") && e.contains("missing `id`"), "{e}");

    let e = error_of("[[rules]]\nid = \"noregex\"\n");
    assert!(
        e.contains("noregex") && e.contains("missing `regex`"),
        "{e}"
    );

    let e = error_of("[[rules]]\nid = \"d\"\nregex = 'a'\n[[rules]]\nid = \"d\"\nregex = 'b'\n");
    assert!(e.contains("duplicate"), "{e}");

    let e = error_of("[[rules]]\nid = \"ent\"\nregex = 'a'\nentropy = 9.5\n");
    assert!(e.contains("entropy"), "{e}");

    let e = error_of(
        "[[rules]]\nid = \"al\"\nregex = 'a'\n[[rules.allowlists]]\nregexTarget = \"file\"\n",
    );
    assert!(e.contains("al") && e.contains("regexTarget"), "{e}");

    let e =
        error_of("[[rules]]\nid = \"ar\"\nregex = 'a'\n[[rules.allowlists]]\nregexes = ['(']\n");
    assert!(e.contains("ar") && e.contains("allowlist regex"), "{e}");

    assert!(matches!(
        RuleSet::from_toml("[[rules]]\nid = \"x\"\nregex = '('\n", "o"),
        Err(Error::InvalidRule { ref origin, ref rule_id, .. }) if origin == "o" && rule_id == "x"
    ));
}
