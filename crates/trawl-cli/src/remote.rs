//! What `trawl scan` scans: local paths or object-store URLs, the URL list
//! of `--urls FILE`, and the object-store backend, watched so that a listing
//! that fails outright ends the scan with its one reason.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use trawl::backend::SkippedObject;
use trawl::objstore::{self, Location, ObjectStoreBackend, is_remote_url, redact_url};
use trawl::{ErrorClass, RemoteBackend, RemoteObject};

/// What one run of `trawl scan` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Local files and folders (`file://` URLs included, as paths).
    Local(Vec<PathBuf>),
    /// Objects read over the network.
    Remote(Remote),
}

/// The objects of a remote scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Remote {
    /// One location in a store: `s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `memory://…`.
    Store {
        /// The location as given.
        url: String,
        /// Its scheme as [`Location::scheme`] names it: `s3`, `gs`, `az`,
        /// `memory`.
        scheme: &'static str,
    },
    /// `http(s)://` URLs, one object each.
    Urls(Vec<String>),
}

impl Target {
    /// Sorts the positional arguments and the URLs of `--urls` into one
    /// target, or says why they cannot be scanned together.
    pub(crate) fn resolve(given: &[PathBuf], url_list: Option<&Path>) -> Result<Target> {
        let mut local = Vec::new();
        let mut stores = Vec::new();
        let mut http = Vec::new();
        for arg in given {
            let Some(text) = arg.to_str() else {
                // Not UTF-8: only a local path can be.
                local.push(arg.clone());
                continue;
            };
            if let Some(path) = file_url_path(text)? {
                local.push(path);
            } else if is_remote_url(text) {
                match Location::parse(text)? {
                    Location::Http { .. } => http.push(text.to_owned()),
                    location => stores.push((text.to_owned(), location.scheme())),
                }
            } else if looks_like_url(text) && !arg.exists() {
                // `ftp://…` and the like: say which schemes exist rather
                // than "no such file".
                Location::parse(text)?;
                local.push(arg.clone());
            } else {
                local.push(arg.clone());
            }
        }
        if let Some(file) = url_list {
            http.extend(read_url_list(file)?);
        }
        const ONCE: &str = "run trawl once per location";
        let urls: Vec<&String> = stores.iter().map(|(url, _)| url).chain(&http).collect();
        if let (Some(path), Some(url)) = (local.first(), urls.first()) {
            bail!(
                "cannot scan local paths and URLs in one run ('{}' and '{}'): {ONCE}, e.g. `trawl scan {}` then `trawl scan {}`",
                path.display(),
                redact_url(url),
                path.display(),
                redact_url(url),
            );
        }
        if stores.len() > 1 {
            bail!(
                "one scan reads one store location, got {} ({}): {ONCE}",
                stores.len(),
                shown(&stores.into_iter().map(|(url, _)| url).collect::<Vec<_>>())
            );
        }
        if let (Some((store, _)), Some(url)) = (stores.first(), http.first()) {
            bail!(
                "cannot scan a store location and http(s) URLs in one run ('{}' and '{}'): {ONCE}",
                redact_url(store),
                redact_url(url),
            );
        }
        Ok(if let Some((url, scheme)) = stores.pop() {
            Target::Remote(Remote::Store { url, scheme })
        } else if !http.is_empty() {
            Target::Remote(Remote::Urls(http))
        } else {
            Target::Local(local)
        })
    }
}

impl Remote {
    /// The URL scheme: `s3`, `gs`, `az` or `memory` for a store location,
    /// `http` for URLs.
    pub(crate) fn scheme(&self) -> &'static str {
        match self {
            Remote::Store { scheme, .. } => scheme,
            Remote::Urls(_) => "http",
        }
    }

    /// What the scan reads, as it may be shown (credentials redacted).
    pub(crate) fn shown(&self) -> String {
        match self {
            Remote::Store { url, .. } => redact_url(url),
            Remote::Urls(urls) => shown(urls),
        }
    }

    /// The backend that reads it.
    pub(crate) fn backend(&self, options: objstore::Options) -> Result<Watched> {
        let inner = match self {
            Remote::Store { url, .. } => ObjectStoreBackend::from_url(url, options),
            Remote::Urls(urls) => ObjectStoreBackend::from_urls(urls.clone(), options),
        }
        .with_context(|| format!("cannot scan {}", self.shown()))?;
        Ok(Watched {
            inner,
            listing: Mutex::default(),
        })
    }
}

