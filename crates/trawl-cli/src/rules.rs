//! Rule files on the command line: `--rules`/`--no-builtin` for `scan` and
//! `rules list`, and the `rules` subcommands.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use trawl::engine::{Rule, RuleSet, RuleWarning};

use crate::scan::{EXIT_CLEAN, EXIT_INCOMPLETE};

/// Which rules to use: the built-in ones and/or rule files.
#[derive(Debug, Args)]
pub(crate) struct RuleArgs {
    /// Add the rules of a gitleaks-format TOML file (repeatable; later
    /// files win). A rule with a built-in rule's id replaces it.
    #[arg(long = "rules", value_name = "FILE")]
    rules: Vec<PathBuf>,

    /// Use only the rules of the --rules files (and what they extend).
    #[arg(long, requires = "rules")]
    no_builtin: bool,
}

impl RuleArgs {
    /// The active rules. Warnings from loading go to stderr, each once.
    ///
    /// The built-in rules come first unless `--no-builtin` is given or a
    /// file brings them itself (`[extend] useDefault = true`, whose
    /// `disabledRules` must then hold); each file is then laid over what
    /// came before: a rule with an existing id replaces it, the file's
    /// other rules go ahead of the earlier ones.
    pub(crate) fn load(&self) -> Result<RuleSet> {
        let mut files = Vec::with_capacity(self.rules.len());
        for path in &self.rules {
            files.push(RuleSet::from_file(path)?);
        }
        let brought = files.iter().any(RuleSet::includes_builtin);
        let mut set = if self.no_builtin || brought {
            RuleSet::default()
        } else {
            RuleSet::builtin()
        };
        for file in files {
            set.overlay(file);
        }
        print_warnings(set.warnings(), &mut io::stderr().lock())?;
        if set.is_empty() {
            bail!("no rules to scan with (the --rules files define none that trawl can use)");
        }
        Ok(set)
    }
}

/// Prints each distinct warning once (a file extended by two others would
/// otherwise be warned about twice).
fn print_warnings(warnings: &[RuleWarning], out: &mut impl Write) -> io::Result<()> {
    let mut seen = HashSet::new();
    for w in warnings {
        if seen.insert(w) {
            writeln!(out, "trawl: warning: {w}")?;
        }
    }
    Ok(())
}

/// `trawl rules`: inspect rules.
#[derive(Debug, Subcommand)]
pub(crate) enum RulesCommand {
    /// List the active rules: id, keywords, entropy floor and source.
    #[command(
        after_help = "Examples:\n  trawl rules list                              the built-in rules\n  trawl rules list --rules .gitleaks.toml       the rules `trawl scan --rules .gitleaks.toml` uses\n  trawl rules list --rules team.toml --no-builtin"
    )]
    List(RuleArgs),
    /// Check rule files: print each file's rules and warnings.
    #[command(
        after_help = "Examples:\n  trawl rules check .gitleaks.toml\n  trawl rules check rules/*.toml\n\nExit codes: 0 every file is valid (warnings allowed), 2 a file is invalid."
    )]
    Check {
        /// The gitleaks-format rule files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// Runs a `rules` subcommand and returns the exit code.
pub(crate) fn run(command: RulesCommand) -> Result<u8> {
    match run_to(command, &mut io::stdout().lock()) {
        // `trawl rules list | head` is not an error.
        Err(err)
            if err
                .downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(EXIT_CLEAN)
        }
        other => other,
    }
}

fn run_to(command: RulesCommand, out: &mut impl Write) -> Result<u8> {
    match command {
        RulesCommand::List(args) => {
            let set = args.load()?;
            write_table(&set.iter().collect::<Vec<_>>(), out)?;
            Ok(EXIT_CLEAN)
        }
        RulesCommand::Check { files } => {
            let mut code = EXIT_CLEAN;
            for (n, path) in files.iter().enumerate() {
                if n > 0 {
                    writeln!(out)?;
                }
                match RuleSet::from_file(path) {
                    Ok(set) => {
                        let own: Vec<&Rule> = set.iter().filter(|r| !is_builtin(r)).collect();
                        let builtin = set.len() - own.len();
                        write!(out, "{}: valid, {} rule(s)", path.display(), own.len())?;
                        if builtin > 0 {
                            write!(out, " plus {builtin} built-in rule(s) it extends")?;
                        }
                        writeln!(out, ", {} warning(s)", set.warnings().len())?;
                        if !own.is_empty() {
                            write_table(&own, out)?;
                        }
                        let mut seen = HashSet::new();
                        for w in set.warnings().iter().filter(|w| seen.insert(*w)) {
                            writeln!(out, "warning: {w}")?;
                        }
                    }
                    Err(err) => {
                        writeln!(out, "{}: invalid", path.display())?;
                        eprintln!("trawl: error: {err}");
                        code = EXIT_INCOMPLETE;
                    }
                }
            }
            Ok(code)
        }
    }
}

fn is_builtin(rule: &Rule) -> bool {
    rule.origin().starts_with("<builtin>")
}

fn source(rule: &Rule) -> &str {
    if is_builtin(rule) {
        "built-in"
    } else {
        rule.origin()
    }
}

/// The keywords column is cut to this many characters.
const MAX_KEYWORDS_SHOWN: usize = 40;

/// One row per rule: id, keywords, entropy floor, source; columns aligned.
fn write_table(rules: &[&Rule], out: &mut impl Write) -> io::Result<()> {
    let rows: Vec<[String; 4]> = rules
        .iter()
        .map(|r| {
            let keywords = match r.keywords().join(",") {
                k if k.is_empty() => "-".to_owned(),
                k if k.chars().count() > MAX_KEYWORDS_SHOWN => {
                    let cut: String = k.chars().take(MAX_KEYWORDS_SHOWN - 1).collect();
                    format!("{cut}…")
                }
                k => k,
            };
            let entropy = r
                .entropy()
                .map_or_else(|| "-".to_owned(), |e| format!("{e:.1}"));
            [r.id().to_owned(), keywords, entropy, source(r).to_owned()]
        })
        .collect();
    let header = ["ID", "KEYWORDS", "ENTROPY", "SOURCE"].map(str::to_owned);
    let mut widths = [0usize; 3];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        )?;
    }
    Ok(())
}
