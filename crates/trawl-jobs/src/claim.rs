//! Claiming jobs and recording how their attempts ended: the two
//! statements every worker runs, in batches.
//!
//! Both take `now: Option<DateTime<Utc>>`, used in SQL as
//! `COALESCE($n, now())`, so that tests can pin the clock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use crate::error::Result;
use crate::job::Priority;

/// A job leased to a worker by [`claim`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClaimedJob {
    /// The job's id.
    pub id: i64,
    /// Which worker runs it.
    pub kind: String,
    /// The queue it came from.
    pub queue: String,
    /// Its priority.
    pub priority: Priority,
    /// Its input.
    pub payload: serde_json::Value,
    /// When it was due.
    pub run_at: DateTime<Utc>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts in all.
    pub max_attempts: u32,
    /// How long this attempt may run (the job's, or the worker's default).
    pub timeout: Duration,
    /// When the lease ends unless renewed.
    pub lease_expires_at: DateTime<Utc>,
}

/// How an attempt ended, as recorded by [`complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job succeeded.
    Succeeded,
    /// The worker chose not to run it; the job ends succeeded with the
    /// reason on its attempt.
    Skipped(String),
    /// The attempt failed; the job runs again after `delay`.
    Retry {
        /// The wait before the next attempt.
        delay: Duration,
        /// What went wrong.
        error: String,
    },
    /// The job failed for good: a dead letter.
    Dead(String),
    /// The job stopped because it was cancelled.
    Cancelled,
    /// The worker gave the job back unfinished (it is shutting down): the
    /// job is pending again at once, and the attempt does not use up one of
    /// its tries (`max_attempts` grows by one, so the attempt numbers in
    /// `job_attempts` stay unique). The text says why.
    Released(String),
    /// The job waits for a signal until `until` (the attempt is recorded
    /// as `suspended`); what happens at `until` without a signal is
    /// `on_timeout`.
    Suspend {
        /// The deadline of the wait.
        until: DateTime<Utc>,
        /// The key a signal must name to wake the job.
        signal: String,
        /// What happens at the deadline.
        on_timeout: OnTimeout,
    },
}

/// What happens to a suspended job whose deadline passes without a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnTimeout {
    /// The job runs again, as if signalled.
    Resume,
    /// The job fails for good: a dead letter.
    Fail,
}

impl OnTimeout {
    /// The name stored in the `on_timeout` column.
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Resume => "resume",
            OnTimeout::Fail => "fail",
        }
    }
}

impl Outcome {
    /// The outcome's name (the `outcome` column of `job_attempts`), the
    /// error or reason kept with it, and the retry delay in milliseconds.
    fn parts(&self) -> (&'static str, Option<&str>, i64) {
        match self {
            Outcome::Succeeded => ("succeeded", None, 0),
            Outcome::Skipped(reason) => ("skipped", Some(reason), 0),
            Outcome::Retry { delay, error } => (
                "retry",
                Some(error),
                i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
            ),
            Outcome::Dead(error) => ("dead", Some(error), 0),
            Outcome::Cancelled => ("cancelled", None, 0),
            Outcome::Released(why) => ("released", Some(why), 0),
            Outcome::Suspend { .. } => ("suspended", None, 0),
        }
    }
}

/// Postgres refuses NUL in text: an error message that carries one (from a
/// worker echoing binary input) must not make its whole batch fail.
fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// One attempt's end, for [`complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The job.
    pub id: i64,
    /// The attempt that ended (a stale completion, of an attempt whose lease
    /// was lost meanwhile, is ignored).
    pub attempt: u32,
    /// How it ended.
    pub outcome: Outcome,
}

