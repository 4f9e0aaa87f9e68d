//! `dependency`: repairs blocked jobs whose parents' ends were missed.
//!
//! A child is normally promoted (or its cancellation queued) in the
//! transaction that finishes its last parent. This tick is the safety net
//! for a finish that bypassed that (an older writer, a hand edit, a
//! restore): it recounts the parents of blocked jobs, least recently
//! checked first, and promotes the child if all of them succeeded, cancels
//! it if one ended dead or cancelled, or corrects its count of pending
//! parents. Only jobs blocked (or last checked) longer ago than
//! [`STALE`] are looked at, so that it never races a finish in flight.
//! It walks one partition's range of the `jobs_blocked_checked` index, at
//! most [`BATCH`] jobs.
//!
//! A parent that no longer exists at all (pruned) counts as succeeded:
//! only finished jobs are pruned, and a dead or cancelled one would have
//! cancelled its children when it ended.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{BATCH, JOB_PARTITIONS, check_partition};
use crate::error::Result;
use crate::job::JobState;
use crate::queue::finish_jobs;
use crate::registry::notify;

/// How long a job must have been blocked (or unchecked) before the tick
/// looks at it.
pub const STALE: Duration = Duration::from_secs(15);

/// Rechecks the blocked jobs of `partition` that have waited longer than
/// [`STALE`] before `now` (the database's clock when `None`). Returns how
/// many it promoted or cancelled.
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
    let checked: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
        "WITH blocked AS (
            SELECT id FROM trawl_jobs.jobs
            WHERE partition = $1 AND state = 'blocked'
                AND COALESCE(deps_checked_at, created_at)
                    <= COALESCE($2, now()) - $4 * interval '1 millisecond'
            ORDER BY deps_checked_at NULLS FIRST, id
            LIMIT $3
            FOR UPDATE SKIP LOCKED
        ), parents AS (
            SELECT b.id, e.parent_id,
                COALESCE(
                    (SELECT state::text FROM trawl_jobs.jobs WHERE id = e.parent_id),
                    (SELECT state::text FROM trawl_jobs.jobs_finished WHERE id = e.parent_id),
                    'succeeded') AS state
            FROM blocked b JOIN trawl_jobs.job_edges e ON e.child_id = b.id
        )
        SELECT b.id,
            count(p.parent_id) FILTER (WHERE p.state <> 'succeeded'),
            min(format('parent %s was %s', p.parent_id, p.state))
                FILTER (WHERE p.state IN ('dead', 'cancelled'))
        FROM blocked b LEFT JOIN parents p ON p.id = b.id
        GROUP BY b.id",
    )
    .bind(partition)
    .bind(now)
    .bind(BATCH)
    .bind(stale.as_millis() as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut doomed = (Vec::new(), Vec::new());
    let (mut ids, mut waiting) = (Vec::new(), Vec::new());
    for (id, pending, why) in checked {
        match why {
            Some(why) => {
                doomed.0.push(id);
                doomed.1.push(Some(format!("cancelled: {why}")));
            }
            None => {
                ids.push(id);
                waiting.push(i32::try_from(pending).unwrap_or(i32::MAX));
            }
        }
    }
    let updated: Vec<(String, bool)> = sqlx::query_as(
        "WITH c AS (SELECT * FROM unnest($1::bigint[], $2::int[]) AS c(id, waiting))
        UPDATE trawl_jobs.jobs j SET
            pending_parents = c.waiting,
            deps_checked_at = COALESCE($3, now()),
            state = CASE WHEN c.waiting = 0 THEN 'pending'::trawl_jobs.job_state ELSE j.state END
        FROM c WHERE j.id = c.id
        RETURNING j.queue, c.waiting = 0",
    )
    .bind(&ids)
    .bind(&waiting)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let mut queues: Vec<&str> = updated
        .iter()
        .filter(|(_, promoted)| *promoted)
        .map(|(queue, _)| queue.as_str())
        .collect();
    let promoted = queues.len() as u64;
    queues.sort_unstable();
    queues.dedup();
    notify(conn, &queues).await?;
    let cancelled = finish_jobs(conn, &doomed.0, &doomed.1, JobState::Cancelled, now).await?;
    Ok(promoted + cancelled)
}
