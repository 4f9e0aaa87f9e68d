//! `trawl completions SHELL` and `trawl man`: shell completions and manual
//! pages, generated from the command-line definitions themselves so that
//! they never drift from `--help`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Arguments of `trawl completions`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  trawl completions bash > ~/.local/share/bash-completion/completions/trawl\n  trawl completions zsh > \"${fpath[1]}/_trawl\"\n  trawl completions fish > ~/.config/fish/completions/trawl.fish"
)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Arguments of `trawl man`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  trawl man | man -l -\n  trawl man --dir /usr/local/share/man/man1   trawl.1 and a page per subcommand"
)]
pub(crate) struct ManArgs {
    /// Write a page per command (trawl.1, trawl-scan.1, …) into this folder
    /// instead of the main page to stdout.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints the completion script of `args.shell` on stdout.
pub(crate) fn completions(args: &CompletionsArgs) -> Result<u8> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut crate::Cli::command(), "trawl", &mut script);
    print(&script, "the completions")
}

/// Prints the manual page on stdout, or writes every page into a folder.
pub(crate) fn man(args: &ManArgs) -> Result<u8> {
    let command = crate::Cli::command();
    let Some(dir) = &args.dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .context("cannot render the manual page")?;
        return print(&page, "the manual page");
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the folder '{}'", dir.display()))?;
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("cannot write the manual pages into '{}'", dir.display()))?;
    Ok(0)
}

/// Writes `bytes` to stdout; a reader that left early (`| head`) is fine.
fn print(bytes: &[u8], what: &str) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(err) => Err(err).with_context(|| format!("cannot write {what} to stdout")),
    }
}
