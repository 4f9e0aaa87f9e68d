//! `FsBackend` against real temporary folders: the conformance kit, the
//! skip options and their accounting, special files, and read errors.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use tempfile::TempDir;
use trawl_backend::conformance::{check_all, check_listing, list_all};
use trawl_backend::{ErrorClass, ObjectFilter, PathGlob, RemoteBackend, SkipReason, SkippedObject};
use trawl_backend_fs::{Error, FsBackend, FsOptions};

fn write(root: &Path, rel: impl AsRef<OsStr>, contents: &[u8]) -> Vec<u8> {
    let path = root.join(rel.as_ref());
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, contents).unwrap();
    path.as_os_str().as_bytes().to_vec()
}

fn bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

fn backend(root: &Path, options: FsOptions) -> FsBackend {
    FsBackend::new(vec![root.to_path_buf()], options).expect("valid root")
}

/// Files of a tree: full path (as listed) and contents.
type Store = Vec<(Vec<u8>, Vec<u8>)>;

/// A folder with the awkward cases: empty file, non-UTF-8 name, NUL bytes,
/// nesting, a hidden file and folder, git-ignored files.
fn awkward_tree() -> (TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let files: Vec<(&OsStr, Vec<u8>)> = vec![
        (OsStr::new("empty"), Vec::new()),
        (
            OsStr::from_bytes(b"caf\xe9.txt"),
            b"latin-1 name\n".to_vec(),
        ),
        (OsStr::new("nul.bin"), b"a\0b\0\0\0c\n".to_vec()),
        (OsStr::new("a/b/c/deep.txt"), b"deep\n".to_vec()),
        (OsStr::new(".env"), b"AWS_SECRET_ACCESS_KEY=x\n".to_vec()),
        (
            OsStr::new(".hidden/inside.txt"),
            b"inside hidden\n".to_vec(),
        ),
        (OsStr::new(".gitignore"), b"ignored.log\nbuild/\n".to_vec()),
        (OsStr::new("ignored.log"), b"ignored but scanned\n".to_vec()),
        (OsStr::new("build/out.txt"), b"build output\n".to_vec()),
        (OsStr::new("big.bin"), big),
    ];
    let expected = files
        .into_iter()
        .map(|(rel, contents)| (write(root, rel, &contents), contents))
        .collect();
    (dir, expected)
}

fn borrowed(store: &Store) -> Vec<(&[u8], &[u8])> {
    store
        .iter()
        .map(|(d, c)| (d.as_slice(), c.as_slice()))
        .collect()
}

fn names(store: &Store) -> Vec<&[u8]> {
    store.iter().map(|(d, _)| d.as_slice()).collect()
}

fn skipped_with(skipped: &[SkippedObject], reason: &SkipReason) -> Vec<Vec<u8>> {
    let mut v: Vec<_> = skipped
        .iter()
        .filter(|s| &s.reason == reason)
        .map(|s| s.display.clone())
        .collect();
    v.sort();
    v
}

#[test]
fn conforms_with_hidden_and_ignored_files_listed_by_default() {
    let (dir, expected) = awkward_tree();
    let fs_backend = backend(dir.path(), FsOptions::default());
    let skipped = check_all(&fs_backend, &borrowed(&expected));
    assert!(
        skipped.is_empty(),
        "nothing is skipped by default: {skipped:?}"
    );
}

#[test]
fn conforms_with_several_threads_and_a_single_file_root() {
    let (dir, expected) = awkward_tree();
    let options = FsOptions {
        threads: 4,
        ..FsOptions::default()
    };
    check_all(&backend(dir.path(), options), &borrowed(&expected));

    let single = &expected[2];
    let path = PathBuf::from(OsStr::from_bytes(&single.0));
    check_all(
        &backend(&path, FsOptions::default()),
        &[(single.0.as_slice(), single.1.as_slice())],
    );
}

#[test]
fn display_keeps_the_root_as_given() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "sub/x.txt", b"x");
    let fs_backend = FsBackend::new(vec![dir.path().join("sub/")], FsOptions::default()).unwrap();
    let (objects, _) = list_all(&fs_backend, 10);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].display, bytes(&dir.path().join("sub/x.txt")));
}

