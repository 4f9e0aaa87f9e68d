//! The tasks that tick the reconcilers, and the handle that stops them.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::ops::{Deref, DerefMut};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::stats::{CallOutcome, Figures, ReconcilerStats};
use crate::{Reconciler, Scope, TickError, TickMode};

/// Starts one task per reconciler on the current tokio runtime, each
/// ticking on its interval (see the [crate] documentation for what a
/// tick does) until [`ReconcilerHandle::shutdown`].
///
/// Every task is in the handle's set when this returns: a shutdown right
/// after it stops them all.
///
/// Refuses (before starting anything) two reconcilers of one name, an
/// empty name, a zero interval or time limit, a partitioned scope of no
/// partitions, an interval or time-limit override for a name no reconciler
/// has, `max_batches` of 0, and a call from outside a tokio runtime.
pub fn spawn_reconcilers(
    pool: PgPool,
    config: Config,
    reconcilers: Vec<Arc<dyn Reconciler>>,
) -> Result<ReconcilerHandle> {
    let tasks = plan(&pool, &config, reconcilers)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::invalid(
            "runtime",
            "spawn_reconcilers must be called within a tokio runtime",
        )
    })?;
    let (stop, stopped) = watch::channel(false);
    let mut set = JoinSet::new();
    let figures = tasks.iter().map(|task| task.figures.clone()).collect();
    for task in tasks {
        set.spawn_on(task.run(stopped.clone()), &runtime);
    }
    Ok(ReconcilerHandle {
        tasks: set,
        stop,
        figures,
        shut_down: false,
    })
}

