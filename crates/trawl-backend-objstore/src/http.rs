//! Raw HTTP requests through `object_store`'s client: what S3 listing and
//! ranged reads of single URLs need and `object_store` does not expose
//! (response headers, arbitrary keys, storage classes).

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use http::{HeaderMap, StatusCode};
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};

use crate::error::{Error, Result};

/// What a request was for, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op<'a> {
    pub(crate) operation: &'static str,
    pub(crate) target: &'a str,
}

impl Op<'_> {
    pub(crate) fn transport(&self, reason: impl std::fmt::Display) -> Error {
        Error::Transport {
            operation: self.operation,
            target: self.target.to_owned(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn malformed(&self, reason: impl std::fmt::Display) -> Error {
        Error::Malformed {
            operation: self.operation,
            target: self.target.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// An HTTP error answer as `object_store` passes it on: its own errors
/// keep neither the response headers nor the store's error code, so the
/// client of the `gs://` and `az://` stores ([`StatusConnector`]) turns
/// every error answer into this, as the source of the error it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpStatus {
    pub(crate) status: u16,
    pub(crate) code: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) retry_after: Option<Duration>,
}

impl std::fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl std::error::Error for HttpStatus {}

impl HttpStatus {
    /// Reads the status, `Retry-After` and the error body's `<Code>` and
    /// `<Message>` (S3, Azure and GCS XML errors have them).
    async fn of(response: HttpResponse) -> HttpStatus {
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        // Error bodies are small; a cap keeps a misbehaving server from
        // filling memory.
        let body = read_capped(response, 16 * 1024).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        HttpStatus {
            status,
            code: xml_element(&text, "Code"),
            message: xml_element(&text, "Message").map(|m| truncate(&m, 200)),
            retry_after,
        }
    }
}

/// The HTTP client of the `object_store` stores: reqwest's, with every
/// error answer turned into an error whose source is an [`HttpStatus`].
#[derive(Debug, Default)]
pub(crate) struct StatusConnector;

impl HttpConnector for StatusConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(StatusService(inner)))
    }
}

#[derive(Debug)]
struct StatusService(HttpClient);

#[async_trait]
impl HttpService for StatusService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let response = self.0.execute(request).await?;
        if response.status().as_u16() < 400 {
            return Ok(response);
        }
        Err(HttpError::new(
            HttpErrorKind::Unknown,
            HttpStatus::of(response).await,
        ))
    }
}

/// A request without a body; a URL that cannot be parsed is a
/// [`Error::Malformed`] of `op`.
pub(crate) fn request(
    method: http::Method,
    url: &str,
    headers: &[(http::HeaderName, &str)],
    op: Op<'_>,
) -> Result<HttpRequest> {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(name, *value);
    }
    builder
        .body(object_store::client::HttpRequestBody::empty())
        .map_err(|e| op.malformed(format!("not a valid request URL: {e}")))
}

/// Sends `request`; a transport failure becomes [`Error::Transport`].
pub(crate) async fn execute(
    client: &HttpClient,
    request: HttpRequest,
    op: Op<'_>,
) -> Result<HttpResponse> {
    client
        .execute(request)
        .await
        .map_err(|e| op.transport(error_chain(&e)))
}

/// The error for a response with an error status: its S3-style `<Code>`
/// and `<Message>` when the body has them, and its `Retry-After`.
pub(crate) async fn status_error(response: HttpResponse, op: Op<'_>) -> Error {
    let HttpStatus {
        status,
        code,
        message,
        retry_after,
    } = HttpStatus::of(response).await;
    Error::Status {
        operation: op.operation,
        target: op.target.to_owned(),
        status,
        code,
        message,
        retry_after,
    }
}

/// Reads a successful response's body into `dst`, skipping its first
/// `skip` bytes; returns the bytes written. Fails when the body ends before
/// `dst` is full and `expect_full` is set (the server promised those
/// bytes). Bytes past `dst` are not read.
pub(crate) async fn read_body_into(
    response: HttpResponse,
    mut skip: u64,
    dst: &mut [u8],
    expect_full: bool,
    op: Op<'_>,
) -> Result<usize> {
    let mut stream = response.into_body().bytes_stream();
    let mut filled = 0;
    while filled < dst.len() {
        let Some(chunk) = stream.next().await else {
            break;
        };
        let chunk = chunk.map_err(|e| op.transport(error_chain(&e)))?;
        let mut chunk = &chunk[..];
        if skip > 0 {
            let n = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
            chunk = &chunk[n..];
            skip -= n as u64;
        }
        let n = chunk.len().min(dst.len() - filled);
        dst[filled..filled + n].copy_from_slice(&chunk[..n]);
        filled += n;
    }
    if expect_full && filled < dst.len() {
        return Err(op.transport(format!(
            "response body ended after {filled} of {} bytes",
            dst.len()
        )));
    }
    Ok(filled)
}

/// Reads at most `cap` bytes of a body (error bodies, listings).
pub(crate) async fn read_capped(response: HttpResponse, cap: usize) -> Option<Vec<u8>> {
    let mut stream = response.into_body().bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        body.extend_from_slice(&chunk[..chunk.len().min(cap - body.len())]);
        if body.len() >= cap {
            break;
        }
    }
    Some(body)
}

/// Reads a whole body that is expected to be text of moderate size (a
/// listing page: at most 1,000 keys, about 1 MB), failing above `cap`.
pub(crate) async fn read_text(response: HttpResponse, cap: usize, op: Op<'_>) -> Result<String> {
    let mut stream = response.into_body().bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| op.transport(error_chain(&e)))?;
        if body.len() + chunk.len() > cap {
            return Err(op.malformed(format!("response larger than {cap} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| op.malformed("response is not UTF-8"))
}

/// The `Retry-After` header, in seconds (the HTTP-date form is rare from
/// object stores and is ignored: the scheduler's backoff applies).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Whether a status is a success for a ranged read.
pub(crate) fn is_success(status: StatusCode) -> bool {
    status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT
}

/// The text of the first `<name>…</name>` element, unescaped.
pub(crate) fn xml_element(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    quick_xml::escape::unescape(&text[start..end])
        .ok()
        .map(|s| s.into_owned())
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// An error and its sources on one line: reqwest's own message ("error
/// sending request") says little without the cause ("connection reset").
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_s3_error_fields() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate &amp; retry.</Message></Error>";
        assert_eq!(xml_element(body, "Code").as_deref(), Some("SlowDown"));
        assert_eq!(
            xml_element(body, "Message").as_deref(),
            Some("Please reduce your request rate & retry.")
        );
        assert_eq!(xml_element(body, "Missing"), None);
    }

    #[test]
    fn reads_retry_after_in_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
