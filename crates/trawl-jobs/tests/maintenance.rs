//! The maintenance tick against the real PostgreSQL (whose autovacuum may
//! be off): claims and completions leave dead tuples in the hot table, a
//! vacuum removes them, and the tick vacuums only past its thresholds.

mod support;

use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};
use trawl_jobs::maintenance::{self, Config, HOT_TABLES, TableStats};
use trawl_jobs::{Completion, Error, NewJob, Outcome, claim, complete};

const JOBS: usize = 2_000;

/// The stats of `trawl_jobs.jobs` and `trawl_jobs.workers`.
async fn stats(pool: &PgPool) -> (TableStats, TableStats) {
    let mut all = maintenance::hot_table_stats(pool).await.unwrap();
    assert_eq!(
        all.iter().map(|s| s.table).collect::<Vec<_>>(),
        HOT_TABLES.to_vec()
    );
    let workers = all.pop().unwrap();
    (all.pop().unwrap(), workers)
}

/// Sends this connection's pending statistics to the collector now (they
/// otherwise arrive within a second or so).
async fn flush_stats(conn: &mut PgConnection) {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// Waits (up to 15 s) until `done` holds of the hot tables' stats.
async fn until(pool: &PgPool, what: &str, done: impl Fn(&TableStats, &TableStats) -> bool) {
    let start = Instant::now();
    loop {
        let (jobs, workers) = stats(pool).await;
        if done(&jobs, &workers) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: {jobs:?} {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `JOBS` jobs through claim and complete, and 500 heartbeats of one
/// worker, leaving dead tuples in both hot tables.
async fn churn(pool: &PgPool) {
    let queue = trawl_jobs::JobQueue::new(pool.clone());
    queue
        .enqueue_many((0..JOBS).map(|i| NewJob::new("k", i.into())).collect())
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    loop {
        let jobs = claim(
            &mut conn,
            "w1",
            "default",
            100,
            Duration::from_secs(30),
            Duration::from_secs(60),
            None,
        )
        .await
        .unwrap();
        if jobs.is_empty() {
            break;
        }
        let done: Vec<Completion> = jobs
            .iter()
            .map(|job| Completion {
                id: job.id,
                attempt: job.attempt,
                outcome: Outcome::Succeeded,
            })
            .collect();
        complete(&mut conn, "w1", &done, None).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO trawl_jobs.workers (id, partition, queues, max_concurrent)
         VALUES ('w1', 0, '{default}', 4)",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    for _ in 0..500 {
        sqlx::query("UPDATE trawl_jobs.workers SET heartbeat_at = clock_timestamp()")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    flush_stats(&mut conn).await;
}

#[tokio::test]
async fn a_vacuum_of_the_hot_tables_removes_their_dead_tuples() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    churn(&db.pool).await;
    // A claim and a completion leave a dead tuple each; every heartbeat
    // one more.
    until(&db.pool, "dead tuples reported", |jobs, workers| {
        jobs.dead_tuples >= 2 * JOBS as u64 && workers.dead_tuples >= 400
    })
    .await;

    maintenance::vacuum_hot_tables(&db.pool).await.unwrap();
    let (jobs, workers) = stats(&db.pool).await;
    assert_eq!((jobs.dead_tuples, workers.dead_tuples), (0, 0));
    assert_eq!((jobs.live_tuples, workers.live_tuples), (0, 1));
    assert!(jobs.last_vacuum.is_some() && workers.last_vacuum.is_some());
}

#[tokio::test]
async fn the_tick_vacuums_only_the_tables_past_its_thresholds() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    churn(&db.pool).await;
    until(&db.pool, "dead tuples reported", |jobs, workers| {
        jobs.dead_tuples >= 2 * JOBS as u64 && workers.dead_tuples >= 400
    })
    .await;

    // Thresholds above the dead tuples: nothing to do.
    let lenient = Config::new(1_000_000, 0.0).unwrap();
    assert!(
        maintenance::run_once(&db.pool, &lenient)
            .await
            .unwrap()
            .is_empty()
    );
    let (jobs, _) = stats(&db.pool).await;
    assert!(jobs.dead_tuples >= 2 * JOBS as u64);
    assert!(jobs.last_vacuum.is_none());

    // 1,000 dead tuples: the jobs table is due, the registry (~500) not.
    let config = Config::new(1_000, 0.1).unwrap();
    assert_eq!(
        maintenance::run_once(&db.pool, &config).await.unwrap(),
        vec!["trawl_jobs.jobs"]
    );
    let (jobs, workers) = stats(&db.pool).await;
    assert_eq!(jobs.dead_tuples, 0);
    assert!(workers.dead_tuples >= 400 && workers.last_vacuum.is_none());

    // The default thresholds leave the rest alone; the tick is idempotent.
    assert!(
        maintenance::run_once(&db.pool, &Config::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[test]
fn thresholds_are_validated() {
    for ratio in [-0.1, f64::NAN, f64::INFINITY] {
        let err = Config::new(10, ratio).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "dead_ratio",
                    ..
                }
            ),
            "{err}"
        );
    }
    let config = Config::new(10, 0.5).unwrap();
    assert_eq!((config.min_dead_tuples(), config.dead_ratio()), (10, 0.5));
    assert_eq!(
        Config::default().min_dead_tuples(),
        Config::DEFAULT_MIN_DEAD_TUPLES
    );
}
