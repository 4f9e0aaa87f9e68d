//! `cargo xtask test` and `cargo xtask integration`: the test suite, with the
//! services it needs.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd::{cargo, run_step};
use crate::services;

/// The packages whose tests need the services, run by `integration` when
/// they are in the workspace (`trawl-jobs` comes with a later issue).
const INTEGRATION_PACKAGES: &[&str] = &["trawl-backend-objstore", "trawl-jobs"];

/// Environment variables the tests get on top of the inherited ones.
///
/// [`services::start`] records here where the services are
/// (`DATABASE_URL`, `TRAWL_TEST_S3_ENDPOINT`); its guard stops them after
/// the tests have run.
#[derive(Debug, Default)]
pub(crate) struct TestEnv {
    vars: Vec<(String, String)>,
}

impl TestEnv {
    /// Passes `key=value` to every test command.
    pub(crate) fn set(&mut self, key: &str, value: impl Into<String>) {
        self.vars.push((key.to_owned(), value.into()));
    }

    fn apply(&self, cmd: &mut Command) {
        for (key, value) in &self.vars {
            // Names only: a URL may carry a password.
            eprintln!("xtask: passing {key} to the tests");
            cmd.env(key, value);
        }
    }
}

/// Starts the services, runs the whole suite, then stops them (also when a
/// test fails).
pub(crate) fn run(root: &Path) -> Result<()> {
    let mut env = TestEnv::default();
    let _services = services::start(root, &mut env)?;
    run_suite(root, &env)
}

/// All targets (unit, integration, examples, benches in test mode), then the
/// doc tests, which `--all-targets` leaves out. A failing test binary does
/// not stop the others (`--no-fail-fast`), so one run names every failure.
pub(crate) fn run_suite(root: &Path, env: &TestEnv) -> Result<()> {
    let mut all = cargo(root);
    all.args([
        "test",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--no-fail-fast",
    ]);
    env.apply(&mut all);
    run_step("test: all targets", &mut all)?;

    let mut doc = cargo(root);
    doc.args(["test", "--workspace", "--doc", "--all-features"]);
    env.apply(&mut doc);
    run_step("test: doc tests", &mut doc)
}

/// Starts the services and runs the tests of the packages that need them
/// ([`INTEGRATION_PACKAGES`] present in the workspace), then stops them.
pub(crate) fn integration(root: &Path) -> Result<()> {
    let packages: Vec<&str> = INTEGRATION_PACKAGES
        .iter()
        .copied()
        .filter(|package| {
            root.join("crates")
                .join(package)
                .join("Cargo.toml")
                .is_file()
        })
        .collect();
    if packages.is_empty() {
        bail!("none of the packages {INTEGRATION_PACKAGES:?} is in the workspace");
    }
    let mut env = TestEnv::default();
    let _services = services::start(root, &mut env)?;
    for package in packages {
        let mut cmd = cargo(root);
        cmd.args(["test", "-p", package, "--all-features"]);
        env.apply(&mut cmd);
        run_step(&format!("integration: {package}"), &mut cmd)?;
    }
    Ok(())
}
