//! `claim` and `complete`, the statements every worker runs, against the
//! real PostgreSQL, with the clock pinned.

mod support;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use trawl_jobs::{Completion, JobState, NewJob, Outcome, Priority, claim, complete};

const LEASE: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(60);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

#[tokio::test]
async fn claims_by_priority_then_run_at_then_id_and_never_twice() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let at = |secs| t0() - chrono::Duration::seconds(secs);
    let low = queue
        .enqueue(
            NewJob::new("k", 1.into())
                .priority(Priority::LOW)
                .run_at(at(50)),
        )
        .await
        .unwrap();
    let late = queue
        .enqueue(NewJob::new("k", 2.into()).run_at(at(10)))
        .await
        .unwrap();
    let early = queue
        .enqueue(NewJob::new("k", 3.into()).run_at(at(20)))
        .await
        .unwrap();
    let urgent = queue
        .enqueue(
            NewJob::new("k", 4.into())
                .priority(Priority::CRITICAL)
                .run_at(at(1)),
        )
        .await
        .unwrap();
    let future = queue
        .enqueue(NewJob::new("k", 5.into()).run_at(t0() + chrono::Duration::seconds(5)))
        .await
        .unwrap();
    queue
        .enqueue(NewJob::new("k", 6.into()).queue("other"))
        .await
        .unwrap();

    let mut conn = db.pool.acquire().await.unwrap();
    let first = claim(&mut conn, "w1", "default", 3, LEASE, TIMEOUT, Some(t0()))
        .await
        .unwrap();
    let ids: Vec<i64> = first.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![urgent, early, late]);
    assert!(first.iter().all(|j| j.attempt == 1 && j.timeout == TIMEOUT));
    assert_eq!(
        first[0].lease_expires_at,
        t0() + chrono::Duration::seconds(30)
    );

    let second = claim(&mut conn, "w2", "default", 10, LEASE, TIMEOUT, Some(t0()))
        .await
        .unwrap();
    assert_eq!(second.iter().map(|j| j.id).collect::<Vec<_>>(), vec![low]);
    let later = t0() + chrono::Duration::seconds(6);
    let third = claim(&mut conn, "w2", "default", 10, LEASE, TIMEOUT, Some(later))
        .await
        .unwrap();
    assert_eq!(third.iter().map(|j| j.id).collect::<Vec<_>>(), vec![future]);
    let row = queue.get(urgent).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Running);
    assert_eq!(row.lease_owner.as_deref(), Some("w1"));
}

#[tokio::test]
async fn concurrent_claims_share_out_the_jobs() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let jobs: Vec<NewJob> = (0..400).map(|i| NewJob::new("k", i.into())).collect();
    queue.enqueue_many(jobs).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..100 {
                let mut conn = pool.acquire().await.unwrap();
                let batch = claim(
                    &mut conn,
                    &format!("w{w}"),
                    "default",
                    7,
                    LEASE,
                    TIMEOUT,
                    None,
                )
                .await
                .unwrap();
                if batch.is_empty() {
                    break;
                }
                got.extend(batch.into_iter().map(|j| j.id));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "a job was claimed twice");
    assert_eq!(all.len(), 400);
}

#[tokio::test]
async fn completions_finish_retry_or_bury_and_leave_one_attempt_row_each() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let ids = queue
        .enqueue_many((0..5).map(|i| NewJob::new("k", i.into())).collect())
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let claimed = claim(&mut conn, "w1", "default", 5, LEASE, TIMEOUT, Some(t0()))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5);
    let outcomes = [
        Outcome::Succeeded,
        Outcome::Skipped("nothing to do".into()),
        Outcome::Retry {
            delay: Duration::from_secs(10),
            error: "flaky".into(),
        },
        Outcome::Dead("bad input".into()),
        Outcome::Cancelled,
    ];
    let completions: Vec<Completion> = ids
        .iter()
        .zip(outcomes)
        .map(|(&id, outcome)| Completion {
            id,
            attempt: 1,
            outcome,
        })
        .collect();
    let applied = complete(&mut conn, "w1", &completions, Some(t0()))
        .await
        .unwrap();
    assert_eq!(applied.len(), 5);

    let state = |id| {
        let queue = queue.clone();
        async move { queue.get(id).await.unwrap().unwrap() }
    };
    assert_eq!(state(ids[0]).await.state, JobState::Succeeded);
    assert_eq!(state(ids[1]).await.state, JobState::Succeeded);
    let retried = state(ids[2]).await;
    assert_eq!(retried.state, JobState::Pending);
    assert_eq!(retried.run_at, t0() + chrono::Duration::seconds(10));
    assert_eq!(retried.last_error.as_deref(), Some("flaky"));
    let dead = state(ids[3]).await;
    assert_eq!(
        (dead.state, dead.last_error.as_deref()),
        (JobState::Dead, Some("bad input"))
    );
    assert_eq!(state(ids[4]).await.state, JobState::Cancelled);

    let attempts: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT job_id, outcome, error FROM trawl_jobs.job_attempts ORDER BY job_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(
        outcomes,
        ["succeeded", "skipped", "retry", "dead", "cancelled"]
    );
    assert_eq!(attempts[1].2.as_deref(), Some("nothing to do"));

    // The same completion again, or one from a worker that lost the lease,
    // changes nothing.
    let again = complete(&mut conn, "w1", &completions, Some(t0()))
        .await
        .unwrap();
    assert!(again.is_empty());
    let reclaimed = claim(
        &mut conn,
        "w2",
        "default",
        5,
        LEASE,
        TIMEOUT,
        Some(t0() + chrono::Duration::seconds(11)),
    )
    .await
    .unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].attempt, 2);
    let stale = Completion {
        id: ids[2],
        attempt: 2,
        outcome: Outcome::Succeeded,
    };
    assert!(
        complete(&mut conn, "w1", std::slice::from_ref(&stale), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        complete(&mut conn, "w2", &[stale], None).await.unwrap(),
        vec![ids[2]]
    );
}