/// Leases up to `max` ready jobs of `queue` to `worker_id` for `lease`, by
/// priority, then `run_at`, then id, skipping rows other workers hold.
/// `default_timeout` is the attempt's limit for jobs that set none.
///
/// Respects the queue's limits: its fleet-wide cap on running jobs, the
/// budgets of the queue and of job kinds, and the caps of concurrency keys
/// (see [`JobQueue::set_queue_limits`](crate::JobQueue::set_queue_limits),
/// [`JobQueue::set_budget`](crate::JobQueue::set_budget) and
/// [`NewJob::concurrency_key`](crate::NewJob::concurrency_key)).
pub async fn claim(
    conn: &mut PgConnection,
    worker_id: &str,
    queue: &str,
    max: u32,
    lease: Duration,
    default_timeout: Duration,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<ClaimedJob>> {
    let limits = Limited::read(conn, queue).await?;
    let request = ClaimRequest {
        worker_id,
        queue,
        max,
        lease,
        default_timeout,
        now,
        exclude_kinds: &[],
        only_kind: None,
    };
    claim_with(conn, &request, limits).await
}

/// What a claim asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimRequest<'a> {
    pub(crate) worker_id: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) max: u32,
    pub(crate) lease: Duration,
    pub(crate) default_timeout: Duration,
    pub(crate) now: Option<DateTime<Utc>>,
    /// Kinds not to claim (their circuit breaker is open).
    pub(crate) exclude_kinds: &'a [String],
    /// Claim only jobs of this kind (a breaker's probe).
    pub(crate) only_kind: Option<&'a str>,
}

/// Which limits a queue's claims must take into account (the caps of
/// concurrency keys always are).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limited {
    /// The queue has a fleet-wide cap on running jobs.
    pub(crate) capped: bool,
    /// The queue, or some job kind, has a budget.
    pub(crate) budgeted: bool,
}

impl Limited {
    pub(crate) async fn read(conn: &mut PgConnection, queue: &str) -> Result<Limited> {
        let (capped, budgeted): (bool, bool) = sqlx::query_as(
            "SELECT
                EXISTS (SELECT 1 FROM trawl_jobs.queues
                    WHERE name = $1 AND max_running IS NOT NULL),
                EXISTS (SELECT 1 FROM trawl_jobs.budgets
                    WHERE (scope = 'queue' AND target = $1) OR scope = 'kind')",
        )
        .bind(queue)
        .fetch_one(&mut *conn)
        .await?;
        Ok(Limited { capped, budgeted })
    }
}

/// The claim statement of a queue without limits (those go through
/// `trawl_jobs.claim_limited`, schema version 3), with only the filters a
/// claim needs: a parameter that can be NULL or empty (`$x IS NULL OR …`)
/// leaves the planner guessing in the generic plan of a prepared
/// statement, and its guess (the whole index, above `jit_above_cost`)
/// makes every claim pay for a JIT compilation. `$7` kinds to skip, `$8`
/// the only kind. A job with a concurrency key starts only on its turn
/// (`trawl_jobs.concurrency_turn`: fewer than the key's cap of live jobs
/// with the key have a lower id).
fn claim_sql(skip_kinds: bool, only_kind: bool) -> String {
    let mut filters = String::new();
    if skip_kinds {
        filters.push_str(" AND kind <> ALL($7::text[])");
    }
    if only_kind {
        filters.push_str(" AND kind = $8");
    }
    format!(
        "WITH next AS (
            SELECT id FROM trawl_jobs.jobs j
            WHERE state = 'pending' AND queue = $1 AND run_at <= COALESCE($5, now()){filters}
                AND (j.concurrency_key IS NULL
                    OR trawl_jobs.concurrency_turn(j.concurrency_key, j.id))
            ORDER BY priority DESC, run_at, id
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        )
        UPDATE trawl_jobs.jobs j SET
            state = 'running',
            attempt = j.attempt + 1,
            lease_owner = $3,
            lease_expires_at = COALESCE($5, now()) + $4 * interval '1 millisecond',
            attempted_at = COALESCE($5, now()),
            deadline_at = COALESCE($5, now())
                + COALESCE(j.timeout_ms, $6) * interval '1 millisecond'
        FROM next WHERE j.id = next.id
        RETURNING j.id, j.kind, j.queue, j.priority, j.payload, j.run_at, j.attempt,
            j.max_attempts, COALESCE(j.timeout_ms, $6) AS timeout_ms, j.lease_expires_at"
    )
}

