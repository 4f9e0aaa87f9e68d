//! The job-queue rows of `cargo xtask bench`: `trawl-jobs` against raw SQL
//! on the machine's PostgreSQL (127.0.0.1:5432, started if it is installed
//! and down), each measurement a `jobsbench` process on a database of its
//! own, created and dropped by that process (see its documentation for
//! what each side does exactly).
//!
//! - **enqueue**: `JobQueue::enqueue_many` of [`JOBS`] jobs against `COPY`
//!   (text format) of the same rows into a bare table, the server's ceiling
//!   for loading them. Target: [`ENQUEUE_TARGET`] jobs/s.
//! - **claim + process + complete**: one `WorkerManager` with the default
//!   `WorkerConfig` and a no-op worker, through [`JOBS`] enqueued jobs,
//!   against `pgbench` with [`PGBENCH_CLIENTS`] clients running a
//!   transaction that claims 10 jobs with `FOR UPDATE SKIP LOCKED` and
//!   completes them. Targets: [`PROCESS_TARGET`] jobs/s, and at least
//!   [`PROCESS_RATIO_TARGET`]× pgbench.
//! - **limits configured, not binding**: the same with a cap on the
//!   queue's running jobs and budgets on the queue and the job kind, all
//!   far above what the run reaches, so that every claim takes the limited
//!   path; against the plain row of the same run. Target: at least
//!   [`LIMITED_RATIO_TARGET`] of it (a slowdown of 15 % at most).
//! - **lease expiry**: one tick of the queue's `lease_expiry` reconciler,
//!   run by the supervisor of `trawl-reconcile` over a hot table of
//!   [`RECONCILE_JOBS`] running jobs, [`RECONCILE_EXPIRED_PCT`] % of them
//!   with an expired lease (in every partition alike), against a bare
//!   `UPDATE` of the same jobs back to pending, one transaction per
//!   partition, in the same process on the same table reloaded (each side
//!   right after a checkpoint). Target: under [`RECONCILE_TARGET_MS`] ms
//!   per partition tick (the tick's time over its 16 partitions, each a
//!   transaction of its own that holds its rows' locks that long); the
//!   time against the bare `UPDATE` is context, with no target.
//! - **sustained**: the manager for 5 minutes (`--quick`: 1), with a producer
//!   keeping the queue fed: jobs/s per minute (per 10 s), each against
//!   the pgbench figure of the same run. Target: the last minute at least
//!   [`SUSTAINED_TARGET`]× the first. The server's autovacuum is left as
//!   it is (off on the bench machines: the queue must keep its rate
//!   through its own maintenance, which the manager runs); its setting is
//!   printed with the table.
//! - **latency**: [`LATENCY_SAMPLES`] single enqueues, [`LATENCY_GAP_MS`]
//!   ms apart, to an idle manager: p50 and p99 from the `enqueue` call to
//!   the start of processing, against raw SQL (`INSERT` with `pg_notify`,
//!   then `LISTEN` and the claim statement on another connection). No
//!   target.
//!
//! The throughput rows and the lease expiry run [`RUNS`] times each,
//! alternately with their baseline (the lease expiry's baseline runs first
//! in each of its processes), and the best of each counts; `jobsbench`
//! times only the measurement, not the database's creation and loading.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::RUNS;
use crate::cmd::{capture_step, cargo, probe, run_step};
use crate::services;

/// Jobs of the enqueue and the claim + process + complete rows.
const JOBS: u64 = 100_000;
/// Clients of the pgbench baseline.
const PGBENCH_CLIENTS: u64 = 8;
/// `enqueue_many` must load at least this many jobs per second.
const ENQUEUE_TARGET: f64 = 100_000.0;
/// The manager must run at least this many jobs per second end to end…
const PROCESS_TARGET: f64 = 10_000.0;
/// … and at least this fraction of pgbench's rate.
const PROCESS_RATIO_TARGET: f64 = 1.0;
/// Claims with limits configured (not binding) against claims without, at
/// least.
const LIMITED_RATIO_TARGET: f64 = 0.85;
/// Running jobs of the lease expiry row, and the percentage of them whose
/// lease expired.
const RECONCILE_JOBS: u64 = 1_000_000;
const RECONCILE_EXPIRED_PCT: u64 = 1;
/// A tick of `lease_expiry` must take less than this many milliseconds per
/// partition.
const RECONCILE_TARGET_MS: f64 = 100.0;
/// The last interval of the sustained run against its first, at least.
const SUSTAINED_TARGET: f64 = 0.8;
/// Single enqueues of the latency row, and the pause after each, so that
/// every one finds the worker idle.
const LATENCY_SAMPLES: u64 = 200;
const LATENCY_GAP_MS: u64 = 50;

