//! In-memory and fault-injecting backends for testing code that drives a
//! [`RemoteBackend`] (the scheduler above all).
//!
//! Every backend here serves objects held in memory and shares the same
//! handle ([`MockObject`]), cursor ([`MockCursor`]) and error ([`TestError`])
//! types, so a test can swap one fault for another without changing types:
//!
//! | backend | behaviour |
//! |---|---|
//! | [`MockBackend`] | follows the contract exactly; counts calls |
//! | [`RetryBackend`] | the first N fetches of each object fail (retryable or throttled), then succeed |
//! | [`PartialReadBackend`] | returns fewer bytes than the contract requires (a violation) |
//! | [`PermanentErrorBackend`] | every fetch fails with a permanent error |
//! | [`SlowBackend`] | wraps any backend, sleeping before each fetch (stop/drain tests) |
//! | [`FaultBackend`] | a closure decides, per fetch, whether it fails and how (faults that depend on order or timing) |
//!
//! A flaky listing (the first list calls fail retryably) is an option of
//! [`MockBackend`] ([`MockBackend::with_flaky_listing`]) and so of every
//! backend built from one.
//!
//! ```
//! use trawl_backend::RemoteBackend;
//! use trawl_backend::testkit::{MockBackend, MockCursor};
//!
//! let backend = MockBackend::new(vec![("a.txt", "hello"), ("b.txt", "world")]);
//! let mut cursor = MockCursor::default();
//! let page = backend.list_page(&mut cursor, 10).unwrap();
//! let mut buf = [0u8; 3];
//! assert_eq!(backend.fetch_range(&page[0], 2, &mut buf).unwrap(), 3);
//! assert_eq!(&buf, b"llo");
//! assert_eq!(backend.fetch_calls(), 1);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{ErrorClass, RemoteBackend, RemoteObject, SkipReason, SkippedObject};

/// The parts of `RemoteBackend` that every fault-injecting backend forwards
/// to its inner [`MockBackend`] unchanged: everything but `fetch_range`.
macro_rules! delegate_to_mock {
    () => {
        type Object = MockObject;
        type Cursor = MockCursor;
        type Error = TestError;

        fn list_page(
            &self,
            cursor: &mut MockCursor,
            max: usize,
        ) -> Result<Vec<RemoteObject<MockObject>>, TestError> {
            self.inner.list_page(cursor, max)
        }

        fn classify_error(&self, err: &TestError) -> ErrorClass {
            err.kind().class()
        }

        fn take_skipped(&self, cursor: &mut MockCursor) -> Vec<SkippedObject> {
            self.inner.take_skipped(cursor)
        }
    };
}

/// How a [`TestError`] is classified by the testkit backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestErrorKind {
    /// Transient: maps to [`ErrorClass::Retryable`].
    Retryable,
    /// A throttle: maps to [`ErrorClass::Throttled`] with the same hint.
    Throttled {
        /// The hint passed on as `retry_after`.
        retry_after: Option<Duration>,
    },
    /// Maps to [`ErrorClass::Permanent`].
    Permanent,
    /// Maps to [`ErrorClass::Archived`].
    Archived,
}

impl TestErrorKind {
    /// The [`ErrorClass`] every testkit backend gives an error of this kind.
    pub fn class(self) -> ErrorClass {
        match self {
            TestErrorKind::Retryable => ErrorClass::Retryable,
            TestErrorKind::Throttled { retry_after } => ErrorClass::Throttled { retry_after },
            TestErrorKind::Permanent => ErrorClass::Permanent,
            TestErrorKind::Archived => ErrorClass::Archived,
        }
    }
}

/// The one error type of the testkit backends: a kind that decides its
/// [`ErrorClass`], and a message naming the object and the injected fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TestError {
    kind: TestErrorKind,
    message: String,
}

impl TestError {
    /// An error of `kind` with `message`.
    pub fn new(kind: TestErrorKind, message: impl Into<String>) -> TestError {
        TestError {
            kind,
            message: message.into(),
        }
    }

