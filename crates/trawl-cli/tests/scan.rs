//! `trawl scan` as a user runs it: the JSONL snapshot over a fixture folder,
//! exact lines of every planted secret, exit codes and bad input.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{findings, fixtures, on_a_terminal, stderr, stdout, trawl};

/// Every secret planted in `tests/fixtures/leaky`, with its file and rule.
const PLANTED: &[(&str, &str, &str)] = &[
    (
        "leaky/src/app.py",
        "github-pat",
        "ghp_R7fKq2LmX9vBn4WcT8yHs1JdP6aZe3UoQi5G",
    ),
    (
        "leaky/src/app.py",
        "aws-access-token",
        "AKIAZ7Q3WV4ABCDXYZ2Q",
    ),
    (
        "leaky/config/.env",
        "slack-bot-token",
        "xoxb-2948571034-7710345982611-Zq8XcVb3NmLkJh5GfDs2Ap9W",
    ),
    (
        "leaky/config/.env",
        "stripe-access-token",
        "sk_live_51Hq8ZtKl3Mn9Pq2Rs4Tu6Vw8",
    ),
    (
        "leaky/.hidden/token.txt",
        "gitlab-pat",
        "glpat-Xk3Lq9Zr7Tn2Vb5Wm8Jc",
    ),
    (
        "leaky/logs/dump.bin",
        "gitlab-pat",
        "glpat-Zr7Tn2Vb5Wm8JcXk3LqQ",
    ),
    (
        "leaky/ignored.txt",
        "npm-access-token",
        "npm_Kq7Vx2Lm9Zr4Tn8Wb3Yc6Pd1Hs5Gf0Ja2Ue4",
    ),
];

/// Line and column of the first occurrence of `needle` in `file`, counted
/// independently of trawl.
fn position_in(file: &Path, needle: &str) -> (u64, u64) {
    let bytes = std::fs::read(file).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("{needle} not in {}", file.display()));
    let before = &bytes[..at];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count() as u64;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    (line, (at - line_start + 1) as u64)
}