/// The length of the sustained run and of its intervals, in seconds.
fn sustained_shape(quick: bool) -> (u64, u64) {
    if quick { (60, 10) } else { (300, 60) }
}

/// Runs the job-queue rows and prints their table. Without PostgreSQL they
/// are skipped with a notice, unless they are all that was asked for
/// (`required`).
pub(super) fn run(root: &Path, target: &Path, quick: bool, required: bool) -> Result<()> {
    let url = match services::local_postgres() {
        Ok(url) => url,
        Err(err) if !required => {
            eprintln!("\nxtask: skipping the job-queue rows: {err:#}");
            return Ok(());
        }
        Err(err) => return Err(err.context("the job-queue rows need PostgreSQL")),
    };
    run_step(
        "bench: build jobsbench",
        cargo(root).args([
            "build",
            "--release",
            "-p",
            "trawl-benches",
            "--bin",
            "jobsbench",
        ]),
    )?;
    let bench = JobsBench {
        bin: target
            .join("release")
            .join(format!("jobsbench{}", std::env::consts::EXE_SUFFIX)),
        url,
    };
    let work = target.join("bench-jobs");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let server = bench.run("info", &[])?;
    let load_before = load_average();

    let jobs = JOBS.to_string();
    let mut copy = Best::default();
    let mut enqueue = Best::default();
    for run in 1..=RUNS {
        copy.record(bench.throughput("copy", run, &["--jobs", &jobs])?);
        enqueue.record(bench.throughput("enqueue", run, &["--jobs", &jobs])?);
    }

    let script = work.join("claim.pgbench");
    let script = script
        .to_str()
        .context("the target folder's path is not UTF-8")?;
    let pgbench = probe(Command::new("pgbench").arg("--version"));
    if !pgbench {
        eprintln!("\nxtask: pgbench not found on PATH: skipping the pgbench baseline row");
    }
    let clients = PGBENCH_CLIENTS.to_string();
    let pgbench_args = ["--jobs", &jobs, "--clients", &clients, "--script", script];
    let mut baseline = Best::default();
    let mut process = Best::default();
    let mut limited = Best::default();
    for run in 1..=RUNS {
        if pgbench {
            baseline.record(bench.throughput("pgbench", run, &pgbench_args)?);
        }
        process.record(bench.throughput("process", run, &["--jobs", &jobs])?);
        limited.record(bench.throughput("process-limited", run, &["--jobs", &jobs])?);
    }

    let reconcile_args = [
        "--jobs",
        &RECONCILE_JOBS.to_string(),
        "--expired-pct",
        &RECONCILE_EXPIRED_PCT.to_string(),
    ];
    let mut reconcile = Reconcile::default();
    for run in 1..=RUNS {
        reconcile.record(&bench.run_of("reconcile", run, &reconcile_args)?)?;
    }

    let (seconds, interval) = sustained_shape(quick);
    let sustained = Sustained::parse(&bench.run(
        "sustained",
        &[
            "--seconds",
            &seconds.to_string(),
            "--interval",
            &interval.to_string(),
        ],
    )?)?;

    let latency_args = [
        "--samples",
        &LATENCY_SAMPLES.to_string(),
        "--gap-ms",
        &LATENCY_GAP_MS.to_string(),
    ];
    let latency_sql = Latency::parse(&bench.run("latency-sql", &latency_args)?)?;
    let latency = Latency::parse(&bench.run("latency", &latency_args)?)?;

    print_report(&Report {
        server: &server,
        load: [load_before, load_average()],
        copy,
        enqueue,
        pgbench: baseline,
        process,
        limited,
        reconcile,
        sustained,
        latency_sql,
        latency,
    });
    Ok(())
}

