//! The reconciler ticks against the real PostgreSQL, with the clock pinned:
//! what each one changes, what it leaves alone, and that two nodes running
//! the same tick at once never apply a change twice.

mod support;

use support::jobs::register;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::{Acquire, PgConnection, PgPool};
use trawl_jobs::reconcile::{
    self, BATCH, BUDGET_PARTITIONS, JOB_PARTITIONS, WORKER_PARTITIONS, attempt_timeout,
    budget_reset, dependency, edge_cancel_dispatcher, edge_cancel_reconciler, lease_expiry,
    suspension_timeout, worker_registry_ttl_sweep,
};
use trawl_jobs::{Error, JobQueue, JobRow, JobState, NewJob, claim};

const LEASE: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(60);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn at(secs: i64) -> Option<DateTime<Utc>> {
    Some(t0() + chrono::Duration::seconds(secs))
}

fn partition_of(id: i64) -> i16 {
    (id % i64::from(JOB_PARTITIONS)) as i16
}

/// Enqueues `jobs` and has `worker` claim all of them at `t0` (lease 30 s,
/// default timeout 60 s); returns their ids in order.
async fn running(
    queue: &JobQueue,
    conn: &mut PgConnection,
    worker: &str,
    jobs: Vec<NewJob>,
    lease: Duration,
) -> Vec<i64> {
    let n = jobs.len() as u32;
    let ids = queue.enqueue_many(jobs).await.unwrap();
    let claimed = claim(conn, worker, "default", n, lease, TIMEOUT, Some(t0()))
        .await
        .unwrap();
    assert_eq!(claimed.len(), ids.len());
    ids
}

async fn job(queue: &JobQueue, id: i64) -> JobRow {
    queue.get(id).await.unwrap().expect("the job exists")
}

