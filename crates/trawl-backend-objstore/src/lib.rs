//! The object-store backends of trawl: `s3://`, `gs://`, `az://`
//! (`abfs://`), `memory://` and single `http(s)://` objects. **Internal to
//! trawl**: its API follows the needs of `trawl-cli` and may change in any
//! release; use it through the `trawl` crate.
//!
//! [`ObjectStoreBackend`] implements [`RemoteBackend`]:
//!
//! - **Configuration** comes from the URL, the standard environment of each
//!   cloud (`AWS_*` including `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP`,
//!   `GOOGLE_*`, `AZURE_*`) and [`Options`] (`--endpoint`, `--region`,
//!   `--anonymous`). Credentials come from the environment and the
//!   instance or container metadata that `object_store` supports; they are
//!   never logged, and URLs are shown with credentials redacted.
//! - **S3** is listed and read with raw `ListObjectsV2` and ranged `GET`
//!   requests, signed with `object_store`'s `AwsAuthorizer`, so that every
//!   key is scanned (`object_store`'s `Path` rejects some keys S3 accepts,
//!   and one such key would end its listing) and archived objects
//!   (`GLACIER`, `DEEP_ARCHIVE`, not restored) are skipped with that reason.
//!   `gs://`, `az://` and `memory://` go through `object_store`'s
//!   `ObjectStore`; there, a key `Path` rejects fails the listing (counted,
//!   never silent).
//! - **Filters**: [`Options::filter`] (an [`ObjectFilter`]: include and
//!   exclude globs, a maximum size, a modification cut-off) is applied to
//!   each listed object with the listing's size and time, so a filtered
//!   object costs no request beyond its share of a listing page (a URL
//!   left out by the globs is not even asked for its `HEAD`); each is
//!   reported by `take_skipped` with its reason.
//! - **Reads** are ranged, one chunk at a time, never whole objects, at the
//!   version that was listed (`If-Match` on the ETag): an object that changes
//!   during its scan fails with "object changed during scan".
//!   `fetch_range` fills its buffer or fails, as the contract demands.
//! - **One retry policy**: `object_store`'s own retries are off; every
//!   error goes back to the scheduler, classified by
//!   [`Error::class`] (timeouts, resets, 5xx retryable; 429 and `SlowDown`
//!   throttled with `Retry-After`; other 4xx permanent), so every retry
//!   shows in the run's report and follows `trawl-retry`.
//! - **A circuit breaker** per backend (one endpoint) fails calls fast after
//!   repeated transient failures, as a throttle carrying the remaining
//!   cool-down; see [`BreakerConfig`].
//! - **Blocking bridge**: the scheduler's threads block, `object_store` is
//!   async. The backend owns a small tokio runtime (or uses the caller's,
//!   [`Options::runtime`]) and each call is one `block_on` on the calling
//!   thread. Calling it from async code returns [`Error::InsideRuntime`]
//!   instead of panicking; use `spawn_blocking`.
//!
//! ```no_run
//! use trawl_backend::RemoteBackend;
//! use trawl_backend_objstore::{ObjectStoreBackend, Options};
//!
//! let backend = ObjectStoreBackend::from_url("s3://my-bucket/logs/", Options::default())?;
//! let mut cursor = Default::default();
//! for object in backend.list_page(&mut cursor, 100)? {
//!     println!("{} ({} bytes)", String::from_utf8_lossy(&object.display), object.size);
//! }
//! # Ok::<(), trawl_backend_objstore::Error>(())
//! ```

mod breaker;
mod error;
mod http;
mod location;
mod runtime;
mod s3;
mod store;
mod urls;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::client::{HttpClient, HttpConnector, ReqwestConnector};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::memory::InMemory;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use tokio::runtime::Handle;
use trawl_backend::{
    ErrorClass, ObjectFilter, RemoteBackend, RemoteObject, SkipReason, SkippedObject,
};

pub use breaker::{BreakerConfig, BreakerStats};
pub use error::{Error, Result};
pub use location::{Location, is_remote_url, redact_url};

use breaker::CircuitBreaker;
use runtime::Bridge;
use s3::S3Client;
use store::StoreClient;

