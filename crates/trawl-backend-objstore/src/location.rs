//! Scan locations: which store a URL names, and the prefix inside it.

use url::Url;

use crate::error::{Error, Result};

/// What a scan URL points at.
///
/// The prefix is a plain string prefix of the object keys, as S3's
/// `ListObjectsV2` takes it: `s3://bucket/logs/` is the folder `logs`,
/// `s3://bucket/logs` also matches `logs-old/…`, and a full key names one
/// object. The same holds for every scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// `s3://bucket/prefix`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix (may be empty).
        prefix: String,
    },
    /// `gs://bucket/prefix`.
    Gcs {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
    },
    /// `az://container/prefix`, `azure://…`, `abfs[s]://container@account…/prefix`.
    Azure {
        /// The URL up to the container, as `object_store` parses it.
        store_url: String,
        /// The key prefix.
        prefix: String,
    },
    /// `memory://prefix`: an empty in-memory store (for tests and for
    /// programs that hand their own store to
    /// [`ObjectStoreBackend::from_store`](crate::ObjectStoreBackend::from_store)).
    Memory {
        /// The key prefix.
        prefix: String,
    },
    /// One `http://` or `https://` object per URL (plain HTTP has no
    /// listing).
    Http {
        /// The URLs.
        urls: Vec<String>,
    },
}

/// Whether `input` is a URL this crate handles (and not a local path).
pub fn is_remote_url(input: &str) -> bool {
    let Some((scheme, _)) = input.split_once("://") else {
        return false;
    };
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "memory" | "http" | "https"
    )
}

impl Location {
    /// Parses a scan URL.
    ///
    /// ```
    /// use trawl_backend_objstore::Location;
    ///
    /// let location = Location::parse("s3://logs-bucket/2026/").unwrap();
    /// assert_eq!(
    ///     location,
    ///     Location::S3 { bucket: "logs-bucket".into(), prefix: "2026/".into() }
    /// );
    /// assert!(Location::parse("s3://").is_err());
    /// ```
    pub fn parse(input: &str) -> Result<Location> {
        let invalid = |reason: &str| Error::Location {
            input: redact_url(input),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = input
            .split_once("://")
            .ok_or_else(|| invalid("not a URL (expected scheme://…)"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = path.to_owned();
        match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Ok(Location::S3 {
                bucket: bucket_name(authority).map_err(|r| invalid(&r))?,
                prefix,
            }),
            "gs" => Ok(Location::Gcs {
                bucket: bucket_name(authority).map_err(|r| invalid(&r))?,
                prefix,
            }),
            "az" | "azure" | "abfs" | "abfss" => {
                bucket_name(authority.split('@').next().unwrap_or(""))
                    .map_err(|r| invalid(&format!("container: {r}")))?;
                Ok(Location::Azure {
                    store_url: format!("{scheme}://{authority}"),
                    prefix,
                })
            }
            "memory" => Ok(Location::Memory {
                prefix: rest.to_owned(),
            }),
            "http" | "https" => {
                let url = Url::parse(input).map_err(|e| invalid(&e.to_string()))?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(invalid("no host"));
                }
                Ok(Location::Http {
                    urls: vec![input.to_owned()],
                })
            }
            other => Err(invalid(&format!(
                "unsupported scheme '{other}' (expected s3, gs, az, abfs, memory, http or https)"
            ))),
        }
    }

    /// The URL scheme, as shown in messages.
    pub fn scheme(&self) -> &'static str {
        match self {
            Location::S3 { .. } => "s3",
            Location::Gcs { .. } => "gs",
            Location::Azure { .. } => "az",
            Location::Memory { .. } => "memory",
            Location::Http { .. } => "http",
        }
    }
}

fn bucket_name(authority: &str) -> std::result::Result<String, String> {
    if authority.is_empty() {
        return Err("no bucket name".into());
    }
    if authority.contains(['?', '#', '@', ' ']) {
        return Err(format!("'{authority}' is not a valid bucket name"));
    }
    Ok(authority.to_owned())
}

/// A URL as it may be shown: no user or password, and the values of query
/// parameters that look like credentials (pre-signed URLs carry
/// `X-Amz-Signature`, SAS tokens `sig`) replaced by `REDACTED`.
pub fn redact_url(input: &str) -> String {
    let Ok(mut url) = Url::parse(input) else {
        // Not a URL: cut anything that looks like userinfo or a query.
        let cut = input.find(['?', '@']).unwrap_or(input.len());
        return input[..cut].to_owned();
    };
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                let secret = [
                    "sig",
                    "token",
                    "credential",
                    "key",
                    "secret",
                    "password",
                    "auth",
                ]
                .iter()
                .any(|s| lower.contains(s));
                let v = if secret {
                    "REDACTED".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            Location::parse("s3://b").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            Location::parse("gs://b/x/y").unwrap(),
            Location::Gcs {
                bucket: "b".into(),
                prefix: "x/y".into()
            }
        );
        assert_eq!(
            Location::parse("abfss://c@acct.dfs.core.windows.net/p/").unwrap(),
            Location::Azure {
                store_url: "abfss://c@acct.dfs.core.windows.net".into(),
                prefix: "p/".into()
            }
        );
        assert_eq!(
            Location::parse("memory://p").unwrap(),
            Location::Memory { prefix: "p".into() }
        );
        assert!(matches!(
            Location::parse("https://example.com/a.txt").unwrap(),
            Location::Http { .. }
        ));
    }

    #[test]
    fn rejects_what_it_cannot_scan_with_the_reason() {
        for (input, reason) in [
            ("s3://", "no bucket name"),
            ("ftp://host/x", "unsupported scheme 'ftp'"),
            ("gs:/b", "not a URL"),
            ("https://", "empty host"),
        ] {
            let err = Location::parse(input).unwrap_err().to_string();
            assert!(err.contains(reason), "{input}: {err}");
        }
    }

    #[test]
    fn tells_urls_from_paths() {
        assert!(is_remote_url("s3://b/k"));
        assert!(is_remote_url("HTTPS://x"));
        assert!(!is_remote_url("./s3:/x"));
        assert!(!is_remote_url("file:///tmp"));
        assert!(!is_remote_url("/tmp/x"));
    }

    #[test]
    fn redacts_credentials_in_urls() {
        let shown = redact_url(
            "https://user:pw@bucket.s3.amazonaws.com/k?X-Amz-Signature=abc&X-Amz-Credential=AKIA&part=2",
        );
        assert!(!shown.contains("pw") && !shown.contains("abc") && !shown.contains("AKIA"));
        assert!(shown.contains("part=2"), "{shown}");
        assert_eq!(redact_url("not a url?token=x"), "not a url");
    }
}
