//! Dependencies, cancel propagation, unique keys and suspension against the
//! real PostgreSQL, with the clock pinned where a tick is involved.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use support::jobs::{claim_all, finish, finish_without_trigger, step as job, tree};
use trawl_jobs::reconcile::{
    JOB_PARTITIONS, dependency, edge_cancel_dispatcher, edge_cancel_reconciler, suspension_timeout,
};
use trawl_jobs::{EnqueueOutcome, Error, JobQueue, JobState, NewJob, OnTimeout, Outcome};

async fn state(queue: &JobQueue, id: i64) -> JobState {
    queue.get(id).await.unwrap().expect("job exists").state
}

/// Runs `tick` over every partition until it changes nothing (at most
/// `rounds` times); returns the total.
async fn settle<F>(
    conn: &mut PgConnection,
    now: Option<DateTime<Utc>>,
    rounds: usize,
    tick: F,
) -> u64
where
    F: for<'c> Fn(
        &'c mut PgConnection,
        i16,
        Option<DateTime<Utc>>,
    ) -> futures::future::BoxFuture<'c, trawl_jobs::Result<u64>>,
{
    let mut total = 0;
    for _ in 0..rounds {
        let mut changed = 0;
        for partition in 0..JOB_PARTITIONS {
            changed += tick(conn, partition, now).await.unwrap();
        }
        if changed == 0 {
            return total;
        }
        total += changed;
    }
    panic!("the tick still changed jobs after {rounds} rounds");
}

fn dispatcher(
    conn: &mut PgConnection,
    partition: i16,
    now: Option<DateTime<Utc>>,
) -> futures::future::BoxFuture<'_, trawl_jobs::Result<u64>> {
    Box::pin(edge_cancel_dispatcher::run_once(conn, partition, now))
}

fn later(secs: i64) -> Option<DateTime<Utc>> {
    Some(Utc::now() + chrono::Duration::seconds(secs))
}

#[tokio::test]
async fn a_tree_of_jobs_runs_level_by_level_as_parents_succeed() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let [root, left, right, leaf] = tree(&queue).await;
    for id in [left, right, leaf] {
        assert_eq!(state(&queue, id).await, JobState::Blocked);
    }
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(
        claim_all(&mut conn).await,
        vec![root],
        "only the root is ready"
    );
    finish(&mut conn, root, 1, Outcome::Succeeded).await;
    assert_eq!(claim_all(&mut conn).await, vec![left, right]);
    finish(&mut conn, left, 1, Outcome::Succeeded).await;
    assert_eq!(
        state(&queue, leaf).await,
        JobState::Blocked,
        "one parent left"
    );
    assert!(claim_all(&mut conn).await.is_empty());
    finish(&mut conn, right, 1, Outcome::Succeeded).await;
    assert_eq!(state(&queue, leaf).await, JobState::Pending);
    assert_eq!(claim_all(&mut conn).await, vec![leaf]);
    finish(&mut conn, leaf, 1, Outcome::Succeeded).await;
    for id in [root, left, right, leaf] {
        assert_eq!(state(&queue, id).await, JobState::Succeeded);
    }
}

#[tokio::test]
async fn a_dead_parent_cancels_every_descendant() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let [root, left, right, leaf] = tree(&queue).await;
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(claim_all(&mut conn).await, vec![root]);
    finish(&mut conn, root, 1, Outcome::Dead("broken input".into())).await;
    // One level per round: left and right, then the leaf.
    let cancelled = settle(&mut conn, None, 5, dispatcher).await;
    assert_eq!(cancelled, 3);
    for id in [left, right, leaf] {
        let row = queue.get(id).await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Cancelled);
        let error = row.last_error.unwrap();
        assert!(error.starts_with("cancelled: parent "), "{error}");
    }
    let left_over: i64 = sqlx::query_scalar("SELECT count(*) FROM trawl_jobs.cancel_propagation")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left_over, 0, "every propagation is done");
    assert!(claim_all(&mut conn).await.is_empty());
}

#[tokio::test]
async fn cancelling_a_job_cancels_its_descendants() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let [root, left, right, leaf] = tree(&queue).await;
    queue.cancel(root).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    settle(&mut conn, None, 5, dispatcher).await;
    for id in [root, left, right, leaf] {
        assert_eq!(state(&queue, id).await, JobState::Cancelled);
    }
}

#[tokio::test]
async fn a_running_child_of_a_cancelled_parent_is_asked_to_stop() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let parent = queue.enqueue(job("parent")).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let child = queue
        .enqueue(job("child").depends_on([parent]))
        .await
        .unwrap();
    claim_all(&mut conn).await;
    finish(&mut conn, parent, 1, Outcome::Succeeded).await;
    assert_eq!(claim_all(&mut conn).await, vec![child]);
    // The child runs; its parent's propagation (queued by hand here, as
    // the reconciler would) reaches it.
    sqlx::query(
        "INSERT INTO trawl_jobs.cancel_propagation (parent_id, partition, reason)
         VALUES ($1, $1 % 16, 'test')",
    )
    .bind(parent)
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(settle(&mut conn, None, 3, dispatcher).await, 1);
    let row = queue.get(child).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Running);
    assert!(
        row.cancel_requested,
        "the worker sees it at its next heartbeat"
    );
}

