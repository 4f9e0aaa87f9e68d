//! Single `http(s)://` objects: one object per URL, no listing.
//!
//! The size and ETag come from a `HEAD` at listing time; reads are ranged
//! `GET`s with `If-Match` on a strong ETag, so an object that changes
//! during the scan fails instead of mixing two versions. A server that
//! ignores `Range` answers 200 with the whole body: the read then skips to
//! the asked offset (correct, if wasteful).

use std::ops::Range;
use std::time::SystemTime;

use http::{HeaderMap, Method, StatusCode, header};
use object_store::client::HttpClient;

use crate::error::{Error, Result};
use crate::http::{Op, execute, is_success, read_body_into, request, status_error};
use crate::location::redact_url;

/// What a `HEAD` said of a URL.
#[derive(Debug)]
pub(crate) struct UrlObject {
    pub(crate) size: u64,
    pub(crate) etag: Option<String>,
    /// `Last-Modified`, when sent.
    pub(crate) modified: Option<SystemTime>,
}

/// `HEAD url`: the size and a strong ETag (if any). A server that refuses
/// `HEAD` or sends no `Content-Length` is asked for the first byte instead,
/// whose `Content-Range` tells the size.
pub(crate) async fn head(client: &HttpClient, url: &str) -> Result<UrlObject> {
    let shown = redact_url(url);
    let op = Op {
        operation: "head",
        target: &shown,
    };
    let response = execute(client, request(Method::HEAD, url, &[], op)?, op).await?;
    let refused = matches!(response.status().as_u16(), 405 | 501);
    if !refused && !response.status().is_success() {
        return Err(status_error(response, op).await);
    }
    let headers = response.headers();
    if let Some(size) = header_u64(headers, header::CONTENT_LENGTH).filter(|_| !refused) {
        return Ok(UrlObject {
            size,
            etag: strong_etag(headers),
            modified: last_modified(headers),
        });
    }
    let first_byte = [(header::RANGE, "bytes=0-0")];
    let response = execute(client, request(Method::GET, url, &first_byte, op)?, op).await?;
    let status = response.status();
    let headers = response.headers();
    let size = match status {
        StatusCode::PARTIAL_CONTENT => headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok()?.rsplit_once('/')?.1.parse().ok()),
        StatusCode::OK => header_u64(headers, header::CONTENT_LENGTH),
        // An empty object has no first byte.
        StatusCode::RANGE_NOT_SATISFIABLE => Some(0),
        _ => return Err(status_error(response, op).await),
    }
    .ok_or_else(|| op.malformed("neither Content-Length nor Content-Range: the size is unknown"))?;
    Ok(UrlObject {
        size,
        etag: strong_etag(headers),
        modified: last_modified(headers),
    })
}

fn header_u64(headers: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

/// `Last-Modified` (an HTTP date, `Wed, 21 Oct 2015 07:28:00 GMT`); `None`
/// when absent or malformed: an unknown time, which a filter scans.
fn last_modified(headers: &HeaderMap) -> Option<SystemTime> {
    let text = headers.get(header::LAST_MODIFIED)?.to_str().ok()?;
    chrono::DateTime::parse_from_rfc2822(text)
        .ok()
        .map(SystemTime::from)
}

/// The path of `url` as include and exclude globs see it: percent-decoded,
/// without the leading `/`, the query or the fragment
/// (`static/app.js` for `https://host/static/app.js?v=2`).
pub(crate) fn glob_path(url: &str) -> Vec<u8> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Vec::new();
    };
    percent_encoding::percent_decode_str(parsed.path().trim_start_matches('/')).collect()
}

/// `If-Match` compares strongly: a weak ETag cannot pin a version.
fn strong_etag(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|e| !e.starts_with("W/"))
        .map(str::to_owned)
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
    let range_header = format!("bytes={}-{}", range.start, range.end - 1);
    let mut headers = vec![(header::RANGE, range_header.as_str())];
    if let Some(etag) = etag {
        headers.push((header::IF_MATCH, etag));
    }
    let request = request(Method::GET, url, &headers, op)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_see_the_decoded_path_without_query() {
        assert_eq!(
            glob_path("https://u:p@host:8443/static/app%20v2.js?sig=x#top"),
            b"static/app v2.js"
        );
        assert_eq!(glob_path("http://host"), b"");
        assert_eq!(glob_path("http://host/a+b/%zz"), b"a+b/%zz");
    }

    #[test]
    fn last_modified_is_an_http_date() {
        let mut headers = HeaderMap::new();
        assert_eq!(last_modified(&headers), None);
        headers.insert(
            header::LAST_MODIFIED,
            "Thu, 01 Jan 2026 00:00:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            last_modified(&headers),
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600))
        );
        headers.insert(header::LAST_MODIFIED, "yesterday".parse().unwrap());
        assert_eq!(last_modified(&headers), None);
    }
}
