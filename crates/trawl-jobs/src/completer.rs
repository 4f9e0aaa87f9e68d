//! The completer: records the outcomes of a manager's jobs in batches, one
//! statement and one commit per batch.
//!
//! One commit per job caps a queue near 2,000 jobs/s (each commit waits for
//! its WAL flush); a batch shares that wait. Batches form by themselves
//! under load, since outcomes pile up while a commit is in flight; when they
//! trickle, the completer lingers `completion_linger` for company before it
//! commits.
//!
//! An outcome is never dropped for a lost connection: the batch is retried
//! on a new connection with backoff. Retrying is safe because
//! [`complete`] applies an outcome only while its attempt still holds the
//! lease: a batch that did commit before the connection broke changes
//! nothing the second time. The heartbeat keeps renewing the leases of
//! these jobs until they are recorded, so a retry that takes a while does
//! not let them run elsewhere.
//!
//! A batch the database refuses for another reason is split, so that one
//! bad outcome cannot hold back the rest; an outcome refused on its own a
//! few times is given up (logged at error level) and its job left to lease
//! expiry.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::claim::{Completion, Outcome, complete};
use crate::error::Error;
use crate::manager::Shared;
use crate::registry::notify;

/// Refusals of a lone outcome before it is given up.
const REFUSALS: u32 = 3;

/// An attempt's end, on its way to the database.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) completion: Completion,
}

/// Receives outcomes until every sender is gone, recording them in batches.
pub(crate) async fn run_completer(
    shared: Arc<Shared>,
    mut outcomes: mpsc::UnboundedReceiver<Finished>,
) {
    let config = &shared.config;
    let max = config.completion_batch;
    let mut batch: Vec<Completion> = Vec::with_capacity(max);
    let mut conn: Option<PoolConnection<Postgres>> = None;
    // Never fires: the completer stops when its senders are gone, and a
    // shutdown that cannot wait aborts it.
    let never = CancellationToken::new();
    while let Some(first) = outcomes.recv().await {
        batch.push(first.completion);
        while batch.len() < max {
            match outcomes.try_recv() {
                Ok(more) => batch.push(more.completion),
                Err(_) => break,
            }
        }
        if batch.len() < max && !config.completion_linger.is_zero() {
            let until = tokio::time::Instant::now() + config.completion_linger;
            while batch.len() < max {
                match tokio::time::timeout_at(until, outcomes.recv()).await {
                    Ok(Some(more)) => batch.push(more.completion),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        record(&shared, &mut conn, &batch, &never).await;
        shared.unrecorded.add_permits(batch.len());
        batch.clear();
    }
}

/// Records `batch`, retrying lost connections until it is done.
async fn record(
    shared: &Shared,
    conn: &mut Option<PoolConnection<Postgres>>,
    batch: &[Completion],
    stop: &CancellationToken,
) {
    let mut failures = 0u32;
    let mut refusals = 0u32;
    loop {
        if conn.is_none() {
            match shared.connect(stop, &mut failures).await {
                Some(c) => *conn = Some(c),
                None => return,
            }
        }
        let c = conn.as_mut().expect("connected above");
        let result = tokio::time::timeout(
            shared.config.lease,
            complete(c, &shared.config.worker_id, batch, None),
        )
        .await;
        let err = match result {
            Ok(Ok(applied)) => {
                if failures > 0 {
                    tracing::info!("recording outcomes again after {failures} failed tries");
                    shared.set_connected(true);
                }
                applied_batch(shared, c, batch, &applied).await;
                return;
            }
            Ok(Err(err)) => err,
            Err(_) => Error::Database(sqlx::Error::PoolTimedOut),
        };
        if let Some(mut c) = conn.take() {
            c.close_on_drop();
        }
        if transient(&err) {
            shared.set_connected(false);
            failures += 1;
            if failures == 1 {
                tracing::warn!(error = %err, "cannot record outcomes; retrying with backoff");
            }
            if !shared.pause(stop, failures).await {
                return;
            }
            continue;
        }
        if batch.len() > 1 {
            tracing::warn!(
                error = %err,
                size = batch.len(),
                "the database refused a batch of outcomes; recording them one by one"
            );
            for one in batch.chunks(1) {
                Box::pin(record(shared, conn, one, stop)).await;
            }
            return;
        }
        refusals += 1;
        if refusals >= REFUSALS {
            tracing::error!(
                error = %err,
                job_id = batch[0].id,
                attempt = batch[0].attempt,
                "the database keeps refusing this outcome; giving up (the job's lease will expire)"
            );
            shared.stats.abandoned.fetch_add(1, Ordering::Relaxed);
            shared.release_held(batch.iter().map(|c| (c.id, c.attempt)));
            return;
        }
        if !shared.pause(stop, refusals).await {
            return;
        }
    }
}

/// Accounts for a recorded batch: counts, forgets the jobs, and wakes the
/// queues of released jobs.
async fn applied_batch(
    shared: &Shared,
    conn: &mut PoolConnection<Postgres>,
    batch: &[Completion],
    applied: &[i64],
) {
    let all_applied = applied.len() == batch.len();
    let mut released = false;
    for completion in batch {
        if all_applied || applied.contains(&completion.id) {
            shared.stats.count(&completion.outcome);
            released |= matches!(completion.outcome, Outcome::Released(_));
        } else {
            shared.stats.stale.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                job_id = completion.id,
                attempt = completion.attempt,
                "outcome not recorded: the attempt no longer holds the lease"
            );
        }
    }
    shared.release_held(batch.iter().map(|c| (c.id, c.attempt)));
    if released {
        // Released jobs are ready at once: wake idle workers (best effort,
        // the poll interval covers a lost notification).
        let queues: Vec<&str> = shared.config.queues.iter().map(String::as_str).collect();
        let _ = tokio::time::timeout(Duration::from_secs(1), notify(conn, &queues)).await;
    }
}

/// Whether retrying the same statement may succeed: a lost connection, a
/// deadlock or serialization failure, a server out of resources, a timeout.
fn transient(err: &Error) -> bool {
    if err.is_connection() {
        return true;
    }
    let Error::Database(db) = err else {
        return false;
    };
    db.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| {
            code == "40P01" || code == "40001" || code == "55P03" || code.starts_with("53")
        })
}