#[test]
fn skip_hidden_skips_and_counts() {
    let (dir, expected) = awkward_tree();
    let root = dir.path();
    let options = FsOptions {
        skip_hidden: true,
        ..FsOptions::default()
    };
    let kept: Vec<&[u8]> = names(&expected)
        .into_iter()
        .filter(|d| !d.starts_with(&bytes(&root.join("."))))
        .collect();
    let skipped = check_listing(&backend(root, options), &kept);
    let hidden = skipped_with(&skipped, &SkipReason::Hidden);
    // A hidden folder counts once; its contents are not walked.
    let want: Vec<Vec<u8>> = [".env", ".gitignore", ".hidden"]
        .iter()
        .map(|n| bytes(&root.join(n)))
        .collect();
    assert_eq!(hidden, want);
    assert_eq!(skipped.len(), 3, "{skipped:?}");
}

#[test]
fn respect_gitignore_skips_and_counts() {
    let (dir, expected) = awkward_tree();
    let root = dir.path();
    // A nested rule file, with a re-inclusion of one file.
    write(root, "a/.gitignore", b"*.txt\n!keep.txt\n");
    let keep = write(root, "a/keep.txt", b"kept\n");
    let gitignore_a = bytes(&root.join("a/.gitignore"));
    let options = FsOptions {
        respect_gitignore: true,
        ..FsOptions::default()
    };
    let ignored_paths = [
        bytes(&root.join("ignored.log")),
        bytes(&root.join("build")),
        bytes(&root.join("a/b/c/deep.txt")),
    ];
    let mut kept: Vec<&[u8]> = names(&expected)
        .into_iter()
        .filter(|d| !ignored_paths.iter().any(|i| d.starts_with(i)))
        .collect();
    kept.push(&keep);
    kept.push(&gitignore_a);
    let skipped = check_listing(&backend(root, options), &kept);
    let mut want = ignored_paths.to_vec();
    want.sort();
    assert_eq!(skipped_with(&skipped, &SkipReason::Ignored), want);
    assert_eq!(skipped.len(), 3, "{skipped:?}");
}

#[test]
fn symlinks_are_reported_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let target = write(root, "real/file.txt", b"secret");
    std::os::unix::fs::symlink(root.join("real"), root.join("link-dir")).unwrap();
    std::os::unix::fs::symlink(root.join("real/file.txt"), root.join("link-file")).unwrap();
    std::os::unix::fs::symlink(root.join("nowhere"), root.join("broken")).unwrap();

    let skipped = check_listing(&backend(root, FsOptions::default()), &[&target]);
    let want: Vec<Vec<u8>> = ["broken", "link-dir", "link-file"]
        .iter()
        .map(|n| bytes(&root.join(n)))
        .collect();
    assert_eq!(skipped_with(&skipped, &SkipReason::Symlink), want);

    // Followed on request; the broken link becomes a reported error.
    let options = FsOptions {
        follow_symlinks: true,
        ..FsOptions::default()
    };
    let via_dir = bytes(&root.join("link-dir/file.txt"));
    let via_file = bytes(&root.join("link-file"));
    let skipped = check_listing(&backend(root, options), &[&target, &via_dir, &via_file]);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].display, bytes(&root.join("broken")));
    assert!(
        matches!(&skipped[0].reason, SkipReason::Unreadable(r) if r.contains("No such file")),
        "{skipped:?}"
    );
}

#[test]
fn fifo_is_skipped_never_opened() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let file = write(root, "file.txt", b"x");
    let fifo = root.join("pipe");
    match Command::new("mkfifo").arg(&fifo).status() {
        Ok(status) if status.success() => {}
        other => {
            eprintln!("NOTICE: mkfifo unavailable ({other:?}); FIFO test skipped");
            return;
        }
    }
    // Opening the FIFO would block this test forever.
    let skipped = check_listing(&backend(root, FsOptions::default()), &[&file]);
    assert_eq!(
        skipped_with(&skipped, &SkipReason::NotRegularFile),
        vec![bytes(&fifo)]
    );
    // A FIFO given as the root is accepted and skipped too.
    let skipped = check_listing(&backend(&fifo, FsOptions::default()), &[]);
    assert_eq!(
        skipped_with(&skipped, &SkipReason::NotRegularFile),
        vec![bytes(&fifo)]
    );
}

#[test]
fn files_above_the_limit_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let small = write(dir.path(), "small", &[1; 10]);
    let large = write(dir.path(), "large", &[1; 11]);
    let options = FsOptions {
        filter: ObjectFilter::builder().max_size(10).build().unwrap(),
        ..FsOptions::default()
    };
    let skipped = check_listing(&backend(dir.path(), options), &[&small]);
    assert_eq!(skipped_with(&skipped, &SkipReason::TooLarge), vec![large]);
}

fn filtered(include: &[&str], exclude: &[&str]) -> FsOptions {
    let mut filter = ObjectFilter::builder();
    for glob in include {
        filter = filter.include(PathGlob::new(glob).unwrap());
    }
    for glob in exclude {
        filter = filter.exclude(PathGlob::new(glob).unwrap());
    }
    FsOptions {
        filter: filter.build().unwrap(),
        ..FsOptions::default()
    }
}

