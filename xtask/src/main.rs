//! Project automation for trawl: everything cargo cannot do on its own.
//!
//! Reached through the `cargo xtask` alias of `.cargo/config.toml`:
//!
//! - `cargo xtask lint`: rustfmt check, clippy with warnings denied, and
//!   `cargo deny` (installed into the cache folder under `CI=true` when it
//!   is missing);
//! - `cargo xtask test`: the whole test suite, unit, integration and doc tests,
//!   with the services it needs (see below);
//! - `cargo xtask integration`: only the tests of the packages that need the
//!   services (`trawl-backend-objstore`, and `trawl-jobs` once it exists);
//! - `cargo xtask ci`: `lint`, the layering check, then `test`;
//! - `cargo xtask rules-doc`: regenerates `docs/rules.md` from the built-in
//!   rules (`ci` fails, through trawl-engine's `rules_doc` test, when it is
//!   out of date);
//! - `cargo xtask bench [--quick] [--only s3|jobs]`: the criterion benches,
//!   then the end-to-end figures (`trawl scan` against `rg` on a generated
//!   corpus), then `trawl scan s3://…` against a plain downloader on a local
//!   moto server (started, then stopped), then `trawl-jobs` against raw SQL
//!   on the machine's PostgreSQL.
//!
//! `test`, `integration` and `ci` start the services first (`services.rs`):
//! the machine's PostgreSQL on 127.0.0.1:5432 (started if installed but not
//! running, then left running) and moto, an S3-compatible server installed
//! once into a cache folder outside the clone and stopped after the tests.
//! Their addresses reach the tests as `DATABASE_URL` and
//! `TRAWL_TEST_S3_ENDPOINT`; either one already set is used as it is.
//!
//! The `tidy` checks (file headers, lints, crate layering) are tests of this
//! crate, so `cargo test -p xtask` and `cargo xtask test` run them.
//!
//! Arguments are parsed by hand to keep the cold build short.

mod bench;
mod cmd;
mod lint;
mod rules_doc;
mod services;
mod test_suite;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  lint            cargo fmt --check, cargo clippy -D warnings, cargo deny (installed under CI=true)
  test            the whole test suite (all targets, then doc tests), with the services
  integration     only the tests that need the services (trawl-backend-objstore, trawl-jobs)
  ci              lint, the layering check, then test
  rules-doc       regenerate docs/rules.md from the built-in rules
  bench [--quick] [--only s3|jobs]
                  criterion benches, then trawl scan against rg on a generated corpus, then
                  trawl scan s3://… against a plain downloader on moto (large, small objects),
                  then trawl-jobs against COPY, pgbench and raw LISTEN/NOTIFY on the local
                  PostgreSQL (enqueue, claim + complete, a sustained run, latency)
                  (--quick: short criterion runs, a 32 MiB corpus instead of 256 MiB,
                  4 × 128 MiB and 2,000 × 4 KiB objects instead of 8 × 128 MiB and 20,000 × 4 KiB,
                  and a 1-minute sustained run instead of 5;
                  --only s3, --only jobs: those rows alone)
  help            this text

test, integration and ci start the services the tests need and stop them afterwards:
  PostgreSQL      DATABASE_URL if set, else 127.0.0.1:5432 (started if installed, left running)
  S3 (moto)       TRAWL_TEST_S3_ENDPOINT if set, else moto_server on a free loopback port,
                  installed on first use into $TRAWL_CACHE_DIR, $XDG_CACHE_HOME/trawl
                  or ~/.cache/trawl";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let root = project_root();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        bail!("no command given");
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match command.as_str() {
        "lint" => {
            no_options(command, &rest)?;
            lint::run(&root)
        }
        "test" => {
            no_options(command, &rest)?;
            test_suite::run(&root)
        }
        "integration" => {
            no_options(command, &rest)?;
            test_suite::integration(&root)
        }
        "ci" => {
            no_options(command, &rest)?;
            lint::run(&root)?;
            lint::layers(&root)?;
            test_suite::run(&root)?;
            eprintln!("xtask: ci passed");
            Ok(())
        }
        "rules-doc" => {
            no_options(command, &rest)?;
            rules_doc::run(&root)
        }
        "bench" => {
            let (quick, parts) = bench_options(&rest)?;
            bench::run(&root, quick, parts)
        }
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("{USAGE}");
            bail!("unknown command `{other}`")
        }
    }
}

/// `[--quick] [--only s3|jobs]`, in any order.
fn bench_options(rest: &[&str]) -> Result<(bool, bench::Parts)> {
    let mut quick = false;
    let mut parts = bench::Parts::All;
    let mut args = rest.iter();
    while let Some(arg) = args.next() {
        match (*arg, args.clone().next()) {
            ("--quick", _) => quick = true,
            ("--only", Some(&"s3")) => {
                parts = bench::Parts::S3;
                args.next();
            }
            ("--only", Some(&"jobs")) => {
                parts = bench::Parts::Jobs;
                args.next();
            }
            _ => bail!(
                "bench: unexpected arguments {rest:?}; usage: cargo xtask bench [--quick] \
                 [--only s3|jobs]"
            ),
        }
    }
    Ok((quick, parts))
}

fn no_options(command: &str, rest: &[&str]) -> Result<()> {
    if !rest.is_empty() {
        bail!("{command} takes no arguments, got {rest:?}");
    }
    Ok(())
}

/// The workspace root: the parent of this crate's directory.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::{bench::Parts, bench_options};

    #[test]
    fn bench_takes_quick_and_only_in_any_order() {
        assert_eq!(bench_options(&[]).unwrap(), (false, Parts::All));
        assert_eq!(bench_options(&["--quick"]).unwrap(), (true, Parts::All));
        assert_eq!(
            bench_options(&["--only", "s3", "--quick"]).unwrap(),
            (true, Parts::S3)
        );
        assert_eq!(
            bench_options(&["--quick", "--only", "jobs"]).unwrap(),
            (true, Parts::Jobs)
        );
        assert!(bench_options(&["--only"]).is_err());
        assert!(bench_options(&["--only", "local"]).is_err());
        assert!(bench_options(&["--slow"]).is_err());
    }
}
