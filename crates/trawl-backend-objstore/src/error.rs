//! The one error type of the crate, and how each error is classified.

use std::time::Duration;

use trawl_backend::ErrorClass;

use crate::http::HttpStatus;

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong setting up or running an object-store scan.
///
/// Messages name the object or URL and what happened; they never contain a
/// credential (request URLs are never signed in the query string here, and
/// only the status, the store's error code and its message are kept).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The scan location (a URL) cannot be used.
    #[error("invalid location '{input}': {reason}")]
    Location {
        /// The location as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store cannot be configured (bad options, no region…).
    #[error("cannot configure {scheme}:// store: {reason}")]
    Config {
        /// The URL scheme of the store.
        scheme: &'static str,
        /// What is wrong, in words.
        reason: String,
    },
    /// No credentials could be found for the store (none in the
    /// environment, no instance or container role answering).
    #[error(
        "no credentials for {endpoint}: set them in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a role), or scan a public bucket with --anonymous ({reason})"
    )]
    Credentials {
        /// The endpoint or bucket.
        endpoint: String,
        /// Why the credential chain failed.
        reason: String,
    },
    /// The backend was called on a thread that runs async tasks, where it
    /// would have to block the runtime.
    #[error(
        "the object-store backend blocks: call it from a blocking thread (e.g. tokio's spawn_blocking), not from async code"
    )]
    InsideRuntime,
    /// The store answered with an HTTP error status.
    #[error("{operation} {target}: HTTP {status}{}{}", code_suffix(.code), message_suffix(.message))]
    Status {
        /// What was being done: `list`, `read`, `head`.
        operation: &'static str,
        /// The object, prefix or URL concerned.
        target: String,
        /// The HTTP status.
        status: u16,
        /// The store's error code (S3's `<Code>`, e.g. `SlowDown`), if any.
        code: Option<String>,
        /// The store's error message, if any (shortened).
        message: Option<String>,
        /// The `Retry-After` hint of the response, if any.
        retry_after: Option<Duration>,
    },
    /// The request did not complete: a timeout, a refused or reset
    /// connection, a body cut short.
    #[error("{operation} {target}: {reason}")]
    Transport {
        /// What was being done.
        operation: &'static str,
        /// The object, prefix or URL concerned.
        target: String,
        /// What happened, in words.
        reason: String,
    },
    /// The store's answer cannot be understood (a listing that is not XML,
    /// a missing size…). Retrying will not help.
    #[error("{operation} {target}: malformed response: {reason}")]
    Malformed {
        /// What was being done.
        operation: &'static str,
        /// The object, prefix or URL concerned.
        target: String,
        /// What is wrong with the response.
        reason: String,
    },
    /// The object changed (new ETag, or a different size) between its
    /// listing and this read. Never retried: mixing two versions of an
    /// object would report findings at wrong places.
    #[error("object changed during scan: {target}: {reason}")]
    Changed {
        /// The object.
        target: String,
        /// What changed.
        reason: String,
    },
    /// The object is in an archive storage class and cannot be read without
    /// a restore.
    #[error("{target}: in archive storage ({storage_class}), not restored")]
    Archived {
        /// The object.
        target: String,
        /// The storage class or the store's error code.
        storage_class: String,
    },
    /// The circuit breaker of the endpoint is open after repeated failures:
    /// the call was not made.
    #[error(
        "endpoint {endpoint} is failing; calls paused for {remaining:?} (circuit breaker open)"
    )]
    CircuitOpen {
        /// The endpoint.
        endpoint: String,
        /// How long the breaker stays open.
        remaining: Duration,
    },
    /// An error of the `object_store` crate (for `gs://`, `az://`,
    /// `memory://`).
    #[error("{operation} {target}: {source}")]
    Store {
        /// What was being done.
        operation: &'static str,
        /// The object or prefix concerned.
        target: String,
        /// The error.
        source: object_store::Error,
    },
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" {c}")).unwrap_or_default()
}

