//! Single `http(s)://` objects, served by the real S3-compatible server as
//! public objects.

mod support;

use std::time::{Duration, SystemTime};

use support::fault_proxy::{FaultProxy, FaultRule, Target};
use trawl_backend::conformance;
use trawl_backend::{ErrorClass, ObjectFilter, PathGlob, RemoteBackend, SkipReason};
use trawl_backend_objstore::{ObjectStoreBackend, Options};

use support::s3::{endpoint, new_bucket, options};

#[test]
fn public_objects_are_read_by_url_and_a_missing_one_is_counted() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = new_bucket(&endpoint, "urls");
    let admin =
        ObjectStoreBackend::from_url(&format!("s3://{bucket}"), options(&endpoint)).unwrap();
    let large: Vec<u8> = (0..2u32 << 20).map(|i| (i % 241) as u8).collect();
    let public = [("x-amz-acl", "public-read")];
    admin
        .put_object_with(b"small.txt", b"hello, world".to_vec(), &public)
        .unwrap();
    admin
        .put_object_with(b"large.bin", large.clone(), &public)
        .unwrap();
    let url = |key: &str| format!("{endpoint}/{bucket}/{key}");
    let urls = vec![url("small.txt"), url("large.bin"), url("missing.txt")];
    let backend = ObjectStoreBackend::from_urls(urls.clone(), Options::default()).unwrap();
    let expected: Vec<(&[u8], &[u8])> = vec![
        (urls[0].as_bytes(), b"hello, world"),
        (urls[1].as_bytes(), &large),
    ];
    let skipped = conformance::check_all(&backend, &expected);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].display, urls[2].as_bytes());
    let SkipReason::Unreadable(reason) = &skipped[0].reason else {
        panic!("{skipped:?}");
    };
    assert!(reason.contains("404"), "{reason}");
}

#[test]
fn only_http_urls_make_a_url_list() {
    let err = ObjectStoreBackend::from_urls(
        vec!["https://example.com/a".into(), "s3://bucket/key".into()],
        Options::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("s3://bucket/key"), "{err}");
    let backend = ObjectStoreBackend::from_urls(Vec::new(), Options::default()).unwrap();
    assert!(
        backend
            .list_page(&mut Default::default(), 5)
            .unwrap()
            .is_empty()
    );
}

/// A server that refuses `HEAD` is asked for the first byte instead; a
/// transient failure of a `HEAD` is the listing's to retry, not a lost
/// object.
#[test]
fn a_refused_head_falls_back_and_a_failed_one_is_retried() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = new_bucket(&endpoint, "head");
    let admin =
        ObjectStoreBackend::from_url(&format!("s3://{bucket}"), options(&endpoint)).unwrap();
    admin
        .put_object_with(
            b"k.txt",
            b"0123456789".to_vec(),
            &[("x-amz-acl", "public-read")],
        )
        .unwrap();
    let upstream = endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = FaultProxy::start(upstream).unwrap();
    let url = format!("{}/{bucket}/k.txt", proxy.url());
    let backend = ObjectStoreBackend::from_urls(vec![url.clone()], Options::default()).unwrap();

    proxy.push(FaultRule::status(Target::Any, 503, 1));
    let mut cursor = Default::default();
    let err = backend.list_page(&mut cursor, 10).unwrap_err();
    assert_eq!(backend.classify_error(&err), ErrorClass::Retryable, "{err}");

    proxy.push(FaultRule::status(Target::Any, 405, 1));
    let page = backend.list_page(&mut cursor, 10).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].size, 10);
    assert!(backend.take_skipped(&mut cursor).is_empty());
    let mut dst = [0; 4];
    assert_eq!(backend.fetch_range(&page[0], 6, &mut dst).unwrap(), 4);
    assert_eq!(&dst, b"6789");
    assert!(backend.list_page(&mut cursor, 10).unwrap().is_empty());
}

/// Globs see a URL's path and are applied before any request (an excluded
/// URL that does not exist is excluded, not unreadable); the size and the
/// time come from the `HEAD`.
#[test]
fn filters_apply_to_urls_before_and_after_their_head() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = new_bucket(&endpoint, "urlfilter");
    let admin =
        ObjectStoreBackend::from_url(&format!("s3://{bucket}"), options(&endpoint)).unwrap();
    let public = [("x-amz-acl", "public-read")];
    for (key, body) in [
        (&b"app.js"[..], &b"app"[..]),
        (b"big.js", &[7; 100]),
        (b"notes.md", b"notes"),
    ] {
        admin.put_object_with(key, body.to_vec(), &public).unwrap();
    }
    let url = |key: &str| format!("{endpoint}/{bucket}/{key}");
    let urls = vec![
        url("app.js"),
        url("big.js"),
        url("notes.md"),
        url("private/missing.js"),
    ];
    let glob = |text: &str| PathGlob::new(text).unwrap();
    let with = |filter: ObjectFilter| {
        let options = Options {
            filter,
            ..Options::default()
        };
        ObjectStoreBackend::from_urls(urls.clone(), options).unwrap()
    };
    let filter = ObjectFilter::builder()
        .include(glob("*.js"))
        .exclude(glob("private/"))
        .max_size(10)
        .build()
        .unwrap();
    let mut skipped = conformance::check_listing(&with(filter), &[urls[0].as_bytes()]);
    skipped.sort_by(|a, b| a.display.cmp(&b.display));
    let reasons: Vec<(&[u8], &SkipReason)> = skipped
        .iter()
        .map(|s| (s.display.as_slice(), &s.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (urls[1].as_bytes(), &SkipReason::TooLarge),
            (urls[2].as_bytes(), &SkipReason::NotIncluded),
            (
                urls[3].as_bytes(),
                &SkipReason::Excluded {
                    glob: "private/".into()
                }
            ),
        ]
    );

    // `Last-Modified` of the `HEAD`: a cut-off in the future skips all
    // that exist; the missing one is still unreadable.
    let future = ObjectFilter::builder()
        .modified_since(SystemTime::now() + Duration::from_secs(3600))
        .build()
        .unwrap();
    let skipped = conformance::check_listing(&with(future), &[]);
    let old = skipped
        .iter()
        .filter(|s| s.reason == SkipReason::NotModifiedSince)
        .count();
    assert_eq!((old, skipped.len()), (3, 4), "{skipped:?}");
}
