//! Functions that check a backend against the [`RemoteBackend`] contract.
//!
//! A backend crate fills a store (a temporary folder, a bucket of a local
//! S3-compatible server…) with known objects and calls [`check_all`] from one
//! test of its own. Each function panics, with a message naming the object,
//! the offsets and the page size, at the first violation: they are test
//! helpers, not validators.
//!
//! ```
//! # #[cfg(feature = "testkit")] {
//! use trawl_backend::conformance::check_all;
//! use trawl_backend::testkit::MockBackend;
//!
//! let objects: &[(&[u8], &[u8])] = &[(b"a", b"hello"), (b"b", b"")];
//! let backend = MockBackend::new(objects.to_vec());
//! check_all(&backend, objects);
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::{RemoteBackend, RemoteObject, SkippedObject};

/// The page sizes every listing check uses: the smallest, two small odd
/// ones, and one larger than any test store.
const PAGE_SIZES: [usize; 4] = [1, 2, 7, 100_000];

/// Each listed object's size, by display name.
type Sizes = BTreeMap<Vec<u8>, u64>;

/// Shows a display name to people, lossily if it is not UTF-8.
fn show(display: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(display))
}

/// Lists the whole store with pages of at most `max` objects, checking the
/// paging rules, and returns the objects and the skipped entries.
///
/// # Panics
///
/// On a listing error, an oversized page, an object listed twice, or a
/// listing that never ends.
pub fn list_all<B: RemoteBackend>(
    backend: &B,
    max: usize,
) -> (Vec<RemoteObject<B::Object>>, Vec<SkippedObject>) {
    assert!(max > 0, "list_all: max must be at least 1");
    let mut cursor = B::Cursor::default();
    let mut objects: Vec<RemoteObject<B::Object>> = Vec::new();
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut skipped = Vec::new();
    let mut pages = 0usize;
    loop {
        let page = backend
            .list_page(&mut cursor, max)
            .unwrap_or_else(|err| panic!("list_page (max {max}, page {pages}) failed: {err}"));
        skipped.extend(backend.take_skipped(&mut cursor));
        if page.is_empty() {
            return (objects, skipped);
        }
        assert!(
            page.len() <= max,
            "list_page returned {} objects on page {pages} though max was {max}",
            page.len()
        );
        for obj in page {
            if let Some(first) = seen.insert(obj.display.clone(), pages) {
                panic!(
                    "object {} listed twice (pages {first} and {pages}, page size {max})",
                    show(&obj.display)
                );
            }
            objects.push(obj);
        }
        pages += 1;
        // Every page but the last is non-empty and nothing repeats, so a
        // listing of n objects has at most n + 1 pages: a bound this loose
        // only catches a backend that never ends.
        assert!(
            pages <= 1_000_000,
            "list_page (max {max}) is still returning objects after {pages} pages"
        );
    }
}