/// `(attempt, worker, outcome, error)` of each attempt row of `id`.
async fn attempts(pool: &PgPool, id: i64) -> Vec<(i32, Option<String>, String, Option<String>)> {
    sqlx::query_as(
        "SELECT attempt, worker_id, outcome, error FROM trawl_jobs.job_attempts
         WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn registered(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM trawl_jobs.workers ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_partition_counts_are_the_schemas() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    let settings: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, value FROM trawl_jobs.settings ORDER BY name")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        settings,
        vec![
            (
                "budget_partitions".to_owned(),
                i64::from(reconcile::BUDGET_PARTITIONS)
            ),
            ("job_partitions".to_owned(), i64::from(JOB_PARTITIONS)),
            ("worker_partitions".to_owned(), i64::from(WORKER_PARTITIONS)),
        ]
    );
    // The generated column agrees too.
    let id = db
        .queue()
        .await
        .enqueue(NewJob::new("k", 0.into()))
        .await
        .unwrap();
    let partition: i16 = sqlx::query_scalar("SELECT partition FROM trawl_jobs.jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(partition, partition_of(id));
}

#[test]
fn worker_partitions_are_fnv1a_of_the_id() {
    // FNV-1a 64 of "" is its offset basis 0xcbf29ce484222325, of "a"
    // 0xaf63dc4c8601ec8c: the low byte is the partition.
    assert_eq!(reconcile::worker_partition(""), 0x25);
    assert_eq!(reconcile::worker_partition("a"), 0x8c);
    let spread: std::collections::HashSet<i16> = (0..2_000)
        .map(|i| reconcile::worker_partition(&format!("node-{i}")))
        .collect();
    assert!(spread.iter().all(|p| (0..WORKER_PARTITIONS).contains(p)));
    assert!(spread.len() > 240, "{} partitions used", spread.len());
}

/// Checks that `result` is an `Error::Invalid` naming `field`.
fn assert_invalid<T: std::fmt::Debug>(result: trawl_jobs::Result<T>, field: &str) {
    match result {
        Err(Error::Invalid { field: named, .. }) if named == field => {}
        other => panic!("expected an invalid {field}, got {other:?}"),
    }
}

#[tokio::test]
async fn out_of_range_partitions_and_a_zero_ttl_are_refused() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    let mut conn = db.pool.acquire().await.unwrap();
    for partition in [-1, JOB_PARTITIONS] {
        let c = &mut conn;
        assert_invalid(
            lease_expiry::run_once(c, partition, None).await,
            "partition",
        );
        assert_invalid(
            attempt_timeout::run_once(c, partition, None).await,
            "partition",
        );
        assert_invalid(
            suspension_timeout::run_once(c, partition, None).await,
            "partition",
        );
        assert_invalid(dependency::run_once(c, partition, None).await, "partition");
        assert_invalid(
            edge_cancel_dispatcher::run_once(c, partition, None).await,
            "partition",
        );
        assert_invalid(
            edge_cancel_reconciler::run_once(c, partition, None).await,
            "partition",
        );
    }
    for partition in [-1, BUDGET_PARTITIONS] {
        assert_invalid(
            budget_reset::run_once(&mut conn, partition, None).await,
            "partition",
        );
    }
    assert_invalid(
        worker_registry_ttl_sweep::run_once(&mut conn, WORKER_PARTITIONS, None).await,
        "partition",
    );
    assert_invalid(
        worker_registry_ttl_sweep::run_once_with(&mut conn, 0, None, Duration::ZERO).await,
        "ttl",
    );
    // The last partitions are valid, and a huge TTL means "never".
    assert_eq!(
        lease_expiry::run_once(&mut conn, JOB_PARTITIONS - 1, None)
            .await
            .unwrap(),
        0
    );
    let huge = Duration::from_secs(u64::MAX);
    assert_eq!(
        worker_registry_ttl_sweep::run_once_with(&mut conn, WORKER_PARTITIONS - 1, None, huge)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn an_expired_lease_puts_the_job_back_at_once_with_an_attempt_row() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let jobs = (0..2)
        .map(|i| NewJob::new("k", i.into()).max_attempts(3))
        .collect();
    let ids = running(&queue, &mut conn, "w1", jobs, LEASE).await;
    let (a, b) = (ids[0], ids[1]);
    assert_ne!(partition_of(a), partition_of(b));

    // Not yet expired: at the lease's last instant nothing moves.
    for now in [at(0), at(29), at(30)] {
        assert_eq!(
            lease_expiry::run_once(&mut conn, partition_of(a), now)
                .await
                .unwrap(),
            0
        );
    }
    assert_eq!(job(&queue, a).await.state, JobState::Running);

    assert_eq!(
        lease_expiry::run_once(&mut conn, partition_of(a), at(31))
            .await
            .unwrap(),
        1
    );
    let row = job(&queue, a).await;
    assert_eq!(row.state, JobState::Pending);
    assert_eq!(row.run_at, at(31).unwrap(), "back at once, no backoff");
    assert_eq!(row.attempt, 1);
    assert_eq!(row.lease_owner, None);
    assert_eq!(row.lease_expires_at, None);
    assert!(row.last_error.as_deref().unwrap().contains("w1"));
    let history = attempts(&db.pool, a).await;
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].0, history[0].1.as_deref(), history[0].2.as_str()),
        (1, Some("w1"), "lease_expired")
    );
    assert!(history[0].3.as_deref().unwrap().contains("w1"));
    let (started, finished): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT started_at, finished_at FROM trawl_jobs.job_attempts WHERE job_id = $1",
    )
    .bind(a)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((started, finished), (t0(), at(31).unwrap()));

    // The other partition's job is untouched until its own partition's tick.
    assert_eq!(job(&queue, b).await.state, JobState::Running);
    assert!(attempts(&db.pool, b).await.is_empty());
    // Running the tick again changes nothing.
    assert_eq!(
        lease_expiry::run_once(&mut conn, partition_of(a), at(31))
            .await
            .unwrap(),
        0
    );

    // The job runs again as attempt 2, and a second expiry is recorded as
    // attempt 2.
    let again = claim(&mut conn, "w2", "default", 1, LEASE, TIMEOUT, at(40))
        .await
        .unwrap();
    assert_eq!((again[0].id, again[0].attempt), (a, 2));
    assert_eq!(
        lease_expiry::run_once(&mut conn, partition_of(a), at(71))
            .await
            .unwrap(),
        1
    );
    let history = attempts(&db.pool, a).await;
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].1.as_deref(), Some("w2"));
}

