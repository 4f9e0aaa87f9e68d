//! Jobs: what is enqueued ([`NewJob`], the [`Job`] trait), and what the
//! queue keeps of each ([`JobRow`], [`JobState`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The queue a job goes to unless it says otherwise.
pub const DEFAULT_QUEUE: &str = "default";

/// Attempts a job gets unless it says otherwise (the first one included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// A typed job: a serde payload with a kind that names its worker.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use trawl_jobs::{Job, Priority};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendReport {
///     user_id: u64,
/// }
///
/// impl Job for SendReport {
///     const KIND: &'static str = "send_report";
///
///     fn priority(&self) -> Priority {
///         Priority::HIGH
///     }
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind: which registered worker runs the job. Stable across
    /// releases: rows in the database carry it.
    const KIND: &'static str;

    /// The queue, [`DEFAULT_QUEUE`] unless overridden.
    fn queue(&self) -> &str {
        DEFAULT_QUEUE
    }

    /// The priority, [`Priority::NORMAL`] unless overridden.
    fn priority(&self) -> Priority {
        Priority::NORMAL
    }

    /// Attempts in all, [`DEFAULT_MAX_ATTEMPTS`] unless overridden.
    fn max_attempts(&self) -> u32 {
        DEFAULT_MAX_ATTEMPTS
    }

    /// How long one attempt may run, `None` for the worker's default.
    fn timeout(&self) -> Option<Duration> {
        None
    }
}

/// A job's priority: higher runs first. The named levels cover the common
/// cases; any `i16` is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(pub i16);

impl Priority {
    /// Background work.
    pub const LOW: Priority = Priority(0);
    /// The default.
    pub const NORMAL: Priority = Priority(1);
    /// Ahead of normal work.
    pub const HIGH: Priority = Priority(2);
    /// Ahead of everything else.
    pub const CRITICAL: Priority = Priority(3);
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

/// A job to enqueue, in its raw form: a kind and a JSON payload, with its
/// options. [`NewJob::from_job`] builds one from a typed [`Job`].
///
/// ```
/// use std::time::Duration;
/// use trawl_jobs::{NewJob, Priority};
///
/// let job = NewJob::new("reindex", serde_json::json!({ "bucket": "logs" }))
///     .queue("maintenance")
///     .priority(Priority::LOW)
///     .delay(Duration::from_secs(60))
///     .tags(["nightly"]);
/// assert_eq!(job.kind, "reindex");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Which worker runs it.
    pub kind: String,
    /// Its input.
    pub payload: serde_json::Value,
    /// The queue it waits in.
    pub queue: String,
    /// Higher runs first.
    pub priority: Priority,
    /// When it may run; `None` is now.
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// How long one attempt may run; `None` for the worker's default.
    pub timeout: Option<Duration>,
    /// Free-form labels, for listing and filtering.
    pub tags: Vec<String>,
    /// Jobs that must all succeed before this one runs (see
    /// [`depends_on`](Self::depends_on)).
    pub parents: Vec<i64>,
    /// A key no other job may hold at the same time (see
    /// [`unique_key`](Self::unique_key)).
    pub unique: Option<UniqueKey>,
    /// What its start costs against budgets (default 1).
    pub cost: u32,
    /// Its concurrency key and that key's cap (see
    /// [`concurrency_key`](Self::concurrency_key)).
    pub concurrency: Option<(String, u32)>,
}

/// A job's unique key and how long it holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueKey {
    /// The key.
    pub key: String,
    /// How long the job holds it.
    pub window: UniqueWindow,
}

/// How long a job holds its unique key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueWindow {
    /// Until the job finishes (succeeded, dead or cancelled). A dead job
    /// put back with [`retry`](crate::JobQueue::retry) does not take its
    /// key again.
    WhileLive,
    /// For this long after the enqueue, whatever happens to the job: a
    /// job that already finished still holds its key until then, and a key
    /// whose time is up is free even if its job still lives.
    For(Duration),
}

