//! Workers in separate processes on one queue: the test binary runs itself
//! again as a worker process (`child_worker_process`, active only when
//! `TRAWL_JOBS_CHILD_DB` is set). Several processes do every job exactly
//! once; a process killed with SIGKILL mid-job leaves its leases to expire,
//! one `lease_expiry` tick puts the jobs back, and another worker does them.

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
use trawl_jobs::reconcile::{JOB_PARTITIONS, lease_expiry};
use trawl_jobs::{
    JobContext, JobResult, NewJob, WorkerConfig, WorkerHandle, WorkerManager, Workers, worker_fn,
};
use trawl_retry::RetryPolicy;

use support::db::TestDb;

const CHILD_DB: &str = "TRAWL_JOBS_CHILD_DB";
const CHILD_ID: &str = "TRAWL_JOBS_CHILD_ID";

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

/// The workers of every process: `unit` runs a few milliseconds; `sleepy`
/// hangs on its first attempt (for a kill to catch it) and is quick after.
/// Both note each run in `test_runs`.
fn workers(runs: PgPool, worker: String) -> Workers {
    let mut workers = Workers::new();
    for kind in ["unit", "sleepy"] {
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
                    let pause = if ctx.kind() == "sleepy" && ctx.attempt() == 1 {
                        Duration::from_secs(120)
                    } else {
                        Duration::from_millis(5)
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

/// The worker process: runs a manager until its standard input closes, then
/// shuts it down. A plain test run (no `TRAWL_JOBS_CHILD_DB`) does nothing.
#[tokio::test]
async fn child_worker_process() {
    let Ok(database) = std::env::var(CHILD_DB) else {
        return;
    };
    let url = std::env::var("DATABASE_URL").expect("the parent passes DATABASE_URL");
    let id = std::env::var(CHILD_ID).expect("the parent passes a worker id");
    let options = PgConnectOptions::from_str(&url)
        .expect("a postgres:// URL")
        .database(&database);
    let handle = start(options, &id).await;
    // Standard input closes when the parent says so, or dies.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    let _ = rx.await;
    handle.shutdown(Duration::from_secs(5)).await;
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

#[tokio::test]
async fn three_processes_do_every_job_exactly_once() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    sqlx::query(RUNS_TABLE).execute(&db.pool).await.unwrap();
    let n = 600i64;
    queue
        .enqueue_many((0..n).map(|i| NewJob::new("unit", i.into())).collect())
        .await
        .unwrap();
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
    let queue = db.queue().await;
    sqlx::query(RUNS_TABLE).execute(&db.pool).await.unwrap();
    let ids = queue
        .enqueue_many((0..4).map(|i| NewJob::new("sleepy", i.into())).collect())
        .await
        .unwrap();
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
