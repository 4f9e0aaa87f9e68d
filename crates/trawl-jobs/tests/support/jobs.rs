//! Driving jobs by hand, as a worker named `w` would.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use trawl_jobs::reconcile::worker_partition;
use trawl_jobs::{Completion, JobQueue, NewJob, Outcome, claim, complete};

/// The lease and the attempt timeout of [`claim_all`].
pub(crate) const LEASE: Duration = Duration::from_secs(30);
pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);

/// Records `outcome` for attempt `attempt` of job `id`, leased to worker
/// `w`, and checks that it was applied.
pub(crate) async fn finish(conn: &mut PgConnection, id: i64, attempt: u32, outcome: Outcome) {
    let completion = Completion {
        id,
        attempt,
        outcome,
    };
    let applied = complete(conn, "w", &[completion], None).await.unwrap();
    assert_eq!(applied, [id], "the completion of job {id} was applied");
}

/// Finishes each job with its outcome (attempt 1) as a crash between a
/// finish and its trigger would leave it: the trigger on `jobs_finished`
/// that promotes or cancels children does not run, so only the
/// reconcilers can see that the parents ended.
pub(crate) async fn finish_without_trigger(conn: &mut PgConnection, ends: Vec<(i64, Outcome)>) {
    let trigger =
        |on: &str| format!("ALTER TABLE trawl_jobs.jobs_finished {on} TRIGGER job_finished");
    sqlx::query(sqlx::AssertSqlSafe(trigger("DISABLE")))
        .execute(&mut *conn)
        .await
        .unwrap();
    for (id, outcome) in ends {
        finish(conn, id, 1, outcome).await;
    }
    sqlx::query(sqlx::AssertSqlSafe(trigger("ENABLE")))
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// A job of kind `step` named `name`.
pub(crate) fn step(name: &str) -> NewJob {
    NewJob::new("step", serde_json::json!(name))
}

/// Claims, as `w`, everything ready on the default queue; returns the
/// ids in order.
pub(crate) async fn claim_all(conn: &mut PgConnection) -> Vec<i64> {
    let claimed = claim(conn, "w", "default", 100, LEASE, TIMEOUT, None)
        .await
        .unwrap();
    let mut ids: Vec<i64> = claimed.iter().map(|j| j.id).collect();
    ids.sort_unstable();
    ids
}

/// root → (left, right) → leaf (leaf needs both).
pub(crate) async fn tree(queue: &JobQueue) -> [i64; 4] {
    let root = queue.enqueue(step("root")).await.unwrap();
    let left = queue
        .enqueue(step("left").depends_on([root]))
        .await
        .unwrap();
    let right = queue
        .enqueue(step("right").depends_on([root]))
        .await
        .unwrap();
    let leaf = queue
        .enqueue(step("leaf").depends_on([left, right]))
        .await
        .unwrap();
    [root, left, right, leaf]
}

/// Registers `worker` (on the default queue) with its last heartbeat at
/// `heartbeat_at`.
pub(crate) async fn register(pool: &PgPool, worker: &str, heartbeat_at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO trawl_jobs.workers (id, partition, queues, max_concurrent, heartbeat_at)
         VALUES ($1, $2, '{default}', 10, $3)",
    )
    .bind(worker)
    .bind(worker_partition(worker))
    .bind(heartbeat_at)
    .execute(pool)
    .await
    .unwrap();
}
