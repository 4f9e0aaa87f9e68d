//! Every reconciler of the queue driven by the `trawl-reconcile`
//! supervisor, on the real clock, as a deployment runs them: each repair
//! happens on its own, within a few ticks, without the test calling a tick.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use support::db::TestDb;
use support::jobs::{claim_all, finish, finish_without_trigger, register, step, tree};
use tokio::time::Instant;
use trawl_jobs::reconcile::{Settings, reconcilers_with};
use trawl_jobs::{
    Budget, BudgetScope, JobQueue, JobState, NOTIFY_CHANNEL, NewJob, OnTimeout, Outcome, claim,
};
use trawl_reconcile::{Config, ReconcilerHandle, ReconcilerStats, spawn_reconcilers};

/// Every tick of the queue, every 100 ms, with thresholds short enough
/// for a test: stale after 200 ms, workers silent for 1 s are swept.
fn start(db: &TestDb) -> ReconcilerHandle {
    let settings = Settings {
        worker_ttl: Duration::from_secs(1),
        stale_after: Duration::from_millis(200),
        ..Settings::default()
    };
    let reconcilers = reconcilers_with(&settings);
    let config = reconcilers.iter().fold(
        Config {
            max_phase: Duration::ZERO,
            ..Config::default()
        },
        |config, r| config.with_interval(r.name(), Duration::from_millis(100)),
    );
    spawn_reconcilers(db.pool.clone(), config, reconcilers).expect("valid reconcilers")
}

/// Stops the supervisor, checks that no tick failed on the way, and
/// returns the figures (final once stopped: a tick's figures are counted
/// just after its commit).
async fn stop(mut handle: ReconcilerHandle) -> Vec<ReconcilerStats> {
    assert_eq!(handle.shutdown(Duration::from_secs(10)).await, 0);
    let stats = handle.stats();
    for stats in &stats {
        assert_eq!(
            (stats.errors, stats.panics),
            (0, 0),
            "{}: {:?}",
            stats.name,
            stats.last_error
        );
    }
    stats
}

/// The rows the reconciler `name` changed.
fn rows_changed(stats: &[ReconcilerStats], name: &str) -> u64 {
    stats
        .iter()
        .find(|s| s.name == name)
        .map_or(0, |s| s.rows_changed)
}

/// Waits (at most 20 s) until job `id` is in `want`.
async fn wait_state(queue: &JobQueue, id: i64, want: JobState) {
    let start = Instant::now();
    loop {
        let state = queue.get(id).await.unwrap().expect("the job exists").state;
        if state == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "job {id} is {state:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(attempt, worker, outcome)` of each attempt row of `id`.
async fn attempts(pool: &PgPool, id: i64) -> Vec<(i32, Option<String>, String)> {
    sqlx::query_as(
        "SELECT attempt, worker_id, outcome FROM trawl_jobs.job_attempts
         WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn attempt(n: i32, worker: &str, outcome: &str) -> (i32, Option<String>, String) {
    (n, Some(worker.to_owned()), outcome.to_owned())
}

#[tokio::test]
async fn an_expired_lease_is_reclaimed() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let id = queue.enqueue(step("job").max_attempts(3)).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let lease = Duration::from_millis(300);
    let claimed = claim(&mut conn, "gone", "default", 1, lease, lease * 100, None)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen(NOTIFY_CHANNEL).await.unwrap();
    let handle = start(&db);
    wait_state(&queue, id, JobState::Pending).await;
    assert_eq!(
        attempts(&db.pool, id).await,
        [attempt(1, "gone", "lease_expired")]
    );
    // Idle workers are woken, not left to their next poll.
    let woken = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(woken.payload(), "default");
    let stats = stop(handle).await;
    assert!(rows_changed(&stats, "lease_expiry") >= 1);
}

#[tokio::test]
async fn an_attempt_past_its_timeout_is_failed_and_retried() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let job = step("slow")
        .max_attempts(2)
        .timeout(Duration::from_millis(300));
    let id = queue.enqueue(job).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let handle = start(&db);
    // The lease is renewed (5 minutes): only the timeout can end it.
    let lease = Duration::from_secs(300);
    for (n, end) in [(1, JobState::Pending), (2, JobState::Dead)] {
        let claimed = claim(&mut conn, "hung", "default", 1, lease, lease, None)
            .await
            .unwrap();
        assert_eq!((claimed[0].id, claimed[0].attempt), (id, n));
        wait_state(&queue, id, end).await;
    }
    assert_eq!(
        attempts(&db.pool, id).await,
        [
            attempt(1, "hung", "timed_out"),
            attempt(2, "hung", "timed_out")
        ]
    );
    stop(handle).await;
}

#[tokio::test]
async fn a_suspended_job_past_its_deadline_resumes_or_fails() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let resumed = queue.enqueue(step("r").max_attempts(1)).await.unwrap();
    let failed = queue.enqueue(step("f").max_attempts(1)).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    claim_all(&mut conn).await;
    let until = Utc::now() + chrono::Duration::milliseconds(300);
    for (id, on_timeout) in [(resumed, OnTimeout::Resume), (failed, OnTimeout::Fail)] {
        let suspend = Outcome::Suspend {
            until,
            signal: "never".to_owned(),
            on_timeout,
        };
        finish(&mut conn, id, 1, suspend).await;
        assert_eq!(
            queue.get(id).await.unwrap().unwrap().state,
            JobState::Suspended
        );
    }
    let handle = start(&db);
    wait_state(&queue, resumed, JobState::Pending).await;
    wait_state(&queue, failed, JobState::Dead).await;
    let error = queue.get(failed).await.unwrap().unwrap().last_error;
    assert!(error.unwrap().contains("without a signal"));
    stop(handle).await;
}

#[tokio::test]
async fn blocked_children_are_released_or_cancelled_by_their_parents_ends() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let good = queue.enqueue(step("good")).await.unwrap();
    let bad = queue.enqueue(step("bad")).await.unwrap();
    let released = queue.enqueue(step("a").depends_on([good])).await.unwrap();
    let cancelled = queue.enqueue(step("b").depends_on([bad])).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    claim_all(&mut conn).await;
    let ends = vec![
        (good, Outcome::Succeeded),
        (bad, Outcome::Dead("no".into())),
    ];
    finish_without_trigger(&mut conn, ends).await;
    assert_eq!(
        queue.get(released).await.unwrap().unwrap().state,
        JobState::Blocked
    );
    let handle = start(&db);
    wait_state(&queue, released, JobState::Pending).await;
    wait_state(&queue, cancelled, JobState::Cancelled).await;
    let stats = stop(handle).await;
    // The promotion is the dependency tick's alone; the cancel is its, or
    // the dispatcher's once edge_cancel_reconciler has queued the dead
    // parent's propagation again.
    assert!(rows_changed(&stats, "dependency") >= 1);
    assert_eq!(
        rows_changed(&stats, "dependency") + rows_changed(&stats, "edge_cancel_dispatcher"),
        2
    );
}

