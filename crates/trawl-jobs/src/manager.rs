//! [`WorkerManager`]: claims jobs, runs them on their workers, records how
//! they ended, keeps their leases, and shuts down without losing any.
//!
//! Tasks of a running manager, all on the caller's tokio runtime:
//!
//! - one **claim loop** per queue ([`crate::claimer`]): claims jobs (`FOR
//!   UPDATE SKIP LOCKED`) for the free slots, and short jobs a claim ahead,
//!   and spawns one task per job as slots free up; when its queue runs dry
//!   it sleeps until a notification on [`NOTIFY_CHANNEL`] or the poll
//!   interval;
//! - the **listener**: LISTEN on its own connection, wakes the claim loop
//!   of the queue an enqueue names;
//! - one **task per job**: runs the worker under the attempt's timeout,
//!   turns its result (or panic) into an [`Outcome`], frees its capacity
//!   and hands the outcome to the completer;
//! - the **completer** ([`crate::completer`]): records outcomes in batches;
//! - the **heartbeat**: renews the leases of every job the manager holds
//!   (running, or finished but not yet recorded), refreshes the registry
//!   row, and stops jobs that were cancelled or whose lease was lost.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use trawl_retry::Rng;

use crate::breaker::{Breakers, Change};
use crate::claim::{ClaimedJob, Completion, Limited, Outcome};
use crate::completer::{Finished, run_completer};
use crate::config::WorkerConfig;
use crate::error::{Error, Result};
use crate::events::{ClusterEvent, publish};
use crate::queue::NOTIFY_CHANNEL;
use crate::registry::{WorkerRow, worker_deregister, worker_heartbeat, worker_register};
use crate::worker::{JobContext, JobResult, MetricSummary, Metrics, StopReason, Workers};

/// Runs registered [`Workers`] on the jobs of some queues. See the crate
/// documentation for a complete example.
#[derive(Debug)]
pub struct WorkerManager {
    pool: PgPool,
    config: WorkerConfig,
    workers: Workers,
}

