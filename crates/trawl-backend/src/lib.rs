//! The storage-backend trait of trawl.
//!
//! A backend knows how to enumerate the objects of one store and how to read
//! a byte range of one object; it knows nothing of scanning, threads or
//! databases. The scheduler (`trawl-scheduler`) owns concurrency, retries,
//! buffers and backpressure, so a backend stays a small, blocking,
//! easily-tested piece of code, and a new store is a new crate that
//! implements [`RemoteBackend`].
//!
//! The trait is deliberately minimal (three methods), and its contract is
//! strict: [`RemoteBackend::fetch_range`] returns *exactly* the bytes asked
//! for, or the tail of the object, or nothing at EOF. A read that comes up
//! short inside the object is a contract violation, which the scheduler
//! treats as a permanent failure of that object instead of silently scanning
//! a truncated buffer.
//!
//! What to scan is decided the same way by every backend: an
//! [`ObjectFilter`] (include and exclude globs, a maximum size, a
//! modification cut-off) turns an object's relative path, size and time
//! into "scan it" or a [`SkipReason`], so that `--exclude 'node_modules/'`
//! means the same in a folder and in a bucket, and every skip is counted.
//!
//! Two features help backend authors:
//! - `testkit`: `testkit::MockBackend` and fault-injecting backends for
//!   testing code that drives a backend;
//! - `conformance`: functions in `conformance` that a backend crate calls
//!   from its own tests to check the contract against a real store.

mod error;
mod filter;
mod object;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{Error, Result};
pub use filter::{ObjectFilter, ObjectFilterBuilder, PathGlob};
pub use object::{ErrorClass, RemoteObject, SkipReason, SkippedObject};

/// A store of objects that can be listed page by page and read by range.
///
/// Implementations are called from many threads at once (one discovery
/// thread and many I/O threads), so every method takes `&self`. Methods
/// block; the scheduler runs them on dedicated threads.
///
/// # Contract
///
/// - [`list_page`](Self::list_page) **must** eventually list every object
///   exactly once across pages, and **must** return an empty page only when
///   enumeration is complete. It **may** return fewer than `max` objects in a
///   page that is not the last.
/// - [`fetch_range`](Self::fetch_range) **must** return exactly `dst.len()`
///   bytes when `start + dst.len() <= size`, exactly `size - start` bytes when
///   `start < size < start + dst.len()`, and 0 when `start >= size`, where
///   `size` is the size the object was listed with. It **must never** return
///   a short read inside that range: a backend loops internally until the
///   range is filled, or returns an error.
/// - [`classify_error`](Self::classify_error) **must** be a pure function of
///   the error: the same error is always given the same class.
pub trait RemoteBackend: Send + Sync + 'static {
    /// What the backend needs to read one object (a key, a URL, a path and a
    /// lazily opened file handle…). Dropped when the object's last chunk has
    /// been fetched, so it may own resources such as an open file.
    type Object: Send + Sync + 'static;
    /// Pagination state of a listing. `Default` is the start of the listing.
    type Cursor: Default + Send + 'static;
    /// The backend's error, classified by [`classify_error`](Self::classify_error).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Lists up to `max` further objects, advancing `cursor`.
    ///
    /// An empty page means enumeration is complete; `max` is always at
    /// least 1. Entries that the backend decides not to scan (hidden files
    /// when asked to skip them, special files, archived objects, objects an
    /// [`ObjectFilter`] turns down…) are not returned here but reported by
    /// [`take_skipped`](Self::take_skipped), so that nothing disappears
    /// from the accounting. A page **must not**
    /// be empty while objects remain, even when every entry seen since the
    /// last page was skipped.
    fn list_page(
        &self,
        cursor: &mut Self::Cursor,
        max: usize,
    ) -> Result<Vec<RemoteObject<Self::Object>>, Self::Error>;

    /// Reads bytes of `obj` starting at offset `start` into `dst`.
    ///
    /// Returns the number of bytes written, which **must** be exactly
    /// `dst.len()`, or `obj.size - start` at the tail, or 0 at or past the
    /// end (see the trait's contract). On error, the contents of `dst` are
    /// unspecified.
    fn fetch_range(
        &self,
        obj: &RemoteObject<Self::Object>,
        start: u64,
        dst: &mut [u8],
    ) -> Result<usize, Self::Error>;

    /// Says whether an error is worth retrying, a throttle to wait out, or
    /// permanent for the object it happened on.
    fn classify_error(&self, err: &Self::Error) -> ErrorClass;

    /// Takes the entries skipped since the last call (for instance while
    /// building the last page), each with its reason.
    ///
    /// The discovery loop calls this after every [`list_page`](Self::list_page)
    /// and counts each entry as discovered and skipped. The default returns
    /// nothing, for backends that never skip.
    fn take_skipped(&self, cursor: &mut Self::Cursor) -> Vec<SkippedObject> {
        let _ = cursor;
        Vec::new()
    }
}
