//! `jobsbench`: the job-queue side of `cargo xtask bench`, one measurement
//! per process, each on a database of its own.
//!
//! Every command but `info` creates a fresh database on the server `URL`
//! names (which must be on a loopback address: databases are created and
//! dropped there), runs, drops the database, and prints one line of
//! `key=value` fields on stdout for xtask to read; progress goes to stderr.
//! Each times only its measurement, not the setup around it.
//!
//! - `enqueue URL --jobs N`: [`JobQueue::enqueue_many`] of `N` jobs, against
//!   `copy URL --jobs N`: `COPY … FROM STDIN` (text format) of the same rows
//!   into a bare table (an identity primary key, no other index), the
//!   database's ceiling for loading them. Both time the encoding, the
//!   transfer and the commit.
//! - `process URL --jobs N`: claim, no-op processing and completion of `N`
//!   enqueued jobs by one [`WorkerManager`] with [`WorkerConfig::default`],
//!   from its start until its shutdown has recorded every outcome; against
//!   `pgbench URL --jobs N --clients C --script FILE`: `pgbench` with `C`
//!   clients running [`PGBENCH_SCRIPT`] (written to `FILE`), a transaction
//!   that claims 10 jobs with `FOR UPDATE SKIP LOCKED` and completes them
//!   (moves them to a finished table and records their attempts, as the
//!   queue does) in raw SQL. Both start from `N` pending jobs in a table
//!   just vacuumed and analyzed.
//! - `process-limited URL --jobs N`: `process` with limits configured that
//!   never bind (a cap of 1,000,000 running jobs on the queue, budgets of
//!   10^15 per second on the queue and on the job kind), so that claims
//!   take the limited path (a transaction that locks the queue's settings
//!   and its budgets, counts its running jobs and charges the budgets):
//!   the cost of limits against `process` in the same run.
//! - `sustained URL --seconds S --interval I`: a [`WorkerManager`] with the
//!   defaults claims and completes for `S` seconds while a producer keeps
//!   [`BACKLOG`] jobs pending; whatever keeps the hot table small is the
//!   manager's own doing (its maintenance ticks, by default). Jobs/s per
//!   interval `I`, with the dead tuples of the hot table and the vacuums
//!   it had.
//! - `latency URL --samples N --gap-ms G`: `N` single enqueues, `G` ms
//!   apart, to an idle [`WorkerManager`]: the time from the `enqueue` call
//!   to the start of the job's processing (LISTEN/NOTIFY wakes the worker);
//!   against `latency-sql`, the same in raw SQL: an `INSERT` with
//!   `pg_notify` on one connection, `LISTEN` and the claim statement on
//!   another.
//! - `reconcile URL --jobs N --expired-pct P`: one tick of the queue's
//!   `lease_expiry` reconciler, run by the supervisor of `trawl-reconcile`
//!   as a node runs it, over a hot table of `N` running jobs of which `P` %
//!   have an expired lease, spread over every partition
//!   ([`RUNNING_JOBS`]): the tick's time, as the supervisor records it,
//!   for the 16 partitions; against a bare `UPDATE` per partition of the
//!   same jobs back to pending, one transaction each, on the same table
//!   reloaded row for row. Both fix exactly the expired jobs, which is
//!   checked.
//! - `info URL`: the server's version and the settings that bear on the
//!   figures (autovacuum, synchronous_commit, fsync).

use std::fmt::Write as _;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
// Dynamic SQL here names only the databases made here, never input.
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _, PgConnection, PgPool};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use trawl_jobs::reconcile::JOB_PARTITIONS;
use trawl_jobs::{
    Budget, BudgetScope, DEFAULT_QUEUE, JobQueue, JobResult, NewJob, QueueLimits, WorkerConfig,
    WorkerManager, Workers, maintenance, worker_fn,
};

/// The kind of every job of the bench; its worker does nothing.
const KIND: &str = "bench_noop";

/// Jobs a `pgbench` transaction claims and completes.
const PGBENCH_BATCH: u64 = 10;

/// Pending jobs the producer of `sustained` keeps in the queue.
const BACKLOG: u64 = 20_000;

/// Jobs per `enqueue_many` call of that producer, at most.
const PRODUCER_BATCH: u64 = 2_000;

/// How long a manager gets to finish its jobs at shutdown.
const GRACE: Duration = Duration::from_secs(30);

/// The slowest rate `process` waits for before it gives up: 100,000 jobs in
/// 10 minutes at least.
const SLOWEST_JOBS_PER_SECOND: u64 = 170;

/// How long one latency sample may take before the run fails.
const SAMPLE_LIMIT: Duration = Duration::from_secs(10);

/// How long the supervisor's first tick of `lease_expiry` may take before
/// `reconcile` fails.
const TICK_LIMIT: Duration = Duration::from_secs(120);

/// Connections of the bench's pool: the manager's, the producer's and the
/// bench's own queries.
const POOL_CONNECTIONS: u32 = 10;

