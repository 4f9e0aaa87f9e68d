//! Periodic jobs against the real PostgreSQL: three nodes running the same
//! schedules enqueue each period's job once, and a leadership signal keeps
//! a follower from enqueueing.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;
use trawl_jobs::{JobQueue, NewJob, Periodic, PeriodicJob, Schedule};

fn jobs() -> Vec<PeriodicJob> {
    vec![
        PeriodicJob::new(
            "tick",
            Schedule::every(Duration::from_secs(1)).unwrap(),
            NewJob::new("tick", serde_json::json!({})),
        ),
        PeriodicJob::new(
            "cron",
            Schedule::cron("* * * * * *").unwrap(),
            NewJob::new("cron", serde_json::json!({})),
        ),
    ]
}

/// Jobs of `kind` per unique key (one key per period).
async fn per_period(queue: &JobQueue, kind: &str) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT unique_key, count(*) FROM trawl_jobs.jobs WHERE kind = $1 GROUP BY unique_key",
    )
    .bind(kind)
    .fetch_all(queue.pool())
    .await
    .unwrap();
    rows.into_iter().collect()
}

#[tokio::test]
async fn three_nodes_enqueue_each_period_once() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let nodes: Vec<Periodic> = (0..3)
        .map(|_| Periodic::start(JobQueue::new(db.pool.clone()), jobs(), None).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let enqueued: u64 = nodes.iter().map(Periodic::enqueued).sum();
    for node in nodes {
        node.shutdown().await;
    }
    let mut total = 0;
    for kind in ["tick", "cron"] {
        let periods = per_period(&queue, kind).await;
        assert!(
            periods.len() >= 3,
            "{kind}: 3 periods or more in 3.3 s: {periods:?}"
        );
        assert!(
            periods.values().all(|&n| n == 1),
            "{kind}: one job per period: {periods:?}"
        );
        total += periods.len() as u64;
    }
    assert_eq!(enqueued, total, "the nodes' counts add up to the jobs");
}

#[tokio::test]
async fn only_the_leader_enqueues() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let (lead, leader) = watch::channel(false);
    let node = Periodic::start(JobQueue::new(db.pool.clone()), jobs(), Some(leader)).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        per_period(&queue, "tick").await.is_empty(),
        "a follower enqueues nothing"
    );
    lead.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // At once: the current period (and the next, if it began meanwhile).
    let periods = per_period(&queue, "tick").await.len();
    assert!(
        (1..=2).contains(&periods),
        "the new leader enqueues at once: {periods}"
    );
    node.shutdown().await;

    let err = Periodic::start(
        queue.clone(),
        vec![jobs().remove(0), jobs().remove(0)],
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("'tick'"), "{err}");
}
