//! The handle of one listed file and its positional reads.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::error::{Error, Result};

/// A listed file: its path and a file handle opened on the first read.
///
/// Every chunk of one file is read through the same handle, so a file is
/// opened once however many chunks it has, and closed when the scheduler
/// drops the object after its last chunk.
#[derive(Debug)]
pub struct FsObject {
    path: PathBuf,
    file: OnceLock<File>,
    /// Serialises the first open, so concurrent first reads open once.
    open_lock: Mutex<()>,
}

impl FsObject {
    pub(crate) fn new(path: PathBuf) -> FsObject {
        FsObject {
            path,
            file: OnceLock::new(),
            open_lock: Mutex::new(()),
        }
    }

    /// The file's path, as the walk yielded it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file has been opened (by a read).
    pub fn is_open(&self) -> bool {
        self.file.get().is_some()
    }

    /// The open file, opening it on first use and counting the open in
    /// `opens`.
    fn file(&self, opens: &AtomicU64) -> Result<&File> {
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let _guard = self
            .open_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let file = File::open(&self.path).map_err(|source| Error::Open {
            path: self.path.clone(),
            source,
        })?;
        // The listing saw a regular file; if something else is there now,
        // reading it could block or never end.
        let is_file = file
            .metadata()
            .map_err(|source| Error::Open {
                path: self.path.clone(),
                source,
            })?
            .is_file();
        if !is_file {
            return Err(Error::NotRegularFile {
                path: self.path.clone(),
            });
        }
        opens.fetch_add(1, Ordering::Relaxed);
        Ok(self.file.get_or_init(|| file))
    }

    /// Fills `dst` with the bytes at `start`, bounded by the listed `size`,
    /// as the `fetch_range` contract requires.
    pub(crate) fn read(
        &self,
        size: u64,
        start: u64,
        dst: &mut [u8],
        opens: &AtomicU64,
    ) -> Result<usize> {
        if start >= size || dst.is_empty() {
            return Ok(0);
        }
        // `size - start` may exceed usize only when dst is shorter anyway.
        let want = usize::try_from(size - start).map_or(dst.len(), |rest| rest.min(dst.len()));
        let dst = &mut dst[..want];
        let file = self.file(opens)?;
        let mut filled = 0;
        while filled < want {
            let offset = start + filled as u64;
            match file.read_at(&mut dst[filled..], offset) {
                Ok(0) => {
                    return Err(Error::Changed {
                        path: self.path.clone(),
                        size,
                        eof: offset,
                    });
                }
                Ok(n) => filled += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Read {
                        path: self.path.clone(),
                        offset,
                        source,
                    });
                }
            }
        }
        Ok(want)
    }
}
