//! The values that cross the backend boundary: objects, skips and error classes.

use std::fmt;
use std::time::Duration;

/// One object of a store, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteObject<H> {
    /// What the backend needs to read the object.
    pub handle: H,
    /// The size in bytes at listing time; reads are bounded by it.
    pub size: u64,
    /// How the object is shown to people and in findings: a path or a URL.
    /// Bytes, because object keys and file names need not be UTF-8.
    pub display: Vec<u8>,
}

/// How a failed backend call should be treated.
///
/// Classification lives in each backend's `classify_error`, the retry
/// decision in the scheduler: a backend knows which of its errors are
/// transient, the scheduler knows how long it may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Transient (a timeout, a reset connection, a 5xx): retry with backoff,
    /// using up one attempt.
    Retryable,
    /// The store asked us to slow down (HTTP 429, S3 `SlowDown`): wait for
    /// `retry_after` when given, else the backoff delay. A throttled wait uses
    /// up no attempt, but counts against the per-object time budget.
    Throttled {
        /// The store's hint of how long to wait.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (not found, access denied, a contract
    /// violation): fail the object now.
    Permanent,
    /// The object exists but cannot be read without a restore (S3
    /// `GLACIER` or `DEEP_ARCHIVE`, Azure's archive tier): skip it with
    /// [`SkipReason::Archived`]. Not a failure of the scan, and never retried.
    Archived,
}

/// Why an entry was not scanned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SkipReason {
    /// A hidden file or folder, skipped on request (`--skip-hidden`).
    Hidden,
    /// Matched by a `.gitignore`/`.ignore` rule, skipped on request
    /// (`--respect-gitignore`).
    Ignored,
    /// A symbolic link, not followed.
    Symlink,
    /// Not a regular file (a FIFO, socket or device), which cannot be read
    /// as a finite object.
    NotRegularFile,
    /// Larger than the configured maximum object size
    /// ([`ObjectFilter`](crate::ObjectFilter)'s `max_size`).
    TooLarge,
    /// Matched by an exclude glob of an [`ObjectFilter`](crate::ObjectFilter)
    /// (`--exclude`), named as given. A folder excluded whole is one entry,
    /// its contents are not listed; counts group by glob, so a summary has
    /// one line per glob, not per object.
    Excluded {
        /// The exclude glob, as given.
        glob: String,
    },
    /// Matched none of the include globs of an
    /// [`ObjectFilter`](crate::ObjectFilter) (`--include`).
    NotIncluded,
    /// Last modified before the cut-off of an
    /// [`ObjectFilter`](crate::ObjectFilter) (`--modified-since`). An
    /// object whose modification time is unknown is scanned, not skipped.
    NotModifiedSince,
    /// In an archive storage class, unreadable without a restore.
    Archived,
    /// The scan was stopped before this object was finished.
    Stopped,
    /// The entry could not be read at all (an unreadable folder, metadata
    /// that cannot be read), so the scan does not cover it. Schedulers count
    /// such entries as *failed*, not skipped: the scan is incomplete.
    Unreadable(String),
    /// Any other reason, in words.
    Other(String),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Hidden => f.write_str("hidden (--skip-hidden)"),
            SkipReason::Ignored => {
                f.write_str("ignored by a .gitignore rule (--respect-gitignore)")
            }
            SkipReason::Symlink => f.write_str("symbolic link, not followed"),
            SkipReason::NotRegularFile => f.write_str("not a regular file"),
            SkipReason::TooLarge => {
                f.write_str("larger than the maximum object size (--max-object-size)")
            }
            SkipReason::Excluded { glob } => write!(f, "excluded by the glob '{glob}' (--exclude)"),
            SkipReason::NotIncluded => f.write_str("matched no include glob (--include)"),
            SkipReason::NotModifiedSince => {
                f.write_str("not modified since the cut-off (--modified-since)")
            }
            SkipReason::Archived => f.write_str("in archive storage, not restored"),
            SkipReason::Stopped => f.write_str("scan stopped before this object was finished"),
            SkipReason::Unreadable(reason) => f.write_str(reason),
            SkipReason::Other(reason) => f.write_str(reason),
        }
    }
}

/// An entry the backend saw but will not scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedObject {
    /// The entry's path or URL, as in [`RemoteObject::display`].
    pub display: Vec<u8>,
    /// Why it is skipped.
    pub reason: SkipReason,
}
