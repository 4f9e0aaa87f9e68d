//! Reconciler ticks: the statements that repair what workers leave behind
//! when they vanish, hang or lose their connection.
//!
//! Each tick is a module with a `run_once(conn, partition, now)` that runs
//! one statement over one partition and returns how many rows it changed.
//! A tick is:
//!
//! - **index-driven**: it reads one partition's range of an index
//!   (`jobs_running_lease`, `jobs_running_deadline`, `workers_heartbeat`),
//!   never the whole hot table (`tests/explain.rs` checks the plans at
//!   1,000,000 jobs);
//! - **bounded**: at most [`BATCH`] jobs per call; a call that returns
//!   `BATCH` or more leaves work for the next one, which the caller may run
//!   at once;
//! - **safe to run from many nodes at once**: rows are taken with
//!   `FOR UPDATE SKIP LOCKED` and re-checked after the lock, so two nodes
//!   running the same tick on the same partition never apply a change
//!   twice (the second skips, or finds the row already changed);
//! - **clock-pinnable**: `now` is used in SQL as `COALESCE($n, now())`, so
//!   tests pass a fixed instant instead of sleeping.
//!
//! A job a tick takes back from its worker gets a row in
//! `trawl_jobs.job_attempts` (outcome `lease_expired`, `timed_out` or
//! `worker_lost`, the error naming the worker) and then, in the same
//! statement: back to `pending` at once (`run_at` = now, no backoff: the
//! worker is gone, there is nothing to wait for) if it has attempts left; to
//! `jobs_finished` as `dead` if that was its last attempt; or as
//! `cancelled` if a cancel was requested while it ran (nobody is left to
//! honour the request, and running it again would ignore it).
//!
//! Execution is at least once: a worker that is merely slow (a long stall,
//! a network partition from the database) may still be running a job that a
//! tick has handed to another worker. Its late completion is ignored
//! ([`complete`](crate::complete) checks the lease owner and the attempt).
//!
//! The periodic loops that run the ticks over every partition belong to
//! the supervisor of `trawl-reconcile`: [`reconcilers`] gives it every
//! tick of the queue, with their scopes and default intervals. Tests may
//! also call a `run_once` directly, with a pinned clock.

pub mod attempt_timeout;
pub mod budget_reset;
pub mod dependency;
pub mod edge_cancel_dispatcher;
pub mod edge_cancel_reconciler;
pub mod lease_expiry;
mod set;
pub mod suspension_timeout;
pub mod worker_registry_ttl_sweep;

pub use set::{Settings, reconcilers, reconcilers_with};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::{Error, Result};

/// Partitions of the jobs table: a job's partition is its id mod this.
/// The same number is the `job_partitions` row of `trawl_jobs.settings`
/// and the generation expression of `trawl_jobs.jobs.partition`.
pub const JOB_PARTITIONS: i16 = 16;

/// Partitions of the worker registry: a worker's partition is
/// [`worker_partition`] of its id (the `worker_partitions` setting).
pub const WORKER_PARTITIONS: i16 = 256;

/// Partitions of the budgets (the `budget_partitions` setting): a budget's
/// partition is [`Budget::partition`](crate::Budget::partition).
pub const BUDGET_PARTITIONS: i16 = 16;

/// Jobs one `run_once` changes at most; the rest wait for the next call.
pub const BATCH: i64 = 1_000;

/// The registry partition of a worker: FNV-1a (64-bit) of its id's UTF-8
/// bytes, mod [`WORKER_PARTITIONS`].
pub fn worker_partition(worker_id: &str) -> i16 {
    (fnv1a(worker_id.as_bytes()) % WORKER_PARTITIONS as u64) as i16
}

/// FNV-1a, 64-bit.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

/// Runs a job-partition tick's statement (`$1` partition, `$2` now, `$3`
/// batch, one row with the count of jobs changed) on a checked partition.
async fn run_job_tick(
    conn: &mut PgConnection,
    sql: &'static str,
    partition: i16,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    check_partition(partition, JOB_PARTITIONS)?;
    let changed: i64 = sqlx::query_scalar(sql)
        .bind(partition)
        .bind(now)
        .bind(BATCH)
        .fetch_one(&mut *conn)
        .await?;
    Ok(changed as u64)
}

