//! [`JobQueue`]: the schema, enqueueing, and the operations on jobs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
// Dynamic SQL here is built from constant column lists only, never from
// input: every value is a bound parameter.
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

use crate::error::{Error, Result};
use crate::flow::EnqueueOutcome;
use crate::job::{JOB_COLUMNS, JobRow, JobState, NewJob, Priority};

/// The channel on which an enqueue wakes idle workers; the payload is the
/// queue's name.
pub const NOTIFY_CHANNEL: &str = "trawl_jobs_enqueued";

/// Rows per `INSERT … SELECT FROM unnest(…)` statement of `enqueue_many`.
const ENQUEUE_BATCH: usize = 10_000;

/// The schema's migrations, embedded in the crate.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A Postgres-backed job queue.
///
/// Cheap to clone (it holds a connection pool). See the crate
/// documentation for a complete example.
#[derive(Debug, Clone)]
pub struct JobQueue {
    pool: PgPool,
}

/// Which jobs [`JobQueue::list_jobs`] returns: every field that is set must
/// match. Results come by id, `limit` at a time; pass the returned
/// `next_cursor` back as `cursor` for the next page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs in this queue.
    pub queue: Option<String>,
    /// Only jobs of this priority.
    pub priority: Option<Priority>,
    /// At most this many jobs (default 100, at most 10,000).
    pub limit: Option<u32>,
    /// Only jobs with an id above this (the previous page's `next_cursor`).
    pub cursor: Option<i64>,
}

/// A page of [`JobQueue::list_jobs`].
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    /// The jobs, by id.
    pub jobs: Vec<JobRow>,
    /// The cursor of the next page, `None` on the last one.
    pub next_cursor: Option<i64>,
}

/// What [`JobQueue::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job had not started: it is cancelled.
    Cancelled,
    /// The job is running: its worker is told at its next heartbeat and
    /// the job ends cancelled unless it finishes first.
    Requested,
    /// The job had already finished; nothing changed.
    AlreadyFinished,
    /// No job has this id.
    NotFound,
}

/// Counts of one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStatistics {
    /// The queue.
    pub queue: String,
    /// Jobs per state (finished jobs not yet pruned included).
    pub by_state: Vec<(JobState, u64)>,
    /// How long the oldest ready pending job has waited past its `run_at`.
    pub oldest_pending_age: Option<Duration>,
}

impl JobQueue {
    /// A queue on `pool`. Call [`migrate`](Self::migrate) once before use.
    pub fn new(pool: PgPool) -> JobQueue {
        JobQueue { pool }
    }