/// Up to three URLs, redacted, and how many more.
fn shown(urls: &[String]) -> String {
    let mut parts: Vec<String> = urls.iter().take(3).map(|u| redact_url(u)).collect();
    if urls.len() > 3 {
        parts.push(format!("and {} more", urls.len() - 3));
    }
    parts.join(", ")
}

/// `scheme://` with a scheme as RFC 3986 spells it.
fn looks_like_url(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// The local path of a `file://` URL; `None` for anything else.
fn file_url_path(text: &str) -> Result<Option<PathBuf>> {
    let is_file_url = text
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("file://"));
    if !is_file_url {
        return Ok(None);
    }
    let url = url::Url::parse(text).with_context(|| format!("invalid file URL '{text}'"))?;
    match url.to_file_path() {
        Ok(path) => Ok(Some(path)),
        Err(()) => {
            bail!("invalid file URL '{text}': expected file:///absolute/path (on this machine)")
        }
    }
}

/// The URLs of a `--urls` file: one `http(s)://` URL per line; blank lines
/// and lines starting with `#` are ignored.
fn read_url_list(file: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the URL list '{}'", file.display()))?;
    let mut urls = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", file.display(), index + 1);
        match Location::parse(line) {
            Ok(Location::Http { .. }) => urls.push(line.to_owned()),
            Ok(_) => bail!(
                "{}: '{}' is not an http:// or https:// URL (a URL list names single objects; scan a store location as an argument instead)",
                at(),
                redact_url(line)
            ),
            Err(err) => bail!("{}: {err}", at()),
        }
    }
    if urls.is_empty() {
        bail!(
            "the URL list '{}' holds no URL (one http(s):// URL per line)",
            file.display()
        );
    }
    Ok(urls)
}

/// The object-store backend, remembering why its listing failed.
///
/// The scheduler reports a failed listing as a sentence in
/// `RunReport::listing_error`; when nothing at all could be listed (no such
/// bucket, access denied) the CLI prints the store's reason alone, which
/// this wrapper keeps. Every method forwards to the inner backend.
#[derive(Debug)]
pub(crate) struct Watched {
    inner: ObjectStoreBackend,
    listing: Mutex<ListingFailures>,
}

#[derive(Debug, Default)]
struct ListingFailures {
    attempts: u32,
    last: Option<String>,
}

impl Watched {
    /// Why the listing last failed, and after how many failed attempts.
    pub(crate) fn listing_failure(&self) -> Option<(String, u32)> {
        let failures = self.listing.lock().unwrap_or_else(|e| e.into_inner());
        failures.last.clone().map(|last| (last, failures.attempts))
    }
}

/// What to try when a listing of a `scheme://` location failed for
/// `reason`, where the store's words do not say it.
pub(crate) fn listing_hint(scheme: &str, reason: &str) -> Option<&'static str> {
    // The instance metadata service is asked only when the environment
    // holds no credentials.
    let metadata = reason.contains("169.254.169.254");
    match scheme {
        "s3" if metadata => Some(
            "no credentials in the environment: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use --anonymous for a public bucket",
        ),
        "s3" if reason.contains("PermanentRedirect") => {
            Some("the bucket is in another region: give it with --region")
        }
        "gs" if metadata => Some(
            "no credentials in the environment: set GOOGLE_APPLICATION_CREDENTIALS, or use --anonymous for a public bucket",
        ),
        _ => None,
    }
}

/// The store's reason for an error, without the "list s3://bucket/prefix: "
/// that every message of the backend starts with.
fn reason(err: &objstore::Error) -> String {
    let full = err.to_string();
    let head = match err {
        objstore::Error::Status {
            operation, target, ..
        }
        | objstore::Error::Transport {
            operation, target, ..
        }
        | objstore::Error::Malformed {
            operation, target, ..
        }
        | objstore::Error::Store {
            operation, target, ..
        } => format!("{operation} {target}: "),
        _ => return full,
    };
    full.strip_prefix(&head)
        .map_or_else(|| full.clone(), str::to_owned)
}

impl RemoteBackend for Watched {
    type Object = <ObjectStoreBackend as RemoteBackend>::Object;
    type Cursor = <ObjectStoreBackend as RemoteBackend>::Cursor;
    type Error = objstore::Error;

    fn list_page(
        &self,
        cursor: &mut Self::Cursor,
        max: usize,
    ) -> Result<Vec<RemoteObject<Self::Object>>, Self::Error> {
        let page = self.inner.list_page(cursor, max);
        if let Err(err) = &page {
            let mut failures = self.listing.lock().unwrap_or_else(|e| e.into_inner());
            failures.attempts += 1;
            failures.last = Some(reason(err));
        }
        page
    }

