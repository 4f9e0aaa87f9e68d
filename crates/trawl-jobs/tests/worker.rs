//! `WorkerManager` against the real PostgreSQL: every way an attempt ends,
//! bad input, priorities, delays, wake-ups, cancellation, timeouts,
//! metrics and health, shutdown with grace, and several managers on one
//! queue.

mod support;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use trawl_jobs::{
    CancelOutcome, Job, JobContext, JobQueue, JobResult, JobState, NewJob, OnTimeout, Priority,
    StopReason, Worker, WorkerConfig, WorkerHandle, WorkerManager, Workers, worker_fn,
};
use trawl_retry::RetryPolicy;

use support::db::TestDb;

/// Short leases and quick retries, so that tests take seconds.
fn config(id: &str) -> WorkerConfig {
    WorkerConfig {
        worker_id: id.to_owned(),
        lease: Duration::from_secs(4),
        heartbeat_interval: Duration::from_millis(200),
        poll_interval: Duration::from_millis(200),
        retry: RetryPolicy {
            max_attempts: u32::MAX,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            jitter_pct: 0,
        },
        reconnect: RetryPolicy {
            max_attempts: u32::MAX,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
            jitter_pct: 20,
        },
        seed: Some(7),
        // Some tests fail every first attempt on purpose: the breaker has
        // tests of its own (tests/breaker.rs).
        breaker: None,
        ..WorkerConfig::default()
    }
}

/// A pool of its own for one manager.
async fn pool(db: &TestDb, max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .connect_with(db.options())
        .await
        .expect("connect")
}

async fn start(db: &TestDb, config: WorkerConfig, workers: Workers) -> WorkerHandle {
    let pool = pool(db, config.connections_needed() + 1).await;
    WorkerManager::new(pool, config, workers)
        .expect("valid manager")
        .start()
        .await
        .expect("start")
}

/// Polls `check` every 20 ms until it holds; panics after `limit`.
async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn state(queue: &JobQueue, id: i64) -> JobState {
    queue.get(id).await.unwrap().expect("job exists").state
}

async fn wait_state(queue: &JobQueue, id: i64, want: JobState, limit: Duration) {
    wait_until(limit, &format!("job {id} to be {want}"), || async {
        state(queue, id).await == want
    })
    .await;
}