    /// The kind, which decides the class.
    pub fn kind(&self) -> TestErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The handle of an object served by a testkit backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockObject {
    index: usize,
    contents: Arc<[u8]>,
}

impl MockObject {
    /// The position of the object in the backend's list, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The object's full contents.
    pub fn contents(&self) -> &[u8] {
        &self.contents
    }
}

/// The listing cursor of the testkit backends. `Default` starts a listing.
#[derive(Debug, Default)]
pub struct MockCursor {
    next: usize,
    started: bool,
    skipped_reported: bool,
}

struct MockEntry {
    display: Vec<u8>,
    contents: Arc<[u8]>,
}

/// An in-memory backend that follows the [`RemoteBackend`] contract exactly.
///
/// Objects are listed in the order given, `max` at a time (or fewer, see
/// [`with_page_limit`](Self::with_page_limit)); reads copy the exact range the
/// contract asks for. Entries given by [`with_skipped`](Self::with_skipped)
/// are reported by `take_skipped` once per listing, after its first page.
///
/// The backend counts its calls ([`fetch_calls`](Self::fetch_calls),
/// [`list_calls`](Self::list_calls)) and the most fetches ever in flight at
/// once ([`peak_concurrent_fetches`](Self::peak_concurrent_fetches)), which
/// tests use to check concurrency limits.
pub struct MockBackend {
    objects: Vec<MockEntry>,
    skipped: Vec<SkippedObject>,
    page_limit: Option<usize>,
    flaky_listing: usize,
    list_calls: AtomicUsize,
    fetch_calls: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

impl std::fmt::Debug for MockBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockBackend")
            .field("objects", &self.objects.len())
            .field("skipped", &self.skipped.len())
            .field("page_limit", &self.page_limit)
            .field("flaky_listing", &self.flaky_listing)
            .field("fetch_calls", &self.fetch_calls())
            .finish_non_exhaustive()
    }
}

impl Default for MockBackend {
    fn default() -> Self {
        MockBackend::new(Vec::<(Vec<u8>, Vec<u8>)>::new())
    }
}

impl MockBackend {
    /// A backend serving `objects`, each a display name and its contents, in
    /// this order.
    pub fn new<D, C>(objects: Vec<(D, C)>) -> MockBackend
    where
        D: Into<Vec<u8>>,
        C: Into<Vec<u8>>,
    {
        MockBackend {
            objects: objects
                .into_iter()
                .map(|(display, contents)| MockEntry {
                    display: display.into(),
                    contents: Arc::from(contents.into()),
                })
                .collect(),
            skipped: Vec::new(),
            page_limit: None,
            flaky_listing: 0,
            list_calls: AtomicUsize::new(0),
            fetch_calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
        }
    }

    /// Adds an object after those already given.
    pub fn with_object(
        mut self,
        display: impl Into<Vec<u8>>,
        contents: impl Into<Vec<u8>>,
    ) -> Self {
        self.objects.push(MockEntry {
            display: display.into(),
            contents: Arc::from(contents.into()),
        });
        self
    }

    /// Adds an entry that is never listed but reported by `take_skipped`
    /// with `reason`, once per listing.
    pub fn with_skipped(mut self, display: impl Into<Vec<u8>>, reason: SkipReason) -> Self {
        self.skipped.push(SkippedObject {
            display: display.into(),
            reason,
        });
        self
    }

    /// Returns at most `limit` objects per page even when asked for more, as
    /// stores with a server-side page size do.
    ///
    /// # Panics
    ///
    /// If `limit` is 0 (pages would be empty before the end).
    pub fn with_page_limit(mut self, limit: usize) -> Self {
        assert!(
            limit > 0,
            "a page limit of 0 would end every listing at once"
        );
        self.page_limit = Some(limit);
        self
    }

    /// Makes the first `failures` calls to `list_page` (counted over the
    /// backend's life, not per cursor) fail with a retryable error without
    /// advancing the cursor.
    pub fn with_flaky_listing(mut self, failures: usize) -> Self {
        self.flaky_listing = failures;
        self
    }

    /// The number of objects served.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the backend serves no object.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// How many times `fetch_range` was called, including failed calls of
    /// the fault-injecting backends built on this one.
    pub fn fetch_calls(&self) -> usize {
        self.fetch_calls.load(Ordering::SeqCst)
    }

    /// How many times `list_page` was called, including failed calls.
    pub fn list_calls(&self) -> usize {
        self.list_calls.load(Ordering::SeqCst)
    }

