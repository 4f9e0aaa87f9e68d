//! Leadership for singleton duties: one node at a time runs a duty (the
//! periodic enqueuer, a report, a cleanup that must not run twice), and
//! another takes over when it stops or vanishes.
//!
//! Each duty has one lease row in `trawl_jobs.leaders`, held by one
//! holder until `expires_at`. Every contender runs the same statement
//! every `renew_every`: it takes the lease if nobody holds it or it
//! expired, renews it if it is already the contender's, and changes
//! nothing otherwise. Expiry is judged by the database's clock, so the
//! nodes' wall clocks need not agree.
//!
//! A holder that cannot renew (its connection is gone, the database is
//! slow or unreachable) **steps down by itself** before its lease can run
//! out: it counts `ttl - ttl/5` from the moment it *sent* its last
//! successful renewal, on its own monotonic clock. The database set the
//! expiry `ttl` after it *received* that statement, so the old holder has
//! stopped at least `ttl/5` before another contender can take over, as
//! long as the two clocks run at about the same rate and the holder's
//! process is not frozen for longer than that margin. A duty that must
//! never overlap even then needs a fence of its own in the data it
//! changes (a unique job key, a version column).
//!
//! [`Leadership::shutdown`] steps down and deletes the row, so the next
//! contender takes over at its next try instead of after the `ttl`.
//! Takeovers and releases are announced as
//! [`ClusterEvent::LeadershipChanged`].
//!
//! ```no_run
//! use std::time::Duration;
//! use trawl_jobs::leader::{LeaderConfig, Leadership};
//!
//! # async fn run_periodic_duty() {}
//! # async fn example(pool: sqlx::PgPool) -> Result<(), trawl_jobs::Error> {
//! let config = LeaderConfig::new("periodic", "node-1");
//! let leadership = Leadership::start(pool, config).await?;
//! let mut changes = leadership.changes();
//! loop {
//!     // Wait to be the leader (an error: the leadership was shut down).
//!     if changes.wait_for(|leader| *leader).await.is_err() {
//!         break;
//!     }
//!     // Run the duty until it ends or leadership is lost.
//!     tokio::select! {
//!         _ = changes.wait_for(|leader| !*leader) => {}
//!         _ = run_periodic_duty() => {}
//!     }
//! #   break;
//! }
//! leadership.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use sqlx::types::Json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use trawl_retry::{RetryPolicy, Rng};

use crate::error::{Error, Result};
use crate::events::ClusterEvent;

/// The default lease: 15 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);

/// How one node contends for one duty. Start from [`LeaderConfig::new`].
///
/// ```
/// use std::time::Duration;
/// use trawl_jobs::leader::LeaderConfig;
///
/// let config = LeaderConfig {
///     ttl: Duration::from_secs(6),
///     ..LeaderConfig::new("periodic", "node-1")
/// };
/// config.validate().unwrap();
/// // Renewed every third of the ttl unless set; the leader steps down if
/// // it could not renew for four fifths of it.
/// assert_eq!(config.renew_interval(), Duration::from_secs(2));
/// assert_eq!(config.step_down_after(), Duration::from_millis(4800));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    /// The duty (e.g. `"periodic"`): one leader per name across every node
    /// on the database. At most 200 bytes.
    pub name: String,
    /// Who this contender is, in the lease row and in events; must be
    /// unique among live contenders of the duty (two with one id would
    /// both lead). At most 200 bytes. Usually the node's worker id.
    pub holder_id: String,
    /// How long a lease lasts after each renewal: a vanished leader is
    /// replaced after at most this plus `renew_every`. At least 100 ms.
    /// Default [`DEFAULT_TTL`] (15 s).
    pub ttl: Duration,
    /// How often the leader renews and the others try to take over; `None`
    /// is a third of the `ttl`. At most half the `ttl`, so that a late or
    /// failed renewal is retried before the leader must step down.
    pub renew_every: Option<Duration>,
}

impl LeaderConfig {
    /// Contend for duty `name` as `holder_id`, with the default `ttl` and
    /// `renew_every`.
    pub fn new(name: impl Into<String>, holder_id: impl Into<String>) -> LeaderConfig {
        LeaderConfig {
            name: name.into(),
            holder_id: holder_id.into(),
            ttl: DEFAULT_TTL,
            renew_every: None,
        }
    }

