//! Cluster events against the real PostgreSQL: a subscriber sees workers
//! join and leave (shutdown and sweep), jobs die (a worker's outcome and a
//! reconciler tick) and leadership move; it skips payloads it cannot
//! parse, gets long errors cut to the payload limit, and reconnects after
//! its connection is killed.

mod support;

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use trawl_jobs::leader::{LeaderConfig, Leadership};
use trawl_jobs::reconcile::{self, JOB_PARTITIONS, lease_expiry, worker_registry_ttl_sweep};
use trawl_jobs::{
    ClusterEvent, ClusterEvents, EVENTS_CHANNEL, JobQueue, JobResult, LeaveReason, NewJob, Outcome,
    WorkerConfig, WorkerManager, Workers, claim, worker_fn,
};

use support::db::TestDb;
use support::jobs::finish;

const LEASE: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long a test waits for one event.
const PATIENCE: Duration = Duration::from_secs(10);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn at(secs: i64) -> Option<DateTime<Utc>> {
    Some(t0() + chrono::Duration::seconds(secs))
}

/// A subscriber on a pool of its own, whose connections are named
/// `application_name` (so a test can find and kill them).
async fn subscribe(db: &TestDb, application_name: &str) -> ClusterEvents {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.options().application_name(application_name))
        .await
        .expect("connect");
    ClusterEvents::subscribe(&pool).await.expect("subscribe")
}

