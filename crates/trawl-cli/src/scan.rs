//! `trawl scan`: scan local files and folders, or object-store URLs.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use trawl::backend::{ObjectFilter, PathGlob};
use trawl::objstore;
use trawl::{
    Engine, EventSink, FsBackend, FsOptions, RemoteBackend, RemoteConfig, RunReport, SarifRule,
    ScanControl, SortingSink, scan_remote,
};

use crate::baseline::{Baseline, BaselineSink};
use crate::filters;
use crate::output;
use crate::progress;
use crate::remote::{Remote, Target, Watched, listing_hint};
use crate::rules::RuleArgs;
use crate::size::parse_size;
use crate::summary;

/// Exit code of a complete scan that found nothing.
pub(crate) const EXIT_CLEAN: u8 = 0;
/// Exit code of a complete scan with findings.
pub(crate) const EXIT_FINDINGS: u8 = 1;
/// Exit code of a usage error or an incomplete scan.
pub(crate) const EXIT_INCOMPLETE: u8 = 2;

/// Defaults of the knobs that depend on where the objects are: a disk
/// answers in microseconds, a store in tens of milliseconds, so remote
/// scans keep more reads in flight, in larger chunks.
#[derive(Debug, Clone, Copy)]
struct Defaults {
    /// `None`: the number of cores, at least 2.
    io_threads: Option<usize>,
    chunk_size: usize,
    pool_buffers: usize,
    max_object_secs: u64,
}

const LOCAL: Defaults = Defaults {
    io_threads: None,
    chunk_size: 256 * 1024,
    pool_buffers: 64,
    max_object_secs: 300,
};

/// 32 buffers of 4 MiB: about 128 MiB, so that 16 threads each have a chunk
/// in flight and another being scanned. An hour per object: a 10 GiB object
/// over a slow link must not fail for taking its time.
const REMOTE: Defaults = Defaults {
    io_threads: Some(16),
    chunk_size: 4 << 20,
    pool_buffers: 32,
    max_object_secs: 3600,
};

/// Arguments of `trawl scan`.
#[derive(Debug, Args)]
// A flag given twice takes its last value: settings from trawl.toml and
// TRAWL_* variables go ahead of the command line (config.rs).
#[command(args_override_self = true)]
// Fixed, so that a usage error does not list the flags the file and the
// variables added as if they had been typed.
#[command(
    override_usage = "trawl scan [OPTIONS] <PATH|URL>...\n       trawl scan [OPTIONS] --urls <FILE> [PATH|URL]..."
)]
#[command(
    after_help = "Examples:\n  trawl scan .\n  trawl scan ~/src/app ./backups --redact -o findings.jsonl\n  trawl scan . --respect-gitignore --skip-hidden --sort\n  trawl scan . --exclude 'node_modules/' --include '*.js'   only .js files, no dependencies\n  trawl scan s3://bucket/logs/ --modified-since 7d --max-object-size 100MiB\n  trawl scan . --config ci/trawl.toml               settings from a file (default: ./trawl.toml)\n  trawl scan . --rules .gitleaks.toml                built-in rules plus the file's\n  trawl scan . --rules team.toml --no-builtin       only the file's rules\n  trawl scan . -o new.jsonl --baseline old.jsonl     only findings not in old.jsonl\n  trawl scan . -o csv:findings.csv -o jsonl:-       a CSV file and JSONL on stdout\n  trawl scan . --format sarif -o trawl.sarif        for GitHub code scanning\n  trawl scan . --format human                       each secret in its line, redacted\n  trawl scan s3://my-bucket/logs/2026/               every object under the prefix\n  trawl scan s3://public-data/ --anonymous --region eu-west-1\n  trawl scan s3://bucket --endpoint http://localhost:9000   MinIO or another S3-compatible server\n  trawl scan gs://bucket/exports/\n  trawl scan az://container/backups/                 account and key from AZURE_*\n  trawl scan https://example.com/app.js --urls more-urls.txt\n\nEvery file is scanned, binary or not (NUL bytes and invalid UTF-8 included);\nhidden and git-ignored files too unless asked otherwise. Each finding is one\nJSON line (--format human, json, csv or sarif for others; docs/output.md); a\nsummary goes to stderr. Every flag is also a trawl.toml key and a TRAWL_*\nvariable (trawl config show).\n\nOne run scans local paths, or one store location, or http(s) URLs: to scan\nmore, run trawl once per location. Store credentials come only from the\nenvironment (there are no credential flags): AWS_ACCESS_KEY_ID,\nAWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and the other AWS_* variables, or the\ninstance's role; GOOGLE_APPLICATION_CREDENTIALS and GOOGLE_*; AZURE_* (e.g.\nAZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY). URLs are shown with\ncredentials removed."
)]
pub(crate) struct ScanArgs {
    /// Files and folders, or URLs: one store location (s3://bucket/prefix,
    /// gs://, az://, abfs://), or http(s):// URLs of single objects.
    #[arg(required_unless_present = "urls", value_name = "PATH|URL")]
    paths: Vec<PathBuf>,

