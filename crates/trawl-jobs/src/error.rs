//! The one error type of the crate.

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to the queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A database error (connection lost, statement failed…).
    #[error("job queue database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("cannot migrate the trawl_jobs schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A job's payload cannot be serialized to JSON.
    #[error("cannot serialize the payload of a '{kind}' job: {source}")]
    Serialize {
        /// The job kind.
        kind: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// A value given to the queue is out of range (an empty kind, zero
    /// attempts, a negative delay…).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// What was given.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The queue holds as many pending jobs as its depth limit allows (see
    /// [`QueueLimits::max_depth`](crate::QueueLimits::max_depth)); the
    /// enqueue was refused, or waited as long as the queue allows.
    #[error("queue '{queue}' is full: {depth} jobs pending, limit {limit}")]
    QueueFull {
        /// The queue.
        queue: String,
        /// Its pending jobs when the enqueue gave up.
        depth: i64,
        /// Its depth limit.
        limit: i64,
    },
    /// A row read from the database has a value this version does not know
    /// (a newer schema wrote it).
    #[error("unexpected {field} '{value}' in the trawl_jobs schema")]
    Unexpected {
        /// The column.
        field: &'static str,
        /// The value.
        value: String,
    },
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// Whether the error is a lost or refused connection, after which a
    /// worker backs off and reconnects.
    pub fn is_connection(&self) -> bool {
        match self {
            Error::Database(err) => {
                matches!(
                    err,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Protocol(_)
                ) || err
                    .as_database_error()
                    .and_then(|e| e.code())
                    // 57P01 admin_shutdown (pg_terminate_backend), 57P02/57P03,
                    // class 08: connection exceptions.
                    .is_some_and(|code| code.starts_with("57P") || code.starts_with("08"))
            }
            _ => false,
        }
    }
}