/// Checks the reconcilers and the configuration, and makes their tasks.
fn plan(
    pool: &PgPool,
    config: &Config,
    reconcilers: Vec<Arc<dyn Reconciler>>,
) -> Result<Vec<Task>> {
    if config.max_batches == 0 {
        return Err(Error::invalid("max_batches", "0 (must be 1 or more)"));
    }
    let mut names = BTreeSet::new();
    for reconciler in &reconcilers {
        let name = reconciler.name();
        if name.is_empty() {
            return Err(Error::invalid("reconciler name", "empty"));
        }
        if !names.insert(name.to_owned()) {
            return Err(Error::invalid(
                "reconciler name",
                format!("'{name}' is given twice"),
            ));
        }
        if let Scope::Partitioned(n) = reconciler.scope()
            && (n == 0 || n > i32::MAX as u32)
        {
            return Err(Error::invalid(
                format!("scope of {name}"),
                format!("{n} partitions (must be 1 to {})", i32::MAX),
            ));
        }
    }
    for (setting, overrides) in [
        ("interval", &config.intervals),
        ("time limit", &config.time_limits),
    ] {
        if let Some(unknown) = overrides.keys().find(|n| !names.contains(*n)) {
            let known: Vec<&str> = names.iter().map(String::as_str).collect();
            return Err(Error::invalid(
                format!("{setting} of '{unknown}'"),
                format!(
                    "no reconciler has that name (they are: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    let random = std::collections::hash_map::RandomState::new();
    reconcilers
        .into_iter()
        .map(|reconciler| {
            let name = reconciler.name().to_owned();
            let interval = config
                .intervals
                .get(&name)
                .copied()
                .unwrap_or_else(|| reconciler.interval());
            let time_limit = config
                .time_limits
                .get(&name)
                .copied()
                .unwrap_or_else(|| reconciler.time_limit());
            if interval.is_zero() || time_limit.is_zero() {
                let setting = if interval.is_zero() {
                    "interval"
                } else {
                    "time limit"
                };
                return Err(Error::invalid(format!("{setting} of {name}"), "zero"));
            }
            let phase = config
                .max_phase
                .min(interval)
                .mul_f64((random.hash_one(&name) >> 11) as f64 / (1u64 << 53) as f64);
            Ok(Task {
                pool: pool.clone(),
                lock_key: lock_key(&name),
                phase,
                time_limit,
                max_batches: config.max_batches,
                figures: Arc::new(Figures::new(name, interval)),
                reconciler,
            })
        })
        .collect()
}

/// The first half of a reconciler's advisory lock key (the partition is
/// the second): FNV-1a (32-bit) of its name, so that every node of a
/// fleet computes the same key. It shares Postgres's two-key advisory
/// lock space with whatever else the database runs.
fn lock_key(name: &str) -> i32 {
    let hash = name.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash as i32
}

/// The tasks of [`spawn_reconcilers`], their figures, and the way to stop
/// them.
///
/// Dropping the handle without [`shutdown`](ReconcilerHandle::shutdown)
/// aborts every task at once (at its next await point), in the middle of
/// a tick if need be: the tick's transaction is rolled back and its
/// connection closed. Call `shutdown` to let running ticks finish.
#[derive(Debug)]
pub struct ReconcilerHandle {
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    figures: Vec<Arc<Figures>>,
    shut_down: bool,
}

impl ReconcilerHandle {
    /// The figures of every reconciler, in the order they were given.
    pub fn stats(&self) -> Vec<ReconcilerStats> {
        self.figures.iter().map(|f| f.snapshot()).collect()
    }

    /// The figures of the reconciler called `name`.
    pub fn stats_of(&self, name: &str) -> Option<ReconcilerStats> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.snapshot())
    }

    /// How many tasks are still running.
    pub fn running(&self) -> usize {
        self.tasks.len()
    }

    /// Asks every task to stop (a task between ticks stops at once, a
    /// task in a tick after the partition it is on), waits up to `grace`
    /// for them, aborts the rest and returns how many it aborted. A
    /// second call returns 0 at once.
    pub async fn shutdown(&mut self, grace: Duration) -> usize {
        if self.shut_down {
            return 0;
        }
        self.shut_down = true;
        self.stop.send_replace(true);
        let deadline = Instant::now() + grace;
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, self.tasks.join_next()).await
        {
            if let Err(err) = joined {
                tracing::warn!(error = %err, "a reconciler task ended abnormally");
            }
        }
        let aborted = self.tasks.len();
        if aborted > 0 {
            tracing::warn!(
                aborted,
                grace_ms = grace.as_millis() as u64,
                "reconciler tasks still busy after the grace period were aborted"
            );
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        aborted
    }
}

/// One reconciler's loop.
struct Task {
    pool: PgPool,
    reconciler: Arc<dyn Reconciler>,
    lock_key: i32,
    phase: Duration,
    time_limit: Duration,
    max_batches: u32,
    figures: Arc<Figures>,
}

impl Task {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut ticker =
            tokio::time::interval_at(Instant::now() + self.phase, self.figures.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                // Also ends the loop when the handle is gone.
                _ = stop.wait_for(|stop| *stop) => return,
                _ = ticker.tick() => {}
            }
            self.tick(&stop).await;
        }
    }

    /// One tick: every partition once, or more while a batched reconciler
    /// returns full batches; stops early when asked to.
    async fn tick(&self, stop: &watch::Receiver<bool>) {
        let started = Instant::now();
        let name = self.figures.name.as_str();
        let batch = self.reconciler.batch();
        let mut changed = 0;
        'partitions: for partition in self.reconciler.scope().partitions() {
            for _ in 0..self.max_batches {
                if *stop.borrow() {
                    break 'partitions;
                }
                let outcome = self.call(partition).await;
                self.figures.record_call(&outcome);
                match outcome {
                    CallOutcome::Changed(rows) => {
                        changed += rows;
                        if batch.is_none_or(|batch| rows < batch) {
                            break;
                        }
                    }
                    CallOutcome::Skipped => break,
                    CallOutcome::Failed(error) => {
                        tracing::warn!(reconciler = name, partition, %error, "reconciler tick failed");
                        break;
                    }
                    CallOutcome::Panicked(error) => {
                        tracing::warn!(reconciler = name, partition, %error, "reconciler tick panicked");
                        break;
                    }
                }
            }
        }
        let took = started.elapsed();
        self.figures.record_tick(took);
        let took_ms = took.as_secs_f64() * 1e3;
        if changed > 0 {
            tracing::info!(
                reconciler = name,
                rows_changed = changed,
                took_ms,
                "reconciler tick"
            );
        } else {
            tracing::debug!(
                reconciler = name,
                rows_changed = changed,
                took_ms,
                "reconciler tick"
            );
        }
    }

    /// One call of the reconciler on `partition`, panics caught.
    async fn call(&self, partition: u32) -> CallOutcome {
        match AssertUnwindSafe(self.locked_call(partition))
            .catch_unwind()
            .await
        {
            Ok(Ok(Some(rows))) => CallOutcome::Changed(rows),
            Ok(Ok(None)) => CallOutcome::Skipped,
            Ok(Err(err)) => CallOutcome::Failed(err.to_string()),
            Err(panic) => CallOutcome::Panicked(panic_message(panic.as_ref())),
        }
    }

    /// The call under the (reconciler, partition) advisory lock: `None`
    /// when another session holds it.
    async fn locked_call(&self, partition: u32) -> Result<Option<u64>> {
        let mut conn = Leased::acquire(&self.pool).await?;
        let key = (self.lock_key, partition as i32);
        match self.reconciler.mode() {
            TickMode::InTransaction => {
                let mut tx = conn.begin().await?;
                // The lock and the call's statement_timeout in one round trip.
                let locked: bool = sqlx::query_scalar(
                    "SELECT pg_try_advisory_xact_lock($1, $2)
                     FROM set_config('statement_timeout', $3, true)",
                )
                .bind(key.0)
                .bind(key.1)
                .bind(self.statement_timeout())
                .fetch_one(&mut *tx)
                .await?;
                if !locked {
                    tx.rollback().await?;
                    conn.release();
                    return Ok(None);
                }
                let ticked = self.limited_tick(&mut tx, partition).await?;
                match ticked {
                    Ok(_) => tx.commit().await?,
                    Err(_) => tx.rollback().await?,
                }
                conn.release();
                self.outcome(ticked)
            }
            TickMode::OutsideTransaction => {
                if !advisory(&mut conn, "SELECT pg_try_advisory_lock($1, $2)", key).await? {
                    conn.release();
                    return Ok(None);
                }
                sqlx::query("SELECT set_config('statement_timeout', $1, false)")
                    .bind(self.statement_timeout())
                    .execute(&mut *conn)
                    .await?;
                let ticked = self.limited_tick(&mut conn, partition).await?;
                sqlx::query("RESET statement_timeout")
                    .execute(&mut *conn)
                    .await?;
                if advisory(&mut conn, "SELECT pg_advisory_unlock($1, $2)", key).await? {
                    conn.release();
                }
                self.outcome(ticked)
            }
        }
    }

    /// The time limit as a value of `statement_timeout` (milliseconds).
    fn statement_timeout(&self) -> String {
        let millis = self.time_limit.as_millis().clamp(1, i32::MAX as u128);
        millis.to_string()
    }

    /// The reconciler's tick, dropped at the time limit. The caller's
    /// connection, left mid-call, is then closed (see [`Leased`]).
    async fn limited_tick(
        &self,
        conn: &mut PgConnection,
        partition: u32,
    ) -> Result<Result<u64, TickError>> {
        tokio::time::timeout(self.time_limit, self.reconciler.tick(conn, partition, None))
            .await
            .map_err(|_| Error::TimedOut(self.time_limit))
    }

    /// A finished tick's result; a statement the server cancelled at the
    /// time limit (found anywhere in the error's chain of sources) is
    /// reported as the limit, like a call dropped at it.
    fn outcome(&self, ticked: Result<u64, TickError>) -> Result<Option<u64>> {
        ticked.map(Some).map_err(|error| {
            let first: &(dyn std::error::Error + 'static) = error.as_ref();
            let cancelled = std::iter::successors(Some(first), |e| e.source()).any(|e| {
                e.downcast_ref::<sqlx::Error>()
                    .and_then(sqlx::Error::as_database_error)
                    .and_then(|db| db.code())
                    .is_some_and(|code| code == QUERY_CANCELED)
            });
            if cancelled {
                Error::TimedOut(self.time_limit)
            } else {
                Error::Tick(error)
            }
        })
    }
}

/// The SQLSTATE of a statement cancelled by `statement_timeout` (or by
/// `pg_cancel_backend`, which a tick would not call on itself).
const QUERY_CANCELED: &str = "57014";

/// Runs `sql`, a call of an advisory lock function of two keys (`$1`, `$2`)
/// that answers whether it took (or released) the lock.
async fn advisory(conn: &mut PgConnection, sql: &'static str, key: (i32, i32)) -> Result<bool> {
    Ok(sqlx::query_scalar(sql)
        .bind(key.0)
        .bind(key.1)
        .fetch_one(conn)
        .await?)
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)");
    format!("panicked: {text}")
}

/// A pooled connection that goes back to the pool only when
/// [`release`](Leased::release)d: dropped anywhere else (a panic, an
/// abort, a failed unlock) it is closed, so that no advisory lock, open
/// transaction or half-read result reaches the pool's next user.
struct Leased {
    conn: PoolConnection<Postgres>,
    released: bool,
}

impl Leased {
    async fn acquire(pool: &PgPool) -> Result<Leased> {
        Ok(Leased {
            conn: pool.acquire().await?,
            released: false,
        })
    }

    fn release(mut self) {
        self.released = true;
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        if !self.released {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for Leased {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Leased {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_the_same_on_every_node_and_differ_by_name() {
        assert_eq!(lock_key("lease_expiry"), lock_key("lease_expiry"));
        assert_ne!(lock_key("lease_expiry"), lock_key("attempt_timeout"));
        // FNV-1a of "a", a known value.
        assert_eq!(lock_key("a") as u32, 0xe40c_292c);
    }
}