/// The `jobsbench` binary and the server it measures.
struct JobsBench {
    bin: std::path::PathBuf,
    url: &'static str,
}

impl JobsBench {
    /// Runs `jobsbench COMMAND URL ARGS…` with its stderr shown; returns
    /// its line of `key=value` fields.
    fn run(&self, command: &str, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg(command).arg(self.url).args(args);
        let output = capture_step(&format!("bench: jobs {command}"), &mut cmd)?;
        let fields = output.trim().to_owned();
        eprintln!("xtask: jobs {command}: {fields}");
        Ok(fields)
    }

    /// Run `run` of [`RUNS`] of a row: [`JobsBench::run`], announced.
    fn run_of(&self, command: &str, run: usize, args: &[&str]) -> Result<String> {
        eprintln!("\nxtask: jobs {command}, run {run}/{RUNS}");
        self.run(command, args)
    }

    /// One run of a throughput row.
    fn throughput(&self, command: &str, run: usize, args: &[&str]) -> Result<Throughput> {
        Throughput::parse(&self.run_of(command, run, args)?)
    }
}

/// `key=value` fields of a `jobsbench` line.
fn field<T: std::str::FromStr>(line: &str, name: &str) -> Result<T> {
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .with_context(|| format!("no `{name}=` in `{line}`"))?
        .parse()
        .map_err(|_| anyhow::anyhow!("bad `{name}=` in `{line}`"))
}

/// One run of a throughput row: `jobs=… seconds=…`, and for the manager
/// the claim and completion statements it made.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Throughput {
    jobs: u64,
    seconds: f64,
    statements: Option<(u64, u64)>,
}

impl Throughput {
    fn parse(line: &str) -> Result<Self> {
        let statements = match (field(line, "claims"), field(line, "completions")) {
            (Ok(claims), Ok(completions)) => Some((claims, completions)),
            _ => None,
        };
        Ok(Throughput {
            jobs: field(line, "jobs")?,
            seconds: field(line, "seconds")?,
            statements,
        })
    }

    fn jobs_per_second(&self) -> f64 {
        self.jobs as f64 / self.seconds
    }
}

/// The best of the runs of a throughput row.
#[derive(Debug, Default)]
struct Best(Option<Throughput>);

impl Best {
    fn record(&mut self, run: Throughput) {
        if self.0.is_none_or(|best| run.seconds < best.seconds) {
            self.0 = Some(run);
        }
    }
}

/// The lease expiry row: the best of its runs, each side a throughput of
/// the expired jobs it fixed.
#[derive(Debug, Default)]
struct Reconcile {
    /// Partitions of one tick.
    partitions: u64,
    /// The bare `UPDATE`s, a transaction per partition.
    baseline: Best,
    /// The supervisor's tick of `lease_expiry`.
    tick: Best,
}

impl Reconcile {
    /// Records a run's line, `jobs=… expired=… partitions=…
    /// baseline_seconds=… tick_seconds=…`.
    fn record(&mut self, line: &str) -> Result<()> {
        let expired = field(line, "expired")?;
        let side = |name: &str| -> Result<Throughput> {
            Ok(Throughput {
                jobs: expired,
                seconds: field(line, name)?,
                statements: None,
            })
        };
        let (baseline, tick) = (side("baseline_seconds")?, side("tick_seconds")?);
        self.partitions = field(line, "partitions")?;
        self.baseline.record(baseline);
        self.tick.record(tick);
        Ok(())
    }

    /// The mean time of a partition in `best`, in milliseconds.
    fn ms_per_partition(&self, best: &Best) -> Option<f64> {
        best.0
            .map(|m| m.seconds * 1e3 / self.partitions.max(1) as f64)
    }
}

/// The sustained run's figures.
#[derive(Debug, PartialEq)]
struct Sustained {
    interval: u64,
    rates: Vec<f64>,
    /// Dead tuples of `trawl_jobs.jobs` at the end of each interval.
    dead: Vec<u64>,
    /// Vacuums of `trawl_jobs.jobs` during the run.
    vacuums: u64,
    /// The manager's maintenance interval in seconds, 0 for none.
    maintenance: u64,
    backlog: u64,
}

