//! `trawl.toml`, `TRAWL_*` variables and flags, through the binary: which
//! wins, what `trawl config show` prints, and the errors of a bad file.

mod common;

use std::path::Path;

use common::{fixtures, stderr, stdout, trawl, trawl_with_env};

/// A folder holding the leaky fixture's `src` and, if given, a trawl.toml.
fn project(config: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("leaky/src");
    std::fs::create_dir(dir.path().join("src")).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join("src").join(entry.file_name())).unwrap();
        }
    }
    if let Some(text) = config {
        std::fs::write(dir.path().join("trawl.toml"), text).unwrap();
    }
    dir
}

/// The format of a scan's standard output, told from its shape.
fn format_of(out: &str) -> &'static str {
    if out.starts_with('[') {
        "json"
    } else if out.starts_with("rule_id,") || out.starts_with("\"rule_id\",") {
        "csv"
    } else if out.starts_with("{\"schema\"") {
        "jsonl"
    } else {
        panic!("unknown format:\n{out}")
    }
}

#[test]
fn flags_win_over_variables_which_win_over_the_file() {
    let dir = project(Some("format = \"csv\"\nsort = true\n"));
    let scan = |args: &[&str], env: &[(&str, &str)]| {
        let out = trawl_with_env(dir.path(), args, env);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        format_of(&stdout(&out))
    };
    let env = [("TRAWL_FORMAT", "json")];
    assert_eq!(scan(&["scan", "src", "--format", "jsonl"], &env), "jsonl");
    assert_eq!(scan(&["scan", "src"], &env), "json");
    assert_eq!(scan(&["scan", "src"], &[]), "csv");
    assert_eq!(scan(&["scan", "src", "--no-config"], &[]), "jsonl");
    assert_eq!(
        scan(&["scan", "src", "--no-config"], &[("TRAWL_FORMAT", "csv")]),
        "csv",
        "variables apply without a file"
    );
}