fn excluded_by(glob: &str) -> SkipReason {
    SkipReason::Excluded { glob: glob.into() }
}

#[test]
fn an_excluded_folder_is_skipped_once_and_never_walked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let kept = write(root, "src/app.js", b"app");
    for i in 0..50 {
        write(root, format!("node_modules/pkg{i}/index.js"), b"dep");
    }
    write(root, "web/node_modules/x/y/z.js", b"dep");
    write(root, "go/a/vendor/lib/lib.go", b"vendored");
    // A file named like the folder glob is not a folder: scanned.
    let file_named_so = write(root, "docs/node_modules", b"a file");
    // Walking into the folder would report this FIFO as skipped.
    let status = Command::new("mkfifo")
        .arg(root.join("node_modules/pkg0/pipe"))
        .status();
    assert!(status.is_ok_and(|s| s.success()), "mkfifo");

    let options = filtered(&[], &["node_modules/", "**/vendor/**"]);
    let skipped = check_listing(&backend(root, options), &[&kept, &file_named_so]);
    let mut shown: Vec<(Vec<u8>, SkipReason)> =
        skipped.into_iter().map(|s| (s.display, s.reason)).collect();
    shown.sort();
    assert_eq!(
        shown,
        vec![
            (
                bytes(&root.join("go/a/vendor")),
                excluded_by("**/vendor/**")
            ),
            (
                bytes(&root.join("node_modules")),
                excluded_by("node_modules/")
            ),
            (
                bytes(&root.join("web/node_modules")),
                excluded_by("node_modules/")
            ),
        ],
        "one entry per pruned folder, nothing from inside"
    );
}

#[test]
fn include_globs_choose_the_files_and_the_rest_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let rs = write(root, "a/b/main.rs", b"fn main() {}");
    let in_config = write(root, "config/app.yaml", b"k: v");
    let readme = write(root, "README.md", b"readme");
    let generated = write(root, "a/gen.rs", b"// generated");
    let options = filtered(&["*.rs", "/config/"], &["gen.rs"]);
    let skipped = check_listing(&backend(root, options), &[&rs, &in_config]);
    assert_eq!(
        skipped_with(&skipped, &SkipReason::NotIncluded),
        vec![readme]
    );
    assert_eq!(
        skipped_with(&skipped, &excluded_by("gen.rs")),
        vec![generated],
        "exclude wins over include"
    );
    assert_eq!(skipped.len(), 2);
}

#[test]
fn globs_match_the_path_below_each_root_and_spare_the_roots() {
    let dir = tempfile::tempdir().unwrap();
    let top = write(dir.path(), "sub/x.txt", b"x");
    let deeper = write(dir.path(), "sub/sub/x.txt", b"x");
    let file_root = write(dir.path(), "other.txt", b"named explicitly");
    // The root as given, with a trailing slash: `/x.txt` is below it.
    let roots = vec![
        dir.path().join("sub/"),
        PathBuf::from(OsStr::from_bytes(&file_root)),
    ];
    let fs_backend = FsBackend::new(roots, filtered(&[], &["/x.txt", "*.txt"])).unwrap();
    let skipped = check_listing(&fs_backend, &[&file_root]);
    assert_eq!(skipped_with(&skipped, &excluded_by("/x.txt")), vec![top]);
    assert_eq!(skipped_with(&skipped, &excluded_by("*.txt")), vec![deeper]);
}

#[test]
fn files_modified_before_the_cutoff_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let old = write(dir.path(), "old.log", b"old");
    let new = write(dir.path(), "new.log", b"new");
    let year_2000 = SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800);
    fs::File::options()
        .write(true)
        .open(OsStr::from_bytes(&old))
        .unwrap()
        .set_modified(year_2000)
        .unwrap();
    let cutoff = SystemTime::now() - Duration::from_secs(86_400);
    let options = FsOptions {
        filter: ObjectFilter::builder()
            .modified_since(cutoff)
            .build()
            .unwrap(),
        ..FsOptions::default()
    };
    let skipped = check_listing(&backend(dir.path(), options), &[&new]);
    assert_eq!(
        skipped_with(&skipped, &SkipReason::NotModifiedSince),
        vec![old]
    );
}

/// Whether permission bits are enforced for this process (not as root).
fn permissions_enforced(dir: &Path) -> bool {
    let probe = dir.join("probe");
    fs::write(&probe, b"x").unwrap();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o000)).unwrap();
    let enforced = fs::File::open(&probe).is_err();
    fs::remove_file(&probe).unwrap();
    enforced
}

