//! Choosing what to scan: include and exclude globs, a maximum size and a
//! modification cut-off, decided the same way by every backend.
//!
//! A backend knows each object's path below what was asked for (a file's
//! path below the scanned folder, a key below the listed prefix, a URL's
//! path), its size and, often, its modification time. [`ObjectFilter`]
//! turns those into "scan it" or a [`SkipReason`], so that local folders
//! and buckets agree on what `--exclude 'node_modules/'` means, and every
//! skip is counted with its reason.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use globset::{Candidate, Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::SkipReason;
use crate::error::{Error, Result};

/// A gitignore-style glob over an object's path relative to the scanned
/// root (a local folder) or to the listed prefix's folder (a store).
///
/// - A glob without `/` matches a name at any depth: `*.log`, `.env`,
///   `node_modules`.
/// - A glob with a `/` at the start or in the middle is anchored to the
///   root: `/build`, `src/*.rs`, `docs/**/*.md`. The leading `/` is
///   dropped.
/// - A trailing `/` matches folders only: `node_modules/` excludes every
///   folder so named, not a file so named. `dir/**` means the same as
///   `dir/`: everything below `dir`.
/// - `*`, `?` and `[…]` never match `/`; `**` as a whole path component
///   matches any number of components (`**/vendor/**`, `a/**/z`); `{a,b}`
///   is either; `\` escapes the next character. Matching is
///   case-sensitive, on the path's bytes.
/// - A glob that matches a folder matches everything below it, as in
///   `.gitignore`: `--exclude vendor` leaves out a folder named `vendor`
///   and its contents, `--include src` takes in everything below `src/`.
/// - `!` negation is not supported (choose with include globs instead).
#[derive(Clone)]
pub struct PathGlob {
    /// As given, for messages and [`SkipReason::Excluded`].
    text: String,
    /// The glob as compiled: anchored, without the trailing `/` or `/**`.
    glob: Glob,
    /// Matches the folders above an object only, never the object itself.
    folders_only: bool,
}

impl PathGlob {
    /// Parses `text` as a glob (see the type's documentation).
    ///
    /// Fails with [`Error::InvalidGlob`] naming `text` when it is empty,
    /// starts with `!`, or does not parse (an unclosed `[` or `{`).
    pub fn new(text: &str) -> Result<PathGlob> {
        let invalid = |reason: &str| Error::InvalidGlob {
            glob: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.starts_with('!') {
            return Err(invalid(
                "'!' negation is not supported (escape a leading '!' of a name as '\\!')",
            ));
        }
        let mut body = text;
        let mut folders_only = false;
        if body.ends_with('/') {
            body = body.trim_end_matches('/');
            folders_only = true;
        }
        // As in .gitignore: a separator at the start or in the middle (not
        // a trailing one) anchors the glob to the root.
        let anchored = body.contains('/');
        // `dir/**` is everything below `dir`; `/**` alone, everything.
        if let Some(folder) = body.strip_suffix("/**")
            && !folder.trim_start_matches('/').is_empty()
        {
            body = folder;
            folders_only = true;
        }
        let body = body.trim_start_matches('/');
        if body.is_empty() {
            return Err(invalid("the glob is empty"));
        }
        let pattern = if anchored {
            body.to_owned()
        } else {
            format!("**/{body}")
        };
        let glob = GlobBuilder::new(&pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|err| invalid(&err.kind().to_string()))?;
        Ok(PathGlob {
            text: text.to_owned(),
            glob,
            folders_only,
        })
    }

    /// The glob as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for PathGlob {
    type Err = Error;

    fn from_str(text: &str) -> Result<PathGlob> {
        PathGlob::new(text)
    }
}

impl fmt::Display for PathGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for PathGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PathGlob").field(&self.text).finish()
    }
}

impl PartialEq for PathGlob {
    fn eq(&self, other: &PathGlob) -> bool {
        self.text == other.text
    }
}

impl Eq for PathGlob {}

