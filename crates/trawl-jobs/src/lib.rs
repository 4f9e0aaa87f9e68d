//! A Postgres-backed job queue, usable on its own.
//!
//! `trawl-jobs` keeps jobs in Postgres (schema `trawl_jobs`), hands them to
//! workers under leases, retries failures with backoff and keeps the dead
//! letters. trawl's distributed scans run on it; so can any other work.
//!
//! # Example
//!
//! Define a job, enqueue it, run a worker, shut down:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use serde::{Deserialize, Serialize};
//! use sqlx::postgres::PgPoolOptions;
//! use trawl_jobs::{
//!     Job, JobContext, JobQueue, JobResult, NewJob, Priority, Worker, WorkerConfig,
//!     WorkerManager, Workers,
//! };
//!
//! /// The job: a serde payload with a kind.
//! #[derive(Serialize, Deserialize)]
//! struct Heal {
//!     bucket: String,
//!     object: String,
//! }
//!
//! impl Job for Heal {
//!     const KIND: &'static str = "heal";
//!
//!     fn priority(&self) -> Priority {
//!         Priority::HIGH
//!     }
//! }
//!
//! /// Its worker.
//! struct Healer;
//!
//! impl Worker<Heal> for Healer {
//!     async fn process(&self, ctx: &JobContext, job: Heal) -> JobResult {
//!         if job.object.is_empty() {
//!             return JobResult::fail("no object to heal"); // a dead letter
//!         }
//!         // ... heal job.bucket/job.object, watching ctx.cancellation() ...
//!         ctx.record_metric("bytes_healed", 4096.0);
//!         JobResult::Success
//!     }
//! }
//!
//! # async fn example() -> Result<(), trawl_jobs::Error> {
//! let pool = PgPoolOptions::new()
//!     .max_connections(8)
//!     .connect("postgres://postgres@127.0.0.1:5432/postgres")
//!     .await?;
//! let queue = JobQueue::new(pool.clone());
//! queue.migrate().await?;
//!
//! // Enqueue (also possible inside your own transaction: JobQueue::enqueue_in).
//! let job = Heal { bucket: "logs".into(), object: "2024/01/01.gz".into() };
//! let id = queue.enqueue(NewJob::from_job(&job)?).await?;
//!
//! // Run workers: register one per kind, start a manager.
//! let mut workers = Workers::new();
//! workers.register::<Heal, _>(Healer);
//! let config = WorkerConfig {
//!     worker_id: "healer-1".into(),
//!     max_concurrent_jobs: 10,
//!     ..WorkerConfig::default()
//! };
//! let handle = WorkerManager::new(pool, config, workers)?.start().await?;
//! assert!(handle.health().connected);
//!
//! // ... later: stop claiming, give running jobs 30 s, release the rest.
//! let report = handle.shutdown(Duration::from_secs(30)).await;
//! println!("job {id}: {:?}; shutdown released {}", queue.get(id).await?.map(|j| j.state), report.released);
//! # Ok(())
//! # }
//! ```
//!
//! # Running jobs
//!
//! A [`WorkerManager`] claims jobs of its queues in batches (`FOR UPDATE
//! SKIP LOCKED`, by priority, then `run_at`, then id), runs each on its own
//! task under the attempt's timeout, and records the outcomes in batches,
//! one statement and one commit per batch: one commit per job would cap a
//! queue near 2,000 jobs/s. An idle manager sleeps until an enqueue
//! notifies it ([`NOTIFY_CHANNEL`], LISTEN on a connection of its own) or
//! its poll interval passes; it never polls hot.
//!
//! How an attempt ends is the [`JobResult`] its [`Worker`] returns:
//! `Success`; `Retry` (pending again after its `after` or the manager's
//! backoff, a dead letter once out of attempts, with the last error kept);
//! `Fail` (a dead letter at once); `Skipped` (succeeded, the attempt
//! recorded as skipped with the reason); `Suspend` (stored as `suspended`
//! with its deadline, signal key and `on_timeout`). A panic, a timeout and
//! a payload that does not deserialize never stop the manager: the first
//! two are failed attempts (retried), the last a dead letter with the serde
//! error, like a job of a kind no worker is registered for.
//!
//! Execution is at least once, never twice at the same time: a heartbeat
//! renews the leases of the jobs a manager holds; a job whose lease is lost
//! (the manager was cut off longer than its lease) is stopped at the next
//! heartbeat, and an outcome that arrives after the lease went elsewhere is
//! ignored. A lost connection is retried with backoff and nothing is lost:
//! outcomes wait and are recorded on the next connection (recording is
//! idempotent), and a claim whose answer was lost is given back at once.
//!
//! [`WorkerHandle::shutdown`] stops claiming, gives running jobs a grace
//! period, then stops the rest and *releases* them: pending again at once,
//! waking another worker, the attempt recorded as `released` and not
//! counted against the job's tries.
//!
//! # States
//!
//! ```text
//!            enqueue                claim               success / skipped
//! (blocked) ───────► pending ───────────────► running ─────────────────► succeeded
//!                     ▲   ▲                     │ │ │
//!                     │   └── retry after ──────┘ │ └── attempts exhausted, ──► dead
//!                     │       backoff             │     permanent error
//!                     └── lease expired ──────────┘
//!   pending, blocked, suspended ── cancel ──► cancelled   (running: at the next heartbeat)
//!   dead, cancelled ── JobQueue::retry ──► pending
//! ```
//!
//! Finished jobs (succeeded, dead, cancelled) leave the hot table
//! `trawl_jobs.jobs` for `trawl_jobs.jobs_finished` in the statement that
//! finishes them, so claiming reads a small table however long the
//! history. Every attempt that ends leaves a row in
//! `trawl_jobs.job_attempts`.
//!
//! # Flow and limits
//!
//! - Dependencies: [`NewJob::depends_on`]; a child runs once every parent
//!   succeeded, and is cancelled (with its descendants) when one ends dead
//!   or cancelled.
//! - Unique jobs: [`NewJob::unique_key`] (while live),
//!   [`NewJob::unique_for`] (for a period), [`JobQueue::enqueue_unique`].
//! - Suspension: [`JobResult::Suspend`], [`JobQueue::signal`].
//! - Limits ([`limits`]): a queue's fleet-wide cap and depth limit
//!   ([`QueueLimits`]), budgets per queue or kind ([`Budget`]),
//!   concurrency keys ([`NewJob::concurrency_key`]).
//! - A circuit breaker per job kind in each manager ([`BreakerConfig`]).
//! - Periodic jobs, once per period across nodes ([`periodic`]).
//!
//! The crate README has an example of each.
//!
//! # Schema
//!
//! [`JobQueue::migrate`] applies the embedded migrations; sqlx's migration
//! table is `trawl_jobs._sqlx_migrations`, so a host application's own
//! migrations are untouched. Every job row carries a `partition` (id mod
//! 16) so that reconciler ticks walk small index ranges.
//!
//! # Reconcilers and maintenance
//!
//! A worker that vanishes leaves its jobs `running`. The ticks in
//! [`reconcile`] repair that, each one statement over one partition,
//! index-driven, bounded and safe to run from many nodes at once:
//! [`reconcile::lease_expiry`] (leases that ran out),
//! [`reconcile::attempt_timeout`] (attempts past their deadline),
//! [`reconcile::worker_registry_ttl_sweep`] (workers whose heartbeat
//! stopped), [`reconcile::suspension_timeout`] (suspended jobs past their
//! deadline), [`reconcile::edge_cancel_dispatcher`] and
//! [`reconcile::edge_cancel_reconciler`] (cancels reaching descendants),
//! [`reconcile::dependency`] (missed promotions) and
//! [`reconcile::budget_reset`] (budget windows). Moving finished jobs out
//! keeps the hot table small in live rows, but each job still leaves dead
//! row versions that only a vacuum removes; [`maintenance::run_once`]
//! vacuums the hot tables when they need it, for servers whose autovacuum
//! is off or too slow for a queue.
//!
//! Run them all, periodically, on one node or many, with the supervisor of
//! the `trawl-reconcile` crate ([`reconcile::reconcilers`] gives it every
//! tick with its scope and default interval), or with the `trawl
//! reconcile` command:
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! let config = trawl_reconcile::Config::default();
//! let mut handle =
//!     trawl_reconcile::spawn_reconcilers(pool, config, trawl_jobs::reconcile::reconcilers())?;
//! // … run workers …
//! handle.shutdown(Duration::from_secs(10)).await;
//! # Ok(())
//! # }
//! ```
//!
//! Execution is at least once: a job whose worker was only slow may run
//! again elsewhere, so a handler must be idempotent (see
//! `docs/ARCHITECTURE.md`, "The reconcilers … and what recovery
//! guarantees").
//!
//! # Cluster events
//!
//! Every process on the database can follow what happens to the fleet
//! with [`ClusterEvents::subscribe`]: workers joining and leaving (on
//! shutdown, or dropped by the sweep), jobs becoming dead letters,
//! leadership moving, circuit breakers opening and closing, each a
//! [`ClusterEvent`] as JSON on [`EVENTS_CHANNEL`] (LISTEN/NOTIFY). Dead
//! jobs are announced by a trigger on `trawl_jobs.jobs_finished`, so no
//! path that kills a job can forget to; an event is sent at the commit of
//! the transaction that caused it. Events are hints, not a log: one sent
//! while a subscriber is disconnected is lost to it. See [`events`].
//!
//! # Leadership
//!
//! Some duties must run on one node at a time (a periodic enqueuer, a
//! report). [`Leadership::start`] contends for a named lease in
//! `trawl_jobs.leaders`; the holder renews it, and steps down by its own
//! monotonic clock before the lease can expire when it cannot renew, so a
//! node cut off from the database stops before another takes over. A
//! shutdown releases the lease for the next contender at once. See
//! [`leader`].