    /// Write findings to FILE instead of stdout ('-' is stdout), in the
    /// --format, or in FORMAT if given as FORMAT:FILE (jsonl, json, csv,
    /// sarif, human);
    /// repeat for several outputs.
    #[arg(short, long, value_name = "[FORMAT:]FILE", value_parser = output::parse_output)]
    output: Vec<output::OutputSpec>,

    /// The format of findings: jsonl (one JSON object per line), json
    /// (one array), csv, sarif (SARIF 2.1.0 for code scanning; secrets
    /// always redacted), human (for people: each secret in its line).
    #[arg(long, value_enum, default_value_t = output::Format::Jsonl)]
    format: output::Format,

    /// Show only the first 4 characters of each secret.
    #[arg(long)]
    redact: bool,

    /// Show whole secrets in the human format, which shows only their
    /// first 4 characters otherwise (jsonl, json and csv show whole secrets
    /// unless --redact; sarif never does).
    #[arg(long, conflicts_with = "redact")]
    show_secrets: bool,

    /// Colours of the human format: auto (on a terminal, unless NO_COLOR
    /// is set), always, never.
    #[arg(long, value_name = "WHEN", default_value_t = clap::ColorChoice::Auto)]
    color: clap::ColorChoice,

    /// Buffer findings and print them sorted by path, then offset.
    #[arg(long)]
    sort: bool,

    /// Skip files and folders matched by .gitignore/.ignore rules (scanned by default).
    #[arg(long, help_heading = "Local paths")]
    respect_gitignore: bool,

    /// Skip hidden files and folders (scanned by default).
    #[arg(long, help_heading = "Local paths")]
    skip_hidden: bool,

    /// Follow symbolic links (by default they are counted as skipped).
    #[arg(long, help_heading = "Local paths")]
    follow_symlinks: bool,

    /// Scan only the files and objects whose path matches GLOB
    /// (repeatable; gitignore-style: '*.js', 'src/', 'logs/**/*.log'); the
    /// others are counted as skipped (docs/filters.md).
    #[arg(long, value_name = "GLOB", value_parser = filters::parse_glob, help_heading = "Filters")]
    include: Vec<PathGlob>,

    /// Skip the files and objects whose path matches GLOB (repeatable;
    /// wins over --include); a folder it matches ('node_modules/',
    /// '**/vendor/**') is skipped whole, not walked.
    #[arg(long, value_name = "GLOB", value_parser = filters::parse_glob, help_heading = "Filters")]
    exclude: Vec<PathGlob>,

