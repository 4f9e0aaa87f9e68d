//! The supervisor against a real PostgreSQL, with reconcilers made for the
//! test: ticks that fail, panic, hang in a query, race each other, or run
//! outside a transaction.

mod support;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio::time::Instant;
use trawl_reconcile::{
    Config, Now, Reconciler, ReconcilerHandle, ReconcilerStats, Scope, TickError, TickMode,
    spawn_reconcilers,
};

/// What a [`Probe`]'s tick does.
enum Act {
    /// Returns this many rows.
    Rows(u64),
    /// Returns the next of these, then 0.
    Sequence(Mutex<VecDeque<u64>>),
    Fail,
    Panic,
    /// Runs the statement and returns its row count.
    Sql(&'static str),
    /// Sleeps this long (in Rust, not in the database), then returns 0;
    /// only on the first call when the flag is set.
    Pause(Duration, bool),
    /// Sleeps for ever, setting the flag when the tick is dropped.
    Hang(Arc<AtomicBool>),
}

/// A reconciler that notes each call: partition, start, end.
struct Probe {
    name: &'static str,
    interval: Duration,
    scope: Scope,
    mode: TickMode,
    batch: Option<u64>,
    time_limit: Duration,
    act: Act,
    calls: Mutex<Vec<(u32, Instant, Instant)>>,
}

impl Probe {
    fn new(name: &'static str, interval_ms: u64, act: Act) -> Probe {
        Probe {
            name,
            interval: Duration::from_millis(interval_ms),
            scope: Scope::Global,
            mode: TickMode::InTransaction,
            batch: None,
            time_limit: Duration::from_secs(60),
            act,
            calls: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<(u32, Instant, Instant)> {
        self.calls.lock().unwrap().clone()
    }

    fn started(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Reconciler for Probe {
    fn name(&self) -> &str {
        self.name
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn scope(&self) -> Scope {
        self.scope
    }

    fn mode(&self) -> TickMode {
        self.mode
    }

    fn batch(&self) -> Option<u64> {
        self.batch
    }

    fn time_limit(&self) -> Duration {
        self.time_limit
    }

    async fn tick(
        &self,
        conn: &mut PgConnection,
        partition: u32,
        _now: Now,
    ) -> Result<u64, TickError> {
        let start = Instant::now();
        let first = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((partition, start, start));
            calls.len() == 1
        };
        let result = match &self.act {
            Act::Rows(n) => Ok(*n),
            Act::Sequence(rows) => Ok(rows.lock().unwrap().pop_front().unwrap_or(0)),
            Act::Fail => Err("the test's tick always fails".into()),
            Act::Panic => panic!("the test's tick always panics"),
            Act::Sql(sql) => sqlx::query(*sql)
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
                .map_err(Into::into),
            Act::Pause(pause, only_first) => {
                if first || !only_first {
                    tokio::time::sleep(*pause).await;
                }
                Ok(0)
            }
            Act::Hang(dropped) => {
                let _guard = SetOnDrop(dropped.clone());
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(0)
            }
        };
        if let Some(call) = self.calls.lock().unwrap().last_mut() {
            call.2 = Instant::now();
        }
        result
    }
}

fn quick() -> Config {
    Config {
        max_phase: Duration::ZERO,
        ..Config::default()
    }
}

fn spawn(pool: &PgPool, config: Config, probes: &[&Arc<Probe>]) -> ReconcilerHandle {
    let reconcilers = probes
        .iter()
        .map(|p| Arc::clone(p) as Arc<dyn Reconciler>)
        .collect();
    spawn_reconcilers(pool.clone(), config, reconcilers).expect("valid reconcilers")
}

/// Waits (at most `limit`) for `done`; panics naming `what` on timeout.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that the last failure of `stats` says `needle`.
fn assert_last_error(stats: &ReconcilerStats, needle: &str) {
    assert!(
        stats
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains(needle)),
        "{}: {:?}",
        stats.name,
        stats.last_error
    );
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

#[tokio::test]
async fn a_failing_or_panicking_tick_stops_neither_itself_nor_the_others() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let failing = Arc::new(Probe::new("failing", 20, Act::Fail));
    let panicking = Arc::new(Probe::new("panicking", 20, Act::Panic));
    let healthy = Arc::new(Probe::new("healthy", 20, Act::Rows(2)));
    let mut handle = spawn(&db.pool, quick(), &[&failing, &panicking, &healthy]);
    wait_until("three ticks of each", Duration::from_secs(20), || {
        handle.stats().iter().all(|s| s.ticks >= 3)
    })
    .await;
    let stats = handle.stats();
    assert_eq!(stats[0].name, "failing");
    assert!(stats[0].errors >= 3 && stats[0].partition_ticks == 0);
    assert_last_error(&stats[0], "always fails");
    assert!(stats[1].panics >= 3 && stats[1].errors == 0);
    assert_last_error(&stats[1], "panicked: the test's tick always panics");
    assert!(stats[2].errors == 0 && stats[2].panics == 0);
    assert_eq!(stats[2].rows_changed, 2 * stats[2].partition_ticks);
    assert!(stats[2].last_tick_duration.is_some());
    assert_eq!(handle.running(), 3, "no task ended");
    assert_eq!(handle.shutdown(Duration::from_secs(5)).await, 0);
    assert_eq!(handle.running(), 0);
}

#[tokio::test]
async fn shutdown_aborts_a_tick_stuck_in_a_query_after_the_grace_period() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let stuck = Arc::new(Probe::new("stuck", 20, Act::Sql("SELECT pg_sleep(60)")));
    let idle = Arc::new(Probe::new("idle", 20, Act::Rows(0)));
    let mut handle = spawn(&db.pool, quick(), &[&stuck, &idle]);
    let in_query = "SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND state = 'active' AND query = 'SELECT pg_sleep(60)'";
    let start = Instant::now();
    while scalar(&db.pool, in_query).await == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the tick never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let grace = Duration::from_millis(300);
    let start = Instant::now();
    let aborted = handle.shutdown(grace).await;
    let took = start.elapsed();
    assert_eq!(aborted, 1, "the stuck task, and only it");
    assert!(took >= grace, "{took:?}: it waited the grace period");
    assert!(took < grace + Duration::from_secs(1), "{took:?}");
    assert_eq!(handle.running(), 0);

    let start = Instant::now();
    assert_eq!(handle.shutdown(grace).await, 0, "a second call");
    assert!(start.elapsed() < Duration::from_millis(50));

    // The aborted tick's connection was closed; its backend stays in
    // pg_sleep until it next talks to the client, so end it here.
    scalar(
        &db.pool,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND query = 'SELECT pg_sleep(60)'",
    )
    .await;
}

/// A reconciler whose tick is a lost update without its lock: it reads a
/// partition's counter, waits `pause`, writes it back plus one, and logs
/// when it ran.
///
/// Two supervisors with the same pause can settle into walking the
/// partitions in step, a fixed number of partitions apart, and never meet;
/// different pauses make one overtake the other again and again.
struct Racer {
    pause: Duration,
}

#[async_trait::async_trait]
impl Reconciler for Racer {
    fn name(&self) -> &str {
        "racer"
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(10)
    }

    fn scope(&self) -> Scope {
        Scope::Partitioned(4)
    }

    async fn tick(
        &self,
        conn: &mut PgConnection,
        partition: u32,
        _now: Now,
    ) -> Result<u64, TickError> {
        let p = partition as i32;
        let started: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&mut *conn)
            .await?;
        let n: i64 = sqlx::query_scalar("SELECT n FROM counters WHERE p = $1")
            .bind(p)
            .fetch_one(&mut *conn)
            .await?;
        tokio::time::sleep(self.pause).await;
        sqlx::query("UPDATE counters SET n = $2 WHERE p = $1")
            .bind(p)
            .bind(n + 1)
            .execute(&mut *conn)
            .await?;
        sqlx::query("INSERT INTO ticks (p, started, ended) VALUES ($1, $2, clock_timestamp())")
            .bind(p)
            .bind(started)
            .execute(&mut *conn)
            .await?;
        Ok(1)
    }
}

#[tokio::test]
async fn two_supervisors_never_run_a_partition_at_once() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    for sql in [
        "CREATE TABLE counters (p int PRIMARY KEY, n bigint NOT NULL)",
        "INSERT INTO counters SELECT g, 0 FROM generate_series(0, 3) g",
        "CREATE TABLE ticks (p int NOT NULL, started timestamptz NOT NULL, ended timestamptz NOT NULL)",
    ] {
        sqlx::query(sql).execute(&db.pool).await.unwrap();
    }
    let other = db.another_pool().await;
    let racer = |pause_ms| -> Vec<Arc<dyn Reconciler>> {
        vec![Arc::new(Racer {
            pause: Duration::from_millis(pause_ms),
        })]
    };
    let mut one = spawn_reconcilers(db.pool.clone(), quick(), racer(10)).unwrap();
    let mut two = spawn_reconcilers(other, quick(), racer(35)).unwrap();
    let stats = |h: &ReconcilerHandle| h.stats_of("racer").unwrap();
    let start = Instant::now();
    loop {
        let (a, b) = (stats(&one), stats(&two));
        if a.partition_ticks >= 20 && b.partition_ticks >= 20 && a.skipped + b.skipped >= 5 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waited 30s for both supervisors to tick 20 times and to find a partition \
             locked 5 times: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(one.shutdown(Duration::from_secs(5)).await, 0);
    assert_eq!(two.shutdown(Duration::from_secs(5)).await, 0);

    let applied =
        one.stats_of("racer").unwrap().rows_changed + two.stats_of("racer").unwrap().rows_changed;
    assert_eq!(
        scalar(&db.pool, "SELECT count(*) FROM ticks").await as u64,
        applied
    );
    assert_eq!(
        scalar(&db.pool, "SELECT sum(n)::bigint FROM counters").await as u64,
        applied,
        "an update was lost: two ticks of one partition overlapped"
    );
    let overlapping = scalar(
        &db.pool,
        "SELECT count(*) FROM ticks a JOIN ticks b ON a.p = b.p AND a.ctid < b.ctid
         WHERE a.started < b.ended AND b.started < a.ended",
    )
    .await;
    assert_eq!(overlapping, 0);
}

#[tokio::test]
async fn a_call_past_its_time_limit_is_cancelled_and_the_reconciler_goes_on() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let limit = Duration::from_millis(200);
    let sleep = "SELECT pg_sleep(60)";
    let mut in_sql = Probe::new("in_sql", 20, Act::Sql(sleep));
    let dropped = Arc::new(AtomicBool::new(false));
    let mut in_rust = Probe::new("in_rust", 20, Act::Hang(dropped.clone()));
    let mut outside = Probe::new("outside", 20, Act::Sql(sleep));
    outside.mode = TickMode::OutsideTransaction;
    for probe in [&mut in_sql, &mut in_rust, &mut outside] {
        probe.time_limit = limit;
    }
    // Its own limit is a minute; the configuration's wins.
    let configured = Arc::new(Probe::new("configured", 20, Act::Sql(sleep)));
    let (in_sql, in_rust, outside) = (Arc::new(in_sql), Arc::new(in_rust), Arc::new(outside));
    let config = quick().with_time_limit("configured", limit);
    let mut handle = spawn(
        &db.pool,
        config,
        &[&in_sql, &in_rust, &outside, &configured],
    );
    wait_until(
        "two cancelled calls of each",
        Duration::from_secs(20),
        || handle.stats().iter().all(|s| s.errors >= 2),
    )
    .await;
    assert_eq!(handle.shutdown(Duration::from_secs(5)).await, 0);
    for stats in handle.stats() {
        assert_eq!((stats.panics, stats.partition_ticks), (0, 0), "{stats:?}");
        assert_last_error(&stats, "ran past its time limit of 200ms");
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the Rust future was dropped"
    );
    for probe in [&in_sql, &in_rust, &outside, &configured] {
        for (_, start, end) in probe.calls() {
            if end > start {
                assert!(
                    end - start < limit + Duration::from_secs(2),
                    "{:?}",
                    end - start
                );
            }
        }
    }
    // The server stopped the statements too: none is left running.
    let running = "SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND state = 'active' AND query = 'SELECT pg_sleep(60)'";
    let start = Instant::now();
    while scalar(&db.pool, running).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a pg_sleep outlived its call"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_connection_goes_back_to_the_pool_without_the_time_limit() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    // One connection: every call, and the check after them, use it.
    let pool = db.pool_of(1).await;
    let mut outside = Probe::new("outside", 10, Act::Rows(1));
    outside.mode = TickMode::OutsideTransaction;
    outside.time_limit = Duration::from_secs(7);
    let inside = Arc::new(Probe::new("inside", 10, Act::Rows(1)));
    let outside = Arc::new(outside);
    let mut handle = spawn(&pool, quick(), &[&outside, &inside]);
    wait_until("three calls of each", Duration::from_secs(20), || {
        handle.stats().iter().all(|s| s.partition_ticks >= 3)
    })
    .await;
    assert_eq!(handle.shutdown(Duration::from_secs(5)).await, 0);
    assert!(handle.stats().iter().all(|s| s.errors == 0));
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(timeout, "0");
}

#[tokio::test]
async fn dropping_the_handle_aborts_every_task_at_once() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let dropped = Arc::new(AtomicBool::new(false));
    let hanging = Arc::new(Probe::new("hanging", 20, Act::Hang(dropped.clone())));
    let ticking = Arc::new(Probe::new("ticking", 10, Act::Rows(0)));
    let handle = spawn(&db.pool, quick(), &[&hanging, &ticking]);
    wait_until("both to tick", Duration::from_secs(20), || {
        hanging.started() == 1 && ticking.started() >= 3
    })
    .await;
    drop(handle);
    wait_until(
        "the hanging tick to be dropped",
        Duration::from_secs(2),
        || dropped.load(Ordering::SeqCst),
    )
    .await;
    let calls = ticking.started();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ticking.started(), calls, "a task still ticks");
}

