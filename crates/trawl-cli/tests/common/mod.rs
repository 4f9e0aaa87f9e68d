//! What every CLI test does: run the `trawl` binary and read its output.

#![allow(
    dead_code,
    reason = "each test crate uses only part of the common code"
)]

pub(crate) mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The folder of the test fixtures (`leaky/` and the others).
pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Runs `trawl ARGS` in `dir`, with no `RUST_LOG` from the environment.
pub(crate) fn trawl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trawl"))
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run trawl")
}

/// Standard output; the JSONL output is UTF-8 by construction.
pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("JSONL output is UTF-8")
}

/// Standard error, lossily.
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The findings: one JSON object per line of standard output.
pub(crate) fn findings(out: &Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}