/// Which objects a scan reads: include and exclude [`PathGlob`]s, a
/// maximum size, a modification cut-off. The default scans everything.
///
/// Backends ask it about every object they list, and report each object
/// it turns down through
/// [`RemoteBackend::take_skipped`](crate::RemoteBackend::take_skipped) with
/// the [`SkipReason`] it gives, so that a skip on purpose is counted, never
/// silent (and never makes a scan incomplete).
///
/// An object is skipped, with the first reason that applies, when:
///
/// 1. its path, or a folder above it, matches an exclude glob:
///    [`SkipReason::Excluded`] naming the first such glob in the order
///    given (exclude wins over include);
/// 2. there are include globs and neither its path nor a folder above it
///    matches any: [`SkipReason::NotIncluded`];
/// 3. it is larger than the maximum size: [`SkipReason::TooLarge`];
/// 4. its modification time is known and earlier than the cut-off:
///    [`SkipReason::NotModifiedSince`]. An object modified exactly at the
///    cut-off is scanned; an object whose time is unknown (a server that
///    sends no `Last-Modified`) is scanned.
///
/// ```
/// use trawl_backend::{ObjectFilter, PathGlob, SkipReason};
///
/// let filter = ObjectFilter::builder()
///     .exclude(PathGlob::new("node_modules/")?)
///     .include(PathGlob::new("*.js")?)
///     .max_size(1 << 20)
///     .build()?;
/// assert_eq!(filter.skip_reason(b"src/app.js", 10, None), None);
/// assert_eq!(
///     filter.skip_reason(b"web/node_modules/x/index.js", 10, None),
///     Some(SkipReason::Excluded { glob: "node_modules/".into() })
/// );
/// assert_eq!(filter.skip_reason(b"README.md", 10, None), Some(SkipReason::NotIncluded));
/// assert_eq!(filter.skip_reason(b"big.js", 2 << 20, None), Some(SkipReason::TooLarge));
/// // A walk need not descend into a folder excluded whole.
/// assert!(filter.folder_skip_reason(b"web/node_modules").is_some());
/// # Ok::<(), trawl_backend::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ObjectFilter {
    include: GlobList,
    exclude: GlobList,
    max_size: Option<u64>,
    modified_since: Option<SystemTime>,
}

impl ObjectFilter {
    /// A builder of a filter that, until told otherwise, scans everything.
    pub fn builder() -> ObjectFilterBuilder {
        ObjectFilterBuilder::default()
    }

    /// Whether this filter skips nothing (no glob, no limit).
    pub fn is_empty(&self) -> bool {
        !self.has_globs() && self.max_size.is_none() && self.modified_since.is_none()
    }

    /// Whether there are include or exclude globs, so that paths matter.
    pub fn has_globs(&self) -> bool {
        !self.include.globs.is_empty() || !self.exclude.globs.is_empty()
    }

    /// The include globs, in the order given.
    pub fn include_globs(&self) -> &[PathGlob] {
        &self.include.globs
    }

    /// The exclude globs, in the order given.
    pub fn exclude_globs(&self) -> &[PathGlob] {
        &self.exclude.globs
    }

    /// The largest size scanned, in bytes.
    pub fn max_size(&self) -> Option<u64> {
        self.max_size
    }

    /// The cut-off: objects last modified before it are skipped.
    pub fn modified_since(&self) -> Option<SystemTime> {
        self.modified_since
    }

    /// Why an object should not be scanned, or `None` to scan it (see the
    /// type's documentation for the order of the checks).
    ///
    /// `path` is the object's path relative to the scanned root or the
    /// listed prefix's folder, with `/` between components (leading `/`s
    /// are ignored); `size` its size in bytes; `modified` its modification
    /// time, `None` when unknown. The answer depends on these alone.
    pub fn skip_reason(
        &self,
        path: &[u8],
        size: u64,
        modified: Option<SystemTime>,
    ) -> Option<SkipReason> {
        self.path_skip_reason(path)
            .or_else(|| self.metadata_skip_reason(size, modified))
    }

    /// The part of [`skip_reason`](Self::skip_reason) that depends on the
    /// path alone (the globs), for a backend that can decide before it
    /// knows the size (a URL, before its `HEAD`).
    pub fn path_skip_reason(&self, path: &[u8]) -> Option<SkipReason> {
        if !self.has_globs() {
            return None;
        }
        let path = trim_leading_slashes(path);
        if let Some(index) = self.exclude.first_match(path, Target::Object) {
            return Some(SkipReason::Excluded {
                glob: self.exclude.globs[index].text.clone(),
            });
        }
        if !self.include.globs.is_empty() && !self.include.is_match(path) {
            return Some(SkipReason::NotIncluded);
        }
        None
    }