/// Refuses a partition outside `0..count`.
fn check_partition(partition: i16, count: i16) -> Result<()> {
    if (0..count).contains(&partition) {
        Ok(())
    } else {
        Err(Error::invalid(
            "partition",
            format!("{partition} (must be in 0..{count})"),
        ))
    }
}

/// The end of every tick's statement: the CTEs before it define `lost`,
/// the running jobs taken from their worker and locked, with the columns
/// `id, attempt, lease_owner, attempted_at, max_attempts, cancel_requested,
/// error`. `$2` is the pinned clock. Each lost job gets an attempt row with
/// `$outcome`, then goes back to pending at once, or to the finished
/// table as dead (no attempts left) or cancelled (a cancel was requested).
/// The queues that got a job back are notified on
/// [`NOTIFY_CHANNEL`](crate::NOTIFY_CHANNEL) (at the commit), so idle
/// workers claim it at once instead of at their next poll; `lost_jobs`
/// reads `woken` only so that Postgres runs it. The statement's result is
/// the number of lost jobs, `lost_jobs`.
macro_rules! release_lost_jobs {
    ($outcome:literal) => {
        concat!(
            "history AS (
                INSERT INTO trawl_jobs.job_attempts (job_id, attempt, worker_id, started_at,
                    finished_at, outcome, error)
                SELECT id, attempt, lease_owner, attempted_at, COALESCE($2, now()), '",
            $outcome,
            "', error
                FROM lost
            ), retried AS (
                UPDATE trawl_jobs.jobs j SET
                    state = 'pending',
                    run_at = COALESCE($2, now()),
                    lease_owner = NULL, lease_expires_at = NULL, deadline_at = NULL,
                    last_error = lost.error
                FROM lost
                WHERE j.id = lost.id AND lost.attempt < lost.max_attempts
                    AND NOT lost.cancel_requested
                RETURNING j.queue
            ), woken AS (
                SELECT count(pg_notify('trawl_jobs_enqueued', queue)) AS n
                FROM (SELECT DISTINCT queue FROM retried) q
            ), gone AS (
                DELETE FROM trawl_jobs.jobs j USING lost
                WHERE j.id = lost.id
                    AND (lost.attempt >= lost.max_attempts OR lost.cancel_requested)
                RETURNING j.*, lost.error AS why
            ), finished AS (
                INSERT INTO trawl_jobs.jobs_finished (id, partition, kind, queue, state,
                    priority, payload, tags, run_at, attempt, max_attempts, timeout_ms,
                    attempted_at, cancel_requested, last_error, created_at, finished_at,
                    unique_key, concurrency_key, pending_parents, suspended_until, signal_key,
                    on_timeout, has_children, cost)
                SELECT id, partition, kind, queue,
                    (CASE WHEN cancel_requested THEN 'cancelled' ELSE 'dead' END)
                        ::trawl_jobs.job_state,
                    priority, payload, tags, run_at, attempt, max_attempts, timeout_ms,
                    attempted_at, cancel_requested, why, created_at, COALESCE($2, now()),
                    unique_key, concurrency_key, pending_parents, suspended_until, signal_key,
                    on_timeout, has_children, cost
                FROM gone
            ), lost_jobs AS (
                SELECT count(*) + 0 * (SELECT n FROM woken) AS n FROM lost
            )"
        )
    };
}
pub(crate) use release_lost_jobs;

#[cfg(test)]
mod tests {
    #[test]
    fn released_jobs_wake_the_queue_s_listeners() {
        let channel = format!("pg_notify('{}', queue)", crate::NOTIFY_CHANNEL);
        for sql in [
            super::lease_expiry::SQL,
            super::attempt_timeout::SQL,
            super::worker_registry_ttl_sweep::SQL,
        ] {
            assert!(sql.contains(&channel));
        }
    }
}
