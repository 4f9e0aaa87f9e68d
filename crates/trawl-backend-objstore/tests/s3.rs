//! The S3 backend against a real S3-compatible server (moto).

mod support;

use std::time::{Duration, SystemTime};

use trawl_backend::conformance;
use trawl_backend::{ErrorClass, ObjectFilter, PathGlob, RemoteBackend, SkipReason, SkippedObject};
use trawl_backend_objstore::{Error, ObjectStoreBackend};

use support::s3::{endpoint, new_bucket, options, put_all};

fn backend(endpoint: &str, url: &str) -> ObjectStoreBackend {
    ObjectStoreBackend::from_url(url, options(endpoint)).expect("configure the backend")
}

fn shown(bucket: &str, key: &[u8]) -> Vec<u8> {
    let mut display = format!("s3://{bucket}/").into_bytes();
    display.extend_from_slice(key);
    display
}

/// Contents that make ranged reads and chunk edges interesting: 1 MiB and a bit of a
/// pattern that differs at every offset.
fn large_object() -> Vec<u8> {
    (0..(1u32 << 20) + 7).map(|i| (i % 251) as u8).collect()
}

#[test]
fn passes_the_conformance_kit_with_keys_object_store_rejects() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = new_bucket(&endpoint, "conformance");
    let large = large_object();
    let objects: Vec<(&[u8], &[u8])> = vec![
        (
            b"plain.txt",
            b"token = ghp_R7fKq2LmX9vBn4WcT8yHs1JdP6aZe3UoQi5G\n",
        ),
        (b"dir/nested/file.env", b"A=1\nB=2\n"),
        (b"a//double-slash", b"double"),
        (b"./dot-segment", b"dot"),
        (b"up/../dot-dot", b"dotdot"),
        (b"control\x01char", b"control"),
        (b"space and+plus%percent", b"specials"),
        ("ünïcödé/ключ".as_bytes(), b"unicode"),
        (b"empty", b""),
        (b"large.bin", &large),
    ];
    put_all(&endpoint, &bucket, &objects);
    let backend = backend(&endpoint, &format!("s3://{bucket}"));
    let displays: Vec<Vec<u8>> = objects.iter().map(|(k, _)| shown(&bucket, k)).collect();
    let expected: Vec<(&[u8], &[u8])> = displays
        .iter()
        .zip(&objects)
        .map(|(d, (_, body))| (d.as_slice(), *body))
        .collect();
    let skipped = conformance::check_all(&backend, &expected);
    assert!(skipped.is_empty(), "{skipped:?}");
}

#[test]
fn a_prefix_is_a_string_prefix_of_the_keys() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = new_bucket(&endpoint, "prefix");
    put_all(
        &endpoint,
        &bucket,
        &[
            (b"logs/a.txt", b"a"),
            (b"logs/b.txt", b"b"),
            (b"logs-old/c.txt", b"c"),
            (b"other.txt", b"d"),
        ],
    );
    let folder = shown(&bucket, b"logs/a.txt");
    let folder_b = shown(&bucket, b"logs/b.txt");
    let old = shown(&bucket, b"logs-old/c.txt");
    let in_folder = backend(&endpoint, &format!("s3://{bucket}/logs/"));
    conformance::check_listing(&in_folder, &[&folder, &folder_b]);
    let by_string = backend(&endpoint, &format!("s3://{bucket}/logs"));
    conformance::check_listing(&by_string, &[&folder, &folder_b, &old]);
    let one = backend(&endpoint, &format!("s3://{bucket}/logs/b.txt"));
    conformance::check_listing(&one, &[&folder_b]);
}

#[test]
fn archived_objects_are_skipped_with_their_reason() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = new_bucket(&endpoint, "archive");
    let admin = backend(&endpoint, &format!("s3://{bucket}"));
    // A page of archived objects only, then a readable one: the listing
    // must go past the archived page.
    for i in 0..3 {
        let key = format!("a-cold-{i}");
        admin
            .put_object(key.as_bytes(), b"frozen".to_vec(), Some("GLACIER"))
            .unwrap();
    }
    admin
        .put_object(b"b-deep", b"frozen".to_vec(), Some("DEEP_ARCHIVE"))
        .unwrap();
    admin
        .put_object(b"c-instant", b"readable".to_vec(), Some("GLACIER_IR"))
        .unwrap();
    admin
        .put_object(b"d-warm", b"readable".to_vec(), None)
        .unwrap();
    let expected_live = [shown(&bucket, b"c-instant"), shown(&bucket, b"d-warm")];
    let live: Vec<&[u8]> = expected_live.iter().map(Vec::as_slice).collect();
    let skipped = conformance::check_listing(&admin, &live);
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    assert!(skipped.iter().all(|s| s.reason == SkipReason::Archived));
}