    /// The most `fetch_range` calls ever in flight at the same time.
    pub fn peak_concurrent_fetches(&self) -> usize {
        self.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Counts a fetch as started; the guard counts it as finished on drop.
    fn enter_fetch(&self) -> FetchGuard<'_> {
        self.fetch_calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        FetchGuard {
            in_flight: &self.in_flight,
        }
    }

    /// Copies the exact range the contract asks for.
    fn read_exact(obj: &RemoteObject<MockObject>, start: u64, dst: &mut [u8]) -> usize {
        let contents = obj.handle.contents();
        // The listed size bounds reads, as in a real store.
        let size = obj.size.min(contents.len() as u64);
        if start >= size {
            return 0;
        }
        // `start < size <= contents.len()`, so it fits in usize.
        let start = start as usize;
        let n = dst.len().min(size as usize - start);
        dst[..n].copy_from_slice(&contents[start..start + n]);
        n
    }
}

struct FetchGuard<'a> {
    in_flight: &'a AtomicUsize,
}

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn display_of(obj: &RemoteObject<MockObject>) -> String {
    String::from_utf8_lossy(&obj.display).into_owned()
}

impl RemoteBackend for MockBackend {
    type Object = MockObject;
    type Cursor = MockCursor;
    type Error = TestError;

    fn list_page(
        &self,
        cursor: &mut MockCursor,
        max: usize,
    ) -> Result<Vec<RemoteObject<MockObject>>, TestError> {
        let call = self.list_calls.fetch_add(1, Ordering::SeqCst);
        if call < self.flaky_listing {
            return Err(TestError::new(
                TestErrorKind::Retryable,
                format!(
                    "injected listing failure {} of {}",
                    call + 1,
                    self.flaky_listing
                ),
            ));
        }
        cursor.started = true;
        let max = self.page_limit.map_or(max, |limit| max.min(limit)).max(1);
        let end = self.objects.len().min(cursor.next.saturating_add(max));
        let page = self.objects[cursor.next.min(end)..end]
            .iter()
            .enumerate()
            .map(|(i, entry)| RemoteObject {
                handle: MockObject {
                    index: cursor.next + i,
                    contents: Arc::clone(&entry.contents),
                },
                size: entry.contents.len() as u64,
                display: entry.display.clone(),
            })
            .collect();
        cursor.next = end;
        Ok(page)
    }

    fn fetch_range(
        &self,
        obj: &RemoteObject<MockObject>,
        start: u64,
        dst: &mut [u8],
    ) -> Result<usize, TestError> {
        let _guard = self.enter_fetch();
        Ok(Self::read_exact(obj, start, dst))
    }

    fn classify_error(&self, err: &TestError) -> ErrorClass {
        err.kind().class()
    }

    fn take_skipped(&self, cursor: &mut MockCursor) -> Vec<SkippedObject> {
        if cursor.started && !cursor.skipped_reported {
            cursor.skipped_reported = true;
            self.skipped.clone()
        } else {
            Vec::new()
        }
    }
}

/// A backend whose first fetches of each object fail, then succeed.
///
/// The first `failures` calls to `fetch_range` for each object (counted per
/// object, whatever the range) fail with a [`TestErrorKind::Retryable`]
/// error, or a [`TestErrorKind::Throttled`] one after
/// [`throttled`](Self::throttled); later calls read exactly as
/// [`MockBackend`] does.
#[derive(Debug)]
pub struct RetryBackend {
    inner: MockBackend,
    failures: usize,
    kind: TestErrorKind,
    attempts: Vec<AtomicUsize>,
}

impl RetryBackend {
    /// Serves `objects`; the first `failures` fetches of each fail
    /// retryably.
    pub fn new<D, C>(objects: Vec<(D, C)>, failures: usize) -> RetryBackend
    where
        D: Into<Vec<u8>>,
        C: Into<Vec<u8>>,
    {
        RetryBackend::from_mock(MockBackend::new(objects), failures)
    }

    /// Serves the objects of `inner` (with its options); the first
    /// `failures` fetches of each fail retryably.
    pub fn from_mock(inner: MockBackend, failures: usize) -> RetryBackend {
        let attempts = (0..inner.len()).map(|_| AtomicUsize::new(0)).collect();
        RetryBackend {
            inner,
            failures,
            kind: TestErrorKind::Retryable,
            attempts,
        }
    }