/// (attempt, outcome, error) of a job's attempts, in order.
async fn attempts(pool: &PgPool, id: i64) -> Vec<(i32, String, Option<String>)> {
    sqlx::query_as(
        "SELECT attempt, outcome, error FROM trawl_jobs.job_attempts WHERE job_id = $1
         ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn raw(kind: &str, payload: serde_json::Value) -> NewJob {
    NewJob::new(kind, payload)
}

#[tokio::test]
async fn every_job_result_is_recorded_as_it_says() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let until = Utc::now() + chrono::Duration::hours(1);
    let mut workers = Workers::new();
    workers
        .register_raw("ok", worker_fn(|_, _| async { JobResult::Success }))
        .register_raw(
            "flaky",
            worker_fn(|ctx: JobContext, _| async move {
                if ctx.attempt() == 1 {
                    JobResult::Retry {
                        after: Some(Duration::from_millis(50)),
                        error: "try again".into(),
                    }
                } else {
                    JobResult::Success
                }
            }),
        )
        .register_raw(
            "hopeless",
            worker_fn(|_, _| async { JobResult::retry("still broken") }),
        )
        .register_raw(
            "bad",
            worker_fn(|_, _| async { JobResult::fail("refused") }),
        )
        .register_raw(
            "lazy",
            worker_fn(|_, _| async { JobResult::skipped("nothing to do") }),
        )
        .register_raw(
            "waiter",
            worker_fn(move |_, _| async move {
                JobResult::Suspend {
                    until,
                    signal: "approval-7".into(),
                    on_timeout: OnTimeout::Fail,
                }
            }),
        );
    let ids = queue
        .enqueue_many(vec![
            raw("ok", 1.into()),
            raw("flaky", 2.into()),
            raw("hopeless", 3.into()).max_attempts(3),
            raw("bad", 4.into()),
            raw("lazy", 5.into()),
            raw("waiter", 6.into()),
        ])
        .await
        .unwrap();
    let handle = start(&db, config("w1"), workers).await;
    let limit = Duration::from_secs(15);
    wait_state(&queue, ids[0], JobState::Succeeded, limit).await;
    wait_state(&queue, ids[1], JobState::Succeeded, limit).await;
    wait_state(&queue, ids[2], JobState::Dead, limit).await;
    wait_state(&queue, ids[3], JobState::Dead, limit).await;
    wait_state(&queue, ids[4], JobState::Succeeded, limit).await;
    wait_state(&queue, ids[5], JobState::Suspended, limit).await;

    let outcomes = |rows: Vec<(i32, String, Option<String>)>| {
        rows.into_iter()
            .map(|(a, o, e)| (a, o, e.unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        outcomes(attempts(&db.pool, ids[0]).await),
        [(1, "succeeded".into(), String::new())]
    );
    assert_eq!(
        outcomes(attempts(&db.pool, ids[1]).await),
        [
            (1, "retry".into(), "try again".into()),
            (2, "succeeded".into(), String::new())
        ]
    );
    assert_eq!(
        outcomes(attempts(&db.pool, ids[2]).await),
        [
            (1, "retry".into(), "still broken".into()),
            (2, "retry".into(), "still broken".into()),
            (3, "dead".into(), "still broken".into())
        ]
    );
    let dead = queue.get(ids[2]).await.unwrap().unwrap();
    assert_eq!(dead.last_error.as_deref(), Some("still broken"));
    let refused = queue.get(ids[3]).await.unwrap().unwrap();
    assert_eq!(
        (refused.attempt, refused.last_error.as_deref()),
        (1, Some("refused"))
    );
    assert_eq!(
        outcomes(attempts(&db.pool, ids[4]).await),
        [(1, "skipped".into(), "nothing to do".into())]
    );
    assert_eq!(
        outcomes(attempts(&db.pool, ids[5]).await),
        [(1, "suspended".into(), String::new())]
    );
    let (suspended_until, signal, on_timeout, owner): (
        Option<chrono::DateTime<Utc>>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT suspended_until, signal_key, on_timeout, lease_owner FROM trawl_jobs.jobs
         WHERE id = $1",
    )
    .bind(ids[5])
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        suspended_until.map(|t| t.timestamp_micros()),
        Some(until.timestamp_micros())
    );
    assert_eq!(signal.as_deref(), Some("approval-7"));
    assert_eq!(on_timeout.as_deref(), Some("fail"));
    assert_eq!(owner, None);

    let stats = handle.stats();
    assert_eq!(
        (
            stats.succeeded,
            stats.retried,
            stats.dead,
            stats.skipped,
            stats.suspended
        ),
        (2, 3, 2, 1, 1)
    );
    let report = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.released, report.unrecorded), (0, 0));
    let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM trawl_jobs.workers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(registered, 0, "a stopped worker leaves the registry");
}

#[derive(Debug, Serialize, Deserialize)]
struct Resize {
    width: u32,
}

impl Job for Resize {
    const KIND: &'static str = "resize";
}

struct Resizer {
    widths: Mutex<Vec<u32>>,
}

impl Worker<Resize> for Arc<Resizer> {
    async fn process(&self, ctx: &JobContext, job: Resize) -> JobResult {
        ctx.record_metric("pixels", f64::from(job.width));
        self.widths.lock().unwrap().push(job.width);
        JobResult::Success
    }

