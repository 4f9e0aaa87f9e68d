//! Loading gitleaks-format rule files: what is accepted, what is warned
//! about, what a broken file says, `[extend]`, and a real team config whose
//! examples must come out as they say.

use std::path::{Path, PathBuf};

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
    // Nothing is dropped silently: `title`, `tags` and the path-only rule
    // (skipped) each give one warning naming the file.
    let warnings: Vec<String> = rules.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    assert!(warnings.iter().all(|w| w.starts_with("team.toml: ")));
    assert!(warnings[0].contains("`title`"), "{}", warnings[0]);
    assert!(
        warnings[1].contains("rule acme-token") && warnings[1].contains("`rules.tags`"),
        "{}",
        warnings[1]
    );
    assert!(warnings[2].contains("pkcs12-file"), "{}", warnings[2]);
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
    assert!(e.starts_with("bad.toml:1:8: invalid rule file"), "{e}");

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
        e.contains("rule `noregex`") && e.contains("neither `regex` nor `path`"),
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

#[test]
fn regex_errors_name_the_file_the_rule_and_the_regex_error() {
    // Go's RE2 and Rust's `regex` share most syntax, but not all: a
    // look-ahead is rejected with the `regex` crate's own message.
    let e = error_of("[[rules]]\nid = \"lookahead\"\nregex = '''key(?=[0-9])'''\n");
    assert!(
        e.starts_with("bad.toml: rule `lookahead`: invalid `regex`:") && e.contains("look-around"),
        "{e}"
    );
    let e = error_of("[[rules]]\nid = \"p\"\nregex = 'a'\npath = '''(?<!x)\\.env'''\n");
    assert!(
        e.contains("rule `p`") && e.contains("invalid `path`"),
        "{e}"
    );
}

#[test]
fn toml_errors_give_line_column_and_rule() {
    let text = "title = \"t\"\n\n[[rules]]\nid = \"first\"\nregex = 'a'\n\n[[rules]]\nid = \"second\"\nregex = 'b'\nentropy = \"high\"\n";
    let e = error_of(text);
    assert!(
        e.starts_with("bad.toml:10:11: invalid rule file (in rule `second`):"),
        "{e}"
    );
    // A syntax error before the rule's `id` line still finds the id.
    let e = error_of("[[rules]]\nregex = 'a\nid = \"unclosed\"\n");
    assert!(
        e.starts_with("bad.toml:2:") && e.contains("(in rule `unclosed`)"),
        "{e}"
    );
    // Outside any rule: no rule named.
    let e = error_of("[extend]\nuseDefault = yes\n");
    assert!(
        e.starts_with("bad.toml:2:") && !e.contains("in rule"),
        "{e}"
    );
    assert!(matches!(
        RuleSet::from_toml("[[rules]]\nid = \"r\"\nkeywords = 3\n", "o"),
        Err(Error::Toml { line: Some(3), rule_id: Some(ref id), .. }) if id == "r"
    ));
}

#[test]
fn unsupported_fields_are_warned_about_once_per_field_per_file() {
    let text = r#"
title = "t"
version = 2
[extend]
url = "https://example.com/gitleaks.toml"
[[rules]]
id = "a"
regex = '''a_[0-9]{4}'''
tags = ["x"]
reportGroup = 1
[[rules.allowlists]]
commits = ["abc"]
regexes = ['''0000''']
[[rules]]
id = "b"
regex = '''b_[0-9]{4}'''
tags = ["y"]
[[rules.allowlists]]
targetRules = ["a"]
paths = ['''x''']
[[allowlists]]
commits = ["def"]
"#;
    let rules = RuleSet::from_toml(text, "w.toml").unwrap();
    let mut warnings: Vec<String> = rules.warnings().iter().map(ToString::to_string).collect();
    warnings.sort();
    let expect = [
        ("w.toml: field `allowlists.commits`", "git history"),
        ("w.toml: field `extend.url`", "URL"),
        ("w.toml: field `title`", "informational"),
        ("w.toml: field `version`", "not a field of gitleaks"),
        (
            "w.toml: rule a: field `rules.allowlists.commits`",
            "git history",
        ),
        ("w.toml: rule a: field `rules.reportGroup`", "not a field"),
        ("w.toml: rule a: field `rules.tags`", "2 times"),
        (
            "w.toml: rule b: field `rules.allowlists.targetRules`",
            "global",
        ),
    ];
    assert_eq!(warnings.len(), expect.len(), "{warnings:#?}");
    for (w, (start, part)) in warnings.iter().zip(expect) {
        assert!(w.starts_with(start) && w.contains(part), "{w}");
    }
    // An allowlist of commits alone is valid (as in gitleaks) but allows
    // nothing here, and a rule allowlist's `targetRules` is ignored.
    let engine = Engine::new(rules).unwrap();
    assert_eq!(engine.scan_whole(b"a_1234 b_5678", b"f").len(), 2);
}

