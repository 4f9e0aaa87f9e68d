//! The S3 rows of `cargo xtask bench`: `trawl scan s3://…` against a plain
//! concurrent downloader, on a moto server on 127.0.0.1 started for the run
//! and stopped after it.
//!
//! Two data sets, each in its own bucket: a few large objects (8 × 128 MiB;
//! `--quick` 4 × 128 MiB), where bytes per second count, and many small ones
//! (20,000 × 4 KiB; `--quick` 2,000), where requests per second do. Both are
//! corpus text with planted secrets, so the scan does real work, uploaded by
//! `s3bench setup`. A scan of an empty bucket gives trawl's fixed cost per
//! run, which weighs on short runs.
//!
//! The baseline is `s3bench download`: the same backend and client, the same
//! listing, the same number of threads and the same ranged `GET`s as trawl
//! (moto reads the whole object for every ranged `GET`, so only a downloader
//! with the same ranges is a fair baseline), and no scanning. It runs
//! alternately with `trawl scan`, twice each, and the best wall time of each
//! counts. The targets: trawl's throughput at least [`TARGET_RATIO`] of the
//! downloader's (the scanner is never the bottleneck), and trawl's peak RSS
//! within its buffer budget, `pool × (chunk + overlap)`, plus [`RSS_SLACK`].
//!
//! With two CPUs or more, moto runs on the first half of them and the
//! clients on the rest ([`affinity`]): on one machine, trawl's scanning
//! would otherwise take CPU time from the server it is measured against,
//! which a real store does not share (on two cores this alone cost trawl
//! about 10% against the downloader).
//!
//! The downloader is the server's ceiling for the access pattern; the CPU
//! time moto used during each run, against the wall time, shows whether the
//! server was the limit (moto serves requests under one interpreter lock, so
//! about one core busy is saturation).

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};

use super::affinity::{self, Pinned};
use super::rusage;
use super::{Measurement, RUNS, Ratio, Row, Runner, build_trawl};
use crate::cmd::{capture_step, cargo, run_step};
use crate::services::{self, MotoServer};

/// I/O threads of both sides.
const IO_THREADS: u64 = 16;
/// Bytes per ranged `GET` of both sides (trawl's chunk payload).
const CHUNK_BYTES: u64 = 4 << 20;
/// trawl's pool of chunk buffers.
const POOL_BUFFERS: u64 = 32;
/// What trawl may use above its buffer budget: the engine, the runtime,
/// the HTTP client, the binary.
const RSS_SLACK: u64 = 32 << 20;
/// trawl's throughput must be at least this fraction of the downloader's.
const TARGET_RATIO: f64 = 0.9;
/// The environment of every child: test credentials (moto takes any), and
/// no endpoint or session of the user's.
const CREDENTIALS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "AKIDTRAWLTESTS"),
    ("AWS_SECRET_ACCESS_KEY", "trawl-test-secret"),
    ("AWS_REGION", "us-east-1"),
];
const CLEARED: [&str; 5] = [
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
];

const MIB: f64 = 1024.0 * 1024.0;
const MB: f64 = 1e6;

