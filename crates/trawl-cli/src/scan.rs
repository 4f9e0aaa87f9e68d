//! `trawl scan`: scan local files and folders.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use trawl::{
    Engine, EventSink, FsBackend, FsOptions, JsonlSink, RemoteConfig, ScanControl, SortingSink,
    scan_remote,
};

use crate::baseline::{Baseline, BaselineSink};
use crate::rules::RuleArgs;
use crate::size::parse_size;
use crate::summary;

/// Exit code of a complete scan that found nothing.
pub(crate) const EXIT_CLEAN: u8 = 0;
/// Exit code of a complete scan with findings.
pub(crate) const EXIT_FINDINGS: u8 = 1;
/// Exit code of a usage error or an incomplete scan.
pub(crate) const EXIT_INCOMPLETE: u8 = 2;

/// Arguments of `trawl scan`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  trawl scan .\n  trawl scan ~/src/app ./backups --redact -o findings.jsonl\n  trawl scan . --respect-gitignore --skip-hidden --sort\n  trawl scan . --rules .gitleaks.toml                built-in rules plus the file's\n  trawl scan . --rules team.toml --no-builtin       only the file's rules\n  trawl scan . -o new.jsonl --baseline old.jsonl     only findings not in old.jsonl\n\nEvery file is scanned, binary or not (NUL bytes and invalid UTF-8 included);\nhidden and git-ignored files too unless asked otherwise. Each finding is one\nJSON line (format: docs/output.md); a summary goes to stderr."
)]
pub(crate) struct ScanArgs {
    /// Files and folders to scan.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Write findings to FILE instead of stdout ('-' is stdout).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Show only the first 4 characters of each secret.
    #[arg(long)]
    redact: bool,

    /// Buffer findings and print them sorted by path, then offset.
    #[arg(long)]
    sort: bool,

    /// Skip files and folders matched by .gitignore/.ignore rules (scanned by default).
    #[arg(long)]
    respect_gitignore: bool,

    /// Skip hidden files and folders (scanned by default).
    #[arg(long)]
    skip_hidden: bool,

    /// Follow symbolic links (by default they are counted as skipped).
    #[arg(long)]
    follow_symlinks: bool,

    /// Skip files larger than SIZE (e.g. 100MiB); each is counted as skipped.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_file_size: Option<usize>,

    /// Bytes read and scanned per chunk (e.g. 256KiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256KiB")]
    chunk_size: usize,

    /// Threads that scan chunks [default: the number of cores].
    #[arg(long, value_name = "N")]
    cpu_workers: Option<usize>,

    /// Threads that read files [default: the number of cores, at least 2].
    #[arg(long, value_name = "N")]
    io_threads: Option<usize>,

    /// Chunk buffers in memory at once; memory ≈ N × chunk size.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pool_buffers: usize,

    /// Give up on one file after this many seconds, retries included.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    max_object_time: u64,

    #[command(flatten)]
    rules: RuleArgs,

    /// Report only findings not in FILE, a previous JSONL output of trawl
    /// (same rule and same secret, anywhere); the summary counts the others.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,

    /// Print no summary on stderr.
    #[arg(short, long)]
    quiet: bool,
}

impl ScanArgs {
    fn config(&self) -> RemoteConfig {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        RemoteConfig {
            cpu_workers: self.cpu_workers.unwrap_or(cores),
            io_threads: self.io_threads.unwrap_or(cores.max(2)),
            chunk_size: self.chunk_size,
            pool_buffers: self.pool_buffers,
            max_object_time: Some(Duration::from_secs(self.max_object_time)),
            ..RemoteConfig::default()
        }
    }

    fn fs_options(&self) -> FsOptions {
        FsOptions {
            respect_gitignore: self.respect_gitignore,
            skip_hidden: self.skip_hidden,
            follow_symlinks: self.follow_symlinks,
            threads: 0,
            max_file_size: self.max_file_size.map(|s| s as u64),
            exclude: self
                .output
                .iter()
                .filter(|p| p.as_os_str() != "-")
                .cloned()
                .collect(),
        }
    }
}

