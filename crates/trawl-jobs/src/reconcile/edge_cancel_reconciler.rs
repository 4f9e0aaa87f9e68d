//! `edge_cancel_reconciler`: repairs half-propagated cancels.
//!
//! A dead or cancelled parent whose `cancel_propagation` row is gone while
//! some of its children still live (the row was removed by hand, or by a
//! writer that did not know a child was being added) gets its row back, so
//! that [`edge_cancel_dispatcher`](super::edge_cancel_dispatcher) finishes
//! the job. It looks at the parents of one partition that ended in the last
//! [`LOOKBACK`], but longer ago than [`STALE`] (so as not to race the
//! dispatcher), through the `jobs_finished_dead_parents` index, at most
//! [`BATCH`] of them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{BATCH, JOB_PARTITIONS, check_partition};
use crate::error::Result;

/// How far back the tick looks for parents that ended.
pub const LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// How long ago a parent must have ended for the tick to look at it.
pub const STALE: Duration = Duration::from_secs(15);

/// Queues again the propagation of the parents of `partition` that ended
/// dead or cancelled between [`LOOKBACK`] and [`STALE`] before `now` (the
/// database's clock when `None`) and still have live children not asked to
/// stop. Returns how many parents it queued.
///
/// Refuses a partition outside `0..`[`JOB_PARTITIONS`].
pub async fn run_once(
    conn: &mut PgConnection,
    partition: i16,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    run_once_with(conn, partition, now, STALE).await
}

/// [`run_once`] with a stale threshold of `stale` instead of [`STALE`]
/// (the supervisor's setting, [`Settings::stale_after`](super::Settings::stale_after)).
pub async fn run_once_with(
    conn: &mut PgConnection,
    partition: i16,
    now: Option<DateTime<Utc>>,
    stale: Duration,
) -> Result<u64> {
    check_partition(partition, JOB_PARTITIONS)?;
    let queued = sqlx::query(
        "INSERT INTO trawl_jobs.cancel_propagation (parent_id, partition, reason)
         SELECT f.id, f.partition, format('parent %s was %s', f.id, f.state)
         FROM trawl_jobs.jobs_finished f
         WHERE f.partition = $1 AND f.has_children AND f.state IN ('dead', 'cancelled')
            AND f.finished_at > COALESCE($2, now()) - $4 * interval '1 millisecond'
            AND f.finished_at <= COALESCE($2, now()) - $5 * interval '1 millisecond'
            AND NOT EXISTS (
                SELECT 1 FROM trawl_jobs.cancel_propagation c WHERE c.parent_id = f.id)
            AND EXISTS (
                SELECT 1 FROM trawl_jobs.job_edges e JOIN trawl_jobs.jobs j ON j.id = e.child_id
                WHERE e.parent_id = f.id AND NOT (j.state = 'running' AND j.cancel_requested))
         ORDER BY f.finished_at
         LIMIT $3
         ON CONFLICT (parent_id) DO NOTHING",
    )
    .bind(partition)
    .bind(now)
    .bind(BATCH)
    .bind(LOOKBACK.as_millis() as i64)
    .bind(stale.as_millis() as i64)
    .execute(&mut *conn)
    .await?;
    Ok(queued.rows_affected())
}
