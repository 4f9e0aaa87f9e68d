//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

use trawl_backend::ErrorClass;

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong setting up or running a local scan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A root given to [`FsBackend::new`](crate::FsBackend::new) does not
    /// exist or cannot be read.
    #[error("cannot scan '{}': {}", .path.display(), os_reason(.source))]
    Root {
        /// The root as given.
        path: PathBuf,
        /// Why it cannot be scanned.
        source: io::Error,
    },
    /// An option is invalid.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The option.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A listed file cannot be opened.
    #[error("cannot open '{}': {}", .path.display(), os_reason(.source))]
    Open {
        /// The file.
        path: PathBuf,
        /// The error of `open(2)`.
        source: io::Error,
    },
    /// Reading a listed file failed.
    #[error("cannot read '{}' at offset {offset}: {}", .path.display(), os_reason(.source))]
    Read {
        /// The file.
        path: PathBuf,
        /// The offset of the failed read.
        offset: u64,
        /// The error of `pread(2)`.
        source: io::Error,
    },
    /// A file ended before the size it was listed with: it shrank (or was
    /// replaced) during the scan. Never retried: its contents are not the
    /// ones that were listed.
    #[error(
        "file changed during scan: '{}' was listed with {size} bytes but ends at byte {eof}",
        .path.display()
    )]
    Changed {
        /// The file.
        path: PathBuf,
        /// The size it was listed with.
        size: u64,
        /// Where reading found the end of the file.
        eof: u64,
    },
    /// A listed path is no longer a regular file when opened.
    #[error("'{}' is no longer a regular file", .path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
    },
    /// The walk thread could not be started.
    #[error("cannot start the directory walk: {}", os_reason(.0))]
    Spawn(#[source] io::Error),
    /// The walk thread ended without finishing the listing (it panicked).
    #[error("the directory walk stopped unexpectedly; the listing is incomplete")]
    WalkAborted,
}

impl Error {
    /// The class [`FsBackend`](crate::FsBackend) gives this error.
    ///
    /// - **Permanent**: a missing file or folder, permission denied, a file
    ///   that changed or stopped being a regular file, an invalid option, an
    ///   aborted walk, and I/O errors that describe the file rather than the
    ///   moment (`NotFound`, `PermissionDenied`, `IsADirectory`,
    ///   `NotADirectory`, `InvalidInput`, `InvalidData`, `InvalidFilename`,
    ///   `Unsupported`): retrying cannot change the answer.
    /// - **Retryable**: every other I/O error — `Interrupted`, `WouldBlock`,
    ///   `TimedOut`, and the uncategorised ones such as `EIO`, `ESTALE` or
    ///   `EMFILE`. On network file systems (NFS, SMB, FUSE) these are often
    ///   transient, on a local disk a few retries cost little, and the
    ///   scheduler caps attempts and time per object, so a persistent fault
    ///   still fails the object after the retry budget.
    /// - Never **Throttled**: a file system does not ask us to slow down.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Root { source, .. }
            | Error::Open { source, .. }
            | Error::Read { source, .. } => io_class(source),
            Error::Spawn(_) => ErrorClass::Retryable,
            Error::Config { .. }
            | Error::Changed { .. }
            | Error::NotRegularFile { .. }
            | Error::WalkAborted => ErrorClass::Permanent,
        }
    }
}

/// Classifies an I/O error, as documented on [`Error::class`].
fn io_class(err: &io::Error) -> ErrorClass {
    use io::ErrorKind as K;
    match err.kind() {
        K::NotFound
        | K::PermissionDenied
        | K::IsADirectory
        | K::NotADirectory
        | K::InvalidInput
        | K::InvalidData
        | K::InvalidFilename
        | K::Unsupported => ErrorClass::Permanent,
        _ => ErrorClass::Retryable,
    }
}

/// The message of an I/O error without its " (os error N)" suffix, for
/// messages meant for people.
pub(crate) fn os_reason(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_error_names_the_path_plainly() {
        let err = Error::Root {
            path: PathBuf::from("x"),
            source: io::Error::from_raw_os_error(2),
        };
        assert_eq!(
            err.to_string(),
            "cannot scan 'x': No such file or directory"
        );
        assert_eq!(err.class(), ErrorClass::Permanent);
    }

    #[test]
    fn transient_io_is_retryable() {
        for kind in [
            io::ErrorKind::Interrupted,
            io::ErrorKind::WouldBlock,
            io::ErrorKind::TimedOut,
        ] {
            let err = Error::Read {
                path: PathBuf::from("f"),
                offset: 0,
                source: kind.into(),
            };
            assert_eq!(err.class(), ErrorClass::Retryable, "{kind:?}");
        }
        let eio = Error::Read {
            path: PathBuf::from("f"),
            offset: 0,
            source: io::Error::from_raw_os_error(5),
        };
        assert_eq!(eio.class(), ErrorClass::Retryable);
        let denied = Error::Open {
            path: PathBuf::from("f"),
            source: io::Error::from_raw_os_error(13),
        };
        assert_eq!(denied.class(), ErrorClass::Permanent);
    }
}