    /// `renew_every`, or a third of the `ttl` when it is not set.
    pub fn renew_interval(&self) -> Duration {
        self.renew_every.unwrap_or(self.ttl / 3)
    }

    /// How long after sending its last successful renewal a leader steps
    /// down: the `ttl` less a fifth of it.
    pub fn step_down_after(&self) -> Duration {
        self.ttl - self.ttl / 5
    }

    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [("name", &self.name), ("holder_id", &self.holder_id)] {
            if value.trim().is_empty() {
                return Err(Error::invalid(field, "must not be empty"));
            }
            if value.len() > 200 {
                return Err(Error::invalid(field, "must be at most 200 bytes long"));
            }
        }
        if self.ttl < Duration::from_millis(100) || self.ttl > Duration::from_secs(24 * 3600) {
            return Err(Error::invalid(
                "ttl",
                format!("{:?} (must be 100 ms to 24 h)", self.ttl),
            ));
        }
        if let Some(every) = self.renew_every
            && (every.is_zero() || every * 2 > self.ttl)
        {
            return Err(Error::invalid(
                "renew_every",
                format!(
                    "{every:?} (must be above 0 and at most half the ttl, {:?}, so that a \
                     failed renewal is retried before the leader steps down)",
                    self.ttl
                ),
            ));
        }
        Ok(())
    }
}

/// The backoff between tries after a database error: 100 ms doubling, at
/// most `renew_every`.
fn reconnect_policy(renew_every: Duration) -> RetryPolicy {
    RetryPolicy {
        max_attempts: u32::MAX,
        base_delay: Duration::from_millis(100).min(renew_every),
        max_delay: renew_every,
        jitter_pct: 20,
    }
}

/// One node contending for one duty: a task that takes and renews the
/// lease, and steps down when it cannot renew in time.
///
/// It takes a connection of the pool it was started with for one short
/// statement every `renew_every` (and for the backoff's tries after an
/// error), so the pool needs one connection to spare now and then; a try
/// that waits for a connection past the step-down time counts as failed.
///
/// Dropping it stops the task as [`shutdown`](Self::shutdown) does, in the
/// background (the lease is released if the runtime is still running).
#[derive(Debug)]
pub struct Leadership {
    config: LeaderConfig,
    leader: watch::Receiver<bool>,
    task: Option<JoinHandle<Result<bool>>>,
    stop: Option<DropGuard>,
}