#[test]
fn what_gitleaks_rejects_is_rejected_naming_file_and_rule() {
    // Neither `regex` nor `path`.
    let e = error_of("[[rules]]\nid = \"empty\"\ndescription = \"d\"\n");
    assert!(e.starts_with("bad.toml: rule `empty`: neither"), "{e}");
    // Empty allowlists, in a rule and global.
    let e = error_of(
        "[[rules]]\nid = \"r\"\nregex = 'a'\n[[rules.allowlists]]\ndescription = \"nothing\"\n",
    );
    assert!(
        e.starts_with("bad.toml: rule `r`: allowlist #1: empty allowlist"),
        "{e}"
    );
    let e = error_of("[[rules]]\nid = \"r\"\nregex = 'a'\n[allowlist]\ndescription = \"x\"\n");
    assert!(
        e.starts_with("bad.toml: global allowlist #1: empty allowlist"),
        "{e}"
    );
    // Both allowlist spellings at once.
    let e = error_of(
        "[[rules]]\nid = \"r\"\nregex = 'a'\n[rules.allowlist]\nregexes = ['x']\n[[rules.allowlists]]\nregexes = ['y']\n",
    );
    assert!(e.contains("rule `r`") && e.contains("together"), "{e}");
    let e = error_of("[allowlist]\nregexes = ['x']\n[[allowlists]]\nregexes = ['y']\n");
    assert!(e.starts_with("bad.toml: ") && e.contains("together"), "{e}");
    // Entropy out of range, secret group beyond the regex's groups.
    for bad in ["-1.0", "8.5", "nan"] {
        let e = error_of(&format!(
            "[[rules]]\nid = \"ent\"\nregex = 'a'\nentropy = {bad}\n"
        ));
        assert!(e.contains("rule `ent`") && e.contains("entropy"), "{e}");
    }
    let e = error_of("[[rules]]\nid = \"g\"\nregex = '''(a)(b)'''\nsecretGroup = 3\n");
    assert!(
        e.contains("rule `g`") && e.contains("secretGroup` is 3 but the regex has 2"),
        "{e}"
    );
    // Unknown rule in `targetRules`: an error, as in gitleaks.
    let e = error_of(
        "[[rules]]\nid = \"r\"\nregex = 'a'\n[[allowlists]]\ntargetRules = [\"r\", \"ghost\"]\nregexes = ['x']\n",
    );
    assert!(
        e.starts_with("bad.toml: global allowlist #1: `targetRules` names `ghost`"),
        "{e}"
    );
    // Duplicate ids in one file.
    let e = error_of("[[rules]]\nid = \"d\"\nregex = 'a'\n[[rules]]\nid = \"d\"\nregex = 'b'\n");
    assert!(
        e.starts_with("bad.toml: rule `d`: duplicate rule id"),
        "{e}"
    );
    // `useDefault` and `path` together.
    let e = error_of("[extend]\nuseDefault = true\npath = \"x.toml\"\n");
    assert!(e.contains("both `useDefault` and `path`"), "{e}");
}