impl NewJob {
    /// A job of `kind` with `payload` and the default options.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> NewJob {
        NewJob {
            kind: kind.into(),
            payload,
            queue: DEFAULT_QUEUE.to_owned(),
            priority: Priority::NORMAL,
            run_at: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout: None,
            tags: Vec::new(),
            parents: Vec::new(),
            unique: None,
            cost: 1,
            concurrency: None,
        }
    }

    /// The raw form of a typed job, with the options it declares.
    pub fn from_job<J: Job>(job: &J) -> Result<NewJob> {
        let payload = serde_json::to_value(job).map_err(|source| Error::Serialize {
            kind: J::KIND.to_owned(),
            source,
        })?;
        Ok(NewJob {
            queue: job.queue().to_owned(),
            priority: job.priority(),
            max_attempts: job.max_attempts(),
            timeout: job.timeout(),
            ..NewJob::new(J::KIND, payload)
        })
    }

    /// Sets the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> NewJob {
        self.queue = queue.into();
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> NewJob {
        self.priority = priority;
        self
    }

    /// Runs no earlier than `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> NewJob {
        self.run_at = Some(at);
        self
    }

    /// Runs no earlier than `delay` from now (the database's now when the
    /// job is enqueued).
    pub fn delay(mut self, delay: Duration) -> NewJob {
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        self.run_at = Some(Utc::now() + delay);
        self
    }

    /// Sets the attempts in all.
    pub fn max_attempts(mut self, attempts: u32) -> NewJob {
        self.max_attempts = attempts;
        self
    }

    /// Sets how long one attempt may run.
    pub fn timeout(mut self, timeout: Duration) -> NewJob {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the tags.
    pub fn tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> NewJob {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Runs only once every job in `parents` has succeeded: until then the
    /// job is `blocked`; it becomes pending in the transaction that
    /// completes its last parent. If a parent ends dead or cancelled, the
    /// job is cancelled, and so are its own descendants. Parents that
    /// already succeeded count as done; a parent that is already dead or
    /// cancelled makes the job cancelled at once.
    ///
    /// ```
    /// # use trawl_jobs::NewJob;
    /// let finalize = NewJob::new("finalize", serde_json::json!({})).depends_on([41, 42, 43]);
    /// assert_eq!(finalize.parents, vec![41, 42, 43]);
    /// ```
    pub fn depends_on(mut self, parents: impl IntoIterator<Item = i64>) -> NewJob {
        self.parents.extend(parents);
        self
    }

    /// Makes the job unique by `key` while it lives: enqueueing a job with
    /// a key that a live job holds enqueues nothing and returns the holder's
    /// id (also when many processes enqueue at once).
    pub fn unique_key(mut self, key: impl Into<String>) -> NewJob {
        self.unique = Some(UniqueKey {
            key: key.into(),
            window: UniqueWindow::WhileLive,
        });
        self
    }

    /// Makes the job unique by `key` for `period` from its enqueue, whether
    /// it finishes meanwhile or not: a second enqueue within the period
    /// returns the first job's id.
    pub fn unique_for(mut self, key: impl Into<String>, period: Duration) -> NewJob {
        self.unique = Some(UniqueKey {
            key: key.into(),
            window: UniqueWindow::For(period),
        });
        self
    }

    /// Sets what the job's start costs against the budgets of its queue and
    /// kind (default 1; 0 starts it free).
    pub fn cost(mut self, cost: u32) -> NewJob {
        self.cost = cost;
        self
    }

    /// Runs the job under `key`: at most `cap` jobs with the key run at
    /// once across every worker, and they start in id order. A key capped
    /// at 1 runs its jobs one at a time in the order they were enqueued;
    /// a job of the key waiting to retry, or suspended, keeps its turn
    /// (later jobs of the key wait for it), and so does a blocked one.
    /// The cap is the key's, set by the latest enqueue that names it.
    ///
    /// ```
    /// # use trawl_jobs::NewJob;
    /// // One migration at a time per tenant.
    /// let job = NewJob::new("migrate", serde_json::json!({"tenant": 7}))
    ///     .concurrency_key("tenant-7", 1);
    /// assert_eq!(job.concurrency, Some(("tenant-7".to_owned(), 1)));
    /// ```
    pub fn concurrency_key(mut self, key: impl Into<String>, cap: u32) -> NewJob {
        self.concurrency = Some((key.into(), cap));
        self
    }

    /// Checks what the database would otherwise reject less clearly.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.kind.is_empty() {
            return Err(Error::invalid("kind", "a job kind must not be empty"));
        }
        if self.queue.is_empty() {
            return Err(Error::invalid("queue", "a queue name must not be empty"));
        }
        if self.max_attempts == 0 || self.max_attempts > i32::MAX as u32 {
            return Err(Error::invalid(
                "max_attempts",
                format!("{} (must be at least 1)", self.max_attempts),
            ));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid("timeout", "a timeout must be longer than 0"));
        }
        if self.cost > i32::MAX as u32 {
            return Err(Error::invalid(
                "cost",
                format!("{} (must be at most {})", self.cost, i32::MAX),
            ));
        }
        if let Some((key, cap)) = &self.concurrency
            && (key.is_empty() || *cap == 0 || *cap > i32::MAX as u32)
        {
            return Err(Error::invalid(
                "concurrency_key",
                format!("'{key}' with cap {cap} (the key must not be empty, the cap at least 1)"),
            ));
        }
        if let Some(unique) = &self.unique {
            if unique.key.is_empty() {
                return Err(Error::invalid(
                    "unique_key",
                    "a unique key must not be empty",
                ));
            }
            if unique.window == UniqueWindow::For(Duration::ZERO) {
                return Err(Error::invalid(
                    "unique_key",
                    format!("the period of key '{}' must be longer than 0", unique.key),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn timeout_ms(&self) -> Option<i64> {
        self.timeout
            .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX).max(1))
    }
}

/// Where a job is in its life. See the crate documentation for the
/// transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Waiting on parent jobs.
    Blocked,
    /// Ready to run at its `run_at` (scheduled if that is in the future).
    Pending,
    /// Leased to a worker.
    Running,
    /// Finished successfully (or skipped by its worker).
    Succeeded,
    /// Out of attempts, or failed permanently: a dead letter.
    Dead,
    /// Cancelled before it could finish.
    Cancelled,
    /// Waiting for a signal, until a deadline.
    Suspended,
}

