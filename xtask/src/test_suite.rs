//! `cargo xtask test`: the whole test suite.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::cmd::{cargo, run_step};

/// Environment variables the tests get on top of the inherited ones.
///
/// This is the seam for the services the tests will need: a `services`
/// module starts Postgres and the S3-compatible server before the suite,
/// records `DATABASE_URL` and `TRAWL_TEST_S3_ENDPOINT` here with
/// [`TestEnv::set`], and stops the servers when its guard drops after
/// [`run_suite`]. Until then the environment is empty and tests that need a
/// service must skip themselves when their variable is unset.
#[derive(Debug, Default)]
pub(crate) struct TestEnv {
    vars: Vec<(String, String)>,
}

impl TestEnv {
    /// Passes `key=value` to every test command.
    #[allow(
        dead_code,
        reason = "the services module (not written yet) is the caller"
    )]
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

/// Runs the suite with no services started.
pub(crate) fn run(root: &Path) -> Result<()> {
    let env = TestEnv::default();
    run_suite(root, &env)
}

/// All targets (unit, integration, examples, benches in test mode), then the
/// doc tests, which `--all-targets` leaves out.
pub(crate) fn run_suite(root: &Path, env: &TestEnv) -> Result<()> {
    let mut all = cargo(root);
    all.args(["test", "--workspace", "--all-targets", "--all-features"]);
    env.apply(&mut all);
    run_step("test: all targets", &mut all)?;

    let mut doc = cargo(root);
    doc.args(["test", "--workspace", "--doc", "--all-features"]);
    env.apply(&mut doc);
    run_step("test: doc tests", &mut doc)
}
