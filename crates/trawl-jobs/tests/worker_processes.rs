//! Workers in separate processes on one queue: the test binary runs itself
//! again as a worker process (`child_worker_process`, active only when
//! `TRAWL_JOBS_CHILD_DB` is set), which runs a manager and, as a deployment
//! would, the queue's reconcilers under the `trawl-reconcile` supervisor
//! (`lease_expiry` every 500 ms; every process runs the same ones, the
//! advisory locks per partition share the work).
//!
//! - Several processes do every job exactly once.
//! - A process killed with SIGKILL mid-job leaves its leases to expire, one
//!   `lease_expiry` tick (called here by hand) puts the jobs back, and
//!   another worker does them.
//! - Crash recovery end to end: of three processes working through 2,000
//!   jobs, one is killed while it holds leases; the reconcilers of the other
//!   two (nothing in the test ticks) take its jobs back once the leases
//!   expire, every job then ends `succeeded` exactly once in the job
//!   history, and the last one does so within the lease plus the
//!   `lease_expiry` interval plus a margin of the kill.

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
use trawl_jobs::reconcile::{JOB_PARTITIONS, Settings, lease_expiry, reconcilers_with};
use trawl_jobs::{
    JobContext, JobResult, NewJob, WorkerConfig, WorkerHandle, WorkerManager, Workers, worker_fn,
};
use trawl_reconcile::{ReconcilerHandle, spawn_reconcilers};
use trawl_retry::RetryPolicy;

use support::db::TestDb;

const CHILD_DB: &str = "TRAWL_JOBS_CHILD_DB";
const CHILD_ID: &str = "TRAWL_JOBS_CHILD_ID";

/// The `lease_expiry` interval of the worker processes' reconcilers.
const LEASE_EXPIRY_EVERY: Duration = Duration::from_millis(500);

/// Every run of a job, as the worker saw it: "exactly once" is one row.
const RUNS_TABLE: &str = "CREATE TABLE IF NOT EXISTS public.test_runs (
    job_id bigint NOT NULL, worker text NOT NULL, attempt int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp())";

fn config(id: &str) -> WorkerConfig {
    WorkerConfig {
        worker_id: id.to_owned(),
        max_concurrent_jobs: 4,
        lease: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(300),
        poll_interval: Duration::from_millis(200),
        reconnect: RetryPolicy {
            max_attempts: u32::MAX,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
            jitter_pct: 20,
        },
        ..WorkerConfig::default()
    }
}

/// The workers of every process: `unit` runs a few milliseconds; `steady`
/// runs 30 ms (long enough for a worker to hold leases at any moment);
/// `sleepy` hangs on its first attempt (for a kill to catch it) and is quick
/// after. Each notes every run in `test_runs`.
fn workers(runs: PgPool, worker: String) -> Workers {
    let mut workers = Workers::new();
    for kind in ["unit", "steady", "sleepy"] {
        let (runs, worker) = (runs.clone(), worker.clone());
        workers.register_raw(
            kind,
            worker_fn(move |ctx: JobContext, _| {
                let (runs, worker) = (runs.clone(), worker.clone());
                async move {
                    let noted = sqlx::query(
                        "INSERT INTO public.test_runs (job_id, worker, attempt) VALUES ($1, $2, $3)",
                    )
                    .bind(ctx.id())
                    .bind(&worker)
                    .bind(ctx.attempt() as i32)
                    .execute(&runs)
                    .await;
                    if let Err(err) = noted {
                        return JobResult::retry(format!("cannot note the run: {err}"));
                    }
                    let pause = match ctx.kind() {
                        "sleepy" if ctx.attempt() == 1 => Duration::from_secs(120),
                        "steady" => Duration::from_millis(30),
                        _ => Duration::from_millis(5),
                    };
                    tokio::time::sleep(pause).await;
                    JobResult::Success
                }
            }),
        );
    }
    workers
}

async fn start(options: PgConnectOptions, id: &str) -> WorkerHandle {
    let config = config(id);
    let pool = PgPoolOptions::new()
        .max_connections(config.connections_needed() + 1)
        .connect_with(options.clone())
        .await
        .expect("connect");
    let runs = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("connect");
    WorkerManager::new(pool, config, workers(runs, id.to_owned()))
        .expect("valid manager")
        .start()
        .await
        .expect("start")
}