#[tokio::test]
async fn a_cancel_reaches_every_descendant_and_a_half_done_one_is_repaired() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let whole = tree(&queue).await;
    let half = tree(&queue).await;
    queue.cancel(whole[0]).await.unwrap();
    queue.cancel(half[0]).await.unwrap();
    // The second cancel's propagation row is lost before any dispatcher
    // ran: `edge_cancel_reconciler` must queue it again.
    sqlx::query("DELETE FROM trawl_jobs.cancel_propagation WHERE parent_id = $1")
        .bind(half[0])
        .execute(&db.pool)
        .await
        .unwrap();
    let handle = start(&db);
    for id in whole.into_iter().chain(half) {
        wait_state(&queue, id, JobState::Cancelled).await;
    }
    let stats = stop(handle).await;
    assert!(
        rows_changed(&stats, "edge_cancel_dispatcher") >= 3,
        "the whole tree"
    );
    // The half-done tree is repaired by whichever comes first: the
    // reconciler queueing the root's propagation again, or the dependency
    // tick finding its blocked children's parent cancelled.
    assert!(
        rows_changed(&stats, "edge_cancel_reconciler") + rows_changed(&stats, "dependency") >= 1
    );
}

#[tokio::test]
async fn a_budget_resets_at_its_window() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let scope = BudgetScope::Kind("bill".into());
    queue
        .set_budget(&Budget::new(scope, 5, Duration::from_secs(1)))
        .await
        .unwrap();
    queue
        .enqueue_many((0..3).map(|n| NewJob::new("bill", n.into())).collect())
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(claim_all(&mut conn).await.len(), 3);
    let budget = async || -> (i64, DateTime<Utc>) {
        sqlx::query_as("SELECT used, window_start FROM trawl_jobs.budgets")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let (used, charged_window) = budget().await;
    assert_eq!(used, 3);
    let handle = start(&db);
    let start = Instant::now();
    loop {
        let (used, window) = budget().await;
        if used == 0 {
            assert!(window > charged_window, "a new window began");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never reset");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = stop(handle).await;
    assert!(rows_changed(&stats, "budget_reset") >= 1);
}

#[tokio::test]
async fn a_silent_worker_is_swept_and_its_running_jobs_return_to_the_queue() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let ids = queue
        .enqueue_many((0..3).map(|n| step(&n.to_string())).collect())
        .await
        .unwrap();
    register(&db.pool, "ghost", Utc::now() - chrono::Duration::minutes(1)).await;
    let mut conn = db.pool.acquire().await.unwrap();
    // Leases good for 5 minutes: only the sweep can take the jobs back.
    let lease = Duration::from_secs(300);
    let claimed = claim(&mut conn, "ghost", "default", 3, lease, lease, None)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let handle = start(&db);
    for &id in &ids {
        wait_state(&queue, id, JobState::Pending).await;
        assert_eq!(
            attempts(&db.pool, id).await,
            [attempt(1, "ghost", "worker_lost")]
        );
    }
    let workers: i64 = sqlx::query_scalar("SELECT count(*) FROM trawl_jobs.workers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(workers, 0, "the ghost left the registry");
    stop(handle).await;
}