#[test]
fn unknown_disabled_rules_are_warned_about_as_gitleaks_does() {
    let text = "[extend]\nuseDefault = true\ndisabledRules = [\"jwt\", \"no-such-rule\"]\n";
    let rules = RuleSet::from_toml(text, "d.toml").unwrap();
    assert!(rules.get("jwt").is_none());
    assert!(rules.includes_builtin());
    let [w] = rules.warnings() else {
        panic!("{:?}", rules.warnings())
    };
    assert!(w.to_string().contains("`no-such-rule`"), "{w}");
    // Without anything to extend, `disabledRules` does nothing: warned.
    let rules = RuleSet::from_toml(
        "[extend]\ndisabledRules = [\"a\"]\n[[rules]]\nid = \"a\"\nregex = 'a'\n",
        "d.toml",
    )
    .unwrap();
    assert!(rules.get("a").is_some());
    assert!(rules.warnings()[0].message.contains("no effect"));
}

#[test]
fn extending_a_rule_merges_into_it_as_gitleaks_does() {
    let text = r#"
[extend]
useDefault = true
[[rules]]
id = "github-pat"
description = "GitHub token, with our exceptions"
keywords = ["github"]
[[rules.allowlists]]
stopwords = ["rSaezxd"]
[[rules]]
id = "aws-access-token"
regex = '''\b(AKIA[A-Z2-7]{16})\b'''
"#;
    let rules = RuleSet::from_toml(text, "m.toml").unwrap();
    let builtin = RuleSet::builtin();
    assert_eq!(rules.len(), builtin.len());
    let pat = rules.get("github-pat").unwrap();
    let original = builtin.get("github-pat").unwrap();
    assert_eq!(pat.description(), "GitHub token, with our exceptions");
    assert_eq!(pat.pattern(), original.pattern());
    assert_eq!(pat.entropy(), original.entropy());
    assert_eq!(pat.keywords(), ["ghp_", "github"]);
    assert_eq!(pat.allowlists().len(), original.allowlists().len() + 1);
    assert_eq!(pat.origin(), "m.toml");
    let aws = rules.get("aws-access-token").unwrap();
    assert_eq!(aws.pattern(), r"\b(AKIA[A-Z2-7]{16})\b");
    assert_eq!(
        aws.keywords(),
        builtin.get("aws-access-token").unwrap().keywords()
    );
    assert!(rules.get("jwt").unwrap().origin().starts_with("<builtin>"));
    let engine = Engine::new(rules).unwrap();
    let found = engine.scan_whole(b"t = ghp_JSFdUVrKSRC7it3CkQBEZE8ey5aRs8rCkIfv\n", b"f");
    assert_eq!(found.len(), 1);
    let allowed = engine.scan_whole(b"t = ghp_JSFdUVrKSRC7it3CkQBErSaezxdrCkIfv\n", b"f");
    assert!(allowed.is_empty());
    // Merging still checks the secret group against the extended regex.
    let e =
        error_of("[extend]\nuseDefault = true\n[[rules]]\nid = \"github-pat\"\nsecretGroup = 4\n");
    assert!(
        e.contains("rule `github-pat`") && e.contains("secretGroup"),
        "{e}"
    );
}

#[test]
fn a_files_own_rules_come_before_the_rules_it_extends() {
    let text =
        "[extend]\nuseDefault = true\n[[rules]]\nid = \"mine\"\nregex = '''mine_[0-9]{4}'''\n";
    let rules = RuleSet::from_toml(text, "o.toml").unwrap();
    assert_eq!(rules.iter().next().unwrap().id(), "mine");
}

fn data(path: &str) -> PathBuf {
    Path::new("tests/data").join(path)
}

#[test]
fn extend_path_is_found_from_the_working_folder_then_beside_the_file() {
    // Tests run in the crate's folder; `base.toml` is only beside the file.
    let rules = RuleSet::from_file(&data("extend/beside.toml")).unwrap();
    let ids: Vec<&str> = rules.iter().map(|r| r.id()).collect();
    assert_eq!(ids, ["child-token", "base-token"]);
    let base = rules.get("base-token").unwrap();
    assert_eq!(base.description(), "merged into the extended rule");
    assert_eq!(base.keywords(), ["base_", "base"]);
    assert_eq!(base.allowlists().len(), 1);
    assert!(!rules.includes_builtin());
    let [w] = rules.warnings() else {
        panic!("{:?}", rules.warnings())
    };
    assert!(
        w.origin.ends_with("beside.toml") && w.message.contains("`no-such-rule`"),
        "{w}"
    );
    // Relative to the working folder, as gitleaks does.
    let rules = RuleSet::from_file(&data("extend/from-cwd.toml")).unwrap();
    assert_eq!(rules.len(), 2);
    // The in-memory loader cannot follow a path.
    let e = RuleSet::from_toml("[extend]\npath = \"base.toml\"\n", "mem")
        .unwrap_err()
        .to_string();
    assert!(e.contains("from_file"), "{e}");
}

