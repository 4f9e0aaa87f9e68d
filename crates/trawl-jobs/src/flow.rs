//! Jobs that depend on others, unique keys, signals, and cancels that
//! reach a job's descendants.
//!
//! The database does the part that must happen in the transaction that
//! finishes a job (the `trawl_jobs.job_finished` trigger of schema version
//! 2): a finished job frees its while-live unique key, a succeeded one
//! promotes the children it was the last pending parent of, and a dead or
//! cancelled one queues the cancellation of its children in
//! `cancel_propagation`. The cancellation itself goes in batches
//! ([`propagate_cancel`], run by the `edge_cancel_dispatcher` tick and by
//! [`JobQueue::cancel`](crate::JobQueue::cancel)).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::{Error, Result};
use crate::job::{JobState, NewJob, UniqueWindow};
use crate::queue::finish_jobs;

/// Tries to take a unique key before giving up: each try loses only to a
/// holder that finished between the two statements of the previous one.
const UNIQUE_TRIES: u32 = 8;

/// Enqueues one job with parents or a unique key on `conn` (inside the
/// caller's transaction, or on its own). Returns the new job's id, or the
/// id of the job that holds its unique key.
pub(crate) async fn enqueue_flow_job(
    conn: &mut PgConnection,
    job: &NewJob,
) -> Result<EnqueueOutcome> {
    let parents = Parents::lock(conn, &job.parents).await?;
    let id = match &job.unique {
        None => None,
        Some(unique) => match take_unique_key(conn, &unique.key, unique.window).await? {
            Taken::New(id) => Some(id),
            Taken::Held(holder) => return Ok(EnqueueOutcome::Duplicate(holder)),
        },
    };
    let state = if parents.waiting > 0 {
        JobState::Blocked
    } else {
        JobState::Pending
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO trawl_jobs.jobs (id, kind, queue, state, priority, payload, tags, run_at,
            max_attempts, timeout_ms, pending_parents, unique_key, cost, concurrency_key)
         VALUES (COALESCE($1, nextval(pg_get_serial_sequence('trawl_jobs.jobs', 'id'))),
            $2, $3, $4::trawl_jobs.job_state, $5, $6, $7, COALESCE($8, now()), $9, $10, $11,
            $12, $13, $14)
         RETURNING id",
    )
    .bind(id)
    .bind(&job.kind)
    .bind(&job.queue)
    .bind(state.as_str())
    .bind(job.priority.0)
    .bind(&job.payload)
    .bind(&job.tags)
    .bind(job.run_at)
    .bind(job.max_attempts as i32)
    .bind(job.timeout_ms())
    .bind(parents.waiting)
    .bind(job.unique.as_ref().map(|u| u.key.as_str()))
    .bind(job.cost as i32)
    .bind(job.concurrency.as_ref().map(|(key, _)| key.as_str()))
    .fetch_one(&mut *conn)
    .await?;
    if !job.parents.is_empty() {
        sqlx::query(
            "INSERT INTO trawl_jobs.job_edges (parent_id, child_id)
             SELECT p, $2 FROM unnest($1::bigint[]) AS p ON CONFLICT DO NOTHING",
        )
        .bind(&job.parents)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(why) = parents.doomed {
        finish_jobs(conn, &[id], &[Some(why)], JobState::Cancelled, None).await?;
    }
    Ok(EnqueueOutcome::Enqueued(id))
}

/// What an enqueue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// The job was enqueued with this id.
    Enqueued(i64),
    /// Another job holds the unique key: nothing was enqueued; this is the
    /// holder's id.
    Duplicate(i64),
}

impl EnqueueOutcome {
    /// The id of the job enqueued, or of the one that holds the key.
    pub fn id(self) -> i64 {
        match self {
            EnqueueOutcome::Enqueued(id) | EnqueueOutcome::Duplicate(id) => id,
        }
    }
}

/// What the parents of a new job say about it.
struct Parents {
    /// Parents that have not finished yet.
    waiting: i32,
    /// Why the job is cancelled at once (a parent ended dead or cancelled).
    doomed: Option<String>,
}

impl Parents {
    /// Locks the parents (so none finishes or is retried before the new
    /// edges are committed: its finish then sees them), marks them as
    /// having children and reads the state of the finished ones. Fails if
    /// a parent does not exist.
    async fn lock(conn: &mut PgConnection, parents: &[i64]) -> Result<Parents> {
        if parents.is_empty() {
            return Ok(Parents {
                waiting: 0,
                doomed: None,
            });
        }
        let live: Vec<i64> = sqlx::query_scalar(
            "WITH locked AS (
                SELECT id FROM trawl_jobs.jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE
            )
            UPDATE trawl_jobs.jobs j SET has_children = true FROM locked
            WHERE j.id = locked.id
            RETURNING j.id",
        )
        .bind(parents)
        .fetch_all(&mut *conn)
        .await?;
        let live: HashSet<i64> = live.into_iter().collect();
        let rest: Vec<i64> = parents
            .iter()
            .copied()
            .filter(|id| !live.contains(id))
            .collect();
        // Finished parents are marked too: one retried later carries the
        // mark back to the queue, and its next death cancels the children.
        let finished: Vec<(i64, String)> = sqlx::query_as(
            "WITH locked AS (
                SELECT id FROM trawl_jobs.jobs_finished WHERE id = ANY($1) ORDER BY id FOR UPDATE
            )
            UPDATE trawl_jobs.jobs_finished f SET has_children = true FROM locked
            WHERE f.id = locked.id
            RETURNING f.id, f.state::text",
        )
        .bind(&rest)
        .fetch_all(&mut *conn)
        .await?;
        if finished.len() < rest.len() {
            let known: HashSet<i64> = finished.iter().map(|(id, _)| *id).collect();
            let missing = rest.iter().find(|id| !known.contains(id)).copied();
            return Err(Error::invalid(
                "parents",
                format!("job {} does not exist", missing.unwrap_or_default()),
            ));
        }
        let doomed = finished
            .iter()
            .find(|(_, state)| state != "succeeded")
            .map(|(id, state)| format!("parent {id} was {state}"));
        Ok(Parents {
            waiting: i32::try_from(live.len()).unwrap_or(i32::MAX),
            doomed,
        })
    }
}

