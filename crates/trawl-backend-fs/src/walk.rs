//! The background parallel walk behind a listing, and the skip decisions the
//! `ignore` crate would otherwise make silently.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::{DirEntry, WalkBuilder, WalkState};
use trawl_backend::{ObjectFilter, RemoteObject, SkipReason, SkippedObject};

use crate::FsOptions;
use crate::error::{Error, Result, os_reason};
use crate::object::FsObject;

/// How many walk results may wait for the discovery loop: enough to keep
/// the walker threads busy, small enough to bound memory on huge trees.
const CHANNEL_CAP: usize = 4096;

/// What the walk sends to the listing.
enum Item {
    Object(RemoteObject<FsObject>),
    Skipped(SkippedObject),
    /// The walk finished normally. Without it, a disconnected channel means
    /// the walk thread died and the listing is incomplete.
    Done,
}

/// The listing state of [`FsBackend`](crate::FsBackend).
///
/// The first `list_page` starts the walk on a background thread; dropping
/// the cursor stops it early.
#[derive(Debug, Default)]
pub struct FsCursor {
    walk: Option<Walk>,
    skipped: Vec<SkippedObject>,
    done: bool,
}

#[derive(Debug)]
struct Walk {
    rx: Receiver<Item>,
    stop: Arc<AtomicBool>,
}

impl Drop for Walk {
    fn drop(&mut self) {
        // The walkers also stop when their next send fails on the dropped
        // receiver; the flag stops those busy reading large directories.
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Object(o) => f.debug_tuple("Object").field(&o.handle.path()).finish(),
            Item::Skipped(s) => f.debug_tuple("Skipped").field(s).finish(),
            Item::Done => f.write_str("Done"),
        }
    }
}

impl FsCursor {
    /// Lists up to `max` further objects, starting the walk if needed.
    pub(crate) fn next_page(
        &mut self,
        roots: &[PathBuf],
        options: &FsOptions,
        max: usize,
    ) -> Result<Vec<RemoteObject<FsObject>>> {
        if self.done {
            return Ok(Vec::new());
        }
        if self.walk.is_none() {
            self.walk = Some(start(roots, options)?);
        }
        let Some(walk) = &self.walk else {
            unreachable!("the walk was just started")
        };
        let mut page = Vec::new();
        loop {
            // Block for the first object (a page is empty only at the end),
            // then take what is ready without waiting.
            let item = if page.is_empty() {
                walk.rx.recv().ok()
            } else {
                match walk.rx.try_recv() {
                    Ok(item) => Some(item),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => None,
                }
            };
            match item {
                Some(Item::Object(obj)) => {
                    page.push(obj);
                    if page.len() >= max {
                        break;
                    }
                }
                Some(Item::Skipped(skipped)) => self.skipped.push(skipped),
                Some(Item::Done) => {
                    self.done = true;
                    self.walk = None;
                    break;
                }
                None => {
                    self.done = true;
                    self.walk = None;
                    return Err(Error::WalkAborted);
                }
            }
        }
        Ok(page)
    }

    /// The entries skipped since the last call.
    pub(crate) fn take_skipped(&mut self) -> Vec<SkippedObject> {
        std::mem::take(&mut self.skipped)
    }
}

/// Starts the parallel walk of `roots` on a background thread.
fn start(roots: &[PathBuf], options: &FsOptions) -> Result<Walk> {
    let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAP);
    let stop = Arc::new(AtomicBool::new(false));

    let mut builder = WalkBuilder::new(&roots[0]);
    for root in &roots[1..] {
        builder.add(root);
    }
    // Every filter of the ignore crate off (hidden, parents, .ignore,
    // .gitignore, git global and exclude): it would drop entries without
    // telling us, and every skip must be counted. The filter below applies
    // the options instead and reports what it drops.
    builder
        .standard_filters(false)
        .follow_links(options.follow_symlinks)
        .threads(options.threads);
    let filter = Arc::new(options.filter.clone());
    let prunes = !filter.exclude_globs().is_empty();
    if options.skip_hidden || options.respect_gitignore || prunes {
        let entries = EntryFilter {
            skip_hidden: options.skip_hidden,
            gitignore: options
                .respect_gitignore
                .then(|| Arc::new(GitignoreCache::default())),
            filter: prunes.then(|| Arc::clone(&filter)),
            tx: tx.clone(),
            stop: Arc::clone(&stop),
        };
        builder.filter_entry(move |dent| entries.keep(dent));
    }
    let walker = builder.build_parallel();

    let visit = Visit {
        tx,
        stop: Arc::clone(&stop),
        filter,
        excluded: options
            .exclude
            .iter()
            .filter_map(|path| std::fs::metadata(path).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect(),
    };
    std::thread::Builder::new()
        .name("trawl-fs-walk".into())
        .spawn(move || {
            walker.run(|| {
                let visit = visit.clone();
                Box::new(move |result| visit.visit(result))
            });
            // A failed send means the cursor is gone: nobody to tell.
            let _ = visit.tx.send(Item::Done);
        })
        .map_err(Error::Spawn)?;
    Ok(Walk { rx, stop })
}