/// How to reach the store, on top of the URL and the environment.
#[derive(Debug, Clone)]
pub struct Options {
    /// A custom endpoint (an S3-compatible server, an Azure emulator);
    /// overrides `AWS_ENDPOINT_URL`. A plain `http://` endpoint given here
    /// is allowed without `AWS_ALLOW_HTTP`.
    pub endpoint: Option<String>,
    /// The region (S3); overrides `AWS_REGION`. Default `us-east-1`.
    pub region: Option<String>,
    /// Send unsigned requests (public buckets), ignoring any credentials.
    pub anonymous: bool,
    /// The runtime to run requests on; `None` starts one for the backend.
    pub runtime: Option<Handle>,
    /// When the circuit breaker opens.
    pub breaker: BreakerConfig,
    /// The limit for one request, body included (a chunk is a few MiB).
    pub request_timeout: Duration,
    /// The limit for opening a connection.
    pub connect_timeout: Duration,
    /// Further store settings, as `object_store` configuration keys
    /// (`aws_access_key_id`, `google_service_account`,
    /// `azure_storage_account_key`…), applied over the environment: for a
    /// program that holds credentials elsewhere than in its environment.
    pub config: Vec<(String, String)>,
    /// Which objects to scan (default: all). Globs match a key below the
    /// folder of the listed prefix (`a/b.txt` for the key `logs/a/b.txt`
    /// under `s3://bucket/logs/` or `s3://bucket/logs/a`), or a URL's
    /// decoded path without its leading `/`; the size and time are the
    /// listing's (`Size` and `LastModified`, or a URL's `Content-Length`
    /// and `Last-Modified`, unknown when absent, so scanned).
    pub filter: ObjectFilter,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            endpoint: None,
            region: None,
            anonymous: false,
            runtime: None,
            breaker: BreakerConfig::default(),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            config: Vec::new(),
            filter: ObjectFilter::default(),
        }
    }
}

impl Options {
    fn client_options(&self) -> ClientOptions {
        ClientOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.connect_timeout)
    }
}

/// `object_store` retries nothing: the scheduler retries, and counts.
fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    }
}

/// Where the objects come from.
#[derive(Debug)]
enum Source {
    S3 {
        client: S3Client,
        prefix: String,
    },
    Store {
        client: StoreClient,
        prefix: String,
    },
    Urls {
        client: HttpClient,
        urls: Vec<String>,
    },
}

/// A [`RemoteBackend`] over an object store or a list of URLs.
#[derive(Debug)]
pub struct ObjectStoreBackend {
    source: Source,
    breaker: CircuitBreaker,
    filter: ObjectFilter,
    // Last: the runtime outlives the clients that spawned onto it.
    bridge: Bridge,
}

/// How an object is read again: its key (or URL) and the ETag it was
/// listed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHandle {
    key: Vec<u8>,
    etag: Option<String>,
}

/// Where a listing stands.
#[derive(Debug, Default)]
pub struct Cursor {
    /// The last key listed (S3, stores) or the number of URLs listed.
    after: Option<Vec<u8>>,
    next_url: usize,
    done: bool,
    skipped: Vec<SkippedObject>,
}

impl ObjectStoreBackend {
    /// A backend for a scan URL (`s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `memory://…`, `https://host/object`).
    pub fn from_url(url: &str, options: Options) -> Result<ObjectStoreBackend> {
        let bridge = Bridge::new(options.runtime.clone())?;
        // Clients are built inside the runtime: some spawn on build.
        let _entered = bridge.handle().enter();
        let source = match Location::parse(url)? {
            Location::S3 { bucket, prefix } => {
                let builder = s3_builder(&bucket, &options)?;
                let client = S3Client::new(builder, &options.client_options())?;
                Source::S3 { client, prefix }
            }
            Location::Gcs { bucket, prefix } => {
                let mut builder = GoogleCloudStorageBuilder::from_env();
                for (key, value) in &options.config {
                    builder = builder.with_config(parse_key("gs", key)?, value);
                }
                let store = builder
                    .with_bucket_name(&bucket)
                    .with_skip_signature(options.anonymous)
                    .with_retry(no_retries())
                    .with_client_options(options.client_options())
                    .with_http_connector(http::StatusConnector)
                    .build()
                    .map_err(|e| config_error("gs", &e))?;
                Source::Store {
                    client: StoreClient::new(Arc::new(store), format!("gs://{bucket}/")),
                    prefix,
                }
            }
            Location::Azure { store_url, prefix } => {
                let mut builder = MicrosoftAzureBuilder::from_env();
                for (key, value) in &options.config {
                    builder = builder.with_config(parse_key("az", key)?, value);
                }
                builder = builder
                    .with_url(&store_url)
                    .with_skip_signature(options.anonymous)
                    .with_retry(no_retries())
                    .with_http_connector(http::StatusConnector);
                let mut client_options = options.client_options();
                if let Some(endpoint) = &options.endpoint {
                    builder = builder.with_endpoint(endpoint.clone());
                    client_options =
                        client_options.with_allow_http(endpoint.starts_with("http://"));
                }
                builder = builder.with_client_options(client_options);
                let store = builder.build().map_err(|e| config_error("az", &e))?;
                Source::Store {
                    client: StoreClient::new(Arc::new(store), format!("{store_url}/")),
                    prefix,
                }
            }
            Location::Memory { prefix } => Source::Store {
                client: StoreClient::new(Arc::new(InMemory::new()), "memory://".into()),
                prefix,
            },
            Location::Http { urls } => Source::Urls {
                client: http_client(&options)?,
                urls,
            },
        };
        drop(_entered);
        Ok(Self::with_source(source, bridge, &options))
    }