#[test]
fn extend_cycles_missing_files_and_depth() {
    let e = RuleSet::from_file(&data("extend/cycle-a.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cycle") && e.contains("cycle-a.toml -> ") && e.contains("cycle-b.toml"),
        "{e}"
    );
    let e = RuleSet::from_file(&data("extend/missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.toml") && e.contains("\"no-such-file.toml\" not found"),
        "{e}"
    );
    let e = RuleSet::from_file(&data("extend/no-such.toml")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("no-such.toml"), "{e}");
    // As in gitleaks, the third file's `[extend]` is ignored: warned.
    let rules = RuleSet::from_file(&data("extend/depth-1.toml")).unwrap();
    let ids: Vec<&str> = rules.iter().map(|r| r.id()).collect();
    assert_eq!(ids, ["one", "two", "three"]);
    assert!(
        rules
            .warnings()
            .iter()
            .any(|w| w.origin.ends_with("depth-3.toml") && w.message.contains("ignored")),
        "{:?}",
        rules.warnings()
    );
}

/// The team config round-trips: it loads unchanged, warns about what trawl
/// ignores, and every example in its examples file comes out as it says.
#[test]
fn a_real_team_config_matches_its_examples() {
    let rules = RuleSet::from_file(&data("gitleaks-team.toml")).unwrap();
    assert!(rules.includes_builtin());
    assert!(rules.get("jwt").is_none(), "disabled");
    let ids: Vec<&str> = rules.iter().take(3).map(|r| r.id()).collect();
    assert_eq!(
        ids,
        ["acme-api-token", "acme-db-password", "acme-webhook-secret"]
    );
    let mut warned: Vec<String> = rules
        .warnings()
        .iter()
        .map(|w| match w.message.split('`').nth(1) {
            Some(field) => field.to_owned(),
            None => format!("{:?}: {}", w.rule_id, w.message),
        })
        .collect();
    warned.sort();
    assert_eq!(warned.len(), 4, "{warned:#?}");
    assert_eq!(warned[1..], ["allowlists.commits", "rules.tags", "title"]);
    // `\s*` in the password rule: capped, and said so.
    assert!(warned[0].starts_with("Some(\"acme-db-password\"): the regex can match unboundedly"));

    let engine = Engine::new(rules).unwrap();
    let text = std::fs::read_to_string(data("gitleaks-team-examples.toml")).unwrap();
    let examples: toml::Table = toml::from_str(&text).unwrap();
    let field = |e: &toml::Value, name: &str| e[name].as_str().unwrap().to_owned();
    let mut checked = 0;
    for e in examples["true_positives"].as_array().unwrap() {
        let (text, path) = (field(e, "text"), field(e, "path"));
        let found = engine.scan_whole(text.as_bytes(), path.as_bytes());
        let got: Vec<(&str, &str)> = found
            .iter()
            .map(|m| {
                (
                    engine.rule_id(m.rule),
                    std::str::from_utf8(&text.as_bytes()[m.secret.clone()]).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [(field(e, "rule").as_str(), field(e, "secret").as_str())],
            "{path}: {text}"
        );
        checked += 1;
    }
    for e in examples["false_positives"].as_array().unwrap() {
        let (text, path) = (field(e, "text"), field(e, "path"));
        let found = engine.scan_whole(text.as_bytes(), path.as_bytes());
        let got: Vec<&str> = found.iter().map(|m| engine.rule_id(m.rule)).collect();
        assert!(
            got.is_empty(),
            "{} ({}): {got:?}",
            field(e, "why"),
            field(e, "rule")
        );
        checked += 1;
    }
    assert!(checked >= 15, "{checked}");
}