impl WorkerManager {
    /// A manager of `workers` on `pool`, configured by `config`.
    ///
    /// Fails with [`Error::Invalid`] when the configuration is wrong, no
    /// worker is registered, or the pool is too small: while it runs, the
    /// manager holds [`WorkerConfig::connections_needed`] connections of
    /// `pool`.
    pub fn new(pool: PgPool, config: WorkerConfig, workers: Workers) -> Result<WorkerManager> {
        config.validate()?;
        if workers.is_empty() {
            return Err(Error::invalid("workers", "register at least one worker"));
        }
        let needed = config.connections_needed();
        let max = pool.options().get_max_connections();
        if max < needed {
            return Err(Error::invalid(
                "pool",
                format!(
                    "max_connections is {max}, the manager holds {needed} ({} queue(s), \
                     heartbeats, completions)",
                    config.queues.len()
                ),
            ));
        }
        Ok(WorkerManager {
            pool,
            config,
            workers,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Registers the worker, starts listening for enqueues, and starts
    /// claiming. Returns once the worker is registered and listening (a job
    /// enqueued after this wakes it); fails if the database cannot be
    /// reached then.
    pub async fn start(self) -> Result<WorkerHandle> {
        let WorkerManager {
            pool,
            config,
            workers,
        } = self;
        let health = workers.health();
        let row = WorkerRow {
            id: &config.worker_id,
            queues: &config.queues,
            max_concurrent: u32::try_from(config.max_concurrent_jobs).unwrap_or(u32::MAX),
            healthy: health.iter().all(|(_, ok)| *ok),
            running: 0,
        };
        let mut conn = pool.acquire().await?;
        if let Some(previous) = worker_register(&mut conn, &row).await? {
            let age = Utc::now() - previous;
            if age < chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::MAX) {
                tracing::warn!(
                    worker_id = %config.worker_id,
                    "a worker with this id heartbeated {} ms ago: worker ids must be unique \
                     among live workers",
                    age.num_milliseconds()
                );
            }
        }
        let listener = listen(&pool, config.lease).await?;

        let seed = config.seed.unwrap_or_else(|| {
            let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
            nanos ^ u64::from(crate::reconcile::worker_partition(&config.worker_id) as u16) << 48
        });
        let root = CancellationToken::new();
        let (sender, receiver) = mpsc::unbounded_channel();
        let wake = config
            .queues
            .iter()
            .map(|q| (q.clone(), Arc::new(Notify::new())))
            .collect();
        let shared = Arc::new(Shared {
            capacity: Arc::new(Semaphore::new(config.max_concurrent_jobs)),
            unrecorded: Semaphore::new(
                config.max_concurrent_jobs
                    + 2 * config.claim_batch as usize
                    + config.completion_batch,
            ),
            rng: Mutex::new(Rng::new(seed)),
            reconnect_rng: Mutex::new(Rng::new(seed.rotate_left(17))),
            pool,
            workers,
            metrics: Arc::new(Metrics::default()),
            held: Mutex::new(HashMap::new()),
            wake,
            stop_claiming: root.child_token(),
            stop_heartbeat: root.child_token(),
            root,
            jobs: TaskTracker::new(),
            status: Mutex::new(Status {
                last_heartbeat: Some(Utc::now()),
                connected: true,
            }),
            stats: Stats::default(),
            job_micros: SharedAverage::default(),
            limits: Mutex::new(HashMap::new()),
            breakers: Breakers::new(config.breaker),
            config,
        });
        shared.read_limits(&mut conn).await?;
        drop(conn);

        let claimers = shared
            .config
            .queues
            .iter()
            .map(|queue| {
                let (shared, sender, queue) = (shared.clone(), sender.clone(), queue.clone());
                let span = tracing::debug_span!("claim_loop", queue = %queue);
                tokio::spawn(crate::claimer::claim_loop(shared, queue, sender).instrument(span))
            })
            .collect();
        drop(sender);
        let listener = tokio::spawn(listen_loop(shared.clone(), listener));
        let completer = tokio::spawn(run_completer(shared.clone(), receiver));
        let heartbeat = tokio::spawn(heartbeat_loop(shared.clone()));
        let maintenance = shared
            .config
            .maintenance_interval
            .map(|every| tokio::spawn(maintenance_loop(shared.clone(), every)));
        tracing::info!(
            worker_id = %shared.config.worker_id,
            queues = ?shared.config.queues,
            max_concurrent_jobs = shared.config.max_concurrent_jobs,
            "worker manager started"
        );
        Ok(WorkerHandle {
            shared,
            tasks: Some(Tasks {
                claimers,
                listener,
                completer,
                heartbeat,
                maintenance,
            }),
        })
    }
}

/// State shared by the tasks of a running manager.
pub(crate) struct Shared {
    pub(crate) config: WorkerConfig,
    pub(crate) pool: PgPool,
    workers: Workers,
    metrics: Arc<Metrics>,
    /// Every job leased to this manager whose outcome is not yet recorded.
    pub(crate) held: Mutex<HashMap<i64, Held>>,
    /// Free processing slots: one permit per running job.
    pub(crate) capacity: Arc<Semaphore>,
    /// Room for jobs claimed but not yet recorded: taken (and forgotten) by
    /// a claim, given back by the completer.
    pub(crate) unrecorded: Semaphore,
    rng: Mutex<Rng>,
    reconnect_rng: Mutex<Rng>,
    /// Wakes the claim loop of a queue.
    pub(crate) wake: HashMap<String, Arc<Notify>>,
    root: CancellationToken,
    pub(crate) stop_claiming: CancellationToken,
    stop_heartbeat: CancellationToken,
    jobs: TaskTracker,
    status: Mutex<Status>,
    pub(crate) stats: Stats,
    /// How long jobs take to process (for claiming ahead).
    pub(crate) job_micros: SharedAverage,
    /// The limits each queue's claims take into account, read at the start
    /// and at every heartbeat.
    limits: Mutex<HashMap<String, Limited>>,
    /// The circuit breaker of each job kind.
    pub(crate) breakers: Breakers,
}

/// A job leased to the manager.
pub(crate) struct Held {
    pub(crate) attempt: u32,
    /// Its context while it runs; `None` once its outcome is with the
    /// completer.
    ctx: Option<JobContext>,
}

struct Status {
    last_heartbeat: Option<DateTime<Utc>>,
    connected: bool,
}

impl Shared {
    /// Feeds an attempt's end to its kind's breaker, and reports a change.
    fn breaker_record(&self, kind: &str, outcome: &Outcome, ran: bool) {
        let failed = match outcome {
            Outcome::Succeeded | Outcome::Skipped(_) => false,
            Outcome::Retry { .. } | Outcome::Dead(_) if ran => true,
            _ => return,
        };
        let change = self.breakers.record(kind, failed);
        match &change {
            Some(Change::Opened(kind)) => {
                self.stats.breakers_opened.fetch_add(1, Ordering::Relaxed);
                let cool_down = self.config.breaker.map(|b| b.cool_down).unwrap_or_default();
                tracing::warn!(
                    worker_id = %self.config.worker_id,
                    kind,
                    ?cool_down,
                    "circuit breaker opened: not claiming this kind for the cool-down"
                );
            }
            Some(Change::Closed(kind)) => {
                tracing::info!(
                    worker_id = %self.config.worker_id,
                    kind,
                    "circuit breaker closed: claiming this kind again"
                );
            }
            None => return,
        }
        let worker_id = self.config.worker_id.clone();
        let event = match change {
            Some(Change::Opened(kind)) => ClusterEvent::BreakerOpened { worker_id, kind },
            Some(Change::Closed(kind)) => ClusterEvent::BreakerClosed { worker_id, kind },
            None => return,
        };
        // Best effort: the event is a hint, the breaker works without it.
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let published = tokio::time::timeout(Duration::from_secs(5), async {
                let mut conn = pool.acquire().await?;
                publish(&mut conn, &event).await
            })
            .await;
            if !matches!(published, Ok(Ok(()))) {
                tracing::debug!("cannot publish a breaker event");
            }
        });
    }