#[test]
fn config_show_names_each_settings_source() {
    let dir = project(Some(
        "format = \"csv\"\nredact = true\nrules = [\"team.toml\"]\n",
    ));
    let out = trawl_with_env(
        dir.path(),
        &["config", "show", "--io-threads", "3"],
        &[("TRAWL_CHUNK_SIZE", "1MiB")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = stdout(&out);
    let line = |key: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(&format!("{key} =")) || l.starts_with(&format!("# {key} =")))
            .unwrap_or_else(|| panic!("no {key} in\n{shown}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("io-threads"), "io-threads = 3 # the command line");
    assert_eq!(
        line("chunk-size"),
        "chunk-size = \"1MiB\" # TRAWL_CHUNK_SIZE"
    );
    assert_eq!(line("format"), "format = \"csv\" # the file");
    assert_eq!(line("redact"), "redact = true # the file");
    let rules = dir.path().join("team.toml");
    assert_eq!(
        line("rules"),
        format!("rules = [\"{}\"] # the file", rules.display()),
        "paths in the file are read from its folder"
    );
    assert_eq!(line("sort"), "sort = false # default");
    assert_eq!(line("exit-code"), "exit-code = 1 # default");
    assert_eq!(
        line("pool-buffers"),
        "# pool-buffers = (default: 64 for local paths (16 MiB), 32 for URLs (128 MiB))"
    );
    assert!(shown.contains(&dir.path().join("trawl.toml").display().to_string()));

    // What it prints is a configuration file trawl reads back.
    let copy = project(None);
    std::fs::write(copy.path().join("trawl.toml"), &shown).unwrap();
    let again = trawl(copy.path(), &["config", "show"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(stdout(&again).contains("io-threads = 3"));
}

#[test]
fn config_show_masks_credentials() {
    let dir = project(Some("endpoint = \"http://minio:hunter2@127.0.0.1:9000\"\n"));
    let out = trawl_with_env(
        dir.path(),
        &["config", "show"],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
            (
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ),
            ("AZURE_STORAGE_ACCOUNT_KEY", "c2VjcmV0LWtleQ=="),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = stdout(&out);
    for secret in ["hunter2", "IOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "c2VjcmV0"] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
    assert!(shown.contains("AWS_SECRET_ACCESS_KEY=****"), "{shown}");
    assert!(shown.contains("endpoint = \"http://"), "{shown}");
}

#[test]
fn a_bad_file_is_an_error_naming_the_file_the_key_and_a_fix() {
    let dir = project(Some("format = \"csv\"\nmax_file_size = \"1MiB\"\n"));
    for args in [&["scan", "src"][..], &["config", "show"]] {
        let out = trawl(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        let file = dir.path().join("trawl.toml");
        assert!(
            err.contains(&format!(
                "{}: unknown key `max_file_size`; did you mean `max-file-size`?",
                file.display()
            )),
            "{err}"
        );
        assert!(stdout(&out).is_empty(), "nothing scanned: {}", stdout(&out));
    }

    let dir = project(Some("chunk-size = \"huge\"\n"));
    let err = stderr(&trawl(dir.path(), &["scan", "src"]));
    assert!(err.contains("trawl.toml: key `chunk-size`"), "{err}");
    assert!(err.contains("huge"), "{err}");

    let dir = project(None);
    let out = trawl_with_env(dir.path(), &["scan", "src"], &[("TRAWL_SORT", "sometimes")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("TRAWL_SORT=\"sometimes\": expected true or false"),
        "{}",
        stderr(&out)
    );

    let missing = trawl(dir.path(), &["scan", "src", "--config", "nowhere.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("cannot read the configuration file nowhere.toml"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn a_file_named_by_flag_or_variable_replaces_the_working_folders() {
    let dir = project(Some("format = \"csv\"\n"));
    let other = dir.path().join("ci.toml");
    std::fs::write(&other, "format = \"json\"\n").unwrap();
    let other = other.to_str().unwrap();
    let by_flag = trawl(dir.path(), &["scan", "src", "--config", other]);
    assert_eq!(format_of(&stdout(&by_flag)), "json");
    let by_variable = trawl_with_env(dir.path(), &["scan", "src"], &[("TRAWL_CONFIG", other)]);
    assert_eq!(format_of(&stdout(&by_variable)), "json");
    assert!(Path::new(other).is_file());
}

#[test]
fn a_bad_flag_is_reported_as_such_with_a_file_present() {
    let dir = project(Some("format = \"csv\"\n"));
    for args in [
        &["scan", "src", "--format", "xml"][..],
        &["scan", "src", "--no-config", "--format", "xml"],
    ] {
        let out = trawl(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("invalid value 'xml' for '--format <FORMAT>'"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let twice = trawl(
        dir.path(),
        &["scan", "src", "--format", "json", "--format", "jsonl"],
    );
    assert_eq!(format_of(&stdout(&twice)), "jsonl", "the last value wins");

    // The usage line shows what may be typed, not what the file added.
    let unknown = trawl(dir.path(), &["scan", "src", "--bogus"]);
    assert_eq!(unknown.status.code(), Some(2));
    let err = stderr(&unknown);
    assert!(err.contains("unexpected argument '--bogus'"), "{err}");
    assert!(
        err.contains("Usage: trawl scan [OPTIONS] <PATH|URL>...") && !err.contains("--format"),
        "{err}"
    );
}

#[test]
fn a_switch_from_the_file_is_turned_off_by_its_negation_or_a_conflicting_flag() {
    let dir = project(Some("redact = true\nformat = \"jsonl\"\n"));
    let secrets = |args: &[&str]| -> Vec<String> {
        let out = trawl(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|line| {
                let finding: serde_json::Value = serde_json::from_str(line).unwrap();
                finding["secret"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let redacted = secrets(&["scan", "src"]);
    assert!(redacted.iter().all(|s| s.ends_with('…')), "{redacted:?}");
    for args in [
        &["scan", "src", "--no-redact"][..],
        &["scan", "src", "--show-secrets"],
    ] {
        let whole = secrets(args);
        assert_eq!(whole.len(), redacted.len(), "{args:?}");
        assert!(
            whole.iter().all(|s| !s.ends_with('…')),
            "{args:?}: {whole:?}"
        );
    }
}
