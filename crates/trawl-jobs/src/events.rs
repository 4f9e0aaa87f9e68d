//! Cluster events: what happens to the fleet (workers joining and
//! leaving, jobs dying, leadership moving, breakers tripping), told to
//! every process that listens, over Postgres LISTEN/NOTIFY.
//!
//! Each event is a [`ClusterEvent`] as JSON on [`EVENTS_CHANNEL`], sent in
//! the transaction that made it happen, so it is delivered only if that
//! commits. Some are sent by the database itself, so that no path is
//! missed: a trigger on `trawl_jobs.jobs_finished` sends
//! [`ClusterEvent::JobDead`] for every job that ends dead, and the
//! registry sweep sends [`ClusterEvent::WorkerLeft`] for each worker it
//! drops. All go through one SQL function, `trawl_jobs.publish_event`,
//! which cuts long texts so that a payload stays under Postgres' limit of
//! 8000 bytes (a longer one would fail the statement that sent it).
//!
//! Events are notifications, not a log: one sent while a subscriber is
//! disconnected is lost for that subscriber, and nothing is kept. A
//! process that needs the exact state reads it from the tables
//! (`trawl_jobs.workers`, `trawl_jobs.leaders`, the dead letters through
//! [`JobQueue::list_jobs`](crate::JobQueue::list_jobs)) and uses events to
//! learn when to look again.
//!
//! ```no_run
//! use sqlx::PgPool;
//! use trawl_jobs::{ClusterEvent, ClusterEvents};
//!
//! # async fn example(pool: PgPool) -> Result<(), trawl_jobs::Error> {
//! let mut events = ClusterEvents::subscribe(&pool).await?;
//! loop {
//!     match events.next().await? {
//!         ClusterEvent::JobDead { job_id, kind, error, .. } => {
//!             eprintln!("job {job_id} ({kind}) is a dead letter: {error:?}");
//!         }
//!         ClusterEvent::WorkerLeft { worker_id, reason, .. } => {
//!             eprintln!("worker {worker_id} left ({reason:?})");
//!         }
//!         _ => {}
//!     }
//! }
//! # }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use trawl_retry::{RetryPolicy, Rng};

use crate::error::{Error, Result};

/// The channel cluster events are sent on; each payload is one
/// [`ClusterEvent`] as JSON.
pub const EVENTS_CHANNEL: &str = "trawl_jobs_events";

/// Something that happened to the fleet, as sent on [`EVENTS_CHANNEL`].
///
/// The JSON is internally tagged by `event` in snake case, e.g.
/// `{"event": "job_dead", "job_id": 7, "kind": "heal", "queue": "default",
/// "error": "no such object"}`. Newer versions may add events and fields:
/// a subscriber skips events it does not know and ignores unknown fields.
/// Texts may have been cut to fit the payload limit (they then end with
/// `…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClusterEvent {
    /// A worker manager started and registered itself
    /// ([`WorkerManager::start`](crate::WorkerManager::start)). (A worker
    /// the sweep dropped while it was only slow is listed again by its
    /// next heartbeat, without a new `WorkerJoined`.)
    #[non_exhaustive]
    WorkerJoined {
        /// The worker's id.
        worker_id: String,
    },
    /// A worker left the registry.
    #[non_exhaustive]
    WorkerLeft {
        /// The worker's id.
        worker_id: String,
        /// Whether it left on its own or was dropped by the sweep.
        reason: LeaveReason,
    },
    /// A job became a dead letter: out of attempts, failed for good, or
    /// taken from a worker that vanished during its last attempt.
    #[non_exhaustive]
    JobDead {
        /// The job's id.
        job_id: i64,
        /// Its kind.
        kind: String,
        /// Its queue.
        queue: String,
        /// Its last error, if it has one.
        error: Option<String>,
    },
    /// The lease of a singleton duty ([`leader`](crate::leader)) went to
    /// another node, or was given up.
    #[non_exhaustive]
    LeadershipChanged {
        /// The duty.
        name: String,
        /// The new holder; `None` when the holder released it at shutdown
        /// (the next contender to try takes it). A holder that loses its
        /// connection cannot say so: its lease runs out, and the next
        /// holder's event follows.
        holder: Option<String>,
    },
    /// A worker's circuit breaker for a job kind opened: it stops taking
    /// jobs of that kind for a while.
    #[non_exhaustive]
    BreakerOpened {
        /// The worker's id.
        worker_id: String,
        /// The job kind.
        kind: String,
    },
    /// A worker's circuit breaker for a job kind closed again.
    #[non_exhaustive]
    BreakerClosed {
        /// The worker's id.
        worker_id: String,
        /// The job kind.
        kind: String,
    },
}