    /// The limits of `queue` as last read.
    pub(crate) fn limits_of(&self, queue: &str) -> Limited {
        let limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        limits.get(queue).copied().unwrap_or_default()
    }

    /// Reads the limits of every queue of the manager.
    async fn read_limits(&self, conn: &mut PgConnection) -> Result<()> {
        let mut read = HashMap::new();
        for queue in &self.config.queues {
            read.insert(queue.clone(), Limited::read(conn, queue).await?);
        }
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = read;
        Ok(())
    }

    /// The wait before the next try after `failures` database errors in a
    /// row.
    pub(crate) fn reconnect_delay(&self, failures: u32) -> Duration {
        let mut rng = self.reconnect_rng.lock().unwrap_or_else(|e| e.into_inner());
        self.config.reconnect.backoff(failures.max(1), &mut rng)
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connected = connected;
    }

    /// Forgets jobs whose outcome is recorded (or given up on).
    pub(crate) fn release_held(&self, done: impl IntoIterator<Item = (i64, u32)>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for (id, attempt) in done {
            if held.get(&id).is_some_and(|h| h.attempt == attempt) {
                held.remove(&id);
            }
        }
    }

    /// A connection from the pool, retried with backoff until `stop` fires
    /// (then `None`).
    pub(crate) async fn connect(
        &self,
        stop: &CancellationToken,
        failures: &mut u32,
    ) -> Option<PoolConnection<Postgres>> {
        loop {
            let acquired = tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                acquired = tokio::time::timeout(self.config.lease, self.pool.acquire()) => acquired,
            };
            match acquired {
                Ok(Ok(conn)) => return Some(conn),
                Ok(Err(err)) => {
                    self.set_connected(false);
                    tracing::warn!(error = %err, "cannot reach the job queue's database");
                }
                Err(_) => {
                    self.set_connected(false);
                    tracing::warn!("timed out waiting for a connection to the job queue");
                }
            }
            *failures += 1;
            if !self.pause(stop, *failures).await {
                return None;
            }
        }
    }

    /// Sleeps the reconnect backoff of `failures`; `false` if `stop` fired.
    pub(crate) async fn pause(&self, stop: &CancellationToken, failures: u32) -> bool {
        let delay = self.reconnect_delay(failures);
        tokio::select! {
            biased;
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// A running average of durations in microseconds (each new value weighs
/// 1/8), owned by one task.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Average(Option<u64>);

impl Average {
    pub(crate) fn add(&mut self, duration: Duration) {
        let value = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.0 = Some(match self.0 {
            Some(avg) => avg - avg / 8 + value / 8,
            None => value,
        });
    }

    pub(crate) fn get(&self) -> Option<u64> {
        self.0
    }
}

/// [`Average`] updated by many tasks. An update that races another may be
/// lost: it is an estimate.
#[derive(Debug, Default)]
pub(crate) struct SharedAverage(AtomicU64);

impl SharedAverage {
    /// Stored plus one, so that 0 means "nothing yet".
    fn add(&self, duration: Duration) {
        let mut average = Average(self.get());
        average.add(duration);
        let stored = average.0.unwrap_or_default().saturating_add(1);
        self.0.store(stored, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Option<u64> {
        self.0.load(Ordering::Relaxed).checked_sub(1)
    }
}

/// Counts of recorded outcomes.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) claimed: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) suspended: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) breakers_opened: AtomicU64,
}

impl Stats {
    pub(crate) fn count(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Succeeded => &self.succeeded,
            Outcome::Skipped(_) => &self.skipped,
            Outcome::Retry { .. } => &self.retried,
            Outcome::Dead(_) => &self.dead,
            Outcome::Cancelled => &self.cancelled,
            Outcome::Released(_) => &self.released,
            Outcome::Suspend { .. } => &self.suspended,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many jobs a manager claimed and how their attempts were recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Jobs claimed.
    pub claimed: u64,
    /// Attempts recorded as succeeded.
    pub succeeded: u64,
    /// Attempts recorded as skipped.
    pub skipped: u64,
    /// Attempts failed, with the job retried later.
    pub retried: u64,
    /// Attempts that made the job a dead letter.
    pub dead: u64,
    /// Attempts stopped by a cancel.
    pub cancelled: u64,
    /// Attempts given back unfinished (at shutdown, or claimed with the
    /// answer lost).
    pub released: u64,
    /// Attempts that suspended their job.
    pub suspended: u64,
    /// Outcomes not recorded because the lease had gone to another worker
    /// meanwhile.
    pub stale: u64,
    /// Outcomes the database kept refusing (not a lost connection): given
    /// up, their jobs left to lease expiry.
    pub abandoned: u64,
    /// Times a job kind's circuit breaker opened.
    pub breakers_opened: u64,
}

/// A manager's health.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WorkerHealth {
    /// The worker's id.
    pub worker_id: String,
    /// Connected, every worker healthy, and claiming.
    pub healthy: bool,
    /// Whether the last statement against the database succeeded.
    pub connected: bool,
    /// When the last heartbeat succeeded (this machine's clock).
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Jobs being processed now.
    pub running: usize,
    /// Each job kind with its worker's `health_check`, sorted by kind.
    pub workers: Vec<(String, bool)>,
    /// Whether it still claims jobs (it stops at shutdown).
    pub claiming: bool,
    /// The job kinds whose circuit breaker is open (or letting a probe
    /// through), sorted: the manager does not claim them.
    pub open_breakers: Vec<String>,
}

/// What [`WorkerHandle::shutdown`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Jobs that were still running when the grace period ended, stopped
    /// and released back to their queue.
    pub released: usize,
    /// Outcomes that could not be recorded before the manager gave up on the
    /// database: their jobs go back to the queue when their leases expire.
    pub unrecorded: usize,
}

struct Tasks {
    claimers: Vec<JoinHandle<()>>,
    listener: JoinHandle<()>,
    completer: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    maintenance: Option<JoinHandle<()>>,
}

/// A running [`WorkerManager`]. Shut it down with
/// [`shutdown`](Self::shutdown); dropping it stops the manager abruptly:
/// claiming and heartbeats stop and running jobs are stopped and released
/// as at the end of a shutdown's grace, without waiting for any of it.
pub struct WorkerHandle {
    shared: Arc<Shared>,
    tasks: Option<Tasks>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("worker_id", &self.shared.config.worker_id)
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// The worker's id.
    pub fn worker_id(&self) -> &str {
        &self.shared.config.worker_id
    }

    /// Jobs being processed now.
    pub fn running(&self) -> usize {
        let held = self.shared.held.lock().unwrap_or_else(|e| e.into_inner());
        held.values().filter(|h| h.ctx.is_some()).count()
    }

    /// The manager's health: its connection, last heartbeat, running jobs,
    /// and each worker's `health_check`.
    pub fn health(&self) -> WorkerHealth {
        let workers = self.shared.workers.health();
        let (last_heartbeat, connected) = {
            let status = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
            (status.last_heartbeat, status.connected)
        };
        let claiming = !self.shared.stop_claiming.is_cancelled();
        WorkerHealth {
            worker_id: self.shared.config.worker_id.clone(),
            healthy: connected && claiming && workers.iter().all(|(_, ok)| *ok),
            connected,
            last_heartbeat,
            running: self.running(),
            workers,
            claiming,
            open_breakers: self.shared.breakers.open(),
        }
    }

    /// Counts of claimed jobs and recorded outcomes.
    pub fn stats(&self) -> WorkerStats {
        let s = &self.shared.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerStats {
            claimed: get(&s.claimed),
            succeeded: get(&s.succeeded),
            skipped: get(&s.skipped),
            retried: get(&s.retried),
            dead: get(&s.dead),
            cancelled: get(&s.cancelled),
            released: get(&s.released),
            suspended: get(&s.suspended),
            stale: get(&s.stale),
            abandoned: get(&s.abandoned),
            breakers_opened: get(&s.breakers_opened),
        }
    }

    /// The aggregates of [`JobContext::record_metric`], by kind and name.
    pub fn metrics(&self) -> Vec<MetricSummary> {
        self.shared.metrics.snapshot()
    }

    /// Stops the manager: claiming stops at once; running jobs get `grace`
    /// to finish; those still running then are stopped (their tokens fire,
    /// their futures are dropped) and released, pending again at once for
    /// another worker, without using up an attempt. Every outcome is
    /// recorded (the database gets up to one lease period more, if it is
    /// unreachable), then the worker leaves the registry.
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        let Some(tasks) = self.tasks.take() else {
            return ShutdownReport::default();
        };
        let shared = self.shared.clone();
        shared.stop_claiming.cancel();
        for claimer in tasks.claimers {
            let _ = claimer.await;
        }
        let _ = tasks.listener.await;
        tracing::info!(worker_id = %shared.config.worker_id, "shutting down: claiming stopped");

        // Every permit back means nothing runs any more.
        let all = u32::try_from(shared.config.max_concurrent_jobs).unwrap_or(u32::MAX);
        let idle = tokio::time::timeout(grace, shared.capacity.acquire_many(all)).await;
        let mut report = ShutdownReport::default();
        if idle.is_err() {
            report.released = stop_all(&shared, StopReason::Shutdown);
            tracing::info!(
                worker_id = %shared.config.worker_id,
                released = report.released,
                "grace period over: releasing the jobs still running"
            );
        }
        drop(idle);
        shared.jobs.close();
        shared.jobs.wait().await;

        // The completer ends once every job task has handed over its outcome.
        let mut completer = tasks.completer;
        if tokio::time::timeout(shared.config.lease, &mut completer)
            .await
            .is_err()
        {
            completer.abort();
            let _ = completer.await;
        }
        report.unrecorded = shared.held.lock().unwrap_or_else(|e| e.into_inner()).len();
        if report.unrecorded > 0 {
            tracing::warn!(
                worker_id = %shared.config.worker_id,
                unrecorded = report.unrecorded,
                "outcomes not recorded: their jobs return to the queue when their leases expire"
            );
        }
        shared.stop_heartbeat.cancel();
        let _ = tasks.heartbeat.await;
        if let Some(maintenance) = tasks.maintenance {
            let _ = maintenance.await;
        }
        let deregistered = tokio::time::timeout(shared.config.lease, async {
            let mut conn = shared.pool.acquire().await?;
            worker_deregister(&mut conn, &shared.config.worker_id).await
        })
        .await;
        if !matches!(deregistered, Ok(Ok(()))) {
            tracing::warn!(
                worker_id = %shared.config.worker_id,
                "cannot remove the worker from the registry (the TTL sweep will)"
            );
        }
        tracing::info!(worker_id = %shared.config.worker_id, "worker manager stopped");
        report
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if self.tasks.take().is_some() {
            self.shared.root.cancel();
            stop_all(&self.shared, StopReason::Shutdown);
        }
    }
}

/// Stops every running job for `reason`; returns how many.
fn stop_all(shared: &Shared, reason: StopReason) -> usize {
    let held = shared.held.lock().unwrap_or_else(|e| e.into_inner());
    held.values()
        .filter_map(|h| h.ctx.as_ref())
        .filter(|ctx| ctx.stop(reason))
        .count()
}

/// LISTEN on a connection of its own (a pool of one, outside the caller's
/// pool, so that it never takes a connection the claim loops need).
async fn listen(pool: &PgPool, limit: Duration) -> Result<PgListener> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(limit)
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut listener = PgListener::connect_with(&own).await?;
    listener.ignore_pool_close_event(true);
    tokio::time::timeout(limit, listener.listen(NOTIFY_CHANNEL))
        .await
        .map_err(|_| Error::Database(sqlx::Error::PoolTimedOut))??;
    Ok(listener)
}

