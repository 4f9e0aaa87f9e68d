//! Limits on a queue: a fleet-wide cap on its running jobs, a depth limit
//! for producers, and budgets (rate limits) on queues and job kinds.
//!
//! All of them live in the database, so every worker and producer sees the
//! same ones:
//!
//! - **`max_running`** caps how many jobs of a queue run at once across
//!   every worker: claims of a capped queue lock its settings row and count
//!   its running jobs.
//! - **`max_depth`** caps the pending jobs of a queue: an enqueue that would
//!   pass it waits for room (up to `OnFull::Wait`'s limit) or fails at once
//!   with [`Error::QueueFull`]. Only producers are
//!   slowed: claiming and completing never look at it. A batch larger than
//!   the limit goes in whole once the queue is empty. It is backpressure,
//!   not a hard cap: the count and the insert are not one atomic step, so
//!   producers that enqueue at the same moment may each see room and
//!   together pass the limit by up to their batches. (Making it exact
//!   would serialize the producers of a queue for the length of their
//!   transactions, which may be the caller's.)
//! - **Budgets** allow at most `max_cost` of job cost ([`NewJob::cost`],
//!   1 by default) to start per `window`, for a queue or a job kind: claims
//!   take only what fits; windows follow each other without gaps, and the
//!   `budget_reset` tick starts the new ones.
//!
//! Concurrency keys ([`NewJob::concurrency_key`]) cap jobs that share a key
//! instead of a queue.
//!
//! ```no_run
//! # async fn example(queue: trawl_jobs::JobQueue) -> trawl_jobs::Result<()> {
//! use std::time::Duration;
//! use trawl_jobs::{Budget, BudgetScope, OnFull, QueueLimits};
//!
//! // At most 50 scans at once in the fleet; producers wait up to a minute
//! // when 10,000 are pending.
//! queue
//!     .set_queue_limits("scans", &QueueLimits {
//!         max_running: Some(50),
//!         max_depth: Some(10_000),
//!         on_full: OnFull::Wait(Duration::from_secs(60)),
//!     })
//!     .await?;
//! // At most 100 calls to the billing API per second.
//! queue
//!     .set_budget(&Budget::new(BudgetScope::Kind("bill".into()), 100, Duration::from_secs(1)))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! [`NewJob::cost`]: crate::NewJob::cost
//! [`NewJob::concurrency_key`]: crate::NewJob::concurrency_key

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use crate::error::{Error, Result};
use crate::job::NewJob;
use crate::reconcile::BUDGET_PARTITIONS;

/// The limits of one queue. The default has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLimits {
    /// Jobs of the queue running at once across every worker, at most.
    pub max_running: Option<u32>,
    /// Pending jobs beyond which an enqueue waits or fails; concurrent
    /// producers may pass it by up to their batches (see the [module
    /// documentation](self)).
    pub max_depth: Option<u64>,
    /// What an enqueue does when the queue is full.
    pub on_full: OnFull,
}

impl Default for QueueLimits {
    fn default() -> QueueLimits {
        QueueLimits {
            max_running: None,
            max_depth: None,
            on_full: OnFull::Wait(Duration::from_secs(30)),
        }
    }
}

/// What an enqueue into a full queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Waits for room, at most this long, then fails with
    /// [`Error::QueueFull`].
    Wait(Duration),
    /// Fails at once with [`Error::QueueFull`].
    Fail,
}

/// What a budget limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BudgetScope {
    /// The jobs of a queue.
    Queue(String),
    /// The jobs of a kind, in every queue.
    Kind(String),
}

impl BudgetScope {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            BudgetScope::Queue(name) => ("queue", name),
            BudgetScope::Kind(name) => ("kind", name),
        }
    }
}

/// A rate limit: at most `max_cost` of job cost starts per `window`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Budget {
    /// What it limits.
    pub scope: BudgetScope,
    /// Cost (starts, for jobs of cost 1) allowed per window.
    pub max_cost: u64,
    /// The window's length.
    pub window: Duration,
}

impl Budget {
    /// A budget of `max_cost` per `window` on `scope`.
    pub fn new(scope: BudgetScope, max_cost: u64, window: Duration) -> Budget {
        Budget {
            scope,
            max_cost,
            window,
        }
    }

    /// The budget partition of its scope (for the `budget_reset` tick):
    /// FNV-1a of `scope:target` mod
    /// [`BUDGET_PARTITIONS`].
    pub fn partition(&self) -> i16 {
        let (scope, target) = self.scope.parts();
        let key = format!("{scope}:{target}");
        (crate::reconcile::fnv1a(key.as_bytes()) % BUDGET_PARTITIONS as u64) as i16
    }
}