    fn health_check(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn bad_payloads_and_unknown_kinds_are_dead_letters_and_metrics_add_up() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let resizer = Arc::new(Resizer {
        widths: Mutex::new(Vec::new()),
    });
    let mut workers = Workers::new();
    workers.register::<Resize, _>(resizer.clone());
    let good = queue
        .enqueue(NewJob::from_job(&Resize { width: 640 }).unwrap())
        .await
        .unwrap();
    let good2 = queue
        .enqueue(NewJob::from_job(&Resize { width: 320 }).unwrap())
        .await
        .unwrap();
    let bad = queue
        .enqueue(raw("resize", serde_json::json!({ "width": "wide" })))
        .await
        .unwrap();
    let unknown = queue
        .enqueue(raw("transcode", serde_json::json!({})))
        .await
        .unwrap();
    let handle = start(&db, config("w1"), workers).await;
    let limit = Duration::from_secs(10);
    for id in [good, good2] {
        wait_state(&queue, id, JobState::Succeeded, limit).await;
    }
    wait_state(&queue, bad, JobState::Dead, limit).await;
    wait_state(&queue, unknown, JobState::Dead, limit).await;

    let bad_row = queue.get(bad).await.unwrap().unwrap();
    let error = bad_row.last_error.unwrap();
    assert!(
        error.contains("cannot deserialize the payload of a 'resize' job")
            && error.contains("invalid type"),
        "{error}"
    );
    assert_eq!(bad_row.attempt, 1, "a bad payload is not retried");
    let unknown_row = queue.get(unknown).await.unwrap().unwrap();
    let error = unknown_row.last_error.unwrap();
    assert!(error.contains("no worker is registered for job kind 'transcode'"));

    let mut widths = resizer.widths.lock().unwrap().clone();
    widths.sort_unstable();
    assert_eq!(widths, [320, 640]);
    let metrics = handle.metrics();
    assert_eq!(metrics.len(), 1);
    let pixels = &metrics[0];
    assert_eq!(
        (pixels.kind.as_str(), pixels.name.as_str()),
        ("resize", "pixels")
    );
    assert_eq!(
        (pixels.count, pixels.sum, pixels.min, pixels.max),
        (2, 960.0, 320.0, 640.0)
    );

    let health = handle.health();
    assert!(health.connected && health.claiming);
    assert!(!health.healthy, "the worker's health_check says no");
    assert_eq!(health.workers, [("resize".to_owned(), false)]);
    assert!(health.last_heartbeat.is_some());
    let healthy: bool = sqlx::query_scalar("SELECT healthy FROM trawl_jobs.workers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!healthy, "the registry row carries the health");
    handle.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_panic_is_a_retried_failure_and_the_manager_goes_on() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut workers = Workers::new();
    workers.register_raw(
        "fragile",
        worker_fn(|ctx: JobContext, _| async move {
            if ctx.attempt() == 1 {
                panic!("boom on attempt {}", ctx.attempt());
            }
            JobResult::Success
        }),
    );
    let ids = queue
        .enqueue_many((0..5).map(|i| raw("fragile", i.into())).collect())
        .await
        .unwrap();
    let handle = start(&db, config("w1"), workers).await;
    for &id in &ids {
        wait_state(&queue, id, JobState::Succeeded, Duration::from_secs(10)).await;
        let rows = attempts(&db.pool, id).await;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1, "retry");
        assert_eq!(rows[0].2.as_deref(), Some("panicked: boom on attempt 1"));
        assert_eq!(rows[1].1, "succeeded");
    }
    assert!(handle.health().connected);
    handle.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_attempt_past_its_timeout_is_stopped_and_fails() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let seen: Arc<Mutex<Vec<Option<StopReason>>>> = Arc::default();
    let mut workers = Workers::new();
    let seen2 = seen.clone();
    workers.register_raw(
        "slow",
        worker_fn(move |ctx: JobContext, _| {
            let seen = seen2.clone();
            async move {
                // Work handed to another task watches the token.
                let token = ctx.cancellation().clone();
                let watcher = tokio::spawn(async move {
                    token.cancelled().await;
                });
                tokio::time::sleep(Duration::from_secs(60)).await;
                let _ = watcher.await;
                seen.lock().unwrap().push(ctx.stop_reason());
                JobResult::Success
            }
        }),
    );
    workers.register_raw(
        "watch",
        worker_fn(move |ctx: JobContext, _| async move {
            // Returns as soon as the token fires: too late, the future is
            // dropped at once.
            ctx.cancellation().cancelled().await;
            JobResult::Success
        }),
    );
    let slow = queue
        .enqueue(
            raw("slow", 0.into())
                .timeout(Duration::from_millis(300))
                .max_attempts(2),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let handle = start(&db, config("w1"), workers).await;
    wait_state(&queue, slow, JobState::Dead, Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let rows = attempts(&db.pool, slow).await;
    assert_eq!(rows.len(), 2);
    for (_, outcome, error) in &rows[..1] {
        assert_eq!(outcome, "retry");
        assert_eq!(error.as_deref(), Some("timed out after 300ms"));
    }
    assert_eq!(rows[1].1, "dead");
    assert!(seen.lock().unwrap().is_empty(), "the future was dropped");

    // The default timeout applies to jobs without one.
    handle.shutdown(Duration::from_secs(1)).await;
    let watch = queue
        .enqueue(raw("watch", 0.into()).max_attempts(1))
        .await
        .unwrap();
    let mut workers = Workers::new();
    workers.register_raw(
        "watch",
        worker_fn(|ctx: JobContext, _| async move {
            ctx.cancellation().cancelled().await;
            JobResult::Success
        }),
    );
    let handle = start(
        &db,
        WorkerConfig {
            job_timeout: Duration::from_millis(200),
            ..config("w2")
        },
        workers,
    )
    .await;
    wait_state(&queue, watch, JobState::Dead, Duration::from_secs(10)).await;
    let row = queue.get(watch).await.unwrap().unwrap();
    assert_eq!(row.last_error.as_deref(), Some("timed out after 200ms"));
    handle.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_cancel_reaches_a_running_job_at_the_next_heartbeat() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let started = Arc::new(tokio::sync::Notify::new());
    let reasons: Arc<Mutex<Vec<Option<StopReason>>>> = Arc::default();
    let mut workers = Workers::new();
    let (started2, reasons2) = (started.clone(), reasons.clone());
    workers.register_raw(
        "long",
        worker_fn(move |ctx: JobContext, _| {
            let (started, reasons) = (started2.clone(), reasons2.clone());
            async move {
                let token = ctx.cancellation().clone();
                let watcher = {
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        token.cancelled().await;
                        reasons.lock().unwrap().push(ctx.stop_reason());
                    })
                };
                started.notify_one();
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(watcher);
                JobResult::Success
            }
        }),
    );
    let id = queue.enqueue(raw("long", 0.into())).await.unwrap();
    let handle = start(&db, config("w1"), workers).await;
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the job starts");
    assert_eq!(handle.running(), 1);
    let asked = Instant::now();
    assert_eq!(queue.cancel(id).await.unwrap(), CancelOutcome::Requested);
    wait_state(&queue, id, JobState::Cancelled, Duration::from_secs(10)).await;
    // One heartbeat (200 ms) and a completion.
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    wait_until(Duration::from_secs(5), "the token's watcher", || async {
        !reasons.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(*reasons.lock().unwrap(), [Some(StopReason::Cancelled)]);
    let rows = attempts(&db.pool, id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, "cancelled");
    assert_eq!(handle.stats().cancelled, 1);
    handle.shutdown(Duration::from_secs(1)).await;
}

/// A worker that records the order in which jobs start.
fn recorder(order: Arc<Mutex<Vec<i64>>>) -> impl Worker<serde_json::Value> {
    worker_fn(move |_: JobContext, payload: serde_json::Value| {
        let order = order.clone();
        async move {
            order.lock().unwrap().push(payload.as_i64().unwrap());
            JobResult::Success
        }
    })
}

#[tokio::test]
async fn jobs_run_by_priority_then_age() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let order: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut workers = Workers::new();
    workers.register_raw("p", recorder(order.clone()));
    let ago = |s| Utc::now() - chrono::Duration::seconds(s);
    queue
        .enqueue_many(vec![
            raw("p", 1.into()).priority(Priority::LOW).run_at(ago(50)),
            raw("p", 2.into()).run_at(ago(10)),
            raw("p", 3.into())
                .priority(Priority::CRITICAL)
                .run_at(ago(1)),
            raw("p", 4.into()).run_at(ago(20)),
            raw("p", 5.into()).priority(Priority::HIGH).run_at(ago(5)),
            raw("p", 6.into()).priority(Priority(-7)).run_at(ago(60)),
        ])
        .await
        .unwrap();
    let handle = start(
        &db,
        WorkerConfig {
            max_concurrent_jobs: 1,
            claim_batch: 1,
            ..config("w1")
        },
        workers,
    )
    .await;
    wait_until(Duration::from_secs(10), "six jobs", || async {
        handle.stats().succeeded == 6
    })
    .await;
    assert_eq!(*order.lock().unwrap(), [3, 5, 4, 2, 1, 6]);
    handle.shutdown(Duration::from_secs(1)).await;
}

/// A job id and when it started.
type Started = (i64, chrono::DateTime<Utc>);

#[tokio::test]
async fn a_delayed_job_runs_when_due_and_not_before() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let started: Arc<Mutex<Vec<Started>>> = Arc::default();
    let mut workers = Workers::new();
    let started2 = started.clone();
    workers.register_raw(
        "later",
        worker_fn(move |ctx: JobContext, _| {
            let started = started2.clone();
            async move {
                started.lock().unwrap().push((ctx.id(), Utc::now()));
                JobResult::Success
            }
        }),
    );
    let handle = start(
        &db,
        WorkerConfig {
            poll_interval: Duration::from_millis(100),
            ..config("w1")
        },
        workers,
    )
    .await;
    let now = queue.enqueue(raw("later", 0.into())).await.unwrap();
    let due = Utc::now() + chrono::Duration::milliseconds(1500);
    let later = queue
        .enqueue(raw("later", 1.into()).run_at(due))
        .await
        .unwrap();
    wait_state(&queue, later, JobState::Succeeded, Duration::from_secs(10)).await;
    let started = started.lock().unwrap().clone();
    assert_eq!(started.len(), 2);
    assert_eq!(started[0].0, now);
    let (id, at) = started[1];
    assert_eq!(id, later);
    assert!(at >= due, "started {at}, due {due}");
    assert!(
        at - due < chrono::Duration::milliseconds(1000),
        "started {at}, due {due}: the poll interval is 100 ms"
    );
    handle.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_enqueue_wakes_an_idle_worker_long_before_its_poll_interval() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut workers = Workers::new();
    workers.register_raw(
        "ping",
        worker_fn(move |_: JobContext, _| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Instant::now());
                JobResult::Success
            }
        }),
    );
    let handle = start(
        &db,
        WorkerConfig {
            poll_interval: Duration::from_secs(30),
            ..config("w1")
        },
        workers,
    )
    .await;
    let mut latencies = Vec::new();
    for i in 0..5 {
        // Let the claim loop find the queue empty and go to sleep.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = Instant::now();
        queue.enqueue(raw("ping", i.into())).await.unwrap();
        let began = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("only a notification can wake the worker within 10 s")
            .unwrap();
        latencies.push(began - sent);
    }
    latencies.sort_unstable();
    eprintln!("enqueue to start on an idle worker: {latencies:?}");
    assert!(
        latencies[4] < Duration::from_secs(2),
        "poll interval 30 s, latencies {latencies:?}"
    );
    handle.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn bad_manager_settings_are_refused_up_front() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let mut workers = Workers::new();
    workers.register_raw("k", worker_fn(|_, _| async { JobResult::Success }));
    let small = pool(&db, 2).await;
    let err = WorkerManager::new(small.clone(), config("w1"), workers.clone()).unwrap_err();
    assert!(err.to_string().contains("pool"), "{err}");
    let err = WorkerManager::new(small.clone(), config("w1"), Workers::new()).unwrap_err();
    assert!(err.to_string().contains("workers"), "{err}");
    let err = WorkerManager::new(
        small,
        WorkerConfig {
            heartbeat_interval: Duration::from_secs(3),
            ..config("w1")
        },
        workers,
    )
    .unwrap_err();
    assert!(err.to_string().contains("heartbeat_interval"), "{err}");
}