#[tokio::test]
async fn a_tick_outside_a_transaction_runs_what_a_transaction_refuses() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    sqlx::query("CREATE TABLE t (x int)")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut outside = Probe::new("outside", 20, Act::Sql("VACUUM t"));
    outside.mode = TickMode::OutsideTransaction;
    let inside = Arc::new(Probe::new("inside", 20, Act::Sql("VACUUM t")));
    // Each tick sees its own lock: one advisory lock held by its session.
    let locks = "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()";
    let mut outside_locks = Probe::new("outside_locks", 20, Act::Sql(locks));
    outside_locks.mode = TickMode::OutsideTransaction;
    let inside_locks = Arc::new(Probe::new("inside_locks", 20, Act::Sql(locks)));
    let (outside, outside_locks) = (Arc::new(outside), Arc::new(outside_locks));
    let mut handle = spawn(
        &db.pool,
        quick(),
        &[&outside, &inside, &outside_locks, &inside_locks],
    );
    wait_until("three ticks of each", Duration::from_secs(20), || {
        handle.stats().iter().all(|s| s.ticks >= 3)
    })
    .await;
    assert_eq!(handle.shutdown(Duration::from_secs(5)).await, 0);
    let stats = handle.stats();
    assert_eq!((stats[0].errors, stats[0].partition_ticks >= 3), (0, true));
    assert!(stats[1].errors >= 3 && stats[1].partition_ticks == 0);
    assert_last_error(&stats[1], "VACUUM cannot run inside a transaction block");
    for locks in &stats[2..] {
        assert_eq!(locks.rows_changed, locks.partition_ticks, "{locks:?}");
    }
    // The session locks were released: the pool's connections hold none.
    assert_eq!(
        scalar(
            &db.pool,
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
             WHERE l.locktype = 'advisory' AND a.datname = current_database()"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_partitioned_tick_walks_its_partitions_and_stops_between_them_on_shutdown() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let mut walker = Probe::new("walker", 3_600_000, Act::Rows(1));
    walker.scope = Scope::Partitioned(8);
    let mut slow = Probe::new(
        "slow",
        3_600_000,
        Act::Pause(Duration::from_millis(10), false),
    );
    slow.scope = Scope::Partitioned(1_000);
    let (walker, slow) = (Arc::new(walker), Arc::new(slow));
    let mut handle = spawn(&db.pool, quick(), &[&walker, &slow]);
    wait_until("the walker's tick", Duration::from_secs(20), || {
        handle.stats_of("walker").unwrap().ticks == 1
    })
    .await;
    let partitions: Vec<u32> = walker.calls().iter().map(|c| c.0).collect();
    assert_eq!(partitions, (0..8).collect::<Vec<_>>());
    assert_eq!(handle.stats_of("walker").unwrap().rows_changed, 8);

    wait_until("the slow tick to begin", Duration::from_secs(20), || {
        slow.started() >= 5
    })
    .await;
    let start = Instant::now();
    assert_eq!(handle.shutdown(Duration::from_secs(5)).await, 0);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let walked = slow.started();
    assert!(walked < 1_000, "it stopped between partitions: {walked}");
    assert_eq!(handle.stats_of("slow").unwrap().ticks, 1);
}

#[tokio::test]
async fn full_batches_are_called_again_up_to_max_batches() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let batched = |name, rows: &[u64]| {
        let mut probe = Probe::new(
            name,
            3_600_000,
            Act::Sequence(Mutex::new(rows.iter().copied().collect())),
        );
        probe.batch = Some(10);
        Arc::new(probe)
    };
    let drains = batched("drains", &[10, 12, 10, 3, 10]);
    let capped = batched("capped", &[10, 10, 10, 10]);
    let mut capped_config = quick();
    capped_config.max_batches = 2;
    let mut one = spawn(&db.pool, quick(), &[&drains]);
    let mut two = spawn(&db.pool, capped_config, &[&capped]);
    wait_until("a tick of each", Duration::from_secs(20), || {
        one.stats()[0].ticks == 1 && two.stats()[0].ticks == 1
    })
    .await;
    one.shutdown(Duration::from_secs(5)).await;
    two.shutdown(Duration::from_secs(5)).await;
    assert_eq!(drains.started(), 4, "called until a batch came back short");
    assert_eq!(one.stats()[0].rows_changed, 35);
    assert_eq!(capped.started(), 2, "max_batches");
    assert_eq!(two.stats()[0].rows_changed, 20);
}

