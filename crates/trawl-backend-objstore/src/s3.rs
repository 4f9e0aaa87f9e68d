//! S3 by raw, signed requests.
//!
//! `object_store` parses every key of a listing page into its `Path`, which
//! rejects keys S3 accepts (`a//b`, `.` or `..` segments, control
//! characters): one such key fails the whole page, continuation token
//! included, and the listing can go no further. Its `ObjectMeta` also lacks
//! the storage class. So S3 listing and reads are made here, with
//! `ListObjectsV2` (`encoding-type=url`, so any key survives the XML) and
//! ranged `GET`s, signed with `object_store`'s own [`AwsAuthorizer`] and
//! credentials (environment, web identity, container and instance metadata)
//! and sent through its HTTP client.

use std::ops::Range;
use std::time::SystemTime;

use http::{Method, header};
use object_store::ClientOptions;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{
    ClientConfigKey, HttpClient, HttpConnector, HttpRequest, HttpRequestBody, ReqwestConnector,
};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::http::{Op, execute, is_success, read_body_into, read_text, request, status_error};

/// Storage classes whose objects cannot be read without a restore.
const ARCHIVE_CLASSES: &[&str] = &["GLACIER", "DEEP_ARCHIVE"];

/// A listing page is at most 1,000 keys of at most 1 KiB each.
const MAX_LISTING_BYTES: usize = 8 << 20;

/// A signed-request client for one bucket.
#[derive(Debug)]
pub(crate) struct S3Client {
    http: HttpClient,
    /// `None` for anonymous access (public buckets).
    credentials: Option<AwsCredentialProvider>,
    region: String,
    /// `https://bucket.s3.region.amazonaws.com` or `http://endpoint/bucket`.
    bucket_url: String,
    bucket: String,
}

/// One entry of a listing page.
#[derive(Debug)]
pub(crate) struct ListedObject {
    pub(crate) key: Vec<u8>,
    pub(crate) size: u64,
    pub(crate) etag: Option<String>,
    /// `LastModified`, when the server sent one that parses.
    pub(crate) modified: Option<SystemTime>,
    /// Set when the object is archived and not restored.
    pub(crate) archived: Option<String>,
}

/// A page of `ListObjectsV2`.
#[derive(Debug)]
pub(crate) struct ListPage {
    pub(crate) objects: Vec<ListedObject>,
    pub(crate) truncated: bool,
}

