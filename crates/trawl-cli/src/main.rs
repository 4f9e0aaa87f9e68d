//! The `trawl` command: argument parsing, output files, the summary and exit
//! codes. All scanning logic lives in the library crates.

mod baseline;
mod docs;
mod output;
mod progress;
mod reconcile;
mod remote;
mod rules;
mod scan;
mod size;
mod summary;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Find leaked credentials (cloud keys, tokens, private keys) in folders and
/// object stores.
#[derive(Debug, Parser)]
#[command(name = "trawl", version, long_about = None)]
#[command(
    after_help = "Examples:\n  trawl scan .                       scan the current folder, findings as JSONL on stdout\n  trawl scan ./repo --redact --sort  hide secrets, sort findings by path and offset\n  trawl scan ./dumps -o findings.jsonl\n  trawl scan . --rules .gitleaks.toml --baseline last.jsonl\n  trawl scan s3://bucket/logs/       scan every object under a prefix\n  trawl rules check .gitleaks.toml   validate a rule file\n  trawl reconcile                    repair the job queue (DATABASE_URL) until stopped\n  trawl completions bash             shell completions (also zsh, fish…)\n  trawl man | man -l -               the manual page\n\nExit codes: 0 nothing found, 1 findings, 2 usage error or incomplete scan."
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Print the manual page, or write a page per command into a folder.
    Man(docs::ManArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