    /// The part of [`skip_reason`](Self::skip_reason) that depends on the
    /// size and modification time alone.
    pub fn metadata_skip_reason(
        &self,
        size: u64,
        modified: Option<SystemTime>,
    ) -> Option<SkipReason> {
        if self.max_size.is_some_and(|max| size > max) {
            return Some(SkipReason::TooLarge);
        }
        if let (Some(cutoff), Some(modified)) = (self.modified_since, modified)
            && modified < cutoff
        {
            return Some(SkipReason::NotModifiedSince);
        }
        None
    }

    /// [`SkipReason::Excluded`] when an exclude glob matches `folder` (or a
    /// folder above it), so that every object below it is excluded and a
    /// walk need not descend into it; `None` otherwise.
    ///
    /// Never wrong to ignore: a backend that descends anyway gets the same
    /// answer from [`skip_reason`](Self::skip_reason) for each object below
    /// (the property tests hold this). Include globs never prune a folder:
    /// any folder may hold an object they match.
    pub fn folder_skip_reason(&self, folder: &[u8]) -> Option<SkipReason> {
        if self.exclude.globs.is_empty() {
            return None;
        }
        let folder = trim_leading_slashes(folder);
        let index = self.exclude.first_match(folder, Target::Folder)?;
        Some(SkipReason::Excluded {
            glob: self.exclude.globs[index].text.clone(),
        })
    }
}

impl fmt::Debug for ObjectFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectFilter")
            .field("include", &self.include.globs)
            .field("exclude", &self.exclude.globs)
            .field("max_size", &self.max_size)
            .field("modified_since", &self.modified_since)
            .finish()
    }
}

/// Builds an [`ObjectFilter`]; see [`ObjectFilter::builder`].
#[derive(Debug, Clone, Default)]
pub struct ObjectFilterBuilder {
    include: Vec<PathGlob>,
    exclude: Vec<PathGlob>,
    max_size: Option<u64>,
    modified_since: Option<SystemTime>,
}

impl ObjectFilterBuilder {
    /// Adds an include glob: once there is one, objects that match none
    /// are skipped.
    pub fn include(mut self, glob: PathGlob) -> Self {
        self.include.push(glob);
        self
    }

    /// Adds an exclude glob: objects it matches are skipped, whatever the
    /// include globs say.
    pub fn exclude(mut self, glob: PathGlob) -> Self {
        self.exclude.push(glob);
        self
    }

    /// Skips objects larger than `bytes`.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// Skips objects last modified before `cutoff` (those whose time is
    /// unknown are scanned).
    pub fn modified_since(mut self, cutoff: SystemTime) -> Self {
        self.modified_since = Some(cutoff);
        self
    }

    /// The filter. Fails with [`Error::GlobSet`] only when the globs are
    /// too many or too large to compile together.
    pub fn build(self) -> Result<ObjectFilter> {
        Ok(ObjectFilter {
            include: GlobList::new(self.include)?,
            exclude: GlobList::new(self.exclude)?,
            max_size: self.max_size,
            modified_since: self.modified_since,
        })
    }
}

/// What a path given to [`GlobList::first_match`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// An object: folder-only globs match only the folders above it.
    Object,
    /// A folder: every glob may match it or a folder above it.
    Folder,
}

/// Globs compiled twice: all of them, for the folders above an object
/// (and a folder itself), and those that may match an object itself.
#[derive(Clone, Default)]
struct GlobList {
    globs: Vec<PathGlob>,
    /// Every glob, index for index.
    folders: GlobSet,
    /// The globs that are not folder-only.
    objects: GlobSet,
    /// The index in `globs` of each glob of `objects`.
    object_globs: Vec<usize>,
}

impl PartialEq for GlobList {
    fn eq(&self, other: &GlobList) -> bool {
        self.globs == other.globs
    }
}

impl Eq for GlobList {}

impl GlobList {
    fn new(globs: Vec<PathGlob>) -> Result<GlobList> {
        let mut folders = GlobSetBuilder::new();
        let mut objects = GlobSetBuilder::new();
        let mut object_globs = Vec::new();
        for (index, glob) in globs.iter().enumerate() {
            folders.add(glob.glob.clone());
            if !glob.folders_only {
                objects.add(glob.glob.clone());
                object_globs.push(index);
            }
        }
        let build = |builder: GlobSetBuilder| {
            builder.build().map_err(|err| Error::GlobSet {
                reason: err.to_string(),
            })
        };
        Ok(GlobList {
            folders: build(folders)?,
            objects: build(objects)?,
            object_globs,
            globs,
        })
    }

