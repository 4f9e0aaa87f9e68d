//! `budget_reset`: starts the new window of budgets whose window is over.
//!
//! Claims already treat a budget whose window ended as empty and start its
//! next window themselves; this tick keeps the rows current when no claim
//! touches them (so that what [`JobQueue`](crate::JobQueue) reports, and
//! what an operator reads, is right). It walks one budget partition's
//! range of the `budgets_window` index.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{BATCH, BUDGET_PARTITIONS, check_partition};
use crate::error::Result;

/// Starts the current window (empty) of the budgets of `partition` whose
/// window ended before `now` (the database's clock when `None`); windows
/// follow each other without gaps. Returns how many budgets it reset.
///
/// Refuses a partition outside `0..`[`BUDGET_PARTITIONS`].
pub async fn run_once(
    conn: &mut PgConnection,
    partition: i16,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    check_partition(partition, BUDGET_PARTITIONS)?;
    let reset = sqlx::query(
        "WITH due AS (
            SELECT scope, target FROM trawl_jobs.budgets
            WHERE partition = $1
                AND window_start + window_ms * interval '1 millisecond' <= COALESCE($2, now())
            ORDER BY window_start
            LIMIT $3
            FOR UPDATE SKIP LOCKED
        )
        UPDATE trawl_jobs.budgets b SET used = 0,
            window_start = trawl_jobs.budget_window(b.window_start, b.window_ms,
                COALESCE($2, now()))
        FROM due WHERE b.scope = due.scope AND b.target = due.target",
    )
    .bind(partition)
    .bind(now)
    .bind(BATCH)
    .execute(&mut *conn)
    .await?;
    Ok(reset.rows_affected())
}