    /// Fails with [`TestErrorKind::Throttled`] errors carrying `retry_after`
    /// instead of retryable ones.
    pub fn throttled(mut self, retry_after: Option<Duration>) -> Self {
        self.kind = TestErrorKind::Throttled { retry_after };
        self
    }

    /// The backend serving the objects, with its counters.
    pub fn mock(&self) -> &MockBackend {
        &self.inner
    }

    /// How many times `fetch_range` was called for the object at `index`.
    ///
    /// # Panics
    ///
    /// If there is no object at `index`.
    pub fn attempts(&self, index: usize) -> usize {
        self.attempts[index].load(Ordering::SeqCst)
    }
}

impl RemoteBackend for RetryBackend {
    delegate_to_mock!();

    fn fetch_range(
        &self,
        obj: &RemoteObject<MockObject>,
        start: u64,
        dst: &mut [u8],
    ) -> Result<usize, TestError> {
        let _guard = self.inner.enter_fetch();
        let attempt = self.attempts[obj.handle.index].fetch_add(1, Ordering::SeqCst);
        if attempt < self.failures {
            return Err(TestError::new(
                self.kind,
                format!(
                    "injected failure {} of {} reading {} at {start}",
                    attempt + 1,
                    self.failures,
                    display_of(obj)
                ),
            ));
        }
        Ok(MockBackend::read_exact(obj, start, dst))
    }
}

/// A backend that breaks the contract: inside an object it returns fewer
/// bytes than asked.
///
/// Each read returns half (rounded down) of the bytes the contract requires,
/// so any read that should return at least one byte comes up short (a read
/// that should return 1 byte returns 0). Reads at or past the end return 0
/// as they should. A scheduler must fail such objects as permanent.
#[derive(Debug, Default)]
pub struct PartialReadBackend {
    inner: MockBackend,
}

impl PartialReadBackend {
    /// Serves `objects` with short reads.
    pub fn new<D, C>(objects: Vec<(D, C)>) -> PartialReadBackend
    where
        D: Into<Vec<u8>>,
        C: Into<Vec<u8>>,
    {
        PartialReadBackend::from_mock(MockBackend::new(objects))
    }

    /// Serves the objects of `inner` (with its options) with short reads.
    pub fn from_mock(inner: MockBackend) -> PartialReadBackend {
        PartialReadBackend { inner }
    }

    /// The backend serving the objects, with its counters.
    pub fn mock(&self) -> &MockBackend {
        &self.inner
    }
}

impl RemoteBackend for PartialReadBackend {
    delegate_to_mock!();

    fn fetch_range(
        &self,
        obj: &RemoteObject<MockObject>,
        start: u64,
        dst: &mut [u8],
    ) -> Result<usize, TestError> {
        let _guard = self.inner.enter_fetch();
        let required = MockBackend::read_exact(obj, start, dst);
        Ok(required / 2)
    }
}

/// A backend whose objects list normally but every fetch fails with a
/// [`TestErrorKind::Permanent`] error.
#[derive(Debug, Default)]
pub struct PermanentErrorBackend {
    inner: MockBackend,
}

impl PermanentErrorBackend {
    /// Serves `objects`, none of which can be read.
    pub fn new<D, C>(objects: Vec<(D, C)>) -> PermanentErrorBackend
    where
        D: Into<Vec<u8>>,
        C: Into<Vec<u8>>,
    {
        PermanentErrorBackend::from_mock(MockBackend::new(objects))
    }

    /// Serves the objects of `inner` (with its options), none of which can be
    /// read.
    pub fn from_mock(inner: MockBackend) -> PermanentErrorBackend {
        PermanentErrorBackend { inner }
    }

    /// The backend serving the objects, with its counters.
    pub fn mock(&self) -> &MockBackend {
        &self.inner
    }
}

impl RemoteBackend for PermanentErrorBackend {
    delegate_to_mock!();

    fn fetch_range(
        &self,
        obj: &RemoteObject<MockObject>,
        start: u64,
        _dst: &mut [u8],
    ) -> Result<usize, TestError> {
        let _guard = self.inner.enter_fetch();
        Err(TestError::new(
            TestErrorKind::Permanent,
            format!(
                "injected permanent failure reading {} at {start}",
                display_of(obj)
            ),
        ))
    }
}

