//! The real S3-compatible server of the tests (moto, started by
//! `cargo xtask test`), and fresh buckets on it.

use std::sync::atomic::{AtomicU32, Ordering};

use trawl_backend_objstore::{ObjectStoreBackend, Options};

/// The variable `cargo xtask test` sets to the server's URL.
const ENDPOINT_VAR: &str = "TRAWL_TEST_S3_ENDPOINT";

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

/// Options for the local server: its endpoint (through a proxy if given)
/// and test credentials, so requests are signed as against AWS.
pub(crate) fn options(endpoint: &str) -> Options {
    Options {
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        config: vec![
            ("aws_access_key_id".into(), "AKIDTRAWLTESTS".into()),
            ("aws_secret_access_key".into(), "trawl-test-secret".into()),
        ],
        ..Options::default()
    }
}

/// A new, empty bucket named after `hint`, unique in this run.
pub(crate) fn new_bucket(endpoint: &str, hint: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let bucket = format!(
        "trawl-{hint}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let admin = ObjectStoreBackend::from_url(&format!("s3://{bucket}"), options(endpoint))
        .expect("configure the admin client");
    admin.create_bucket().expect("create the bucket");
    bucket
}

/// Puts `objects` (key, contents) into `bucket`.
pub(crate) fn put_all(endpoint: &str, bucket: &str, objects: &[(&[u8], &[u8])]) {
    let admin = ObjectStoreBackend::from_url(&format!("s3://{bucket}"), options(endpoint))
        .expect("configure the admin client");
    for (key, body) in objects {
        admin
            .put_object(key, body.to_vec(), None)
            .unwrap_or_else(|e| panic!("put {}: {e}", String::from_utf8_lossy(key)));
    }
}