#[test]
fn unreadable_file_is_a_permanent_error() {
    let dir = tempfile::tempdir().unwrap();
    if !permissions_enforced(dir.path()) {
        eprintln!(
            "NOTICE: running as root, permissions are not enforced; unreadable-file test skipped"
        );
        return;
    }
    let path = write(dir.path(), "locked", b"secret");
    fs::set_permissions(OsStr::from_bytes(&path), fs::Permissions::from_mode(0o000)).unwrap();
    let fs_backend = backend(dir.path(), FsOptions::default());
    let (objects, _) = list_all(&fs_backend, 10);
    let err = fs_backend
        .fetch_range(&objects[0], 0, &mut [0; 6])
        .unwrap_err();
    assert_eq!(fs_backend.classify_error(&err), ErrorClass::Permanent);
    assert!(err.to_string().contains("Permission denied"), "{err}");
}

#[test]
fn unreadable_directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    if !permissions_enforced(dir.path()) {
        eprintln!(
            "NOTICE: running as root, permissions are not enforced; unreadable-directory test skipped"
        );
        return;
    }
    let file = write(dir.path(), "ok.txt", b"x");
    write(dir.path(), "locked/inner.txt", b"x");
    let locked = dir.path().join("locked");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let skipped = check_listing(&backend(dir.path(), FsOptions::default()), &[&file]);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].display, bytes(&locked));
    assert!(
        matches!(&skipped[0].reason, SkipReason::Unreadable(r) if r.starts_with("cannot read directory"))
    );
}

#[test]
fn missing_root_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = FsBackend::new(
        vec![dir.path().to_path_buf(), missing.clone()],
        FsOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Root { ref path, .. } if *path == missing));
    assert_eq!(
        err.to_string(),
        format!(
            "cannot scan '{}': No such file or directory",
            missing.display()
        )
    );
    assert!(matches!(
        FsBackend::new(Vec::new(), FsOptions::default()),
        Err(Error::Config { .. })
    ));
}

#[test]
fn a_file_is_opened_once_for_all_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let contents: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    write(dir.path(), "large.bin", &contents);
    let fs_backend = backend(dir.path(), FsOptions::default());
    let (objects, _) = list_all(&fs_backend, 10);
    let obj = &objects[0];
    assert!(!obj.handle.is_open());
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = fs_backend
            .fetch_range(obj, got.len() as u64, &mut buf)
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, contents);
    assert!(obj.handle.is_open());
    assert_eq!(fs_backend.files_opened(), 1);
}

#[test]
fn a_file_that_shrank_is_a_permanent_error_and_growth_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "f", b"0123456789");
    let fs_backend = backend(dir.path(), FsOptions::default());
    let (objects, _) = list_all(&fs_backend, 10);
    fs::write(OsStr::from_bytes(&path), b"0123").unwrap();
    let err = fs_backend
        .fetch_range(&objects[0], 2, &mut [0; 8])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Changed {
                size: 10,
                eof: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("file changed during scan"),
        "{err}"
    );
    assert_eq!(fs_backend.classify_error(&err), ErrorClass::Permanent);

    // Grown: read only up to the listed size.
    fs::write(OsStr::from_bytes(&path), b"0123456789abcdef").unwrap();
    let mut buf = [0u8; 100];
    assert_eq!(fs_backend.fetch_range(&objects[0], 5, &mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"56789");
}

#[test]
fn dropping_the_cursor_stops_the_walk() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5000 {
        write(dir.path(), format!("d{}/f{i}", i % 50), b"x");
    }
    let fs_backend = backend(dir.path(), FsOptions::default());
    let mut cursor = Default::default();
    let page = fs_backend.list_page(&mut cursor, 3).unwrap();
    assert!(!page.is_empty() && page.len() <= 3);
    drop(cursor);
    // A fresh listing still sees everything.
    assert_eq!(list_all(&fs_backend, 1000).0.len(), 5000);
}

#[test]
fn symlink_loop_is_reported_when_following() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let file = write(root, "a/file.txt", b"x");
    std::os::unix::fs::symlink(root.join("a"), root.join("a/loop")).unwrap();
    let options = FsOptions {
        follow_symlinks: true,
        ..FsOptions::default()
    };
    let skipped = check_listing(&backend(root, options), &[&file]);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].display, bytes(&root.join("a/loop")));
    assert!(
        matches!(&skipped[0].reason, SkipReason::Other(r) if r.contains("loop")),
        "{skipped:?}"
    );
}