#[tokio::test]
async fn an_expired_last_attempt_is_a_dead_letter_and_a_requested_cancel_is_honoured() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut conn = db.pool.acquire().await.unwrap();
    // 16 jobs with one attempt each, one per partition: half dead, half
    // cancelled while running.
    let jobs = (0..16)
        .map(|i| NewJob::new("k", i.into()).max_attempts(1))
        .collect();
    let ids = running(&queue, &mut conn, "w1", jobs, LEASE).await;
    for &id in ids.iter().skip(8) {
        assert_eq!(
            queue.cancel(id).await.unwrap(),
            trawl_jobs::CancelOutcome::Requested
        );
    }
    let mut changed = 0;
    for partition in 0..JOB_PARTITIONS {
        changed += lease_expiry::run_once(&mut conn, partition, at(31))
            .await
            .unwrap();
    }
    assert_eq!(changed, 16);
    for (i, &id) in ids.iter().enumerate() {
        let row = job(&queue, id).await;
        let expected = if i < 8 {
            JobState::Dead
        } else {
            JobState::Cancelled
        };
        assert_eq!(row.state, expected, "job {i}");
        assert_eq!(row.finished_at, at(31));
        assert!(row.last_error.as_deref().unwrap().contains("w1"));
        let history = attempts(&db.pool, id).await;
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].2, "lease_expired");
    }
    let hot: i64 = sqlx::query_scalar("SELECT count(*) FROM trawl_jobs.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(hot, 0, "finished jobs leave the hot table");
    // A dead letter can be retried by hand.
    assert!(queue.retry(ids[0]).await.unwrap());
}