/// The answer of [`take_unique_key`].
enum Taken {
    /// The key is ours, for a job to be inserted with this id.
    New(i64),
    /// A job holds the key.
    Held(i64),
}

/// Takes `key` for a new job id, or finds the job that holds it. Safe
/// under concurrent enqueues: the second insert waits for the first's
/// transaction, then finds the key taken.
async fn take_unique_key(
    conn: &mut PgConnection,
    key: &str,
    window: UniqueWindow,
) -> Result<Taken> {
    let period_ms = match window {
        UniqueWindow::WhileLive => None,
        UniqueWindow::For(period) => Some(i64::try_from(period.as_millis()).unwrap_or(i64::MAX)),
    };
    for _ in 0..UNIQUE_TRIES {
        let taken: Option<i64> = sqlx::query_scalar(
            "INSERT INTO trawl_jobs.unique_keys (unique_key, job_id, expires_at)
             SELECT $1, nextval(pg_get_serial_sequence('trawl_jobs.jobs', 'id')),
                now() + $2 * interval '1 millisecond'
             ON CONFLICT (unique_key) DO UPDATE
                SET job_id = excluded.job_id, expires_at = excluded.expires_at
                WHERE trawl_jobs.unique_keys.expires_at IS NOT NULL
                    AND trawl_jobs.unique_keys.expires_at <= now()
             RETURNING job_id",
        )
        .bind(key)
        .bind(period_ms)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = taken {
            return Ok(Taken::New(id));
        }
        let holder: Option<i64> =
            sqlx::query_scalar("SELECT job_id FROM trawl_jobs.unique_keys WHERE unique_key = $1")
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(holder) = holder {
            return Ok(Taken::Held(holder));
        }
    }
    Err(Error::invalid(
        "unique_key",
        format!("'{key}' kept changing hands; try again"),
    ))
}

/// Cancels up to `limit` live children of `parents` (each a finished
/// parent and why its children are cancelled): waiting ones move to the
/// finished jobs as cancelled (their own children are then queued in
/// turn), running ones are asked to stop at their next heartbeat. A parent
/// with no child left to cancel leaves `cancel_propagation`. Returns how
/// many children it changed.
pub(crate) async fn propagate_cancel(
    conn: &mut PgConnection,
    parents: &[(i64, String)],
    now: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<u64> {
    if parents.is_empty() {
        return Ok(0);
    }
    let (ids, reasons): (Vec<i64>, Vec<&str>) =
        parents.iter().map(|(id, why)| (*id, why.as_str())).unzip();
    let children: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT j.id, j.state::text, p.reason
         FROM unnest($1::bigint[], $2::text[]) AS p(parent_id, reason)
         JOIN trawl_jobs.job_edges e ON e.parent_id = p.parent_id
         JOIN trawl_jobs.jobs j ON j.id = e.child_id
         WHERE NOT (j.state = 'running' AND j.cancel_requested)
         ORDER BY j.id
         LIMIT $3
         FOR UPDATE OF j SKIP LOCKED",
    )
    .bind(&ids)
    .bind(&reasons)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut seen = HashSet::new();
    let (mut running, mut waiting, mut why) = (Vec::new(), Vec::new(), Vec::new());
    for (id, state, reason) in children {
        if !seen.insert(id) {
            continue;
        }
        if state == "running" {
            running.push(id);
        } else {
            waiting.push(id);
            why.push(Some(format!("cancelled: {reason}")));
        }
    }
    if !running.is_empty() {
        sqlx::query("UPDATE trawl_jobs.jobs SET cancel_requested = true WHERE id = ANY($1)")
            .bind(&running)
            .execute(&mut *conn)
            .await?;
    }
    let cancelled = finish_jobs(conn, &waiting, &why, JobState::Cancelled, now).await?;
    sqlx::query(
        "DELETE FROM trawl_jobs.cancel_propagation c
         WHERE c.parent_id = ANY($1) AND NOT EXISTS (
            SELECT 1 FROM trawl_jobs.job_edges e JOIN trawl_jobs.jobs j ON j.id = e.child_id
            WHERE e.parent_id = c.parent_id AND NOT (j.state = 'running' AND j.cancel_requested)
         )",
    )
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    Ok(cancelled + running.len() as u64)
}