#[tokio::test]
async fn shutdown_lets_quick_jobs_finish_and_releases_the_rest_to_another_worker() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let ran_by: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let make_workers = |who: &'static str| {
        let ran_by = ran_by.clone();
        let mut workers = Workers::new();
        workers.register_raw(
            "job",
            worker_fn(move |ctx: JobContext, payload: serde_json::Value| {
                let ran_by = ran_by.clone();
                async move {
                    // The "slow" job is slow only on its first attempt.
                    let slow = payload == "slow" && ctx.attempt() == 1;
                    let pause = if slow { 120_000 } else { 300 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    ran_by.lock().unwrap().push((ctx.id(), who.to_owned()));
                    JobResult::Success
                }
            }),
        );
        workers
    };
    let quick = queue.enqueue(raw("job", "quick".into())).await.unwrap();
    let slow = queue.enqueue(raw("job", "slow".into())).await.unwrap();
    let first = start(&db, config("first"), make_workers("first")).await;
    wait_until(Duration::from_secs(10), "both jobs running", || async {
        first.running() == 2
    })
    .await;
    // The second worker is idle and polls only every 30 s: the release
    // must wake it.
    let second = start(
        &db,
        WorkerConfig {
            poll_interval: Duration::from_secs(30),
            ..config("second")
        },
        make_workers("second"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = Instant::now();
    let report = first.shutdown(Duration::from_secs(1)).await;
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!((report.released, report.unrecorded), (1, 0));
    assert_eq!(state(&queue, quick).await, JobState::Succeeded);
    wait_state(&queue, slow, JobState::Succeeded, Duration::from_secs(5)).await;
    assert!(began.elapsed() < Duration::from_secs(6));

    let mut ran = ran_by.lock().unwrap().clone();
    ran.sort();
    assert_eq!(
        ran,
        [(quick, "first".to_owned()), (slow, "second".to_owned())]
    );
    let rows = attempts(&db.pool, slow).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].1.as_str(), rows[0].2.as_deref()),
        ("released", Some("released at worker shutdown"))
    );
    assert_eq!(rows[1].1, "succeeded");
    let row = queue.get(slow).await.unwrap().unwrap();
    assert_eq!(
        (row.attempt, row.max_attempts),
        (2, 6),
        "a release does not use up an attempt"
    );
    second.shutdown(Duration::from_secs(1)).await;
}