#[tokio::test]
async fn missed_promotions_and_cancels_are_repaired_by_the_dependency_tick() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let good = queue.enqueue(job("good")).await.unwrap();
    let bad = queue.enqueue(job("bad")).await.unwrap();
    let promoted = queue.enqueue(job("a").depends_on([good])).await.unwrap();
    let doomed = queue.enqueue(job("b").depends_on([bad])).await.unwrap();
    let waiting = queue
        .enqueue(job("c").depends_on([good, bad]))
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    claim_all(&mut conn).await;
    let ends = vec![
        (good, Outcome::Succeeded),
        (bad, Outcome::Dead("no".into())),
    ];
    finish_without_trigger(&mut conn, ends).await;
    for id in [promoted, doomed, waiting] {
        assert_eq!(state(&queue, id).await, JobState::Blocked);
    }
    // Not before the stale threshold.
    let early =
        support::each_partition!(JOB_PARTITIONS, |p| dependency::run_once(&mut conn, p, None));
    assert_eq!(early, 0);
    let repaired = support::each_partition!(JOB_PARTITIONS, |p| dependency::run_once(
        &mut conn,
        p,
        later(20)
    ));
    assert_eq!(repaired, 3);
    assert_eq!(state(&queue, promoted).await, JobState::Pending);
    assert_eq!(state(&queue, doomed).await, JobState::Cancelled);
    assert_eq!(state(&queue, waiting).await, JobState::Cancelled);
}

#[tokio::test]
async fn a_half_propagated_cancel_is_queued_again_by_the_reconciler() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let [root, left, right, leaf] = tree(&queue).await;
    queue.cancel(root).await.unwrap();
    // The propagation row is lost before the dispatcher ran.
    sqlx::query("DELETE FROM trawl_jobs.cancel_propagation")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(settle(&mut conn, None, 2, dispatcher).await, 0);
    let mut queued = support::each_partition!(
        JOB_PARTITIONS,
        |p| edge_cancel_reconciler::run_once(&mut conn, p, None)
    );
    assert_eq!(queued, 0, "not before the stale threshold");
    queued += support::each_partition!(JOB_PARTITIONS, |p| edge_cancel_reconciler::run_once(
        &mut conn,
        p,
        later(20)
    ));
    assert_eq!(queued, 1, "the root");
    settle(&mut conn, None, 5, dispatcher).await;
    for id in [left, right, leaf] {
        assert_eq!(state(&queue, id).await, JobState::Cancelled);
    }
}

#[tokio::test]
async fn parents_that_already_ended_count_at_enqueue() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let done = queue.enqueue(job("done")).await.unwrap();
    let dead = queue.enqueue(job("dead")).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    claim_all(&mut conn).await;
    finish(&mut conn, done, 1, Outcome::Succeeded).await;
    finish(&mut conn, dead, 1, Outcome::Dead("no".into())).await;

    let ready = queue.enqueue(job("r").depends_on([done])).await.unwrap();
    assert_eq!(state(&queue, ready).await, JobState::Pending);
    let hopeless = queue
        .enqueue(job("h").depends_on([done, dead]))
        .await
        .unwrap();
    let row = queue.get(hopeless).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Cancelled);
    assert_eq!(
        row.last_error.as_deref(),
        Some(format!("parent {dead} was dead").as_str())
    );
    let err = queue
        .enqueue(job("x").depends_on([done, 999_999]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "parents",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("job 999999 does not exist"),
        "{err}"
    );
}

/// A child enqueued under a parent that had already died is still its
/// child: when both are retried by hand and the parent dies again, the
/// child is cancelled like any other.
#[tokio::test]
async fn a_parent_retried_after_gaining_children_in_death_cancels_them_when_it_dies_again() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let parent = queue.enqueue(job("p").max_attempts(1)).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    claim_all(&mut conn).await;
    finish(&mut conn, parent, 1, Outcome::Dead("no".into())).await;
    let child = queue.enqueue(job("c").depends_on([parent])).await.unwrap();
    assert_eq!(state(&queue, child).await, JobState::Cancelled);

    assert!(queue.retry(child).await.unwrap());
    assert!(queue.retry(parent).await.unwrap());
    assert_eq!(claim_all(&mut conn).await.len(), 2);
    finish(&mut conn, parent, 2, Outcome::Dead("still no".into())).await;
    assert_eq!(settle(&mut conn, None, 3, dispatcher).await, 1);
    let row = queue.get(child).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Running);
    assert!(row.cancel_requested, "the running child is asked to stop");
}