/// Runs the S3 rows and prints their table. When moto cannot be started,
/// they are skipped with a notice, unless they are all that was asked for
/// (`required`).
pub(super) fn run(
    root: &Path,
    target: &Path,
    quick: bool,
    pipeline: Option<&Ratio>,
    required: bool,
) -> Result<()> {
    let trawl_bin = build_trawl(root, target)?;
    run_step(
        "bench: build s3bench",
        cargo(root).args([
            "build",
            "--release",
            "-p",
            "trawl-benches",
            "--bin",
            "s3bench",
        ]),
    )?;
    let s3bench = target
        .join("release")
        .join(format!("s3bench{}", std::env::consts::EXE_SUFFIX));
    let work = target.join("bench-s3");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let mut split = affinity::allowed().and_then(|cpus| affinity::split(&cpus));
    let server = {
        let pinned = split.as_ref().map(|(server, _)| Pinned::to(server));
        if let Some(Err(err)) = &pinned {
            eprintln!("xtask: warning: could not pin moto to some CPUs ({err}): not pinning");
            split = None;
        }
        services::start_moto(root)
    };
    let server = match server {
        Ok(server) => server,
        Err(err) if !required => {
            eprintln!("\nxtask: skipping the S3 rows: no moto server: {err:#}");
            return Ok(());
        }
        Err(err) => return Err(err.context("the S3 rows need moto")),
    };
    // Everything started from here on runs on the other CPUs.
    let _clients = match split.as_ref().map(|(_, clients)| Pinned::to(clients)) {
        Some(Ok(pinned)) => Some(pinned),
        Some(Err(err)) => {
            eprintln!("xtask: warning: could not pin the clients to some CPUs ({err})");
            split = None;
            None
        }
        None => None,
    };
    let budget = Budget::read(&s3bench)?;
    let fixed = fixed_cost(&server, &s3bench, &trawl_bin, &work)?;
    let mut sets = Vec::new();
    for shape in [Shape::Large, Shape::Small] {
        sets.push(bench_set(
            &server, &s3bench, &trawl_bin, &work, shape, quick,
        )?);
    }
    // Stops the server before the report, so its messages come first.
    drop(server);
    print_report(&budget, fixed, &sets, split.as_ref(), pipeline);
    Ok(())
}

/// A data set.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Large,
    Small,
    /// No objects: what trawl costs whatever the data.
    Empty,
}

impl Shape {
    /// The name `s3bench setup` takes.
    fn name(self) -> &'static str {
        match self {
            Shape::Large => "large",
            Shape::Small => "small",
            Shape::Empty => "empty",
        }
    }
}

/// `key=value` fields of an `s3bench` line.
fn field<T: std::str::FromStr>(line: &str, name: &str) -> Result<T> {
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .with_context(|| format!("no `{name}=` in `{}`", line.trim()))?
        .parse()
        .map_err(|_| anyhow::anyhow!("bad `{name}=` in `{}`", line.trim()))
}

/// `cmd` with the credentials of the benchmark.
fn with_env(mut cmd: Command) -> Command {
    for key in CLEARED {
        cmd.env_remove(key);
    }
    cmd.envs(CREDENTIALS);
    cmd
}

/// Runs `cmd`, with the bench's environment, as a step; returns its stdout.
fn capture(step: &str, cmd: Command) -> Result<String> {
    capture_step(step, &mut with_env(cmd))
}

/// trawl's buffer budget for the bench's settings.
struct Budget {
    overlap: u64,
    bytes: u64,
}

impl Budget {
    fn read(s3bench: &Path) -> Result<Self> {
        let mut cmd = Command::new(s3bench);
        cmd.args(["budget", "--pool-buffers", &POOL_BUFFERS.to_string()])
            .args(["--chunk-size", &CHUNK_BYTES.to_string()]);
        let line = capture("bench: s3 buffer budget", cmd)?;
        Ok(Budget {
            overlap: field(&line, "overlap")?,
            bytes: field(&line, "budget_bytes")?,
        })
    }

    fn rss_limit(&self) -> u64 {
        self.bytes + RSS_SLACK
    }
}

/// What `s3bench setup` uploaded.
struct Loaded {
    objects: u64,
    bytes: u64,
    planted: u64,
    seconds: f64,
}

/// One data set's figures.
struct SetReport {
    shape: Shape,
    loaded: Loaded,
    download: Row,
    trawl: Row,
    /// moto's CPU seconds per wall second in the best run of each.
    download_server_busy: Option<f64>,
    trawl_server_busy: Option<f64>,
    /// Requests the downloader made, retries included (its last run).
    requests: u64,
    retries: u64,
    /// Findings of trawl's last run.
    found: usize,
}

