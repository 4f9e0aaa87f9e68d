//! The progress display: drawn on a terminal, never into a pipe. A
//! pseudo-terminal comes from util-linux `script` (`script -qfec CMD
//! /dev/null` runs CMD with its standard streams on a new pty and copies
//! what it writes).

mod common;

use common::{fixtures, on_a_terminal, stderr, trawl};

/// What the display's line starts with (the summary never says it).
const BAR: &str = "scanning ";

#[test]
fn the_display_is_drawn_on_a_terminal_and_cleared_before_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("f.jsonl");
    let Some(screen) = on_a_terminal(&format!("scan leaky -o {}", output.display()), &[]) else {
        return;
    };
    let bar = screen
        .find(BAR)
        .unwrap_or_else(|| panic!("no display in {screen:?}"));
    assert!(screen.contains("objects"), "{screen:?}");
    let summary = screen.find("trawl: scanned").expect("the summary");
    assert!(bar < summary, "the display comes before the summary");
    assert!(
        screen[bar..summary].contains("\u{1b}[2K"),
        "the display is cleared: {screen:?}"
    );
    assert!(std::fs::read_to_string(&output).unwrap().lines().count() > 0);
}

#[test]
fn no_display_when_findings_stream_to_the_terminal_or_with_quiet() {
    for args in ["scan leaky --redact", "scan leaky --quiet -o -"] {
        let Some(screen) = on_a_terminal(args, &[]) else {
            return;
        };
        assert!(!screen.contains(BAR), "{args}: {screen:?}");
        assert!(screen.contains("trawl.finding/1"), "{args}: {screen:?}");
    }
}

#[test]
fn no_display_into_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("f.jsonl");
    let out = trawl(
        &fixtures(),
        &["scan", "leaky", "-o", output.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!stderr(&out).contains(BAR), "{}", stderr(&out));
    assert!(stderr(&out).contains("trawl: scanned"));
}
