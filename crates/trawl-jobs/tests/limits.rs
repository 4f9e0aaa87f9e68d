//! Limits against the real PostgreSQL: a queue's fleet-wide cap, caps per
//! concurrency key, budgets and their reset, and the depth limit that
//! holds producers back while workers drain.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use trawl_jobs::reconcile::{BUDGET_PARTITIONS, budget_reset};
use trawl_jobs::{
    Budget, BudgetScope, Error, JobContext, JobQueue, JobResult, NewJob, OnFull, QueueLimits,
    WorkerConfig, WorkerHandle, WorkerManager, Workers, claim, worker_fn,
};

use support::db::TestDb;

const LEASE: Duration = Duration::from_secs(30);

fn config(id: &str, slots: usize) -> WorkerConfig {
    WorkerConfig {
        worker_id: id.to_owned(),
        max_concurrent_jobs: slots,
        lease: Duration::from_secs(4),
        heartbeat_interval: Duration::from_millis(200),
        poll_interval: Duration::from_millis(50),
        seed: Some(3),
        ..WorkerConfig::default()
    }
}

async fn start(db: &TestDb, config: WorkerConfig, workers: Workers) -> WorkerHandle {
    let pool = PgPoolOptions::new()
        .max_connections(config.connections_needed() + 1)
        .connect_with(db.options())
        .await
        .unwrap();
    WorkerManager::new(pool, config, workers)
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// What the workers saw: jobs running now, the most at once, and each
/// job's (id, start, end) in the order they started.
#[derive(Default)]
struct Seen {
    running: AtomicUsize,
    most: AtomicUsize,
    runs: Mutex<Vec<(i64, Instant, Option<Instant>)>>,
}

/// Workers for kind "work" whose jobs take `pause`, reporting to `seen`.
fn watched(seen: Arc<Seen>, pause: Duration) -> Workers {
    let mut workers = Workers::new();
    workers.register_raw(
        "work",
        worker_fn(move |ctx: JobContext, _payload: serde_json::Value| {
            let seen = seen.clone();
            async move {
                let now = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
                seen.most.fetch_max(now, Ordering::SeqCst);
                seen.runs
                    .lock()
                    .unwrap()
                    .push((ctx.id(), Instant::now(), None));
                tokio::time::sleep(pause).await;
                seen.running.fetch_sub(1, Ordering::SeqCst);
                let mut runs = seen.runs.lock().unwrap();
                if let Some(run) = runs.iter_mut().find(|r| r.0 == ctx.id()) {
                    run.2 = Some(Instant::now());
                }
                JobResult::Success
            }
        }),
    );
    workers
}

async fn wait_done(handles: &[WorkerHandle], jobs: u64, limit: Duration) {
    let started = Instant::now();
    while handles.iter().map(|h| h.stats().succeeded).sum::<u64>() < jobs {
        assert!(started.elapsed() < limit, "{jobs} jobs within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn shutdown(handles: Vec<WorkerHandle>) {
    for handle in handles {
        handle.shutdown(Duration::from_secs(5)).await;
    }
}

fn work(n: i64) -> NewJob {
    NewJob::new("work", n.into())
}

#[tokio::test]
async fn a_queue_cap_holds_across_workers() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let limits = QueueLimits {
        max_running: Some(3),
        ..QueueLimits::default()
    };
    queue.set_queue_limits("default", &limits).await.unwrap();
    assert_eq!(queue.queue_limits("default").await.unwrap(), limits);
    queue
        .enqueue_many((0..30).map(work).collect())
        .await
        .unwrap();
    let seen = Arc::new(Seen::default());
    let mut handles = Vec::new();
    for m in 0..2 {
        let workers = watched(seen.clone(), Duration::from_millis(60));
        handles.push(start(&db, config(&format!("cap-{m}"), 4), workers).await);
    }
    wait_done(&handles, 30, Duration::from_secs(30)).await;
    shutdown(handles).await;
    assert_eq!(seen.most.load(Ordering::SeqCst), 3, "3 at once, never more");
}

#[tokio::test]
async fn a_key_capped_at_one_runs_its_jobs_strictly_in_order() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut jobs = Vec::new();
    for n in 0..50 {
        jobs.push(work(n).concurrency_key("tenant-1", 1));
        // Jobs without the key run alongside.
        if n % 5 == 0 {
            jobs.push(NewJob::new("free", n.into()));
        }
    }
    let ids = queue.enqueue_many(jobs).await.unwrap();
    let keyed: Vec<i64> = ids
        .iter()
        .copied()
        .enumerate()
        .filter(|(i, _)| i % 6 != 1)
        .map(|(_, id)| id)
        .collect();
    assert_eq!(keyed.len(), 50);
    let seen = Arc::new(Seen::default());
    let mut handles = Vec::new();
    for m in 0..4 {
        let mut workers = watched(seen.clone(), Duration::from_millis(5));
        workers.register_raw(
            "free",
            worker_fn(|_ctx: JobContext, _payload: serde_json::Value| async { JobResult::Success }),
        );
        handles.push(start(&db, config(&format!("key-{m}"), 4), workers).await);
    }
    wait_done(&handles, 60, Duration::from_secs(60)).await;
    shutdown(handles).await;
    let runs = seen.runs.lock().unwrap();
    let order: Vec<i64> = runs.iter().map(|r| r.0).collect();
    assert_eq!(order, keyed, "started in id order");
    for pair in runs.windows(2) {
        let ended = pair[0].2.expect("finished");
        assert!(
            ended <= pair[1].1,
            "job {} overlapped {}",
            pair[0].0,
            pair[1].0
        );
    }
}

#[tokio::test]
async fn a_budget_of_ten_per_second_holds_over_three_windows() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    queue
        .set_budget(&Budget::new(
            BudgetScope::Queue("default".into()),
            10,
            Duration::from_secs(1),
        ))
        .await
        .unwrap();
    queue
        .enqueue_many((0..35).map(work).collect())
        .await
        .unwrap();
    let window_start: DateTime<Utc> =
        sqlx::query_scalar("SELECT window_start FROM trawl_jobs.budgets")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let seen = Arc::new(Seen::default());
    let handle = start(&db, config("budget", 20), watched(seen, Duration::ZERO)).await;
    wait_done(std::slice::from_ref(&handle), 30, Duration::from_secs(10)).await;
    shutdown(vec![handle]).await;
    // Claim times, on the database's clock, per window of the budget.
    let starts: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT started_at FROM trawl_jobs.job_attempts")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut per_window = std::collections::BTreeMap::new();
    for at in starts {
        let window = (at - window_start).num_milliseconds().div_euclid(1000);
        *per_window.entry(window).or_insert(0) += 1;
    }
    assert!(
        per_window.values().all(|&n| n <= 10),
        "at most 10 per window: {per_window:?}"
    );
    assert!(
        per_window.len() >= 3,
        "the jobs spread over 3 windows or more: {per_window:?}"
    );
}