fn message_suffix(message: &Option<String>) -> String {
    message
        .as_ref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

impl Error {
    /// How the scheduler should treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Status {
                status,
                code,
                retry_after,
                ..
            } => classify_status(*status, code.as_deref(), *retry_after),
            Error::Transport { .. } => ErrorClass::Retryable,
            Error::CircuitOpen { remaining, .. } => ErrorClass::Throttled {
                retry_after: Some(*remaining),
            },
            Error::Archived { .. } => ErrorClass::Archived,
            Error::Store { source, .. } => classify_store_error(source),
            Error::Location { .. }
            | Error::Config { .. }
            | Error::InsideRuntime
            | Error::Credentials { .. }
            | Error::Malformed { .. }
            | Error::Changed { .. } => ErrorClass::Permanent,
        }
    }

    /// Whether this failure counts against the endpoint's health (the
    /// circuit breaker): transport failures and 5xx answers do, a throttle,
    /// a 404 or a changed object do not.
    pub(crate) fn is_endpoint_failure(&self) -> bool {
        match self {
            Error::Status { status, .. } => *status >= 500 && self.class() == ErrorClass::Retryable,
            Error::Transport { .. } => true,
            Error::Store { .. } => self.class() == ErrorClass::Retryable,
            _ => false,
        }
    }
}

/// The class of an HTTP error answer.
///
/// 429 and S3's `SlowDown` (a 503) are throttles; other 5xx, 408 and S3's
/// `RequestTimeout` are transient; every other 4xx is permanent for the
/// object. An archived object (S3 `InvalidObjectState`, Azure
/// `BlobArchived`) is skipped.
pub(crate) fn classify_status(
    status: u16,
    code: Option<&str>,
    retry_after: Option<Duration>,
) -> ErrorClass {
    match (status, code) {
        (_, Some("InvalidObjectState" | "BlobArchived")) => ErrorClass::Archived,
        (429, _) | (_, Some("SlowDown" | "Throttling" | "ThrottlingException")) => {
            ErrorClass::Throttled { retry_after }
        }
        (408, _) | (500..=599, _) | (_, Some("RequestTimeout" | "InternalError")) => {
            ErrorClass::Retryable
        }
        _ => ErrorClass::Permanent,
    }
}

/// The class of an `object_store` error: by the HTTP answer it carries
/// (see [`HttpStatus`]), else by its kind (a transport failure is
/// retryable, a rejected path or a missing object permanent).
fn classify_store_error(err: &object_store::Error) -> ErrorClass {
    if let Some(status) = http_status(err) {
        return classify_status(status.status, status.code.as_deref(), status.retry_after);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if current
            .downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            return ErrorClass::Retryable;
        }
        source = current.source();
    }
    ErrorClass::Permanent
}

/// The HTTP error answer behind an `object_store` error, if there is one.
pub(crate) fn http_status(err: &object_store::Error) -> Option<&HttpStatus> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if let Some(status) = current.downcast_ref::<HttpStatus>() {
            return Some(status);
        }
        source = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_s3_means_them() {
        let secs = Some(Duration::from_secs(3));
        assert_eq!(
            classify_status(503, Some("SlowDown"), secs),
            ErrorClass::Throttled { retry_after: secs }
        );
        assert_eq!(
            classify_status(429, None, None),
            ErrorClass::Throttled { retry_after: None }
        );
        for status in [500, 502, 503, 504, 408] {
            assert_eq!(classify_status(status, None, None), ErrorClass::Retryable);
        }
        for status in [400, 401, 403, 404, 412, 416] {
            assert_eq!(classify_status(status, None, None), ErrorClass::Permanent);
        }
        assert_eq!(
            classify_status(403, Some("InvalidObjectState"), None),
            ErrorClass::Archived
        );
    }

    #[test]
    fn only_transient_failures_count_against_the_endpoint() {
        let status = |status, code: Option<&str>| Error::Status {
            operation: "read",
            target: "s3://b/k".into(),
            status,
            code: code.map(str::to_owned),
            message: None,
            retry_after: None,
        };
        assert!(status(500, None).is_endpoint_failure());
        assert!(!status(503, Some("SlowDown")).is_endpoint_failure());
        assert!(!status(404, None).is_endpoint_failure());
        let reset = Error::Transport {
            operation: "read",
            target: "s3://b/k".into(),
            reason: "connection reset".into(),
        };
        assert!(reset.is_endpoint_failure());
    }
}