/// Wakes claim loops on notifications; reconnects (with backoff) when its
/// connection is lost, then wakes every loop, since notifications sent
/// meanwhile are gone.
async fn listen_loop(shared: Arc<Shared>, listener: PgListener) {
    let stop = shared.stop_claiming.clone();
    let mut listener = Some(listener);
    let mut failures = 0u32;
    loop {
        let mut current = match listener.take() {
            Some(current) => current,
            None => {
                let connected = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    connected = listen(&shared.pool, shared.config.lease) => connected,
                };
                match connected {
                    Ok(current) => {
                        failures = 0;
                        for wake in shared.wake.values() {
                            wake.notify_one();
                        }
                        current
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot LISTEN for enqueued jobs");
                        failures += 1;
                        if !shared.pause(&stop, failures).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        loop {
            let received = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                received = current.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => {
                    if let Some(wake) = shared.wake.get(notification.payload()) {
                        wake.notify_one();
                    }
                }
                Ok(None) => {
                    tracing::debug!("LISTEN connection lost; reconnecting");
                    break;
                }
                Err(err) => {
                    tracing::debug!(error = %err, "LISTEN connection failed; reconnecting");
                    break;
                }
            }
        }
        failures += 1;
        if failures > 1 && !shared.pause(&stop, failures - 1).await {
            return;
        }
    }
}

/// Notes a job as leased to the manager (with its context once it runs),
/// so that heartbeats renew its lease.
pub(crate) fn hold(shared: &Shared, job: &ClaimedJob, ctx: Option<JobContext>) {
    shared
        .held
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            job.id,
            Held {
                attempt: job.attempt,
                ctx,
            },
        );
}

/// The ids of every job leased to the manager.
pub(crate) fn held_ids(shared: &Shared) -> Vec<i64> {
    let held = shared.held.lock().unwrap_or_else(|e| e.into_inner());
    held.keys().copied().collect()
}

/// Starts the task of one claimed job.
pub(crate) fn spawn_job(
    shared: &Arc<Shared>,
    job: ClaimedJob,
    permit: OwnedSemaphorePermit,
    completions: mpsc::UnboundedSender<Finished>,
) {
    let ctx = JobContext::new(
        job.id,
        job.kind.clone(),
        job.queue.clone(),
        job.attempt,
        job.max_attempts,
        job.timeout,
        shared.metrics.clone(),
    );
    hold(shared, &job, Some(ctx.clone()));
    if shared.root.is_cancelled() {
        // The handle was dropped while the claim ran: release the job.
        ctx.stop(StopReason::Shutdown);
    }
    let span = tracing::debug_span!("job", id = job.id, kind = %ctx.kind(), attempt = job.attempt);
    let shared = shared.clone();
    let payload = job.payload;
    shared.clone().jobs.spawn(
        async move {
            let began = Instant::now();
            let (outcome, ran) = run_job(&shared, &ctx, payload).await;
            shared.job_micros.add(began.elapsed());
            shared.breaker_record(ctx.kind(), &outcome, ran);
            let id = ctx.id();
            if let Some(held) = shared
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&id)
            {
                held.ctx = None;
            }
            drop(permit);
            let completion = Completion {
                id,
                attempt: ctx.attempt(),
                outcome,
            };
            if completions.send(Finished { completion }).is_err() {
                tracing::error!(
                    "the completer is gone: the outcome is lost, the lease will expire"
                );
            }
        }
        .instrument(span),
    );
}