#[tokio::test]
async fn kind_budgets_and_costs_and_the_reset_tick() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let window = Duration::from_secs(10);
    queue
        .set_budget(&Budget::new(BudgetScope::Kind("bill".into()), 5, window))
        .await
        .unwrap();
    let mut jobs: Vec<NewJob> = (0..4)
        .map(|n| NewJob::new("bill", n.into()).cost(2))
        .collect();
    jobs.extend((0..3).map(|n| NewJob::new("other", n.into())));
    queue.enqueue_many(jobs).await.unwrap();
    let start: DateTime<Utc> = sqlx::query_scalar("SELECT window_start FROM trawl_jobs.budgets")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let at = |secs: i64| Some(start + chrono::Duration::seconds(secs));
    let mut conn = db.pool.acquire().await.unwrap();
    let kinds = |jobs: &[trawl_jobs::ClaimedJob]| {
        let mut kinds: Vec<String> = jobs.iter().map(|j| j.kind.clone()).collect();
        kinds.sort();
        kinds
    };
    let first = claim(&mut conn, "w", "default", 10, LEASE, LEASE, at(1))
        .await
        .unwrap();
    assert_eq!(
        kinds(&first),
        ["bill", "bill", "other", "other", "other"],
        "2 × cost 2 ≤ 5"
    );
    let second = claim(&mut conn, "w", "default", 10, LEASE, LEASE, at(2))
        .await
        .unwrap();
    assert!(
        second.is_empty(),
        "the kind's budget is spent for this window"
    );
    let mut reset = support::each_partition!(BUDGET_PARTITIONS, |p| budget_reset::run_once(
        &mut conn,
        p,
        at(5)
    ));
    assert_eq!(reset, 0, "the window is not over");
    reset += support::each_partition!(BUDGET_PARTITIONS, |p| budget_reset::run_once(
        &mut conn,
        p,
        at(11)
    ));
    assert_eq!(reset, 1);
    let (used, new_start): (i64, DateTime<Utc>) =
        sqlx::query_as("SELECT used, window_start FROM trawl_jobs.budgets")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(used, 0);
    assert_eq!(
        new_start,
        start + chrono::Duration::seconds(10),
        "windows without gaps"
    );
    let third = claim(&mut conn, "w", "default", 10, LEASE, LEASE, at(12))
        .await
        .unwrap();
    assert_eq!(kinds(&third), ["bill", "bill"]);
    assert!(
        queue
            .remove_budget(&BudgetScope::Kind("bill".into()))
            .await
            .unwrap()
    );
    let err = queue
        .set_budget(&Budget::new(BudgetScope::Queue(String::new()), 5, window))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "budget",
                ..
            }
        ),
        "{err}"
    );
}

