//! `attempt_timeout`: running jobs past their attempt's deadline lose the
//! attempt, which counts as failed.
//!
//! The worker enforces the timeout itself (it stops the attempt and
//! records a retry with backoff); this tick covers the attempts whose
//! worker cannot: it vanished before its lease ran out, or it hangs while
//! its heartbeat goes on renewing the lease. Claiming sets `deadline_at` to
//! the claim's time plus the job's timeout (or the worker's default). The
//! tick walks one partition's range of the `jobs_running_deadline` index
//! (`(partition, deadline_at) WHERE state = 'running' AND deadline_at IS
//! NOT NULL`), oldest deadline first, at most [`BATCH`](super::BATCH) jobs.
//!
//! The job goes back to `pending` at once (or dead after its last
//! attempt). A hung worker may still be running it when another worker
//! takes it: execution is at least once, and the hung worker's late
//! completion is ignored.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{release_lost_jobs, run_job_tick};
use crate::error::Result;

/// The tick's statement: `$1` partition, `$2` now (or NULL), `$3` batch.
#[doc(hidden)]
pub const SQL: &str = concat!(
    "WITH lost AS (
        SELECT id, attempt, lease_owner, attempted_at, max_attempts, cancel_requested,
            format('attempt %s timed out after %s s on worker %s', attempt,
                round(extract(epoch FROM deadline_at - attempted_at)::numeric, 3),
                coalesce(lease_owner, '(none)')) AS error
        FROM trawl_jobs.jobs
        WHERE partition = $1 AND state = 'running' AND deadline_at IS NOT NULL
            AND deadline_at < COALESCE($2, now())
        ORDER BY deadline_at
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ), ",
    release_lost_jobs!("timed_out"),
    " SELECT n FROM lost_jobs"
);

/// Fails the attempts of `partition` that ran past their deadline before
/// `now` (the database's clock when `None`): each gets an attempt row
/// `timed_out` naming the worker, then goes back to `pending` at once if it
/// has attempts left, else to the dead letters (cancelled instead if a
/// cancel was requested meanwhile). Returns how many jobs it changed;
/// [`BATCH`](super::BATCH) means more may be waiting.
///
/// Refuses a partition outside `0..`[`JOB_PARTITIONS`](super::JOB_PARTITIONS).
pub async fn run_once(
    conn: &mut PgConnection,
    partition: i16,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    run_job_tick(conn, SQL, partition, now).await
}
