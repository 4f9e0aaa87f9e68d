//! `cargo xtask bench`: the criterion benches, then the end-to-end figures.
//!
//! End to end, `trawl scan DIR` runs against `rg` searching the same
//! directory for the engine's keywords, on a generated corpus; both run twice,
//! interleaved, and the best wall time of each is kept (the machines are
//! noisy, so the ratio is the figure to read, not the absolute times).
//!
//! Then the S3 rows (`s3.rs`): `trawl scan s3://…` against a plain
//! downloader making the same requests, on a local moto server, for large
//! and for small objects. `--only s3` runs them alone.
//!
//! Then the job-queue rows (`jobs.rs`): `trawl-jobs` against raw SQL
//! (`COPY`, `pgbench`, `LISTEN`/`NOTIFY`) on the machine's PostgreSQL.
//! `--only jobs` runs them alone.

mod affinity;
mod jobs;
mod rusage;
mod s3;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{cargo, display, probe, run_step};

/// The seed of the end-to-end corpus; fixed so that runs compare.
const CORPUS_SEED: u64 = 1;
/// Marker the `corpus` bin of trawl-benches writes into a finished corpus.
const CORPUS_MARKER: &str = ".trawl-bench-corpus";
/// Each end-to-end command runs this many times; the best wall time counts.
const RUNS: usize = 2;
/// The buffer settings `trawl scan` is run with, so the budget is known.
const POOL_BUFFERS: u64 = 64;
const CHUNK_KIB: u64 = 256;

/// Which parts of the benchmarks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parts {
    /// Criterion, the local end-to-end rows, the S3 rows, then the
    /// job-queue rows.
    All,
    /// The S3 rows alone (`--only s3`).
    S3,
    /// The job-queue rows alone (`--only jobs`).
    Jobs,
}

/// Runs the benches; `quick` shortens criterion, uses smaller corpora and
/// a shorter sustained run of the job queue.
pub(crate) fn run(root: &Path, quick: bool, parts: Parts) -> Result<()> {
    let target = target_dir(root);
    match parts {
        Parts::All => {
            let pipeline = local(root, quick, &target)?;
            s3::run(root, &target, quick, pipeline.as_ref(), false)?;
            jobs::run(root, &target, quick, false)
        }
        Parts::S3 => {
            // An earlier run's figure, if any, to tell whether the server
            // is the limit.
            let pipeline = criterion_ratio(
                &target.join("criterion"),
                "pipeline",
                "scan_remote_null_engine",
                "copy_baseline",
            );
            s3::run(root, &target, quick, pipeline.as_ref(), true)
        }
        Parts::Jobs => jobs::run(root, &target, quick, true),
    }
}