    /// Whether a glob matches `path` or a folder above it.
    fn is_match(&self, path: &[u8]) -> bool {
        folders_above(path).any(|folder| {
            self.folders
                .is_match_candidate(&Candidate::from_bytes(folder))
        }) || self
            .objects
            .is_match_candidate(&Candidate::from_bytes(path))
    }

    /// The index of the first glob (in the order given) that matches
    /// `path` or a folder above it.
    fn first_match(&self, path: &[u8], target: Target) -> Option<usize> {
        // `is_match_candidate` first: the common answer, no match, does
        // not allocate.
        let mut first: Option<usize> = None;
        let mut note = |index: usize| first = Some(first.map_or(index, |f| f.min(index)));
        for folder in folders_above(path) {
            let candidate = Candidate::from_bytes(folder);
            if self.folders.is_match_candidate(&candidate) {
                self.folders
                    .matches_candidate(&candidate)
                    .into_iter()
                    .for_each(&mut note);
            }
        }
        let candidate = Candidate::from_bytes(path);
        match target {
            Target::Folder => {
                if self.folders.is_match_candidate(&candidate) {
                    self.folders
                        .matches_candidate(&candidate)
                        .into_iter()
                        .for_each(&mut note);
                }
            }
            Target::Object => {
                if self.objects.is_match_candidate(&candidate) {
                    self.objects
                        .matches_candidate(&candidate)
                        .into_iter()
                        .for_each(|i| note(self.object_globs[i]));
                }
            }
        }
        first
    }
}

/// The folders above `path`, shallowest first: `a`, `a/b` for `a/b/c`.
fn folders_above(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|&(at, &b)| b == b'/' && at > 0)
        .map(move |(at, _)| &path[..at])
}