#[test]
fn an_object_that_changes_after_listing_fails_as_changed() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = new_bucket(&endpoint, "changed");
    put_all(
        &endpoint,
        &bucket,
        &[(b"moving", b"version one, long enough")],
    );
    let backend = backend(&endpoint, &format!("s3://{bucket}"));
    let mut cursor = Default::default();
    let page = backend.list_page(&mut cursor, 10).unwrap();
    assert_eq!(page.len(), 1);
    put_all(
        &endpoint,
        &bucket,
        &[(b"moving", b"version two, also long enough")],
    );
    let mut dst = vec![0; 8];
    let err = backend.fetch_range(&page[0], 0, &mut dst).unwrap_err();
    assert!(matches!(err, Error::Changed { .. }), "{err}");
    assert!(err.to_string().contains("changed during scan"), "{err}");
    assert_eq!(backend.classify_error(&err), ErrorClass::Permanent);
}

#[test]
fn a_missing_bucket_is_one_permanent_error_naming_it() {
    let Some(endpoint) = endpoint() else { return };
    let backend = backend(&endpoint, "s3://trawl-no-such-bucket/x/");
    let err = backend.list_page(&mut Default::default(), 10).unwrap_err();
    assert_eq!(backend.classify_error(&err), ErrorClass::Permanent);
    let message = err.to_string();
    assert!(message.contains("trawl-no-such-bucket"), "{message}");
    assert!(message.contains("404"), "{message}");
}

/// Unsigned requests (public buckets): moto lists a bucket for anyone.
#[test]
fn anonymous_requests_list_a_public_bucket() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = new_bucket(&endpoint, "anonymous");
    put_all(&endpoint, &bucket, &[(b"public.txt", b"hello")]);
    let mut anonymous = options(&endpoint);
    anonymous.anonymous = true;
    anonymous.config.clear();
    let backend = ObjectStoreBackend::from_url(&format!("s3://{bucket}"), anonymous).unwrap();
    let display = shown(&bucket, b"public.txt");
    conformance::check_listing(&backend, &[&display]);
}

/// Include and exclude globs, the size and `LastModified` of the
/// listing, each skip reported with its reason; keys are seen below the
/// prefix's folder.
#[test]
fn filters_apply_to_the_listing_with_its_size_and_time() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = new_bucket(&endpoint, "filters");
    put_all(
        &endpoint,
        &bucket,
        &[
            (b"data/app/main.js", b"app"),
            (b"data/app/big.js", &[7; 100]),
            (b"data/app/notes.md", b"notes"),
            (b"data/node_modules/x/index.js", b"dep"),
            (b"data/vendor/lib.js", b"vendored"),
            (b"other/vendor/lib.js", b"outside the prefix"),
        ],
    );
    let url = format!("s3://{bucket}/data/");
    let glob = |text: &str| PathGlob::new(text).unwrap();
    let with = |filter: ObjectFilter| {
        let mut options = options(&endpoint);
        options.filter = filter;
        ObjectStoreBackend::from_url(&url, options).unwrap()
    };
    let reasons = |skipped: Vec<SkippedObject>| {
        let mut v: Vec<(Vec<u8>, SkipReason)> =
            skipped.into_iter().map(|s| (s.display, s.reason)).collect();
        v.sort();
        v
    };
    let excluded = |glob: &str| SkipReason::Excluded { glob: glob.into() };

    let globs = ObjectFilter::builder()
        .include(glob("*.js"))
        .exclude(glob("node_modules/"))
        .exclude(glob("/vendor/**"))
        .max_size(10)
        .modified_since(SystemTime::now() - Duration::from_secs(3600))
        .build()
        .unwrap();
    let main = shown(&bucket, b"data/app/main.js");
    let skipped = conformance::check_listing(&with(globs), &[&main]);
    assert_eq!(
        reasons(skipped),
        [
            (shown(&bucket, b"data/app/big.js"), SkipReason::TooLarge),
            (
                shown(&bucket, b"data/app/notes.md"),
                SkipReason::NotIncluded
            ),
            (
                shown(&bucket, b"data/node_modules/x/index.js"),
                excluded("node_modules/")
            ),
            (
                shown(&bucket, b"data/vendor/lib.js"),
                excluded("/vendor/**")
            ),
        ]
    );

    // A cut-off in the future: every object is older.
    let future = ObjectFilter::builder()
        .modified_since(SystemTime::now() + Duration::from_secs(3600))
        .build()
        .unwrap();
    let skipped = conformance::check_listing(&with(future), &[]);
    assert_eq!(skipped.len(), 5, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .all(|s| s.reason == SkipReason::NotModifiedSince)
    );
}
