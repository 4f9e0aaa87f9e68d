//! The real S3-compatible server of the tests (moto, started by
//! `cargo xtask test`): fresh buckets on it, and `trawl` run against it with
//! test credentials and nothing else from the environment's `AWS_*`.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use trawl_backend_objstore::{ObjectStoreBackend, Options};

/// The variable `cargo xtask test` sets to the server's URL.
const ENDPOINT_VAR: &str = "TRAWL_TEST_S3_ENDPOINT";

/// The test credentials: the server accepts any, but requests are signed as
/// against AWS.
const ACCESS_KEY_ID: &str = "AKIDTRAWLTESTS";
const SECRET_ACCESS_KEY: &str = "trawl-test-secret";

/// The server's URL; `None` (with a notice) under plain `cargo test`
/// without it. Under CI a missing server fails the test: it must run.
pub(crate) fn endpoint() -> Option<String> {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{ENDPOINT_VAR} is not set: under CI the S3 tests must run; use `cargo xtask test`, which starts the server"
        ),
        _ => {
            eprintln!(
                "notice: {ENDPOINT_VAR} is not set, skipping this S3 test (`cargo xtask test` starts the server)"
            );
            None
        }
    }
}

/// A client of `bucket` for setting up a test (creating it, putting objects).
fn admin(endpoint: &str, bucket: &str) -> ObjectStoreBackend {
    let options = Options {
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        config: vec![
            ("aws_access_key_id".into(), ACCESS_KEY_ID.into()),
            ("aws_secret_access_key".into(), SECRET_ACCESS_KEY.into()),
        ],
        ..Options::default()
    };
    ObjectStoreBackend::from_url(&format!("s3://{bucket}"), options)
        .expect("configure the admin client")
}

/// A name for a bucket that nobody has created, unique in this run.
pub(crate) fn unique_bucket_name(hint: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "trawl-cli-{hint}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A new bucket holding `objects` (key, contents).
pub(crate) fn bucket_with(endpoint: &str, hint: &str, objects: &[(&str, &[u8])]) -> String {
    let bucket = unique_bucket_name(hint);
    fill_bucket(endpoint, &bucket, objects);
    bucket
}

/// Creates `bucket` (or takes it as it is, if it exists) and puts
/// `objects` (key, contents) in it.
pub(crate) fn fill_bucket(endpoint: &str, bucket: &str, objects: &[(&str, &[u8])]) {
    let admin = admin(endpoint, bucket);
    admin.create_bucket().expect("create the bucket");
    for (key, body) in objects {
        admin
            .put_object(key.as_bytes(), body.to_vec(), None)
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
}

/// Runs `trawl ARGS --endpoint ENDPOINT --region us-east-1` in `dir`, with
/// the test credentials as the only `AWS_*` variables and no `RUST_LOG`.
pub(crate) fn trawl_s3(dir: &Path, endpoint: &str, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--endpoint", endpoint, "--region", "us-east-1"]);
    trawl_with_credentials(dir, &all)
}

/// Runs `trawl ARGS` in `dir`, with the test credentials as the only
/// `AWS_*` variables (no profile, region or endpoint of the machine leaks
/// in) and no `RUST_LOG`.
pub(crate) fn trawl_with_credentials(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trawl"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .output()
        .expect("run trawl")
}
