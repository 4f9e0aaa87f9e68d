//! The error of this crate's own constructors (an [`ObjectFilter`] and its
//! globs); backends have errors of their own ([`RemoteBackend::Error`]).
//!
//! [`ObjectFilter`]: crate::ObjectFilter
//! [`RemoteBackend::Error`]: crate::RemoteBackend::Error

/// Why an [`ObjectFilter`](crate::ObjectFilter) or a
/// [`PathGlob`](crate::PathGlob) could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A glob that does not parse (an unclosed `[` or `{`, a `!` negation,
    /// an empty pattern).
    #[error("invalid glob '{glob}': {reason}")]
    InvalidGlob {
        /// The glob as given.
        glob: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The globs parse one by one but cannot be compiled together (the
    /// compiled matcher would exceed its size limit).
    #[error("cannot compile the globs: {reason}")]
    GlobSet {
        /// What the glob compiler said.
        reason: String,
    },
}

/// The result of this crate's constructors.
pub type Result<T, E = Error> = std::result::Result<T, E>;