    /// Skip files and objects larger than SIZE (e.g. 100MiB).
    #[arg(long, visible_alias = "max-file-size", value_name = "SIZE", value_parser = parse_size,
        help_heading = "Filters")]
    max_object_size: Option<usize>,

    /// Skip files and objects last modified before WHEN: a date
    /// (2026-01-31, UTC), a date and time (2026-01-31T08:00:00Z) or an age
    /// (30m, 12h, 7d); those whose time is unknown are scanned.
    #[arg(long, value_name = "WHEN", value_parser = filters::parse_when, help_heading = "Filters")]
    modified_since: Option<SystemTime>,

    /// Use this S3-compatible server or Azure emulator instead of the
    /// cloud's own endpoint (e.g. http://localhost:9000; plain http:// is
    /// allowed).
    #[arg(long, value_name = "URL", help_heading = "URLs")]
    endpoint: Option<String>,

    /// The S3 bucket's region [default: AWS_REGION or AWS_DEFAULT_REGION,
    /// else us-east-1].
    #[arg(long, value_name = "REGION", help_heading = "URLs")]
    region: Option<String>,

    /// Send unsigned requests (public buckets); credentials in the
    /// environment are not used.
    #[arg(long, help_heading = "URLs")]
    anonymous: bool,

    /// Also scan the http(s):// URLs listed in FILE, one per line (blank
    /// lines and lines starting with '#' are ignored).
    #[arg(long, value_name = "FILE", help_heading = "URLs")]
    urls: Option<PathBuf>,

    /// Bytes read and scanned per chunk (e.g. 256KiB) [default: 256KiB for
    /// local paths, 4MiB for URLs].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    chunk_size: Option<usize>,

    /// Threads that scan chunks [default: the number of cores].
    #[arg(long, value_name = "N")]
    cpu_workers: Option<usize>,

    /// Threads that read files or objects [default: the number of cores, at
    /// least 2, for local paths; 16 for URLs].
    #[arg(long, value_name = "N")]
    io_threads: Option<usize>,

    /// Chunk buffers in memory at once; memory ≈ N × chunk size [default: 64
    /// for local paths (16 MiB), 32 for URLs (128 MiB)].
    #[arg(long, value_name = "N")]
    pool_buffers: Option<usize>,

    /// Give up on one file or object after this many seconds, retries
    /// included [default: 300 for local paths, 3600 for URLs].
    #[arg(long, value_name = "SECS")]
    max_object_time: Option<u64>,

    #[command(flatten)]
    rules: RuleArgs,

    /// Report only findings not in FILE, a previous JSONL output of trawl
    /// (same rule and same secret, anywhere); the summary counts the others.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,

    /// Read settings from FILE instead of ./trawl.toml [env: TRAWL_CONFIG]
    /// (docs/guide.md#configuration). A switch the file or a TRAWL_*
    /// variable turns on, --no-SWITCH turns off (--no-sort, --no-redact…).
    #[arg(long, value_name = "FILE", help_heading = "Configuration")]
    config: Option<PathBuf>,

    /// Read no configuration file, not even ./trawl.toml.
    #[arg(long, conflicts_with = "config", help_heading = "Configuration")]
    no_config: bool,

    /// Print no summary and no progress on stderr (progress is shown only
    /// when stderr is a terminal and findings do not stream to it).
    #[arg(short, long)]
    quiet: bool,

    #[command(flatten)]
    negations: Negations,

    /// The exit code of a complete scan that found secrets (0 to never
    /// fail a CI job on findings; an incomplete scan still exits 2).
    #[arg(long, value_name = "N", default_value_t = EXIT_FINDINGS,
        value_parser = clap::value_parser!(u8))]
    exit_code: u8,
}

/// `--no-<switch>` for each switch: it turns off a switch that trawl.toml
/// or a TRAWL_* variable turned on (of the two forms on one command line,
/// the last wins). Hidden from the help, which says so once (--config);
/// parsed only for its effect on the switch, never read.
#[derive(Debug, Args)]
#[allow(dead_code)]
struct Negations {
    #[arg(long, hide = true, overrides_with = "redact")]
    no_redact: bool,
    #[arg(long, hide = true, overrides_with = "show_secrets")]
    no_show_secrets: bool,
    #[arg(long, hide = true, overrides_with = "sort")]
    no_sort: bool,
    #[arg(long, hide = true, overrides_with = "respect_gitignore")]
    no_respect_gitignore: bool,
    #[arg(long, hide = true, overrides_with = "skip_hidden")]
    no_skip_hidden: bool,
    #[arg(long, hide = true, overrides_with = "follow_symlinks")]
    no_follow_symlinks: bool,
    #[arg(long, hide = true, overrides_with = "anonymous")]
    no_anonymous: bool,
    #[arg(long, hide = true, overrides_with = "quiet")]
    no_quiet: bool,
}

impl ScanArgs {
    fn config(&self, defaults: Defaults) -> RemoteConfig {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        RemoteConfig {
            cpu_workers: self.cpu_workers.unwrap_or(cores),
            io_threads: self
                .io_threads
                .or(defaults.io_threads)
                .unwrap_or(cores.max(2)),
            chunk_size: self.chunk_size.unwrap_or(defaults.chunk_size),
            pool_buffers: self.pool_buffers.unwrap_or(defaults.pool_buffers),
            max_object_time: Some(Duration::from_secs(
                self.max_object_time.unwrap_or(defaults.max_object_secs),
            )),
            ..RemoteConfig::default()
        }
    }

    /// The filter flags, for local paths and URLs alike.
    fn filter(&self) -> Result<ObjectFilter> {
        filters::Filters {
            include: &self.include,
            exclude: &self.exclude,
            max_object_size: self.max_object_size,
            modified_since: self.modified_since,
        }
        .build()
    }