/// The raw-SQL baseline's tables: the columns a claim and a completion
/// touch, with the queue's claim index.
const BASELINE_TABLES: &str = "
    CREATE TABLE bench_jobs (
        id bigint PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
        queue text NOT NULL,
        state text NOT NULL,
        priority smallint NOT NULL,
        run_at timestamptz NOT NULL DEFAULT now(),
        payload jsonb NOT NULL,
        attempt integer NOT NULL DEFAULT 0,
        lease_owner text,
        lease_expires_at timestamptz
    );
    CREATE INDEX bench_jobs_claim ON bench_jobs (queue, priority DESC, run_at, id)
        WHERE state = 'pending';
    CREATE TABLE bench_jobs_finished (LIKE bench_jobs, finished_at timestamptz NOT NULL);
    CREATE TABLE bench_attempts (
        job_id bigint NOT NULL,
        attempt integer NOT NULL,
        worker text NOT NULL,
        finished_at timestamptz NOT NULL,
        outcome text NOT NULL,
        PRIMARY KEY (job_id, attempt)
    );
";

/// The claim of the raw-SQL baseline: the queue's claim statement, less
/// what only the queue needs (attempt deadlines, lease renewal fields).
const BASELINE_CLAIM: &str = "
    WITH next AS (
        SELECT id FROM bench_jobs
        WHERE state = 'pending' AND queue = 'default' AND run_at <= now()
        ORDER BY priority DESC, run_at, id
        LIMIT 10
        FOR UPDATE SKIP LOCKED
    )
    UPDATE bench_jobs j SET state = 'running', attempt = j.attempt + 1,
        lease_owner = 'baseline', lease_expires_at = now() + interval '30 seconds'
    FROM next WHERE j.id = next.id
    RETURNING j.id, j.payload";

/// The `pgbench` transaction: claim 10 jobs, then complete them (move them
/// to the finished table, record their attempts), then commit. `-M
/// prepared` passes `:ids` as a parameter.
const PGBENCH_SCRIPT: &str = "\
BEGIN;
WITH next AS (SELECT id FROM bench_jobs WHERE state = 'pending' AND queue = 'default' AND run_at <= now() ORDER BY priority DESC, run_at, id LIMIT 10 FOR UPDATE SKIP LOCKED), claimed AS (UPDATE bench_jobs j SET state = 'running', attempt = j.attempt + 1, lease_owner = 'pgbench', lease_expires_at = now() + interval '30 seconds' FROM next WHERE j.id = next.id RETURNING j.id) SELECT coalesce(array_agg(id), '{}') AS ids FROM claimed
\\gset
WITH gone AS (DELETE FROM bench_jobs WHERE id = ANY(:ids::bigint[]) RETURNING *), finished AS (INSERT INTO bench_jobs_finished SELECT *, now() FROM gone) INSERT INTO bench_attempts SELECT id, attempt, lease_owner, now(), 'succeeded' FROM gone;
COMMIT;
";

/// The hot table of `reconcile`: `$1` jobs of kind `$3` on queue `$4`, ids
/// 0 to `$1 - 1`, all running their first attempt (of 3, so that a job
/// taken back goes to pending, not to the dead letters) for one of 64
/// workers. `$2` % of them have a lease that expired a minute or two ago,
/// the others one that runs 10 to 11 minutes more. The expired ones are
/// `$2` of every run of 100 ids, at offsets that shift by one from a run to
/// the next: they spread over the whole table and fall evenly in the 16
/// partitions (`id % 16`; a fixed offset would hit 4 of them only, 100
/// being 4 mod 16).
const RUNNING_JOBS: &str = "
    INSERT INTO trawl_jobs.jobs (id, kind, queue, state, priority, payload, run_at, attempt,
        max_attempts, lease_owner, lease_expires_at, attempted_at)
    SELECT i, $3, $4, 'running', 1, jsonb_build_object('n', i), now() - interval '3 minutes',
        1, 3, 'bench-worker-' || i % 64,
        CASE WHEN (i + i / 100) % 100 < $2 THEN now() - make_interval(secs => 60 + i % 60)
            ELSE now() + make_interval(secs => 600 + i % 60) END,
        now() - interval '3 minutes'
    FROM generate_series(0, $1 - 1) AS i";

/// The baseline of `reconcile` on one partition (`$1`): the least a lease
/// expiry does, the expired jobs back to pending in one statement, without
/// the tick's attempt rows, batch limit, row locks or advisory lock.
const BARE_LEASE_EXPIRY: &str = "
    UPDATE trawl_jobs.jobs SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL
    WHERE partition = $1 AND state = 'running' AND lease_expires_at < now()";

const USAGE: &str = "\
usage: jobsbench info URL
       jobsbench enqueue URL --jobs N
       jobsbench copy URL --jobs N
       jobsbench process URL --jobs N [--max-concurrent N --claim-batch N]
       jobsbench process-limited URL --jobs N [--max-concurrent N --claim-batch N]
       jobsbench pgbench URL --jobs N --clients C --script FILE
       jobsbench sustained URL --seconds S --interval S
       jobsbench latency URL --samples N --gap-ms MS
       jobsbench latency-sql URL --samples N --gap-ms MS
       jobsbench reconcile URL --jobs N --expired-pct P