    /// A backend that reads each of `urls` as one object (`--urls FILE`).
    pub fn from_urls(urls: Vec<String>, options: Options) -> Result<ObjectStoreBackend> {
        for url in &urls {
            if !matches!(Location::parse(url)?, Location::Http { .. }) {
                return Err(Error::Location {
                    input: redact_url(url),
                    reason: "a URL list takes http:// and https:// URLs only".into(),
                });
            }
        }
        let bridge = Bridge::new(options.runtime.clone())?;
        let client = {
            let _entered = bridge.handle().enter();
            http_client(&options)?
        };
        Ok(Self::with_source(
            Source::Urls { client, urls },
            bridge,
            &options,
        ))
    }

    /// A backend over a store the caller built (an `InMemory` filled by a
    /// test, a store with custom settings), showing objects as
    /// `display_base` followed by their key, and scanning the keys that
    /// start with `prefix`.
    pub fn from_store(
        store: Arc<dyn ObjectStore>,
        display_base: &str,
        prefix: &str,
        options: Options,
    ) -> Result<ObjectStoreBackend> {
        let bridge = Bridge::new(options.runtime.clone())?;
        let source = Source::Store {
            client: StoreClient::new(store, display_base.to_owned()),
            prefix: prefix.to_owned(),
        };
        Ok(Self::with_source(source, bridge, &options))
    }

    fn with_source(source: Source, bridge: Bridge, options: &Options) -> ObjectStoreBackend {
        let endpoint = match &source {
            Source::S3 { client, .. } => redact_url(client.endpoint()),
            Source::Store { client, .. } => client.endpoint().to_owned(),
            Source::Urls { urls, .. } => urls.first().map(|u| redact_url(u)).unwrap_or_default(),
        };
        ObjectStoreBackend {
            source,
            breaker: CircuitBreaker::new(endpoint, options.breaker),
            filter: options.filter.clone(),
            bridge,
        }
    }

    /// What the circuit breaker has done so far.
    pub fn breaker_stats(&self) -> BreakerStats {
        self.breaker.stats()
    }

    /// Creates the S3 bucket (tests and benchmarks against a local
    /// server; a scanner never needs it).
    #[doc(hidden)]
    pub fn create_bucket(&self) -> Result<()> {
        let Source::S3 { client, .. } = &self.source else {
            return Err(not_s3());
        };
        self.bridge.block_on(client.create_bucket())?
    }

    /// Stores an object under any key, optionally in a storage class
    /// (tests and benchmarks against a local server).
    #[doc(hidden)]
    pub fn put_object(&self, key: &[u8], body: Vec<u8>, storage_class: Option<&str>) -> Result<()> {
        let class = storage_class.map(|class| ("x-amz-storage-class", class));
        self.put_object_with(key, body, class.as_slice())
    }