fn trim_leading_slashes(path: &[u8]) -> &[u8] {
    let start = path.iter().position(|&b| b != b'/').unwrap_or(path.len());
    &path[start..]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn glob(text: &str) -> PathGlob {
        PathGlob::new(text).unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    fn filter(include: &[&str], exclude: &[&str]) -> ObjectFilter {
        let mut builder = ObjectFilter::builder();
        for text in include {
            builder = builder.include(glob(text));
        }
        for text in exclude {
            builder = builder.exclude(glob(text));
        }
        builder.build().unwrap()
    }

    fn excluded(text: &str) -> Option<SkipReason> {
        Some(SkipReason::Excluded { glob: text.into() })
    }

    /// Whether `glob`, as an exclude glob, leaves out the object at `path`.
    fn excludes(text: &str, path: &str) -> bool {
        filter(&[], &[text])
            .path_skip_reason(path.as_bytes())
            .is_some()
    }

    #[test]
    fn a_glob_without_a_slash_matches_a_name_at_any_depth() {
        for path in ["app.log", "a/app.log", "a/b/c/app.log"] {
            assert!(excludes("*.log", path), "{path}");
        }
        assert!(!excludes("*.log", "app.log.txt"));
        assert!(excludes(".env", "config/.env"));
        assert!(!excludes(".env", "config/.env.example"));
    }

    #[test]
    fn a_glob_with_a_slash_is_anchored_to_the_root() {
        assert!(excludes("src/*.rs", "src/main.rs"));
        assert!(!excludes("src/*.rs", "lib/src/main.rs"));
        assert!(
            !excludes("src/*.rs", "src/bin/main.rs"),
            "* never matches /"
        );
        assert!(excludes("/build", "build/out.o"));
        assert!(excludes("/build", "build"));
        assert!(!excludes("/build", "a/build/out.o"));
        assert!(excludes("docs/**/*.md", "docs/a/b/x.md"));
        assert!(excludes("docs/**/*.md", "docs/x.md"));
        assert!(excludes("**/secret.txt", "secret.txt"));
        assert!(excludes("**/secret.txt", "a/b/secret.txt"));
    }

    #[test]
    fn a_trailing_slash_matches_folders_only() {
        assert!(excludes("node_modules/", "node_modules/x/index.js"));
        assert!(excludes("node_modules/", "web/node_modules/index.js"));
        assert!(
            !excludes("node_modules/", "node_modules"),
            "a file so named"
        );
        assert!(!excludes("node_modules/", "docs/node_modules"));
        assert!(excludes("vendor/**", "vendor/a/b.go"));
        assert!(!excludes("vendor/**", "vendor"));
        assert!(!excludes("vendor/**", "x/vendor/a.go"), "anchored");
        assert!(excludes("**/vendor/**", "x/y/vendor/a.go"));
        assert!(!excludes("**/vendor/**", "x/vendor"));
    }

    #[test]
    fn a_glob_matching_a_folder_matches_all_below_it() {
        assert!(excludes("vendor", "vendor"));
        assert!(excludes("vendor", "a/vendor/b/c.go"));
        assert!(excludes("*.d", "cache.d/entry"));
        let include_src = filter(&["src"], &[]);
        assert_eq!(include_src.path_skip_reason(b"src/a/b.rs"), None);
        assert_eq!(
            include_src.path_skip_reason(b"test/a.rs"),
            Some(SkipReason::NotIncluded)
        );
    }

    #[test]
    fn braces_classes_and_escapes_work() {
        assert!(excludes("*.{pem,key}", "certs/a.key"));
        assert!(excludes("id_[rd]sa", "home/.ssh/id_rsa"));
        assert!(!excludes("id_[rd]sa", "home/.ssh/id_ecdsa"));
        assert!(excludes("\\!important", "!important"));
        assert!(!excludes("*.LOG", "a.log"), "case-sensitive");
    }

    #[test]
    fn bad_globs_name_themselves_and_say_why() {
        for (text, says) in [
            ("[abc", "unclosed character class"),
            ("{a,b", "unclosed alternate"),
            ("!*.log", "negation is not supported"),
            ("", "empty"),
            ("/", "empty"),
        ] {
            let err = PathGlob::new(text).unwrap_err();
            let Error::InvalidGlob { glob, reason } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(glob, text);
            assert!(reason.contains(says), "{text}: {reason}");
            assert!(err.to_string().contains(&format!("'{text}'")), "{err}");
        }
        assert_eq!("*.rs".parse::<PathGlob>().unwrap().to_string(), "*.rs");
    }

    #[test]
    fn exclude_wins_over_include_and_names_its_first_glob() {
        let filter = filter(&["*.rs", "src/"], &["target/", "*.gen.rs", "gen/"]);
        assert_eq!(filter.path_skip_reason(b"src/main.rs"), None);
        assert_eq!(
            filter.path_skip_reason(b"src/notes.txt"),
            None,
            "src/ includes"
        );
        assert_eq!(
            filter.path_skip_reason(b"target/debug/build.rs"),
            excluded("target/")
        );
        assert_eq!(
            filter.path_skip_reason(b"gen/x.gen.rs"),
            excluded("*.gen.rs"),
            "the first exclude glob in the order given"
        );
        assert_eq!(
            filter.path_skip_reason(b"README.md"),
            Some(SkipReason::NotIncluded)
        );
    }

    #[test]
    fn leading_slashes_of_a_path_are_ignored() {
        let filter = filter(&[], &["/secrets/"]);
        assert_eq!(
            filter.path_skip_reason(b"/secrets/a"),
            excluded("/secrets/")
        );
        assert_eq!(filter.path_skip_reason(b"//other/a"), None);
    }

    #[test]
    fn folders_are_pruned_by_exclude_globs_only() {
        let filter = filter(&["*.rs"], &["node_modules/", "**/vendor/**", "/build"]);
        assert_eq!(
            filter.folder_skip_reason(b"web/node_modules"),
            excluded("node_modules/")
        );
        assert_eq!(
            filter.folder_skip_reason(b"a/vendor"),
            excluded("**/vendor/**")
        );
        assert_eq!(filter.folder_skip_reason(b"build"), excluded("/build"));
        assert_eq!(filter.folder_skip_reason(b"a/build"), None);
        assert_eq!(
            filter.folder_skip_reason(b"docs"),
            None,
            "includes never prune"
        );
        assert_eq!(ObjectFilter::default().folder_skip_reason(b"x"), None);
    }

    #[test]
    fn size_and_modification_time_come_after_the_globs() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let filter = ObjectFilter::builder()
            .exclude(glob("*.log"))
            .max_size(100)
            .modified_since(now)
            .build()
            .unwrap();
        assert_eq!(filter.skip_reason(b"a.txt", 100, Some(now)), None);
        assert_eq!(
            filter.skip_reason(b"a.txt", 101, Some(now)),
            Some(SkipReason::TooLarge)
        );
        assert_eq!(
            filter.skip_reason(b"a.txt", 1, Some(now - hour)),
            Some(SkipReason::NotModifiedSince)
        );
        assert_eq!(filter.skip_reason(b"a.txt", 1, Some(now + hour)), None);
        assert_eq!(
            filter.skip_reason(b"a.txt", 1, None),
            None,
            "an unknown time is scanned"
        );
        assert_eq!(
            filter.skip_reason(b"a.log", 101, Some(now - hour)),
            excluded("*.log"),
            "globs first"
        );
        assert_eq!(
            filter.skip_reason(b"a.txt", 101, Some(now - hour)),
            Some(SkipReason::TooLarge),
            "size before time"
        );
    }

    #[test]
    fn the_default_filter_scans_everything() {
        let filter = ObjectFilter::default();
        assert!(filter.is_empty() && !filter.has_globs());
        assert_eq!(
            filter.skip_reason(b"a/b", u64::MAX, Some(SystemTime::UNIX_EPOCH)),
            None
        );
        assert_eq!(filter, ObjectFilter::builder().build().unwrap());
    }

    #[test]
    fn reasons_read_as_words_naming_the_flag() {
        assert_eq!(
            excluded("node_modules/").unwrap().to_string(),
            "excluded by the glob 'node_modules/' (--exclude)"
        );
        assert!(SkipReason::NotIncluded.to_string().contains("--include"));
        assert!(
            SkipReason::NotModifiedSince
                .to_string()
                .contains("--modified-since")
        );
    }

    /// Globs built from a few names, so that random paths hit them often.
    fn any_glob() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec!["a", "b", "x.rs", "*.rs", "?", "[ab]", "*"]);
        let parts = prop::collection::vec(
            prop_oneof![name.prop_map(str::to_owned), Just("**".to_owned())],
            1..4,
        );
        (parts, any::<bool>(), 0..3usize).prop_map(|(parts, lead, tail)| {
            let mut text = parts.join("/");
            if lead {
                text.insert(0, '/');
            }
            text.push_str(["", "/", "/**"][tail]);
            text
        })
    }

    fn any_path() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "x.rs", "c"]), 1..5)
            .prop_map(|parts| parts.join("/"))
    }

    proptest! {
        /// Pruning is sound: when a folder is excluded whole, each object
        /// below it is excluded too, so a walk that skips the folder skips
        /// nothing a walk into it would have scanned.
        #[test]
        fn an_excluded_folder_excludes_everything_below_it(
            globs in prop::collection::vec(any_glob(), 1..4),
            folder in any_path(),
            below in any_path(),
        ) {
            let refs: Vec<&str> = globs.iter().map(String::as_str).collect();
            let filter = filter(&[], &refs);
            if let Some(reason) = filter.folder_skip_reason(folder.as_bytes()) {
                let path = format!("{folder}/{below}");
                prop_assert!(filter.path_skip_reason(path.as_bytes()).is_some(), "{path}");
                let by_a_glob = matches!(reason, SkipReason::Excluded { .. });
                prop_assert!(by_a_glob, "{:?}", reason);
            }
        }

        /// Exclude wins: adding include globs never lets an excluded
        /// object through, and never changes which glob excludes it.
        #[test]
        fn include_globs_never_override_an_exclusion(
            include in prop::collection::vec(any_glob(), 0..3),
            exclude in prop::collection::vec(any_glob(), 1..3),
            path in any_path(),
        ) {
            let exclude: Vec<&str> = exclude.iter().map(String::as_str).collect();
            let include: Vec<&str> = include.iter().map(String::as_str).collect();
            let alone = filter(&[], &exclude).path_skip_reason(path.as_bytes());
            let both = filter(&include, &exclude).path_skip_reason(path.as_bytes());
            if alone.is_some() {
                prop_assert_eq!(alone, both);
            } else {
                prop_assert!(both.is_none() || both == Some(SkipReason::NotIncluded));
            }
        }
    }
}