async fn pending(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM trawl_jobs.jobs WHERE state = 'pending'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_full_queue_holds_its_producer_while_workers_drain() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    queue
        .set_queue_limits(
            "default",
            &QueueLimits {
                max_depth: Some(20),
                on_full: OnFull::Wait(Duration::from_secs(20)),
                ..QueueLimits::default()
            },
        )
        .await
        .unwrap();
    let producer = {
        let queue = JobQueue::new(db.pool.clone());
        tokio::spawn(async move {
            for n in 0..100 {
                queue.enqueue(work(n)).await.unwrap();
            }
        })
    };
    // The producer fills the queue and waits.
    let started = Instant::now();
    while pending(&db.pool).await < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the queue fills"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        pending(&db.pool).await,
        20,
        "the producer waits at the limit"
    );
    assert!(!producer.is_finished());

    let seen = Arc::new(Seen::default());
    let handle = start(
        &db,
        config("drain", 2),
        watched(seen, Duration::from_millis(5)),
    )
    .await;
    let mut most = 0;
    while !producer.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the producer finishes"
        );
        most = most.max(pending(&db.pool).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    producer.await.unwrap();
    wait_done(std::slice::from_ref(&handle), 100, Duration::from_secs(30)).await;
    shutdown(vec![handle]).await;
    assert!(most <= 20, "pending never passed the limit: {most}");

    // The other policy fails at once.
    queue
        .set_queue_limits(
            "strict",
            &QueueLimits {
                max_depth: Some(2),
                on_full: OnFull::Fail,
                ..QueueLimits::default()
            },
        )
        .await
        .unwrap();
    for n in 0..2 {
        queue.enqueue(work(n).queue("strict")).await.unwrap();
    }
    let refused = Instant::now();
    let err = queue.enqueue(work(3).queue("strict")).await.unwrap_err();
    assert!(refused.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(&err, Error::QueueFull { queue, depth: 2, limit: 2 } if queue == "strict"),
        "{err}"
    );
}