/// Notes which jobs run now; a second concurrent run of one job is a bug.
#[derive(Default)]
struct Detector {
    running: Mutex<HashSet<i64>>,
    runs: Mutex<HashMap<i64, u32>>,
    overlaps: AtomicUsize,
}

impl Detector {
    fn enter(&self, id: i64) {
        if !self.running.lock().unwrap().insert(id) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        *self.runs.lock().unwrap().entry(id).or_default() += 1;
    }

    fn leave(&self, id: i64) {
        self.running.lock().unwrap().remove(&id);
    }
}

fn detecting(detector: Arc<Detector>, pause: Duration) -> Workers {
    let mut workers = Workers::new();
    workers.register_raw(
        "unit",
        worker_fn(move |ctx: JobContext, _| {
            let detector = detector.clone();
            async move {
                detector.enter(ctx.id());
                tokio::time::sleep(pause).await;
                detector.leave(ctx.id());
                JobResult::Success
            }
        }),
    );
    workers
}

/// Every job succeeded, each with exactly one 'succeeded' attempt row.
async fn assert_all_succeeded_once(pool: &PgPool, ids: &[i64]) {
    let (finished, succeeded_rows, distinct): (i64, i64, i64) = sqlx::query_as(
        "SELECT
            (SELECT count(*) FROM trawl_jobs.jobs_finished
             WHERE state = 'succeeded' AND id = ANY($1)),
            (SELECT count(*) FROM trawl_jobs.job_attempts
             WHERE outcome = 'succeeded' AND job_id = ANY($1)),
            (SELECT count(DISTINCT job_id) FROM trawl_jobs.job_attempts
             WHERE outcome = 'succeeded' AND job_id = ANY($1))",
    )
    .bind(ids)
    .fetch_one(pool)
    .await
    .unwrap();
    let n = ids.len() as i64;
    assert_eq!((finished, succeeded_rows, distinct), (n, n, n));
}