URL names a PostgreSQL server on a loopback address (its database is used
to create and drop the bench's own).";

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// What to run.
#[derive(Debug)]
enum Bench {
    Info,
    Enqueue {
        jobs: u64,
    },
    Copy {
        jobs: u64,
    },
    /// `sizes`: `max_concurrent_jobs` and `claim_batch`, if not the
    /// defaults.
    Process {
        jobs: u64,
        sizes: Option<(usize, u32)>,
        limited: bool,
    },
    Pgbench {
        jobs: u64,
        clients: u64,
        script: String,
    },
    Sustained {
        seconds: u64,
        interval: u64,
    },
    Latency {
        samples: u64,
        gap: Duration,
    },
    LatencySql {
        samples: u64,
        gap: Duration,
    },
    /// `expired_pct`: 1 to 100.
    Reconcile {
        jobs: u64,
        expired_pct: u64,
    },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some((url, bench)) = parse(&args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("jobsbench: cannot start a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(url, bench)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("jobsbench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn parse<'a>(args: &[&'a str]) -> Option<(&'a str, Bench)> {
    let (command, url, rest) = match args {
        [command, url, rest @ ..] => (*command, *url, rest),
        _ => return None,
    };
    let flags = |names: &[&str]| -> Option<Vec<&'a str>> {
        if rest.len() != names.len() * 2 {
            return None;
        }
        names.iter().map(|name| flag(rest, name)).collect()
    };
    let number = |text: &str| text.parse::<u64>().ok().filter(|n| *n > 0);
    let bench = match command {
        "info" if rest.is_empty() => Bench::Info,
        "enqueue" | "copy" => {
            let jobs = number(flags(&["--jobs"])?[0])?;
            if command == "enqueue" {
                Bench::Enqueue { jobs }
            } else {
                Bench::Copy { jobs }
            }
        }
        "process" | "process-limited" => {
            // The two sizes are for finding what limits the rate; xtask
            // runs the defaults.
            let (jobs, sizes) = match rest.len() {
                2 => (flags(&["--jobs"])?[0], None),
                6 => {
                    let values = flags(&["--jobs", "--max-concurrent", "--claim-batch"])?;
                    let sizes = (number(values[1])? as usize, number(values[2])? as u32);
                    (values[0], Some(sizes))
                }
                _ => return None,
            };
            Bench::Process {
                jobs: number(jobs)?,
                sizes,
                limited: command == "process-limited",
            }
        }
        "pgbench" => {
            let values = flags(&["--jobs", "--clients", "--script"])?;
            Bench::Pgbench {
                jobs: number(values[0])?,
                clients: number(values[1])?,
                script: values[2].to_owned(),
            }
        }
        "sustained" => {
            let values = flags(&["--seconds", "--interval"])?;
            let (seconds, interval) = (number(values[0])?, number(values[1])?);
            if interval > seconds {
                return None;
            }
            Bench::Sustained { seconds, interval }
        }
        "latency" | "latency-sql" => {
            let values = flags(&["--samples", "--gap-ms"])?;
            let samples = number(values[0])?;
            let gap = Duration::from_millis(number(values[1])?);
            if command == "latency" {
                Bench::Latency { samples, gap }
            } else {
                Bench::LatencySql { samples, gap }
            }
        }
        "reconcile" => {
            let values = flags(&["--jobs", "--expired-pct"])?;
            Bench::Reconcile {
                jobs: number(values[0])?,
                expired_pct: number(values[1]).filter(|pct| *pct <= 100)?,
            }
        }
        _ => return None,
    };
    Some((url, bench))
}

/// The value after `name` in `args`.
fn flag<'a>(args: &[&'a str], name: &str) -> Option<&'a str> {
    let at = args.iter().position(|arg| *arg == name)?;
    args.get(at + 1).copied()
}

async fn run(url: &str, bench: Bench) -> Result<String> {
    let server: PgConnectOptions = url
        .parse()
        .map_err(|err| format!("`{url}` is not a postgres:// URL: {err}"))?;
    let host = server.get_host();
    if !["127.0.0.1", "localhost", "::1"].contains(&host) {
        return Err(format!(
            "the server must be on a loopback address (the bench creates and drops databases \
             there), not `{host}`"
        )
        .into());
    }
    let server = server.disable_statement_logging();
    if let Bench::Info = bench {
        return info(&server).await;
    }
    let db = FreshDb::create(&server).await?;
    let result = match bench {
        Bench::Info => unreachable!("answered above"),
        Bench::Enqueue { jobs } => enqueue(&db, jobs).await,
        Bench::Copy { jobs } => copy(&db, jobs).await,
        Bench::Process {
            jobs,
            sizes,
            limited,
        } => process(&db, jobs, sizes, limited).await,
        Bench::Pgbench {
            jobs,
            clients,
            script,
        } => pgbench(&db, jobs, clients, &script).await,
        Bench::Sustained { seconds, interval } => sustained(&db, seconds, interval).await,
        Bench::Latency { samples, gap } => latency(&db, samples, gap).await,
        Bench::LatencySql { samples, gap } => latency_sql(&db, samples, gap).await,
        Bench::Reconcile { jobs, expired_pct } => reconcile(&db, jobs, expired_pct).await,
    };
    db.drop().await;
    result
}