impl S3Client {
    /// Configures the client from the builder's settings (the `AWS_*`
    /// environment, the URL and the explicit options).
    pub(crate) fn new(
        builder: AmazonS3Builder,
        client_options: &ClientOptions,
    ) -> Result<S3Client> {
        let config = |key: AmazonS3ConfigKey| builder.get_config_value(&key);
        let bucket = config(AmazonS3ConfigKey::Bucket).ok_or_else(|| config_error("no bucket"))?;
        let region = config(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let anonymous = config(AmazonS3ConfigKey::SkipSignature).is_some_and(|v| is_true(&v));
        let virtual_hosted =
            config(AmazonS3ConfigKey::VirtualHostedStyleRequest).is_some_and(|v| is_true(&v));
        let bucket_url = match config(AmazonS3ConfigKey::Endpoint) {
            Some(endpoint) if virtual_hosted => endpoint.trim_end_matches('/').to_owned(),
            Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            None => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        };
        let allow_http = config(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| is_true(&v));
        if bucket_url.starts_with("http://") && !allow_http {
            return Err(config_error(
                "the endpoint is plain http://: set AWS_ALLOW_HTTP=true to allow it",
            ));
        }
        // `build` resolves the credential chain (static keys, web identity,
        // container or instance metadata) without any request yet.
        let store = builder
            .build()
            .map_err(|e| config_error(&crate::http::error_chain(&e)))?;
        let http = ReqwestConnector::default()
            .connect(&client_options.clone().with_allow_http(allow_http))
            .map_err(|e| config_error(&crate::http::error_chain(&e)))?;
        Ok(S3Client {
            http,
            credentials: (!anonymous).then(|| store.credentials().clone()),
            region,
            bucket_url,
            bucket,
        })
    }

    /// The endpoint, for the circuit breaker and messages.
    pub(crate) fn endpoint(&self) -> &str {
        &self.bucket_url
    }

    /// `s3://bucket/key`, as objects are shown.
    pub(crate) fn display(&self, key: &[u8]) -> Vec<u8> {
        let mut display = format!("s3://{}/", self.bucket).into_bytes();
        display.extend_from_slice(key);
        display
    }

    /// Lists up to `max` keys under `prefix` that sort after `start_after`.
    pub(crate) async fn list(
        &self,
        prefix: &str,
        start_after: Option<&[u8]>,
        max: usize,
    ) -> Result<ListPage> {
        let target = format!("s3://{}/{prefix}", self.bucket);
        let op = Op {
            operation: "list",
            target: &target,
        };
        let mut url = format!(
            "{}?list-type=2&encoding-type=url&max-keys={}&prefix={}",
            self.bucket_url,
            max.clamp(1, 1000),
            encode(prefix.as_bytes(), true)
        );
        if let Some(after) = start_after {
            url.push_str("&start-after=");
            url.push_str(&encode(after, true));
        }
        // Restored archived objects are readable: the restore status says so.
        let restore_status = (
            header::HeaderName::from_static("x-amz-optional-object-attributes"),
            "RestoreStatus",
        );
        let request = request(Method::GET, &url, &[restore_status], op)?;
        let response = execute(&self.http, self.sign(request).await?, op).await?;
        if !response.status().is_success() {
            return Err(status_error(response, op).await);
        }
        let text = read_text(response, MAX_LISTING_BYTES, op).await?;
        parse_listing(&text).map_err(|reason| op.malformed(reason))
    }

    /// Reads `range` of `key` into `dst` (exactly `range`'s length), at the
    /// listed version when `etag` is known.
    pub(crate) async fn read(
        &self,
        key: &[u8],
        etag: Option<&str>,
        range: Range<u64>,
        dst: &mut [u8],
    ) -> Result<()> {
        let target = String::from_utf8_lossy(&self.display(key)).into_owned();
        let op = Op {
            operation: "read",
            target: &target,
        };
        let url = format!("{}/{}", self.bucket_url, encode_key(key));
        let range_header = format!("bytes={}-{}", range.start, range.end - 1);
        let mut headers = vec![(header::RANGE, range_header.as_str())];
        if let Some(etag) = etag {
            headers.push((header::IF_MATCH, etag));
        }
        let request = request(Method::GET, &url, &headers, op)?;
        let response = execute(&self.http, self.sign(request).await?, op).await?;
        let status = response.status().as_u16();
        if !is_success(response.status()) {
            let err = status_error(response, op).await;
            return Err(match (status, &err) {
                (412, _) => Error::Changed {
                    target,
                    reason: "its ETag no longer matches the listing".into(),
                },
                (416, _) => Error::Changed {
                    target,
                    reason: format!("it is now shorter than {} bytes", range.end),
                },
                (
                    _,
                    Error::Status {
                        code: Some(code), ..
                    },
                ) if code == "InvalidObjectState" => Error::Archived {
                    target,
                    storage_class: code.clone(),
                },
                _ => err,
            });
        }
        // A 200 answers a range the server ignored: the body starts at 0.
        let skip = if status == 200 { range.start } else { 0 };
        read_body_into(response, skip, dst, true, op).await?;
        Ok(())
    }

    /// Creates the bucket (tests and benchmarks against a local server).
    pub(crate) async fn create_bucket(&self) -> Result<()> {
        let op = Op {
            operation: "create bucket",
            target: &self.bucket,
        };
        let request = request(Method::PUT, &self.bucket_url, &[], op)?;
        let response = execute(&self.http, self.sign(request).await?, op).await?;
        if response.status().is_success() || response.status().as_u16() == 409 {
            return Ok(());
        }
        Err(status_error(response, op).await)
    }

    /// Stores `body` under `key`, which may be any bytes (tests put keys
    /// that `object_store` cannot name).
    pub(crate) async fn put(
        &self,
        key: &[u8],
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<()> {
        let target = String::from_utf8_lossy(key).into_owned();
        let op = Op {
            operation: "put",
            target: &target,
        };
        let url = format!("{}/{}", self.bucket_url, encode_key(key));
        let headers = headers
            .iter()
            .map(|(name, value)| {
                header::HeaderName::try_from(*name)
                    .map(|name| (name, *value))
                    .map_err(|e| config_error(&format!("bad header name {name}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut request = request(Method::PUT, &url, &headers, op)?;
        *request.body_mut() = HttpRequestBody::from(body);
        let response = execute(&self.http, self.sign(request).await?, op).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(status_error(response, op).await)
    }

    async fn sign(&self, mut request: HttpRequest) -> Result<HttpRequest> {
        let Some(provider) = &self.credentials else {
            return Ok(request);
        };
        // Static keys cannot fail; what fails is the instance or container
        // metadata lookup of a machine that has no role: retrying every
        // object against it would only multiply the wait.
        let credential = provider
            .get_credential()
            .await
            .map_err(|e| Error::Credentials {
                endpoint: format!("s3://{}", self.bucket),
                reason: crate::http::error_chain(&e),
            })?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .with_sign_payload(false)
            .try_authorize(&mut request, None)
            .map_err(|e| config_error(&format!("cannot sign a request: {e}")))?;
        Ok(request)
    }
}

fn config_error(reason: &str) -> Error {
    Error::Config {
        scheme: "s3",
        reason: reason.to_owned(),
    }
}

fn is_true(value: &str) -> bool {
    matches!(value.to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    encoding_type: Option<String>,
    #[serde(default)]
    contents: Vec<Contents>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Contents {
    key: String,
    size: u64,
    #[serde(rename = "ETag", default)]
    etag: Option<String>,
    #[serde(default)]
    last_modified: Option<String>,
    #[serde(default)]
    storage_class: Option<String>,
    #[serde(default)]
    restore_status: Option<RestoreStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RestoreStatus {
    #[serde(default)]
    restore_expiry_date: Option<String>,
}

fn parse_listing(text: &str) -> std::result::Result<ListPage, String> {
    let result: ListBucketResult =
        quick_xml::de::from_str(text).map_err(|e| format!("ListObjectsV2 response: {e}"))?;
    let url_encoded = result.encoding_type.as_deref() == Some("url");
    let objects = result
        .contents
        .into_iter()
        .map(|c| {
            let key = if url_encoded {
                decode(&c.key)
            } else {
                c.key.into_bytes()
            };
            let restored = c
                .restore_status
                .is_some_and(|r| r.restore_expiry_date.is_some());
            let archived = c
                .storage_class
                .filter(|class| ARCHIVE_CLASSES.contains(&class.as_str()) && !restored);
            ListedObject {
                key,
                size: c.size,
                etag: c.etag.filter(|e| !e.is_empty()),
                // Unparsable: unknown, and an unknown time is scanned.
                modified: c
                    .last_modified
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                    .map(SystemTime::from),
                archived,
            }
        })
        .collect();
    Ok(ListPage {
        objects,
        truncated: result.is_truncated,
    })
}

/// Percent-encodes a key for a URL path. `/` stays a separator, unless the
/// key has segments a URL would normalise away (`.`, `..`), in which case
/// every `/` is encoded too and the key travels as one segment.
fn encode_key(key: &[u8]) -> String {
    let dot_segment = key.split(|&b| b == b'/').any(|s| s == b"." || s == b"..");
    encode(key, dot_segment)
}

/// Percent-encodes every byte but the unreserved ones (and `/` unless
/// `slash` is set).
fn encode(bytes: &[u8], slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (b == b'/' && !slash) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `encoding-type=url` keys (percent-encoding, `+` for space; a
/// key's own `+` arrives as `%2B`). A `%` without two hex digits is kept.
fn decode(text: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(&text.replace('+', " ")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_url_encoding() {
        for key in [
            &b"plain/key.txt"[..],
            b"a//b",
            b"a/../b",
            b"./x",
            b"ctl\x01\x7f/tab\there",
            b"spa ce+plus%pct",
            "ünïcödé/ключ".as_bytes(),
        ] {
            assert_eq!(decode(&encode(key, true)), key, "{key:?}");
        }
        assert_eq!(encode_key(b"a/b c"), "a/b%20c");
        assert_eq!(encode_key(b"a/../b"), "a%2F..%2Fb");
        assert_eq!(decode("a+b%2"), b"a b%2");
    }

    #[test]
    fn parses_a_listing_with_archived_and_restored_objects() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix></Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>
  <EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
  <Contents><Key>a%2F%2Fb</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>
    <ETag>&quot;abc&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key>cold</Key><ETag>"d"</ETag><Size>5</Size><StorageClass>GLACIER</StorageClass></Contents>
  <Contents><Key>thawed</Key><ETag>"e"</ETag><Size>5</Size><StorageClass>DEEP_ARCHIVE</StorageClass>
    <RestoreStatus><IsRestoreInProgress>false</IsRestoreInProgress>
    <RestoreExpiryDate>2026-12-01T00:00:00.000Z</RestoreExpiryDate></RestoreStatus></Contents>
  <NextContinuationToken>tok</NextContinuationToken>
</ListBucketResult>"#;
        let page = parse_listing(xml).unwrap();
        assert!(page.truncated);
        assert_eq!(page.objects.len(), 3);
        assert_eq!(page.objects[0].key, b"a//b");
        assert_eq!(page.objects[0].etag.as_deref(), Some("\"abc\""));
        assert_eq!(page.objects[0].size, 12);
        assert_eq!(
            page.objects[0].modified,
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600))
        );
        assert_eq!(page.objects[1].modified, None, "no LastModified");
        assert_eq!(page.objects[1].archived.as_deref(), Some("GLACIER"));
        assert_eq!(page.objects[2].archived, None, "restored objects are read");
    }

    #[test]
    fn an_empty_listing_parses() {
        let xml = "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>";
        let page = parse_listing(xml).unwrap();
        assert!(page.objects.is_empty() && !page.truncated);
        assert!(parse_listing("<html>oops").is_err());
    }
}
