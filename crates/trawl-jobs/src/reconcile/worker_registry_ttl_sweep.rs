//! `worker_registry_ttl_sweep`: workers whose heartbeat is older than the
//! TTL are dropped from the registry, and their running jobs go back to
//! the queue at once, without waiting for their leases to run out.
//!
//! The tick walks one registry partition (`workers_heartbeat`, `(partition,
//! heartbeat_at)`), at most [`WORKER_BATCH`] workers and
//! [`BATCH`] jobs, which it finds through `jobs_lease_owner`
//! (`(lease_owner) WHERE state = 'running'`). A stale worker whose jobs
//! were not all released in this call (too many, or one locked by a
//! completion in flight) stays registered until a later call has released
//! the rest, so no job is left behind by a worker that is no longer
//! listed. A job its worker claimed after the statement's snapshot is
//! left to [`lease_expiry`](super::lease_expiry).
//!
//! Each worker dropped is announced as
//! [`ClusterEvent::WorkerLeft`](crate::ClusterEvent::WorkerLeft) with the
//! reason `swept`, at the commit of the tick's transaction.
//!
//! A worker that was only slow registers again with its next heartbeat,
//! which renews none of the jobs taken from it (they are no longer its
//! leases); their late completions are ignored.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{BATCH, WORKER_PARTITIONS, check_partition, release_lost_jobs};
use crate::error::{Error, Result};

/// How old a heartbeat may be before [`run_once`] drops its worker.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// Workers one call drops at most.
pub const WORKER_BATCH: i64 = 100;

/// The tick's statement: `$1` registry partition, `$2` now (or NULL), `$3`
/// job batch, `$4` TTL in milliseconds, `$5` worker batch.
#[doc(hidden)]
pub const SQL: &str = concat!(
    "WITH stale AS (
        SELECT id, heartbeat_at FROM trawl_jobs.workers
        WHERE partition = $1
            AND heartbeat_at < COALESCE($2, now()) - $4 * interval '1 millisecond'
        ORDER BY heartbeat_at
        LIMIT $5
        FOR UPDATE SKIP LOCKED
    ), lost AS (
        SELECT j.id, j.attempt, j.lease_owner, j.attempted_at, j.max_attempts,
            j.cancel_requested,
            format('worker %s was lost: no heartbeat since %s', stale.id, stale.heartbeat_at)
                AS error
        FROM stale JOIN trawl_jobs.jobs j ON j.lease_owner = stale.id AND j.state = 'running'
        LIMIT $3
        FOR UPDATE OF j SKIP LOCKED
    ), ",
    release_lost_jobs!("worker_lost"),
    ", dropped AS (
        DELETE FROM trawl_jobs.workers w USING stale
        WHERE w.id = stale.id
            AND NOT EXISTS (
                SELECT 1 FROM trawl_jobs.jobs j
                WHERE j.lease_owner = w.id AND j.state = 'running'
                    AND NOT EXISTS (SELECT 1 FROM lost WHERE lost.id = j.id)
            )
        RETURNING w.id
    ), announced AS (
        SELECT trawl_jobs.publish_event(jsonb_build_object(
            'event', 'worker_left', 'worker_id', id, 'reason', 'swept')) AS sent
        FROM dropped
    )
    SELECT (SELECT n FROM lost_jobs) + (SELECT count(sent) FROM announced)"
);

/// [`run_once_with`] with the [`DEFAULT_TTL`].
pub async fn run_once(
    conn: &mut PgConnection,
    partition: i16,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    run_once_with(conn, partition, now, DEFAULT_TTL).await
}

/// Drops the workers of registry `partition` whose last heartbeat is more
/// than `ttl` before `now` (the database's clock when `None`), after
/// taking their running jobs back: each job gets an attempt row
/// `worker_lost` naming the worker, then goes back to `pending` at once if
/// it has attempts left, else to the dead letters (cancelled instead if a
/// cancel was requested meanwhile). Each worker dropped is announced
/// ([`ClusterEvent::WorkerLeft`](crate::ClusterEvent::WorkerLeft), reason
/// `swept`). Returns the rows it changed: jobs released plus workers
/// dropped.
///
/// Refuses a partition outside `0..`[`WORKER_PARTITIONS`] and a zero TTL.
pub async fn run_once_with(
    conn: &mut PgConnection,
    partition: i16,
    now: Option<DateTime<Utc>>,
    ttl: Duration,
) -> Result<u64> {
    check_partition(partition, WORKER_PARTITIONS)?;
    if ttl.is_zero() {
        return Err(Error::invalid(
            "ttl",
            "a heartbeat TTL must be longer than 0",
        ));
    }
    // Clamped to a century: any longer TTL means "never", and Postgres
    // intervals stop short of i64::MAX milliseconds.
    const CENTURY_MS: i64 = 100 * 366 * 24 * 3_600 * 1_000;
    let ttl_ms = i64::try_from(ttl.as_millis()).map_or(CENTURY_MS, |ms| ms.min(CENTURY_MS));
    let changed: i64 = sqlx::query_scalar(SQL)
        .bind(partition)
        .bind(now)
        .bind(BATCH)
        .bind(ttl_ms)
        .bind(WORKER_BATCH)
        .fetch_one(&mut *conn)
        .await?;
    Ok(changed as u64)
}