#[tokio::test]
async fn missed_ticks_are_delayed_not_burst() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    let late = Arc::new(Probe::new(
        "late",
        50,
        Act::Pause(Duration::from_millis(400), true),
    ));
    let mut handle = spawn(&db.pool, quick(), &[&late]);
    wait_until("six ticks", Duration::from_secs(20), || late.started() >= 6).await;
    handle.shutdown(Duration::from_secs(5)).await;
    let calls = late.calls();
    // The first tick overran eight intervals. A burst would start the
    // missed ones back to back; delayed, at most one starts at once and
    // the rest keep the interval.
    let back_to_back = calls
        .windows(2)
        .filter(|pair| pair[1].1 - pair[0].2 < Duration::from_millis(25))
        .count();
    assert!(back_to_back <= 1, "{back_to_back} ticks started at once");
}

#[tokio::test]
async fn bad_settings_are_refused_before_anything_starts() {
    // Nothing connects: the pool is never used.
    let pool = PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .unwrap();
    let probe = |name| Arc::new(Probe::new(name, 10, Act::Rows(0))) as Arc<dyn Reconciler>;
    let mut no_partitions = Probe::new("empty", 10, Act::Rows(0));
    no_partitions.scope = Scope::Partitioned(0);
    type Case = (Config, Vec<Arc<dyn Reconciler>>, &'static str);
    let cases: Vec<Case> = vec![
        (quick(), vec![probe("a"), probe("a")], "'a' is given twice"),
        (quick(), vec![probe("")], "invalid reconciler name: empty"),
        (
            quick(),
            vec![Arc::new(no_partitions)],
            "invalid scope of empty: 0 partitions",
        ),
        (
            quick().with_interval("a", Duration::ZERO),
            vec![probe("a")],
            "invalid interval of a: zero",
        ),
        (
            quick().with_interval("lease_expiry", Duration::from_secs(1)),
            vec![probe("a"), probe("b")],
            "invalid interval of 'lease_expiry': no reconciler has that name (they are: a, b)",
        ),
        (
            quick().with_time_limit("a", Duration::ZERO),
            vec![probe("a")],
            "invalid time limit of a: zero",
        ),
        (
            quick().with_time_limit("b", Duration::from_secs(1)),
            vec![probe("a")],
            "invalid time limit of 'b': no reconciler has that name (they are: a)",
        ),
        (
            Config {
                max_batches: 0,
                ..quick()
            },
            vec![probe("a")],
            "invalid max_batches",
        ),
    ];
    for (config, reconcilers, says) in cases {
        let err = spawn_reconcilers(pool.clone(), config, reconcilers)
            .expect_err(says)
            .to_string();
        assert!(err.contains(says), "{err}");
    }
}
