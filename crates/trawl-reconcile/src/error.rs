//! The one error type of the crate.

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a [`Reconciler::tick`](crate::Reconciler::tick) returns when it
/// fails: any error of the reconciler's own crate.
pub type TickError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong configuring or running the supervisor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A database error around a tick (connecting, the advisory lock, the
    /// transaction).
    #[error("reconciler database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A tick failed.
    #[error("{0}")]
    Tick(TickError),
    /// A call ran past its [time limit](crate::Reconciler::time_limit) and
    /// was dropped.
    #[error("the call ran past its time limit of {0:?} and was cancelled")]
    TimedOut(std::time::Duration),
    /// A setting is out of range, or names no reconciler.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The setting (a field or an environment variable).
        setting: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    pub(crate) fn invalid(setting: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}