/// The queue's reconcilers as every worker process runs them, on a pool of
/// their own (a tick waits for a connection, never a claim or a heartbeat):
/// `lease_expiry` every [`LEASE_EXPIRY_EVERY`], the others at their default
/// intervals. Maintenance is left out: the managers run it
/// (`WorkerConfig::maintenance_interval`).
async fn start_reconcilers(options: PgConnectOptions) -> ReconcilerHandle {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("connect");
    let config = trawl_reconcile::Config {
        max_phase: Duration::from_millis(100),
        ..trawl_reconcile::Config::default()
    }
    .with_interval("lease_expiry", LEASE_EXPIRY_EVERY);
    let settings = Settings {
        maintenance: None,
        ..Settings::default()
    };
    spawn_reconcilers(pool, config, reconcilers_with(&settings)).expect("valid reconcilers")
}

/// The worker process: runs a manager and the reconcilers until its
/// standard input closes, then shuts both down; it fails (exits unsuccessfully)
/// if a reconciler tick failed or outlived the grace period. A plain test
/// run (no `TRAWL_JOBS_CHILD_DB`) does nothing.
#[tokio::test]
async fn child_worker_process() {
    let Ok(database) = std::env::var(CHILD_DB) else {
        return;
    };
    let url = std::env::var("DATABASE_URL").expect("the parent passes DATABASE_URL");
    let id = std::env::var(CHILD_ID).expect("the parent passes a worker id");
    // Named after the worker, so that the parent can see when the
    // connections of a killed process are gone.
    let options = PgConnectOptions::from_str(&url)
        .expect("a postgres:// URL")
        .database(&database)
        .application_name(&id);
    let handle = start(options.clone(), &id).await;
    let mut reconcilers = start_reconcilers(options).await;
    // Standard input closes when the parent says so, or dies.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    let _ = rx.await;
    let grace = Duration::from_secs(5);
    let (_, aborted) = tokio::join!(handle.shutdown(grace), reconcilers.shutdown(grace));
    assert_eq!(
        aborted, 0,
        "{id}: reconciler ticks outlived the grace period"
    );
    for stats in reconcilers.stats() {
        assert_eq!(
            (stats.errors, stats.panics),
            (0, 0),
            "{id}: {} failed: {:?}",
            stats.name,
            stats.last_error
        );
    }
}

/// A worker process, killed when dropped (a failing test leaves none
/// behind).
struct WorkerProcess {
    child: Option<Child>,
}

impl WorkerProcess {
    fn spawn(db: &TestDb, id: &str) -> WorkerProcess {
        let url = std::env::var("DATABASE_URL").expect("set when a database is");
        let child = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "child_worker_process", "--test-threads=1"])
            .env(CHILD_DB, &db.name)
            .env(CHILD_ID, id)
            .env("DATABASE_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn a worker process");
        WorkerProcess { child: Some(child) }
    }

    /// Closes its standard input and waits (at most `limit`) for it to shut
    /// down; returns whether it exited successfully.
    fn stop(mut self, limit: Duration) -> bool {
        let mut child = self.child.take().expect("running");
        drop(child.stdin.take());
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no chance to release anything.
    fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_count(pool: &PgPool, sql: &str, want: i64, limit: Duration) {
    let start = Instant::now();
    loop {
        let n = count(pool, sql).await;
        if n == want {
            return;
        }
        assert!(start.elapsed() < limit, "{sql}: {n}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The runs table, and `n` jobs of `kind` on the default queue; their ids.
async fn jobs(db: &TestDb, kind: &str, n: i64) -> Vec<i64> {
    sqlx::query(RUNS_TABLE).execute(&db.pool).await.unwrap();
    db.queue()
        .await
        .enqueue_many((0..n).map(|i| NewJob::new(kind, i.into())).collect())
        .await
        .unwrap()
}

#[tokio::test]
async fn three_processes_do_every_job_exactly_once() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let n = 600i64;
    jobs(&db, "unit", n).await;
    let processes: Vec<WorkerProcess> = (0..3)
        .map(|p| WorkerProcess::spawn(&db, &format!("proc-{p}")))
        .collect();
    wait_count(
        &db.pool,
        "SELECT count(*) FROM trawl_jobs.jobs_finished WHERE state = 'succeeded'",
        n,
        Duration::from_secs(90),
    )
    .await;
    for process in processes {
        assert!(process.stop(Duration::from_secs(20)), "a clean exit");
    }
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM public.test_runs").await,
        n
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(DISTINCT job_id) FROM public.test_runs"
        )
        .await,
        n,
        "a job ran twice"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM trawl_jobs.job_attempts WHERE outcome = 'succeeded'"
        )
        .await,
        n
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(DISTINCT worker) FROM public.test_runs"
        )
        .await,
        3,
        "every process took a share"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM trawl_jobs.workers").await,
        0,
        "every process left the registry"
    );
}

