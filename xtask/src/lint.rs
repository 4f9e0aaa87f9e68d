//! `cargo xtask lint`, and the layering check `ci` adds.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::cmd::{cargo, probe, run_step};

/// Formatting, clippy with warnings denied, then `cargo deny` if installed.
pub(crate) fn run(root: &Path) -> Result<()> {
    run_step(
        "lint: rustfmt",
        cargo(root).args(["fmt", "--all", "--", "--check"]),
    )?;
    run_step(
        "lint: clippy",
        cargo(root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    if probe(cargo(root).args(["deny", "--version"])) {
        run_step(
            "lint: cargo deny",
            cargo(root).args(["deny", "check", "bans", "licenses", "sources"]),
        )?;
    } else {
        eprintln!(
            "\nxtask: cargo-deny not installed: skipping the dependency licence/source check \
             (install with `cargo install cargo-deny`)"
        );
    }
    Ok(())
}

/// The shared layering check `../shared/tools/layers.py`, if present.
pub(crate) fn layers(root: &Path) -> Result<()> {
    let script = root.join("../shared/tools/layers.py");
    if !script.is_file() {
        eprintln!(
            "\nxtask: {} not found: skipping the shared layering check \
             (the tidy test of xtask still checks the layers)",
            script.display()
        );
        return Ok(());
    }
    let mut cmd = Command::new("python3");
    cmd.arg("../shared/tools/layers.py").current_dir(root);
    run_step("ci: layering check", &mut cmd)
}