impl Leadership {
    /// Validates `config`, makes a first try for the lease, and starts the
    /// task that renews it or keeps trying. Returns once the first try has
    /// an answer: [`is_leader`](Self::is_leader) then says whether this
    /// node won. Fails if the configuration is wrong or the database
    /// cannot be reached for that first try.
    ///
    /// ```no_run
    /// # async fn example(pool: sqlx::PgPool) -> Result<(), trawl_jobs::Error> {
    /// use trawl_jobs::leader::{LeaderConfig, Leadership};
    ///
    /// let leadership = Leadership::start(pool, LeaderConfig::new("reports", "node-2")).await?;
    /// if leadership.is_leader() {
    ///     println!("node-2 runs the reports");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(pool: PgPool, config: LeaderConfig) -> Result<Leadership> {
        config.validate()?;
        let mut contender = Contender::new(pool, config.clone());
        let sent = Instant::now();
        let first = tokio::time::timeout(config.ttl, contender.try_acquire()).await;
        let held = match first {
            Ok(Ok(held)) => held,
            Ok(Err(err)) => return Err(err),
            Err(_) => return Err(Error::Database(sqlx::Error::PoolTimedOut)),
        };
        let next = contender.settle(held, sent);
        let leader = contender.leader.subscribe();
        let stop = CancellationToken::new();
        let task = tokio::spawn(contender.run(stop.clone(), next));
        Ok(Leadership {
            config,
            leader,
            task: Some(task),
            stop: Some(stop.drop_guard()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LeaderConfig {
        &self.config
    }

    /// Whether this node holds the lease now. It turns false before the
    /// lease can expire in the database, so two nodes never both see
    /// `true` (under the conditions of the [module documentation](self)).
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// A receiver of [`is_leader`](Self::is_leader)'s changes, marked as
    /// having seen the current value. Its `wait_for` fails once the
    /// leadership is shut down (the value is then `false`).
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Stops contending: steps down at once (if leading), then deletes the
    /// lease row if it is still this node's, so that another node takes
    /// over at its next try instead of after the `ttl`, and announces the
    /// release. Returns whether a lease was released.
    ///
    /// Fails if the database cannot be reached within the `ttl`; the lease
    /// then runs out by itself.
    pub async fn shutdown(mut self) -> Result<bool> {
        let Some(task) = self.task.take() else {
            return Ok(false);
        };
        drop(self.stop.take());
        match task.await {
            Ok(released) => released,
            Err(err) => {
                tracing::warn!(error = %err, name = %self.config.name, "the leadership task failed");
                Ok(false)
            }
        }
    }
}

/// The task's state.
struct Contender {
    pool: PgPool,
    config: LeaderConfig,
    renew_every: Duration,
    reconnect: RetryPolicy,
    rng: Rng,
    leader: watch::Sender<bool>,
    /// While leading: when to step down unless renewed before.
    deadline: Option<Instant>,
    /// Failed tries in a row.
    failures: u32,
}

impl Contender {
    fn new(pool: PgPool, config: LeaderConfig) -> Contender {
        let renew_every = config.renew_interval();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(crate::reconcile::worker_partition(&config.holder_id) as u16) << 48;
        Contender {
            pool,
            renew_every,
            reconnect: reconnect_policy(renew_every),
            rng: Rng::new(seed),
            leader: watch::Sender::new(false),
            deadline: None,
            failures: 0,
            config,
        }
    }

    /// Takes or renews the lease; whether this node holds it now. A
    /// takeover (the holder changed) is announced in the same statement.
    async fn try_acquire(&self) -> Result<bool> {
        let taken = ClusterEvent::LeadershipChanged {
            name: self.config.name.clone(),
            holder: Some(self.config.holder_id.clone()),
        };
        let mut conn = self.pool.acquire().await?;
        let held: Option<bool> = sqlx::query_scalar(
            "WITH held AS (
                INSERT INTO trawl_jobs.leaders AS l (name, holder, acquired_at, renewed_at,
                    expires_at)
                VALUES ($1, $2, now(), now(), now() + $3 * interval '1 millisecond')
                ON CONFLICT (name) DO UPDATE SET
                    holder = EXCLUDED.holder,
                    acquired_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.acquired_at
                        ELSE now() END,
                    renewed_at = now(),
                    expires_at = EXCLUDED.expires_at
                WHERE l.expires_at < now() OR l.holder = EXCLUDED.holder
                RETURNING l.acquired_at = now() AS taken
            )
            SELECT CASE WHEN taken THEN trawl_jobs.publish_event($4) ELSE true END FROM held",
        )
        .bind(&self.config.name)
        .bind(&self.config.holder_id)
        .bind(i64::try_from(self.config.ttl.as_millis()).unwrap_or(i64::MAX))
        .bind(Json(&taken))
        .fetch_optional(&mut *conn)
        .await
        .inspect_err(|_| close(&mut conn))?;
        Ok(held.is_some())
    }

    /// Deletes the lease row if it is this node's, announcing the release;
    /// whether it was.
    async fn release(&self) -> Result<bool> {
        let released = ClusterEvent::LeadershipChanged {
            name: self.config.name.clone(),
            holder: None,
        };
        let mut conn = self.pool.acquire().await?;
        let released: Option<bool> = sqlx::query_scalar(
            "WITH released AS (
                DELETE FROM trawl_jobs.leaders WHERE name = $1 AND holder = $2 RETURNING name
            )
            SELECT trawl_jobs.publish_event($3) FROM released",
        )
        .bind(&self.config.name)
        .bind(&self.config.holder_id)
        .bind(Json(&released))
        .fetch_optional(&mut *conn)
        .await
        .inspect_err(|_| close(&mut conn))?;
        Ok(released.is_some())
    }

    /// Applies the answer of a try sent at `sent`; returns when to try
    /// next.
    fn settle(&mut self, held: bool, sent: Instant) -> Instant {
        self.failures = 0;
        let deadline = sent + self.config.step_down_after();
        if held && deadline > Instant::now() {
            if self.deadline.is_none() {
                tracing::info!(
                    name = %self.config.name,
                    holder = %self.config.holder_id,
                    "took the lead"
                );
            }
            self.deadline = Some(deadline);
            self.set_leader(true);
            return sent + self.renew_every;
        }
        if held {
            tracing::warn!(
                name = %self.config.name,
                holder = %self.config.holder_id,
                "the lease was granted too late to be used: not leading"
            );
        } else if self.deadline.is_some() {
            tracing::warn!(
                name = %self.config.name,
                holder = %self.config.holder_id,
                "the lease went to another node: stepping down"
            );
        }
        self.step_down();
        sent + self.renew_every
    }

    /// Counts a failed try; returns when to try next.
    fn failed(&mut self, error: &str) -> Instant {
        self.failures = self.failures.saturating_add(1);
        tracing::warn!(
            name = %self.config.name,
            holder = %self.config.holder_id,
            leader = self.deadline.is_some(),
            failures = self.failures,
            error,
            "cannot reach the leases; retrying with backoff"
        );
        Instant::now() + self.reconnect.backoff(self.failures, &mut self.rng)
    }

    fn step_down(&mut self) {
        self.deadline = None;
        self.set_leader(false);
    }

    /// Tells the handle's receivers, if it is a change.
    fn set_leader(&self, leader: bool) {
        self.leader.send_if_modified(|current| {
            let changed = *current != leader;
            *current = leader;
            changed
        });
    }

    /// Renews or tries to take the lease until `stop` fires, then steps
    /// down and releases it.
    /// The first try is at `next`.
    async fn run(mut self, stop: CancellationToken, mut next: Instant) -> Result<bool> {
        loop {
            let deadline = self.deadline;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = until(deadline) => {
                    self.step_down_late();
                    continue;
                }
                _ = tokio::time::sleep_until(next) => {}
            }
            let sent = Instant::now();
            let tried = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = until(deadline) => {
                    self.step_down_late();
                    // The try in flight is dropped: try again at once.
                    next = Instant::now();
                    continue;
                }
                tried = tokio::time::timeout(self.config.ttl, self.try_acquire()) => tried,
            };
            next = match tried {
                Ok(Ok(held)) => self.settle(held, sent),
                Ok(Err(err)) => self.failed(&err.to_string()),
                Err(_) => self.failed("timed out"),
            };
        }
        self.step_down();
        match tokio::time::timeout(self.config.ttl, self.release()).await {
            Ok(Ok(released)) => {
                if released {
                    tracing::info!(name = %self.config.name, holder = %self.config.holder_id, "released the lead");
                }
                Ok(released)
            }
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Error::Database(sqlx::Error::PoolTimedOut)),
        }
    }

    /// The step-down time passed without a renewal.
    fn step_down_late(&mut self) {
        tracing::warn!(
            name = %self.config.name,
            holder = %self.config.holder_id,
            failures = self.failures,
            "could not renew the lease in time: stepping down"
        );
        self.step_down();
    }
}