/// Uploads one data set, then runs the downloader and trawl alternately.
fn bench_set(
    server: &MotoServer,
    s3bench: &Path,
    trawl_bin: &Path,
    work: &Path,
    shape: Shape,
    quick: bool,
) -> Result<SetReport> {
    let endpoint = server.endpoint();
    let (bucket, loaded) = upload(&endpoint, s3bench, shape, quick)?;

    let mut download = Command::new(s3bench);
    download
        .args(["download", &endpoint, &bucket])
        .args(["--io-threads", &IO_THREADS.to_string()])
        .args(["--chunk-size", &CHUNK_BYTES.to_string()]);
    let download_out = work.join(format!("download-{}.out", shape.name()));
    let download = Runner::new(
        "download (baseline)",
        with_env(download),
        &[0],
        work.join(format!("download-{}.stderr", shape.name())),
    )
    .with_stdout(download_out.clone());

    let findings = work.join(format!("findings-{}.jsonl", shape.name()));
    let trawl = Runner::new(
        "trawl scan",
        trawl_scan(trawl_bin, &endpoint, &bucket, &findings),
        &[0, 1],
        work.join(format!("trawl-{}.stderr", shape.name())),
    );

    let mut report = SetReport {
        shape,
        loaded,
        download: Row::new(&download),
        trawl: Row::new(&trawl),
        download_server_busy: None,
        trawl_server_busy: None,
        requests: 0,
        retries: 0,
        found: 0,
    };
    for run in 1..=RUNS {
        let (m, busy) = measure(server, &download, run)?;
        let line = fs::read_to_string(&download_out)
            .with_context(|| format!("reading {}", download_out.display()))?;
        let (objects, bytes): (u64, u64) = (field(&line, "objects")?, field(&line, "bytes")?);
        ensure!(
            (objects, bytes) == (report.loaded.objects, report.loaded.bytes),
            "the downloader read {objects} objects, {bytes} bytes; {} and {} were uploaded",
            report.loaded.objects,
            report.loaded.bytes
        );
        report.requests = field(&line, "requests")?;
        report.retries = field(&line, "retries")?;
        if record(&mut report.download, m) {
            report.download_server_busy = busy;
        }

        let (m, busy) = measure(server, &trawl, run)?;
        report.found = fs::read_to_string(&findings)
            .with_context(|| format!("reading {}", findings.display()))?
            .lines()
            .filter(|line| !line.trim().is_empty())
            .count();
        ensure!(
            report.found > 0,
            "trawl found nothing in s3://{bucket}, which holds {} planted secrets; see {}",
            report.loaded.planted,
            trawl.stderr.display()
        );
        if record(&mut report.trawl, m) {
            report.trawl_server_busy = busy;
        }
    }
    Ok(report)
}

/// Creates a bucket unique to this run (no leftover of another can be in
/// the way) and uploads `shape` into it with `s3bench setup`.
fn upload(endpoint: &str, s3bench: &Path, shape: Shape, quick: bool) -> Result<(String, Loaded)> {
    let bucket = format!("trawl-bench-{}-{}", shape.name(), std::process::id());
    let mut setup = Command::new(s3bench);
    setup.args(["setup", endpoint, &bucket, shape.name()]);
    if quick {
        setup.arg("--quick");
    }
    let line = capture(&format!("bench: s3 upload {}", shape.name()), setup)?;
    let loaded = Loaded {
        objects: field(&line, "objects")?,
        bytes: field(&line, "bytes")?,
        planted: field(&line, "planted")?,
        seconds: field(&line, "seconds")?,
    };
    Ok((bucket, loaded))
}

/// `trawl scan s3://BUCKET` with the bench's settings.
fn trawl_scan(trawl_bin: &Path, endpoint: &str, bucket: &str, findings: &Path) -> Command {
    let mut trawl = Command::new(trawl_bin);
    trawl
        .args(["scan", &format!("s3://{bucket}")])
        .args(["--endpoint", endpoint, "--region", "us-east-1"])
        .args(["--io-threads", &IO_THREADS.to_string()])
        .args(["--chunk-size", &CHUNK_BYTES.to_string()])
        .args(["--pool-buffers", &POOL_BUFFERS.to_string()])
        .arg("--output")
        .arg(findings);
    with_env(trawl)
}