/// Why a worker left the registry ([`ClusterEvent::WorkerLeft`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LeaveReason {
    /// It shut down and removed itself.
    Deregistered,
    /// Its heartbeat stopped and
    /// [`worker_registry_ttl_sweep`](crate::reconcile::worker_registry_ttl_sweep)
    /// dropped it.
    Swept,
}

/// Sends `event` on [`EVENTS_CHANNEL`] at the commit of `conn`'s
/// transaction (at once outside one), through `trawl_jobs.publish_event`,
/// which cuts long texts to keep the payload under 8000 bytes.
pub(crate) async fn publish(conn: &mut PgConnection, event: &ClusterEvent) -> Result<()> {
    sqlx::query("SELECT trawl_jobs.publish_event($1)")
        .bind(Json(event))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How long connecting and LISTEN may take before the try counts as failed.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// The backoff between tries to reconnect: 100 ms doubling to 5 s.
const RECONNECT: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(5),
    jitter_pct: 20,
};

/// A subscription to the [`ClusterEvent`]s of every process on the
/// database, on a connection of its own (outside the pool it was made
/// from, whose connect options it copies).
///
/// A lost connection is re-established by [`next`](Self::next), with
/// backoff; events sent in between are lost (see the [module
/// documentation](self)).
pub struct ClusterEvents {
    pool: PgPool,
    listener: Option<PgListener>,
    failures: u32,
    rng: Rng,
}

impl std::fmt::Debug for ClusterEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterEvents")
            .field("connected", &self.listener.is_some())
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl ClusterEvents {
    /// Subscribes to the events sent on `pool`'s database. Returns once
    /// listening: every event committed after this is received. Fails if
    /// the database cannot be reached now.
    ///
    /// ```no_run
    /// # async fn example(pool: sqlx::PgPool) -> Result<(), trawl_jobs::Error> {
    /// let mut events = trawl_jobs::ClusterEvents::subscribe(&pool).await?;
    /// let first = events.next().await?;
    /// println!("{first:?}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscribe(pool: &PgPool) -> Result<ClusterEvents> {
        let listener = listen(pool).await?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(ClusterEvents {
            pool: pool.clone(),
            listener: Some(listener),
            failures: 0,
            rng: Rng::new(seed),
        })
    }

    /// The next event. A payload that is not a [`ClusterEvent`] this
    /// version knows (a newer version's event, or not one at all) is
    /// skipped and logged at `debug`. A lost connection is re-established
    /// here, with backoff (logged at `warn` while it fails).
    ///
    /// Fails only once the pool the subscription was made from is closed
    /// (the application is shutting down).
    ///
    /// Cancel-safe: dropping the future (in a `select!` or a timeout)
    /// loses no event.
    pub async fn next(&mut self) -> Result<ClusterEvent> {
        loop {
            let listener = match &mut self.listener {
                Some(listener) => listener,
                None => {
                    self.reconnect().await?;
                    continue;
                }
            };
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    self.failures = 0;
                    match serde_json::from_str::<ClusterEvent>(notification.payload()) {
                        Ok(event) => return Ok(event),
                        Err(err) => tracing::debug!(
                            error = %err,
                            payload = notification.payload(),
                            "skipping a cluster event this version does not know"
                        ),
                    }
                }
                Ok(None) => {
                    tracing::debug!("the cluster events connection was lost; reconnecting");
                    self.listener = None;
                    self.failures = self.failures.saturating_add(1);
                }
                Err(err) => {
                    tracing::debug!(error = %err, "the cluster events connection failed; reconnecting");
                    self.listener = None;
                    self.failures = self.failures.saturating_add(1);
                }
            }
        }
    }

    /// LISTENs on a new connection; returns once listening, or fails when
    /// the pool is closed. The first try after a loss is at once; each
    /// further loss or failed try without an event in between waits longer
    /// (100 ms doubling to 5 s).
    async fn reconnect(&mut self) -> Result<()> {
        loop {
            if self.pool.is_closed() {
                return Err(Error::Database(sqlx::Error::PoolClosed));
            }
            if self.failures > 1 {
                let delay = RECONNECT.backoff(self.failures - 1, &mut self.rng);
                tokio::time::sleep(delay).await;
            }
            match listen(&self.pool).await {
                Ok(listener) => {
                    tracing::debug!("listening for cluster events again");
                    self.listener = Some(listener);
                    return Ok(());
                }
                Err(err) => {
                    self.failures = self.failures.saturating_add(1);
                    tracing::warn!(
                        error = %err,
                        failures = self.failures,
                        "cannot LISTEN for cluster events; retrying with backoff"
                    );
                }
            }
        }
    }
}

