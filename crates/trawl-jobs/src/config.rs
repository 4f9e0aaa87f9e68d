//! [`WorkerConfig`]: how a [`WorkerManager`](crate::WorkerManager) claims,
//! runs and completes jobs.

use std::collections::HashSet;
use std::time::Duration;

use trawl_retry::RetryPolicy;

use crate::breaker::BreakerConfig;
use crate::error::{Error, Result};
use crate::job::DEFAULT_QUEUE;

/// How a [`WorkerManager`](crate::WorkerManager) works. Every field is
/// public; start from [`WorkerConfig::default`] and change what differs.
///
/// ```
/// use std::time::Duration;
/// use trawl_jobs::WorkerConfig;
///
/// let config = WorkerConfig {
///     worker_id: "indexer-1".into(),
///     queues: vec!["index".into(), "default".into()],
///     max_concurrent_jobs: 32,
///     job_timeout: Duration::from_secs(60),
///     ..WorkerConfig::default()
/// };
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// The worker's id in the registry and as lease owner. Must be unique
    /// among live workers: two managers with one id would renew and release
    /// each other's leases. A manager started with the id of a dead one
    /// gives that one's leased jobs back to the queue at once. Default:
    /// `worker-<pid>-<random>`.
    pub worker_id: String,
    /// The queues it claims from (one claim loop each, sharing the
    /// capacity). Default: [`DEFAULT_QUEUE`].
    pub queues: Vec<String>,
    /// Jobs processed at once, across its queues. Default 10.
    pub max_concurrent_jobs: usize,
    /// How long one attempt may run unless the job sets its own timeout.
    /// Default 300 s.
    pub job_timeout: Duration,
    /// How long a claim or heartbeat keeps a job leased: if the worker dies,
    /// its jobs run elsewhere once the lease expires. Also the longest a
    /// statement may take before its connection is dropped. Default 30 s.
    pub lease: Duration,
    /// How often leases are renewed, cancel requests picked up and the
    /// registry row refreshed. At most half the lease. Default 10 s.
    pub heartbeat_interval: Duration,
    /// How long an idle claim loop waits for a notification before it
    /// claims anyway (notifications can be lost; a delayed job becomes due
    /// without one). Default 1 s.
    pub poll_interval: Duration,
    /// The most jobs one claim statement takes. A claim asks for the free
    /// slots, plus, when jobs are short, what the slots get through during
    /// one claim, so that the next claim is in flight while these run; a
    /// worker holds at most two claims' worth of jobs waiting for slots,
    /// and long jobs are never claimed ahead. Default 200.
    pub claim_batch: u32,
    /// The most completions one statement records. Default 500.
    pub completion_batch: usize,
    /// How long the completer waits for more completions before it commits
    /// a batch smaller than `completion_batch`. Zero commits whatever is
    /// there at once (batches still form while a commit is in flight).
    /// Default 1 ms.
    pub completion_linger: Duration,
    /// The backoff of a failed attempt that does not say when to retry
    /// ([`JobResult::Retry`](crate::JobResult::Retry) with `after: None`, a
    /// panic, a timeout). Its `max_attempts` is not used: each job carries
    /// its own. Default: 1 s doubling up to 1 h, 20 % jitter.
    pub retry: RetryPolicy,
    /// The backoff between attempts to reach the database after an error
    /// (a lost connection, a refused statement). Its `max_attempts` is not
    /// used: the manager tries until it is shut down. Default: 100 ms
    /// doubling up to 5 s, 20 % jitter.
    pub reconnect: RetryPolicy,
    /// The seed of the jitter; `None` derives one from the worker id and
    /// the clock. Set it to make the delays of a test reproducible.
    pub seed: Option<u64>,
    /// How often the manager runs the queue's maintenance tick
    /// ([`maintenance::run_once`](crate::maintenance::run_once): vacuum the
    /// hot tables when their dead tuples pass its thresholds, so that the
    /// claim rate holds where autovacuum is off or slow); `None` leaves it
    /// to the application. Default every 5 s: a cheap statistics read when
    /// nothing is due, and `SKIP_LOCKED` when another node vacuums.
    pub maintenance_interval: Option<Duration>,
    /// The circuit breaker per job kind ([`BreakerConfig`]); `None` never
    /// stops claiming a kind. Default: 5 failures in a row open it for
    /// 30 s.
    pub breaker: Option<BreakerConfig>,
}

/// The default retry backoff of jobs: 1 s doubling to 1 h, 20 % jitter.
const JOB_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(3600),
    jitter_pct: 20,
};

/// The default reconnect backoff: 100 ms doubling to 5 s, 20 % jitter.
const RECONNECT: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(5),
    jitter_pct: 20,
};

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            worker_id: default_worker_id(),
            queues: vec![DEFAULT_QUEUE.to_owned()],
            max_concurrent_jobs: 10,
            job_timeout: Duration::from_secs(300),
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            claim_batch: 200,
            completion_batch: 500,
            completion_linger: Duration::from_millis(1),
            retry: JOB_RETRY,
            reconnect: RECONNECT,
            seed: None,
            maintenance_interval: Some(Duration::from_secs(5)),
            breaker: Some(BreakerConfig::default()),
        }
    }
}