/// A database of the bench's own, dropped by [`FreshDb::drop`].
struct FreshDb {
    server: PgConnectOptions,
    name: String,
    pool: PgPool,
}

impl FreshDb {
    /// Creates `trawl_jobs_bench_<pid>` (dropping a leftover of that name
    /// first) and connects a pool to it.
    async fn create(server: &PgConnectOptions) -> Result<FreshDb> {
        let name = format!("trawl_jobs_bench_{}", std::process::id());
        let mut conn = PgConnection::connect_with(server)
            .await
            .map_err(|err| format!("cannot connect to PostgreSQL: {err}"))?;
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        conn.close().await.ok();
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .connect_with(server.clone().database(&name))
            .await?;
        Ok(FreshDb {
            server: server.clone(),
            name,
            pool,
        })
    }

    fn options(&self) -> PgConnectOptions {
        self.server.clone().database(&self.name)
    }

    /// A migrated queue on the database.
    async fn queue(&self) -> Result<JobQueue> {
        let queue = JobQueue::new(self.pool.clone());
        queue.migrate().await?;
        Ok(queue)
    }

    /// Closes the pool and drops the database; a failure is only reported.
    async fn drop(self) {
        self.pool.close().await;
        let dropped = async {
            let mut conn = PgConnection::connect_with(&self.server).await?;
            sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await?;
            conn.close().await
        };
        if let Err(err) = dropped.await {
            eprintln!(
                "jobsbench: warning: could not drop the database {}: {err}",
                self.name
            );
        }
    }
}

/// The server's version and the settings that bear on the figures.
async fn info(server: &PgConnectOptions) -> Result<String> {
    let mut conn = PgConnection::connect_with(server).await?;
    let mut line = String::new();
    for setting in [
        "server_version",
        "autovacuum",
        "synchronous_commit",
        "fsync",
    ] {
        let value: String = sqlx::query_scalar("SELECT current_setting($1)")
            .bind(setting)
            .fetch_one(&mut conn)
            .await?;
        // The version may say more after a space ("15.20 (Debian …)").
        let value = value.split_whitespace().next().unwrap_or("?");
        write!(line, "{setting}={value} ")?;
    }
    conn.close().await.ok();
    Ok(line.trim_end().to_owned())
}

/// The `n` jobs both sides of the enqueue row write.
fn new_jobs(from: u64, n: u64) -> Vec<NewJob> {
    (from..from + n)
        .map(|i| NewJob::new(KIND, serde_json::json!({ "n": i })))
        .collect()
}

async fn enqueue(db: &FreshDb, n: u64) -> Result<String> {
    let queue = db.queue().await?;
    let jobs = new_jobs(0, n);
    let start = Instant::now();
    let ids = queue.enqueue_many(jobs).await?;
    let seconds = start.elapsed().as_secs_f64();
    check(ids.len() as u64 == n, || {
        format!("enqueue_many returned {} ids for {n} jobs", ids.len())
    })?;
    Ok(format!("jobs={n} seconds={seconds:.4}"))
}

async fn copy(db: &FreshDb, n: u64) -> Result<String> {
    sqlx::query(
        "CREATE TABLE bench_copy (
            id bigint PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
            kind text NOT NULL,
            queue text NOT NULL,
            state text NOT NULL,
            priority smallint NOT NULL,
            payload jsonb NOT NULL,
            tags text[] NOT NULL,
            run_at timestamptz NOT NULL DEFAULT now(),
            max_attempts integer NOT NULL,
            timeout_ms bigint
        )",
    )
    .execute(&db.pool)
    .await?;
    let jobs = new_jobs(0, n);
    /// Rows per `CopyData` message.
    const ROWS_PER_SEND: usize = 10_000;
    let start = Instant::now();
    let mut tx = db.pool.begin().await?;
    let mut copy = tx
        .copy_in_raw(
            "COPY bench_copy (kind, queue, state, priority, payload, tags, max_attempts, \
             timeout_ms) FROM STDIN",
        )
        .await?;
    let mut buf = String::with_capacity(ROWS_PER_SEND * 64);
    for chunk in jobs.chunks(ROWS_PER_SEND) {
        buf.clear();
        for job in chunk {
            // Text format: tab-separated, `\N` for NULL. The kinds, queues
            // and payloads here hold no tab, newline or backslash.
            writeln!(
                buf,
                "{}\t{}\tpending\t{}\t{}\t{{}}\t{}\t\\N",
                job.kind, job.queue, job.priority.0, job.payload, job.max_attempts
            )?;
        }
        copy.send(buf.as_bytes()).await?;
    }
    let rows = copy.finish().await?;
    tx.commit().await?;
    let seconds = start.elapsed().as_secs_f64();
    check(rows == n, || format!("COPY wrote {rows} rows of {n}"))?;
    Ok(format!("jobs={n} seconds={seconds:.4}"))
}