#[tokio::test]
async fn a_unique_key_holds_under_eight_concurrent_enqueuers() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    for round in 0..5 {
        let key = format!("refresh-{round}");
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let queue = queue.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    queue
                        .enqueue(NewJob::new("refresh", i.into()).unique_key(key))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut ids = HashSet::new();
        for task in tasks {
            ids.insert(task.await.unwrap());
        }
        assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
        let rows: i64 =
            sqlx::query_scalar("SELECT count(*) FROM trawl_jobs.jobs WHERE unique_key = $1")
                .bind(&key)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(rows, 1);
    }
    // In one batch too.
    let ids = queue
        .enqueue_many(vec![
            NewJob::new("refresh", 1.into()).unique_key("batch"),
            NewJob::new("plain", 2.into()),
            NewJob::new("refresh", 3.into()).unique_key("batch"),
        ])
        .await
        .unwrap();
    assert_eq!(ids[0], ids[2]);
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn a_while_live_key_is_free_once_its_job_ends_and_a_period_key_is_not() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let live = queue.enqueue(job("a").unique_key("live")).await.unwrap();
    let period = queue
        .enqueue(job("b").unique_for("daily", Duration::from_millis(700)))
        .await
        .unwrap();
    assert_eq!(
        queue.enqueue(job("a").unique_key("live")).await.unwrap(),
        live
    );
    assert_eq!(
        queue
            .enqueue_unique(job("a").unique_key("live"))
            .await
            .unwrap(),
        EnqueueOutcome::Duplicate(live)
    );
    claim_all(&mut conn).await;
    finish(&mut conn, live, 1, Outcome::Succeeded).await;
    finish(&mut conn, period, 1, Outcome::Succeeded).await;
    let again = queue.enqueue(job("a").unique_key("live")).await.unwrap();
    assert_ne!(again, live, "the key was freed when its job ended");
    let within = queue
        .enqueue(job("b").unique_for("daily", Duration::from_millis(700)))
        .await
        .unwrap();
    assert_eq!(within, period, "the period is not over");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = queue
        .enqueue(job("b").unique_for("daily", Duration::from_millis(700)))
        .await
        .unwrap();
    assert_ne!(after, period, "the period is over");
    let err = queue.enqueue(job("c").unique_key("")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "unique_key",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_suspended_job_resumes_by_signal_or_at_its_deadline() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let signalled = queue.enqueue(job("s").max_attempts(1)).await.unwrap();
    let resumed = queue.enqueue(job("r").max_attempts(1)).await.unwrap();
    let failed = queue.enqueue(job("f").max_attempts(1)).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    claim_all(&mut conn).await;
    let until = Utc::now() + chrono::Duration::seconds(60);
    let suspend = |signal: &str, on_timeout| Outcome::Suspend {
        until,
        signal: signal.to_owned(),
        on_timeout,
    };
    finish(
        &mut conn,
        signalled,
        1,
        suspend("approved", OnTimeout::Fail),
    )
    .await;
    finish(&mut conn, resumed, 1, suspend("never", OnTimeout::Resume)).await;
    finish(&mut conn, failed, 1, suspend("never", OnTimeout::Fail)).await;
    for id in [signalled, resumed, failed] {
        assert_eq!(state(&queue, id).await, JobState::Suspended);
    }
    assert!(claim_all(&mut conn).await.is_empty());

    assert_eq!(queue.signal("approved").await.unwrap(), 1);
    assert_eq!(queue.signal("nobody-waits").await.unwrap(), 0);
    let row = queue.get(signalled).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Pending);
    assert_eq!(row.max_attempts, 2, "the suspension used up no try");
    assert_eq!(claim_all(&mut conn).await, vec![signalled]);
    finish(&mut conn, signalled, 2, Outcome::Succeeded).await;

    let mut changed = support::each_partition!(JOB_PARTITIONS, |p| suspension_timeout::run_once(
        &mut conn, p, None
    ));
    assert_eq!(changed, 0, "the deadline has not passed");
    changed += support::each_partition!(JOB_PARTITIONS, |p| suspension_timeout::run_once(
        &mut conn,
        p,
        later(61)
    ));
    assert_eq!(changed, 2);
    assert_eq!(state(&queue, resumed).await, JobState::Pending);
    let row = queue.get(failed).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Dead);
    assert!(
        row.last_error.unwrap().contains("without a signal"),
        "the error says why"
    );
    let attempts: Vec<(i64, String)> = sqlx::query_as(
        "SELECT job_id, outcome FROM trawl_jobs.job_attempts WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(signalled)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let outcomes: Vec<&str> = attempts.iter().map(|(_, o)| o.as_str()).collect();
    assert_eq!(outcomes, ["suspended", "succeeded"]);
}