impl Sustained {
    fn parse(line: &str) -> Result<Self> {
        fn list<T: std::str::FromStr>(line: &str, name: &str) -> Result<Vec<T>> {
            field::<String>(line, name)?
                .split(',')
                .map(|value| {
                    value
                        .parse()
                        .map_err(|_| anyhow::anyhow!("bad `{name}=` in `{line}`"))
                })
                .collect()
        }
        let sustained = Sustained {
            interval: field(line, "interval")?,
            rates: list(line, "rates")?,
            dead: list(line, "dead")?,
            vacuums: field(line, "vacuums")?,
            maintenance: field(line, "maintenance_s")?,
            backlog: field(line, "backlog")?,
        };
        if sustained.rates.is_empty() {
            bail!("no interval in `{line}`");
        }
        Ok(sustained)
    }

    /// The last interval's rate against the first's (the target).
    fn ratio(&self) -> f64 {
        self.against_first(self.rates[self.rates.len() - 1])
    }

    /// The slowest interval's rate against the first's: a dip in the
    /// middle that the target does not see.
    fn slowest_ratio(&self) -> f64 {
        self.against_first(self.rates.iter().copied().fold(f64::INFINITY, f64::min))
    }

    fn against_first(&self, rate: f64) -> f64 {
        let first = self.rates[0];
        if first > 0.0 { rate / first } else { 0.0 }
    }
}

/// A latency row's figures, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Latency {
    samples: u64,
    p50: f64,
    p99: f64,
    max: f64,
    enqueue_p50: f64,
}

impl Latency {
    fn parse(line: &str) -> Result<Self> {
        Ok(Latency {
            samples: field(line, "samples")?,
            p50: field(line, "p50_ms")?,
            p99: field(line, "p99_ms")?,
            max: field(line, "max_ms")?,
            enqueue_p50: field(line, "enqueue_p50_ms")?,
        })
    }
}

struct Report<'a> {
    server: &'a str,
    /// The one-minute load average before the rows and after them.
    load: [Option<f64>; 2],
    copy: Best,
    enqueue: Best,
    pgbench: Best,
    process: Best,
    limited: Best,
    reconcile: Reconcile,
    sustained: Sustained,
    latency_sql: Latency,
    latency: Latency,
}

/// The one-minute load average (Linux): the server, the bench and anything
/// else share the CPUs, so a busy machine shows in every figure.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

