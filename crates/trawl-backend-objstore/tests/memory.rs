//! The `object_store` path (`gs://`, `az://`, `memory://`) against its
//! in-memory store: the conformance kit, string prefixes and paging, and
//! filters.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use trawl_backend::conformance;
use trawl_backend::{
    ErrorClass, ObjectFilter, ObjectFilterBuilder, PathGlob, RemoteBackend, SkipReason,
    SkippedObject,
};
use trawl_backend_objstore::{Error, ObjectStoreBackend, Options};

fn store_with(objects: &[(&str, &[u8])]) -> Arc<InMemory> {
    let store = Arc::new(InMemory::new());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (key, body) in objects {
            store
                .put(&Path::from(*key), PutPayload::from(body.to_vec()))
                .await
                .unwrap();
        }
    });
    store
}

fn backend(store: Arc<InMemory>, prefix: &str) -> ObjectStoreBackend {
    ObjectStoreBackend::from_store(store, "memory://", prefix, Options::default()).unwrap()
}

#[test]
fn passes_the_conformance_kit() {
    let large: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    let objects: Vec<(&str, &[u8])> = vec![
        ("a.txt", b"alpha"),
        ("dir/b.txt", b"beta"),
        ("dir/sub/c.txt", b"gamma"),
        ("empty", b""),
        ("large.bin", &large),
    ];
    // Many objects, so that every page size of the kit pages.
    let many: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("many/{i:03}"), format!("object {i}").into_bytes()))
        .collect();
    let mut all = objects.clone();
    all.extend(many.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    let store = store_with(&all);
    let displays: Vec<String> = all.iter().map(|(k, _)| format!("memory://{k}")).collect();
    let expected: Vec<(&[u8], &[u8])> = displays
        .iter()
        .zip(&all)
        .map(|(d, (_, body))| (d.as_bytes(), *body))
        .collect();
    let skipped = conformance::check_all(&backend(store, ""), &expected);
    assert!(skipped.is_empty());
}

#[test]
fn a_prefix_is_a_string_prefix_of_the_keys() {
    let store = store_with(&[
        ("logs/a", b"a"),
        ("logs/b", b"b"),
        ("logs-old/c", b"c"),
        ("other", b"d"),
    ]);
    let names =
        |keys: &[&str]| -> Vec<String> { keys.iter().map(|k| format!("memory://{k}")).collect() };
    for (prefix, keys) in [
        ("logs/", names(&["logs/a", "logs/b"])),
        ("logs", names(&["logs/a", "logs/b", "logs-old/c"])),
        ("logs/b", names(&["logs/b"])),
        ("nothing", names(&[])),
    ] {
        let expected: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        conformance::check_listing(&backend(Arc::clone(&store), prefix), &expected);
    }
}

#[test]
fn an_object_that_changes_after_listing_fails_as_changed() {
    let store = store_with(&[("moving", b"version one")]);
    let backend = backend(Arc::clone(&store), "");
    let page = backend.list_page(&mut Default::default(), 10).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        store
            .put(&Path::from("moving"), PutPayload::from(&b"version two"[..]))
            .await
            .unwrap();
    });
    let err = backend.fetch_range(&page[0], 0, &mut [0; 4]).unwrap_err();
    assert!(matches!(err, Error::Changed { .. }), "{err}");
    assert_eq!(backend.classify_error(&err), ErrorClass::Permanent);
}

#[test]
fn a_memory_url_is_an_empty_store() {
    let backend = ObjectStoreBackend::from_url("memory://", Options::default()).unwrap();
    conformance::check_listing(&backend, &[]);
}

/// A worker process has a runtime already: the backend runs on it, refuses
/// (instead of panicking) to block inside it, and drops quietly there.
#[test]
fn runs_on_the_callers_runtime_and_never_panics_inside_it() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = store_with(&[("k", b"v")]);
    let options = Options {
        runtime: Some(runtime.handle().clone()),
        ..Options::default()
    };
    let backend = ObjectStoreBackend::from_store(store, "memory://", "", options).unwrap();
    conformance::check_all(&backend, &[(b"memory://k", b"v")]);
    runtime.block_on(async {
        let err = backend.list_page(&mut Default::default(), 1).unwrap_err();
        assert!(matches!(err, Error::InsideRuntime), "{err}");
        let owned = ObjectStoreBackend::from_url("memory://", Options::default()).unwrap();
        drop(owned);
        drop(backend);
    });
}

