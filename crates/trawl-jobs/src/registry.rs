//! The worker registry (`trawl_jobs.workers`) and the statements a
//! [`WorkerManager`](crate::WorkerManager) runs besides claiming and
//! completing: register, heartbeat (which renews its leases), release of
//! orphaned leases, deregister.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::error::Result;
use crate::events::{ClusterEvent, LeaveReason, publish};
use crate::queue::NOTIFY_CHANNEL;
use crate::reconcile::worker_partition;

/// What a worker says of itself in the registry.
#[derive(Debug, Clone)]
pub(crate) struct WorkerRow<'a> {
    pub(crate) id: &'a str,
    pub(crate) queues: &'a [String],
    pub(crate) max_concurrent: u32,
    pub(crate) healthy: bool,
    pub(crate) running: u32,
}

/// Registers (or re-registers) a worker and announces it
/// ([`ClusterEvent::WorkerJoined`]); returns when the row it replaced last
/// heartbeated, if there was one.
pub(crate) async fn worker_register(
    conn: &mut PgConnection,
    worker: &WorkerRow<'_>,
) -> Result<Option<DateTime<Utc>>> {
    let previous: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT heartbeat_at FROM trawl_jobs.workers WHERE id = $1")
            .bind(worker.id)
            .fetch_optional(&mut *conn)
            .await?;
    sqlx::query(
        "INSERT INTO trawl_jobs.workers (id, partition, queues, max_concurrent, started_at,
            heartbeat_at, healthy, running)
         VALUES ($1, $2, $3, $4, now(), now(), $5, $6)
         ON CONFLICT (id) DO UPDATE SET partition = EXCLUDED.partition,
            queues = EXCLUDED.queues, max_concurrent = EXCLUDED.max_concurrent,
            started_at = now(), heartbeat_at = now(), healthy = EXCLUDED.healthy,
            running = EXCLUDED.running",
    )
    .bind(worker.id)
    .bind(worker_partition(worker.id))
    .bind(worker.queues)
    .bind(i32::try_from(worker.max_concurrent).unwrap_or(i32::MAX))
    .bind(worker.healthy)
    .bind(i32::try_from(worker.running).unwrap_or(i32::MAX))
    .execute(&mut *conn)
    .await?;
    publish(
        conn,
        &ClusterEvent::WorkerJoined {
            worker_id: worker.id.to_owned(),
        },
    )
    .await?;
    Ok(previous)
}

/// A held job's lease as the heartbeat found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Renewed {
    pub(crate) id: i64,
    pub(crate) cancel_requested: bool,
}

/// One heartbeat, in one statement: the registry row says the worker is
/// alive (re-created if a sweep dropped it), and the leases of `held`
/// (id, attempt) that are still the worker's run `lease` from now. Returns
/// those, with whether a cancel was asked; a held job missing from the
/// answer is no longer the worker's.
pub(crate) async fn worker_heartbeat(
    conn: &mut PgConnection,
    worker: &WorkerRow<'_>,
    held: &[(i64, u32)],
    lease: Duration,
) -> Result<Vec<Renewed>> {
    let mut held = held.to_vec();
    held.sort_unstable();
    let ids: Vec<i64> = held.iter().map(|h| h.0).collect();
    let attempts: Vec<i32> = held
        .iter()
        .map(|h| i32::try_from(h.1).unwrap_or(i32::MAX))
        .collect();
    let rows: Vec<(i64, bool)> = sqlx::query_as(
        "WITH alive AS (
            INSERT INTO trawl_jobs.workers (id, partition, queues, max_concurrent,
                heartbeat_at, healthy, running)
            VALUES ($1, $2, $3, $4, now(), $5, $6)
            ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(),
                healthy = EXCLUDED.healthy, running = EXCLUDED.running
        ), mine AS (
            -- One primary-key lookup per held job (see `complete`), locked
            -- in id order (the input is sorted), as `complete` locks them.
            SELECT j.id
            FROM unnest($7::bigint[], $8::int[]) AS h(id, attempt)
            CROSS JOIN LATERAL (
                SELECT id, attempt, state, lease_owner
                FROM trawl_jobs.jobs WHERE id = h.id OFFSET 0
            ) j
            WHERE j.attempt = h.attempt AND j.state = 'running' AND j.lease_owner = $1
            ORDER BY j.id
            FOR UPDATE OF j
        )
        UPDATE trawl_jobs.jobs j
        SET lease_expires_at = now() + $9 * interval '1 millisecond'
        FROM mine WHERE j.id = mine.id
        RETURNING j.id, j.cancel_requested",
    )
    .bind(worker.id)
    .bind(worker_partition(worker.id))
    .bind(worker.queues)
    .bind(i32::try_from(worker.max_concurrent).unwrap_or(i32::MAX))
    .bind(worker.healthy)
    .bind(i32::try_from(worker.running).unwrap_or(i32::MAX))
    .bind(&ids)
    .bind(&attempts)
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, cancel_requested)| Renewed {
            id,
            cancel_requested,
        })
        .collect())
}

