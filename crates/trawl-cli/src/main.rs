//! The `trawl` command: argument parsing, output files, the summary and exit
//! codes. All scanning logic lives in the library crates.

mod baseline;
mod config;
mod docs;
mod filters;
mod output;
mod progress;
mod reconcile;
mod remote;
mod rules;
mod scan;
mod size;
mod summary;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Find leaked credentials (cloud keys, tokens, private keys) in folders and
/// object stores.
#[derive(Debug, Parser)]
#[command(name = "trawl", version, long_about = None)]
#[command(
    after_help = "Examples:\n  trawl scan .                       scan the current folder, findings as JSONL on stdout\n  trawl scan ./repo --redact --sort  hide secrets, sort findings by path and offset\n  trawl scan ./dumps -o findings.jsonl\n  trawl scan . --rules .gitleaks.toml --baseline last.jsonl\n  trawl scan s3://bucket/logs/       scan every object under a prefix\n  trawl rules check .gitleaks.toml   validate a rule file\n  trawl config show                  the settings a scan here uses (trawl.toml, TRAWL_*)\n  trawl reconcile                    repair the job queue (DATABASE_URL) until stopped\n  trawl completions bash             shell completions (also zsh, fish…)\n  trawl man | man -l -               the manual page\n\nExit codes: 0 nothing found, 1 findings, 2 usage error or incomplete scan."
)]
struct Cli {
    /// Log more (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scan files and folders, or object-store URLs, for secrets.
    Scan(Box<scan::ScanArgs>),
    /// List the active rules, or check rule files.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  trawl rules list --rules .gitleaks.toml\n  trawl rules check .gitleaks.toml\n\nRule files are gitleaks v8 TOML (docs/config.md)."
    )]
    Rules(rules::RulesCommand),
    /// Run the job queue's reconcilers (crash recovery, timeouts, cancels,
    /// budgets, vacuum) until stopped.
    Reconcile(reconcile::ReconcileArgs),
    /// Show the effective configuration of `trawl scan` (trawl.toml,
    /// TRAWL_* variables and flags).
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  trawl config show                     what `trawl scan` would use here\n  trawl config show --config ci.toml --format sarif\n\nSettings: flags over TRAWL_* variables over trawl.toml over defaults (docs/guide.md)."
    )]
    Config(config::ConfigCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Print the manual page, or write a page per command into a folder.
    Man(docs::ManArgs),
}

fn main() -> ExitCode {
    let argv = match with_layers(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(err) => {
            eprintln!("trawl: error: {err:#}");
            return ExitCode::from(scan::EXIT_INCOMPLETE);
        }
    };
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(scan::EXIT_INCOMPLETE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // A long-running service shows its warnings (failed ticks) by default.
    let quietest = match cli.command {
        Command::Reconcile(_) => "warn",
        _ => "error",
    };
    init_logging(cli.verbose, quietest);
    let outcome = match cli.command {
        Command::Scan(args) => scan::run(*args),
        Command::Rules(command) => rules::run(command),
        Command::Reconcile(args) => reconcile::run(args),
        Command::Config(command) => config::run(command),
        Command::Completions(args) => docs::completions(&args),
        Command::Man(args) => docs::man(&args),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("trawl: error: {err:#}");
            ExitCode::from(scan::EXIT_INCOMPLETE)
        }
    }
}

/// The command line with the settings of `trawl.toml` and `TRAWL_*`
/// variables added when it runs `trawl scan` (see `config`).
fn with_layers(mut argv: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    // Global options (-v) take no value: the first other word is the
    // subcommand.
    let Some(at) = argv
        .iter()
        .skip(1)
        .position(|word| !word.to_string_lossy().starts_with('-'))
        .map(|i| i + 1)
    else {
        return Ok(argv);
    };
    let asks_help = argv[at + 1..]
        .iter()
        .any(|word| matches!(word.to_str(), Some("-h" | "--help" | "-V" | "--version")));
    if argv[at] != "scan" || asks_help {
        return Ok(argv);
    }
    let cwd = std::env::current_dir()?;
    let layered = config::layer(&argv[at + 1..], &|name| std::env::var(name).ok(), &cwd)?;
    argv.truncate(at + 1);
    argv.extend(layered.args);
    Ok(argv)
}

fn init_logging(verbose: u8, quietest: &str) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => quietest,
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// `--help` of every command ends with examples of its use.
    #[test]
    fn every_command_has_examples_in_its_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let shown = command
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            if !shown.contains("Examples:\n  ") {
                missing.push(path.to_owned());
            }
            for sub in command.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub, &format!("{path} {}", sub.get_name()), missing);
                }
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "trawl", &mut missing);
        assert!(missing.is_empty(), "no examples in the help of {missing:?}");
    }
}
