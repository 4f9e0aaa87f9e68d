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

/// Runs `trawl ARGS` in `dir`, with no `RUST_LOG` and no settings
/// (`TRAWL_*` but the test harness's `TRAWL_TEST_*`) from the environment.
pub(crate) fn trawl(dir: &Path, args: &[&str]) -> Output {
    trawl_with_env(dir, args, &[])
}

/// [`trawl`] with the variables `env` set.
pub(crate) fn trawl_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trawl"));
    command.current_dir(dir).args(args).env_remove("RUST_LOG");
    for (name, _) in std::env::vars() {
        if name.starts_with("TRAWL_") && !name.starts_with("TRAWL_TEST_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("run trawl")
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

/// What `trawl ARGS` wrote to a pseudo-terminal (util-linux `script`), run
/// in the fixtures folder with `TERM=xterm`, no colour variables but
/// `env`; `None` (with a notice) where there is no `script` outside CI.
pub(crate) fn on_a_terminal(args: &str, env: &[(&str, &str)]) -> Option<String> {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_trawl"));
    let out = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .current_dir(fixtures())
        .env_remove("RUST_LOG")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .envs(env.iter().copied())
        .output();
    match out {
        Ok(out) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("util-linux `script` is needed for the pseudo-terminal tests")
        }
        Err(err) => {
            eprintln!("notice: skipping a pseudo-terminal test: cannot run `script`: {err}");
            None
        }
    }
}
