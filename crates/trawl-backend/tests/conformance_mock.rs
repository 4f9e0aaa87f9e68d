//! Runs the conformance kit against the testkit backends: `MockBackend`
//! passes, and the contract violations of the fault-injecting backends are
//! caught.

use std::panic::{AssertUnwindSafe, catch_unwind};

use trawl_backend::conformance::{check_all, check_listing, check_reads};
use trawl_backend::testkit::{MockBackend, PartialReadBackend};
use trawl_backend::{RemoteBackend, RemoteObject, SkipReason};

/// A store with an empty object, a non-UTF-8 name, NUL bytes, and objects
/// around the read-size boundaries.
fn store() -> Vec<(Vec<u8>, Vec<u8>)> {
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    vec![
        (b"empty".to_vec(), Vec::new()),
        (b"one".to_vec(), b"x".to_vec()),
        (b"dir/hello.txt".to_vec(), b"hello, world\n".to_vec()),
        (b"caf\xe9".to_vec(), b"not utf-8 name".to_vec()),
        (b"nul".to_vec(), b"a\0b\0\0c".to_vec()),
        (b"page".to_vec(), vec![7u8; 4096]),
        (b"big".to_vec(), big),
    ]
}

fn borrowed(store: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    store
        .iter()
        .map(|(d, c)| (d.as_slice(), c.as_slice()))
        .collect()
}

/// Runs `f`, returning its panic message if it panicked.
fn panic_message(f: impl FnOnce()) -> Option<String> {
    let err = catch_unwind(AssertUnwindSafe(f)).err()?;
    Some(
        err.downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    )
}

#[test]
fn mock_backend_conforms() {
    let store = store();
    let backend = MockBackend::new(store.clone()).with_skipped("skipped", SkipReason::Hidden);
    let skipped = check_all(&backend, &borrowed(&store));
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].reason, SkipReason::Hidden);
}

#[test]
fn mock_backend_with_small_server_pages_conforms() {
    let store = store();
    let backend = MockBackend::new(store.clone()).with_page_limit(3);
    check_all(&backend, &borrowed(&store));
}

#[test]
fn empty_store_conforms() {
    let backend = MockBackend::default();
    assert!(check_all(&backend, &[]).is_empty());
}

#[test]
fn partial_reads_fail_check_reads() {
    let store = store();
    let backend = PartialReadBackend::new(store.clone());
    // The listing is fine: only the reads break the contract.
    let names: Vec<&[u8]> = store.iter().map(|(d, _)| d.as_slice()).collect();
    check_listing(&backend, &names);
    let msg = panic_message(|| check_reads(&backend, &borrowed(&store)))
        .expect("check_reads must reject short reads");
    assert!(
        msg.contains("the contract requires"),
        "unexpected message: {msg}"
    );
}

#[test]
fn missing_object_fails_check_listing() {
    let backend = MockBackend::new(vec![("a", "1")]);
    let msg = panic_message(|| {
        check_listing(&backend, &[b"a".as_slice(), b"b".as_slice()]);
    })
    .expect("check_listing must notice a missing object");
    assert!(
        msg.contains("missing") && msg.contains("\"b\""),
        "unexpected message: {msg}"
    );
}

/// A backend listing its one object on every page, forever.
struct Repeating(MockBackend);

impl RemoteBackend for Repeating {
    type Object = <MockBackend as RemoteBackend>::Object;
    type Cursor = <MockBackend as RemoteBackend>::Cursor;
    type Error = <MockBackend as RemoteBackend>::Error;

    fn list_page(
        &self,
        _cursor: &mut Self::Cursor,
        max: usize,
    ) -> Result<Vec<RemoteObject<Self::Object>>, Self::Error> {
        self.0.list_page(&mut Self::Cursor::default(), max)
    }

    fn fetch_range(
        &self,
        obj: &RemoteObject<Self::Object>,
        start: u64,
        dst: &mut [u8],
    ) -> Result<usize, Self::Error> {
        self.0.fetch_range(obj, start, dst)
    }

    fn classify_error(&self, err: &Self::Error) -> trawl_backend::ErrorClass {
        self.0.classify_error(err)
    }
}

#[test]
fn duplicates_fail_check_listing() {
    let backend = Repeating(MockBackend::new(vec![("a", "1")]));
    let msg = panic_message(|| {
        check_listing(&backend, &[b"a".as_slice()]);
    })
    .expect("check_listing must notice a duplicate");
    assert!(msg.contains("listed twice"), "unexpected message: {msg}");
}