impl JobState {
    /// Every state, in the order of the enum.
    pub const ALL: [JobState; 7] = [
        JobState::Blocked,
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
        JobState::Suspended,
    ];

    /// The state's name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Blocked => "blocked",
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
            JobState::Suspended => "suspended",
        }
    }

    /// Whether the job is over: succeeded, dead or cancelled.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;

    fn from_str(s: &str) -> Result<JobState> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| Error::Unexpected {
                field: "job state",
                value: s.to_owned(),
            })
    }
}

/// A job as the queue keeps it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobRow {
    /// Its id.
    pub id: i64,
    /// Which worker runs it.
    pub kind: String,
    /// The queue it waits in.
    pub queue: String,
    /// Where it is in its life.
    pub state: JobState,
    /// Higher runs first.
    pub priority: Priority,
    /// Its input.
    pub payload: serde_json::Value,
    /// Its labels.
    pub tags: Vec<String>,
    /// When it may run (next).
    pub run_at: DateTime<Utc>,
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts in all.
    pub max_attempts: u32,
    /// How long one attempt may run.
    pub timeout: Option<Duration>,
    /// The worker holding its lease, while running.
    pub lease_owner: Option<String>,
    /// When that lease ends unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Whether a cancel was asked while it ran.
    pub cancel_requested: bool,
    /// The error of its last failed attempt.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it finished, if it did.
    pub finished_at: Option<DateTime<Utc>>,
}

/// The columns of [`JobRow`], in the order `JobRow::from_row` reads them.
pub(crate) const JOB_COLUMNS: &str = "id, kind, queue, state::text AS state, priority, payload, \
     tags, run_at, attempt, max_attempts, timeout_ms, lease_owner, lease_expires_at, \
     cancel_requested, last_error, created_at, finished_at";

impl JobRow {
    pub(crate) fn from_row(row: &sqlx::postgres::PgRow) -> Result<JobRow> {
        use sqlx::Row;
        let state: String = row.try_get("state")?;
        let timeout_ms: Option<i64> = row.try_get("timeout_ms")?;
        Ok(JobRow {
            id: row.try_get("id")?,
            kind: row.try_get("kind")?,
            queue: row.try_get("queue")?,
            state: state.parse()?,
            priority: Priority(row.try_get("priority")?),
            payload: row.try_get("payload")?,
            tags: row.try_get("tags")?,
            run_at: row.try_get("run_at")?,
            attempt: u32::try_from(row.try_get::<i32, _>("attempt")?).unwrap_or(0),
            max_attempts: u32::try_from(row.try_get::<i32, _>("max_attempts")?).unwrap_or(1),
            timeout: timeout_ms.map(|ms| Duration::from_millis(ms.max(0) as u64)),
            lease_owner: row.try_get("lease_owner")?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            cancel_requested: row.try_get("cancel_requested")?,
            last_error: row.try_get("last_error")?,
            created_at: row.try_get("created_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
        }
        assert!("exploded".parse::<JobState>().is_err());
    }

    #[test]
    fn invalid_jobs_are_refused_with_the_field() {
        let job = NewJob::new("", serde_json::json!({}));
        assert!(job.validate().unwrap_err().to_string().contains("kind"));
        let job = NewJob::new("k", serde_json::json!({})).max_attempts(0);
        assert!(
            job.validate()
                .unwrap_err()
                .to_string()
                .contains("max_attempts")
        );
        let job = NewJob::new("k", serde_json::json!({})).timeout(Duration::ZERO);
        assert!(job.validate().unwrap_err().to_string().contains("timeout"));
        assert!(NewJob::new("k", serde_json::json!(1)).validate().is_ok());
    }
}
