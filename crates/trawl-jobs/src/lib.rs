//! A Postgres-backed job queue, usable on its own.
//!
//! `trawl-jobs` keeps jobs in Postgres (schema `trawl_jobs`), hands them to
//! workers under leases, retries failures with backoff and keeps the dead
//! letters. trawl's distributed scans run on it; so can any other work.
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
//! # Schema
//!
//! [`JobQueue::migrate`] applies the embedded migrations; sqlx's migration
//! table is `trawl_jobs._sqlx_migrations`, so a host application's own
//! migrations are untouched. Every job row carries a `partition` (id mod
//! 16) so that reconciler ticks walk small index ranges.

mod claim;
mod error;
mod job;
mod queue;

pub use claim::{ClaimedJob, Completion, Outcome, claim, complete};
pub use error::{Error, Result};
pub use job::{DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, Job, JobRow, JobState, NewJob, Priority};
pub use queue::{CancelOutcome, JobFilter, JobPage, JobQueue, NOTIFY_CHANNEL, QueueStatistics};
