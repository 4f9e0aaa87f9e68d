//! `trawl completions` and `trawl man`: generated from the command line's
//! own definitions, for every shell clap supports.

mod common;

use common::{stderr, stdout, trawl};

#[test]
fn completions_name_the_subcommands_and_their_flags_in_every_shell() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "_trawl()"),
        ("zsh", "#compdef trawl"),
        ("fish", "complete -c trawl"),
        ("elvish", "edit:completion:arg-completer[trawl]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = trawl(dir.path(), &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(
            script.contains(marker),
            "{shell}: no '{marker}' in the script"
        );
        for word in ["scan", "rules", "baseline", "respect-gitignore"] {
            assert!(script.contains(word), "{shell}: '{word}' is not completed");
        }
    }
    let out = trawl(dir.path(), &["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
    assert!(
        stderr(&out).contains("possible values: bash"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_manual_pages_cover_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = trawl(dir.path(), &["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH trawl 1"), "a section-1 page");
    assert!(page.contains("trawl\\-scan"), "the subcommands are listed");
    assert!(
        page.contains("Exit codes"),
        "the examples and exit codes are in it"
    );

    let pages = dir.path().join("man1");
    let out = trawl(dir.path(), &["man", "--dir", "man1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for name in [
        "trawl.1",
        "trawl-scan.1",
        "trawl-rules.1",
        "trawl-rules-check.1",
    ] {
        let text = std::fs::read_to_string(pages.join(name)).unwrap_or_default();
        assert!(text.contains(".TH "), "{name} is a manual page");
    }
    let scan = std::fs::read_to_string(pages.join("trawl-scan.1")).unwrap();
    assert!(
        scan.contains("\\-\\-baseline"),
        "the scan page documents its flags"
    );

    // A folder that cannot be created is a clear error.
    std::fs::write(dir.path().join("file"), "").unwrap();
    let out = trawl(dir.path(), &["man", "--dir", "file/man1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot create the folder 'file/man1'"),
        "{}",
        stderr(&out)
    );
}