#[tokio::test]
async fn long_jobs_are_never_claimed_ahead_of_free_slots() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let ids = queue
        .enqueue_many((0..6).map(|i| raw("slow", i.into())).collect())
        .await
        .unwrap();
    let began = Arc::new(Mutex::new(HashMap::new()));
    let mut workers = Workers::new();
    let seen = began.clone();
    workers.register_raw(
        "slow",
        worker_fn(move |ctx: JobContext, _payload: serde_json::Value| {
            seen.lock().unwrap().insert(ctx.id(), Utc::now());
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                JobResult::Success
            }
        }),
    );
    let config = WorkerConfig {
        max_concurrent_jobs: 2,
        ..config("slow-worker")
    };
    let handle = start(&db, config, workers).await;
    wait_until(Duration::from_secs(30), "6 jobs of 300 ms", || async {
        handle.stats().succeeded == 6
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await;
    assert_all_succeeded_once(&db.pool, &ids).await;
    // A job claimed ahead would wait here for a slot, about 300 ms.
    let claimed: Vec<(i64, chrono::DateTime<Utc>)> =
        sqlx::query_as("SELECT job_id, started_at FROM trawl_jobs.job_attempts")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let began = began.lock().unwrap();
    for (id, claimed_at) in claimed {
        let waited = began[&id] - claimed_at;
        assert!(
            waited < chrono::Duration::milliseconds(150),
            "job {id} waited {} ms between its claim and its start",
            waited.num_milliseconds()
        );
    }
}

#[tokio::test]
async fn many_managers_share_a_queue_without_running_a_job_twice() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let ids = queue
        .enqueue_many((0..2000).map(|i| raw("unit", i.into())).collect())
        .await
        .unwrap();
    let detector = Arc::new(Detector::default());
    let mut handles = Vec::new();
    for m in 0..4 {
        handles.push(
            start(
                &db,
                WorkerConfig {
                    max_concurrent_jobs: 8,
                    claim_batch: 4,
                    ..config(&format!("m{m}"))
                },
                detecting(detector.clone(), Duration::from_millis(2)),
            )
            .await,
        );
    }
    wait_until(Duration::from_secs(60), "2,000 jobs", || async {
        handles.iter().map(|h| h.stats().succeeded).sum::<u64>() == 2000
    })
    .await;
    let per_manager: Vec<u64> = handles.iter().map(|h| h.stats().succeeded).collect();
    for handle in handles {
        handle.shutdown(Duration::from_secs(5)).await;
    }
    assert_eq!(detector.overlaps.load(Ordering::SeqCst), 0);
    let runs = detector.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 2000);
    assert!(runs.values().all(|&n| n == 1), "a job ran twice");
    assert!(
        per_manager.iter().all(|&n| n > 0),
        "every manager took a share: {per_manager:?}"
    );
    assert_all_succeeded_once(&db.pool, &ids).await;
}