/// LISTEN on [`EVENTS_CHANNEL`] on a connection of its own (a pool of one
/// made from `pool`'s connect options).
async fn listen(pool: &PgPool) -> Result<PgListener> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(CONNECT_LIMIT)
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut listener = PgListener::connect_with(&own).await?;
    listener.ignore_pool_close_event(true);
    listener.eager_reconnect(false);
    tokio::time::timeout(CONNECT_LIMIT, listener.listen(EVENTS_CHANNEL))
        .await
        .map_err(|_| Error::Database(sqlx::Error::PoolTimedOut))??;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON the database writes by hand (the `job_dead` trigger, the
    /// registry sweep) must parse as the same events.
    #[test]
    fn the_wire_format_is_tagged_snake_case() {
        let cases = [
            (
                ClusterEvent::WorkerJoined {
                    worker_id: "w1".into(),
                },
                r#"{"event":"worker_joined","worker_id":"w1"}"#,
            ),
            (
                ClusterEvent::WorkerLeft {
                    worker_id: "w1".into(),
                    reason: LeaveReason::Swept,
                },
                r#"{"event":"worker_left","worker_id":"w1","reason":"swept"}"#,
            ),
            (
                ClusterEvent::JobDead {
                    job_id: 7,
                    kind: "heal".into(),
                    queue: "default".into(),
                    error: None,
                },
                r#"{"event":"job_dead","job_id":7,"kind":"heal","queue":"default","error":null}"#,
            ),
            (
                ClusterEvent::LeadershipChanged {
                    name: "periodic".into(),
                    holder: Some("n1".into()),
                },
                r#"{"event":"leadership_changed","name":"periodic","holder":"n1"}"#,
            ),
            (
                ClusterEvent::BreakerOpened {
                    worker_id: "w1".into(),
                    kind: "heal".into(),
                },
                r#"{"event":"breaker_opened","worker_id":"w1","kind":"heal"}"#,
            ),
            (
                ClusterEvent::BreakerClosed {
                    worker_id: "w1".into(),
                    kind: "heal".into(),
                },
                r#"{"event":"breaker_closed","worker_id":"w1","kind":"heal"}"#,
            ),
        ];
        for (event, json) in cases {
            assert_eq!(serde_json::to_string(&event).unwrap(), json);
            assert_eq!(serde_json::from_str::<ClusterEvent>(json).unwrap(), event);
        }
        // jsonb's own spelling (spaces, sorted keys), a missing optional
        // field, and a field from a newer version.
        let parsed: ClusterEvent = serde_json::from_str(
            r#"{"kind": "heal", "event": "job_dead", "queue": "q", "job_id": 3, "new": 1}"#,
        )
        .unwrap();
        assert_eq!(
            parsed,
            ClusterEvent::JobDead {
                job_id: 3,
                kind: "heal".into(),
                queue: "q".into(),
                error: None
            }
        );
        for unknown in [
            "garbage",
            r#"{"event":"worker_exploded","worker_id":"w"}"#,
            r#"{"event":"worker_left","worker_id":"w","reason":"abducted"}"#,
        ] {
            assert!(serde_json::from_str::<ClusterEvent>(unknown).is_err());
        }
    }
}