    fn fetch_range(
        &self,
        obj: &RemoteObject<Self::Object>,
        start: u64,
        dst: &mut [u8],
    ) -> Result<usize, Self::Error> {
        self.inner.fetch_range(obj, start, dst)
    }

    fn classify_error(&self, err: &Self::Error) -> ErrorClass {
        self.inner.classify_error(err)
    }

    fn take_skipped(&self, cursor: &mut Self::Cursor) -> Vec<SkippedObject> {
        self.inner.take_skipped(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str], list: Option<&Path>) -> Result<Target> {
        let given: Vec<PathBuf> = args.iter().map(PathBuf::from).collect();
        Target::resolve(&given, list)
    }

    #[test]
    fn arguments_make_one_target() {
        assert_eq!(
            resolve(&["a", "./b"], None).unwrap(),
            Target::Local(vec!["a".into(), "./b".into()])
        );
        assert_eq!(
            resolve(&["file:///tmp/x%20y"], None).unwrap(),
            Target::Local(vec!["/tmp/x y".into()])
        );
        assert_eq!(
            resolve(&["s3://bucket/logs/"], None).unwrap(),
            Target::Remote(Remote::Store {
                url: "s3://bucket/logs/".into(),
                scheme: "s3"
            })
        );
        assert_eq!(
            resolve(&["https://h/a", "http://h/b"], None).unwrap(),
            Target::Remote(Remote::Urls(vec![
                "https://h/a".into(),
                "http://h/b".into()
            ]))
        );
    }

    #[test]
    fn mixed_arguments_are_refused_with_what_to_do() {
        for (args, says) in [
            (&["./src", "s3://b/p"][..], "local paths and URLs"),
            (&["https://h/a", "."], "local paths and URLs"),
            (&["s3://a", "gs://b"], "one store location, got 2"),
            (
                &["s3://a", "https://h/x"],
                "a store location and http(s) URLs",
            ),
        ] {
            let err = resolve(args, None).unwrap_err().to_string();
            assert!(err.contains(says), "{args:?}: {err}");
            assert!(err.contains("run trawl once per location"), "{err}");
        }
    }

    #[test]
    fn unknown_schemes_and_bad_urls_are_named() {
        let err = resolve(&["ftp://host/x"], None).unwrap_err().to_string();
        assert!(err.contains("unsupported scheme 'ftp'"), "{err}");
        let err = resolve(&["s3://"], None).unwrap_err().to_string();
        assert!(err.contains("no bucket name"), "{err}");
    }

    #[test]
    fn urls_are_redacted_in_errors() {
        let err = resolve(&["./x", "https://u:hunter2@h/o?X-Amz-Signature=abc"], None)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2") && !err.contains("abc"), "{err}");
    }

    #[test]
    fn listing_failures_get_a_hint_where_the_store_gives_none() {
        let imds =
            "Generic S3 error: Error performing PUT http://169.254.169.254/latest/api/token in 2ms";
        assert!(
            listing_hint("s3", imds)
                .unwrap()
                .contains("AWS_ACCESS_KEY_ID")
        );
        let gce =
            "Generic GCS error: Error performing GET http://169.254.169.254/computeMetadata/v1/…";
        assert!(
            listing_hint("gs", gce)
                .unwrap()
                .contains("GOOGLE_APPLICATION_CREDENTIALS")
        );
        let moved = "HTTP 301 PermanentRedirect: The bucket you are attempting to access must be addressed using the specified endpoint.";
        assert!(listing_hint("s3", moved).unwrap().contains("--region"));
        assert_eq!(
            listing_hint("s3", "HTTP 404 NoSuchBucket: no such bucket"),
            None
        );
        assert_eq!(listing_hint("az", imds), None);
    }

    #[test]
    fn the_url_list_names_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("urls.txt");
        std::fs::write(
            &list,
            "# objects\n\nhttps://h/a\n  http://h/b  \ns3://bucket/key\n",
        )
        .unwrap();
        let err = resolve(&[], Some(&list)).unwrap_err().to_string();
        assert!(err.contains("urls.txt:5:"), "{err}");
        std::fs::write(&list, "# objects\n\nhttps://h/a\n  http://h/b  \n").unwrap();
        assert_eq!(
            resolve(&["https://h/c"], Some(&list)).unwrap(),
            Target::Remote(Remote::Urls(vec![
                "https://h/c".into(),
                "https://h/a".into(),
                "http://h/b".into()
            ]))
        );
        std::fs::write(&list, "# nothing\n").unwrap();
        let err = resolve(&[], Some(&list)).unwrap_err().to_string();
        assert!(err.contains("holds no URL"), "{err}");
    }
}
