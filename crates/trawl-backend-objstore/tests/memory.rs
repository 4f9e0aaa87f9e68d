//! The `object_store` path (`gs://`, `az://`, `memory://`) against its
//! in-memory store: the conformance kit, string prefixes and paging.

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use trawl_backend::conformance;
use trawl_backend::{ErrorClass, RemoteBackend};
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