fn display(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

/// What each walker thread does with an entry that passed the filter.
#[derive(Clone)]
struct Visit {
    tx: Sender<Item>,
    stop: Arc<AtomicBool>,
    /// Globs, size and time: what to scan among the files.
    filter: Arc<ObjectFilter>,
    /// (device, inode) of the files never to scan.
    excluded: Arc<[(u64, u64)]>,
}

impl Visit {
    fn visit(&self, result: std::result::Result<DirEntry, ignore::Error>) -> WalkState {
        if self.stop.load(Ordering::Relaxed) {
            return WalkState::Quit;
        }
        let item = match result {
            Ok(dent) => match self.classify(&dent) {
                Some(item) => item,
                None => return WalkState::Continue,
            },
            Err(err) => Item::Skipped(walk_error(&err)),
        };
        match self.tx.send(item) {
            Ok(()) => WalkState::Continue,
            Err(_) => WalkState::Quit,
        }
    }

    /// The item for an entry, or `None` for a directory (walked, not listed).
    fn classify(&self, dent: &DirEntry) -> Option<Item> {
        let skip = |reason| {
            Some(Item::Skipped(SkippedObject {
                display: display(dent.path()),
                reason,
            }))
        };
        let Some(file_type) = dent.file_type() else {
            // Only standard input has no file type, and it is never a root.
            return skip(SkipReason::NotRegularFile);
        };
        if file_type.is_dir() {
            return None;
        }
        // Globs first: a file the user left out is "excluded", whatever it
        // is. A root, named explicitly, is not subject to them.
        if dent.depth() > 0
            && let Some(reason) = self.filter.path_skip_reason(relative(dent))
        {
            return skip(reason);
        }
        // With `follow_symlinks` the entry already has its target's type.
        if file_type.is_symlink() {
            return skip(SkipReason::Symlink);
        }
        if !file_type.is_file() {
            return skip(SkipReason::NotRegularFile);
        }
        let metadata = match dent.metadata() {
            Ok(metadata) if self.excluded.contains(&(metadata.dev(), metadata.ino())) => {
                return skip(SkipReason::Other("excluded: trawl's own output".into()));
            }
            Ok(metadata) => metadata,
            Err(err) => {
                return skip(SkipReason::Unreadable(format!(
                    "cannot read file metadata: {err}"
                )));
            }
        };
        let size = metadata.len();
        // A file system without modification times: scanned.
        let modified = metadata.modified().ok();
        if let Some(reason) = self.filter.metadata_skip_reason(size, modified) {
            return skip(reason);
        }
        Some(Item::Object(RemoteObject {
            display: display(dent.path()),
            size,
            handle: FsObject::new(dent.path().to_path_buf()),
        }))
    }
}

/// Turns a walk error into a skipped entry, so that an unreadable directory
/// shows up in the accounting (as unreadable: a failure) instead of vanishing.
fn walk_error(err: &ignore::Error) -> SkippedObject {
    let mut path = None;
    let mut inner = err;
    // Unwrap the context the ignore crate adds around the cause.
    loop {
        match inner {
            ignore::Error::WithPath { path: p, err } => {
                path = path.or(Some(p.as_path()));
                inner = err;
            }
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
                inner = err;
            }
            _ => break,
        }
    }
    let (path, reason) = match inner {
        ignore::Error::Loop { ancestor, child } => (
            Some(child.as_path()),
            SkipReason::Other(format!(
                "symbolic link loop back to '{}'",
                ancestor.display()
            )),
        ),
        ignore::Error::Io(io) => {
            let is_dir =
                path.is_some_and(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()));
            let what = if is_dir {
                "cannot read directory"
            } else {
                "cannot read"
            };
            (
                path,
                SkipReason::Unreadable(format!("{what}: {}", os_reason(io))),
            )
        }
        _ => (path, SkipReason::Unreadable(format!("walk error: {err}"))),
    };
    SkippedObject {
        display: path.map(display).unwrap_or_default(),
        reason,
    }
}