/// Runs one attempt and says how to record it, and whether the worker ran
/// (a bad payload or an unknown kind never reaches it).
async fn run_job(shared: &Shared, ctx: &JobContext, payload: serde_json::Value) -> (Outcome, bool) {
    let Some(worker) = shared.workers.get(ctx.kind()) else {
        let error = format!(
            "no worker is registered for job kind '{}' on worker '{}'",
            ctx.kind(),
            shared.config.worker_id
        );
        tracing::warn!(job_id = ctx.id(), kind = ctx.kind(), "{error}: dead letter");
        return (Outcome::Dead(error), false);
    };
    let future = match worker.start(ctx.clone(), payload) {
        Ok(future) => future,
        Err(error) => {
            tracing::warn!(job_id = ctx.id(), "{error}: dead letter");
            return (Outcome::Dead(error), false);
        }
    };
    let ran = tokio::select! {
        biased;
        ran = AssertUnwindSafe(future).catch_unwind() => Some(ran),
        _ = ctx.cancellation().cancelled() => None,
        _ = tokio::time::sleep(ctx.timeout()) => {
            ctx.stop(StopReason::TimedOut);
            None
        }
    };
    let outcome = match ran {
        Some(Ok(result)) => decide(shared, ctx, result),
        Some(Err(panic)) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".to_owned());
            tracing::warn!(job_id = ctx.id(), "the worker panicked: {message}");
            failure(shared, ctx, None, format!("panicked: {message}"))
        }
        None => match ctx.stop_reason() {
            Some(StopReason::Cancelled) => Outcome::Cancelled,
            Some(StopReason::TimedOut) => {
                tracing::warn!(job_id = ctx.id(), timeout = ?ctx.timeout(), "the job timed out");
                failure(
                    shared,
                    ctx,
                    None,
                    format!("timed out after {:?}", ctx.timeout()),
                )
            }
            Some(StopReason::LeaseLost) => {
                // Recorded only if the lease is somehow still ours.
                Outcome::Released("the lease was lost".to_owned())
            }
            Some(StopReason::Shutdown) | None => {
                Outcome::Released("released at worker shutdown".to_owned())
            }
        },
    };
    (outcome, true)
}

