//! The circuit breaker per job kind, in a running manager against the real
//! PostgreSQL: failures in a row open it, the kind is not claimed during
//! the cool-down while other kinds run on, and a successful probe closes it.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use trawl_jobs::{
    BreakerConfig, ClusterEvent, ClusterEvents, JobContext, JobResult, NewJob, WorkerConfig,
    WorkerHandle, WorkerManager, Workers, worker_fn,
};
use trawl_retry::RetryPolicy;

const COOL_DOWN: Duration = Duration::from_millis(1500);

async fn wait_for(
    handle: &WorkerHandle,
    limit: Duration,
    what: &str,
    check: impl Fn(&WorkerHandle) -> bool,
) {
    let started = Instant::now();
    while !check(handle) {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_failing_kind_is_paused_then_probed_then_resumed() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let flaky_starts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let mut workers = Workers::new();
    {
        let (healthy, starts) = (healthy.clone(), flaky_starts.clone());
        workers.register_raw(
            "flaky",
            worker_fn(move |_ctx: JobContext, _payload: serde_json::Value| {
                starts.lock().unwrap().push(Instant::now());
                let ok = healthy.load(Ordering::SeqCst);
                async move {
                    if ok {
                        JobResult::Success
                    } else {
                        JobResult::retry("the store is down")
                    }
                }
            }),
        );
    }
    workers.register_raw(
        "steady",
        worker_fn(|_ctx: JobContext, _payload: serde_json::Value| async { JobResult::Success }),
    );
    let config = WorkerConfig {
        worker_id: "breaker".into(),
        max_concurrent_jobs: 4,
        heartbeat_interval: Duration::from_millis(200),
        lease: Duration::from_secs(4),
        poll_interval: Duration::from_millis(50),
        retry: RetryPolicy {
            max_attempts: u32::MAX,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            jitter_pct: 0,
        },
        breaker: Some(BreakerConfig {
            failures: 3,
            cool_down: COOL_DOWN,
        }),
        seed: Some(5),
        ..WorkerConfig::default()
    };
    let pool = PgPoolOptions::new()
        .max_connections(config.connections_needed() + 1)
        .connect_with(db.options())
        .await
        .unwrap();
    let mut events = ClusterEvents::subscribe(&db.pool).await.unwrap();
    let handle = WorkerManager::new(pool, config, workers)
        .unwrap()
        .start()
        .await
        .unwrap();
    let flaky = queue
        .enqueue_many(
            (0..3)
                .map(|n| NewJob::new("flaky", n.into()).max_attempts(50))
                .collect(),
        )
        .await
        .unwrap();
    wait_for(
        &handle,
        Duration::from_secs(10),
        "the breaker to open",
        |h| h.stats().breakers_opened == 1,
    )
    .await;
    let opened = Instant::now();
    assert_eq!(handle.health().open_breakers, ["flaky"]);

    // Other kinds run on while the breaker is open.
    queue
        .enqueue_many((0..5).map(|n| NewJob::new("steady", n.into())).collect())
        .await
        .unwrap();
    wait_for(&handle, Duration::from_secs(1), "the steady jobs", |h| {
        h.stats().succeeded == 5
    })
    .await;
    assert!(
        opened.elapsed() < COOL_DOWN,
        "they ran during the cool-down"
    );
    healthy.store(true, Ordering::SeqCst);

    wait_for(
        &handle,
        Duration::from_secs(10),
        "the breaker to close",
        |h| h.health().open_breakers.is_empty(),
    )
    .await;
    wait_for(&handle, Duration::from_secs(10), "the flaky jobs", |h| {
        h.stats().succeeded == 8
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await;

    // The changes went out as cluster events.
    let mut breaker_events = Vec::new();
    while breaker_events.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("the breaker's events within 5 s")
            .unwrap();
        match event {
            ClusterEvent::BreakerOpened {
                worker_id, kind, ..
            } => {
                breaker_events.push(("opened", worker_id, kind));
            }
            ClusterEvent::BreakerClosed {
                worker_id, kind, ..
            } => {
                breaker_events.push(("closed", worker_id, kind));
            }
            _ => {}
        }
    }
    let flaky_kind = |what: &str| (what.to_owned(), "breaker".to_owned(), "flaky".to_owned());
    let seen: Vec<(String, String, String)> = breaker_events
        .into_iter()
        .map(|(what, w, k)| (what.to_owned(), w, k))
        .collect();
    assert_eq!(seen, [flaky_kind("opened"), flaky_kind("closed")]);

    let starts = flaky_starts.lock().unwrap().clone();
    let quiet =
        (opened + Duration::from_millis(200))..(opened + COOL_DOWN - Duration::from_millis(100));
    assert!(
        !starts.iter().any(|at| quiet.contains(at)),
        "a flaky job started during the cool-down"
    );
    let first_after = starts
        .iter()
        .filter(|at| **at >= opened + Duration::from_millis(200))
        .min()
        .copied()
        .expect("the probe ran");
    assert!(first_after >= opened + COOL_DOWN - Duration::from_millis(100));
    for id in flaky {
        let job = queue.get(id).await.unwrap().unwrap();
        assert_eq!(job.state, trawl_jobs::JobState::Succeeded);
    }
}
