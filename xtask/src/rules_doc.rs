//! `cargo xtask rules-doc`: regenerates `docs/rules.md` from the built-in
//! rules.
//!
//! The rendering lives in trawl-engine's `rules_doc` test, which fails when
//! the checked-in file is stale (so `cargo xtask ci` catches a forgotten
//! update); with `TRAWL_UPDATE_RULES_DOC=1` it writes the file instead. This
//! command runs that test with the variable set.

use std::path::Path;

use anyhow::Result;

use crate::cmd::{cargo, run_step};

/// The variable that makes the `rules_doc` test write the file.
const UPDATE_VAR: &str = "TRAWL_UPDATE_RULES_DOC";

/// Rewrites `docs/rules.md` if it is out of date.
pub(crate) fn run(root: &Path) -> Result<()> {
    let mut cmd = cargo(root);
    cmd.args(["test", "-p", "trawl-engine", "--test", "rules_doc"])
        .env(UPDATE_VAR, "1");
    run_step("rules-doc", &mut cmd)?;
    eprintln!("xtask: docs/rules.md is up to date");
    Ok(())
}