/// Sleeps until `deadline`, forever when there is none.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A connection whose statement failed may be broken: close it instead of
/// giving it back to the pool.
fn close(conn: &mut PoolConnection<sqlx::Postgres>) {
    conn.close_on_drop();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_documented() {
        let config = LeaderConfig::new("periodic", "node-1");
        config.validate().unwrap();
        assert_eq!(config.ttl, Duration::from_secs(15));
        assert_eq!(config.renew_interval(), Duration::from_secs(5));
        assert_eq!(config.step_down_after(), Duration::from_secs(12));
    }

    #[test]
    fn each_bad_field_is_named() {
        let good = LeaderConfig::new("periodic", "node-1");
        let bad = [
            (
                "name",
                LeaderConfig {
                    name: " ".into(),
                    ..good.clone()
                },
            ),
            (
                "name",
                LeaderConfig {
                    name: "n".repeat(201),
                    ..good.clone()
                },
            ),
            (
                "holder_id",
                LeaderConfig {
                    holder_id: String::new(),
                    ..good.clone()
                },
            ),
            (
                "ttl",
                LeaderConfig {
                    ttl: Duration::from_millis(10),
                    ..good.clone()
                },
            ),
            (
                "renew_every",
                LeaderConfig {
                    renew_every: Some(Duration::ZERO),
                    ..good.clone()
                },
            ),
            (
                "renew_every",
                LeaderConfig {
                    renew_every: Some(Duration::from_secs(8)),
                    ..good.clone()
                },
            ),
        ];
        for (field, config) in bad {
            let err = match config.validate() {
                Ok(()) => panic!("{field}: accepted"),
                Err(err) => err.to_string(),
            };
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