/// Checks that listing returns exactly the objects named in `expected`
/// (display names), for page sizes 1, 2, 7 and 100 000, and returns the
/// entries reported by `take_skipped` during the first listing (sorted).
///
/// Checked for each page size: the listing ends (with an empty page) only
/// after every expected object; no object is listed twice; no page is larger
/// than asked; no unexpected object appears; a skipped entry is never also
/// listed; and every listing gives each object the same size and reports the
/// same skipped entries as the first.
///
/// # Panics
///
/// At the first violation, naming the object and the page size.
pub fn check_listing<B: RemoteBackend>(backend: &B, expected: &[&[u8]]) -> Vec<SkippedObject> {
    // The sizes and sorted skips of the first listing, which later ones must repeat.
    let mut first: Option<(Sizes, Vec<SkippedObject>)> = None;
    for max in PAGE_SIZES {
        let (objects, mut skipped) = list_all(backend, max);
        let sizes: Sizes = objects
            .iter()
            .map(|o| (o.display.clone(), o.size))
            .collect();

        let missing: Vec<String> = expected
            .iter()
            .filter(|d| !sizes.contains_key(**d))
            .map(|d| show(d))
            .collect();
        let unexpected: Vec<String> = sizes
            .keys()
            .filter(|d| !expected.contains(&d.as_slice()))
            .map(|d| show(d))
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            let mut msg = format!("listing with page size {max} is wrong:");
            if !missing.is_empty() {
                let _ = write!(
                    msg,
                    " missing (did the listing end early?) {};",
                    missing.join(", ")
                );
            }
            if !unexpected.is_empty() {
                let _ = write!(msg, " unexpected {};", unexpected.join(", "));
            }
            panic!("{msg}");
        }
        for s in &skipped {
            assert!(
                !sizes.contains_key(&s.display),
                "{} is both listed and skipped ({}) with page size {max}",
                show(&s.display),
                s.reason
            );
        }
        skipped.sort_by(|a, b| (&a.display, &a.reason).cmp(&(&b.display, &b.reason)));

        match &first {
            None => first = Some((sizes, skipped)),
            Some((first_sizes, first_skipped)) => {
                for (display, size) in &sizes {
                    let before = first_sizes[display];
                    assert_eq!(
                        *size,
                        before,
                        "{} listed with size {size} at page size {max} but {before} at page size {}",
                        show(display),
                        PAGE_SIZES[0]
                    );
                }
                assert_eq!(
                    &skipped, first_skipped,
                    "take_skipped reported different entries with page size {max} than with page size {}",
                    PAGE_SIZES[0]
                );
            }
        }
    }
    first.map(|(_, skipped)| skipped).unwrap_or_default()
}

/// Reads `obj` at `start` into a buffer of `len` bytes and checks the result
/// against `contents`, the object's full contents.
fn check_one_read<B: RemoteBackend>(
    backend: &B,
    obj: &RemoteObject<B::Object>,
    contents: &[u8],
    start: u64,
    len: usize,
    dst: &mut Vec<u8>,
) {
    let size = contents.len() as u64;
    dst.clear();
    dst.resize(len, 0xA5);
    let n = backend.fetch_range(obj, start, dst).unwrap_or_else(|err| {
        panic!(
            "fetch_range of {} at {start} for {len} bytes (size {size}) failed ({:?}): {err}",
            show(&obj.display),
            backend.classify_error(&err)
        )
    });
    let want = if start >= size {
        0
    } else {
        (size - start).min(len as u64) as usize
    };
    assert_eq!(
        n,
        want,
        "fetch_range of {} at {start} for {len} bytes (size {size}) returned {n} bytes, the contract requires {want}",
        show(&obj.display)
    );
    if want > 0 {
        let begin = start as usize;
        if dst[..n] != contents[begin..begin + n] {
            let at = dst[..n]
                .iter()
                .zip(&contents[begin..])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "fetch_range of {} at {start} for {len} bytes returned wrong bytes: first difference at offset {} (got {:#04x}, expected {:#04x})",
                show(&obj.display),
                start + at as u64,
                dst[at],
                contents[begin + at]
            );
        }
    }
}

/// The interesting offsets of an object of `size` bytes.
fn offsets(size: u64) -> Vec<u64> {
    let mut v = vec![0, 1, 2, 7, size / 3, size / 2, 4095, 4096, 4097, 65_536];
    for back in [1, 2, 7, 4096] {
        v.push(size.saturating_sub(back));
    }
    v.extend([size, size + 1, size + 1000, u64::MAX / 2]);
    v.sort_unstable();
    v.dedup();
    v
}

/// The interesting buffer lengths for an object of `size` bytes.
fn lengths(size: u64) -> Vec<usize> {
    let size = usize::try_from(size).unwrap_or(usize::MAX / 2);
    let mut v = vec![0, 1, 2, 3, 7, 64, 4096, 4097, 65_537];
    v.extend([
        size / 2,
        size.saturating_sub(1),
        size,
        size + 1,
        size + 4096,
    ]);
    v.retain(|&l| l <= size + 4096 && l <= 16 << 20);
    v.sort_unstable();
    v.dedup();
    v
}