/// The decision of a [`FaultBackend`]: `Some(error)` fails the fetch of
/// `obj` at `start` with that error, `None` reads as [`MockBackend`] does.
pub type FaultFn = dyn Fn(&RemoteObject<MockObject>, u64) -> Option<TestError> + Send + Sync;

/// Serves the objects of a [`MockBackend`], asking a closure before each
/// fetch whether it fails: for faults that depend on which object is read,
/// or on what other threads did before (the closure may keep counters).
///
/// ```
/// use trawl_backend::RemoteBackend;
/// use trawl_backend::testkit::{FaultBackend, MockBackend, MockCursor, TestError, TestErrorKind};
///
/// let backend = FaultBackend::new(MockBackend::new(vec![("ok", "a"), ("bad", "b")]), |obj, _| {
///     (obj.display == b"bad").then(|| TestError::new(TestErrorKind::Permanent, "injected"))
/// });
/// let page = backend.list_page(&mut MockCursor::default(), 10).unwrap();
/// assert!(backend.fetch_range(&page[0], 0, &mut [0; 1]).is_ok());
/// assert!(backend.fetch_range(&page[1], 0, &mut [0; 1]).is_err());
/// ```
pub struct FaultBackend {
    inner: MockBackend,
    fault: Box<FaultFn>,
}

impl FaultBackend {
    /// Serves the objects of `inner`, failing a fetch when `fault` says so.
    pub fn new(
        inner: MockBackend,
        fault: impl Fn(&RemoteObject<MockObject>, u64) -> Option<TestError> + Send + Sync + 'static,
    ) -> FaultBackend {
        FaultBackend {
            inner,
            fault: Box::new(fault),
        }
    }

    /// The backend serving the objects, with its counters.
    pub fn mock(&self) -> &MockBackend {
        &self.inner
    }
}

impl std::fmt::Debug for FaultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultBackend")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl RemoteBackend for FaultBackend {
    delegate_to_mock!();

    fn fetch_range(
        &self,
        obj: &RemoteObject<MockObject>,
        start: u64,
        dst: &mut [u8],
    ) -> Result<usize, TestError> {
        let _guard = self.inner.enter_fetch();
        match (self.fault)(obj, start) {
            Some(err) => Err(err),
            None => Ok(MockBackend::read_exact(obj, start, dst)),
        }
    }
}

/// Wraps any backend, sleeping a fixed delay before each fetch (and,
/// optionally, each listing call), so that tests can stop or drain a scan
/// while reads are in flight.
///
/// Every method is forwarded to the inner backend.
#[derive(Debug)]
pub struct SlowBackend<B> {
    inner: B,
    fetch_delay: Duration,
    list_delay: Duration,
}

impl<B: RemoteBackend> SlowBackend<B> {
    /// Wraps `inner`, sleeping `fetch_delay` before each `fetch_range`.
    pub fn new(inner: B, fetch_delay: Duration) -> SlowBackend<B> {
        SlowBackend {
            inner,
            fetch_delay,
            list_delay: Duration::ZERO,
        }
    }