/// Gives back the jobs of `queue` leased to `worker_id` that the worker
/// does not hold (`held`): a claim whose answer was lost with the
/// connection. They are pending again at once, the attempt recorded as
/// `released` and not counted against the job's tries. Returns how many.
///
/// Only the one claim loop of `queue` in the worker may call it, before its
/// next claim: every job it claimed before is then in `held`.
pub(crate) async fn job_release_orphans(
    conn: &mut PgConnection,
    worker_id: &str,
    queue: &str,
    held: &[i64],
) -> Result<u64> {
    let released: i64 = sqlx::query_scalar(
        "WITH orphans AS (
            SELECT id, attempt, attempted_at FROM trawl_jobs.jobs
            WHERE state = 'running' AND lease_owner = $1 AND queue = $2
                AND id <> ALL($3::bigint[])
            ORDER BY id
            FOR UPDATE
        ), released AS (
            UPDATE trawl_jobs.jobs j SET state = 'pending', run_at = now(),
                max_attempts = j.max_attempts + 1,
                lease_owner = NULL, lease_expires_at = NULL, deadline_at = NULL
            FROM orphans WHERE j.id = orphans.id
        ), history AS (
            INSERT INTO trawl_jobs.job_attempts (job_id, attempt, worker_id, started_at,
                finished_at, outcome, error)
            SELECT id, attempt, $1, attempted_at, now(), 'released',
                'claimed, but the answer was lost with the connection'
            FROM orphans
            ON CONFLICT DO NOTHING
        )
        SELECT count(*) FROM orphans",
    )
    .bind(worker_id)
    .bind(queue)
    .bind(held)
    .fetch_one(&mut *conn)
    .await?;
    if released > 0 {
        notify(conn, &[queue]).await?;
    }
    Ok(released.max(0) as u64)
}

/// Wakes idle workers of `queues`.
pub(crate) async fn notify(conn: &mut PgConnection, queues: &[&str]) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, q) FROM unnest($2::text[]) AS q")
        .bind(NOTIFY_CHANNEL)
        .bind(queues)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Removes a worker from the registry and, if it was listed, announces it
/// ([`ClusterEvent::WorkerLeft`], reason `deregistered`), in one
/// transaction.
pub(crate) async fn worker_deregister(conn: &mut PgConnection, worker_id: &str) -> Result<()> {
    let mut tx = conn.begin().await?;
    let removed = sqlx::query("DELETE FROM trawl_jobs.workers WHERE id = $1")
        .bind(worker_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if removed > 0 {
        publish(
            &mut tx,
            &ClusterEvent::WorkerLeft {
                worker_id: worker_id.to_owned(),
                reason: LeaveReason::Deregistered,
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