/// A worker set whose one worker counts its jobs and does nothing else.
fn counting_workers(processed: Arc<AtomicU64>, at: u64, done: Arc<Notify>) -> Workers {
    let mut workers = Workers::new();
    workers.register_raw(
        KIND,
        worker_fn(move |_ctx, _payload: serde_json::Value| {
            let (processed, done) = (processed.clone(), done.clone());
            async move {
                if processed.fetch_add(1, Ordering::Relaxed) + 1 == at {
                    done.notify_one();
                }
                JobResult::Success
            }
        }),
    );
    workers
}

async fn process(
    db: &FreshDb,
    n: u64,
    sizes: Option<(usize, u32)>,
    limited: bool,
) -> Result<String> {
    let queue = db.queue().await?;
    if limited {
        let limits = QueueLimits {
            max_running: Some(1_000_000),
            ..QueueLimits::default()
        };
        queue.set_queue_limits(DEFAULT_QUEUE, &limits).await?;
        for scope in [
            BudgetScope::Queue(DEFAULT_QUEUE.to_owned()),
            BudgetScope::Kind(KIND.to_owned()),
        ] {
            let budget = Budget::new(scope, 1_000_000_000_000_000, Duration::from_secs(1));
            queue.set_budget(&budget).await?;
        }
    }
    queue.enqueue_many(new_jobs(0, n)).await?;
    maintenance::vacuum_hot_tables(&db.pool).await?;

    let processed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let workers = counting_workers(processed.clone(), n, done.clone());
    let mut config = WorkerConfig::default();
    if let Some((max_concurrent_jobs, claim_batch)) = sizes {
        config.max_concurrent_jobs = max_concurrent_jobs;
        config.claim_batch = claim_batch;
    }
    let manager = WorkerManager::new(db.pool.clone(), config, workers)?;
    let limit = Duration::from_secs(n / SLOWEST_JOBS_PER_SECOND + 10);

    let start = Instant::now();
    let handle = manager.start().await?;
    let finished = tokio::time::timeout(limit, done.notified()).await;
    let report = handle.shutdown(GRACE).await;
    let seconds = start.elapsed().as_secs_f64();

    check(finished.is_ok(), || {
        format!(
            "only {} of {n} jobs were processed within {} s",
            processed.load(Ordering::Relaxed),
            limit.as_secs()
        )
    })?;
    check(report.released == 0 && report.unrecorded == 0, || {
        format!("shutdown left jobs behind: {report:?}")
    })?;
    let (finished, attempts, claims, completions): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM trawl_jobs.jobs_finished WHERE state = 'succeeded'),
            count(*), count(DISTINCT started_at), count(DISTINCT finished_at)
         FROM trawl_jobs.job_attempts",
    )
    .fetch_one(&db.pool)
    .await?;
    check(
        finished as u64 == n && attempts as u64 == n && processed.load(Ordering::Relaxed) == n,
        || {
            format!(
                "{n} jobs: {finished} succeeded, {attempts} attempts recorded, {} processed",
                processed.load(Ordering::Relaxed)
            )
        },
    )?;
    // Each claim statement stamps its jobs with its transaction's now(),
    // each completion statement likewise: the distinct stamps count the
    // statements (round trips with a commit each).
    Ok(format!(
        "jobs={n} seconds={seconds:.4} claims={claims} completions={completions}"
    ))
}