    /// Also sleeps `delay` before each `list_page`.
    pub fn with_list_delay(mut self, delay: Duration) -> Self {
        self.list_delay = delay;
        self
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B: RemoteBackend> RemoteBackend for SlowBackend<B> {
    type Object = B::Object;
    type Cursor = B::Cursor;
    type Error = B::Error;

    fn list_page(
        &self,
        cursor: &mut B::Cursor,
        max: usize,
    ) -> Result<Vec<RemoteObject<B::Object>>, B::Error> {
        if !self.list_delay.is_zero() {
            std::thread::sleep(self.list_delay);
        }
        self.inner.list_page(cursor, max)
    }

    fn fetch_range(
        &self,
        obj: &RemoteObject<B::Object>,
        start: u64,
        dst: &mut [u8],
    ) -> Result<usize, B::Error> {
        if !self.fetch_delay.is_zero() {
            std::thread::sleep(self.fetch_delay);
        }
        self.inner.fetch_range(obj, start, dst)
    }

    fn classify_error(&self, err: &B::Error) -> ErrorClass {
        self.inner.classify_error(err)
    }

    fn take_skipped(&self, cursor: &mut B::Cursor) -> Vec<SkippedObject> {
        self.inner.take_skipped(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_all<B: RemoteBackend>(backend: &B, max: usize) -> Vec<RemoteObject<B::Object>> {
        let mut cursor = B::Cursor::default();
        let mut all = Vec::new();
        loop {
            let page = backend.list_page(&mut cursor, max).expect("listing");
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    #[test]
    fn mock_pages_and_reads() {
        let backend = MockBackend::new(vec![("a", "0123456789")])
            .with_object("b", "")
            .with_object("c", "xyz")
            .with_skipped("d", SkipReason::Hidden);
        let mut cursor = MockCursor::default();
        assert!(backend.take_skipped(&mut cursor).is_empty());
        let first = backend.list_page(&mut cursor, 2).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(backend.take_skipped(&mut cursor).len(), 1);
        assert!(backend.take_skipped(&mut cursor).is_empty());
        let second = backend.list_page(&mut cursor, 2).unwrap();
        assert_eq!(second.len(), 1);
        assert!(backend.list_page(&mut cursor, 2).unwrap().is_empty());

        let mut buf = [0u8; 4];
        assert_eq!(backend.fetch_range(&first[0], 8, &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"89");
        assert_eq!(backend.fetch_range(&first[0], 10, &mut buf).unwrap(), 0);
        assert_eq!(backend.fetch_range(&first[1], 0, &mut buf).unwrap(), 0);
        assert_eq!(backend.fetch_calls(), 3);
    }

    #[test]
    fn page_limit_caps_pages() {
        let backend = MockBackend::new(vec![("a", "1"), ("b", "2"), ("c", "3")]).with_page_limit(2);
        let mut cursor = MockCursor::default();
        assert_eq!(backend.list_page(&mut cursor, 100).unwrap().len(), 2);
        assert_eq!(list_all(&backend, 100).len(), 3);
    }

    #[test]
    fn flaky_listing_fails_then_lists() {
        let backend = MockBackend::new(vec![("a", "1")]).with_flaky_listing(1);
        let mut cursor = MockCursor::default();
        let err = backend.list_page(&mut cursor, 10).unwrap_err();
        assert_eq!(backend.classify_error(&err), ErrorClass::Retryable);
        assert_eq!(backend.list_page(&mut cursor, 10).unwrap().len(), 1);
    }

    #[test]
    fn retry_backend_fails_n_times_per_object() {
        let backend = RetryBackend::new(vec![("a", "hello"), ("b", "world")], 2)
            .throttled(Some(Duration::from_millis(5)));
        let objects = list_all(&backend, 10);
        let mut buf = [0u8; 5];
        for obj in &objects {
            for _ in 0..2 {
                let err = backend.fetch_range(obj, 0, &mut buf).unwrap_err();
                assert_eq!(
                    backend.classify_error(&err),
                    ErrorClass::Throttled {
                        retry_after: Some(Duration::from_millis(5))
                    }
                );
            }
            assert_eq!(backend.fetch_range(obj, 0, &mut buf).unwrap(), 5);
            assert_eq!(backend.attempts(obj.handle.index()), 3);
        }
        assert_eq!(backend.mock().fetch_calls(), 6);
    }

    #[test]
    fn partial_and_permanent_backends() {
        let partial = PartialReadBackend::new(vec![("a", "hello")]);
        let obj = &list_all(&partial, 10)[0];
        let mut buf = [0u8; 4];
        assert_eq!(partial.fetch_range(obj, 0, &mut buf).unwrap(), 2);
        assert_eq!(partial.fetch_range(obj, 5, &mut buf).unwrap(), 0);

        let permanent = PermanentErrorBackend::new(vec![("a", "hello")]);
        let obj = &list_all(&permanent, 10)[0];
        let err = permanent.fetch_range(obj, 0, &mut buf).unwrap_err();
        assert_eq!(permanent.classify_error(&err), ErrorClass::Permanent);
        assert!(err.to_string().contains('a'), "{err}");
    }

    #[test]
    fn slow_backend_delays_fetches() {
        let backend = SlowBackend::new(
            MockBackend::new(vec![("a", "x")]),
            Duration::from_millis(20),
        );
        let obj = &list_all(&backend, 10)[0];
        let started = std::time::Instant::now();
        let mut buf = [0u8; 1];
        assert_eq!(backend.fetch_range(obj, 0, &mut buf).unwrap(), 1);
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(backend.inner().fetch_calls(), 1);
    }
}