/// The next event `wanted` accepts, skipping others; panics after
/// [`PATIENCE`].
async fn expect(
    events: &mut ClusterEvents,
    what: &str,
    wanted: impl Fn(&ClusterEvent) -> bool,
) -> ClusterEvent {
    let start = Instant::now();
    loop {
        let left = PATIENCE.saturating_sub(start.elapsed());
        let event = tokio::time::timeout(left, events.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("the subscription is open");
        if wanted(&event) {
            return event;
        }
    }
}

/// Sends a `WorkerJoined` for `marker` by hand: the events sent before it
/// have arrived once it has.
async fn mark(pool: &PgPool, marker: &str) {
    sqlx::query("SELECT pg_notify($1, json_build_object('event', 'worker_joined', 'worker_id', $2::text)::text)")
        .bind(EVENTS_CHANNEL)
        .bind(marker)
        .execute(pool)
        .await
        .unwrap();
}

fn is_marker(event: &ClusterEvent, marker: &str) -> bool {
    matches!(event, ClusterEvent::WorkerJoined { worker_id, .. } if worker_id == marker)
}

/// The events before `marker` (sent now), in order.
async fn until_marker(
    events: &mut ClusterEvents,
    pool: &PgPool,
    marker: &str,
) -> Vec<ClusterEvent> {
    mark(pool, marker).await;
    let mut seen = Vec::new();
    let start = Instant::now();
    loop {
        let left = PATIENCE.saturating_sub(start.elapsed());
        let event = tokio::time::timeout(left, events.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for marker {marker}"))
            .expect("the subscription is open");
        if is_marker(&event, marker) {
            return seen;
        }
        seen.push(event);
    }
}

fn is_dead(event: &ClusterEvent, id: i64) -> bool {
    matches!(event, ClusterEvent::JobDead { job_id, .. } if *job_id == id)
}

/// Enqueues `job` and claims it as worker `w` at `now`; returns its id.
async fn claimed(queue: &JobQueue, job: NewJob, now: Option<DateTime<Utc>>) -> i64 {
    let id = queue.enqueue(job).await.unwrap();
    let mut conn = queue.pool().acquire().await.unwrap();
    let jobs = claim(&mut conn, "w", "default", 1, LEASE, TIMEOUT, now)
        .await
        .unwrap();
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
    id
}

#[tokio::test]
async fn a_manager_is_announced_when_it_starts_and_when_it_shuts_down() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    let mut events = subscribe(&db, "events").await;
    let mut workers = Workers::new();
    workers.register_raw(
        "noop",
        worker_fn(|_ctx, _payload: serde_json::Value| async { JobResult::Success }),
    );
    let config = WorkerConfig {
        worker_id: "w-events".into(),
        lease: Duration::from_secs(4),
        heartbeat_interval: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let pool = PgPoolOptions::new()
        .max_connections(config.connections_needed() + 1)
        .connect_with(db.options())
        .await
        .unwrap();
    let handle = WorkerManager::new(pool, config, workers)
        .unwrap()
        .start()
        .await
        .unwrap();
    expect(
        &mut events,
        "WorkerJoined",
        |e| matches!(e, ClusterEvent::WorkerJoined { worker_id, .. } if worker_id == "w-events"),
    )
    .await;
    handle.shutdown(Duration::from_secs(1)).await;
    let left = expect(&mut events, "WorkerLeft", |e| {
        matches!(e, ClusterEvent::WorkerLeft { .. })
    })
    .await;
    assert!(
        matches!(&left, ClusterEvent::WorkerLeft { worker_id, reason: LeaveReason::Deregistered, .. } if worker_id == "w-events"),
        "{left:?}"
    );
    // Nothing else about it: not joined again, not left twice.
    let after = until_marker(&mut events, &db.pool, "m").await;
    assert!(after.is_empty(), "{after:?}");
}

#[tokio::test]
async fn the_registry_sweep_announces_each_worker_it_drops() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    let mut events = subscribe(&db, "events").await;
    for (worker, age) in [("silent", 31), ("alive", 5)] {
        sqlx::query(
            "INSERT INTO trawl_jobs.workers (id, partition, queues, max_concurrent, heartbeat_at)
             VALUES ($1, $2, '{default}', 10, $3)",
        )
        .bind(worker)
        .bind(reconcile::worker_partition(worker))
        .bind(t0() - chrono::Duration::seconds(age))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let mut conn = db.pool.acquire().await.unwrap();
    for worker in ["silent", "alive"] {
        let p = reconcile::worker_partition(worker);
        worker_registry_ttl_sweep::run_once(&mut conn, p, Some(t0()))
            .await
            .unwrap();
    }
    let seen = until_marker(&mut events, &db.pool, "m").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        matches!(&seen[0], ClusterEvent::WorkerLeft { worker_id, reason: LeaveReason::Swept, .. } if worker_id == "silent"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_job_completed_as_dead_is_announced_and_others_are_not() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut events = subscribe(&db, "events").await;

    let dead = claimed(&queue, NewJob::new("heal", 1.into()).queue("default"), None).await;
    finish(
        &mut db.pool.acquire().await.unwrap(),
        dead,
        1,
        Outcome::Dead("no such object".into()),
    )
    .await;
    let ok = claimed(&queue, NewJob::new("heal", 2.into()), None).await;
    finish(
        &mut db.pool.acquire().await.unwrap(),
        ok,
        1,
        Outcome::Succeeded,
    )
    .await;
    let retried = claimed(&queue, NewJob::new("heal", 3.into()).max_attempts(2), None).await;
    finish(
        &mut db.pool.acquire().await.unwrap(),
        retried,
        1,
        Outcome::Retry {
            delay: Duration::ZERO,
            error: "flaky".into(),
        },
    )
    .await;

    let seen = until_marker(&mut events, &db.pool, "m").await;
    assert_eq!(seen.len(), 1, "only the dead job: {seen:?}");
    match &seen[0] {
        ClusterEvent::JobDead {
            job_id,
            kind,
            queue,
            error,
            ..
        } => {
            assert_eq!(
                (*job_id, kind.as_str(), queue.as_str(), error.as_deref()),
                (dead, "heal", "default", Some("no such object"))
            );
        }
        other => panic!("{other:?}"),
    }

    // The retried job's last attempt fails too: now it is announced.
    let mut conn = db.pool.acquire().await.unwrap();
    let again = claim(&mut conn, "w", "default", 1, LEASE, TIMEOUT, None)
        .await
        .unwrap();
    assert_eq!(again[0].id, retried);
    finish(
        &mut db.pool.acquire().await.unwrap(),
        retried,
        2,
        Outcome::Dead("still flaky".into()),
    )
    .await;
    expect(&mut events, "the retried job's death", |e| {
        is_dead(e, retried)
    })
    .await;
}

#[tokio::test]
async fn a_job_killed_by_a_reconciler_tick_is_announced() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut events = subscribe(&db, "events").await;
    // One attempt, leased at t0 for 30 s; the lease_expiry tick at t0 + 31 s
    // takes it back, and with no attempt left it is dead.
    let id = claimed(
        &queue,
        NewJob::new("heal", 1.into()).max_attempts(1),
        Some(t0()),
    )
    .await;
    let partition = (id % i64::from(JOB_PARTITIONS)) as i16;
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(
        lease_expiry::run_once(&mut conn, partition, at(31))
            .await
            .unwrap(),
        1
    );
    let event = expect(&mut events, "JobDead", |e| is_dead(e, id)).await;
    let ClusterEvent::JobDead { error, .. } = event else {
        unreachable!()
    };
    let error = error.expect("an error");
    assert!(error.contains("lease") && error.contains('w'), "{error}");
}

#[tokio::test]
async fn a_long_error_is_cut_to_the_payload_limit_and_the_job_still_dies() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let queue = db.queue().await;
    let mut events = subscribe(&db, "events").await;
    // 3 bytes per character, and control characters that JSON escapes to 6.
    let error: String = "€\u{1}".repeat(5_000);
    let id = claimed(&queue, NewJob::new("heal", 1.into()), None).await;
    finish(
        &mut db.pool.acquire().await.unwrap(),
        id,
        1,
        Outcome::Dead(error.clone()),
    )
    .await;
    let stored = queue.get(id).await.unwrap().unwrap();
    assert_eq!(stored.last_error.as_deref(), Some(error.as_str()));

    let event = expect(&mut events, "JobDead", |e| is_dead(e, id)).await;
    let payload = serde_json::to_string(&event).unwrap();
    assert!(payload.len() < 8000, "{} bytes", payload.len());
    let ClusterEvent::JobDead { error: cut, .. } = event else {
        unreachable!()
    };
    let cut = cut.unwrap();
    assert!(cut.ends_with('…'), "{cut}");
    let kept = cut.trim_end_matches('…');
    assert!(error.starts_with(kept));
    assert!(
        kept.chars().count() >= 500,
        "kept {} characters",
        kept.chars().count()
    );
}

#[tokio::test]
async fn leadership_takeovers_and_releases_are_announced() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    let mut events = subscribe(&db, "events").await;
    let config = |holder: &str| LeaderConfig {
        ttl: Duration::from_secs(2),
        renew_every: Some(Duration::from_millis(200)),
        ..LeaderConfig::new("periodic", holder)
    };
    let first = Leadership::start(db.pool.clone(), config("n1"))
        .await
        .unwrap();
    assert!(first.is_leader());
    let second = Leadership::start(db.pool.clone(), config("n2"))
        .await
        .unwrap();
    assert!(!second.is_leader());
    // Renewals are not announced: wait for a few of them.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let seen = until_marker(&mut events, &db.pool, "m1").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        matches!(&seen[0], ClusterEvent::LeadershipChanged { name, holder: Some(h), .. } if name == "periodic" && h == "n1"),
        "{seen:?}"
    );

    assert!(first.shutdown().await.unwrap());
    let mut changes = second.changes();
    tokio::time::timeout(Duration::from_secs(3), changes.wait_for(|leader| *leader))
        .await
        .expect("n2 takes over")
        .unwrap();
    let seen = until_marker(&mut events, &db.pool, "m2").await;
    let holders: Vec<Option<&str>> = seen
        .iter()
        .map(|e| match e {
            ClusterEvent::LeadershipChanged { holder, .. } => holder.as_deref(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(holders, [None, Some("n2")]);
    assert!(second.shutdown().await.unwrap());
}

#[tokio::test]
async fn payloads_that_are_not_events_are_skipped() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    let mut events = subscribe(&db, "events").await;
    for payload in [
        "garbage",
        r#"{"event":"worker_teleported","worker_id":"w"}"#,
        r#"{"event":"job_dead","job_id":"not a number"}"#,
    ] {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(payload)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let seen = until_marker(&mut events, &db.pool, "m").await;
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn a_subscriber_whose_connection_is_killed_reconnects() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    let mut events = subscribe(&db, "events-killed").await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'events-killed') t",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(killed >= 1);
    // Events sent before it listens again are lost: send markers until one
    // arrives (at most 50, one every 200 ms).
    let mut arrived = false;
    for i in 0..50 {
        let marker = format!("m{i}");
        mark(&db.pool, &marker).await;
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(200), events.next()).await {
            let event = event.expect("the subscription is open");
            assert!(
                matches!(event, ClusterEvent::WorkerJoined { .. }),
                "{event:?}"
            );
            arrived = true;
            break;
        }
    }
    assert!(arrived, "no event after the connection was killed");
    // And it goes on.
    let seen = until_marker(&mut events, &db.pool, "last").await;
    assert!(
        seen.iter()
            .all(|e| matches!(e, ClusterEvent::WorkerJoined { .. })),
        "{seen:?}"
    );
}
