//! The local-folder backend of trawl. **Internal to trawl**: its API follows
//! the needs of `trawl-scheduler` and `trawl-cli` and may change in any
//! release; use it through the `trawl` crate.
//!
//! [`FsBackend`] implements [`RemoteBackend`] for folders and single files:
//!
//! - **Listing** is a parallel walk (the `ignore` crate's
//!   [`WalkBuilder::build_parallel`](ignore::WalkBuilder::build_parallel)) on
//!   a background thread started by the first `list_page`, feeding the
//!   cursor through a bounded channel, so a huge tree is listed in bounded
//!   memory and the walk stops soon after the cursor is dropped.
//! - **Nothing is skipped silently.** Hidden and git-ignored files are
//!   scanned unless [`FsOptions`] asks otherwise, because secrets hide
//!   precisely in `.env` files and ignored build output. The `ignore`
//!   crate's own filters are all off (they drop entries without telling);
//!   the options are applied by this crate, and every entry not scanned is
//!   reported by `take_skipped` with its [`SkipReason`]: hidden, ignored,
//!   symbolic links (not followed unless asked), FIFOs, sockets and devices
//!   (never opened: opening a FIFO blocks), and what the [`ObjectFilter`]
//!   of [`FsOptions::filter`] turns down (exclude and include globs, files
//!   above the size limit or older than the cut-off). A folder an exclude
//!   glob matches (`node_modules/`, `**/vendor/**`) is reported once, as
//!   one skipped entry, and never walked, so a huge excluded tree costs
//!   nothing.
//! - **Walk errors are skipped entries.** An unreadable directory, a file
//!   whose metadata cannot be read or a symbolic-link loop is reported by
//!   `take_skipped` as [`SkipReason::Unreadable`] (a symbolic-link loop as
//!   [`SkipReason::Other`]) with the reason in words
//!   (`"cannot read directory: Permission denied"`), under the path it
//!   concerns, so that it counts in the run's report.
//! - **Reads** are positional (`pread`) into the scheduler's buffer, with no
//!   intermediate copy, through a file handle opened on the first read of a
//!   file and closed when the scheduler drops the object. A file that
//!   shrank since it was listed fails as [`Error::Changed`]; reads never go
//!   past the listed size, so a growing file is scanned as listed.
//!
//! `display` is the path as the walk yields it (the root as given, joined
//! with the relative path, as ripgrep prints it), as raw bytes: non-UTF-8
//! file names survive.

mod error;
mod object;
mod walk;

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use trawl_backend::{ErrorClass, ObjectFilter, RemoteBackend, RemoteObject, SkippedObject};

pub use error::{Error, Result};
pub use object::FsObject;
pub use walk::FsCursor;

#[cfg(doc)]
use trawl_backend::SkipReason;

/// What [`FsBackend`] scans and skips.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsOptions {
    /// Skip entries matched by `.gitignore`, `.ignore` and
    /// `.git/info/exclude` rules in the scanned folders (default: scan
    /// them). Rules above a root and global git excludes are not read.
    pub respect_gitignore: bool,
    /// Skip files and folders whose name starts with `.` (default: scan
    /// them). Roots given explicitly are always scanned.
    pub skip_hidden: bool,
    /// Follow symbolic links below the roots (default: report them as
    /// skipped). Roots that are links are always followed.
    pub follow_symlinks: bool,
    /// Threads of the walk; 0 picks a number from the available cores.
    pub threads: usize,
    /// Which files to scan: include and exclude globs over the path below
    /// each root, a maximum size, a modification cut-off (default: every
    /// file). A folder an exclude glob matches is reported once and not
    /// walked. Globs do not apply to a root itself: a file named as a
    /// root is always a candidate (its size and time still count).
    pub filter: ObjectFilter,
    /// Files never to scan, such as the scan's own output file (which
    /// would otherwise be read while it is written, and report every secret
    /// twice). Matched by identity (device and inode), so any path to the
    /// same file is excluded; each is counted as skipped. Paths that do not
    /// exist are ignored.
    pub exclude: Vec<PathBuf>,
}

/// A [`RemoteBackend`] over local folders and files.
///
/// See the [crate documentation](crate) for what is listed, what is
/// skipped and how files are read.
#[derive(Debug)]
pub struct FsBackend {
    roots: Vec<PathBuf>,
    options: FsOptions,
    files_opened: AtomicU64,
}

impl FsBackend {
    /// A backend scanning `roots` (folders or files) with `options`.
    ///
    /// Checks that every root exists and can be read (a folder listed, a
    /// regular file opened), and fails with an error naming the first one
    /// that cannot: `cannot scan 'x': No such file or directory`. A root
    /// that is a FIFO, socket or device is accepted, never opened, and
    /// reported as skipped when listed.
    pub fn new(roots: Vec<PathBuf>, options: FsOptions) -> Result<FsBackend> {
        if roots.is_empty() {
            return Err(Error::Config {
                field: "roots",
                reason: "no file or folder to scan".into(),
            });
        }
        for root in &roots {
            let root_error = |source| Error::Root {
                path: root.clone(),
                source,
            };
            let metadata = fs::metadata(root).map_err(root_error)?;
            if metadata.is_dir() {
                fs::read_dir(root).map_err(root_error)?;
            } else if metadata.is_file() {
                fs::File::open(root).map_err(root_error)?;
            }
        }
        Ok(FsBackend {
            roots,
            options,
            files_opened: AtomicU64::new(0),
        })
    }

    /// The roots, as given.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The options.
    pub fn options(&self) -> &FsOptions {
        &self.options
    }

    /// How many files reads have opened so far: one per file read, however
    /// many chunks it has.
    pub fn files_opened(&self) -> u64 {
        self.files_opened.load(Ordering::Relaxed)
    }
}

impl RemoteBackend for FsBackend {
    type Object = FsObject;
    type Cursor = FsCursor;
    type Error = Error;

    fn list_page(&self, cursor: &mut FsCursor, max: usize) -> Result<Vec<RemoteObject<FsObject>>> {
        cursor.next_page(&self.roots, &self.options, max.max(1))
    }

    fn fetch_range(
        &self,
        obj: &RemoteObject<FsObject>,
        start: u64,
        dst: &mut [u8],
    ) -> Result<usize> {
        obj.handle.read(obj.size, start, dst, &self.files_opened)
    }

    /// See [`Error::class`].
    fn classify_error(&self, err: &Error) -> ErrorClass {
        err.class()
    }

    fn take_skipped(&self, cursor: &mut FsCursor) -> Vec<SkippedObject> {
        cursor.take_skipped()
    }
}