mod breaker;
mod claim;
mod claimer;
mod completer;
mod config;
mod error;
pub mod events;
mod flow;
mod job;
pub mod leader;
pub mod limits;
pub mod maintenance;
mod manager;
pub mod periodic;
mod queue;
pub mod reconcile;
mod registry;
mod worker;

pub use breaker::BreakerConfig;
pub use claim::{ClaimedJob, Completion, OnTimeout, Outcome, claim, complete};
pub use config::WorkerConfig;
pub use error::{Error, Result};
pub use events::{ClusterEvent, ClusterEvents, EVENTS_CHANNEL, LeaveReason};
pub use flow::EnqueueOutcome;
pub use job::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, Job, JobRow, JobState, NewJob, Priority, UniqueKey,
    UniqueWindow,
};
pub use leader::{LeaderConfig, Leadership};
pub use limits::{Budget, BudgetScope, OnFull, QueueLimits};
pub use manager::{ShutdownReport, WorkerHandle, WorkerHealth, WorkerManager, WorkerStats};
pub use periodic::{Periodic, PeriodicJob, Schedule};
pub use queue::{CancelOutcome, JobFilter, JobPage, JobQueue, NOTIFY_CHANNEL, QueueStatistics};
pub use worker::{
    JobContext, JobResult, MetricSummary, StopReason, Worker, WorkerFn, Workers, worker_fn,
};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