/// Criterion, then `trawl scan` against `rg` on a local corpus; returns the
/// pipeline's criterion figure.
fn local(root: &Path, quick: bool, target: &Path) -> Result<Option<Ratio>> {
    let mut criterion = cargo(root);
    criterion.args(["bench", "-p", "trawl-benches"]);
    if quick {
        criterion.args(["--", "--quick"]);
    }
    run_step("bench: criterion", &mut criterion)?;
    let criterion_dir = target.join("criterion");
    let engine: Vec<(&str, Ratio)> = [
        ("source code", "builtin_rules"),
        ("no keyword", "keyword_free"),
        ("1000 secrets/MiB", "secret_dense"),
    ]
    .into_iter()
    .filter_map(|(label, bench)| {
        criterion_ratio(&criterion_dir, "engine", bench, "memmem_ceiling").map(|r| (label, r))
    })
    .collect();
    let pipeline = criterion_ratio(
        &criterion_dir,
        "pipeline",
        "scan_remote_null_engine",
        "copy_baseline",
    );

    let size_mib: u64 = if quick { 32 } else { 256 };
    let work = target.join("bench-corpus");
    let corpus = work.join(format!("{size_mib}mib-seed{CORPUS_SEED}"));
    run_step(
        "bench: corpus",
        release_bin(root, "corpus")
            .arg(&corpus)
            .arg(size_mib.to_string())
            .arg(CORPUS_SEED.to_string()),
    )?;
    let summary = CorpusInfo::read(&corpus.join(CORPUS_MARKER))?;
    let keywords = work.join("keywords.txt");
    run_step(
        "bench: keywords",
        release_bin(root, "keywords").arg(&keywords),
    )?;
    let trawl_bin = build_trawl(root, target)?;
    let findings = work.join("findings.jsonl");
    let mut trawl = Command::new(&trawl_bin);
    trawl
        .arg("scan")
        .arg(&corpus)
        .args(["--pool-buffers", &POOL_BUFFERS.to_string()])
        .args(["--chunk-size", &format!("{CHUNK_KIB}KiB")])
        .arg("--output")
        .arg(&findings);
    let trawl_runner = Runner::new("trawl scan", trawl, &[0, 1], work.join("trawl.stderr"));

    let rg_runner = if probe(Command::new("rg").arg("--version")) {
        let mut rg = Command::new("rg");
        // -uu: hidden and ignored files too, as trawl scans them by default.
        rg.args(["-a", "-i", "-F", "-uu", "--count-matches", "-f"])
            .arg(&keywords)
            .arg(&corpus);
        Some(Runner::new(
            "rg -F keywords",
            rg,
            &[0, 1],
            work.join("rg.stderr"),
        ))
    } else {
        eprintln!("\nxtask: rg not found on PATH: skipping the rg baseline row");
        None
    };

    let mut rows = vec![Row::new(&trawl_runner)];
    if let Some(rg) = &rg_runner {
        rows.push(Row::new(rg));
    }
    for run in 1..=RUNS {
        rows[0].record(trawl_runner.measure(run)?);
        if let Some(rg) = &rg_runner {
            rows[1].record(rg.measure(run)?);
        }
    }
    let found = fs::read_to_string(&findings)
        .map(|text| text.lines().filter(|line| !line.trim().is_empty()).count())
        .ok();

    print_report(size_mib, &summary, &engine, pipeline.as_ref(), &rows, found);
    if let Some(clean) = clean_corpus(&trawl_bin, &work)? {
        println!(
            "clean corpus (the cargo registry's crate sources, {:.0} MB, no real secrets): \
             {} findings, {:.2} per MB",
            clean.bytes as f64 / 1e6,
            clean.findings,
            clean.findings as f64 / (clean.bytes as f64 / 1e6)
        );
    }
    Ok(pipeline)
}

/// Builds `trawl` in release mode; returns the binary.
fn build_trawl(root: &Path, target: &Path) -> Result<PathBuf> {
    run_step(
        "bench: build trawl",
        cargo(root).args(["build", "--release", "-p", "trawl-cli"]),
    )?;
    Ok(target
        .join("release")
        .join(format!("trawl{}", std::env::consts::EXE_SUFFIX)))
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

fn release_bin(root: &Path, bin: &str) -> Command {
    let mut cmd = cargo(root);
    cmd.args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "trawl-benches",
        "--bin",
        bin,
        "--",
    ]);
    cmd
}

/// What the `corpus` bin recorded about the tree it wrote.
#[derive(Debug)]
struct CorpusInfo {
    files: u64,
    bytes: u64,
    planted: u64,
}

impl CorpusInfo {
    fn read(marker: &Path) -> Result<Self> {
        let text = fs::read_to_string(marker)
            .with_context(|| format!("reading the corpus marker {}", marker.display()))?;
        let field = |name: &str| -> Result<u64> {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .with_context(|| format!("{}: no `{name}=` line", marker.display()))?
                .trim()
                .parse()
                .with_context(|| format!("{}: bad `{name}=` value", marker.display()))
        };
        Ok(Self {
            files: field("files")?,
            bytes: field("bytes")?,
            planted: field("planted")?,
        })
    }
}

/// One end-to-end command, measured.
struct Runner {
    name: &'static str,
    cmd: Command,
    ok_codes: &'static [i32],
    stderr: PathBuf,
    /// Where stdout goes; `None` discards it.
    stdout: Option<PathBuf>,
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    wall: Duration,
    peak_rss_bytes: Option<u64>,
}

impl Runner {
    fn new(name: &'static str, cmd: Command, ok_codes: &'static [i32], stderr: PathBuf) -> Self {
        Self {
            name,
            cmd,
            ok_codes,
            stderr,
            stdout: None,
        }
    }

