//! `JobQueue` against the real PostgreSQL: the schema and every operation.

mod support;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use trawl_jobs::{CancelOutcome, Job, JobFilter, JobQueue, JobState, NewJob, Priority};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Resize {
    image: String,
    width: u32,
}

impl Job for Resize {
    const KIND: &'static str = "resize";

    fn priority(&self) -> Priority {
        Priority::HIGH
    }

    fn max_attempts(&self) -> u32 {
        3
    }
}

#[tokio::test]
async fn migrate_creates_the_schema_once_and_keeps_its_table_apart() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    queue.migrate().await.expect("migrating twice is harmless");
    let table: Option<String> = sqlx::query_scalar(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = '_sqlx_migrations'",
    )
    .fetch_optional(&db.pool)
    .await
    .unwrap();
    assert_eq!(table.as_deref(), Some("trawl_jobs"));
    let partitions: i64 =
        sqlx::query_scalar("SELECT value FROM trawl_jobs.settings WHERE name = 'job_partitions'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(partitions, 16);
}

#[tokio::test]
async fn enqueue_keeps_what_the_job_says_and_get_reads_it_back() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let job = Resize {
        image: "cat.png".into(),
        width: 640,
    };
    let id = queue
        .enqueue(NewJob::from_job(&job).unwrap().tags(["thumbs"]))
        .await
        .unwrap();
    let row = queue.get(id).await.unwrap().expect("the job exists");
    assert_eq!(row.kind, "resize");
    assert_eq!(row.state, JobState::Pending);
    assert_eq!(row.priority, Priority::HIGH);
    assert_eq!(row.max_attempts, 3);
    assert_eq!(row.tags, vec!["thumbs".to_owned()]);
    assert_eq!(serde_json::from_value::<Resize>(row.payload).unwrap(), job);
    let partition: i16 = sqlx::query_scalar("SELECT partition FROM trawl_jobs.jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(i64::from(partition), id % 16);
    assert!(queue.get(id + 1000).await.unwrap().is_none());
}

#[tokio::test]
async fn enqueue_many_returns_ids_in_order_in_one_transaction() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let jobs: Vec<NewJob> = (0..25_000)
        .map(|i| NewJob::new("count", serde_json::json!({ "i": i })))
        .collect();
    let ids = queue.enqueue_many(jobs).await.unwrap();
    assert_eq!(ids.len(), 25_000);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let last = queue.get(ids[24_999]).await.unwrap().unwrap();
    assert_eq!(last.payload["i"], 24_999);

    // Inside a caller's transaction that rolls back, nothing is enqueued.
    let mut tx = db.pool.begin().await.unwrap();
    JobQueue::enqueue_in(&mut tx, NewJob::new("ghost", serde_json::json!(null)))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let page = queue
        .list_jobs(&JobFilter {
            kind: Some("ghost".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert!(page.jobs.is_empty());
}

#[tokio::test]
async fn invalid_jobs_are_refused_before_the_database() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let err = queue
        .enqueue(NewJob::new("k", serde_json::json!({})).max_attempts(0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_attempts"), "{err}");
}

#[tokio::test]
async fn list_jobs_filters_and_pages_by_id() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut jobs = Vec::new();
    for i in 0..30 {
        let kind = if i % 3 == 0 { "a" } else { "b" };
        jobs.push(NewJob::new(kind, serde_json::json!(i)).queue(if i < 10 { "q1" } else { "q2" }));
    }
    queue.enqueue_many(jobs).await.unwrap();
    let mut seen = Vec::new();
    let mut filter = JobFilter {
        kind: Some("b".into()),
        limit: Some(7),
        ..JobFilter::default()
    };
    for _ in 0..10 {
        let page = queue.list_jobs(&filter).await.unwrap();
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen.len(), 20);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let q1 = queue
        .list_jobs(&JobFilter {
            queue: Some("q1".into()),
            state: Some(JobState::Pending),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(q1.jobs.len(), 10);
    assert_eq!(q1.next_cursor, None);
}

#[tokio::test]
async fn cancel_retry_statistics_and_prune() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let a = queue
        .enqueue(NewJob::new("k", serde_json::json!(1)))
        .await
        .unwrap();
    let b = queue
        .enqueue(NewJob::new("k", serde_json::json!(2)).delay(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(queue.cancel(a).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(
        queue.cancel(a).await.unwrap(),
        CancelOutcome::AlreadyFinished
    );
    assert_eq!(
        queue.cancel(a + b + 100).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        queue.get(a).await.unwrap().unwrap().state,
        JobState::Cancelled
    );

    let stats = queue.statistics().await.unwrap();
    assert_eq!(stats.len(), 1);
    assert!(stats[0].by_state.contains(&(JobState::Cancelled, 1)));
    assert!(stats[0].by_state.contains(&(JobState::Pending, 1)));
    assert_eq!(
        stats[0].oldest_pending_age, None,
        "the pending job is scheduled later"
    );

    assert!(queue.retry(a).await.unwrap());
    assert!(
        !queue.retry(b).await.unwrap(),
        "a pending job is not retried"
    );
    let again = queue.get(a).await.unwrap().unwrap();
    assert_eq!((again.state, again.attempt), (JobState::Pending, 0));

    assert_eq!(queue.cancel(a).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(queue.prune(Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(queue.prune(Duration::ZERO).await.unwrap(), 1);
    assert!(queue.get(a).await.unwrap().is_none());
}