    fn fs_options(&self) -> Result<FsOptions> {
        Ok(FsOptions {
            respect_gitignore: self.respect_gitignore,
            skip_hidden: self.skip_hidden,
            follow_symlinks: self.follow_symlinks,
            threads: 0,
            filter: self.filter()?,
            exclude: self
                .output
                .iter()
                .filter_map(output::OutputSpec::file)
                .cloned()
                .collect(),
        })
    }

    /// The object-store flags given, by name.
    fn store_flags(&self) -> Vec<&'static str> {
        let given = [
            ("--endpoint", self.endpoint.is_some()),
            ("--region", self.region.is_some()),
            ("--anonymous", self.anonymous),
        ];
        given
            .iter()
            .filter(|(_, on)| *on)
            .map(|(f, _)| *f)
            .collect()
    }

    /// The local-path flags given, by name.
    fn local_flags(&self) -> Vec<&'static str> {
        let given = [
            ("--respect-gitignore", self.respect_gitignore),
            ("--skip-hidden", self.skip_hidden),
            ("--follow-symlinks", self.follow_symlinks),
        ];
        given
            .iter()
            .filter(|(_, on)| *on)
            .map(|(f, _)| *f)
            .collect()
    }

    /// The flags that apply to `remote` become the backend's options; a
    /// flag the target would ignore is an error.
    fn store_options(&self, remote: &Remote) -> Result<objstore::Options> {
        let local = self.local_flags();
        if !local.is_empty() {
            bail!(
                "{} to local paths only, not to {}",
                apply(&local),
                remote.shown()
            );
        }
        let scheme = remote.scheme();
        if self.endpoint.is_some() && !matches!(scheme, "s3" | "az") {
            bail!(
                "--endpoint applies to s3:// and az:// locations (an S3-compatible server, an Azure emulator), not to {}",
                remote.shown()
            );
        }
        if self.region.is_some() && scheme != "s3" {
            bail!(
                "--region applies to s3:// locations only, not to {}",
                remote.shown()
            );
        }
        Ok(objstore::Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            anonymous: self.anonymous,
            filter: self.filter()?,
            ..objstore::Options::default()
        })
    }
}

/// "--a applies", "--a, --b apply".
fn apply(flags: &[&str]) -> String {
    let verb = if flags.len() == 1 { "applies" } else { "apply" };
    format!("{} {verb}", flags.join(", "))
}

/// Runs a scan and returns the exit code.
pub(crate) fn run(args: ScanArgs) -> Result<u8> {
    match Target::resolve(&args.paths, args.urls.as_deref())? {
        Target::Local(paths) => {
            let remote_only = args.store_flags();
            if !remote_only.is_empty() {
                bail!(
                    "{} to URLs only (s3://, gs://, az://, http(s)://), not to local paths",
                    apply(&remote_only)
                );
            }
            let config = args.config(LOCAL);
            let prepared = Prepared::new(&args, &config)?;
            let backend = FsBackend::new(paths, args.fs_options()?)?;
            let scanned = scan(&args, prepared, &config, &backend)?;
            finish(&args, scanned)
        }
        Target::Remote(remote) => {
            let options = args.store_options(&remote)?;
            let config = args.config(REMOTE);
            let prepared = Prepared::new(&args, &config)?;
            let backend = remote.backend(options)?;
            let scanned = scan(&args, prepared, &config, &backend)?;
            if let Some(reason) = nothing_listed(&scanned, &remote, &backend) {
                bail!("cannot list {}: {reason}", remote.shown());
            }
            finish(&args, scanned)
        }
    }
}

/// Why a remote listing failed before it found a single object (no such
/// bucket, access denied, no network), when it did: there is nothing to
/// summarise then, and the store's reason is the whole story.
fn nothing_listed(scanned: &Scanned, remote: &Remote, backend: &Watched) -> Option<String> {
    let report = &scanned.report;
    let listing_error = report.listing_error.as_ref()?;
    if report.remote.objects_discovered > 0 || report.stopped || scanned.reader_left {
        return None;
    }
    let (reason, attempts) = backend
        .listing_failure()
        .unwrap_or_else(|| (listing_error.clone(), 1));
    let mut message = reason;
    if attempts > 1 {
        message.push_str(&format!(" (after {attempts} attempts)"));
    }
    if let Some(hint) = listing_hint(remote.scheme(), &message) {
        message.push_str(&format!(" ({hint})"));
    }
    Some(message)
}

/// What every scan needs before its backend: the engine, the baseline, a
/// valid configuration.
struct Prepared {
    engine: Engine,
    baseline: Option<Baseline>,
}