/// `dent`'s path below its root, as the globs of an [`ObjectFilter`] see
/// it: `src/main.rs` for `./src/main.rs` under the root `.`; empty for a
/// root.
fn relative(dent: &DirEntry) -> &[u8] {
    let path = dent.path();
    let root = path.ancestors().nth(dent.depth()).unwrap_or(path);
    path.strip_prefix(root)
        .map_or(&[][..], |relative| relative.as_os_str().as_bytes())
}

/// The skip decisions the options ask for, made where the walk would
/// descend or yield, and reported instead of silently applied.
struct EntryFilter {
    skip_hidden: bool,
    gitignore: Option<Arc<GitignoreCache>>,
    /// Set when there are exclude globs, which may prune folders.
    filter: Option<Arc<ObjectFilter>>,
    tx: Sender<Item>,
    stop: Arc<AtomicBool>,
}

impl EntryFilter {
    /// Whether to walk `dent` (called for every entry below a root; roots,
    /// given explicitly, are always scanned). A skipped directory is
    /// reported once, its contents not at all.
    fn keep(&self, dent: &DirEntry) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        let reason = if self.skip_hidden && dent.file_name().as_bytes().starts_with(b".") {
            SkipReason::Hidden
        } else if let Some(cache) = &self.gitignore
            && cache.is_ignored(dent)
        {
            SkipReason::Ignored
        } else if let Some(filter) = &self.filter
            && dent.file_type().is_some_and(|t| t.is_dir())
            && let Some(excluded) = filter.folder_skip_reason(relative(dent))
        {
            // Pruned: one entry for the folder, its contents never read.
            excluded
        } else {
            return true;
        };
        let skipped = SkippedObject {
            display: display(dent.path()),
            reason,
        };
        if self.tx.send(Item::Skipped(skipped)).is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
        false
    }
}

/// The `.gitignore` rules of each directory seen, built on first use.
///
/// Rules come from `.git/info/exclude`, `.gitignore` and `.ignore` (in
/// increasing precedence) in each directory from the root down, whether or
/// not the folder is a git repository; a deeper directory's rules take
/// precedence. Files above the root and the global git excludes are not
/// read, so a scan does not depend on where the folder sits or on the
/// user's git configuration.
#[derive(Default)]
struct GitignoreCache {
    /// `None` for a directory without rules. Holds every directory of the
    /// walk: a path per directory, only when `respect_gitignore` is on.
    dirs: Mutex<HashMap<PathBuf, Option<Arc<Gitignore>>>>,
}

impl GitignoreCache {
    fn is_ignored(&self, dent: &DirEntry) -> bool {
        let path = dent.path();
        let is_dir = dent.file_type().is_some_and(|t| t.is_dir());
        // The directories from the entry's parent up to its root.
        for dir in path.ancestors().skip(1).take(dent.depth()) {
            if let Some(rules) = self.rules(dir) {
                let matched = rules.matched(path, is_dir);
                if matched.is_ignore() {
                    return true;
                }
                if matched.is_whitelist() {
                    return false;
                }
            }
        }
        false
    }

    fn rules(&self, dir: &Path) -> Option<Arc<Gitignore>> {
        if let Some(rules) = self
            .dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(dir)
        {
            return rules.clone();
        }
        // Built without the lock: other threads may build the same rules,
        // the first stored wins.
        let rules = build_rules(dir);
        self.dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(dir.to_path_buf())
            .or_insert(rules)
            .clone()
    }
}

fn build_rules(dir: &Path) -> Option<Arc<Gitignore>> {
    let mut builder = GitignoreBuilder::new(dir);
    let mut any = false;
    for file in [
        dir.join(".git/info/exclude"),
        dir.join(".gitignore"),
        dir.join(".ignore"),
    ] {
        if file.is_file() {
            // A malformed line only loses that rule: the file is then
            // scanned, never silently dropped.
            let _ = builder.add(&file);
            any = true;
        }
    }
    if !any {
        return None;
    }
    builder
        .build()
        .ok()
        .filter(|rules| !rules.is_empty())
        .map(Arc::new)
}