/// trawl's cost that does not depend on the data: a scan of an empty bucket
/// (the process, the rules compiled, one listing), best of [`RUNS`].
fn fixed_cost(
    server: &MotoServer,
    s3bench: &Path,
    trawl_bin: &Path,
    work: &Path,
) -> Result<Measurement> {
    let endpoint = server.endpoint();
    let (bucket, _) = upload(&endpoint, s3bench, Shape::Empty, false)?;
    let findings = work.join("findings-empty.jsonl");
    let trawl = Runner::new(
        "trawl scan (empty bucket)",
        trawl_scan(trawl_bin, &endpoint, &bucket, &findings),
        &[0],
        work.join("trawl-empty.stderr"),
    );
    let mut row = Row::new(&trawl);
    for run in 1..=RUNS {
        row.record(trawl.measure(run)?);
    }
    row.best.context("no run of the empty scan")
}

/// One run of `runner`, with moto's CPU seconds per wall second during it.
fn measure(server: &MotoServer, runner: &Runner, run: usize) -> Result<(Measurement, Option<f64>)> {
    let before = rusage::cpu_seconds(server.pid());
    let m = runner.measure(run)?;
    let after = rusage::cpu_seconds(server.pid());
    let busy = before
        .zip(after)
        .map(|(before, after)| (after - before) / m.wall.as_secs_f64());
    Ok((m, busy))
}

/// Records `m` in `row`; whether it is the new best.
fn record(row: &mut Row, m: Measurement) -> bool {
    row.record(m);
    row.best.is_some_and(|best| best.wall == m.wall)
}

fn print_report(
    budget: &Budget,
    fixed: Measurement,
    sets: &[SetReport],
    split: Option<&(Vec<usize>, Vec<usize>)>,
    pipeline: Option<&Ratio>,
) {
    println!();
    println!(
        "S3 (moto on 127.0.0.1; both sides {IO_THREADS} I/O threads, {} MiB ranged GETs; trawl \
         {POOL_BUFFERS} buffers), best of {RUNS} runs, alternated",
        CHUNK_BYTES >> 20
    );
    match split {
        Some((server, clients)) => println!(
            "moto runs on CPU {}, the downloader and trawl on CPU {}, as if on two machines",
            affinity::display(server),
            affinity::display(clients)
        ),
        None => println!("moto and the clients share the CPUs (not pinned)"),
    }
    println!(
        "{:<15} {:<20} {:>8} {:>10} {:>8} {:>12} {:>14} {:>7}",
        "data set",
        "name",
        "wall s",
        "objects/s",
        "MB/s",
        "vs baseline",
        "peak RSS MiB",
        "moto CPU"
    );
    let limit = budget.rss_limit();
    for set in sets {
        let label = format!(
            "{} × {}",
            set.loaded.objects,
            size_label(set.loaded.bytes / set.loaded.objects.max(1))
        );
        let baseline = set.download.best.map(|m| m.wall);
        for (row, busy, label) in [
            (&set.download, set.download_server_busy, label.as_str()),
            (&set.trawl, set.trawl_server_busy, ""),
        ] {
            let Some(m) = row.best else { continue };
            let secs = m.wall.as_secs_f64();
            let is_trawl = row.name == "trawl scan";
            let ratio = match baseline {
                Some(base) if is_trawl => {
                    let ratio = base.as_secs_f64() / secs;
                    format!("{ratio:.2} {}", verdict(ratio >= TARGET_RATIO))
                }
                _ => "-".to_owned(),
            };
            let rss = m.peak_rss_bytes.map_or_else(
                || "n/a".to_owned(),
                |b| {
                    let mib = format!("{:.1}", b as f64 / MIB);
                    if is_trawl {
                        format!("{mib} {}", verdict(b <= limit))
                    } else {
                        mib
                    }
                },
            );
            let busy = busy.map_or_else(|| "n/a".to_owned(), |b| format!("{:.0}%", b * 100.0));
            println!(
                "{:<15} {:<20} {:>8.3} {:>10.1} {:>8.1} {:>12} {:>14} {:>7}",
                label,
                row.name,
                secs,
                set.loaded.objects as f64 / secs,
                set.loaded.bytes as f64 / MB / secs,
                ratio,
                rss,
                busy
            );
        }
    }
    println!(
        "targets: trawl ≥ {TARGET_RATIO}× the downloader's throughput; trawl's peak RSS ≤ buffer \
         budget {POOL_BUFFERS} × ({} MiB + {} B overlap) = {:.1} MiB, + {} MiB = {:.1} MiB",
        CHUNK_BYTES >> 20,
        budget.overlap,
        budget.bytes as f64 / MIB,
        RSS_SLACK >> 20,
        limit as f64 / MIB
    );
    println!(
        "trawl's fixed cost (process start, rules compiled, an empty bucket listed): {:.3} s, \
         peak RSS {}",
        fixed.wall.as_secs_f64(),
        fixed.peak_rss_bytes.map_or_else(
            || "n/a".to_owned(),
            |b| format!("{:.1} MiB", b as f64 / MIB)
        )
    );
    for set in sets {
        let name = set.shape.name();
        println!(
            "{name}: uploaded in {:.1} s; trawl reported {} findings, {} secrets planted; the \
             downloader made {} requests ({} retried)",
            set.loaded.seconds, set.found, set.loaded.planted, set.requests, set.retries
        );
        if let Some(ceiling) = ceiling(set, pipeline) {
            println!("{name}: {ceiling}");
        }
    }
}

