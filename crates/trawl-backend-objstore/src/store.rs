//! `gs://`, `az://` and `memory://` through `object_store`'s `ObjectStore`.
//!
//! Listing pages with `list_with_offset` (resume after the last key) and
//! reads are ranged `get_opts` calls with `if_match` on the listed ETag.
//! `object_store` parses every key into its `Path`: a key it rejects
//! (`a//b`, `.` or `..` segments, control characters) fails the listing
//! page it is on, and since the key is unknown, the listing cannot resume
//! past it. The scan then reports the listing as failed (incomplete),
//! never silently short. S3 does not have this limit (see `s3.rs`).

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};

use crate::error::{Error, Result, http_status};

/// One store and the display prefix of its objects (`gs://bucket/`).
#[derive(Debug)]
pub(crate) struct StoreClient {
    store: Arc<dyn ObjectStore>,
    display_base: String,
}

/// What one listing call saw.
#[derive(Debug, Default)]
pub(crate) struct StoreListing {
    pub(crate) objects: Vec<StoreObject>,
    /// The last key seen, under the prefix or not: the next call resumes
    /// after it.
    pub(crate) last_seen: Option<String>,
    /// No keys under the prefix remain.
    pub(crate) done: bool,
}

/// One entry of a listing page.
#[derive(Debug)]
pub(crate) struct StoreObject {
    pub(crate) key: String,
    pub(crate) size: u64,
    pub(crate) etag: Option<String>,
    pub(crate) modified: SystemTime,
}

impl StoreClient {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, display_base: String) -> StoreClient {
        StoreClient {
            store,
            display_base,
        }
    }

    pub(crate) fn display(&self, key: &[u8]) -> Vec<u8> {
        let mut display = self.display_base.clone().into_bytes();
        display.extend_from_slice(key);
        display
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.display_base
    }

    /// Lists keys that start with the string `prefix` and sort after
    /// `after`, looking at up to `max` entries.
    pub(crate) async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<StoreListing> {
        // `object_store` prefixes are whole path segments: a string prefix
        // is listed from its folder and filtered. Listings are sorted, so
        // the keys under the prefix are one run.
        let folder = prefix.rfind('/').map(|end| Path::from(&prefix[..end]));
        let mut stream = match after {
            Some(after) => self
                .store
                .list_with_offset(folder.as_ref(), &Path::from(after)),
            None => self.store.list(folder.as_ref()),
        };
        let mut listing = StoreListing::default();
        for _ in 0..max {
            let Some(meta) = stream.next().await else {
                listing.done = true;
                return Ok(listing);
            };
            let meta = meta.map_err(|source| Error::Store {
                operation: "list",
                target: format!("{}{prefix}", self.display_base),
                source,
            })?;
            let key = meta.location.to_string();
            if key.starts_with(prefix) {
                listing.objects.push(StoreObject {
                    key: key.clone(),
                    size: meta.size,
                    etag: meta.e_tag,
                    modified: meta.last_modified.into(),
                });
            } else if key.as_str() > prefix {
                listing.done = true;
                return Ok(listing);
            }
            listing.last_seen = Some(key);
        }
        Ok(listing)
    }

    /// Reads `range` of `key` into `dst`, at the listed version when `etag`
    /// is known.
    pub(crate) async fn read(
        &self,
        key: &str,
        etag: Option<&str>,
        range: Range<u64>,
        dst: &mut [u8],
    ) -> Result<()> {
        let target = format!("{}{key}", self.display_base);
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            if_match: etag.map(str::to_owned),
            ..GetOptions::default()
        };
        let store_error = |source| Error::Store {
            operation: "read",
            target: target.clone(),
            source,
        };
        let result = match self.store.get_opts(&Path::from(key), options).await {
            Ok(result) => result,
            Err(err)
                if matches!(err, object_store::Error::Precondition { .. })
                    || http_status(&err).is_some_and(|s| s.status == 412) =>
            {
                return Err(Error::Changed {
                    target,
                    reason: "its ETag no longer matches the listing".into(),
                });
            }
            Err(err) => return Err(store_error(err)),
        };
        if result.range != range {
            return Err(Error::Changed {
                target,
                reason: format!(
                    "asked for bytes {range:?}, got {:?} (the object is now {} bytes)",
                    result.range, result.meta.size
                ),
            });
        }
        let mut stream = result.into_stream();
        let mut filled = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(store_error)?;
            let n = chunk.len().min(dst.len() - filled);
            dst[filled..filled + n].copy_from_slice(&chunk[..n]);
            filled += n;
        }
        if filled < dst.len() {
            return Err(Error::Transport {
                operation: "read",
                target,
                reason: format!("body ended after {filled} of {} bytes", dst.len()),
            });
        }
        Ok(())
    }
}