#[tokio::test]
async fn a_killed_worker_s_jobs_run_again_after_their_leases_expire() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let ids = jobs(&db, "sleepy", 4).await;
    let doomed = WorkerProcess::spawn(&db, "doomed");
    wait_count(
        &db.pool,
        "SELECT count(*) FROM trawl_jobs.jobs WHERE state = 'running' AND lease_owner = 'doomed'",
        4,
        Duration::from_secs(30),
    )
    .await;
    wait_count(
        &db.pool,
        "SELECT count(*) FROM public.test_runs",
        4,
        Duration::from_secs(10),
    )
    .await;
    doomed.kill();

    // Nothing renews the leases now; once they expire, one tick per
    // partition takes the jobs back.
    wait_count(
        &db.pool,
        "SELECT count(*) FROM trawl_jobs.jobs WHERE state = 'running' AND lease_expires_at < now()",
        4,
        Duration::from_secs(10),
    )
    .await;
    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let mut taken = 0;
    for partition in 0..JOB_PARTITIONS {
        taken += lease_expiry::run_once(&mut tx, partition, None)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    drop(conn);
    assert_eq!(taken, 4);

    let rescuer = start(db.options(), "rescuer").await;
    wait_count(
        &db.pool,
        "SELECT count(*) FROM trawl_jobs.jobs_finished WHERE state = 'succeeded'",
        4,
        Duration::from_secs(30),
    )
    .await;
    rescuer.shutdown(Duration::from_secs(5)).await;

    let attempts: Vec<(i64, i32, String, Option<String>)> = sqlx::query_as(
        "SELECT job_id, attempt, outcome, worker_id FROM trawl_jobs.job_attempts
         ORDER BY job_id, attempt",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut want = Vec::new();
    for &id in &ids {
        want.push((id, 1, "lease_expired".to_owned(), Some("doomed".to_owned())));
        want.push((id, 2, "succeeded".to_owned(), Some("rescuer".to_owned())));
    }
    assert_eq!(attempts, want);
    let runs: Vec<(i64, String, i32)> =
        sqlx::query_as("SELECT job_id, worker, attempt FROM public.test_runs ORDER BY 1, 3")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut want = Vec::new();
    for &id in &ids {
        want.push((id, "doomed".to_owned(), 1));
        want.push((id, "rescuer".to_owned(), 2));
    }
    assert_eq!(runs, want);
}

/// A list of ids for SQL's `IN (…)`.
fn id_list(ids: &[i64]) -> String {
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn the_other_processes_reconcilers_recover_a_killed_process_s_jobs() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let n = 2_000i64;
    jobs(&db, "steady", n).await;
    let started = Instant::now();
    let doomed = WorkerProcess::spawn(&db, "doomed");
    let survivors: Vec<WorkerProcess> = (1..=2)
        .map(|p| WorkerProcess::spawn(&db, &format!("survivor-{p}")))
        .collect();

    // The kill comes while the doomed process holds leases of jobs it has
    // started (and noted), and near the end of the queue: jobs given back
    // go to its end (`run_at` = now), so with few left the last job is one
    // of the killed process's and the time to it is the recovery time, not
    // the time to work through a backlog (300 jobs take the two survivors
    // about 1.2 s, less than the lease).
    wait_count(
        &db.pool,
        "SELECT least(count(*), 2) FROM trawl_jobs.jobs j
         WHERE j.state = 'running' AND j.lease_owner = 'doomed'
             AND EXISTS (SELECT 1 FROM public.test_runs r
                 WHERE r.job_id = j.id AND r.worker = 'doomed' AND r.attempt = j.attempt)
             AND (SELECT count(*) FROM trawl_jobs.jobs WHERE state = 'pending') <= 300",
        2,
        Duration::from_secs(60),
    )
    .await;
    let killed = Instant::now();
    doomed.kill();
    // Once its connections are gone (a statement in flight finishes first),
    // what it holds is settled.
    wait_count(
        &db.pool,
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'doomed'",
        0,
        Duration::from_secs(10),
    )
    .await;
    let held: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM trawl_jobs.jobs
         WHERE state = 'running' AND lease_owner = 'doomed' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(held.len() >= 2, "the killed process held {held:?}");
    let held_list = id_list(&held);

    // Nothing in the test ticks: the reconcilers of the surviving processes
    // give the jobs back once the leases expire, and the survivors do them.
    wait_count(
        &db.pool,
        &format!(
            "SELECT count(*) FROM trawl_jobs.job_attempts
             WHERE outcome = 'lease_expired' AND worker_id = 'doomed' AND job_id IN ({held_list})"
        ),
        held.len() as i64,
        Duration::from_secs(30),
    )
    .await;
    let back = killed.elapsed();
    wait_count(
        &db.pool,
        "SELECT count(*) FROM trawl_jobs.jobs_finished WHERE state = 'succeeded'",
        n,
        Duration::from_secs(60),
    )
    .await;
    let done = killed.elapsed();
    let total = started.elapsed();
    let lease = config("doomed").lease;
    // The last lease the killed process renewed runs out at most `lease`
    // after the kill, and a `lease_expiry` tick of either survivor comes at
    // most an interval later. The margin covers what follows: the tick
    // itself (16 partitions, a transaction each), the survivors' idle claim
    // poll (200 ms: the tick sends no notification), the jobs still ahead
    // in the queue, the 30 ms job and its completion, this test's 50 ms
    // poll, and a loaded machine (two CPUs shared with other tests). It is
    // well below the 30 s worker TTL after which `worker_registry_ttl_sweep`
    // would have taken the jobs back instead (as `worker_lost`).
    let margin = Duration::from_secs(5);
    let bound = lease + LEASE_EXPIRY_EVERY + margin;
    eprintln!(
        "{} jobs held by the killed process: back in the queue {back:?} after the kill, \
         every job succeeded {done:?} after it (bound {bound:?}); {n} jobs in {total:?}",
        held.len()
    );
    assert!(
        done <= bound,
        "the last job succeeded {done:?} after the kill (its jobs were back after {back:?}), \
         more than lease {lease:?} + interval {LEASE_EXPIRY_EVERY:?} + margin {margin:?}"
    );
    // 2,000 jobs of 30 ms on 12 slots are 5 s of work.
    assert!(total < Duration::from_secs(60), "{n} jobs took {total:?}");
    for process in survivors {
        assert!(
            process.stop(Duration::from_secs(20)),
            "a clean exit, the reconcilers without a failed tick (the process's stderr says)"
        );
    }

    // Every job succeeded exactly once in the job history.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM trawl_jobs.jobs").await,
        0
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM trawl_jobs.jobs_finished").await,
        n
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM trawl_jobs.jobs_finished f
             WHERE f.state = 'succeeded' AND (SELECT count(*) FROM trawl_jobs.job_attempts a
                 WHERE a.job_id = f.id AND a.outcome = 'succeeded') = 1"
        )
        .await,
        n,
        "a job without exactly one 'succeeded' attempt"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM trawl_jobs.job_attempts WHERE outcome = 'succeeded'"
        )
        .await,
        n
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM (SELECT job_id FROM trawl_jobs.job_attempts
                 WHERE outcome = 'succeeded' GROUP BY job_id HAVING count(*) > 1) twice"
        )
        .await,
        0,
        "a job succeeded twice"
    );
    // The killed process's jobs, and only they, lost their lease, to it;
    // then a survivor did them. Nothing else went wrong.
    let attempts: Vec<(i64, i32, String, Option<String>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT job_id, attempt, outcome, worker_id FROM trawl_jobs.job_attempts
             WHERE job_id IN ({held_list}) ORDER BY job_id, attempt"
        )))
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let mut attempts = attempts.into_iter();
    for &id in &held {
        let first = attempts.next().expect("a lease_expired attempt");
        let second = attempts.next().expect("a succeeded attempt");
        assert_eq!(
            (first.0, first.2.as_str(), first.3.as_deref()),
            (id, "lease_expired", Some("doomed"))
        );
        assert_eq!(
            (second.0, second.1, second.2.as_str()),
            (id, first.1 + 1, "succeeded")
        );
        assert!(
            second
                .3
                .as_deref()
                .is_some_and(|w| w.starts_with("survivor-")),
            "job {id} done by {:?}",
            second.3
        );
    }
    assert_eq!(
        attempts.next(),
        None,
        "no other attempt of the killed process's jobs"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM trawl_jobs.job_attempts WHERE outcome <> 'succeeded'"
        )
        .await,
        held.len() as i64,
        "no other job lost its lease or failed"
    );
    // Execution is at least once: every job ran, and only the killed
    // process's jobs may have run twice (it had started some of them).
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(DISTINCT job_id) FROM public.test_runs"
        )
        .await,
        n
    );
    assert_eq!(
        count(
            &db.pool,
            &format!(
                "SELECT count(*) FROM (SELECT job_id FROM public.test_runs
                     GROUP BY job_id HAVING count(*) > 1) again
                 WHERE job_id NOT IN ({held_list})"
            )
        )
        .await,
        0,
        "a job the killed process did not hold ran twice"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM trawl_jobs.workers WHERE id <> 'doomed'"
        )
        .await,
        0,
        "the survivors left the registry"
    );
}
