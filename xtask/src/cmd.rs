//! Running external commands as named steps: print, run, fail clearly.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The cargo that runs us (set by `cargo run`), or `cargo` from `PATH`.
pub(crate) fn cargo(root: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root);
    // A CI run builds once from cold: incremental state is only overhead.
    if std::env::var_os("CI").is_some_and(|ci| ci == "true")
        && std::env::var_os("CARGO_INCREMENTAL").is_none()
    {
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    cmd
}

/// How a command line is shown to the user.
pub(crate) fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    // `$CARGO` is a long toolchain path; its name says enough.
    let mut line = if program.file_stem().is_some_and(|stem| stem == "cargo") {
        "cargo".to_owned()
    } else {
        program.to_string_lossy().into_owned()
    };
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

fn quote(arg: &OsStr) -> String {
    let arg = arg.to_string_lossy();
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,+@".contains(c))
    {
        arg.into_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Prints the step and its command line, runs it with inherited stdio, and
/// fails naming the step when it cannot start or exits unsuccessfully.
pub(crate) fn run_step(step: &str, cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    eprintln!("\nxtask [{step}] $ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("step `{step}`: could not start `{line}`"))?;
    if !status.success() {
        bail!("step `{step}` failed: `{line}` exited with {status}");
    }
    Ok(())
}

/// Like [`run_step`], but with standard input closed and standard output
/// captured (standard error is still shown); returns the output.
pub(crate) fn capture_step(step: &str, cmd: &mut Command) -> Result<String> {
    let line = display(cmd);
    eprintln!("\nxtask [{step}] $ {line}");
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("step `{step}`: could not start `{line}`"))?;
    if !output.status.success() {
        bail!(
            "step `{step}` failed: `{line}` exited with {}",
            output.status
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether `cmd` can be started and exits successfully, its output discarded
/// (used to detect optional tools, e.g. `cargo deny --version`).
pub(crate) fn probe(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
