//! The scheduler's error type.

/// Why a scan could not start.
///
/// Problems during a scan (a failing object, a listing that gave up, a sink
/// that could not write) do not abort it: they are recorded in the
/// [`RunReport`](crate::RunReport), which always adds up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field is invalid.
    #[error("invalid scan configuration: `{field}` {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A thread could not be started.
    #[error("cannot start a scan thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// `Result` with the scheduler's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
