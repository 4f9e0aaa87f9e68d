//! Runs every command of `docs/guide.md`, in order, the way a reader
//! would: in a scratch folder holding `my-project` (a copy of the leaky
//! fixture), with `trawl` on the `PATH`, against the test S3 server for the
//! bucket section.
//!
//! - ` ```sh ` blocks run line by line in one shell per block; a command
//!   may exit 0 (clean) or 1 (findings), anything else fails the test.
//! - ` ```yaml ` blocks (CI workflows) run their one-line `run:` steps.
//! - A ` ```toml ` block whose paragraph says "Save this as `FILE`" is
//!   written to FILE first.
//! - `git clone` is not run (no network in tests), and `cargo install
//!   --path DIR` is checked (DIR holds the `trawl` binary's package), not
//!   run: it would build the workspace a second time.
//! - The guide's example S3 endpoint is replaced by the test server's.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixtures;

/// The endpoint the guide's bucket examples use.
const GUIDE_ENDPOINT: &str = "http://127.0.0.1:9000";
/// The bucket they scan.
const GUIDE_BUCKET: &str = "trawl-guide-demo";

/// A fenced block of the guide.
#[derive(Debug)]
struct Block {
    /// The info string's first word (`sh`, `toml`, …).
    lang: String,
    body: String,
    /// The file a `toml` block is to be saved as.
    save_as: Option<String>,
    /// The line of the opening fence, 1-based.
    line: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut found = Vec::new();
    // The paragraph being read, and the one before the last blank line.
    let mut paragraph = String::new();
    let mut previous = String::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(block) = open.as_mut() {
            if line.trim_start().starts_with("```") {
                found.push(open.take().expect("open"));
            } else {
                block.body.push_str(line);
                block.body.push('\n');
            }
            continue;
        }
        if let Some(info) = line.trim_start().strip_prefix("```") {
            let before = if paragraph.is_empty() {
                &previous
            } else {
                &paragraph
            };
            let save_as = before
                .split("Save this as `")
                .nth(1)
                .and_then(|rest| rest.split('`').next().map(str::to_owned));
            open = Some(Block {
                lang: info.split_whitespace().next().unwrap_or("").to_owned(),
                body: String::new(),
                save_as,
                line: i + 1,
            });
            paragraph.clear();
            previous.clear();
        } else if line.trim().is_empty() {
            if !paragraph.is_empty() {
                previous = std::mem::take(&mut paragraph);
            }
        } else {
            paragraph.push_str(line);
            paragraph.push(' ');
        }
    }
    assert!(open.is_none(), "docs/guide.md: a block is not closed");
    found
}

/// The commands of a block: continuation lines joined, comments and blank
/// lines left out.
fn commands(block: &Block) -> Vec<String> {
    let lines: Vec<String> = match block.lang.as_str() {
        "sh" => block.body.lines().map(str::to_owned).collect(),
        "yaml" => block
            .body
            .lines()
            .filter_map(|l| {
                l.trim_start()
                    .strip_prefix("- run: ")
                    .or(l.trim_start().strip_prefix("run: "))
            })
            .filter(|l| !l.starts_with('|'))
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let mut commands = Vec::new();
    let mut pending = String::new();
    for line in lines {
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(&line);
        let command = std::mem::take(&mut pending);
        let command = command.trim();
        if !command.is_empty() && !command.starts_with('#') {
            commands.push(command.to_owned());
        }
    }
    commands
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Checks `cargo install ... --path DIR` instead of running it.
fn check_install(command: &str, root: &Path) {
    let words: Vec<&str> = command.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "--path")
        .unwrap_or_else(|| panic!("`{command}`: install from the checkout with --path"));
    let manifest = root.join(words[at + 1]).join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("`{command}`: {}: {e}", manifest.display()));
    assert!(
        text.contains("name = \"trawl\""),
        "`{command}`: {} does not build the trawl binary",
        manifest.display()
    );
}

#[test]
fn every_command_of_the_guide_works() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let guide = std::fs::read_to_string(root.join("docs/guide.md")).expect("docs/guide.md");
    let work = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("leaky"), &work.path().join("my-project"));
    let bin: PathBuf = Path::new(env!("CARGO_BIN_EXE_trawl"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut ran = 0;
    let mut endpoint: Option<Option<String>> = None;
    for block in blocks(&guide) {
        if block.lang == "toml" {
            if let Some(file) = &block.save_as {
                std::fs::write(work.path().join(file), &block.body).unwrap();
            }
            continue;
        }
        let mut script = String::new();
        let mut body = block.body.clone();
        if body.contains(GUIDE_ENDPOINT) {
            let Some(url) = endpoint.get_or_insert_with(common::s3::endpoint).clone() else {
                continue;
            };
            common::s3::fill_bucket(
                &url,
                GUIDE_BUCKET,
                &[
                    (
                        "app/settings.py",
                        b"GITHUB = 'ghp_0123456789abcdefghijklmnopqrstuvwxyzAB'\n",
                    ),
                    ("logs/2026/11/app.log", b"no secrets here\n"),
                ],
            );
            body = body.replace(GUIDE_ENDPOINT, &url);
        }
        let block = Block { body, ..block };
        for command in commands(&block) {
            if command.starts_with("git clone") {
                continue;
            }
            if command.starts_with("cargo install") {
                check_install(&command, &root);
                continue;
            }
            ran += 1;
            script.push_str(&format!(
                "{command}\nrc=$?\nif [ $rc -gt 1 ]; then echo \"docs/guide.md:{}: \\`{}\\` exited $rc\" >&2; exit 100; fi\n",
                block.line,
                command.replace(['`', '"'], "'"),
            ));
        }
        if script.is_empty() {
            continue;
        }
        let mut shell = Command::new("timeout");
        shell
            .args(["300", "bash", "-c", &script])
            .current_dir(work.path())
            .env("PATH", &path)
            .env("HOME", work.path())
            .env_remove("RUST_LOG");
        for (name, _) in std::env::vars() {
            if (name.starts_with("TRAWL_") && !name.starts_with("TRAWL_TEST_"))
                || name.starts_with("AWS_")
            {
                shell.env_remove(name);
            }
        }
        let out = shell.output().expect("run bash");
        assert!(
            out.status.success(),
            "docs/guide.md block at line {} failed ({:?}):\n{}\n--- stderr:\n{}",
            block.line,
            out.status,
            block.body,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(ran >= 15, "only {ran} commands of the guide ran");

    // The guide's promise: a SARIF report of the folder.
    let sarif: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.path().join("trawl.sarif")).expect("the guide writes trawl.sarif"),
    )
    .expect("trawl.sarif is JSON");
    assert_eq!(sarif["version"], "2.1.0");
    assert!(
        !sarif["runs"][0]["results"]
            .as_array()
            .expect("results")
            .is_empty()
    );
}

#[test]
fn the_harness_reads_blocks_commands_and_files_to_save() {
    let text = "Save this as `a.toml`:\n\n```toml\nx = 1\n```\n\n```sh\ntrawl scan . \\\n  --sort   # long\n# a comment\n\ntrawl rules list\n```\n\n```yaml\n  - run: trawl scan .\n  - uses: x\n```\n";
    let found = blocks(text);
    assert_eq!(found.len(), 3);
    assert_eq!(found[0].save_as.as_deref(), Some("a.toml"));
    assert_eq!(found[1].save_as, None);
    assert_eq!(
        commands(&found[1]),
        ["trawl scan .   --sort   # long", "trawl rules list"]
    );
    assert_eq!(commands(&found[2]), ["trawl scan ."]);
}