impl Prepared {
    fn new(args: &ScanArgs, config: &RemoteConfig) -> Result<Prepared> {
        let engine = Engine::new(args.rules.load()?)?;
        let baseline = args.baseline.as_deref().map(Baseline::read).transpose()?;
        config
            .validate(trawl::ScanEngine::max_match_len(&engine))
            .context("invalid option")?;
        Ok(Prepared { engine, baseline })
    }
}

/// A scan that ran: its report (without the findings a baseline held
/// back), and what the baseline held back.
struct Scanned {
    report: RunReport,
    suppressed: Option<summary::Suppressed>,
    /// The reader of the findings went away (a closed pipe).
    reader_left: bool,
}

fn scan<B: RemoteBackend>(
    args: &ScanArgs,
    prepared: Prepared,
    config: &RemoteConfig,
    backend: &B,
) -> Result<Scanned> {
    let Prepared { engine, baseline } = prepared;
    // Created before the walk starts (in `scan_remote`), so that the walk
    // recognises the output file and leaves it out.
    let reader_left = Arc::new(AtomicBool::new(false));
    let rules: Vec<SarifRule> = engine
        .rules()
        .iter()
        .map(|rule| SarifRule {
            id: rule.id().to_owned(),
            description: rule.description().to_owned(),
        })
        .collect();
    let shown = output::Shown {
        redact: args.redact,
        show_secrets: args.show_secrets,
        color: args.color,
    };
    let outputs = output::open_sinks(&args.output, args.format, shown, &reader_left, &rules)?;
    let inner: Box<dyn EventSink> = if args.sort {
        Box::new(SortingSink::new(outputs))
    } else {
        outputs
    };
    let baseline_size = baseline.as_ref().map(Baseline::len);
    let mut sink = BaselineSink::new(inner, baseline.unwrap_or_default());

    let control = Arc::new(ScanControl::new());
    install_interrupt_handler(&control);
    // Findings streaming to the same terminal would be torn by the
    // redraws: they are the progress there.
    let findings_on_terminal = output::uses_stdout(&args.output) && io::stdout().is_terminal();
    let display = progress::Display::start(&control, !args.quiet && !findings_on_terminal);
    let scanned = scan_remote(&engine, backend, config, &mut sink, &control);
    display.finish();
    let mut report = scanned?;
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
    Ok(Scanned {
        report,
        suppressed: baseline_size.map(|baseline| summary::Suppressed {
            findings: suppressed.values().sum(),
            baseline,
        }),
        reader_left: reader_left.load(Ordering::Relaxed),
    })
}

/// Prints the summary and returns the exit code.
fn finish(args: &ScanArgs, scanned: Scanned) -> Result<u8> {
    let Scanned {
        report,
        suppressed,
        reader_left,
    } = scanned;
    if reader_left {
        // `trawl scan . | head`: the reader had what it wanted. Not an error
        // to report, and the findings it read decide the exit code.
        return Ok(if report.findings > 0 {
            args.exit_code
        } else {
            EXIT_CLEAN
        });
    }
    if !args.quiet {
        summary::print(&report, suppressed, &mut io::stderr().lock())?;
    }
    Ok(if !report.is_complete() {
        EXIT_INCOMPLETE
    } else if report.findings > 0 {
        args.exit_code
    } else {
        EXIT_CLEAN
    })
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ScanArgs,
    }

    fn args(given: &[&str]) -> ScanArgs {
        Cli::try_parse_from(std::iter::once("scan").chain(given.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn remote_scans_default_to_more_reads_in_larger_chunks() {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let local = args(&["."]).config(LOCAL);
        assert_eq!(
            (local.io_threads, local.chunk_size, local.pool_buffers),
            (cores.max(2), 256 * 1024, 64)
        );
        let remote = args(&["s3://b"]).config(REMOTE);
        assert_eq!(
            (remote.io_threads, remote.chunk_size, remote.pool_buffers),
            (16, 4 << 20, 32)
        );
    }

    #[test]
    fn explicit_flags_win_over_either_default() {
        let given = args(&[
            "s3://b",
            "--io-threads",
            "3",
            "--chunk-size",
            "1MiB",
            "--pool-buffers",
            "5",
        ]);
        for defaults in [LOCAL, REMOTE] {
            let config = given.config(defaults);
            assert_eq!(
                (config.io_threads, config.chunk_size, config.pool_buffers),
                (3, 1 << 20, 5)
            );
        }
    }
}