#[tokio::test]
async fn terminated_connections_lose_and_duplicate_nothing() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let ids = queue
        .enqueue_many((0..1500).map(|i| raw("unit", i.into())).collect())
        .await
        .unwrap();
    let detector = Arc::new(Detector::default());
    let mut handles = Vec::new();
    for m in 0..2 {
        handles.push(
            start(
                &db,
                WorkerConfig {
                    max_concurrent_jobs: 8,
                    ..config(&format!("m{m}"))
                },
                detecting(detector.clone(), Duration::from_millis(3)),
            )
            .await,
        );
    }
    // Kill every connection to the test database, a few times over, while
    // the managers work.
    let admin = pool(&db, 1).await;
    let mut kills = 0;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
        )
        .fetch_one(&admin)
        .await
        .unwrap();
        kills += killed;
    }
    assert!(kills > 0);
    wait_until(Duration::from_secs(60), "1,500 jobs", || async {
        handles.iter().map(|h| h.stats().succeeded).sum::<u64>() >= 1500
    })
    .await;
    for handle in &handles {
        assert!(handle.health().connected);
    }
    for handle in handles {
        let report = handle.shutdown(Duration::from_secs(5)).await;
        assert_eq!(report.unrecorded, 0);
    }
    assert_eq!(detector.overlaps.load(Ordering::SeqCst), 0);
    let runs = detector.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1500);
    assert!(runs.values().all(|&n| n == 1), "a job ran twice");
    assert_all_succeeded_once(&db.pool, &ids).await;
}