    /// Stores an object with extra request headers (`x-amz-acl`…).
    #[doc(hidden)]
    pub fn put_object_with(
        &self,
        key: &[u8],
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<()> {
        let Source::S3 { client, .. } = &self.source else {
            return Err(not_s3());
        };
        self.bridge.block_on(client.put(key, body, headers))?
    }

    /// Runs one remote call through the circuit breaker.
    fn call<T>(&self, future: impl Future<Output = Result<T>>) -> Result<T> {
        let admitted = self.breaker.admit(Instant::now());
        if let Err(remaining) = admitted {
            return Err(Error::CircuitOpen {
                endpoint: self.breaker.endpoint().to_owned(),
                remaining,
            });
        }
        let outcome = self.bridge.block_on(future)?;
        let failed = outcome.as_ref().is_err_and(Error::is_endpoint_failure);
        self.breaker.record(failed, Instant::now());
        outcome
    }

    fn list_s3(
        &self,
        client: &S3Client,
        prefix: &str,
        cursor: &mut Cursor,
        max: usize,
    ) -> Result<Vec<RemoteObject<ObjectHandle>>> {
        let mut out = Vec::new();
        let folder = folder_len(prefix);
        // Pages of skipped objects only (archived, filtered out) are
        // skipped whole: a page must not be empty while objects remain.
        while out.is_empty() && !cursor.done {
            let page = self.call(client.list(prefix, cursor.after.as_deref(), max))?;
            cursor.done = !page.truncated || page.objects.is_empty();
            for listed in page.objects {
                cursor.after = Some(listed.key.clone());
                let display = client.display(&listed.key);
                let relative = below_folder(&listed.key, folder);
                if let Some(reason) =
                    self.filter
                        .skip_reason(relative, listed.size, listed.modified)
                {
                    cursor.skipped.push(SkippedObject { display, reason });
                    continue;
                }
                if listed.archived.is_some() {
                    cursor.skipped.push(SkippedObject {
                        display,
                        reason: SkipReason::Archived,
                    });
                    continue;
                }
                out.push(listed_object(display, listed.key, listed.etag, listed.size));
            }
        }
        Ok(out)
    }

    fn list_store(
        &self,
        client: &StoreClient,
        prefix: &str,
        cursor: &mut Cursor,
        max: usize,
    ) -> Result<Vec<RemoteObject<ObjectHandle>>> {
        let mut out = Vec::new();
        let folder = folder_len(prefix);
        while out.is_empty() && !cursor.done {
            let after = cursor
                .after
                .as_deref()
                .map(|a| String::from_utf8_lossy(a).into_owned());
            let listing = self.call(client.list(prefix, after.as_deref(), max))?;
            cursor.done = listing.done || listing.last_seen.is_none();
            cursor.after = listing.last_seen.map(String::into_bytes);
            for object in listing.objects {
                let display = client.display(object.key.as_bytes());
                let relative = below_folder(object.key.as_bytes(), folder);
                if let Some(reason) =
                    self.filter
                        .skip_reason(relative, object.size, Some(object.modified))
                {
                    cursor.skipped.push(SkippedObject { display, reason });
                    continue;
                }
                out.push(listed_object(
                    display,
                    object.key.into_bytes(),
                    object.etag,
                    object.size,
                ));
            }
        }
        Ok(out)
    }

    fn list_urls(
        &self,
        client: &HttpClient,
        urls: &[String],
        cursor: &mut Cursor,
        max: usize,
    ) -> Result<Vec<RemoteObject<ObjectHandle>>> {
        let mut out = Vec::new();
        // Pages of skipped URLs only are skipped whole: a page must not be
        // empty while URLs remain.
        while out.is_empty() && cursor.next_url < urls.len() {
            let end = urls.len().min(cursor.next_url + max);
            // The globs need no request: a URL they leave out is never
            // asked for. Kept aside until the page's `HEAD`s succeed, so
            // that a retried page does not count them twice.
            let mut filtered = Vec::new();
            let mut page = Vec::new();
            for url in &urls[cursor.next_url..end] {
                match self.filter.path_skip_reason(&urls::glob_path(url)) {
                    Some(reason) => filtered.push(SkippedObject {
                        display: redact_url(url).into_bytes(),
                        reason,
                    }),
                    None => page.push(url),
                }
            }
            let heads = if page.is_empty() {
                Vec::new()
            } else {
                self.call(async {
                    let heads =
                        futures::future::join_all(page.iter().map(|url| urls::head(client, url)))
                            .await;
                    // A transient failure is the listing's to retry, the
                    // page whole: an object is never given up on for a
                    // hiccup of its HEAD.
                    match heads
                        .iter()
                        .position(|h| h.as_ref().is_err_and(is_transient))
                    {
                        Some(at) => Err(heads
                            .into_iter()
                            .nth(at)
                            .and_then(Result::err)
                            .expect("an error")),
                        None => Ok(heads),
                    }
                })?
            };
            cursor.next_url = end;
            cursor.skipped.extend(filtered);
            for (url, head) in page.into_iter().zip(heads) {
                let display = redact_url(url).into_bytes();
                let head = match head {
                    Ok(head) => head,
                    Err(err) => {
                        cursor.skipped.push(SkippedObject {
                            display,
                            reason: SkipReason::Unreadable(err.to_string()),
                        });
                        continue;
                    }
                };
                if let Some(reason) = self.filter.metadata_skip_reason(head.size, head.modified) {
                    cursor.skipped.push(SkippedObject { display, reason });
                    continue;
                }
                out.push(listed_object(
                    display,
                    url.clone().into_bytes(),
                    head.etag,
                    head.size,
                ));
            }
        }
        Ok(out)
    }
}

impl RemoteBackend for ObjectStoreBackend {
    type Object = ObjectHandle;
    type Cursor = Cursor;
    type Error = Error;