/// Creates the baseline's tables with `n` pending jobs, vacuumed and
/// analyzed as the queue's table is in `process`.
async fn baseline_tables(db: &FreshDb, n: u64) -> Result<()> {
    let mut conn = db.pool.acquire().await?;
    sqlx::raw_sql(BASELINE_TABLES).execute(&mut *conn).await?;
    sqlx::query(
        "INSERT INTO bench_jobs (queue, state, priority, payload)
         SELECT 'default', 'pending', 1, jsonb_build_object('n', i)
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(n as i64)
    .execute(&mut *conn)
    .await?;
    sqlx::raw_sql("VACUUM (ANALYZE) bench_jobs")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn pgbench(db: &FreshDb, n: u64, clients: u64, script: &str) -> Result<String> {
    check(n.is_multiple_of(PGBENCH_BATCH * clients), || {
        format!("{n} jobs do not split into transactions of {PGBENCH_BATCH} for {clients} clients")
    })?;
    baseline_tables(db, n).await?;
    std::fs::write(script, PGBENCH_SCRIPT).map_err(|err| format!("writing {script}: {err}"))?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get() as u64)
        .min(clients);
    let per_client = n / PGBENCH_BATCH / clients;
    let options = db.options();
    let mut cmd = Command::new("pgbench");
    cmd.args(["--no-vacuum", "--protocol=prepared"])
        .args(["--client", &clients.to_string()])
        .args(["--jobs", &threads.to_string()])
        .args(["--transactions", &per_client.to_string()])
        .args(["--file", script])
        .args(["--host", options.get_host()])
        .args(["--port", &options.get_port().to_string()])
        .args(["--username", options.get_username()])
        .arg(&db.name);
    eprintln!("jobsbench: $ {cmd:?}");
    let output = cmd
        .output()
        .map_err(|err| format!("cannot run pgbench: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "pgbench exited with {}:\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    // "tps = 2010.57 (without initial connection time)"
    let tps: f64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .ok_or_else(|| format!("no `tps = ` line in pgbench's output:\n{stdout}"))?;
    let transactions = per_client * clients;
    let (left, finished): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM bench_jobs), (SELECT count(*) FROM bench_jobs_finished)",
    )
    .fetch_one(&db.pool)
    .await?;
    check(left == 0 && finished as u64 == n, || {
        format!("pgbench left {left} jobs of {n} and finished {finished}")
    })?;
    let seconds = transactions as f64 / tps;
    Ok(format!(
        "jobs={n} seconds={seconds:.4} transactions={transactions} clients={clients}"
    ))
}

async fn sustained(db: &FreshDb, seconds: u64, interval: u64) -> Result<String> {
    let queue = db.queue().await?;
    queue.enqueue_many(new_jobs(0, BACKLOG)).await?;
    maintenance::vacuum_hot_tables(&db.pool).await?;

    let processed = Arc::new(AtomicU64::new(0));
    let workers = counting_workers(processed.clone(), u64::MAX, Arc::new(Notify::new()));
    let config = WorkerConfig::default();
    let maintenance_every = config
        .maintenance_interval
        .map_or(0, |every| every.as_secs());
    let manager = WorkerManager::new(db.pool.clone(), config, workers)?;
    let stop = CancellationToken::new();
    // The manager's own maintenance ticks vacuum the hot table; the
    // statistics count them.
    let table_stats = || {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT coalesce(n_dead_tup, 0), coalesce(vacuum_count, 0) FROM pg_stat_user_tables
             WHERE relid = 'trawl_jobs.jobs'::regclass",
        )
        .fetch_one(&db.pool)
    };
    let (_, vacuums_before) = table_stats().await?;

    // The producer tops the backlog up to BACKLOG, PRODUCER_BATCH at a time.
    let producer = {
        let (queue, processed, stop) = (queue.clone(), processed.clone(), stop.clone());
        tokio::spawn(async move {
            let mut produced = BACKLOG;
            while !stop.is_cancelled() {
                let backlog = produced.saturating_sub(processed.load(Ordering::Relaxed));
                if backlog >= BACKLOG {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let n = (BACKLOG - backlog).min(PRODUCER_BATCH);
                queue.enqueue_many(new_jobs(produced, n)).await?;
                produced += n;
            }
            Ok::<u64, trawl_jobs::Error>(produced)
        })
    };
    let handle = manager.start().await?;
    let start = Instant::now();
    let mut rates = Vec::new();
    let mut dead = Vec::new();
    let mut vacuums = 0;
    let mut last = processed.load(Ordering::Relaxed);
    for i in 1..=seconds / interval {
        let until = start + Duration::from_secs(i * interval);
        tokio::time::sleep_until(until.into()).await;
        if producer.is_finished() {
            // It failed: its error is reported below.
            break;
        }
        // Jobs whose processing started: each ends a moment later.
        let now = processed.load(Ordering::Relaxed);
        let rate = (now - last) as f64 / interval as f64;
        last = now;
        let (dead_now, vacuums_now) = table_stats().await?;
        vacuums = vacuums_now - vacuums_before;
        eprintln!(
            "jobsbench: sustained {:>4} s: {rate:>8.0} jobs/s, {dead_now} dead tuples in \
             trawl_jobs.jobs, vacuumed {vacuums} times so far",
            i * interval,
        );
        rates.push(rate);
        dead.push(dead_now);
    }
    stop.cancel();
    let report = handle.shutdown(GRACE).await;
    let produced = producer.await??;
    check(report.released == 0 && report.unrecorded == 0, || {
        format!("shutdown left jobs behind: {report:?}")
    })?;
    let list = |values: Vec<String>| values.join(",");
    Ok(format!(
        "interval={interval} rates={} dead={} vacuums={vacuums} \
         maintenance_s={maintenance_every} backlog={BACKLOG} produced={produced} processed={}",
        list(rates.iter().map(|r| format!("{r:.1}")).collect()),
        list(dead.iter().map(i64::to_string).collect()),
        processed.load(Ordering::Relaxed)
    ))
}

async fn latency(db: &FreshDb, samples: u64, gap: Duration) -> Result<String> {
    let queue = db.queue().await?;
    let (started, mut starts) = mpsc::unbounded_channel::<(u64, Instant)>();
    let mut workers = Workers::new();
    workers.register_raw(
        KIND,
        worker_fn(move |_ctx, payload: serde_json::Value| {
            let at = Instant::now();
            let started = started.clone();
            async move {
                let n = payload["n"].as_u64().unwrap_or(u64::MAX);
                let _ = started.send((n, at));
                JobResult::Success
            }
        }),
    );
    let manager = WorkerManager::new(db.pool.clone(), WorkerConfig::default(), workers)?;
    let handle = manager.start().await?;
    // Idle: the claim loop found the queue empty and waits.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut waits = Vec::with_capacity(samples as usize);
    let mut calls = Vec::with_capacity(samples as usize);
    for n in 0..samples {
        let sent = Instant::now();
        queue
            .enqueue(NewJob::new(KIND, serde_json::json!({ "n": n })))
            .await?;
        calls.push(sent.elapsed());
        let (got, at) = tokio::time::timeout(SAMPLE_LIMIT, starts.recv())
            .await
            .map_err(|_| format!("job {n} did not start within {SAMPLE_LIMIT:?}"))?
            .ok_or("the worker is gone")?;
        check(got == n, || format!("job {got} started, {n} was expected"))?;
        waits.push(at.saturating_duration_since(sent));
        tokio::time::sleep(gap).await;
    }
    let report = handle.shutdown(GRACE).await;
    check(report.released == 0 && report.unrecorded == 0, || {
        format!("shutdown left jobs behind: {report:?}")
    })?;
    Ok(latency_line(waits, calls))
}

async fn latency_sql(db: &FreshDb, samples: u64, gap: Duration) -> Result<String> {
    const CHANNEL: &str = "bench_jobs_enqueued";
    baseline_tables(db, 0).await?;
    let mut listener = PgListener::connect_with(&db.pool).await?;
    listener.listen(CHANNEL).await?;
    let mut claimer = db.pool.acquire().await?;
    let (started, mut starts) = mpsc::unbounded_channel::<(u64, Instant)>();
    // The consumer: a notification, then the claim; a job "starts" when
    // the claim returns it.
    let consumer = tokio::spawn(async move {
        loop {
            listener.recv().await?;
            let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(BASELINE_CLAIM)
                .fetch_all(&mut *claimer)
                .await?;
            let at = Instant::now();
            for (_, payload) in rows {
                let n = payload["n"].as_u64().unwrap_or(u64::MAX);
                if started.send((n, at)).is_err() {
                    return Ok::<(), sqlx::Error>(());
                }
            }
        }
    });
    let mut producer = db.pool.acquire().await?;
    let mut waits = Vec::with_capacity(samples as usize);
    let mut calls = Vec::with_capacity(samples as usize);
    for n in 0..samples {
        let sent = Instant::now();
        sqlx::query(
            "WITH job AS (
                INSERT INTO bench_jobs (queue, state, priority, payload)
                VALUES ('default', 'pending', 1, $1) RETURNING queue
            )
            SELECT pg_notify($2, queue) FROM job",
        )
        .bind(serde_json::json!({ "n": n }))
        .bind(CHANNEL)
        .execute(&mut *producer)
        .await?;
        calls.push(sent.elapsed());
        let (got, at) = tokio::time::timeout(SAMPLE_LIMIT, starts.recv())
            .await
            .map_err(|_| format!("job {n} did not start within {SAMPLE_LIMIT:?}"))?
            .ok_or("the consumer stopped")?;
        check(got == n, || format!("job {got} started, {n} was expected"))?;
        waits.push(at.saturating_duration_since(sent));
        tokio::time::sleep(gap).await;
    }
    consumer.abort();
    Ok(latency_line(waits, calls))
}