/// `100,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_report(r: &Report<'_>) {
    let setting = |name: &str| field::<String>(r.server, name).unwrap_or_else(|_| "?".into());
    println!();
    println!(
        "job queue: trawl-jobs on PostgreSQL {} at 127.0.0.1:5432 (autovacuum {}, \
         synchronous_commit {}, fsync {}), a fresh database per run; best of {RUNS} runs, \
         alternated",
        setting("server_version"),
        setting("autovacuum"),
        setting("synchronous_commit"),
        setting("fsync"),
    );
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = |l: Option<f64>| l.map_or_else(|| "n/a".to_owned(), |l| format!("{l:.2}"));
    println!(
        "{cpus} CPUs shared by the server, the bench and anything else running; load average \
         (1 min) {} before the rows, {} after",
        load(r.load[0]),
        load(r.load[1])
    );
    println!(
        "{:<30} {:<34} {:>8} {:>9} {:>10} {:>12}  target",
        "row", "name", "jobs", "seconds", "jobs/s", "vs baseline"
    );
    let row = |label: &str, name: &str, best: &Best, baseline: Option<&Best>, target: String| {
        let Some(m) = best.0 else {
            println!("{label:<30} {name:<34} {:>8}", "n/a");
            return;
        };
        let ratio = match baseline.and_then(|b| b.0) {
            Some(base) => format!("{:.2}", m.jobs_per_second() / base.jobs_per_second()),
            None => "-".to_owned(),
        };
        println!(
            "{label:<30} {name:<34} {:>8} {:>9.3} {:>10.0} {:>12}  {target}",
            m.jobs,
            m.seconds,
            m.jobs_per_second(),
            ratio
        );
    };
    let rate = |best: &Best| best.0.map(|m| m.jobs_per_second());

    row(
        &format!("enqueue {}", thousands(JOBS)),
        "COPY, bare table (baseline)",
        &r.copy,
        None,
        String::new(),
    );
    let enqueue = rate(&r.enqueue).unwrap_or(0.0);
    row(
        "",
        "JobQueue::enqueue_many",
        &r.enqueue,
        Some(&r.copy),
        format!(
            "≥ {} jobs/s {}",
            thousands(ENQUEUE_TARGET as u64),
            verdict(enqueue >= ENQUEUE_TARGET)
        ),
    );
    row(
        &format!("claim+no-op+complete {}", thousands(JOBS)),
        &format!("pgbench, {PGBENCH_CLIENTS} clients (baseline)"),
        &r.pgbench,
        None,
        String::new(),
    );
    let process = rate(&r.process).unwrap_or(0.0);
    let pgbench = rate(&r.pgbench);
    let ratio_verdict = pgbench.map_or_else(
        || "n/a".to_owned(),
        |p| verdict(process / p >= PROCESS_RATIO_TARGET).to_owned(),
    );
    row(
        "",
        "WorkerManager, defaults",
        &r.process,
        Some(&r.pgbench),
        format!(
            "≥ {} jobs/s {}; ≥ {PROCESS_RATIO_TARGET:.1}× pgbench {ratio_verdict}",
            thousands(PROCESS_TARGET as u64),
            verdict(process >= PROCESS_TARGET)
        ),
    );
    let limited = rate(&r.limited).unwrap_or(0.0);
    row(
        "",
        "  caps and budgets, not binding",
        &r.limited,
        Some(&r.process),
        format!(
            "≥ {LIMITED_RATIO_TARGET:.2}× the defaults {}",
            verdict(process > 0.0 && limited / process >= LIMITED_RATIO_TARGET)
        ),
    );
    if let Some(m) = r.process.0
        && let Some((claims, completions)) = m.statements
    {
        let per = |n: u64| m.jobs as f64 / n.max(1) as f64;
        println!(
            "  the manager's statements, a transaction each: {claims} claims ({:.1} jobs each), \
             {completions} completions ({:.1} jobs each)",
            per(claims),
            per(completions)
        );
    }

    let rc = &r.reconcile;
    let label = format!("lease expiry {}", thousands(RECONCILE_JOBS));
    row(
        &label,
        "UPDATE per partition (baseline)",
        &rc.baseline,
        None,
        String::new(),
    );
    let tick_ms = rc.ms_per_partition(&rc.tick).unwrap_or(f64::INFINITY);
    row(
        "",
        "lease_expiry via the supervisor",
        &rc.tick,
        Some(&rc.baseline),
        format!(
            "< {RECONCILE_TARGET_MS:.0} ms per partition {}",
            verdict(tick_ms < RECONCILE_TARGET_MS)
        ),
    );
    if let (Some(base_ms), Some(m)) = (rc.ms_per_partition(&rc.baseline), rc.tick.0) {
        println!(
            "  {} running jobs, {} of them ({RECONCILE_EXPIRED_PCT} %) with an expired lease: \
             per partition ({} in a tick) the UPDATE {base_ms:.2} ms, lease_expiry \
             {tick_ms:.2} ms ({:.2}× the UPDATE's time)",
            thousands(RECONCILE_JOBS),
            thousands(m.jobs),
            rc.partitions,
            tick_ms / base_ms
        );
    }

    let s = &r.sustained;
    let unit = if s.interval == 60 {
        "minute".to_owned()
    } else {
        format!("{} s", s.interval)
    };
    let maintenance = match s.maintenance {
        0 => "no maintenance tick".to_owned(),
        every => format!("its maintenance tick every {every} s"),
    };
    println!(
        "sustained, {} s: WorkerManager with the defaults ({maintenance}), a producer keeping {} \
         jobs pending",
        s.interval * s.rates.len() as u64,
        thousands(s.backlog),
    );
    let rates: Vec<String> = s.rates.iter().map(|r| format!("{r:.0}")).collect();
    println!("  jobs/s per {unit}: {}", rates.join(" "));
    if let Some(p) = pgbench {
        let ratios: Vec<String> = s.rates.iter().map(|r| format!("{:.2}", r / p)).collect();
        println!(
            "  vs pgbench (baseline, {p:.0} jobs/s): {}",
            ratios.join(" ")
        );
    }
    let dead: Vec<String> = s.dead.iter().map(u64::to_string).collect();
    println!(
        "  dead tuples in trawl_jobs.jobs at the end of each {unit}: {}; vacuumed {} times",
        dead.join(" "),
        s.vacuums,
    );
    println!(
        "  last {unit} / first: {:.2}  target ≥ {SUSTAINED_TARGET} {}; slowest {unit} / first: \
         {:.2}",
        s.ratio(),
        verdict(s.ratio() >= SUSTAINED_TARGET),
        s.slowest_ratio()
    );

    println!(
        "latency, enqueue call → start of processing on an idle worker, {} single enqueues \
         {LATENCY_GAP_MS} ms apart (no target)",
        r.latency.samples
    );
    println!(
        "  {:<46} {:>8} {:>8} {:>8} {:>16}",
        "name", "p50 ms", "p99 ms", "max ms", "enqueue p50 ms"
    );
    for (name, l) in [
        (
            "INSERT + pg_notify, LISTEN + claim (baseline)",
            &r.latency_sql,
        ),
        ("WorkerManager, defaults (LISTEN/NOTIFY)", &r.latency),
    ] {
        println!(
            "  {name:<46} {:>8.2} {:>8.2} {:>8.2} {:>16.2}",
            l.p50, l.p99, l.max, l.enqueue_p50
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jobsbench_lines() {
        let m =
            Throughput::parse("jobs=100000 seconds=7.4136 claims=17596 completions=12311").unwrap();
        assert_eq!(m.jobs, 100_000);
        assert_eq!(m.statements, Some((17_596, 12_311)));
        assert!((m.jobs_per_second() - 13_488.7).abs() < 1.0);
        let bare = Throughput::parse("jobs=10 seconds=0.5").unwrap();
        assert_eq!(bare.statements, None);
        assert!(Throughput::parse("jobs=10").is_err());

        let s = Sustained::parse(
            "interval=10 rates=1832.7,1365.4,1466.1 dead=13581,0,9893 vacuums=11 maintenance_s=5 \
             backlog=20000 produced=1 processed=1",
        )
        .unwrap();
        assert_eq!(s.rates.len(), 3);
        assert_eq!(s.dead, [13_581, 0, 9_893]);
        assert!((s.ratio() - 1466.1 / 1832.7).abs() < 1e-9);
        assert!((s.slowest_ratio() - 1365.4 / 1832.7).abs() < 1e-9);
        assert!(
            Sustained::parse("interval=10 rates=1,x dead=1 vacuums=0 maintenance_s=5 backlog=1")
                .is_err()
        );

        let mut rc = Reconcile::default();
        for (baseline, tick) in [("0.5", "1.6"), ("0.4", "1.8")] {
            rc.record(&format!(
                "jobs=1000000 expired=10000 partitions=16 baseline_seconds={baseline} \
                 tick_seconds={tick}"
            ))
            .unwrap();
        }
        assert_eq!(rc.ms_per_partition(&rc.baseline), Some(25.0));
        assert_eq!(rc.ms_per_partition(&rc.tick), Some(100.0));
        assert_eq!(rc.tick.0.map(|m| m.jobs_per_second()), Some(6_250.0));
        assert!(
            rc.record("jobs=1 expired=1 partitions=16 tick_seconds=1")
                .is_err()
        );

        let l = Latency::parse(
            "samples=200 p50_ms=3.737 p99_ms=12.169 max_ms=21.931 enqueue_p50_ms=1.947",
        )
        .unwrap();
        assert_eq!(l.samples, 200);
        assert_eq!(l.p99, 12.169);
    }

    #[test]
    fn keeps_the_fastest_run() {
        let mut best = Best::default();
        for seconds in [2.0, 1.0, 3.0] {
            best.record(Throughput {
                jobs: 10,
                seconds,
                statements: None,
            });
        }
        assert_eq!(best.0.map(|m| m.seconds), Some(1.0));
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