#[test]
fn jsonl_output_snapshot() {
    let out = trawl(&fixtures(), &["scan", "leaky", "--sort"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    insta::assert_snapshot!("leaky_jsonl", stdout(&out));
}

#[test]
fn json_and_csv_output_snapshots() {
    for (format, name) in [("json", "leaky_json"), ("csv", "leaky_csv")] {
        let out = trawl(
            &fixtures(),
            &["scan", "leaky", "--sort", "--format", format],
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        insta::assert_snapshot!(name, stdout(&out));
    }
}

/// Runs `trawl ARGS` as [`trawl`] does, and without `CLICOLOR_FORCE`,
/// which would colour the human format even into a pipe.
fn trawl_uncoloured(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trawl"))
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("CLICOLOR_FORCE")
        .output()
        .expect("run trawl")
}

#[test]
fn human_output_snapshot() {
    let out = trawl_uncoloured(
        &fixtures(),
        &["scan", "leaky", "--sort", "--format", "human"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stdout(&out).contains('\u{1b}'), "no colours into a pipe");
    insta::assert_snapshot!("leaky_human", stdout(&out));
}

#[test]
fn the_human_format_shows_whole_secrets_only_when_asked() {
    let human = |extra: &[&str]| {
        let args = [&["scan", "leaky", "--format", "human"][..], extra].concat();
        let out = trawl_uncoloured(&fixtures(), &args);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
        stdout(&out)
    };
    let redacted = human(&[]);
    let shown = human(&["--show-secrets"]);
    for (file, rule, secret) in PLANTED {
        let start: String = secret.chars().take(4).collect();
        assert!(!redacted.contains(secret), "{rule} in {file}:\n{redacted}");
        assert!(redacted.contains(&format!("{start}…")), "{rule} in {file}");
        assert!(shown.contains(secret), "{rule} in {file}:\n{shown}");
    }
    // A private key spans lines: shown whole, line by line.
    assert!(shown.contains("-----END RSA PRIVATE KEY-----"));

    let out = trawl(
        &fixtures(),
        &[
            "scan",
            "leaky",
            "--format",
            "human",
            "--redact",
            "--show-secrets",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(
        message.contains("cannot be used with")
            && message.contains("'--show-secrets'")
            && message.contains("'--redact'"),
        "{message}"
    );

    // Colours when asked, into a file too; a JSONL output beside it keeps
    // its whole secrets.
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.txt");
    let report_arg = format!("human:{}", report.display());
    let out = trawl(
        &fixtures(),
        &[
            "scan",
            "leaky",
            "--color",
            "always",
            "-o",
            &report_arg,
            "-o",
            "-",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = std::fs::read_to_string(&report).unwrap();
    assert!(report.contains("\u{1b}["), "{report:?}");
    assert!(!report.contains(PLANTED[0].2));
    assert!(findings(&out).iter().any(|f| f["secret"] == PLANTED[0].2));
}

#[test]
fn the_human_format_is_coloured_on_a_terminal_unless_no_color() {
    let args = "scan leaky/src --format human --quiet";
    let (Some(coloured), Some(plain)) = (
        on_a_terminal(args, &[]),
        on_a_terminal(args, &[("NO_COLOR", "1")]),
    ) else {
        return;
    };
    assert!(
        coloured.contains("\u{1b}[") && coloured.contains("github-pat"),
        "{coloured:?}"
    );
    assert!(
        !plain.contains('\u{1b}') && plain.contains("github-pat"),
        "{plain:?}"
    );
}

#[test]
fn sarif_output_is_valid_and_locates_every_finding() {
    let out = trawl(
        &fixtures(),
        &["scan", "leaky", "--sort", "--format", "sarif"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    // The official schema, kept with the SARIF sink's own tests.
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../trawl-scheduler/tests/data/sarif-schema-2.1.0.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&log).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");

    let run = &log["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert!(rules.len() >= 200, "every rule of the scan is described");
    let results = run["results"].as_array().unwrap();
    let jsonl = findings(&trawl(&fixtures(), &["scan", "leaky", "--sort"]));
    assert_eq!(results.len(), jsonl.len());
    for (result, finding) in results.iter().zip(&jsonl) {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index]["id"], result["ruleId"]);
        assert_eq!(result["ruleId"], finding["rule_id"]);
        let secret = finding["secret"].as_str().unwrap();
        assert!(!stdout(&out).contains(secret), "no whole secret in SARIF");
    }
    insta::assert_snapshot!(
        "leaky_sarif_results",
        serde_json::to_string_pretty(results).unwrap()
    );
}

#[test]
fn several_outputs_in_one_run_hold_the_same_findings() {
    let dir = tempfile::tempdir().unwrap();
    let (json, csv) = (dir.path().join("f.json"), dir.path().join("f.csv"));
    let json_arg = format!("json:{}", json.display());
    let csv_arg = format!("CSV:{}", csv.display());
    let out = trawl(
        &fixtures(),
        &[
            "scan", "leaky", "--sort", "--redact", "-o", &json_arg, "--output", &csv_arg, "-o", "-",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = findings(&out);
    let array: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(array, lines, "the JSON array holds the JSONL objects");
    let csv = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), lines.len());
    for (row, line) in rows.iter().zip(&lines) {
        let wanted = format!(
            "{},{},{},{},",
            line["rule_id"].as_str().unwrap(),
            line["path"].as_str().unwrap(),
            line["line"],
            line["column"]
        );
        assert!(row.starts_with(&wanted), "{row} / {wanted}");
        assert!(
            row.contains(line["secret"].as_str().unwrap()),
            "redacted alike"
        );
    }

    let out = trawl(&fixtures(), &["scan", "leaky", "-o", "-", "-o", "json:-"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("only one --output can be standard output"));
    let out = trawl(&fixtures(), &["scan", "leaky", "--format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid value 'xml'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_planted_secret_is_found_at_its_exact_line() {
    let out = trawl(&fixtures(), &["scan", "leaky"]);
    let found = findings(&out);
    for (file, rule, secret) in PLANTED {
        let (line, column) = position_in(&fixtures().join(file), secret);
        let hit = found.iter().find(|f| f["secret"] == *secret);
        let hit = hit.unwrap_or_else(|| panic!("{rule} in {file} not found:\n{}", stdout(&out)));
        assert_eq!(hit["path"], *file);
        assert_eq!(hit["rule_id"], *rule, "{secret}");
        assert_eq!(
            (hit["line"].as_u64(), hit["column"].as_u64()),
            (Some(line), Some(column)),
            "{secret}"
        );
    }
    let private_key = found.iter().find(|f| f["rule_id"] == "private-key");
    assert_eq!(
        private_key.map(|f| &f["path"]),
        Some(&"leaky/keys/id_rsa".into())
    );
    assert!(
        !found.iter().any(|f| f["path"] == "leaky/notes.md"),
        "near misses must stay quiet"
    );
}

#[test]
fn summary_reports_objects_and_findings_on_stderr() {
    let out = trawl(&fixtures(), &["scan", "leaky", "--redact"]);
    let stderr = stderr(&out);
    assert!(stderr.contains("scanned 9 of 9 objects"), "{stderr}");
    assert!(stderr.contains("findings: 8"), "{stderr}");
    for f in findings(&out) {
        let secret = f["secret"].as_str().unwrap();
        assert!(
            secret.ends_with('…') && secret.chars().count() == 5,
            "{secret}"
        );
        assert!(f.get("secret_b64").is_none());
    }
}

#[test]
fn opting_out_skips_and_counts_hidden_and_ignored_files() {
    let out = trawl(
        &fixtures(),
        &["scan", "leaky", "--skip-hidden", "--respect-gitignore"],
    );
    let stderr = stderr(&out);
    let found = findings(&out);
    assert!(!found.iter().any(|f| f["path"] == "leaky/.hidden/token.txt"));
    assert!(!found.iter().any(|f| f["path"] == "leaky/ignored.txt"));
    assert!(stderr.contains("skipped"), "{stderr}");
    assert!(stderr.contains("hidden"), "{stderr}");
    assert!(stderr.contains("gitignore"), "{stderr}");
}

#[test]
fn a_clean_folder_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("readme.txt"), "nothing to see\n").unwrap();
    let out = trawl(dir.path(), &["scan", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_missing_path_is_a_clear_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = trawl(dir.path(), &["scan", "no-such-folder"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = stderr(&out);
    assert!(
        stderr.contains("no-such-folder") && stderr.contains("No such file"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_options_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["scan", ".", "--chunk-size", "0"][..],
        &["scan", ".", "--chunk-size", "12XB"],
        &["scan", ".", "--cpu-workers", "0"],
        &["scan"],
        &["frobnicate"],
    ] {
        let out = trawl(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = stderr(&out);
        assert!(
            !stderr.contains("panicked") && !stderr.is_empty(),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn output_file_receives_the_findings() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("findings.jsonl");
    let out = trawl(
        &fixtures(),
        &["scan", "leaky/src", "-o", target.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(&target).unwrap();
    assert_eq!(written.lines().count(), 2, "{written}");
}

#[test]
fn the_output_file_inside_the_scanned_folder_is_not_scanned() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("leak.txt"),
        "ghp_R7fKq2LmX9vBn4WcT8yHs1JdP6aZe3UoQi5G\n",
    )
    .unwrap();
    // Left over from an earlier run: it holds the secret too.
    let earlier = trawl(dir.path(), &["scan", "leak.txt"]);
    std::fs::write(dir.path().join("findings.jsonl"), &earlier.stdout).unwrap();
    let out = trawl(dir.path(), &["scan", ".", "-o", "findings.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    let written = std::fs::read_to_string(dir.path().join("findings.jsonl")).unwrap();
    assert_eq!(written.lines().count(), 1, "{written}");
    assert!(stderr(&out).contains("trawl's own output"));
}

#[cfg(unix)]
#[test]
fn odd_files_are_scanned_not_skipped() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9-\xff.log");
    let mut body = b"\x00\xff\xfe".to_vec();
    body.extend_from_slice(b" ghp_R7fKq2LmX9vBn4WcT8yHs1JdP6aZe3UoQi5G\n");
    std::fs::write(dir.path().join(name), &body).unwrap();
    std::fs::write(dir.path().join("zero"), b"").unwrap();
    let out = trawl(dir.path(), &["scan", "."]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let found = findings(&out);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["path"], "./caf\u{fffd}-\u{fffd}.log");
    assert!(found[0]["path_b64"].is_string());
    assert_eq!(
        (found[0]["line"].as_u64(), found[0]["column"].as_u64()),
        (Some(1), Some(5))
    );
}

#[test]
fn a_file_of_one_long_line_is_scanned_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let size = 100 << 20;
    let mut body = vec![b'a'; size];
    let secret = b"ghp_R7fKq2LmX9vBn4WcT8yHs1JdP6aZe3UoQi5G";
    let at = size - 1000;
    body[at - 1] = b' ';
    body[at..at + secret.len()].copy_from_slice(secret);
    body[at + secret.len()] = b' ';
    std::fs::write(dir.path().join("long.txt"), &body).unwrap();
    drop(body);
    let out = trawl(dir.path(), &["scan", "long.txt"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let found = findings(&out);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["line"], 1);
    assert_eq!(found[0]["column"], at as u64 + 1);
    assert_eq!(found[0]["start"], at as u64);
}

/// Runs trawl as an unprivileged user when the tests run as root, since
/// root reads files whatever their permissions. `None` when that cannot be
/// arranged.
#[cfg(unix)]
fn trawl_unprivileged(dir: &Path, args: &[&str]) -> Option<Output> {
    let probe = dir.join(".probe");
    std::fs::write(&probe, "x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o000)).unwrap();
    let root = std::fs::read(&probe).is_ok();
    std::fs::remove_file(&probe).unwrap();
    if !root {
        return Some(trawl(dir, args));
    }
    let setpriv = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_trawl"),
        ])
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output();
    match setpriv {
        Ok(out) if !stderr(&out).contains("setpriv:") => Some(out),
        _ => None,
    }
}

#[cfg(unix)]
#[test]
fn an_unreadable_file_fails_the_scan_but_keeps_other_findings() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let locked = dir.path().join("locked.txt");
    std::fs::write(&locked, "x").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let leak = dir.path().join("leak.txt");
    std::fs::write(&leak, "ghp_R7fKq2LmX9vBn4WcT8yHs1JdP6aZe3UoQi5G\n").unwrap();
    std::fs::set_permissions(&leak, std::fs::Permissions::from_mode(0o644)).unwrap();
    let Some(out) = trawl_unprivileged(dir.path(), &["scan", "."]) else {
        eprintln!(
            "notice: running as root without setpriv, permissions are not enforced; skipping"
        );
        return;
    };
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        findings(&out).len(),
        1,
        "the readable file's finding is kept"
    );
    assert!(
        stderr.contains("locked.txt") && stderr.contains("failed: 1"),
        "{stderr}"
    );
    assert!(stderr.contains("Permission denied"), "{stderr}");
}

#[test]
fn a_reader_that_leaves_early_is_not_an_error() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_trawl"))
        .current_dir(fixtures())
        .args(["scan", "leaky"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run trawl");
    // `trawl scan leaky | head -0`: the reader closes before anything is read.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("trawl ends");
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains("error") && !stderr.contains("output failed"),
        "{stderr}"
    );
}

#[test]
fn exit_codes_say_clean_findings_or_incomplete_and_exit_code_sets_the_findings_one() {
    let clean = tempfile::tempdir().unwrap();
    std::fs::write(clean.path().join("readme.txt"), "nothing to see here\n").unwrap();
    let out = trawl(clean.path(), &["scan", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = trawl(&fixtures(), &["scan", "leaky"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for (code, want) in [("0", 0), ("42", 42)] {
        let out = trawl(&fixtures(), &["scan", "leaky", "--exit-code", code]);
        assert_eq!(out.status.code(), Some(want), "{}", stderr(&out));
        assert!(!findings(&out).is_empty(), "the findings are still written");
    }
    let out = trawl(clean.path(), &["scan", ".", "--exit-code", "42"]);
    assert_eq!(out.status.code(), Some(0), "no findings, no custom code");

    let out = trawl(
        clean.path(),
        &["scan", "no-such-folder", "--exit-code", "0"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "incomplete stays 2: {}",
        stderr(&out)
    );
    let out = trawl(clean.path(), &["scan", ".", "--exit-code", "300"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(stderr(&out).contains("--exit-code"), "{}", stderr(&out));
}

/// A folder where each filter flag leaves out one leaky file: dependencies,
/// a Markdown file, a large file and an old one. Only `src/app.js` is left.
fn filtered_tree() -> tempfile::TempDir {
    const LEAK: &str = "token = ghp_R7fKq2LmX9vBn4WcT8yHs1JdP6aZe3UoQi5G\n";
    let dir = tempfile::tempdir().unwrap();
    let put = |rel: &str, body: &[u8]| {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body).unwrap();
        path
    };
    put("src/app.js", LEAK.as_bytes());
    for i in 0..30 {
        put(&format!("node_modules/pkg{i}/index.js"), LEAK.as_bytes());
    }
    put("README.md", LEAK.as_bytes());
    let mut big = LEAK.repeat(100);
    big.push('\n');
    put("dist/big.js", big.as_bytes());
    let old = put("legacy/old.js", LEAK.as_bytes());
    let year_2000 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800);
    std::fs::File::options()
        .write(true)
        .open(old)
        .unwrap()
        .set_modified(year_2000)
        .unwrap();
    dir
}

#[test]
fn filters_skip_on_purpose_with_each_reason_counted_and_the_scan_complete() {
    let dir = filtered_tree();
    let filters = [
        "--exclude",
        "node_modules/",
        "--include",
        "*.js",
        "--max-object-size",
        "1KiB",
        "--modified-since",
        "2020-01-01",
    ];
    let mut args = vec!["scan", "."];
    args.extend(filters);
    let out = trawl(dir.path(), &args);
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "findings, complete: {stderr}");
    let paths: Vec<String> = findings(&out)
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["./src/app.js"], "{stderr}");
    // The 30 packages are one pruned folder, one skip.
    assert!(stderr.contains("scanned 1 of 5 objects"), "{stderr}");
    for line in [
        "  skipped: 4\n",
        "    1 larger than the maximum object size (--max-object-size)\n",
        "    1 excluded by the glob 'node_modules/' (--exclude)\n",
        "    1 matched no include glob (--include)\n",
        "    1 not modified since the cut-off (--modified-since)\n",
    ] {
        assert!(stderr.contains(line), "{line:?} in {stderr}");
    }

    // Everything leaky filtered out: a clean, complete scan.
    let out = trawl(
        dir.path(),
        &["scan", ".", "--exclude", "*.js", "--exclude", "*.md"],
    );
    let stderr = common::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("    33 excluded by the glob '*.js' (--exclude)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("    1 excluded by the glob '*.md' (--exclude)"),
        "{stderr}"
    );
}

#[test]
fn max_file_size_is_still_accepted_and_bad_filters_name_flag_and_value() {
    let dir = filtered_tree();
    let out = trawl(dir.path(), &["scan", "dist", "--max-file-size", "1KiB"]);
    let stderr = common::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("1 larger than the maximum object size"),
        "{stderr}"
    );

    for (flag, value, says) in [
        ("--exclude", "[abc", "unclosed character class"),
        ("--include", "!*.js", "negation is not supported"),
        ("--modified-since", "yesterday", "expected a date and time"),
        ("--modified-since", "3y", "unknown unit 'y'"),
        ("--max-object-size", "lots", "not a size"),
    ] {
        let out = trawl(dir.path(), &["scan", ".", flag, value]);
        let stderr = common::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        for needle in [flag, value, says] {
            assert!(
                stderr.contains(needle),
                "{flag} {value}: {needle:?} in {stderr}"
            );
        }
    }
}
