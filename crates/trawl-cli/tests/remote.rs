//! `trawl scan URL` as a user runs it: buckets on a real S3-compatible
//! server (moto, `TRAWL_TEST_S3_ENDPOINT`), plain http(s) URLs and URL
//! lists, and the usage errors of mixing locations or flags.

mod common;
use common::s3::{bucket_with, endpoint, trawl_s3, trawl_with_credentials, unique_bucket_name};
use common::{findings, stderr, stdout, trawl};

const SECRET: &str = "ghp_R7fKq2LmX9vBn4WcT8yHs1JdP6aZe3UoQi5G";

/// Line, column (1-based, in bytes) and offset of the first `needle` in
/// `body`, counted independently of trawl.
fn position(body: &[u8], needle: &str) -> (u64, u64, u64) {
    let at = body
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("{needle} not in the body"));
    let before = &body[..at];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count() as u64;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    (line, (at - line_start + 1) as u64, at as u64)
}

/// About 5 MiB of short lines with the secret across the 4 MiB boundary:
/// the first chunk of a remote scan (and of 64 KiB chunks) ends inside it.
fn large_body() -> Vec<u8> {
    const BOUNDARY: usize = 4 << 20;
    let line = format!("{}\n", "x".repeat(99));
    let line_start = BOUNDARY - 20 - "token=".len();
    let mut body = Vec::with_capacity(5 << 20);
    while body.len() + line.len() <= line_start {
        body.extend_from_slice(line.as_bytes());
    }
    body.resize(line_start - 1, b'y');
    body.push(b'\n');
    body.extend_from_slice(format!("token={SECRET}\n").as_bytes());
    while body.len() < 5 << 20 {
        body.extend_from_slice(line.as_bytes());
    }
    let (_, _, start) = position(&body, SECRET);
    assert!(start < BOUNDARY as u64 && start + SECRET.len() as u64 > BOUNDARY as u64);
    body
}

#[test]
fn objects_under_a_prefix_are_scanned_and_shown_as_s3_urls() {
    let Some(endpoint) = endpoint() else { return };
    let app = format!("started\nconfig loaded\n  token: {SECRET}\n");
    let deep = format!("{{\"k\": \"{SECRET}\"}}\n");
    let large = large_body();
    let outside = format!("{SECRET}\n");
    let objects: &[(&str, &[u8])] = &[
        ("logs/app.log", app.as_bytes()),
        ("logs/2026/01/deep.json", deep.as_bytes()),
        ("logs/large.txt", &large),
        ("logs/clean.txt", b"nothing to see\n"),
        ("logs-old/leak.txt", outside.as_bytes()),
        ("other/leak.txt", outside.as_bytes()),
    ];
    let bucket = bucket_with(&endpoint, "prefix", objects);
    let dir = tempfile::tempdir().unwrap();
    let out = trawl_s3(
        dir.path(),
        &endpoint,
        &["scan", &format!("s3://{bucket}/logs/"), "--sort"],
    );
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("scanned 4 of 4 objects"), "{stderr}");
    assert!(stderr.contains("objects/s"), "{stderr}");
    let found = findings(&out);
    let paths: Vec<&str> = found.iter().map(|f| f["path"].as_str().unwrap()).collect();
    let expected: Vec<String> = ["logs/2026/01/deep.json", "logs/app.log", "logs/large.txt"]
        .iter()
        .map(|key| format!("s3://{bucket}/{key}"))
        .collect();
    assert_eq!(paths, expected, "{}", stdout(&out));
    for (key, body) in objects.iter().take(3) {
        let path = format!("s3://{bucket}/{key}");
        let hit = found.iter().find(|f| f["path"] == path.as_str()).unwrap();
        let (line, column, start) = position(body, SECRET);
        assert_eq!(hit["rule_id"], "github-pat", "{key}");
        assert_eq!(hit["secret"], SECRET, "{key}");
        assert_eq!(
            (
                hit["line"].as_u64(),
                hit["column"].as_u64(),
                hit["start"].as_u64()
            ),
            (Some(line), Some(column), Some(start)),
            "{key}"
        );
    }
}