    fn list_page(
        &self,
        cursor: &mut Cursor,
        max: usize,
    ) -> Result<Vec<RemoteObject<ObjectHandle>>> {
        match &self.source {
            Source::S3 { client, prefix } => self.list_s3(client, prefix, cursor, max),
            Source::Store { client, prefix } => self.list_store(client, prefix, cursor, max),
            Source::Urls { client, urls } => self.list_urls(client, urls, cursor, max),
        }
    }

    fn fetch_range(
        &self,
        obj: &RemoteObject<ObjectHandle>,
        start: u64,
        dst: &mut [u8],
    ) -> Result<usize> {
        if start >= obj.size || dst.is_empty() {
            return Ok(0);
        }
        let len = usize::try_from(obj.size - start).map_or(dst.len(), |rest| rest.min(dst.len()));
        let range = start..start + len as u64;
        let dst = &mut dst[..len];
        let handle = &obj.handle;
        let etag = handle.etag.as_deref();
        match &self.source {
            Source::S3 { client, .. } => self.call(client.read(&handle.key, etag, range, dst))?,
            Source::Store { client, .. } => {
                let key = String::from_utf8_lossy(&handle.key);
                self.call(client.read(&key, etag, range, dst))?
            }
            Source::Urls { client, .. } => {
                let url = String::from_utf8_lossy(&handle.key);
                self.call(urls::read(client, &url, etag, range, dst))?
            }
        }
        Ok(len)
    }

    fn classify_error(&self, err: &Error) -> ErrorClass {
        err.class()
    }

    fn take_skipped(&self, cursor: &mut Cursor) -> Vec<SkippedObject> {
        std::mem::take(&mut cursor.skipped)
    }
}

/// The length of the folder part of a listed prefix (up to its last `/`):
/// filters see keys below it, so `s3://b/logs/20` and `s3://b/logs/` both
/// show `2026/app.log` for the key `logs/2026/app.log`.
fn folder_len(prefix: &str) -> usize {
    prefix.rfind('/').map_or(0, |at| at + 1)
}

/// A listed key as the filters see it: without the first `folder` bytes
/// (see [`folder_len`]); whole if it is shorter, which a listing under the
/// prefix never returns.
fn below_folder(key: &[u8], folder: usize) -> &[u8] {
    key.get(folder..).unwrap_or(key)
}

fn listed_object(
    display: Vec<u8>,
    key: Vec<u8>,
    etag: Option<String>,
    size: u64,
) -> RemoteObject<ObjectHandle> {
    RemoteObject {
        handle: ObjectHandle { key, etag },
        size,
        display,
    }
}

fn s3_builder(bucket: &str, options: &Options) -> Result<AmazonS3Builder> {
    let mut builder = AmazonS3Builder::from_env();
    for (key, value) in &options.config {
        builder = builder.with_config(parse_key("s3", key)?, value);
    }
    builder = builder
        .with_bucket_name(bucket)
        .with_skip_signature(options.anonymous)
        .with_retry(no_retries())
        .with_client_options(options.client_options());
    // `AWS_ENDPOINT_URL_S3` is the more specific setting.
    if let Some(endpoint) = builder.get_config_value(&AmazonS3ConfigKey::S3Endpoint) {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(endpoint) = &options.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(region) = &options.region {
        builder = builder.with_region(region);
    }
    Ok(builder)
}

/// A configuration key of one of `object_store`'s builders.
fn parse_key<K: std::str::FromStr>(scheme: &'static str, key: &str) -> Result<K> {
    key.parse().map_err(|_| Error::Config {
        scheme,
        reason: format!("unknown setting '{key}'"),
    })
}

fn http_client(options: &Options) -> Result<HttpClient> {
    ReqwestConnector::default()
        .connect(&options.client_options().with_allow_http(true))
        .map_err(|e| config_error("http", &e))
}

fn is_transient(err: &Error) -> bool {
    matches!(
        err.class(),
        ErrorClass::Retryable | ErrorClass::Throttled { .. }
    )
}

fn config_error(scheme: &'static str, err: &object_store::Error) -> Error {
    Error::Config {
        scheme,
        reason: http::error_chain(err),
    }
}

fn not_s3() -> Error {
    Error::Config {
        scheme: "s3",
        reason: "only an s3:// backend can create buckets and put objects".into(),
    }
}