fn filter(include: &[&str], exclude: &[&str]) -> ObjectFilterBuilder {
    let mut filter = ObjectFilter::builder();
    for glob in include {
        filter = filter.include(PathGlob::new(glob).unwrap());
    }
    for glob in exclude {
        filter = filter.exclude(PathGlob::new(glob).unwrap());
    }
    filter
}

fn filtered(store: Arc<InMemory>, prefix: &str, filter: ObjectFilterBuilder) -> ObjectStoreBackend {
    let options = Options {
        filter: filter.build().unwrap(),
        ..Options::default()
    };
    ObjectStoreBackend::from_store(store, "memory://", prefix, options).unwrap()
}

/// The skipped entries as (display, reason), sorted.
fn reasons(skipped: Vec<SkippedObject>) -> Vec<(String, SkipReason)> {
    let mut v: Vec<_> = skipped
        .into_iter()
        .map(|s| (String::from_utf8(s.display).unwrap(), s.reason))
        .collect();
    v.sort();
    v
}

#[test]
fn filters_see_keys_below_the_prefix_folder_and_count_each_skip() {
    // Many excluded keys sort first: pages of skipped objects only must
    // not end the listing.
    let mut objects: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("logs/a/node_modules/{i:02}.js"), b"dep".to_vec()))
        .collect();
    for (key, body) in [
        ("logs/app/main.js", &b"app"[..]),
        ("logs/app/big.js", &[7; 100][..]),
        ("logs/app/notes.md", b"notes"),
        ("logs/top.js", b"top"),
        ("other/x.js", b"outside the prefix"),
    ] {
        objects.push((key.into(), body.to_vec()));
    }
    let borrowed: Vec<(&str, &[u8])> = objects
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let store = store_with(&borrowed);
    // Globs see keys below the folder of the prefix, `logs/`, whether the
    // prefix is the folder or a string inside it (`logs/a` lists
    // `logs/a/…` and `logs/app/…`, not `logs/top.js`).
    for prefix in ["logs/", "logs/a"] {
        let globs = filter(&["*.js"], &["node_modules/", "/top.js", "/a/"]).max_size(10);
        let backend = filtered(Arc::clone(&store), prefix, globs);
        let (listed, skipped) = conformance::list_all(&backend, 3);
        let listed: Vec<&[u8]> = listed.iter().map(|o| o.display.as_slice()).collect();
        assert_eq!(listed, [&b"memory://logs/app/main.js"[..]], "{prefix}");
        let excluded = |glob: &str| SkipReason::Excluded { glob: glob.into() };
        let mut want: Vec<(String, SkipReason)> = (0..20)
            .map(|i| {
                (
                    format!("memory://logs/a/node_modules/{i:02}.js"),
                    excluded("node_modules/"),
                )
            })
            .collect();
        want.extend([
            ("memory://logs/app/big.js".into(), SkipReason::TooLarge),
            ("memory://logs/app/notes.md".into(), SkipReason::NotIncluded),
        ]);
        if prefix == "logs/" {
            want.push(("memory://logs/top.js".into(), excluded("/top.js")));
        }
        want.sort();
        assert_eq!(reasons(skipped), want, "{prefix}");
    }
}

#[test]
fn modified_since_uses_the_listing_time() {
    let store = store_with(&[("a", b"a"), ("b", b"b")]);
    let hour = Duration::from_secs(3600);
    let past = filter(&[], &[]).modified_since(SystemTime::now() - hour);
    let backend = filtered(Arc::clone(&store), "", past);
    let skipped = conformance::check_listing(&backend, &[b"memory://a", b"memory://b"]);
    assert!(skipped.is_empty(), "{skipped:?}");
    let future = filter(&[], &[]).modified_since(SystemTime::now() + hour);
    let backend = filtered(store, "", future);
    let skipped = conformance::check_listing(&backend, &[]);
    assert_eq!(
        reasons(skipped),
        [
            ("memory://a".into(), SkipReason::NotModifiedSince),
            ("memory://b".into(), SkipReason::NotModifiedSince)
        ]
    );
}
