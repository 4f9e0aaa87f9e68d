//! `suspension_timeout`: suspended jobs whose deadline passed without a
//! signal resume, or fail for good, as each job's `on_timeout` says.
//!
//! The tick walks one partition's range of the `jobs_suspended_until`
//! index (`(partition, suspended_until) WHERE state = 'suspended'`),
//! earliest deadline first, at most [`BATCH`] jobs.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{BATCH, JOB_PARTITIONS, check_partition};
use crate::error::Result;
use crate::job::JobState;
use crate::queue::{finish_jobs, resume_suspended};

/// Resumes (`on_timeout` = resume: pending again at once, as after a
/// signal) or fails (`on_timeout` = fail: a dead letter whose last error
/// says it timed out) the suspended jobs of `partition` whose deadline is
/// before `now` (the database's clock when `None`). Returns how many jobs
/// it changed.
///
/// Refuses a partition outside `0..`[`JOB_PARTITIONS`].
pub async fn run_once(
    conn: &mut PgConnection,
    partition: i16,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    check_partition(partition, JOB_PARTITIONS)?;
    let due: Vec<(i64, Option<String>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, on_timeout, suspended_until FROM trawl_jobs.jobs
         WHERE partition = $1 AND state = 'suspended' AND suspended_until < COALESCE($2, now())
         ORDER BY suspended_until
         LIMIT $3
         FOR UPDATE SKIP LOCKED",
    )
    .bind(partition)
    .bind(now)
    .bind(BATCH)
    .fetch_all(&mut *conn)
    .await?;
    let (fail, resume): (Vec<_>, Vec<_>) = due
        .into_iter()
        .partition(|(_, on_timeout, _)| on_timeout.as_deref() == Some("fail"));
    let resume: Vec<i64> = resume.into_iter().map(|(id, _, _)| id).collect();
    let resumed = resume_suspended(conn, &resume, now).await?;
    let (ids, why): (Vec<i64>, Vec<Option<String>>) = fail
        .into_iter()
        .map(|(id, _, until)| {
            let why = format!("suspended until {} without a signal", until.to_rfc3339());
            (id, Some(why))
        })
        .unzip();
    let failed = finish_jobs(conn, &ids, &why, JobState::Dead, now).await?;
    Ok(resumed + failed)
}