    /// The pool the queue uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates or upgrades the `trawl_jobs` schema. Safe to call from many
    /// processes at once (sqlx takes an advisory lock); the migration
    /// table is `trawl_jobs._sqlx_migrations`, apart from the host
    /// application's own.
    pub async fn migrate(&self) -> Result<()> {
        let mut migrator = sqlx::migrate::Migrator {
            migrations: MIGRATOR.migrations.clone(),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        migrator.dangerous_set_table_name("trawl_jobs._sqlx_migrations");
        migrator.create_schema("trawl_jobs");
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Enqueues one job; returns its id.
    pub async fn enqueue(&self, job: NewJob) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        Self::enqueue_in(&mut conn, job).await
    }

    /// Enqueues one job on `conn`, for instance inside the caller's
    /// transaction: the job exists (and wakes a worker) only if that
    /// transaction commits.
    pub async fn enqueue_in(conn: &mut PgConnection, job: NewJob) -> Result<i64> {
        let ids = Self::enqueue_many_in(conn, vec![job]).await?;
        Ok(ids[0])
    }

    /// Enqueues one job and says whether it was enqueued or another job
    /// holds its unique key (see [`NewJob::unique_key`]).
    pub async fn enqueue_unique(&self, job: NewJob) -> Result<EnqueueOutcome> {
        let mut tx = self.pool.begin().await?;
        let outcomes = enqueue_in_order(&mut tx, std::slice::from_ref(&job)).await?;
        tx.commit().await?;
        Ok(outcomes[0])
    }

    /// Enqueues many jobs in few round trips (one statement per 10,000
    /// jobs); returns their ids in order.
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<i64>> {
        let mut tx = self.pool.begin().await?;
        let ids = Self::enqueue_many_in(&mut tx, jobs).await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// [`enqueue_many`](Self::enqueue_many) on `conn` (the caller's
    /// transaction).
    pub async fn enqueue_many_in(conn: &mut PgConnection, jobs: Vec<NewJob>) -> Result<Vec<i64>> {
        let outcomes = enqueue_in_order(conn, &jobs).await?;
        Ok(outcomes.into_iter().map(EnqueueOutcome::id).collect())
    }

    /// The job with `id`, finished or not.
    pub async fn get(&self, id: i64) -> Result<Option<JobRow>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM trawl_jobs.jobs WHERE id = $1 \
             UNION ALL SELECT {JOB_COLUMNS} FROM trawl_jobs.jobs_finished WHERE id = $1"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(JobRow::from_row).transpose()
    }

    /// Jobs matching `filter`, a page at a time (keyset pagination by id).
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<JobPage> {
        let limit = i64::from(filter.limit.unwrap_or(100).clamp(1, 10_000));
        let condition = "($1::text IS NULL OR state::text = $1) \
             AND ($2::text IS NULL OR kind = $2) \
             AND ($3::text IS NULL OR queue = $3) \
             AND ($4::smallint IS NULL OR priority = $4) \
             AND id > $5";
        let sql = format!(
            "(SELECT {JOB_COLUMNS} FROM trawl_jobs.jobs WHERE {condition} ORDER BY id LIMIT $6) \
             UNION ALL \
             (SELECT {JOB_COLUMNS} FROM trawl_jobs.jobs_finished WHERE {condition} ORDER BY id LIMIT $6) \
             ORDER BY id LIMIT $6"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(filter.state.map(JobState::as_str))
            .bind(filter.kind.as_deref())
            .bind(filter.queue.as_deref())
            .bind(filter.priority.map(|p| p.0))
            .bind(filter.cursor.unwrap_or(i64::MIN))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let jobs = rows
            .iter()
            .map(JobRow::from_row)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = (jobs.len() as i64 == limit)
            .then(|| jobs.last().map(|j| j.id))
            .flatten();
        Ok(JobPage { jobs, next_cursor })
    }

    /// Cancels a job that has not finished. A running job is asked to stop
    /// (its worker sees it at its next heartbeat).
    pub async fn cancel(&self, id: i64) -> Result<CancelOutcome> {
        let mut tx = self.pool.begin().await?;
        let state: Option<String> =
            sqlx::query_scalar("SELECT state::text FROM trawl_jobs.jobs WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let outcome = match state.as_deref().map(str::parse::<JobState>).transpose()? {
            Some(JobState::Running) => {
                sqlx::query("UPDATE trawl_jobs.jobs SET cancel_requested = true WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                CancelOutcome::Requested
            }
            Some(_) => {
                let why = Some("cancelled".to_owned());
                finish_jobs(&mut tx, &[id], &[why], JobState::Cancelled, None).await?;
                CancelOutcome::Cancelled
            }
            None => {
                let finished: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM trawl_jobs.jobs_finished WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if finished.is_some() {
                    CancelOutcome::AlreadyFinished
                } else {
                    CancelOutcome::NotFound
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Resumes every job suspended on `key`: each is pending again at once
    /// (its suspension does not use up one of its attempts). Returns how
    /// many it resumed; a signal no job waits for does nothing.
    ///
    /// ```no_run
    /// # async fn example(queue: trawl_jobs::JobQueue) -> trawl_jobs::Result<()> {
    /// // A worker returned JobResult::Suspend { signal: "approval-42".into(), .. }.
    /// let resumed = queue.signal("approval-42").await?;
    /// assert_eq!(resumed, 1);
    /// # Ok(()) }
    /// ```
    pub async fn signal(&self, key: &str) -> Result<u64> {
        let mut conn = self.pool.acquire().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM trawl_jobs.jobs WHERE state = 'suspended' AND signal_key = $1",
        )
        .bind(key)
        .fetch_all(&mut *conn)
        .await?;
        resume_suspended(&mut conn, &ids, None).await
    }

    /// Puts a dead or cancelled job back in its queue with as many
    /// attempts again as it had in all: attempt numbers go on from the last
    /// one and `max_attempts` grows by the job's `max_attempts`, so that
    /// `job_attempts` keeps one row per attempt and a late completion of an
    /// earlier attempt can never match a new one. Children it has that were
    /// not cancelled yet wait for it again (those already cancelled stay
    /// so). Returns whether it did.
    pub async fn retry(&self, id: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "WITH gone AS (
                DELETE FROM trawl_jobs.jobs_finished
                WHERE id = $1 AND state IN ('dead', 'cancelled')
                RETURNING *
            )
            INSERT INTO trawl_jobs.jobs (id, kind, queue, state, priority, payload, tags,
                run_at, attempt, max_attempts, timeout_ms, last_error, created_at,
                unique_key, concurrency_key, has_children, cost)
            SELECT id, kind, queue, 'pending', priority, payload, tags,
                now(), attempt, attempt + max_attempts, timeout_ms, last_error, created_at,
                unique_key, concurrency_key, has_children, cost
            FROM gone
            RETURNING queue",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = &moved {
            // Children not cancelled yet wait for the job again.
            sqlx::query("DELETE FROM trawl_jobs.cancel_propagation WHERE parent_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let queue: String = row.try_get("queue")?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(queue)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(moved.is_some())
    }

    /// Counts per queue and state, with the age of the oldest ready job.
    pub async fn statistics(&self) -> Result<Vec<QueueStatistics>> {
        let rows = sqlx::query(
            "SELECT queue, state::text AS state, count(*) AS n,
                max(CASE WHEN state = 'pending' AND run_at <= now()
                    THEN extract(epoch FROM now() - run_at) END)::float8 AS oldest
             FROM trawl_jobs.jobs GROUP BY queue, state
             UNION ALL
             SELECT queue, state::text, count(*), NULL::float8
             FROM trawl_jobs.jobs_finished GROUP BY queue, state
             ORDER BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut stats: Vec<QueueStatistics> = Vec::new();
        for row in &rows {
            let queue: String = row.try_get("queue")?;
            let state: JobState = row.try_get::<String, _>("state")?.parse()?;
            let n: i64 = row.try_get("n")?;
            let oldest: Option<f64> = row.try_get("oldest")?;
            if stats.last().is_none_or(|s| s.queue != queue) {
                stats.push(QueueStatistics {
                    queue: queue.clone(),
                    by_state: Vec::new(),
                    oldest_pending_age: None,
                });
            }
            let entry = stats.last_mut().expect("pushed above");
            entry.by_state.push((state, n as u64));
            if let Some(secs) = oldest {
                entry.oldest_pending_age = Some(Duration::from_secs_f64(secs.max(0.0)));
            }
        }
        Ok(stats)
    }

    /// Deletes finished jobs (their attempts, and the edges to their
    /// parents) that finished more than `older_than` ago, and unique keys
    /// whose period is over; returns how many jobs.
    pub async fn prune(&self, older_than: Duration) -> Result<u64> {
        let older_than = chrono::Duration::from_std(older_than)
            .map_err(|_| Error::invalid("older_than", "too large"))?;
        let cutoff: DateTime<Utc> = Utc::now() - older_than;
        let pruned: i64 = sqlx::query_scalar(
            "WITH gone AS (
                DELETE FROM trawl_jobs.jobs_finished WHERE finished_at < $1 RETURNING id
            ), attempts AS (
                DELETE FROM trawl_jobs.job_attempts a USING gone WHERE a.job_id = gone.id
            ), edges AS (
                DELETE FROM trawl_jobs.job_edges e USING gone WHERE e.child_id = gone.id
            ), keys AS (
                DELETE FROM trawl_jobs.unique_keys WHERE expires_at <= now()
            )
            SELECT count(*) FROM gone",
        )
        .bind(cutoff)
        .fetch_one(&self.pool)
        .await?;
        Ok(pruned as u64)
    }
}

/// Enqueues `jobs` in order on `conn`: plain jobs in batches, a job with
/// parents or a unique key on its own; then wakes the queues that got jobs.
async fn enqueue_in_order(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<Vec<EnqueueOutcome>> {
    for job in jobs {
        job.validate()?;
    }
    crate::limits::wait_for_room(conn, jobs).await?;
    set_concurrency_caps(conn, jobs).await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut rest = jobs;
    while !rest.is_empty() {
        let plain = rest
            .iter()
            .take(ENQUEUE_BATCH)
            .take_while(|job| job.parents.is_empty() && job.unique.is_none())
            .count();
        if plain > 0 {
            let ids = insert_batch(conn, &rest[..plain]).await?;
            outcomes.extend(ids.into_iter().map(EnqueueOutcome::Enqueued));
            rest = &rest[plain..];
        } else {
            outcomes.push(crate::flow::enqueue_flow_job(conn, &rest[0]).await?);
            rest = &rest[1..];
        }
    }
    let mut queues: Vec<&str> = jobs
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| matches!(outcome, EnqueueOutcome::Enqueued(_)))
        .map(|(job, _)| job.queue.as_str())
        .collect();
    queues.sort_unstable();
    queues.dedup();
    crate::registry::notify(conn, &queues).await?;
    Ok(outcomes)
}

async fn insert_batch(conn: &mut PgConnection, batch: &[NewJob]) -> Result<Vec<i64>> {
    let n = batch.len();
    let mut kinds = Vec::with_capacity(n);
    let mut queues = Vec::with_capacity(n);
    let mut priorities = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    let mut run_ats = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut timeouts = Vec::with_capacity(n);
    let mut costs = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    for job in batch {
        kinds.push(job.kind.as_str());
        queues.push(job.queue.as_str());
        priorities.push(job.priority.0);
        payloads.push(&job.payload);
        tags.push(serde_json::Value::from(job.tags.clone()));
        run_ats.push(job.run_at);
        attempts.push(job.max_attempts as i32);
        timeouts.push(job.timeout_ms());
        costs.push(job.cost as i32);
        keys.push(job.concurrency.as_ref().map(|(key, _)| key.as_str()));
    }
    let rows: Vec<PgRow> = sqlx::query(
        "INSERT INTO trawl_jobs.jobs (kind, queue, state, priority, payload, tags, run_at,
            max_attempts, timeout_ms, cost, concurrency_key)
         SELECT k, q, 'pending', p, pl,
            ARRAY(SELECT jsonb_array_elements_text(t)), coalesce(r, now()), a, tm, c, ck
         FROM unnest($1::text[], $2::text[], $3::smallint[], $4::jsonb[], $5::jsonb[],
            $6::timestamptz[], $7::int[], $8::bigint[], $9::int[], $10::text[])
            WITH ORDINALITY AS u(k, q, p, pl, t, r, a, tm, c, ck, ord)
         ORDER BY ord
         RETURNING id",
    )
    .bind(&kinds)
    .bind(&queues)
    .bind(&priorities)
    .bind(&payloads)
    .bind(&tags)
    .bind(&run_ats)
    .bind(&attempts)
    .bind(&timeouts)
    .bind(&costs)
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| row.try_get::<i64, _>("id").map_err(Error::from))
        .collect()
}

/// Moves jobs (each with its last error, if given) from the hot table to
/// `jobs_finished` in `state`; `now` is the finishing time (`None`: the
/// database's clock). Returns how many moved.
pub(crate) async fn finish_jobs(
    conn: &mut PgConnection,
    ids: &[i64],
    errors: &[Option<String>],
    state: JobState,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    let moved = sqlx::query(
        "WITH c AS (
            SELECT * FROM unnest($1::bigint[], $2::text[]) AS c(id, error)
        ), gone AS (
            DELETE FROM trawl_jobs.jobs j USING c WHERE j.id = c.id
            RETURNING j.*, c.error AS why
        )
        INSERT INTO trawl_jobs.jobs_finished (id, partition, kind, queue, state, priority,
            payload, tags, run_at, attempt, max_attempts, timeout_ms, attempted_at,
            cancel_requested, last_error, created_at, finished_at, unique_key,
            concurrency_key, pending_parents, suspended_until, signal_key, on_timeout,
            has_children, cost)
        SELECT id, partition, kind, queue, $3::trawl_jobs.job_state, priority,
            payload, tags, run_at, attempt, max_attempts, timeout_ms, attempted_at,
            cancel_requested, coalesce(why, last_error), created_at, COALESCE($4, now()),
            unique_key, concurrency_key, pending_parents, suspended_until, signal_key,
            on_timeout, has_children, cost
        FROM gone",
    )
    .bind(ids)
    .bind(errors)
    .bind(state.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(moved.rows_affected())
}

/// Makes the listed jobs that are still suspended pending again at once
/// (`max_attempts` grows by one, so that the suspended attempt does not
/// use up a try), and wakes their queues. Returns how many it resumed.
pub(crate) async fn resume_suspended(
    conn: &mut PgConnection,
    ids: &[i64],
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let queues: Vec<String> = sqlx::query_scalar(
        "UPDATE trawl_jobs.jobs SET state = 'pending', run_at = COALESCE($2, now()),
            max_attempts = max_attempts + 1,
            suspended_until = NULL, signal_key = NULL, on_timeout = NULL
         WHERE id = ANY($1) AND state = 'suspended'
         RETURNING queue",
    )
    .bind(ids)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let mut names: Vec<&str> = queues.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    crate::registry::notify(conn, &names).await?;
    Ok(queues.len() as u64)
}

/// Records the cap of every concurrency key the jobs name (the last job
/// naming a key sets its cap).
async fn set_concurrency_caps(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<()> {
    let mut caps = std::collections::BTreeMap::new();
    for (key, cap) in jobs.iter().filter_map(|job| job.concurrency.as_ref()) {
        caps.insert(key.as_str(), *cap as i32);
    }
    if caps.is_empty() {
        return Ok(());
    }
    let (keys, caps): (Vec<&str>, Vec<i32>) = caps.into_iter().unzip();
    sqlx::query(
        "INSERT INTO trawl_jobs.concurrency_keys (key, max_running)
         SELECT * FROM unnest($1::text[], $2::int[])
         ON CONFLICT (key) DO UPDATE SET max_running = excluded.max_running
         WHERE trawl_jobs.concurrency_keys.max_running <> excluded.max_running",
    )
    .bind(&keys)
    .bind(&caps)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