/// The outcome of what the worker returned.
fn decide(shared: &Shared, ctx: &JobContext, result: JobResult) -> Outcome {
    match result {
        JobResult::Success => Outcome::Succeeded,
        JobResult::Skipped { reason } => Outcome::Skipped(reason),
        JobResult::Retry { after, error } => failure(shared, ctx, after, error),
        JobResult::Fail { error } => Outcome::Dead(error),
        JobResult::Suspend {
            until,
            signal,
            on_timeout,
        } => Outcome::Suspend {
            until,
            signal,
            on_timeout,
        },
    }
}

/// A failed attempt: retried after `after` (or the backoff) while attempts
/// remain, dead otherwise.
fn failure(shared: &Shared, ctx: &JobContext, after: Option<Duration>, error: String) -> Outcome {
    if ctx.attempt() >= ctx.max_attempts() {
        return Outcome::Dead(error);
    }
    let delay = after.unwrap_or_else(|| {
        let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
        shared.config.retry.backoff(ctx.attempt(), &mut rng)
    });
    Outcome::Retry { delay, error }
}

/// Runs the queue's maintenance tick every `every` until the heartbeats
/// stop. A failed tick is logged and the loop goes on.
async fn maintenance_loop(shared: Arc<Shared>, every: Duration) {
    let stop = shared.stop_heartbeat.clone();
    let config = crate::maintenance::Config::default();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let tick = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            tick = crate::maintenance::run_once(&shared.pool, &config) => tick,
        };
        match tick {
            Ok(vacuumed) if !vacuumed.is_empty() => {
                tracing::debug!(?vacuumed, "maintenance: vacuumed the hot tables");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "maintenance tick failed; trying again later"),
        }
    }
}

