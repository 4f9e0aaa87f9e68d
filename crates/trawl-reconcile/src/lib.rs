//! A supervisor for Postgres reconcilers: periodic ticks that repair what
//! crashed or stalled processes leave behind in a database.
//!
//! A [`Reconciler`] says what to run (its [`tick`](Reconciler::tick)), how
//! often (its [`interval`](Reconciler::interval)), and over what
//! ([`Scope`]: once, or once per partition of its data).
//! [`spawn_reconcilers`] runs each on a tokio task of its own until
//! [`ReconcilerHandle::shutdown`]:
//!
//! - **one transaction per partition tick**, opened by the supervisor, in
//!   which the tick first takes a transaction-scoped advisory lock on
//!   (reconciler, partition): when another node holds it, that partition
//!   is skipped this time, so a fleet running the same reconcilers never
//!   does the same work twice at once; the lock ends with the
//!   transaction. A reconciler that cannot run inside a transaction
//!   (`VACUUM`, `DETACH PARTITION … CONCURRENTLY`) says so with
//!   [`TickMode::OutsideTransaction`] and gets a connection holding a
//!   session-level advisory lock instead;
//! - **ticks at a steady pace**: every `interval`, after a random phase
//!   (up to [`Config::max_phase`]) so that nodes started together do not
//!   tick in lock-step; a tick that overran its interval delays the next
//!   one, it does not cause a burst;
//! - **failures stay local**: a tick that returns an error, or panics, is
//!   logged at `warn` with the reconciler and the partition, counted in
//!   [`ReconcilerStats`], and the next partition and the next tick run as
//!   usual;
//! - **a bounded shutdown**: [`ReconcilerHandle::shutdown`] asks every task
//!   to stop (a partitioned tick stops between two partitions), waits up
//!   to a grace period, then aborts what is left and says how many.
//!   Dropping the handle aborts every task at once.
//!
//! The crate knows no schema: it runs whatever reconcilers it is given.
//! `trawl-jobs` provides the reconcilers of its queue
//! (`trawl_jobs::reconcile::reconcilers`).
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use sqlx::PgConnection;
//! use trawl_reconcile::{Config, Now, Reconciler, Scope, TickError, spawn_reconcilers};
//!
//! /// Deletes expired sessions, 1,000 at a time, per partition.
//! struct ExpiredSessions;
//!
//! #[async_trait::async_trait]
//! impl Reconciler for ExpiredSessions {
//!     fn name(&self) -> &str {
//!         "expired_sessions"
//!     }
//!     fn interval(&self) -> Duration {
//!         Duration::from_secs(10)
//!     }
//!     fn scope(&self) -> Scope {
//!         Scope::Partitioned(16)
//!     }
//!     async fn tick(&self, tx: &mut PgConnection, partition: u32, now: Now) -> Result<u64, TickError> {
//!         let deleted = sqlx::query(
//!             "DELETE FROM sessions WHERE id IN (
//!                 SELECT id FROM sessions
//!                 WHERE id % 16 = $1 AND expires_at < COALESCE($2, now())
//!                 LIMIT 1000)",
//!         )
//!         .bind(partition as i64)
//!         .bind(now)
//!         .execute(&mut *tx)
//!         .await?;
//!         Ok(deleted.rows_affected())
//!     }
//! }
//!
//! # async fn run(pool: sqlx::PgPool) -> Result<(), trawl_reconcile::Error> {
//! let mut handle = spawn_reconcilers(pool, Config::default(), vec![Arc::new(ExpiredSessions)])?;
//! // … serve …
//! let aborted = handle.shutdown(Duration::from_secs(5)).await;
//! assert_eq!(aborted, 0);
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod stats;
mod supervisor;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

pub use config::{Config, parse_duration};
pub use error::{Error, Result, TickError};
pub use stats::ReconcilerStats;
pub use supervisor::{ReconcilerHandle, spawn_reconcilers};

/// The instant a tick judges by: `None` is the database's own clock
/// (`now()`), which is what the supervisor passes, so that every node
/// judges leases and deadlines by the clock that wrote them; tests that
/// call a tick by hand may pin an instant instead.
pub type Now = Option<DateTime<Utc>>;

/// What a reconciler's tick walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One call per tick, with partition 0.
    Global,
    /// One call per partition `0..n` per tick, each in a transaction (and
    /// under an advisory lock) of its own, so that nodes share the work
    /// and a slow partition holds up no other node.
    Partitioned(u32),
}

impl Scope {
    /// The partitions of one tick.
    pub fn partitions(self) -> std::ops::Range<u32> {
        match self {
            Scope::Global => 0..1,
            Scope::Partitioned(n) => 0..n,
        }
    }
}

/// Where a tick runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TickMode {
    /// In a transaction the supervisor opens and commits (rolls back when
    /// the tick fails), holding `pg_try_advisory_xact_lock(reconciler,
    /// partition)`.
    #[default]
    InTransaction,
    /// On a plain connection holding `pg_try_advisory_lock(reconciler,
    /// partition)`, released after the tick; for statements Postgres
    /// refuses inside a transaction. A connection whose unlock did not
    /// happen (the tick panicked, or was aborted) is closed, not returned
    /// to the pool, so the lock cannot outlive the tick.
    OutsideTransaction,
}

/// A periodic repair of some state in Postgres.
///
/// A tick must be safe to run again at any time (it fixes what it finds,
/// it does not assume the last tick happened) and bounded (a batch at a
/// time; see [`batch`](Reconciler::batch)). The supervisor takes care of
/// timing, locking, transactions, errors and shutdown.
#[async_trait::async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// A name unique among the supervisor's reconcilers: it keys the
    /// advisory lock, the logs, the [`ReconcilerStats`] and the interval
    /// overrides of [`Config`] (`lease_expiry`, `budget_reset`…).
    fn name(&self) -> &str;

    /// How often to tick, unless [`Config::intervals`] says otherwise.
    fn interval(&self) -> Duration;

    /// What one tick walks; [`Scope::Global`] by default.
    fn scope(&self) -> Scope {
        Scope::Global
    }

    /// Whether the tick runs in a transaction (the default) or outside.
    fn mode(&self) -> TickMode {
        TickMode::InTransaction
    }

    /// The longest one call may take, unless [`Config::time_limits`] says
    /// otherwise; 60 s by default. The call's statements run with this
    /// `statement_timeout`, and a call still running at the limit (in a
    /// statement or in Rust) is dropped: its transaction rolls back, its
    /// connection is closed, and it counts as a failed call. Without a
    /// limit, a tick stuck on a lock would hold its advisory lock, and so
    /// stop that reconciler on every node.
    fn time_limit(&self) -> Duration {
        Duration::from_secs(60)
    }

    /// The most rows one call changes, if the tick is batched. A call that
    /// changed this many (or more) may have left work behind: the
    /// supervisor calls it again at once for the same partition, up to
    /// [`Config::max_batches`] times per tick.
    fn batch(&self) -> Option<u64> {
        None
    }

    /// Repairs one partition (0 for a [`Scope::Global`] reconciler) as of
    /// `now`, on `conn`: the supervisor's transaction, or a plain
    /// connection for [`TickMode::OutsideTransaction`]. Returns how many
    /// rows it changed.
    async fn tick(
        &self,
        conn: &mut PgConnection,
        partition: u32,
        now: Now,
    ) -> Result<u64, TickError>;
}