/// The claim of `request`, within the queue's `limits`: one statement
/// either way, the plain claim for a queue without a cap or budgets, else
/// `trawl_jobs.claim_limited` (which locks the queue's settings and its
/// budgets so that concurrent claims count each other's jobs, claims what
/// fits, and charges the budgets).
pub(crate) async fn claim_with(
    conn: &mut PgConnection,
    request: &ClaimRequest<'_>,
    limits: Limited,
) -> Result<Vec<ClaimedJob>> {
    let sql = if limits == Limited::default() {
        claim_sql(
            !request.exclude_kinds.is_empty(),
            request.only_kind.is_some(),
        )
    } else {
        "SELECT * FROM trawl_jobs.claim_limited($1, $2::int, $3, $4, $5, $6, $7, $8)".to_owned()
    };
    // Every parameter is bound; the statement names only those it needs.
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(request.queue)
        .bind(i64::from(request.max))
        .bind(request.worker_id)
        .bind(millis(request.lease))
        .bind(request.now)
        .bind(millis(request.default_timeout))
        .bind(request.exclude_kinds)
        .bind(request.only_kind)
        .fetch_all(&mut *conn)
        .await?;
    claimed_jobs(&rows)
}

fn claimed_jobs(rows: &[PgRow]) -> Result<Vec<ClaimedJob>> {
    let mut jobs = rows
        .iter()
        .map(|row| {
            Ok(ClaimedJob {
                id: row.try_get("id")?,
                kind: row.try_get("kind")?,
                queue: row.try_get("queue")?,
                priority: Priority(row.try_get("priority")?),
                payload: row.try_get("payload")?,
                run_at: row.try_get("run_at")?,
                attempt: row.try_get::<i32, _>("attempt")?.max(0) as u32,
                max_attempts: row.try_get::<i32, _>("max_attempts")?.max(1) as u32,
                timeout: Duration::from_millis(row.try_get::<i64, _>("timeout_ms")?.max(0) as u64),
                lease_expires_at: row.try_get("lease_expires_at")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // UPDATE … RETURNING keeps no order: hand them out in claim order.
    jobs.sort_by(|a, b| (b.priority, a.run_at, a.id).cmp(&(a.priority, b.run_at, b.id)));
    Ok(jobs)
}

/// Records how attempts of `worker_id` ended, all in one statement: finished
/// jobs move to `jobs_finished`, retried ones go back to `pending` after
/// their delay (released ones at once), suspended ones wait in `suspended`,
/// and each attempt leaves a row in `job_attempts`. A
/// completion whose job is no longer leased to `worker_id` at that attempt
/// (its lease expired and another worker took it) changes nothing.
/// Returns the ids whose completion was applied.
pub async fn complete(
    conn: &mut PgConnection,
    worker_id: &str,
    completions: &[Completion],
    now: Option<DateTime<Utc>>,
) -> Result<Vec<i64>> {
    if completions.is_empty() {
        return Ok(Vec::new());
    }
    let n = completions.len();
    let (mut ids, mut attempts, mut outcomes, mut errors, mut delays) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut untils, mut signals, mut on_timeouts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut sorted: Vec<&Completion> = completions.iter().collect();
    sorted.sort_by_key(|c| (c.id, c.attempt));
    for completion in sorted {
        let (outcome, error, delay) = completion.outcome.parts();
        ids.push(completion.id);
        attempts.push(i32::try_from(completion.attempt).unwrap_or(i32::MAX));
        outcomes.push(outcome);
        errors.push(error.map(storable));
        delays.push(delay);
        match &completion.outcome {
            Outcome::Suspend {
                until,
                signal,
                on_timeout,
            } => {
                untils.push(Some(*until));
                signals.push(Some(storable(signal)));
                on_timeouts.push(Some(on_timeout.as_str()));
            }
            _ => {
                untils.push(None);
                signals.push(None);
                on_timeouts.push(None);
            }
        }
    }
    let applied: Vec<i64> = sqlx::query_scalar(
        "WITH c AS (
            SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::bigint[],
                $8::timestamptz[], $9::text[], $10::text[])
                AS c(id, attempt, outcome, error, delay_ms, until, signal, on_timeout)
        ), ours AS (
            -- One primary-key lookup per completion (OFFSET 0 keeps the
            -- planner from scanning all of the worker's leases through
            -- jobs_lease_owner instead), locked in id order (the input is
            -- sorted), as heartbeats lock them: no deadlock.
            SELECT j.id, j.attempt, j.attempted_at, c.outcome, c.error, c.delay_ms,
                c.until, c.signal, c.on_timeout
            FROM c CROSS JOIN LATERAL (
                SELECT id, attempt, attempted_at, state, lease_owner
                FROM trawl_jobs.jobs WHERE id = c.id OFFSET 0
            ) j
            WHERE j.attempt = c.attempt AND j.state = 'running' AND j.lease_owner = $6
            ORDER BY j.id
            FOR UPDATE OF j
        ), retried AS (
            UPDATE trawl_jobs.jobs j SET
                state = 'pending',
                run_at = COALESCE($7, now()) + ours.delay_ms * interval '1 millisecond',
                lease_owner = NULL, lease_expires_at = NULL, deadline_at = NULL,
                last_error = ours.error
            FROM ours WHERE j.id = ours.id AND ours.outcome = 'retry'
        ), released AS (
            UPDATE trawl_jobs.jobs j SET
                state = 'pending',
                run_at = COALESCE($7, now()),
                max_attempts = j.max_attempts + 1,
                lease_owner = NULL, lease_expires_at = NULL, deadline_at = NULL
            FROM ours WHERE j.id = ours.id AND ours.outcome = 'released'
        ), suspended AS (
            UPDATE trawl_jobs.jobs j SET
                state = 'suspended',
                suspended_until = ours.until,
                signal_key = ours.signal,
                on_timeout = ours.on_timeout,
                lease_owner = NULL, lease_expires_at = NULL, deadline_at = NULL
            FROM ours WHERE j.id = ours.id AND ours.outcome = 'suspended'
        ), gone AS (
            DELETE FROM trawl_jobs.jobs j USING ours
            WHERE j.id = ours.id AND ours.outcome NOT IN ('retry', 'released', 'suspended')
            RETURNING j.*, ours.outcome AS how, ours.error AS why
        ), finished AS (
            INSERT INTO trawl_jobs.jobs_finished (id, partition, kind, queue, state, priority,
                payload, tags, run_at, attempt, max_attempts, timeout_ms, attempted_at,
                cancel_requested, last_error, created_at, finished_at, unique_key,
                concurrency_key, pending_parents, suspended_until, signal_key, on_timeout, has_children, cost)
            SELECT id, partition, kind, queue,
                (CASE how WHEN 'dead' THEN 'dead' WHEN 'cancelled' THEN 'cancelled'
                    ELSE 'succeeded' END)::trawl_jobs.job_state,
                priority, payload, tags, run_at, attempt, max_attempts, timeout_ms,
                attempted_at, cancel_requested,
                CASE WHEN how = 'dead' THEN why ELSE last_error END,
                created_at, COALESCE($7, now()), unique_key, concurrency_key,
                pending_parents, suspended_until, signal_key, on_timeout, has_children, cost
            FROM gone
        ), history AS (
            INSERT INTO trawl_jobs.job_attempts (job_id, attempt, worker_id, started_at,
                finished_at, outcome, error)
            SELECT id, attempt, $6, attempted_at, COALESCE($7, now()), outcome, error
            FROM ours
        )
        SELECT id FROM ours",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&outcomes)
    .bind(&errors)
    .bind(&delays)
    .bind(worker_id)
    .bind(now)
    .bind(&untils)
    .bind(&signals)
    .bind(&on_timeouts)
    .fetch_all(&mut *conn)
    .await?;
    Ok(applied)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