impl crate::JobQueue {
    /// Sets the limits of `queue` (replacing the ones it had). Workers
    /// take a new or removed cap into account at their next heartbeat;
    /// producers at their next enqueue.
    pub async fn set_queue_limits(&self, queue: &str, limits: &QueueLimits) -> Result<()> {
        if queue.is_empty() {
            return Err(Error::invalid("queue", "a queue name must not be empty"));
        }
        let max_running = limits
            .max_running
            .map(|n| i32::try_from(n).ok().filter(|n| *n > 0))
            .map(|n| n.ok_or_else(|| Error::invalid("max_running", "must be 1 to 2^31-1")))
            .transpose()?;
        let max_depth = limits
            .max_depth
            .map(|n| i64::try_from(n).ok().filter(|n| *n > 0))
            .map(|n| n.ok_or_else(|| Error::invalid("max_depth", "must be 1 to 2^63-1")))
            .transpose()?;
        let (on_full, wait) = match limits.on_full {
            OnFull::Wait(wait) => ("wait", millis(wait)),
            OnFull::Fail => ("fail", 0),
        };
        sqlx::query(
            "INSERT INTO trawl_jobs.queues (name, max_running, max_depth, on_full, max_wait_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET max_running = excluded.max_running,
                max_depth = excluded.max_depth, on_full = excluded.on_full,
                max_wait_ms = excluded.max_wait_ms",
        )
        .bind(queue)
        .bind(max_running)
        .bind(max_depth)
        .bind(on_full)
        .bind(wait)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The limits of `queue` (the default, none, if it has no settings).
    pub async fn queue_limits(&self, queue: &str) -> Result<QueueLimits> {
        let row: Option<(Option<i32>, Option<i64>, String, i64)> = sqlx::query_as(
            "SELECT max_running, max_depth, on_full, max_wait_ms FROM trawl_jobs.queues
             WHERE name = $1",
        )
        .bind(queue)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            None => QueueLimits::default(),
            Some((max_running, max_depth, on_full, wait)) => QueueLimits {
                max_running: max_running.map(|n| n.max(1) as u32),
                max_depth: max_depth.map(|n| n.max(1) as u64),
                on_full: if on_full == "fail" {
                    OnFull::Fail
                } else {
                    OnFull::Wait(Duration::from_millis(wait.max(0) as u64))
                },
            },
        })
    }

    /// Sets a budget (replacing the one its scope had, and starting a new
    /// window now).
    pub async fn set_budget(&self, budget: &Budget) -> Result<()> {
        let (scope, target) = budget.scope.parts();
        if target.is_empty() {
            return Err(Error::invalid(
                "budget",
                "the queue or kind must not be empty",
            ));
        }
        let max_cost = i64::try_from(budget.max_cost)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                Error::invalid(
                    "budget",
                    format!("max_cost of {scope} '{target}' must be at least 1"),
                )
            })?;
        if budget.window < Duration::from_millis(1) {
            return Err(Error::invalid(
                "budget",
                format!("the window of {scope} '{target}' must be at least 1 ms"),
            ));
        }
        sqlx::query(
            "INSERT INTO trawl_jobs.budgets (scope, target, partition, max_cost, window_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (scope, target) DO UPDATE SET max_cost = excluded.max_cost,
                window_ms = excluded.window_ms, window_start = now(), used = 0",
        )
        .bind(scope)
        .bind(target)
        .bind(budget.partition())
        .bind(max_cost)
        .bind(millis(budget.window))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes the budget of `scope`; returns whether there was one.
    pub async fn remove_budget(&self, scope: &BudgetScope) -> Result<bool> {
        let (scope, target) = scope.parts();
        let removed =
            sqlx::query("DELETE FROM trawl_jobs.budgets WHERE scope = $1 AND target = $2")
                .bind(scope)
                .bind(target)
                .execute(self.pool())
                .await?;
        Ok(removed.rows_affected() > 0)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Waits until every queue `jobs` go to has room for them under its depth
/// limit, or fails with [`Error::QueueFull`] as the queue's policy says.
pub(crate) async fn wait_for_room(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<()> {
    let mut adding: std::collections::BTreeMap<&str, i64> = Default::default();
    for job in jobs {
        *adding.entry(job.queue.as_str()).or_default() += 1;
    }
    let names: Vec<&str> = adding.keys().copied().collect();
    let limited: Vec<(String, i64, String, i64)> = sqlx::query_as(
        "SELECT name, max_depth, on_full, max_wait_ms FROM trawl_jobs.queues
         WHERE name = ANY($1) AND max_depth IS NOT NULL",
    )
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    for (queue, limit, on_full, wait_ms) in limited {
        let n = adding.get(queue.as_str()).copied().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_millis(wait_ms.max(0) as u64);
        let mut pause = Duration::from_millis(5);
        loop {
            // Counting stops at the limit: the cost is bounded by it.
            let depth: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (
                    SELECT 1 FROM trawl_jobs.jobs WHERE queue = $1 AND state = 'pending'
                    LIMIT $2
                 ) pending",
            )
            .bind(&queue)
            .bind(limit)
            .fetch_one(&mut *conn)
            .await?;
            if depth + n <= limit || depth == 0 {
                break;
            }
            if on_full == "fail" || Instant::now() >= deadline {
                return Err(Error::QueueFull {
                    queue,
                    depth,
                    limit,
                });
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
    Ok(())
}
