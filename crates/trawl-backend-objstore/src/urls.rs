//! Single `http(s)://` objects: one object per URL, no listing.
//!
//! The size and ETag come from a `HEAD` at listing time; reads are ranged
//! `GET`s with `If-Match` on a strong ETag, so an object that changes
//! during the scan fails instead of mixing two versions. A server that
//! ignores `Range` answers 200 with the whole body: the read then skips to
//! the asked offset (correct, if wasteful).

use std::ops::Range;

use http::{Method, StatusCode, header};
use object_store::client::{HttpClient, HttpRequestBody};

use crate::error::{Error, Result};
use crate::http::{Op, execute, is_success, read_body_into, status_error};
use crate::location::redact_url;

/// What a `HEAD` said of a URL.
#[derive(Debug)]
pub(crate) struct UrlObject {
    pub(crate) size: u64,
    pub(crate) etag: Option<String>,
}

/// `HEAD url`: the size (required) and a strong ETag (if any).
pub(crate) async fn head(client: &HttpClient, url: &str) -> Result<UrlObject> {
    let shown = redact_url(url);
    let op = Op {
        operation: "head",
        target: &shown,
    };
    let request = http::Request::builder()
        .method(Method::HEAD)
        .uri(url)
        .body(HttpRequestBody::empty())
        .map_err(|e| op.malformed(format!("not a valid request URL: {e}")))?;
    let response = execute(client, request, op).await?;
    if !response.status().is_success() {
        return Err(status_error(response, op).await);
    }
    let headers = response.headers();
    let size = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .ok_or_else(|| op.malformed("no Content-Length: the size is unknown"))?;
    let etag = headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|e| !e.starts_with("W/"))
        .map(str::to_owned);
    Ok(UrlObject { size, etag })
}

/// Reads `range` of `url` into `dst`.
pub(crate) async fn read(
    client: &HttpClient,
    url: &str,
    etag: Option<&str>,
    range: Range<u64>,
    dst: &mut [u8],
) -> Result<()> {
    let shown = redact_url(url);
    let op = Op {
        operation: "read",
        target: &shown,
    };
    let mut request = http::Request::builder()
        .method(Method::GET)
        .uri(url)
        .header(
            header::RANGE,
            format!("bytes={}-{}", range.start, range.end - 1),
        );
    if let Some(etag) = etag {
        request = request.header(header::IF_MATCH, etag);
    }
    let request = request
        .body(HttpRequestBody::empty())
        .map_err(|e| op.malformed(format!("not a valid request URL: {e}")))?;
    let response = execute(client, request, op).await?;
    match response.status() {
        StatusCode::PRECONDITION_FAILED => {
            return Err(Error::Changed {
                target: shown,
                reason: "its ETag no longer matches".into(),
            });
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            return Err(Error::Changed {
                target: shown,
                reason: format!("it is now shorter than {} bytes", range.end),
            });
        }
        status if !is_success(status) => return Err(status_error(response, op).await),
        _ => {}
    }
    let skip = if response.status() == StatusCode::OK {
        range.start
    } else {
        0
    };
    read_body_into(response, skip, dst, true, op).await?;
    Ok(())
}