/// What limits the downloader, the server's ceiling for the pattern: moto
/// when it kept about a core busy, or when the pipeline alone is much faster.
fn ceiling(set: &SetReport, pipeline: Option<&Ratio>) -> Option<String> {
    let m = set.download.best?;
    let secs = m.wall.as_secs_f64();
    let mb_s = set.loaded.bytes as f64 / MB / secs;
    let requests_s = set.requests as f64 / secs;
    let saturated = set.download_server_busy.is_some_and(|busy| busy >= 0.85);
    let faster = pipeline.filter(|p| p.subject / MB > 2.0 * mb_s);
    if !saturated && faster.is_none() {
        return None;
    }
    let mut text = format!(
        "the server is the limit: its ceiling for this pattern (the downloader) is {mb_s:.1} MB/s, \
         {requests_s:.0} requests/s"
    );
    if let Some(busy) = set.download_server_busy.filter(|_| saturated) {
        text.push_str(&format!(", with moto {:.0}% busy", busy * 100.0));
    }
    if let Some(p) = faster {
        text.push_str(&format!(
            "; trawl's pipeline alone (criterion, no scanning) moves {:.0} MB/s",
            p.subject / MB
        ));
    }
    Some(text)
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

/// `128 MiB`, `4 KiB`, or bytes.
fn size_label(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::{field, size_label};

    #[test]
    fn reads_s3bench_fields() {
        let line = "objects=8 bytes=1073741824 planted=12 seconds=3.250\n";
        assert_eq!(field::<u64>(line, "objects").unwrap(), 8);
        assert_eq!(field::<u64>(line, "bytes").unwrap(), 1 << 30);
        assert_eq!(field::<f64>(line, "seconds").unwrap(), 3.25);
        assert!(field::<u64>(line, "requests").is_err());
        assert!(field::<u64>(line, "seconds").is_err(), "not a whole number");
    }

    #[test]
    fn labels_sizes() {
        assert_eq!(size_label(128 << 20), "128 MiB");
        assert_eq!(size_label(4096), "4 KiB");
        assert_eq!(size_label(1000), "1000 B");
    }
}