/// Renews leases, refreshes the registry row, and stops jobs that were
/// cancelled or lost.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let stop = shared.stop_heartbeat.clone();
    let config = &shared.config;
    let mut conn: Option<PoolConnection<Postgres>> = None;
    let mut failures = 0u32;
    loop {
        let wait = if failures == 0 {
            config.heartbeat_interval
        } else {
            shared
                .reconnect_delay(failures)
                .min(config.heartbeat_interval)
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if conn.is_none() {
            let acquired = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                acquired = tokio::time::timeout(config.lease, shared.pool.acquire()) => acquired,
            };
            match acquired {
                Ok(Ok(c)) => conn = Some(c),
                _ => {
                    failures += 1;
                    shared.set_connected(false);
                    continue;
                }
            }
        }
        let (held, running): (Vec<(i64, u32)>, u32) = {
            let held = shared.held.lock().unwrap_or_else(|e| e.into_inner());
            let running = held.values().filter(|h| h.ctx.is_some()).count();
            (
                held.iter().map(|(id, h)| (*id, h.attempt)).collect(),
                u32::try_from(running).unwrap_or(u32::MAX),
            )
        };
        let row = WorkerRow {
            id: &config.worker_id,
            queues: &config.queues,
            max_concurrent: u32::try_from(config.max_concurrent_jobs).unwrap_or(u32::MAX),
            healthy: shared.workers.health().iter().all(|(_, ok)| *ok),
            running,
        };
        let c = conn.as_mut().expect("connected above");
        let beat =
            tokio::time::timeout(config.lease, worker_heartbeat(c, &row, &held, config.lease))
                .await;
        let renewed = match beat {
            Ok(Ok(renewed)) => renewed,
            other => {
                let error = match other {
                    Ok(Err(err)) => err.to_string(),
                    _ => "heartbeat timed out".to_owned(),
                };
                if let Some(mut c) = conn.take() {
                    c.close_on_drop();
                }
                shared.set_connected(false);
                failures += 1;
                tracing::warn!(error, failures, "heartbeat failed; retrying with backoff");
                continue;
            }
        };
        if let Err(err) = shared.read_limits(c).await {
            tracing::debug!(error = %err, "cannot read the queues' limits; keeping the last ones");
        }
        if failures > 0 {
            tracing::info!("heartbeats again after {failures} failed tries");
            failures = 0;
        }
        {
            let mut status = shared.status.lock().unwrap_or_else(|e| e.into_inner());
            status.last_heartbeat = Some(Utc::now());
            status.connected = true;
        }
        let renewed: HashMap<i64, bool> = renewed
            .into_iter()
            .map(|r| (r.id, r.cancel_requested))
            .collect();
        let held_now = shared.held.lock().unwrap_or_else(|e| e.into_inner());
        for (id, attempt) in held {
            // Only jobs still running matter: an outcome with the completer
            // is recorded or found stale there.
            let Some(ctx) = held_now
                .get(&id)
                .filter(|h| h.attempt == attempt)
                .and_then(|h| h.ctx.as_ref())
            else {
                continue;
            };
            match renewed.get(&id) {
                Some(true) => {
                    if ctx.stop(StopReason::Cancelled) {
                        tracing::info!(job_id = id, "cancel requested: stopping the job");
                    }
                }
                Some(false) => {}
                None => {
                    if ctx.stop(StopReason::LeaseLost) {
                        tracing::warn!(
                            job_id = id,
                            "the job's lease was lost (it may run elsewhere): stopping it"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_start_at_the_first_value_and_follow_slowly() {
        let mut average = Average::default();
        assert_eq!(average.get(), None);
        average.add(Duration::from_micros(800));
        assert_eq!(average.get(), Some(800));
        average.add(Duration::from_micros(0));
        assert_eq!(average.get(), Some(700));
        let shared = SharedAverage::default();
        assert_eq!(shared.get(), None);
        shared.add(Duration::ZERO);
        assert_eq!(shared.get(), Some(0), "zero is a value, not 'nothing yet'");
        shared.add(Duration::from_micros(80));
        assert_eq!(shared.get(), Some(10));
    }
}