/// Runs a scan and returns the exit code.
pub(crate) fn run(args: ScanArgs) -> Result<u8> {
    let config = args.config();
    let engine = Engine::new(args.rules.load()?)?;
    let baseline = args.baseline.as_deref().map(Baseline::read).transpose()?;
    config
        .validate(trawl::ScanEngine::max_match_len(&engine))
        .context("invalid option")?;
    let backend = FsBackend::new(args.paths.clone(), args.fs_options())?;
    // Created before the walk starts (in `scan_remote`), so that the walk
    // recognises the output file and leaves it out.
    let reader_left = Arc::new(AtomicBool::new(false));
    let out = PipeWatch {
        inner: open_output(args.output.as_ref())?,
        reader_left: Arc::clone(&reader_left),
    };
    let jsonl = JsonlSink::new(out, args.redact);
    let inner: Box<dyn EventSink> = if args.sort {
        Box::new(SortingSink::new(jsonl))
    } else {
        Box::new(jsonl)
    };
    let baseline_size = baseline.as_ref().map(Baseline::len);
    let mut sink = BaselineSink::new(inner, baseline.unwrap_or_default());

    let control = Arc::new(ScanControl::new());
    install_interrupt_handler(&control);
    let mut report = scan_remote(&engine, &backend, &config, &mut sink, &control)?;
    // The scan counts every finding it hands the sink; the baseline's are
    // not reported, so they leave the counts (and the exit code) here.
    let suppressed = sink.suppressed().clone();
    drop(sink);
    for (rule, n) in &suppressed {
        report.findings -= n;
        if let Some(count) = report.findings_by_rule.get_mut(rule) {
            *count -= n;
            if *count == 0 {
                report.findings_by_rule.remove(rule);
            }
        }
    }
    if reader_left.load(Ordering::Relaxed) {
        // `trawl scan . | head`: the reader had what it wanted. Not an error
        // to report, and the findings it read decide the exit code.
        return Ok(if report.findings > 0 {
            EXIT_FINDINGS
        } else {
            EXIT_CLEAN
        });
    }
    if !args.quiet {
        let suppressed = baseline_size.map(|baseline| summary::Suppressed {
            findings: suppressed.values().sum(),
            baseline,
        });
        summary::print(&report, suppressed, &mut io::stderr().lock())?;
    }
    Ok(if !report.is_complete() {
        EXIT_INCOMPLETE
    } else if report.findings > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_CLEAN
    })
}

/// The output, noting when its reader has gone away (a closed pipe).
struct PipeWatch {
    inner: Box<dyn Write + Send>,
    reader_left: Arc<AtomicBool>,
}

impl PipeWatch {
    fn watch<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(err) = &result
            && err.kind() == io::ErrorKind::BrokenPipe
        {
            self.reader_left.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl Write for PipeWatch {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.inner.write(buf);
        self.watch(result)
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.inner.flush();
        self.watch(result)
    }
}

fn open_output(path: Option<&PathBuf>) -> Result<Box<dyn Write + Send>> {
    match path {
        Some(path) if path.as_os_str() != "-" => {
            let file = File::create(path)
                .with_context(|| format!("cannot create output file '{}'", path.display()))?;
            Ok(Box::new(BufWriter::new(file)))
        }
        _ => Ok(Box::new(BufWriter::new(io::stdout()))),
    }
}

/// The first Ctrl-C stops the scan gracefully (the summary still prints);
/// a second one exits at once.
fn install_interrupt_handler(control: &Arc<ScanControl>) {
    let control = Arc::clone(control);
    let result = ctrlc::set_handler(move || {
        if control.is_stopped() {
            std::process::exit(130);
        }
        eprintln!("trawl: stopping (press Ctrl-C again to quit at once)");
        control.stop();
    });
    if let Err(err) = result {
        tracing::warn!(%err, "cannot install the Ctrl-C handler");
    }
}