#[tokio::test]
async fn a_job_whose_lease_went_elsewhere_is_stopped_and_its_outcome_ignored() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let reasons: Arc<Mutex<Vec<Option<StopReason>>>> = Arc::default();
    let mut workers = Workers::new();
    let reasons2 = reasons.clone();
    workers.register_raw(
        "long",
        worker_fn(move |ctx: JobContext, _| {
            let reasons = reasons2.clone();
            async move {
                let token = ctx.cancellation().clone();
                let ctx2 = ctx.clone();
                tokio::spawn(async move {
                    token.cancelled().await;
                    reasons.lock().unwrap().push(ctx2.stop_reason());
                });
                tokio::time::sleep(Duration::from_secs(60)).await;
                JobResult::Success
            }
        }),
    );
    let id = queue.enqueue(raw("long", 0.into())).await.unwrap();
    let handle = start(&db, config("w1"), workers).await;
    wait_until(Duration::from_secs(10), "the job running", || async {
        handle.running() == 1
    })
    .await;
    // Another worker took the job (as after a lease expiry and a claim).
    sqlx::query("UPDATE trawl_jobs.jobs SET lease_owner = 'thief', attempt = 2 WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), "the job stopped", || async {
        handle.running() == 0 && handle.stats().stale == 1
    })
    .await;
    assert_eq!(*reasons.lock().unwrap(), [Some(StopReason::LeaseLost)]);
    let row = queue.get(id).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.lease_owner.as_deref()),
        (JobState::Running, Some("thief"))
    );
    assert!(attempts(&db.pool, id).await.is_empty());
    handle.shutdown(Duration::from_secs(1)).await;
}

/// The manager runs the queue's maintenance tick itself: after enough churn
/// for the tick's thresholds, the hot table has been vacuumed without the
/// application asking.
#[tokio::test]
async fn the_manager_vacuums_the_hot_table_as_it_goes() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    queue
        .enqueue_many((0..12_000).map(|i| raw("unit", i.into())).collect())
        .await
        .unwrap();
    let handle = start(
        &db,
        WorkerConfig {
            max_concurrent_jobs: 16,
            maintenance_interval: Some(Duration::from_millis(100)),
            ..config("vacuuming")
        },
        detecting(Arc::new(Detector::default()), Duration::ZERO),
    )
    .await;
    wait_until(Duration::from_secs(120), "12,000 jobs", || async {
        handle.stats().succeeded == 12_000
    })
    .await;
    let vacuums = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT vacuum_count FROM pg_stat_user_tables \
             WHERE schemaname = 'trawl_jobs' AND relname = 'jobs'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    wait_until(
        Duration::from_secs(30),
        "a vacuum of trawl_jobs.jobs",
        || async { vacuums().await > 0 },
    )
    .await;
    handle.shutdown(Duration::from_secs(5)).await;
}
