//! `edge_cancel_dispatcher`: cancels the descendants of jobs that ended
//! dead or cancelled, a batch at a time.
//!
//! A job that ends dead or cancelled while it has children gets a row in
//! `trawl_jobs.cancel_propagation` (in the transaction that ends it). Each
//! tick takes up to [`PARENTS`] such rows of one partition (the parent's)
//! and up to [`BATCH`] of their live children: waiting ones
//! (blocked, pending, suspended) are cancelled, which queues their own
//! children in turn, so a cancel walks down a tree one level per tick;
//! running ones are asked to stop at their worker's next heartbeat. A row
//! leaves once its parent has no child left to cancel.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{BATCH, JOB_PARTITIONS, check_partition};
use crate::error::Result;
use crate::flow::propagate_cancel;

/// Parents one tick works on at most.
pub const PARENTS: i64 = 100;

/// Cancels children of the dead or cancelled parents of `partition`;
/// `now` (the database's clock when `None`) is their finishing time.
/// Returns how many children it cancelled or asked to stop.
///
/// Refuses a partition outside `0..`[`JOB_PARTITIONS`].
pub async fn run_once(
    conn: &mut PgConnection,
    partition: i16,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    check_partition(partition, JOB_PARTITIONS)?;
    let parents: Vec<(i64, String)> = sqlx::query_as(
        "SELECT parent_id, reason FROM trawl_jobs.cancel_propagation
         WHERE partition = $1
         ORDER BY parent_id
         LIMIT $2
         FOR UPDATE SKIP LOCKED",
    )
    .bind(partition)
    .bind(PARENTS)
    .fetch_all(&mut *conn)
    .await?;
    propagate_cancel(conn, &parents, now, BATCH).await
}