impl WorkerConfig {
    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.worker_id.trim().is_empty() {
            return Err(Error::invalid("worker_id", "must not be empty"));
        }
        if self.worker_id.len() > 200 {
            return Err(Error::invalid(
                "worker_id",
                "must be at most 200 bytes long",
            ));
        }
        if self.queues.is_empty() {
            return Err(Error::invalid("queues", "name at least one queue"));
        }
        let mut seen = HashSet::new();
        for queue in &self.queues {
            if queue.is_empty() {
                return Err(Error::invalid("queues", "a queue name must not be empty"));
            }
            if !seen.insert(queue.as_str()) {
                return Err(Error::invalid(
                    "queues",
                    format!("'{queue}' is listed twice"),
                ));
            }
        }
        if self.max_concurrent_jobs == 0 || self.max_concurrent_jobs > 1_000_000 {
            return Err(Error::invalid(
                "max_concurrent_jobs",
                format!("{} (must be 1 to 1,000,000)", self.max_concurrent_jobs),
            ));
        }
        if self.job_timeout.is_zero() {
            return Err(Error::invalid("job_timeout", "must be longer than 0"));
        }
        if self.lease < Duration::from_millis(100) {
            return Err(Error::invalid(
                "lease",
                format!("{:?} (must be at least 100 ms)", self.lease),
            ));
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval * 2 > self.lease {
            return Err(Error::invalid(
                "heartbeat_interval",
                format!(
                    "{:?} (must be above 0 and at most half the lease, {:?}, so that a \
                     late heartbeat does not lose the leases)",
                    self.heartbeat_interval, self.lease
                ),
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::invalid("poll_interval", "must be longer than 0"));
        }
        if self
            .maintenance_interval
            .is_some_and(|every| every.is_zero())
        {
            return Err(Error::invalid(
                "maintenance_interval",
                "must be longer than 0 (None turns the tick off)",
            ));
        }
        if self.breaker.is_some_and(|b| b.failures == 0) {
            return Err(Error::invalid(
                "breaker",
                "failures must be at least 1 (None turns the breaker off)",
            ));
        }
        if self.claim_batch == 0 || self.claim_batch > 10_000 {
            return Err(Error::invalid(
                "claim_batch",
                format!("{} (must be 1 to 10,000)", self.claim_batch),
            ));
        }
        if self.completion_batch == 0 || self.completion_batch > 10_000 {
            return Err(Error::invalid(
                "completion_batch",
                format!("{} (must be 1 to 10,000)", self.completion_batch),
            ));
        }
        self.retry
            .validate()
            .map_err(|err| Error::invalid("retry", err.to_string()))?;
        self.reconnect
            .validate()
            .map_err(|err| Error::invalid("reconnect", err.to_string()))?;
        Ok(())
    }

    /// Connections the manager holds from its pool while it runs: one per
    /// queue, one for heartbeats, one for completions. (LISTEN uses a
    /// connection of its own, outside the pool.)
    pub fn connections_needed(&self) -> u32 {
        u32::try_from(self.queues.len()).unwrap_or(u32::MAX - 3)
            + 2
            + u32::from(self.maintenance_interval.is_some())
    }
}

/// `worker-<pid>-<random>`: unique per process and start.
fn default_worker_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = trawl_retry::Rng::new(nanos ^ NEXT.fetch_add(1, Ordering::Relaxed) << 48);
    format!(
        "worker-{}-{:08x}",
        std::process::id(),
        rng.next_u64() as u32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_has_the_documented_values() {
        let config = WorkerConfig::default();
        config.validate().unwrap();
        assert_eq!(config.max_concurrent_jobs, 10);
        assert_eq!(config.job_timeout, Duration::from_secs(300));
        assert_eq!(config.lease, Duration::from_secs(30));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(config.queues, [DEFAULT_QUEUE]);
        assert_ne!(config.worker_id, WorkerConfig::default().worker_id);
        assert_eq!(config.maintenance_interval, Some(Duration::from_secs(5)));
        // A claim loop, the heartbeat, the completer and the maintenance tick.
        assert_eq!(config.connections_needed(), 4);
    }

    #[test]
    fn each_bad_field_is_named() {
        let bad: [(&str, WorkerConfig); 10] = [
            (
                "worker_id",
                WorkerConfig {
                    worker_id: " ".into(),
                    ..WorkerConfig::default()
                },
            ),
            (
                "queues",
                WorkerConfig {
                    queues: vec![],
                    ..WorkerConfig::default()
                },
            ),
            (
                "queues",
                WorkerConfig {
                    queues: vec!["a".into(), "a".into()],
                    ..WorkerConfig::default()
                },
            ),
            (
                "max_concurrent_jobs",
                WorkerConfig {
                    max_concurrent_jobs: 0,
                    ..WorkerConfig::default()
                },
            ),
            (
                "job_timeout",
                WorkerConfig {
                    job_timeout: Duration::ZERO,
                    ..WorkerConfig::default()
                },
            ),
            (
                "lease",
                WorkerConfig {
                    lease: Duration::from_millis(10),
                    ..WorkerConfig::default()
                },
            ),
            (
                "heartbeat_interval",
                WorkerConfig {
                    heartbeat_interval: Duration::from_secs(20),
                    ..WorkerConfig::default()
                },
            ),
            (
                "poll_interval",
                WorkerConfig {
                    poll_interval: Duration::ZERO,
                    ..WorkerConfig::default()
                },
            ),
            (
                "claim_batch",
                WorkerConfig {
                    claim_batch: 0,
                    ..WorkerConfig::default()
                },
            ),
            (
                "retry",
                WorkerConfig {
                    retry: RetryPolicy {
                        jitter_pct: 500,
                        ..JOB_RETRY
                    },
                    ..WorkerConfig::default()
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
