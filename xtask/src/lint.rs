//! `cargo xtask lint`, and the layering check `ci` adds.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{cargo, probe, run_step};
use crate::services::{cache_dir, lock, tilde};

/// Formatting, clippy with warnings denied, then `cargo deny` (installed
/// by xtask into the cache folder under CI when it is missing).
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
    match cargo_deny(root)? {
        Some(mut deny) => run_step(
            "lint: cargo deny",
            deny.args(["check", "bans", "licenses", "sources"]),
        )?,
        None => eprintln!(
            "\nxtask: cargo-deny is not available: skipping the dependency licence/source check \
             (`cargo install cargo-deny --locked`, or run under CI=true to have xtask install it)"
        ),
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

/// The cargo-deny xtask installs when none is on the PATH.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// A `cargo deny` command: the one on the PATH, else xtask's own in the
/// cache folder outside the clone, installed there first under `CI=true`
/// (a clean clone has no other way to get it; ~3 minutes, once per
/// machine). `None` outside CI when neither is there.
fn cargo_deny(root: &Path) -> Result<Option<Command>> {
    if probe(cargo(root).args(["deny", "--version"])) {
        let mut deny = cargo(root);
        deny.arg("deny");
        return Ok(Some(deny));
    }
    let Some(cache) = cache_dir(|key| std::env::var_os(key)) else {
        return Ok(None);
    };
    let install = cache.join(format!("cargo-deny-{CARGO_DENY_VERSION}"));
    let binary = install
        .join("bin")
        .join(format!("cargo-deny{}", std::env::consts::EXE_SUFFIX));
    let in_ci = std::env::var_os("CI").is_some_and(|ci| ci == "true");
    if !binary.is_file() && in_ci {
        install_cargo_deny(root, &cache, &install, &binary)?;
    }
    if !binary.is_file() {
        return Ok(None);
    }
    let mut deny = Command::new(binary);
    deny.current_dir(root);
    Ok(Some(deny))
}

/// `cargo install cargo-deny` into `install` (the binary appears there last,
/// so a half-finished install is redone), one xtask at a time.
fn install_cargo_deny(root: &Path, cache: &Path, install: &Path, binary: &Path) -> Result<()> {
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let _lock = lock(&cache.join(format!("cargo-deny-{CARGO_DENY_VERSION}.lock")))?;
    if binary.is_file() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing cargo-deny {CARGO_DENY_VERSION} into {} (first run only, ~3 min)",
        tilde(install)
    );
    run_step(
        "lint: install cargo-deny",
        cargo(root)
            // Built for a check that takes two seconds: light optimisation,
            // no LTO, parallel codegen (half the build time of its own
            // release profile).
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .args([
                "install",
                "--locked",
                "--quiet",
                "cargo-deny",
                "--version",
                CARGO_DENY_VERSION,
            ])
            .arg("--root")
            .arg(install),
    )
    .context("cannot install cargo-deny: crates.io must be reachable")
}