/// `reconcile`: the bare `UPDATE`s, then the supervisor's tick, each on
/// the table just (re)loaded, each checked to fix exactly the expired
/// jobs (the tick also to leave them pending with an attempt row each).
async fn reconcile(db: &FreshDb, n: u64, expired_pct: u64) -> Result<String> {
    db.queue().await?;
    let expired = load_running_jobs(db, n, expired_pct).await?;
    let (baseline, fixed) = bare_lease_expiry(&db.pool).await?;
    check(fixed == expired, || {
        format!("the bare UPDATE fixed {fixed} jobs of {expired} expired")
    })?;

    let reloaded = load_running_jobs(db, n, expired_pct).await?;
    check(reloaded == expired, || {
        format!("the reload has {reloaded} expired jobs, the first load {expired}")
    })?;
    let (tick, fixed) = supervised_lease_expiry(&db.pool).await?;
    let (pending, attempts): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM trawl_jobs.jobs WHERE state = 'pending'),
            (SELECT count(*) FROM trawl_jobs.job_attempts WHERE outcome = 'lease_expired')",
    )
    .fetch_one(&db.pool)
    .await?;
    check(
        fixed == expired && pending as u64 == expired && attempts as u64 == expired,
        || {
            format!(
                "{expired} leases expired; the tick changed {fixed} rows, left {pending} jobs \
                 pending and recorded {attempts} expired attempts"
            )
        },
    )?;
    Ok(format!(
        "jobs={n} expired={expired} partitions={JOB_PARTITIONS} baseline_seconds={:.6} \
         tick_seconds={:.6}",
        baseline.as_secs_f64(),
        tick.as_secs_f64()
    ))
}