/// Checks that every object in `expected` (display name, full contents) is
/// listed with its size and reads back exactly.
///
/// Checked for each object: exact reads at many offsets and lengths (start,
/// middle, around 4 KiB boundaries, the last bytes); tail reads returning
/// `size - start`; reads at the end and past it returning 0; zero-length
/// buffers returning 0; the whole object read sequentially in chunks of 1,
/// 7, 4096 and 65 537 bytes (those taking at most 20 000 reads), with the
/// same object handle reused for every read.
///
/// # Panics
///
/// At the first violation, naming the object, the offset and the length.
pub fn check_reads<B: RemoteBackend>(backend: &B, expected: &[(&[u8], &[u8])]) {
    let (objects, _) = list_all(backend, PAGE_SIZES[PAGE_SIZES.len() - 1]);
    let by_name: HashMap<&[u8], &RemoteObject<B::Object>> =
        objects.iter().map(|o| (o.display.as_slice(), o)).collect();
    let mut dst = Vec::new();
    for (display, contents) in expected {
        let obj = by_name
            .get(display)
            .unwrap_or_else(|| panic!("object {} is not listed", show(display)));
        let size = contents.len() as u64;
        assert_eq!(
            obj.size,
            size,
            "object {} listed with size {} but holds {size} bytes",
            show(display),
            obj.size
        );

        for start in offsets(size) {
            for len in lengths(size) {
                // Keep large objects cheap: long buffers only at a few offsets.
                let few = [0, 1, size / 2, size.saturating_sub(1), size];
                if len > 1 << 20 && !few.contains(&start) {
                    continue;
                }
                check_one_read(backend, obj, contents, start, len, &mut dst);
            }
        }
        for chunk in [1usize, 7, 4096, 65_537] {
            // Sequential passes of more than 20 000 reads add nothing but time.
            if size / chunk as u64 > 20_000 {
                continue;
            }
            let mut start = 0u64;
            loop {
                check_one_read(backend, obj, contents, start, chunk, &mut dst);
                if start >= size {
                    break;
                }
                start += chunk as u64;
            }
        }
    }
}

/// Checks that several threads reading the same object handle at once all
/// get exact bytes (implementations are called from many I/O threads).
///
/// # Panics
///
/// At the first violation, naming the object and the range.
pub fn check_concurrent_reads<B: RemoteBackend>(backend: &B, expected: &[(&[u8], &[u8])]) {
    let (objects, _) = list_all(backend, PAGE_SIZES[PAGE_SIZES.len() - 1]);
    let by_name: HashMap<&[u8], &RemoteObject<B::Object>> =
        objects.iter().map(|o| (o.display.as_slice(), o)).collect();
    for (display, contents) in expected {
        let obj = *by_name
            .get(display)
            .unwrap_or_else(|| panic!("object {} is not listed", show(display)));
        std::thread::scope(|scope| {
            for thread in 0..4usize {
                scope.spawn(move || {
                    let mut dst = Vec::new();
                    let chunk = 1000 + thread * 333;
                    let mut start = (thread * 17) as u64;
                    loop {
                        check_one_read(backend, obj, contents, start, chunk, &mut dst);
                        if start >= contents.len() as u64 {
                            break;
                        }
                        start += chunk as u64;
                    }
                });
            }
        });
    }
}

/// Runs [`check_listing`], [`check_reads`] and [`check_concurrent_reads`]
/// on a store holding exactly `expected` (display name, full contents), and
/// returns the skipped entries of the first listing (sorted).
///
/// # Panics
///
/// At the first violation.
pub fn check_all<B: RemoteBackend>(backend: &B, expected: &[(&[u8], &[u8])]) -> Vec<SkippedObject> {
    let names: Vec<&[u8]> = expected.iter().map(|(d, _)| *d).collect();
    let skipped = check_listing(backend, &names);
    check_reads(backend, expected);
    check_concurrent_reads(backend, expected);
    skipped
}