#[test]
fn small_chunks_chosen_by_the_user_find_the_same_secrets() {
    let Some(endpoint) = endpoint() else { return };
    let large = large_body();
    let bucket = bucket_with(&endpoint, "chunks", &[("large.txt", &large)]);
    let dir = tempfile::tempdir().unwrap();
    let out = trawl_s3(
        dir.path(),
        &endpoint,
        &[
            "scan",
            &format!("s3://{bucket}"),
            "--chunk-size",
            "64KiB",
            "--pool-buffers",
            "4",
            "--io-threads",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let found = findings(&out);
    assert_eq!(found.len(), 1, "{}", stdout(&out));
    let (line, column, _) = position(&large, SECRET);
    assert_eq!(
        (found[0]["line"].as_u64(), found[0]["column"].as_u64()),
        (Some(line), Some(column))
    );
}

#[test]
fn a_clean_prefix_exits_zero() {
    let Some(endpoint) = endpoint() else { return };
    let leak = format!("{SECRET}\n");
    let bucket = bucket_with(
        &endpoint,
        "clean",
        &[
            ("docs/readme.txt", b"nothing to see\n"),
            ("docs/empty", b""),
            ("secrets/leak.txt", leak.as_bytes()),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = trawl_s3(
        dir.path(),
        &endpoint,
        &["scan", &format!("s3://{bucket}/docs/")],
    );
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    assert!(stderr.contains("scanned 2 of 2 objects"), "{stderr}");
}

#[test]
fn a_missing_bucket_is_one_error_line() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = unique_bucket_name("missing");
    let url = format!("s3://{bucket}/some/prefix");
    let dir = tempfile::tempdir().unwrap();
    let out = trawl_s3(dir.path(), &endpoint, &["scan", &url]);
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, no summary: {stderr}");
    assert!(
        lines[0].starts_with(&format!("trawl: error: cannot list {url}: ")),
        "{stderr}"
    );
    assert!(
        lines[0].contains("404") && lines[0].contains("NoSuchBucket"),
        "the store's reason: {stderr}"
    );
}

#[test]
fn http_urls_the_server_refuses_are_failed_objects_named_by_url() {
    let Some(endpoint) = endpoint() else { return };
    let leak = format!("{SECRET}\n");
    let bucket = bucket_with(
        &endpoint,
        "http",
        &[
            ("pub/a.txt", leak.as_bytes()),
            ("pub/b.txt", leak.as_bytes()),
        ],
    );
    // moto serves objects at {endpoint}/{bucket}/{key}, but answers an
    // unsigned request for a private object with 403: each URL must then
    // be reported failed, with its reason, and the scan incomplete.
    let a = format!("{endpoint}/{bucket}/pub/a.txt");
    let b = format!("{endpoint}/{bucket}/pub/b.txt?token=hunter2&part=1");
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, format!("# more objects\n\n  {b}  \n")).unwrap();
    let out = trawl_with_credentials(dir.path(), &["scan", &a, "--urls", list.to_str().unwrap()]);
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    assert!(stderr.contains("scanned 0 of 2 objects"), "{stderr}");
    assert!(stderr.contains("failed: 2"), "{stderr}");
    let failed_with_403 = |url: &str| {
        stderr
            .lines()
            .any(|l| l.trim_start().starts_with(url) && l.contains("HTTP 403"))
    };
    assert!(failed_with_403(&a), "{stderr}");
    assert!(
        failed_with_403(&format!(
            "{endpoint}/{bucket}/pub/b.txt?token=REDACTED&part=1"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "credentials in URLs are never shown: {stderr}"
    );
}

#[test]
fn a_presigned_url_is_read_and_shown_without_its_signature() {
    let Some(endpoint) = endpoint() else { return };
    let body = format!("# deploy notes\n\nexport GH_TOKEN={SECRET}\n");
    let bucket = bucket_with(&endpoint, "presigned", &[("notes.sh", body.as_bytes())]);
    // Shaped like a pre-signed URL; moto checks no signature (nor expiry),
    // so it serves the object as S3 serves a valid pre-signed URL.
    let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-Credential=AKIDTRAWLTESTS%2F20260101%2Fus-east-1%2Fs3%2Faws4_request\
        &X-Amz-Date=20260101T000000Z&X-Amz-Expires=604800&X-Amz-SignedHeaders=host\
        &X-Amz-Signature=hunter2";
    let url = format!("{endpoint}/{bucket}/notes.sh?{query}");
    let dir = tempfile::tempdir().unwrap();
    let out = trawl_with_credentials(dir.path(), &["scan", &url]);
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let found = findings(&out);
    assert_eq!(found.len(), 1, "{}", stdout(&out));
    let path = found[0]["path"].as_str().unwrap();
    assert!(
        path.starts_with(&format!("{endpoint}/{bucket}/notes.sh?"))
            && path.contains("X-Amz-Signature=REDACTED"),
        "{path}"
    );
    let (line, column, start) = position(body.as_bytes(), SECRET);
    assert_eq!(
        (
            found[0]["line"].as_u64(),
            found[0]["column"].as_u64(),
            found[0]["start"].as_u64()
        ),
        (Some(line), Some(column), Some(start))
    );
    for shown in [stdout(&out), stderr] {
        assert!(
            !shown.contains("hunter2") && !shown.contains("AKIDTRAWLTESTS"),
            "{shown}"
        );
    }
}

#[test]
fn a_bad_line_in_the_url_list_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(
        &list,
        "# objects\nhttps://example.invalid/a.js\n\ns3://bucket/key\n",
    )
    .unwrap();
    let out = trawl(dir.path(), &["scan", "--urls", "urls.txt"]);
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("urls.txt:4:"), "{stderr}");
    assert!(
        stderr.contains("not an http:// or https:// URL"),
        "{stderr}"
    );

    std::fs::write(&list, "https://example.invalid/a.js\nhttps://\n").unwrap();
    let out = trawl(dir.path(), &["scan", "--urls", "urls.txt"]);
    let stderr = common::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("urls.txt:2:"), "{stderr}");
}

#[test]
fn mixing_locations_is_a_usage_error_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "x\n").unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, "https://example.invalid/a.js\n").unwrap();
    for args in [
        &["scan", "a.txt", "s3://bucket/prefix"][..],
        &["scan", "s3://bucket/prefix", "a.txt"],
        &["scan", "a.txt", "--urls", "urls.txt"],
        &["scan", "s3://one", "gs://two"],
        &["scan", "s3://one", "https://example.invalid/x"],
    ] {
        let out = trawl(dir.path(), args);
        let stderr = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("run trawl once per location"),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn flags_that_do_not_apply_to_the_target_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "x\n").unwrap();
    for (args, says) in [
        (
            &["scan", "a.txt", "--endpoint", "http://localhost:9000"][..],
            "--endpoint applies to URLs only",
        ),
        (
            &["scan", ".", "--anonymous", "--region", "eu-west-1"],
            "--region, --anonymous apply to URLs only",
        ),
        (
            &["scan", "s3://bucket", "--skip-hidden"],
            "--skip-hidden applies to local paths only",
        ),
        (
            &["scan", "gs://bucket", "--region", "eu-west-1"],
            "--region applies to s3:// locations only",
        ),
        (
            &[
                "scan",
                "https://example.invalid/x",
                "--endpoint",
                "http://h",
            ],
            "--endpoint applies to s3:// and az://",
        ),
        (
            &["scan", "ftp://example.invalid/x"],
            "unsupported scheme 'ftp'",
        ),
    ] {
        let out = trawl(dir.path(), args);
        let stderr = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn a_file_url_is_a_local_path() {
    let dir = tempfile::tempdir().unwrap();
    let leak = dir.path().join("leak file.txt");
    std::fs::write(&leak, format!("{SECRET}\n")).unwrap();
    let url = format!("file://{}", leak.to_str().unwrap().replace(' ', "%20"));
    let out = trawl(dir.path(), &["scan", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let found = findings(&out);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["path"], leak.to_str().unwrap());
}

/// The filter flags apply to a bucket as to a folder, with keys seen below
/// the prefix; `--modified-since` in the future leaves nothing to scan,
/// which is a clean, complete scan.
#[test]
fn filters_apply_to_a_bucket_and_each_skip_is_counted() {
    let Some(endpoint) = endpoint() else { return };
    let leak = format!("token: {SECRET}\n");
    let big = leak.repeat(100);
    let bucket = bucket_with(
        &endpoint,
        "filters",
        &[
            ("site/app.js", leak.as_bytes()),
            ("site/big.js", big.as_bytes()),
            ("site/notes.md", leak.as_bytes()),
            ("site/node_modules/a/index.js", leak.as_bytes()),
            ("site/node_modules/b/index.js", leak.as_bytes()),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let url = format!("s3://{bucket}/site/");
    let out = trawl_s3(
        dir.path(),
        &endpoint,
        &[
            "scan",
            &url,
            "--include",
            "*.js",
            "--exclude",
            "/node_modules/",
            "--max-object-size",
            "1KiB",
            "--modified-since",
            "1d",
        ],
    );
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let found = findings(&out);
    assert_eq!(found.len(), 1, "{stderr}");
    assert_eq!(found[0]["path"], format!("s3://{bucket}/site/app.js"));
    for line in [
        "  skipped: 4\n",
        "    1 larger than the maximum object size (--max-object-size)\n",
        "    2 excluded by the glob '/node_modules/' (--exclude)\n",
        "    1 matched no include glob (--include)\n",
    ] {
        assert!(stderr.contains(line), "{line:?} in {stderr}");
    }

    let out = trawl_s3(
        dir.path(),
        &endpoint,
        &["scan", &url, "--modified-since", "2999-01-01"],
    );
    let stderr = common::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("    5 not modified since the cut-off (--modified-since)"),
        "{stderr}"
    );
}