    /// Keeps the command's stdout in `path` (of the last run).
    fn with_stdout(mut self, path: PathBuf) -> Self {
        self.stdout = Some(path);
        self
    }

    fn measure(&self, run: usize) -> Result<Measurement> {
        let line = display(&self.cmd);
        eprintln!("\nxtask [bench: {} run {run}/{RUNS}] $ {line}", self.name);
        let create = |path: &Path| {
            File::create(path).with_context(|| format!("creating {}", path.display()))
        };
        let stderr = create(&self.stderr)?;
        let stdout = match &self.stdout {
            Some(path) => Stdio::from(create(path)?),
            None => Stdio::null(),
        };
        // A fresh `Command` each run, with what was set on the template.
        let mut cmd = Command::new(self.cmd.get_program());
        cmd.args(self.cmd.get_args())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (key, value) in self.cmd.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        if let Some(dir) = self.cmd.get_current_dir() {
            cmd.current_dir(dir);
        }
        let start = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("bench `{}`: could not start `{line}`", self.name))?;
        let (status, peak_rss_bytes) = rusage::wait(child)
            .with_context(|| format!("bench `{}`: waiting for `{line}`", self.name))?;
        let wall = start.elapsed();
        match status.code() {
            Some(code) if self.ok_codes.contains(&code) => {}
            _ => bail!(
                "bench `{}` failed: `{line}` exited with {status}; its stderr is in {}",
                self.name,
                self.stderr.display()
            ),
        }
        Ok(Measurement {
            wall,
            peak_rss_bytes,
        })
    }
}

/// A table row: the best of the runs of one command.
struct Row {
    name: &'static str,
    best: Option<Measurement>,
}

impl Row {
    fn new(runner: &Runner) -> Self {
        Self {
            name: runner.name,
            best: None,
        }
    }

    fn record(&mut self, m: Measurement) {
        if self.best.is_none_or(|best| m.wall < best.wall) {
            self.best = Some(m);
        }
    }
}

/// What `trawl scan` reports on text without real secrets.
struct CleanCorpus {
    bytes: u64,
    findings: usize,
}

/// Scans the crate sources of the cargo registry (what the build itself
/// downloaded: real code, no real secrets), so every finding there is a
/// false alarm, or a test key a crate ships. `None` with a notice when the
/// registry is not where cargo keeps it.
fn clean_corpus(trawl_bin: &Path, work: &Path) -> Result<Option<CleanCorpus>> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let Some(src) = home
        .map(|h| h.join("registry").join("src"))
        .filter(|p| p.is_dir())
    else {
        eprintln!("xtask: no cargo registry sources found: skipping the clean-corpus row");
        return Ok(None);
    };
    let findings = work.join("clean-findings.jsonl");
    let mut trawl = Command::new(trawl_bin);
    trawl
        .arg("scan")
        .arg(&src)
        .arg("--quiet")
        .arg("--output")
        .arg(&findings);
    let status = trawl.status()?;
    if !matches!(status.code(), Some(0 | 1)) {
        bail!("`trawl scan {}` failed: {status}", src.display());
    }
    let findings = fs::read_to_string(&findings)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    Ok(Some(CleanCorpus {
        bytes: tree_bytes(&src),
        findings,
    }))
}

/// The total size of the regular files below `dir` (links not followed).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// A criterion bench's mean throughput against its same-run baseline, in
/// bytes per second.
struct Ratio {
    subject: f64,
    baseline: f64,
}

/// Reads criterion's `estimates.json`/`benchmark.json` of `subject` and
/// `baseline` in `group`; `None` (with a notice) when they are missing.
fn criterion_ratio(
    criterion_dir: &Path,
    group: &str,
    subject: &str,
    baseline: &str,
) -> Option<Ratio> {
    let throughput = |bench: &str| -> Option<f64> {
        let dir = criterion_dir.join(group).join(bench).join("new");
        let estimates = fs::read_to_string(dir.join("estimates.json")).ok()?;
        let benchmark = fs::read_to_string(dir.join("benchmark.json")).ok()?;
        let mean_ns = json_number_after(&estimates, &["\"mean\"", "\"point_estimate\""])?;
        let bytes = json_number_after(&benchmark, &["\"throughput\"", "\"Bytes\""])?;
        (mean_ns > 0.0).then(|| bytes / mean_ns * 1e9)
    };
    let figures = throughput(subject).zip(throughput(baseline));
    if figures.is_none() {
        eprintln!("xtask: no criterion estimates for {group}/{subject}: leaving them out");
    }
    figures.map(|(subject, baseline)| Ratio { subject, baseline })
}