/// Empties the queue's job tables and loads [`RUNNING_JOBS`] (`n` jobs,
/// `expired_pct` % of them expired) into the hot one, vacuums and analyzes
/// it, then checkpoints: each measurement of `reconcile` starts from the
/// same table, row for row, with no dead tuple, fresh statistics and no
/// checkpoint of the load's WAL to come in the middle of it (so that
/// either side, alike, writes a full image of each page it is first to
/// change, as the first tick after a checkpoint does). Returns how many
/// leases expired.
async fn load_running_jobs(db: &FreshDb, n: u64, expired_pct: u64) -> Result<u64> {
    sqlx::query("TRUNCATE trawl_jobs.jobs, trawl_jobs.jobs_finished, trawl_jobs.job_attempts")
        .execute(&db.pool)
        .await?;
    sqlx::query(RUNNING_JOBS)
        .bind(n as i64)
        .bind(expired_pct as i64)
        .bind(KIND)
        .bind(DEFAULT_QUEUE)
        .execute(&db.pool)
        .await?;
    maintenance::vacuum_hot_tables(&db.pool).await?;
    sqlx::query("CHECKPOINT").execute(&db.pool).await?;
    let expired: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM trawl_jobs.jobs WHERE state = 'running' AND lease_expires_at < now()",
    )
    .fetch_one(&db.pool)
    .await?;
    Ok(expired as u64)
}

/// [`BARE_LEASE_EXPIRY`] on every partition in turn, a transaction each:
/// the time of all of them and the jobs they fixed.
async fn bare_lease_expiry(pool: &PgPool) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let mut fixed = 0;
    for partition in 0..JOB_PARTITIONS {
        let mut tx = pool.begin().await?;
        fixed += sqlx::query(BARE_LEASE_EXPIRY)
            .bind(partition)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
    }
    Ok((start.elapsed(), fixed))
}

/// One tick of the queue's `lease_expiry` reconciler, alone, run by
/// [`trawl_reconcile::spawn_reconcilers`] as a node runs it (a pooled
/// connection, a transaction and an advisory lock per partition): the
/// tick's time for every partition, as the supervisor records it, and the
/// rows it changed.
async fn supervised_lease_expiry(pool: &PgPool) -> Result<(Duration, u64)> {
    const NAME: &str = "lease_expiry";
    let reconcilers: Vec<_> = trawl_jobs::reconcile::reconcilers()
        .into_iter()
        .filter(|reconciler| reconciler.name() == NAME)
        .collect();
    check(reconcilers.len() == 1, || {
        format!(
            "trawl-jobs has {} reconcilers named {NAME}",
            reconcilers.len()
        )
    })?;
    // No phase, so the first tick starts at once; an interval of an hour,
    // so no second one starts before the shutdown.
    let config = trawl_reconcile::Config {
        max_phase: Duration::ZERO,
        ..trawl_reconcile::Config::default()
    }
    .with_interval(NAME, Duration::from_secs(3600));
    let mut handle = trawl_reconcile::spawn_reconcilers(pool.clone(), config, reconcilers)?;
    let deadline = Instant::now() + TICK_LIMIT;
    let stats = loop {
        let stats = handle
            .stats_of(NAME)
            .ok_or("the supervisor has no figures for lease_expiry")?;
        if stats.ticks > 0 || Instant::now() >= deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let aborted = handle.shutdown(GRACE).await;
    check(stats.ticks == 1, || {
        format!(
            "{} ticks of {NAME} ended within {TICK_LIMIT:?}, not 1",
            stats.ticks
        )
    })?;
    check(
        stats.errors == 0 && stats.panics == 0 && stats.skipped == 0 && aborted == 0,
        || format!("the tick did not run cleanly ({aborted} tasks aborted): {stats:?}"),
    )?;
    let took = stats
        .last_tick_duration
        .ok_or("the supervisor recorded a tick without its duration")?;
    Ok((took, stats.rows_changed))
}

/// `samples=… p50_ms=… p99_ms=… max_ms=… enqueue_p50_ms=…`.
fn latency_line(mut waits: Vec<Duration>, mut calls: Vec<Duration>) -> String {
    waits.sort_unstable();
    calls.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "samples={} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} enqueue_p50_ms={:.3}",
        waits.len(),
        ms(percentile(&waits, 50)),
        ms(percentile(&waits, 99)),
        ms(waits.last().copied().unwrap_or_default()),
        ms(percentile(&calls, 50)),
    )
}

/// The nearest-rank `p`th percentile of sorted `values`.
fn percentile(values: &[Duration], p: usize) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = (values.len() * p).div_ceil(100).max(1);
    values[rank - 1]
}

fn check(ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok { Ok(()) } else { Err(message().into()) }
}