#[tokio::test]
async fn a_tick_changes_at_most_one_batch() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let n = JOB_PARTITIONS as usize * (BATCH as usize + 5);
    let jobs = (0..n).map(|i| NewJob::new("k", i.into())).collect();
    let ids = running(&queue, &mut conn, "w1", jobs, LEASE).await;
    let in_zero = ids.iter().filter(|&&id| partition_of(id) == 0).count() as u64;
    assert!(in_zero > BATCH as u64);
    let first = lease_expiry::run_once(&mut conn, 0, at(31)).await.unwrap();
    assert_eq!(first, BATCH as u64);
    let second = lease_expiry::run_once(&mut conn, 0, at(31)).await.unwrap();
    assert_eq!(first + second, in_zero);
    assert_eq!(
        lease_expiry::run_once(&mut conn, 0, at(31)).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn an_attempt_past_its_deadline_fails_even_while_its_lease_is_renewed() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut conn = db.pool.acquire().await.unwrap();
    // A 10 s timeout of its own, and the worker's default (60 s), with a
    // lease of 5 minutes (a hung worker whose heartbeat goes on).
    let jobs = vec![
        NewJob::new("k", 0.into()).timeout(Duration::from_secs(10)),
        NewJob::new("k", 1.into()).max_attempts(1),
    ];
    let ids = running(&queue, &mut conn, "w1", jobs, Duration::from_secs(300)).await;
    let (short, default) = (ids[0], ids[1]);

    for now in [at(5), at(10)] {
        assert_eq!(
            attempt_timeout::run_once(&mut conn, partition_of(short), now)
                .await
                .unwrap(),
            0
        );
    }
    // The lease is still good: lease_expiry leaves the job alone.
    assert_eq!(
        lease_expiry::run_once(&mut conn, partition_of(short), at(11))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        attempt_timeout::run_once(&mut conn, partition_of(short), at(11))
            .await
            .unwrap(),
        1
    );
    let row = job(&queue, short).await;
    assert_eq!(row.state, JobState::Pending);
    assert_eq!(row.run_at, at(11).unwrap());
    let history = attempts(&db.pool, short).await;
    assert_eq!(
        (history[0].1.as_deref(), history[0].2.as_str()),
        (Some("w1"), "timed_out")
    );
    let error = history[0].3.as_deref().unwrap();
    assert!(error.contains("w1") && error.contains("10"), "{error}");
    assert_eq!(job(&queue, default).await.state, JobState::Running);

    // The default-timeout job, on its last attempt, is a dead letter at 61 s.
    assert_eq!(
        attempt_timeout::run_once(&mut conn, partition_of(default), at(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        attempt_timeout::run_once(&mut conn, partition_of(default), at(61))
            .await
            .unwrap(),
        1
    );
    let row = job(&queue, default).await;
    assert_eq!(row.state, JobState::Dead);
    assert!(row.last_error.as_deref().unwrap().contains("timed out"));
    assert_eq!(attempts(&db.pool, default).await[0].2, "timed_out");
}

#[tokio::test]
async fn the_registry_sweep_drops_silent_workers_and_releases_their_jobs_at_once() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let (lost, alive) = ("node-lost", "node-alive");
    assert_ne!(
        reconcile::worker_partition(lost),
        reconcile::worker_partition(alive)
    );
    // A lost worker in the alive one's partition too.
    let neighbour = (0..)
        .map(|i| format!("node-{i}"))
        .find(|w| reconcile::worker_partition(w) == reconcile::worker_partition(alive))
        .unwrap();
    register(&db.pool, lost, t0() - chrono::Duration::seconds(31)).await;
    register(&db.pool, alive, t0() - chrono::Duration::seconds(5)).await;
    register(&db.pool, &neighbour, t0() - chrono::Duration::seconds(300)).await;
    // Leases of 5 minutes: none expires during the test.
    let lease = Duration::from_secs(300);
    let lost_jobs = running(
        &queue,
        &mut conn,
        lost,
        (0..3).map(|i| NewJob::new("k", i.into())).collect(),
        lease,
    )
    .await;
    let alive_jobs = running(
        &queue,
        &mut conn,
        alive,
        (0..2).map(|i| NewJob::new("k", i.into())).collect(),
        lease,
    )
    .await;

    let p = reconcile::worker_partition(lost);
    // A longer TTL keeps everyone.
    assert_eq!(
        worker_registry_ttl_sweep::run_once_with(&mut conn, p, Some(t0()), Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
    // The default TTL (30 s): the lost worker and its 3 jobs.
    assert_eq!(
        worker_registry_ttl_sweep::run_once(&mut conn, p, Some(t0()))
            .await
            .unwrap(),
        4
    );
    for &id in &lost_jobs {
        let row = job(&queue, id).await;
        assert_eq!(row.state, JobState::Pending);
        assert_eq!(row.run_at, t0());
        let history = attempts(&db.pool, id).await;
        assert_eq!(
            (history[0].1.as_deref(), history[0].2.as_str()),
            (Some(lost), "worker_lost")
        );
        assert!(history[0].3.as_deref().unwrap().contains(lost));
    }
    for &id in &alive_jobs {
        assert_eq!(job(&queue, id).await.state, JobState::Running);
    }
    let mut expected = vec![alive.to_owned(), neighbour.clone()];
    expected.sort();
    assert_eq!(registered(&db.pool).await, expected);

    // The alive worker's partition: only its silent neighbour goes (it
    // holds no job).
    let q = reconcile::worker_partition(alive);
    assert_eq!(
        worker_registry_ttl_sweep::run_once(&mut conn, q, Some(t0()))
            .await
            .unwrap(),
        1
    );
    assert_eq!(registered(&db.pool).await, vec![alive.to_owned()]);
    for &id in &alive_jobs {
        assert_eq!(job(&queue, id).await.state, JobState::Running);
    }
}

#[tokio::test]
async fn a_silent_worker_stays_listed_until_all_its_jobs_are_released() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut conn = db.pool.acquire().await.unwrap();
    register(&db.pool, "big", t0() - chrono::Duration::seconds(60)).await;
    let n = BATCH as usize + 5;
    running(
        &queue,
        &mut conn,
        "big",
        (0..n).map(|i| NewJob::new("k", i.into())).collect(),
        Duration::from_secs(300),
    )
    .await;
    let p = reconcile::worker_partition("big");
    let first = worker_registry_ttl_sweep::run_once(&mut conn, p, Some(t0()))
        .await
        .unwrap();
    assert_eq!(first, BATCH as u64, "a batch of jobs, the worker kept");
    assert_eq!(registered(&db.pool).await, vec!["big".to_owned()]);
    let second = worker_registry_ttl_sweep::run_once(&mut conn, p, Some(t0()))
        .await
        .unwrap();
    assert_eq!(second, 5 + 1, "the rest of the jobs and the worker");
    assert!(registered(&db.pool).await.is_empty());
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM trawl_jobs.jobs WHERE state = 'running'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(running, 0);
}

/// One tick of `which` on `partition` at `now`.
async fn tick(
    which: &str,
    conn: &mut PgConnection,
    partition: i16,
    now: Option<DateTime<Utc>>,
) -> u64 {
    match which {
        "lease_expiry" => lease_expiry::run_once(conn, partition, now).await,
        "attempt_timeout" => attempt_timeout::run_once(conn, partition, now).await,
        "worker_registry_ttl_sweep" => {
            worker_registry_ttl_sweep::run_once(conn, partition, now).await
        }
        other => unreachable!("{other}"),
    }
    .unwrap()
}

#[tokio::test]
async fn two_nodes_running_the_same_tick_on_the_same_partition_apply_it_once() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    register(&db.pool, "w1", t0() - chrono::Duration::seconds(60)).await;
    let mut conn = db.pool.acquire().await.unwrap();
    // 64 jobs in partition 0..16 claimed by w1 at t0 with a 30 s lease and a
    // 10 s timeout; at t0 + 31 every tick has work.
    let jobs: Vec<NewJob> = (0..64)
        .map(|i| {
            NewJob::new("k", i.into())
                .max_attempts(5)
                .timeout(Duration::from_secs(10))
        })
        .collect();
    for (which, partition) in [
        ("lease_expiry", 3),
        ("attempt_timeout", 3),
        (
            "worker_registry_ttl_sweep",
            reconcile::worker_partition("w1"),
        ),
    ] {
        sqlx::query("TRUNCATE trawl_jobs.jobs, trawl_jobs.job_attempts")
            .execute(&db.pool)
            .await
            .unwrap();
        running(&queue, &mut conn, "w1", jobs.clone(), LEASE).await;
        let expected = if which == "worker_registry_ttl_sweep" {
            64 + 1
        } else {
            4
        };
        // Node A's tick holds its rows in an open transaction: node B's
        // skips them, then finds them already changed.
        let mut a = db.pool.acquire().await.unwrap();
        let mut b = db.pool.acquire().await.unwrap();
        let mut tx = a.begin().await.unwrap();
        assert_eq!(
            tick(which, &mut tx, partition, at(31)).await,
            expected,
            "{which}"
        );
        assert_eq!(tick(which, &mut b, partition, at(31)).await, 0, "{which}");
        tx.commit().await.unwrap();
        assert_eq!(tick(which, &mut b, partition, at(31)).await, 0, "{which}");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM trawl_jobs.job_attempts")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(
            rows,
            if which == "worker_registry_ttl_sweep" {
                64
            } else {
                4
            }
        );
        // Put the worker back for the next round.
        if which == "worker_registry_ttl_sweep" {
            register(&db.pool, "w1", t0() - chrono::Duration::seconds(60)).await;
        }
    }
}

#[tokio::test]
async fn many_nodes_racing_over_every_partition_release_each_job_once() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let ids = running(
        &queue,
        &mut conn,
        "w1",
        (0..2_000).map(|i| NewJob::new("k", i.into())).collect(),
        LEASE,
    )
    .await;
    drop(conn);
    let mut nodes = Vec::new();
    for node in 0..6 {
        let pool = db.pool.clone();
        nodes.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            let mut changed = 0;
            for round in 0..3 {
                for i in 0..JOB_PARTITIONS {
                    // Each node starts at another partition.
                    let partition = (i + node * 5 + round) % JOB_PARTITIONS;
                    changed += lease_expiry::run_once(&mut conn, partition, at(31))
                        .await
                        .unwrap();
                }
            }
            changed
        }));
    }
    let mut total = 0;
    for node in nodes {
        total += node.await.unwrap();
    }
    assert_eq!(total, ids.len() as u64);
    let (rows, jobs): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT job_id) FROM trawl_jobs.job_attempts
         WHERE outcome = 'lease_expired'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((rows, jobs), (2_000, 2_000));
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM trawl_jobs.jobs WHERE state = 'pending'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(pending, 2_000);
}
