//! `lease_expiry`: running jobs whose lease expired go back to the queue
//! (or to the dead letters when that was their last attempt).
//!
//! A worker renews the leases of its running jobs at every heartbeat; a
//! lease that ran out means the worker stopped (killed, hung, cut off from
//! the database). The tick walks one partition's range of the
//! `jobs_running_lease` index (`(partition, lease_expires_at) WHERE state =
//! 'running'`), oldest expiry first, at most [`BATCH`](super::BATCH) jobs.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{release_lost_jobs, run_job_tick};
use crate::error::Result;

/// The tick's statement: `$1` partition, `$2` now (or NULL), `$3` batch.
#[doc(hidden)]
pub const SQL: &str = concat!(
    "WITH lost AS (
        SELECT id, attempt, lease_owner, attempted_at, max_attempts, cancel_requested,
            format('the lease of worker %s expired', coalesce(lease_owner, '(none)')) AS error
        FROM trawl_jobs.jobs
        WHERE partition = $1 AND state = 'running' AND lease_expires_at < COALESCE($2, now())
        ORDER BY lease_expires_at
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ), ",
    release_lost_jobs!("lease_expired"),
    " SELECT n FROM lost_jobs"
);

/// Takes the jobs of `partition` whose lease expired before `now` (the
/// database's clock when `None`) back from their workers: each gets an
/// attempt row `lease_expired` naming the worker, then goes back to
/// `pending` at once if it has attempts left, else to the dead letters
/// (cancelled instead if a cancel was requested meanwhile). Returns how
/// many jobs it changed; [`BATCH`](super::BATCH) means more may be waiting.
///
/// Refuses a partition outside `0..`[`JOB_PARTITIONS`](super::JOB_PARTITIONS).
pub async fn run_once(
    conn: &mut PgConnection,
    partition: i16,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    run_job_tick(conn, SQL, partition, now).await
}