/// The number after the last of `keys`, each searched after the previous:
/// enough JSON for criterion's fixed-shape files, without a JSON parser.
fn json_number_after(text: &str, keys: &[&str]) -> Option<f64> {
    let mut at = 0;
    for key in keys {
        at += text[at..].find(key)? + key.len();
    }
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn print_report(
    size_mib: u64,
    corpus: &CorpusInfo,
    engine: &[(&str, Ratio)],
    pipeline: Option<&Ratio>,
    rows: &[Row],
    found: Option<usize>,
) {
    const MB: f64 = 1e6;
    println!();
    for (label, ratio) in engine {
        println!(
            "engine (criterion, one core, built-in rules), {label}: {:.0} MB/s; memmem ceiling \
             {:.0} MB/s; ratio {:.3}",
            ratio.subject / MB,
            ratio.baseline / MB,
            ratio.subject / ratio.baseline
        );
    }
    if let Some(pipeline) = pipeline {
        println!(
            "pipeline (criterion, all cores, engine that finds nothing): {:.0} MB/s, \
             one-thread copy {:.0} MB/s, ratio {:.3}",
            pipeline.subject / MB,
            pipeline.baseline / MB,
            pipeline.subject / pipeline.baseline
        );
    }
    println!(
        "end to end: corpus {size_mib} MiB ({} files, {} bytes, {} planted secrets), best of {RUNS} runs",
        corpus.files, corpus.bytes, corpus.planted
    );
    let rg_wall = rows
        .iter()
        .find(|r| r.name.starts_with("rg"))
        .and_then(|r| r.best)
        .map(|m| m.wall);
    println!(
        "{:<16} {:>8} {:>9} {:>13} {:>16}",
        "name", "wall s", "MB/s", "peak RSS MiB", "wall / rg wall"
    );
    for row in rows {
        let Some(m) = row.best else { continue };
        let secs = m.wall.as_secs_f64();
        let rss = m.peak_rss_bytes.map_or_else(
            || "n/a".to_owned(),
            |b| format!("{:.1}", b as f64 / (1024.0 * 1024.0)),
        );
        let ratio = rg_wall.map_or_else(
            || "n/a".to_owned(),
            |rg| format!("{:.2}", secs / rg.as_secs_f64()),
        );
        println!(
            "{:<16} {:>8.3} {:>9.1} {:>13} {:>16}",
            row.name,
            secs,
            corpus.bytes as f64 / MB / secs,
            rss,
            ratio
        );
    }
    println!(
        "trawl's buffer budget: {POOL_BUFFERS} × ({CHUNK_KIB} KiB + the engine's overlap) ≥ {:.1} MiB; \
         peak RSS above it is the fixed overhead",
        (POOL_BUFFERS * CHUNK_KIB) as f64 / 1024.0
    );
    if let Some(found) = found {
        println!(
            "trawl reported {found} findings; the corpus has {} planted secrets",
            corpus.planted
        );
    }
}

#[cfg(test)]
mod tests {
    use super::json_number_after;

    #[test]
    fn reads_criterion_numbers() {
        let estimates = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.5,"upper_bound":2.5},"point_estimate":2.0e3,"standard_error":0.1},"median":{"point_estimate":7}}"#;
        assert_eq!(
            json_number_after(estimates, &["\"mean\"", "\"point_estimate\""]),
            Some(2000.0)
        );
        assert_eq!(
            json_number_after(estimates, &["\"median\"", "\"point_estimate\""]),
            Some(7.0)
        );
        let benchmark = r#"{"throughput":{"Bytes":4194304},"full_id":"engine/x"}"#;
        assert_eq!(
            json_number_after(benchmark, &["\"throughput\"", "\"Bytes\""]),
            Some(4194304.0)
        );
        assert_eq!(json_number_after(benchmark, &["\"nope\""]), None);
    }
}
